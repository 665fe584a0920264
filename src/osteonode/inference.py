"""How the models run on this machine: threads per worker and bfloat16 autocast (``[inference]``).

Threads: PyTorch gives every thread that runs a model a team of intra-op threads, by default one per
core. Two workers with a full team each put twice as many busy threads as cores on the machine, and
OpenMP threads that spin-wait for each other then cost far more than they save (up to 10x slower
under load). The node therefore shares the cores among its workers: ``threads_per_worker`` (0: the
cores divided by the workers, at least one).

bfloat16: where the hardware computes in bfloat16 natively (a CUDA device, or a CPU with AMX or
AVX512-BF16), autocast runs convolutions and matrix products in bfloat16, with the weights kept in
float32, at about twice the speed for the full-size networks. It is applied only to the pipelines a
site lists in ``bfloat16_pipelines`` after ``bench/inference.py`` showed that their model's results
agree with float32; none by default, since the shipped demo models do not agree within 1e-3.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from osteonode.config import BFloat16Autocast, InferenceSettings

__all__ = [
    "cpu_has_native_bfloat16",
    "inference_context",
    "share_cores",
    "uses_bfloat16",
    "worker_threads",
]

#: CPU flags (Linux ``/proc/cpuinfo``) that mean bfloat16 arithmetic in hardware.
_NATIVE_BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def worker_threads(settings: InferenceSettings, workers: int, cores: int | None = None) -> int:
    """Intra-op threads each worker runs its models with.

    Parameters
    ----------
    settings
        ``[inference]``.
    workers
        Worker threads of this process that may run a model at the same time.
    cores
        CPU cores this process may use; those of its affinity mask when None.

    Returns
    -------
    int
        ``threads_per_worker`` when set, else ``cores // workers``, at least 1.
    """
    if not isinstance(settings, InferenceSettings):
        raise TypeError(f"settings must be InferenceSettings, not {type(settings).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if settings.threads_per_worker:
        return settings.threads_per_worker
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def share_cores(settings: InferenceSettings, workers: int) -> int:
    """Set this process's intra-op threads so that its workers share the cores; returns the count.

    PyTorch keeps one setting per process, which each thread takes on when it first runs a model.
    """
    threads = worker_threads(settings, workers)
    torch.set_num_threads(threads)
    return threads


def cpu_has_native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes in bfloat16 in hardware (AMX or AVX512-BF16); False when unknown."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not _NATIVE_BFLOAT16_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def uses_bfloat16(settings: InferenceSettings, pipeline: str, device: torch.device) -> bool:
    """Whether the pipeline called ``pipeline`` runs in bfloat16 autocast on ``device``."""
    if pipeline not in settings.bfloat16_pipelines:
        return False
    if settings.bfloat16_autocast is BFloat16Autocast.AUTO:
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
    return settings.bfloat16_autocast is BFloat16Autocast.ON


@contextlib.contextmanager
def inference_context(
    settings: InferenceSettings, pipeline: str, device: torch.device
) -> Iterator[bool]:
    """Run a pipeline inside: bfloat16 autocast where :func:`uses_bfloat16` says so.

    Yields
    ------
    bool
        Whether bfloat16 autocast is on.
    """
    if not uses_bfloat16(settings, pipeline, device):
        yield False
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield True
