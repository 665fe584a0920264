"""Benchmark: radiograph decode time per transfer syntax, and Grad-CAM cost.

Prints figures; it is not a test.  Decoding: a synthetic large radiograph (default
2000 x 2000, 15 bits stored) is written uncompressed, re-encoded with the dcmtk / GDCM
command-line tools, and each file is loaded with :func:`load_radiograph` (decode,
Modality LUT, orientation), in this process and through a warm
:class:`~osteonode.imaging.isolation.DecoderProcess` (what the node's workers do: decode in a child
process, pixels sent back over a pipe), whose extra cost is given in percent.  Grad-CAM: the chest (ConvNeXt-small) and hip (VGG16
non-local) networks at the model input size; the cost of :func:`grad_cam` is given as
a multiple of a plain inference forward pass (goal <= 1.3x), beside the cost of a
Grad-CAM whose backward pass runs through the whole network, for comparison.

Usage: ``python bench/pixels.py [--size 2000] [--bits 15] [--repeats 3] [--input 512]``
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import structlog
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid
from torch import nn

from osteonode.explain import grad_cam
from osteonode.imaging import load_radiograph
from osteonode.imaging.isolation import DecoderProcess
from osteonode.nets.convnext import convnext_small
from osteonode.nets.vgg_nonlocal import vgg16_nonlocal

#: Lossless re-encodings: name -> command line before the input and output paths.
ENCODINGS: dict[str, list[str]] = {
    "RLE Lossless": ["dcmcrle"],
    "JPEG Lossless SV1": ["dcmcjpeg"],
    "JPEG-LS Lossless": ["dcmcjpls"],
    "JPEG 2000 Lossless": ["gdcmconv", "--j2k"],
}


def synthetic_radiograph(size: int, bits: int, seed: int = 1) -> np.ndarray:
    """Smooth body, brighter 'bones' and quantum-like noise over most of the range."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size] / size
    body = 0.3 + 0.3 * np.exp(-(((columns - 0.5) / 0.22) ** 2))
    spine = 0.25 * (np.abs(columns - 0.5) < 0.06) * ((rows * 12) % 1 < 0.8)
    noise = rng.normal(0.0, 0.01, size=(size, size))
    values = np.clip(body + spine + noise, 0.0, 1.0) * (2**bits - 1)
    return np.rint(values).astype(np.uint16)


def write_native(values: np.ndarray, bits: int, path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = values.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` runs after a warm-up: the least disturbed by other load."""
    run()
    return min(seconds(run) for _ in range(repeats))


def bench_decoding(size: int, bits: int, repeats: int) -> None:
    print(f"Decoding, {size} x {size}, {bits} bits stored, best of {repeats} (ms)")
    print("  load = load_radiograph (read, decode, Modality LUT, float32); isolated = the same with")
    print("  decoding in a warm DecoderProcess (+% = its extra cost); then each plugin alone")
    header = f"  {'transfer syntax':<24}{'MB':>6}{'ratio':>7}{'load':>8}{'isolated':>10}{'+%':>6}"
    print(header + f"{'pylibjpeg':>11}{'gdcm':>8}")
    decoder = DecoderProcess(timeout_s=600)
    with tempfile.TemporaryDirectory() as directory:
        values = synthetic_radiograph(size, bits)
        native = write_native(values, bits, Path(directory) / "native.dcm")
        files = {"Explicit VR LE (native)": native}
        for name, command in ENCODINGS.items():
            if shutil.which(command[0]) is None:
                print(f"  {name:<24}skipped: {command[0]} not installed")
                continue
            target = Path(directory) / f"{command[0]}_{len(files)}.dcm"
            subprocess.run([*command, str(native), str(target)], check=True, capture_output=True)
            files[name] = target
        native_size = native.stat().st_size
        for name, path in files.items():
            if not np.array_equal(load_radiograph(path).pixels, values):
                raise RuntimeError(f"{name} did not decode to the original pixels")
            load_s = best_seconds(lambda p=path: load_radiograph(p), repeats)
            isolated_s = best_seconds(lambda p=path: load_radiograph(p, decoder=decoder), repeats)
            row = f"  {name:<24}{path.stat().st_size / 1e6:>6.2f}"
            row += f"{native_size / path.stat().st_size:>7.2f}{load_s * 1e3:>8.0f}"
            row += f"{isolated_s * 1e3:>10.0f}{(isolated_s / load_s - 1) * 100:>6.0f}"
            dataset = pydicom.dcmread(path)
            plugins = get_decoder(dataset.file_meta.TransferSyntaxUID).available_plugins
            for plugin, width in (("pylibjpeg", 11), ("gdcm", 8)):
                if plugin not in plugins:
                    row += f"{'-':>{width}}"
                    continue
                decode_s = best_seconds(
                    lambda d=dataset, p=plugin: pixel_array(d, decoding_plugin=p), repeats
                )
                row += f"{decode_s * 1e3:>{width}.0f}"
            print(row)
    decoder.close()


def full_backward_grad_cam(
    model: nn.Module, image: torch.Tensor, layer: nn.Module
) -> Callable[[], object]:
    """Textbook Grad-CAM for comparison: graph over the whole network, full backward."""

    def run() -> object:
        captured: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with torch.enable_grad():
                score = model(image)[:, 0].sum()
                score.backward()
        finally:
            handle.remove()
            model.zero_grad(set_to_none=True)
        return captured

    return run


def bench_grad_cam(input_size: int, repeats: int) -> None:
    print(f"\nGrad-CAM vs plain forward, 1 x 3 x {input_size} x {input_size}, best of {repeats}")
    print("  (the three are timed in turn in each round, so they share the machine's load)")
    print(f"  {'network':<24}{'forward ms':>12}{'Grad-CAM ms':>13}{'x fwd':>7}{'full-bwd x':>12}")
    networks: dict[str, nn.Module] = {
        "ConvNeXt-small (chest)": convnext_small(num_classes=2, in_chans=3),
        "VGG16 non-local (hip)": vgg16_nonlocal(in_chans=3),
    }
    for name, model in networks.items():
        model.eval()
        image = torch.randn(1, 3, input_size, input_size)
        layer = model.gradcam_layer

        def forward(m: nn.Module = model, x: torch.Tensor = image) -> object:
            with torch.inference_mode():
                return m(x)

        def cam(m: nn.Module = model, x: torch.Tensor = image, t: nn.Module = layer) -> object:
            return grad_cam(m, x, t, 0)

        full = full_backward_grad_cam(model, image, layer)
        runs = (forward, cam, full)
        for run in runs:
            run()
        rounds = [[seconds(run) for run in runs] for _ in range(repeats)]
        forward_s, cam_s, full_s = (min(times) for times in zip(*rounds))
        print(
            f"  {name:<24}{forward_s * 1e3:>12.0f}{cam_s * 1e3:>13.0f}"
            f"{cam_s / forward_s:>7.2f}{full_s / forward_s:>12.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000, help="radiograph side (pixels)")
    parser.add_argument("--bits", type=int, default=15, help="bits stored (8..16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--input", type=int, default=512, help="model input side (pixels)")
    parser.add_argument("--skip-grad-cam", action="store_true", help="decode figures only")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; load {load}")
    bench_decoding(args.size, args.bits, args.repeats)
    if not args.skip_grad_cam:
        bench_grad_cam(args.input, args.repeats)


if __name__ == "__main__":
    main()
