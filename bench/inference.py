"""Benchmark: each network in each memory layout and arithmetic, and each pipeline's bfloat16 agreement.

Usage::

    python bench/inference.py [--films 4] [--parts lumbar chest hip] [--models models]
                              [--threads 0] [--repeats 5] [--full-size] [--workdir bench-out/inference]

Networks: every network of every installed model (and, with ``--full-size``, the papers'
ConvNeXt-S at 512 px and VGG16-NL at 224 px, randomly initialised) runs one pass as the pipeline
runs it, Grad-CAM for the classifiers and a plain forward pass under ``torch.inference_mode`` for
the others, in float32 and bfloat16 autocast, each in PyTorch's default (NCHW) layout and in
channels-last; the best of ``--repeats`` runs is printed. ``osteonode.inference``'s
``CHANNELS_LAST_ARCHITECTURES`` lists the architectures for which channels-last won here.

Pipelines: phantom films go through the whole pipeline in float32 and in bfloat16 autocast
(:func:`osteonode.precision.measure_agreement`, what ``osteonode models verify-precision`` records
in a card), with the median seconds of each. ``[inference] bfloat16_autocast = "auto"`` runs a
model in bfloat16 only where its card records a difference within 1e-3 and the CPU has native
bfloat16.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import structlog
import torch
from torch import nn

from osteonode.config import (
    SHIPPED_PIPELINES,
    BFloat16Autocast,
    ChannelsLast,
    InferenceSettings,
    NodeConfig,
)
from osteonode.demo import phantom_part
from osteonode.explain import grad_cam
from osteonode.imaging import load_radiograph
from osteonode.inference import InferencePlan, cpu_has_native_bfloat16, share_cores
from osteonode.nets import build_network
from osteonode.phantoms import make_cohort
from osteonode.pipelines.inference import POSITIVE_INDEX
from osteonode.pipelines.registry import load_pipelines
from osteonode.precision import measure_agreement
from osteonode.zoo import list_models, load_model

REPOSITORY = Path(__file__).resolve().parents[1]
#: The papers' networks at their input sizes: (name, architecture, options, input size).
FULL_SIZE = (
    ("convnext_small@512", "convnext_small", {"num_classes": 2, "in_chans": 3}, 512),
    ("vgg16_nonlocal@224", "vgg16_nonlocal", {"in_chans": 1}, 224),
)
#: The input size of networks that see crops rather than the card's input size.
CROP_SIZES = {"regressor": 64, "refiner": 64}


def one_pass(network: nn.Module, inputs: torch.Tensor) -> None:
    """What a pipeline runs: Grad-CAM of a classifier, else a forward pass without autograd."""
    if isinstance(getattr(network, "gradcam_layer", None), nn.Module):
        grad_cam(network, inputs, network.gradcam_layer, POSITIVE_INDEX)
    else:
        with torch.inference_mode():
            network(inputs)


def best_seconds(network: nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    one_pass(network, inputs)  # warm-up (oneDNN picks its kernels on the first pass)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        one_pass(network, inputs)
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def time_layouts(name: str, network: nn.Module, size: int, repeats: int) -> None:
    """Print one network's best seconds in float32/bfloat16 x NCHW/channels-last."""
    channels = int(getattr(network, "in_chans", 1))
    inputs = torch.rand(1, channels, size, size)
    figures = {}
    for channels_last, bfloat16 in itertools.product((False, True), (False, True)):
        network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        with InferencePlan(bfloat16=bfloat16).autocast():
            try:
                figures[channels_last, bfloat16] = best_seconds(network, inputs, repeats)
            except (RuntimeError, TypeError, ValueError) as error:
                print(f"  {name}: {type(error).__name__}: {str(error)[:120]}")
                return
    network.to(memory_format=torch.contiguous_format)
    float32, bfloat16 = figures[False, False], figures[False, True]
    print(
        f"  {name:34s} {size:4d} px  float32 {float32 * 1000:8.1f} ms, channels-last"
        f" {figures[True, False] * 1000:8.1f} ({float32 / figures[True, False]:4.2f}x);"
        f"  bfloat16 {bfloat16 * 1000:8.1f} ms, channels-last {figures[True, True] * 1000:8.1f}"
        f" ({bfloat16 / figures[True, True]:4.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=int, default=4)
    parser.add_argument("--parts", nargs="+", default=list(SHIPPED_PIPELINES))
    parser.add_argument("--models", type=Path, default=REPOSITORY / "models")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: all cores")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per network and setting")
    parser.add_argument("--full-size", action="store_true", help="also the papers' full-size networks")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/inference"))
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    threads = share_cores(InferenceSettings(threads_per_worker=arguments.threads), 1)
    print(f"{threads} threads; CPU with native bfloat16: {cpu_has_native_bfloat16()}")

    print("\nnetworks: best of one pass (Grad-CAM for classifiers), NCHW vs channels-last")
    for folder, card in list_models(arguments.models):
        if isinstance(card, Exception):
            continue
        model = load_model(folder, device="cpu")
        for role, network in model.networks.items():
            size = CROP_SIZES.get(role, card.input_size[0])
            time_layouts(f"{card.name}/{role} ({type(network).__name__})", network, size, arguments.repeats)
    if arguments.full_size:
        for name, architecture, options, size in FULL_SIZE:
            torch.manual_seed(0)
            network = build_network(architecture, **options).eval()
            time_layouts(name, network, size, arguments.repeats)

    print("\npipelines: whole analysis in float32 and bfloat16 autocast (mean s/film; default layouts)")
    # Both runs in the node's default layout; only the arithmetic differs.
    config = NodeConfig.model_validate({
        "models": {"dir": str(arguments.models.resolve())},
        "inference": {"bfloat16_autocast": BFloat16Autocast.OFF, "channels_last": ChannelsLast.AUTO},
    })
    pipelines = load_pipelines(config).available
    for part in arguments.parts:
        pipeline = pipelines.get(part)
        if pipeline is None:
            print(f"  {part:14s} not installed")
            continue
        folder = arguments.workdir.resolve() / part
        if len(list(folder.glob("*.dcm"))) < arguments.films:
            make_cohort(phantom_part(pipeline) or part, arguments.films, folder, seed=2024, size=1024)
        films = [load_radiograph(path) for path in sorted(folder.glob("*.dcm"))[: arguments.films]]
        # First: it also warms the pipeline up (oneDNN picks its kernels on the first pass).
        agreement = measure_agreement(pipeline, films, torch.device("cpu"))
        seconds = {}
        for bfloat16 in (False, True):
            started = time.perf_counter()
            with InferencePlan(bfloat16=bfloat16).autocast():
                for film in films:
                    pipeline.run(film)
            seconds[bfloat16] = (time.perf_counter() - started) / len(films)
        print(
            f"  {part:14s} float32 {seconds[False]:6.3f} s  bfloat16 {seconds[True]:6.3f} s"
            f"  ({seconds[False] / seconds[True]:4.2f}x)  largest difference {agreement.max_abs_difference:.2g}"
            f" ({agreement.largest_at or 'no output'})  answers {'agree' if agreement.decisions_agree else 'DIFFER'}"
        )
    print("\nThe machine's load moves these figures; compare the ratios of one run.")


if __name__ == "__main__":
    main()
