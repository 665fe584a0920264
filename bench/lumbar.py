"""Benchmark: the lumbar pipeline on full-size films (about 2500 x 2000 pixels).

Prints, per phase, the median wall-clock and CPU time per film over the films: decode (``load_radiograph``),
detection (working copy, keypoint network, corner refinement, validity checks), regression (BMD
of L1-L4), Grad-CAM (regressor maps pasted back into the film), and the total of a plain
``pipeline.run`` after decoding plus the decode; then the process's peak resident memory. Goal
on 2 CPU cores: total <= 3 s, peak memory <= 2 GB. On a busy machine the wall-clock figures
grow with the other load; the CPU figures (both threads together) do not.

The films are evaluable phantoms made with a seed no training uses; they are written with the
phantom generator's mix of transfer syntaxes, so decode times vary from film to film.

Usage: ``python bench/lumbar.py [--films 5] [--size 2500] [--threads 2] [--model models/lumbar-demo]``
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path

import structlog
import torch

from osteonode.config import PipelineSettings
from osteonode.imaging import load_radiograph
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.lumbar import MEASURED, LumbarPipeline, prepare_film
from osteonode.reference import load_reference
from osteonode.zoo import load_model

BENCH_SEED = 5150


def _timed(action, *args):
    """(value, wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = action(*args)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _detect(pipeline: LumbarPipeline, radiograph):
    """Working copy, keypoint network, refinement and validity checks."""
    film = prepare_film(radiograph.pixels, radiograph.spacing_mm)
    with torch.no_grad():
        detection = pipeline.locate(film)
    problems, _ = pipeline.decide(film, detection)
    return film, detection, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=5)
    parser.add_argument("--size", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=Path("models/lumbar-demo"))
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    torch.set_num_threads(arguments.threads)
    pipeline = LumbarPipeline.from_model(
        load_model(arguments.model, device="cpu"), PipelineSettings(), load_reference()
    )
    phases: dict[str, list[tuple[float, float]]] = {
        "decode": [],
        "detection": [],
        "regression": [],
        "grad-cam": [],
        "total": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        records = read_cohort(
            make_cohort("lumbar", arguments.films, folder, seed=BENCH_SEED, size=arguments.size)
        )
        pipeline.run(load_radiograph(records[0].file))  # warm-up: first-call allocations
        for record in records:
            radiograph, *decode = _timed(load_radiograph, record.file)
            _, *run = _timed(pipeline.run, radiograph)
            (film, detection, problems), *detect = _timed(_detect, pipeline, radiograph)
            with torch.no_grad():
                measured, *regress = _timed(
                    pipeline.measure,
                    film,
                    detection,
                    [v.value for v in MEASURED if v.value not in problems],
                )
            cam = _timed(pipeline.explain, film, measured)[1:] if measured else (0.0, 0.0)
            total = (decode[0] + run[0], decode[1] + run[1])
            for name, value in zip(phases, (decode, detect, regress, cam, total)):
                phases[name].append(tuple(value))
            print(
                f"{record.file.name}: {radiograph.shape[0]} x {radiograph.shape[1]}, {record.row['transfer_syntax']}"
            )
    print(
        f"\nlumbar pipeline, {arguments.films} films, {arguments.threads} threads (median seconds per film)"
    )
    print(
        f"  {'phase':<11} {'wall':>6}  {'cpu':>6}   (cpu: this process's CPU time, robust to other load)"
    )
    for name, values in phases.items():
        walls, cpus = zip(*values)
        print(
            f"  {name:<11} {statistics.median(walls):6.3f}  {statistics.median(cpus):6.3f}   (max wall {max(walls):.3f})"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak memory {peak_mb:6.0f} MB (resident, whole process)")
    print("goal: total <= 3 s, peak memory <= 2048 MB")


if __name__ == "__main__":
    main()
