"""``[inference]``: workers share the cores, and bfloat16 runs only where a site verified it and the
hardware computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from osteonode.config import BFloat16Autocast, InferenceSettings
from osteonode.inference import (
    cpu_has_native_bfloat16,
    inference_context,
    uses_bfloat16,
    worker_threads,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(("cores", "workers", "threads"), [(2, 2, 1), (16, 2, 8), (16, 3, 5), (2, 4, 1)])
def test_workers_share_the_cores_so_that_workers_times_threads_never_exceeds_them(
    cores: int, workers: int, threads: int
) -> None:
    assert worker_threads(InferenceSettings(), workers, cores=cores) == threads


def test_an_explicit_thread_count_is_used_as_given() -> None:
    assert worker_threads(InferenceSettings(threads_per_worker=3), 2, cores=2) == 3


def test_a_worker_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="workers must be a positive int"):
        worker_threads(InferenceSettings(), 0)


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    amx = tmp_path / "amx"
    amx.write_text("processor : 0\nflags : fpu sse avx2 amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor : 0\nflags : fpu sse avx2\n")

    assert cpu_has_native_bfloat16(amx)
    assert not cpu_has_native_bfloat16(plain)
    assert not cpu_has_native_bfloat16(tmp_path / "missing")


def test_bfloat16_is_off_by_default_and_only_for_listed_pipelines() -> None:
    listed = InferenceSettings(
        bfloat16_autocast=BFloat16Autocast.ON, bfloat16_pipelines=["chest"]
    )

    assert not uses_bfloat16(InferenceSettings(), "chest", CPU)
    assert uses_bfloat16(listed, "chest", CPU)
    assert not uses_bfloat16(listed, "lumbar", CPU)
    off = listed.model_copy(update={"bfloat16_autocast": BFloat16Autocast.OFF})
    assert not uses_bfloat16(off, "chest", CPU)


def test_auto_follows_the_hardware() -> None:
    auto = InferenceSettings(bfloat16_pipelines=["chest"])

    assert uses_bfloat16(auto, "chest", CPU) == cpu_has_native_bfloat16()


def test_a_listed_pipeline_runs_its_convolutions_in_bfloat16() -> None:
    settings = InferenceSettings(
        bfloat16_autocast=BFloat16Autocast.ON, bfloat16_pipelines=["hip"]
    )
    convolution = torch.nn.Conv2d(1, 2, 3)
    image = torch.rand(1, 1, 8, 8)

    with inference_context(settings, "hip", CPU) as bfloat16:
        listed = convolution(image)
    with inference_context(settings, "lumbar", CPU) as not_listed:
        unlisted = convolution(image)

    assert (bfloat16, listed.dtype) == (True, torch.bfloat16)
    assert (not_listed, unlisted.dtype) == (False, torch.float32)
