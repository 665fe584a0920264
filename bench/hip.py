"""Benchmark: the hip pipeline per film (both sides), full-size VGG16 non-local with Grad-CAM.

Prints figures; it is not a test. One clean AP pelvis phantom (default 2500 px long side) is
decoded once; then :meth:`HipPipeline.run` (localiser, both sides' crops through the classifier
with Grad-CAM from the same forward pass, the heat-map pasted back onto the film) is timed. The
classifier is the full-size ``vgg16_nonlocal`` (14.7 M convolution parameters, randomly
initialised: the weights do not change the cost) at ``--crop`` pixels, beside the shipped demo
model for comparison; the localiser is the demo model's.

Each configuration runs in a fresh process so that its peak memory (maximum resident set size on
the CPU, ``torch.cuda.max_memory_allocated`` on a GPU) is its own. CPU runs use ``--threads``
threads (the goal is <= 3 s per film on 2 cores); a GPU is measured when one is present.

Usage: ``python bench/hip.py [--size 2500] [--crop 224] [--repeats 5] [--threads 2]
[--model models/hip-demo]``
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import structlog
import torch

from osteonode.config import PipelineSettings
from osteonode.imaging import load_radiograph
from osteonode.nets import build_network
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.hip import CLASSIFIER_ROLE, LOCATOR_ROLE, HipPipeline
from osteonode.reference import load_reference
from osteonode.zoo import NetworkEntry, load_model, read_model_card, save_model

#: Seed of the benchmark phantom (not a training seed).
PHANTOM_SEED = 90_001


def full_size_model(demo: Path, crop: int, out: Path) -> Path:
    """The demo model with its classifier replaced by a randomly initialised full-size network."""
    card = read_model_card(demo)
    locator = load_model(demo, device="cpu")[LOCATOR_ROLE]
    torch.manual_seed(0)
    classifier = build_network("vgg16_nonlocal", in_chans=1)
    entries = [
        entry
        if entry.role != CLASSIFIER_ROLE
        else NetworkEntry(
            role=CLASSIFIER_ROLE,
            architecture="vgg16_nonlocal",
            options={"in_chans": 1},
            weights=f"{CLASSIFIER_ROLE}.safetensors",
        )
        for entry in card.networks
    ]
    card = card.model_copy(
        update={
            "name": "hip-full-size-bench",
            "networks": entries,
            "input_size": (crop, crop),
            "parameters": {**card.parameters, "crop_size": crop},
        }
    )
    save_model(out, card, {LOCATOR_ROLE: locator, CLASSIFIER_ROLE: classifier})
    return out


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_peak_resident() -> bool:
    """Reset the resident high-water mark (Linux clear_refs 5); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(
    model_dir: Path, film: Path, device: str, threads: int, repeats: int
) -> dict[str, float]:
    """Run in a child process: time ``repeats`` films after one warm-up; peak memory."""
    # Decoded pixels are read-only; the resize only reads them, so torch's warning is noise here.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    torch.set_num_threads(threads)
    started = time.perf_counter()
    radiograph = load_radiograph(film)
    decode_s = time.perf_counter() - started
    pipeline = HipPipeline.from_model(
        load_model(model_dir, device=device), PipelineSettings(), load_reference()
    )
    result = pipeline.run(radiograph)  # warm-up (allocator, kernels)
    measured_sides = sum(f.evaluable for f in result.findings)
    resident_before_mb = _status_mb("VmRSS")
    peak_reset = _reset_peak_resident()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        pipeline.run(radiograph)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    figures = {
        "decode_s": decode_s,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "cpu_s": statistics.median(cpu_times),
        "sides_measured": float(measured_sides),
        # With the high-water mark reset, VmHWM is the peak during the timed runs alone.
        "peak_rss_mb": _status_mb("VmHWM")
        if peak_reset
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mb": resident_before_mb,
    }
    if device.startswith("cuda"):
        figures["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2500, help="long side of the phantom film (px)")
    parser.add_argument(
        "--crop", type=int, default=224, help="full-size classifier crop (px, multiple of 32)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument(
        "--model", type=Path, default=Path("models/hip-demo"), help="the demo model folder"
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        film = read_cohort(make_cohort("hip", 1, work / "film", seed=PHANTOM_SEED, size=args.size))[
            0
        ].file
        full = full_size_model(args.model, args.crop, work / "full")
        demo_crop = read_model_card(args.model).parameters["crop_size"]
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        context = multiprocessing.get_context("spawn")
        print(
            f"hip pipeline per film ({args.size} px phantom, both sides), {args.repeats} runs after a warm-up"
        )
        print(
            f"{'network':<34}{'device':<8}{'median s':>10}{'max s':>8}{'CPU s':>8}{'sides':>7}{'peak MB':>10}{'run MB':>8}{'GPU MB':>9}"
        )
        for label, model_dir in (
            (f"vgg16_nonlocal (full) {args.crop} px", full),
            (f"demo model {demo_crop} px", args.model),
        ):
            for device in devices:
                with context.Pool(1) as pool:
                    figures = pool.apply(
                        measure, (model_dir, film, device, args.threads, args.repeats)
                    )
                device_label = f"cpu x{args.threads}" if device == "cpu" else device
                gpu = f"{figures['gpu_peak_mb']:9.0f}" if "gpu_peak_mb" in figures else f"{'-':>9}"
                print(
                    f"{label:<34}{device_label:<8}{figures['median_s']:10.3f}{figures['max_s']:8.3f}{figures['cpu_s']:8.2f}"
                    f"{figures['sides_measured']:7.0f}{figures['peak_rss_mb']:10.0f}"
                    f"{figures['peak_rss_mb'] - figures['rss_before_run_mb']:8.0f}{gpu}"
                )
        print(
            f"decode of the film (once per film, not in the times above): {figures['decode_s']:.3f} s"
        )
        print("goal: <= 3 s per film on 2 CPU cores with the full-size network")
        print(
            "CPU s: process CPU time per film (all threads); on a busy machine median s / CPU s shows the contention"
        )


if __name__ == "__main__":
    main()
