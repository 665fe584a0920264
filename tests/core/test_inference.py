"""``[inference]``: workers share the cores; bfloat16 runs only for models whose card records that
they agree with float32, on hardware that computes it natively; channels-last where it pays;
compilation fails soft."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import torch

from osteonode.config import (
    BFloat16Autocast,
    ChannelsLast,
    ConfigError,
    InferenceSettings,
    load_config,
)
from osteonode.inference import (
    BFLOAT16_METRIC,
    InferencePlan,
    bfloat16_decision,
    cpu_has_native_bfloat16,
    prepare_model,
    worker_threads,
)
from osteonode.nets import convnext_demo, resnet18_demo
from osteonode.zoo import LoadedModel, ModelCard, read_model_card

CPU = torch.device("cpu")
MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def card() -> ModelCard:
    """A shipped model card without a bfloat16 record."""
    shipped = read_model_card(MODELS / "hip-demo")
    return shipped.model_copy(update={"metrics": {k: v for k, v in shipped.metrics.items() if k != BFLOAT16_METRIC}})


def recording(card: ModelCard, difference: float) -> ModelCard:
    return card.model_copy(update={"metrics": {**card.metrics, BFLOAT16_METRIC: difference}})


@pytest.fixture
def native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("osteonode.inference.cpu_has_native_bfloat16", lambda: True)


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


@pytest.mark.usefixtures("native_bfloat16")
def test_auto_runs_a_model_in_bfloat16_only_when_its_card_records_agreement_within_the_tolerance(
    card: ModelCard,
) -> None:
    auto = InferenceSettings()

    assert bfloat16_decision(auto, recording(card, 4e-4), CPU)[0]
    unverified, why = bfloat16_decision(auto, card, CPU)
    assert not unverified and "verify-precision" in why
    too_far, why = bfloat16_decision(auto, recording(card, 0.02), CPU)
    assert not too_far and "over the tolerance 0.001" in why
    assert bfloat16_decision(InferenceSettings(bfloat16_tolerance=0.05), recording(card, 0.02), CPU)[0]


def test_auto_stays_in_float32_on_a_cpu_without_native_bfloat16(
    card: ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("osteonode.inference.cpu_has_native_bfloat16", lambda: False)

    used, why = bfloat16_decision(InferenceSettings(), recording(card, 1e-4), CPU)

    assert not used and "without native bfloat16" in why


def test_on_and_off_override_the_card(card: ModelCard) -> None:
    assert bfloat16_decision(InferenceSettings(bfloat16_autocast=BFloat16Autocast.ON), card, CPU)[0]
    off = InferenceSettings(bfloat16_autocast=BFloat16Autocast.OFF)
    assert not bfloat16_decision(off, recording(card, 1e-5), CPU)[0]


def test_a_plan_in_bfloat16_runs_convolutions_in_bfloat16() -> None:
    convolution = torch.nn.Conv2d(1, 2, 3)
    image = torch.rand(1, 1, 8, 8)

    with InferencePlan(bfloat16=True).autocast() as reduced:
        in_bfloat16 = convolution(image)
    with InferencePlan().autocast() as exact:
        in_float32 = convolution(image)

    assert (reduced, in_bfloat16.dtype) == (True, torch.bfloat16)
    assert (exact, in_float32.dtype) == (False, torch.float32)


def loaded(card: ModelCard) -> LoadedModel:
    networks = {"plain": resnet18_demo().eval(), "convnext": convnext_demo().eval()}
    return LoadedModel(card=card, directory=MODELS, device=CPU, networks=networks)


def is_channels_last(network: torch.nn.Module) -> bool:
    weight = next(
        module.weight for module in network.modules()
        if isinstance(module, torch.nn.Conv2d) and module.in_channels > 1 and module.kernel_size != (1, 1)
    )
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_channels_last_auto_converts_the_architectures_it_speeds_up_and_not_convnext(card: ModelCard) -> None:
    model = loaded(card)

    plan = prepare_model(model, InferenceSettings())

    assert plan.channels_last == ("plain",)
    assert is_channels_last(model.networks["plain"]) and not is_channels_last(model.networks["convnext"])
    assert prepare_model(loaded(card), InferenceSettings(channels_last=ChannelsLast.OFF)).channels_last == ()


def test_compiling_where_it_is_unavailable_says_why_and_runs_the_networks_as_they_are(
    card: ModelCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("osteonode.inference.compilation_unavailable", lambda: "no C++ compiler (g++)")
    model = loaded(card)

    with structlog.testing.capture_logs() as logs:
        plan = prepare_model(model, InferenceSettings(compile=True))

    assert plan.compiled == ()
    warning = next(entry for entry in logs if entry["event"] == "compile_unavailable")
    assert warning["reason"] == "no C++ compiler (g++)" and warning["log_level"] == "warning"
    assert model.networks["plain"](torch.rand(1, 1, 64, 64)).shape == (1, 2)


def test_bad_inference_values_and_the_retired_pipeline_list_are_reported_by_key(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[inference]\nbfloat16_autocast = "sometimes"\nchannels_last = "yes"\n'
        "bfloat16_tolerance = 0\nbfloat16_pipelines = [\"chest\"]\n"
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    problems = {problem.key: problem.reason for problem in caught.value.problems}
    assert "'auto', 'on' or 'off'" in problems["inference.bfloat16_autocast"]
    assert "'auto', 'on' or 'off'" in problems["inference.channels_last"]
    assert "greater than 0" in problems["inference.bfloat16_tolerance"]
    assert "retired" in problems["inference.bfloat16_pipelines"]
    assert "verify-precision" in problems["inference.bfloat16_pipelines"]
