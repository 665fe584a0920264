"""Benchmark: each installed pipeline in float32 and in bfloat16 autocast, speed and agreement.

Usage::

    python bench/inference.py [--films 4] [--parts lumbar chest hip] [--models models]
                              [--threads 0] [--workdir bench-out/inference]

For every part, phantom films go through the whole pipeline (``Pipeline.run``: preprocessing, the
networks, Grad-CAM) once in float32 and once inside :func:`osteonode.inference.inference_context`
with bfloat16 forced on. It prints the median seconds per film of each, their ratio, and how far
the bfloat16 results are from the float32 ones: the largest difference of any number in the result
(probabilities, BMD, T-scores; not the drawn regions) and whether every category agrees. A pipeline belongs in
``[inference] bfloat16_pipelines`` only where its probabilities agree within 1e-3 (T-scores within
0.01), every category agrees and bfloat16 is faster. Measured on the demo models (2 cores with AMX,
loaded machine): chest 0.0024 and hip 0.022 apart, no faster (their networks are small, so the
film's preprocessing dominates); lumbar does not run in bfloat16 (its regressor output goes to
numpy). None is listed by default.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import torch

from osteonode.config import SHIPPED_PIPELINES, BFloat16Autocast, InferenceSettings, NodeConfig
from osteonode.imaging import load_radiograph
from osteonode.inference import cpu_has_native_bfloat16, inference_context, share_cores
from osteonode.phantoms import make_cohort
from osteonode.pipelines.registry import load_pipelines

REPOSITORY = Path(__file__).resolve().parents[1]


def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a result's dictionary, with its path."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")


def categories(value: Any) -> list[str]:
    """Every category value in a result's dictionary, in order."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "category" and isinstance(item, str):
                found.append(item)
            else:
                found.extend(categories(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(categories(item))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=int, default=4)
    parser.add_argument("--parts", nargs="+", default=list(SHIPPED_PIPELINES))
    parser.add_argument("--models", type=Path, default=REPOSITORY / "models")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: all cores")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/inference"))
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = InferenceSettings(
        threads_per_worker=arguments.threads,
        bfloat16_autocast=BFloat16Autocast.ON,
        bfloat16_pipelines=list(arguments.parts),
    )
    threads = share_cores(settings, 1)
    print(f"{threads} threads; CPU with native bfloat16: {cpu_has_native_bfloat16()}")
    config = NodeConfig.model_validate({"models": {"dir": str(arguments.models.resolve())}})
    pipelines = load_pipelines(config).available
    device = torch.device("cpu")
    for part in arguments.parts:
        pipeline = pipelines.get(part)
        if pipeline is None:
            print(f"{part:8s} not installed")
            continue
        folder = arguments.workdir.resolve() / part
        if not any(folder.glob("*.dcm")):
            make_cohort(part, arguments.films, folder, seed=2024)
        films = [load_radiograph(path) for path in sorted(folder.glob("*.dcm"))[: arguments.films]]
        seconds: dict[bool, list[float]] = {False: [], True: []}
        largest, largest_at, agree = 0.0, "", True
        for film in films:
            results = {}
            for bfloat16 in (False, True):
                run_settings = settings if bfloat16 else settings.model_copy(
                    update={"bfloat16_autocast": BFloat16Autocast.OFF}
                )
                started = time.perf_counter()
                try:
                    with inference_context(run_settings, part, device):
                        results[bfloat16] = pipeline.run(film).to_dict()
                except (TypeError, RuntimeError) as error:
                    print(f"{part:8s} fails in bfloat16: {type(error).__name__}: {error}")
                    break
                seconds[bfloat16].append(time.perf_counter() - started)
            if len(results) < 2:
                break
            reference = dict(numbers(results[False]))
            for path, value in numbers(results[True]):
                # Provenance and drawn regions are not results; a region a few pixels off on a
                # 2,500-pixel film changes no number the report gives.
                provenance = any(part in path for part in (".model", ".source", ".region"))
                if path in reference and not provenance and abs(value - reference[path]) > largest:
                    largest, largest_at = abs(value - reference[path]), path
            agree &= categories(results[False]) == categories(results[True])
        if not seconds[True]:
            continue
        float32, bfloat16 = statistics.median(seconds[False]), statistics.median(seconds[True])
        print(
            f"{part:8s} float32 {float32:6.3f} s  bfloat16 {bfloat16:6.3f} s  "
            f"speed-up {float32 / bfloat16:4.2f}x  largest difference {largest:.4f} ({largest_at})  "
            f"categories {'agree' if agree else 'DIFFER'}"
        )


if __name__ == "__main__":
    main()
