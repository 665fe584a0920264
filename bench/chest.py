"""Benchmark: the chest pipeline per film with the paper's network, float32 and bfloat16.

Both stages run as the full ConvNeXt-S with a two-class head at 512 x 512 (three channels, the
ImageNet normalisation), each with its Grad-CAM, on a phantom chest film: the whole
:meth:`ChestPipeline.analyse` (grayscale truncation, both stages, heat-maps pasted back onto the
film). The networks have random weights (stage 1's head is set to answer "not osteoporosis", so
stage 2 always runs): the figures are cost, not accuracy. Each precision runs in its own process
so that its peak memory is its own.

Goals (the chest issue): on 2 CPU cores <= 2.5 s per film in float32; bfloat16 autocast at least
1.5x faster with probabilities within 0.02 of float32.

Usage: ``python bench/chest.py [--threads 2] [--films 3] [--size 2048] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch

from osteonode.config import PipelineSettings
from osteonode.imaging import load_radiograph
from osteonode.inference import InferencePlan
from osteonode.nets import build_network
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.base import ModelIdentity
from osteonode.pipelines.chest import ChestPipeline, Stage
from osteonode.train.chest import PAPER_CONFIGURATION

#: Goals of the chest issue.
FLOAT32_GOAL_S = 2.5
BFLOAT16_SPEED_UP_GOAL = 1.5
PROBABILITY_TOLERANCE = 0.02
#: The arithmetic of each measurement: float32, then bfloat16 autocast.
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class Measurement:
    """One precision's figures."""

    precision: str
    device: str
    seconds: list[float]
    probabilities: dict[str, float]
    peak_memory_mb: float
    model_memory_mb: float


def _pipeline(device: torch.device) -> ChestPipeline:
    torch.manual_seed(0)
    options = {"num_classes": 2, "in_chans": PAPER_CONFIGURATION.preprocessing.channels}
    networks = {
        stage: build_network(PAPER_CONFIGURATION.architecture, **options) for stage in Stage
    }
    with torch.no_grad():
        networks[Stage.OSTEOPOROSIS].head.bias.copy_(torch.tensor([5.0, -5.0]))
    return ChestPipeline(
        networks={stage: network.to(device).eval() for stage, network in networks.items()},
        preprocessing=PAPER_CONFIGURATION.preprocessing,
        settings=PipelineSettings(),
        identity=ModelIdentity(
            "bench", "0", "convnext_small", synthetic=True, diagnostic_use=False
        ),
        device=device,
    )


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(film: str, precision: str, device: str, threads: int, films: int) -> Measurement:
    """Time ``films`` analyses of one film (after one warm-up) in this process."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    torch.set_num_threads(threads)
    target = torch.device(device)
    radiograph = load_radiograph(film)
    pipeline = _pipeline(target)
    plan = InferencePlan(device=target, bfloat16=precision == "bfloat16")
    if target.type == "cuda":
        torch.cuda.synchronize()
        model_memory = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        model_memory = _rss_mb()
    with plan.autocast():
        analysis = pipeline.analyse(radiograph)  # warm-up
    seconds = []
    for _ in range(films):
        start = time.perf_counter()
        with plan.autocast():
            analysis = pipeline.analyse(radiograph)
        if target.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if target.type == "cuda" else _rss_mb()
    probabilities = {
        finding.name: finding.probability
        for finding in analysis.result.findings
        if finding.probability is not None
    }
    return Measurement(precision, device, seconds, probabilities, peak, model_memory)


def _in_own_process(*arguments: object) -> Measurement:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, arguments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--films", type=int, default=3, help="timed analyses per precision")
    parser.add_argument("--size", type=int, default=2048, help="long side of the phantom film")
    parser.add_argument(
        "--device", action="append", help="cpu and/or cuda (default: cpu, and cuda when present)"
    )
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    with tempfile.TemporaryDirectory() as directory:
        film = str(
            read_cohort(make_cohort("chest", 1, Path(directory), seed=5, size=args.size))[0].file
        )
        print(
            f"chest pipeline, {PAPER_CONFIGURATION.architecture} at 512 x 512, both stages with Grad-CAM,"
        )
        print(
            f"one {args.size}-pixel phantom film, {args.threads} CPU threads, median of {args.films} films"
        )
        for device in devices:
            results = {
                precision: _in_own_process(film, precision, device, args.threads, args.films)
                for precision in PRECISIONS
            }
            exact = results["float32"]
            for precision, result in results.items():
                median = statistics.median(result.seconds)
                difference = max(
                    abs(result.probabilities[name] - exact.probabilities[name])
                    for name in exact.probabilities
                )
                memory = "GPU allocated" if device == "cuda" else "process RSS"
                print(
                    f"  {device:4s} {precision:8s} {median:6.2f} s/film"
                    f" (runs {', '.join(f'{s:.2f}' for s in result.seconds)});"
                    f" peak {memory} {result.peak_memory_mb:7.0f} MiB (models loaded: {result.model_memory_mb:.0f});"
                    f" max |p - p_float32| {difference:.4f}"
                )
            speed_up = statistics.median(exact.seconds) / statistics.median(
                results["bfloat16"].seconds
            )
            float32_median = statistics.median(exact.seconds)
            print(
                f"  {device}: bfloat16 speed-up {speed_up:.2f}x (goal >= {BFLOAT16_SPEED_UP_GOAL}x);"
                f" float32 {float32_median:.2f} s/film (goal on 2 CPU cores <= {FLOAT32_GOAL_S} s)"
            )


if __name__ == "__main__":
    main()
