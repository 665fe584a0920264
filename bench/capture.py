"""Benchmark: rendering a Secondary Capture's film, float64 blend against the uint8 lookup table.

Prints figures; it is not a test. A synthetic film (default 2500 x 2500) with a Grad-CAM-like
heat-map is blended the way the node did before (float64 arithmetic over the full-resolution
image: ``grey * (1 - alpha) + colour * alpha``) and the way it does now
(:func:`osteonode.imaging.overlay.blend_heatmap`: one look-up in a 256 x 256 RGB table per
pixel); then the whole picture with its text margin (:func:`compose_capture`). Both blends are
timed in the same run, and the ratio is printed.

Usage: ``python bench/capture.py [--size 2500] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from osteonode.imaging.overlay import (
    HEAT_FLOOR,
    MAX_HEAT_ALPHA,
    blend_heatmap,
    compose_capture,
    heat_colours,
)

LINES = [
    "Osteoporosis, T-score -2.7",
    "L1 0.701 g/cm2 T -2.9 | L2 0.745 g/cm2 T -2.7 | L3 0.760 g/cm2 T -2.6 | L4 0.790 g/cm2 T -2.4",
    "lumbar-demo 0.1.0 - Preliminary, unverified AI result",
    "Synthetic demonstration model - not for diagnostic use",
]


def float64_blend(grey: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The former blend: float64 alpha compositing over the whole image."""
    alpha = MAX_HEAT_ALPHA * np.clip((heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0, 1.0)
    alpha = alpha.astype(np.float64)[..., None]
    blended = grey[..., None].astype(np.float64) * (1.0 - alpha) + heat_colours(heat) * alpha
    return np.rint(blended).astype(np.uint8)


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """The fastest of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2500, help="film rows and columns")
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    size = arguments.size
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (size, size), dtype=np.uint8)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32) / size
    heat = np.exp(-((rows - 0.4) ** 2 + (columns - 0.5) ** 2) / 0.02).astype(np.float32)

    before = best_of(arguments.repeats, lambda: float64_blend(grey, heat))
    after = best_of(arguments.repeats, lambda: blend_heatmap(grey, heat))
    film = blend_heatmap(grey, heat)
    legend = "evidence of lower bone density (Grad-CAM of the BMD estimate, L1-L4)"
    picture = best_of(arguments.repeats, lambda: compose_capture(film, LINES, legend))
    difference = np.abs(float64_blend(grey, heat).astype(int) - film.astype(int)).max()

    print(f"film {size} x {size}, best of {arguments.repeats}")
    print(f"  float64 blend (before)      {before:8.3f} s")
    print(f"  uint8 lookup blend (after)  {after:8.3f} s   {before / after:5.1f}x faster")
    print(f"  text margin and legend      {picture:8.3f} s")
    print(f"  largest difference between the two blends: {difference} grey level(s)")


if __name__ == "__main__":
    main()
