"""Model folders: cards validated, weights only from safetensors and only with matching checksums."""

from __future__ import annotations

import tomllib

import pytest
import torch
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.zoo import (
    ModelCard,
    ModelError,
    NetworkEntry,
    list_models,
    load_model,
    read_model_card,
    record_metrics,
    save_model,
)


def demo_card(**changes) -> ModelCard:
    values = dict(
        name="hip-test",
        version="0.0.1",
        pipeline="hip",
        intended_use="tests only",
        training_data="none",
        synthetic=True,
        input_size=(64, 64),
        normalisation="ztransform_2sigma",
        parameters={"threshold": 0.5},
        networks=[NetworkEntry(role="classifier", architecture="vgg16_nonlocal_demo",
                               options={"in_chans": 1}, weights="classifier.safetensors")],
    )
    values.update(changes)
    return ModelCard(**values)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    from osteonode.nets import build_network

    network = build_network("vgg16_nonlocal_demo", in_chans=1)
    card = save_model(tmp_path / "hip-test", demo_card(), {"classifier": network})
    return tmp_path / "hip-test", card, network


def test_saved_model_loads_with_identical_weights(saved):
    directory, card, network = saved
    assert len(card.networks[0].sha256) == 64
    loaded = load_model(directory, device="cpu")
    assert loaded.card == card == read_model_card(directory)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded["classifier"].state_dict()[key], value)
    assert not loaded["classifier"].training
    identity = loaded.card.identity()
    assert identity.synthetic and "not for diagnostic use" in identity.disclaimer
    assert ("threshold", "0.5") in identity.parameters


def test_weights_changed_after_the_card_are_refused(saved):
    directory, _, _ = saved
    weights = directory / "classifier.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(directory, device="cpu")


def test_missing_weights_and_bad_cards_are_refused_with_the_reason(saved, tmp_path):
    directory, _, _ = saved
    card_text = (directory / "model.toml").read_text()
    (directory / "classifier.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(directory, device="cpu")
    (directory / "model.toml").write_text(card_text.replace('pipeline = "hip"', 'pipeline = "knee"'))
    with pytest.raises(ModelError, match="pipeline"):
        read_model_card(directory)
    with pytest.raises(ModelError, match="cannot read"):
        read_model_card(tmp_path / "nowhere")


def test_a_card_without_a_checksum_does_not_load(saved):
    directory, _, _ = saved
    data = tomllib.loads((directory / "model.toml").read_text())
    text = (directory / "model.toml").read_text().replace(f'sha256 = "{data["networks"][0]["sha256"]}"\n', "")
    (directory / "model.toml").write_text(text)
    with pytest.raises(ModelError, match="no sha256"):
        load_model(directory, device="cpu")


def test_synthetic_models_cannot_claim_diagnostic_use():
    with pytest.raises(ValueError, match="synthetic"):
        demo_card(diagnostic_use=True)


def test_models_list_shows_usable_and_broken_models(saved, tmp_path):
    directory, _, _ = saved
    (tmp_path / "broken").mkdir()
    found = dict(list_models(tmp_path))
    assert isinstance(found[directory], ModelCard)
    assert isinstance(found[tmp_path / "broken"], ModelError)
    result = CliRunner().invoke(app, ["models", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "hip-test" in result.output and "broken" in result.output and "synthetic" in result.output


def test_the_same_weights_are_written_as_the_same_bytes(tmp_path):
    from osteonode.nets import build_network

    torch.manual_seed(1)
    network = build_network("vgg16_nonlocal_demo", in_chans=1)
    first = save_model(tmp_path / "a", demo_card(), {"classifier": network})
    second = save_model(tmp_path / "b", demo_card(), {"classifier": network})
    assert first.networks[0].sha256 == second.networks[0].sha256


def test_recorded_figures_join_the_cards_metrics_and_leave_the_weights_as_they_were(saved):
    folder, card, _ = saved
    weights = (folder / "classifier.safetensors").read_bytes()
    written = record_metrics(folder, {"acceptance_auc_mean": 0.91, "acceptance_seeds": 3.0})
    assert written.metrics == {**card.metrics, "acceptance_auc_mean": 0.91, "acceptance_seeds": 3.0}
    assert read_model_card(folder).metrics == written.metrics
    assert (folder / "classifier.safetensors").read_bytes() == weights
    assert written.networks[0].sha256 == card.networks[0].sha256


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.9"])
def test_a_figure_that_is_not_a_finite_number_is_not_recorded(saved, value):
    folder, card, _ = saved
    with pytest.raises(ModelError, match="acceptance_auc_mean"):
        record_metrics(folder, {"acceptance_auc_mean": value})
    assert read_model_card(folder) == card


def test_figures_are_not_recorded_for_weights_changed_after_the_card(saved):
    folder, _, _ = saved
    (folder / "classifier.safetensors").write_bytes(b"changed")
    with pytest.raises(ModelError):
        record_metrics(folder, {"acceptance_auc_mean": 0.91})
