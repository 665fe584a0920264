"""``osteonode models verify-precision``: a model's bfloat16 agreement with float32, measured on
phantoms and kept in its card, is what ``[inference] bfloat16_autocast = "auto"`` goes by."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.config import InferenceSettings
from osteonode.inference import BFLOAT16_METRIC, prepare_model
from osteonode.pipelines.base import (
    Category,
    Finding,
    FindingSite,
    ModelIdentity,
    Result,
    SourceImage,
)
from osteonode.precision import DECISIONS_METRIC, FILMS_METRIC, result_difference
from osteonode.zoo import file_sha256, load_model, read_model_card

MODELS = Path(__file__).resolve().parents[2] / "models"
IDENTITY = ModelIdentity("stand-in", "1", "none", synthetic=True, diagnostic_use=False)
SOURCE = SourceImage("1.2", "1.2.3", "1.2.3.4", "1.2.3.4.5", 64, 64)


def result(*findings: Finding, category: Category = Category.NORMAL) -> Result:
    return Result("hip", SOURCE, IDENTITY, evaluable=True, site=FindingSite.HIP, category=category,
                  findings=findings)


def hip(side: str, probability: float) -> Finding:
    return Finding(f"{side} hip", FindingSite.HIP, probability=probability, threshold=0.5,
                   osteoporosis_present=probability >= 0.5)


def test_the_largest_output_difference_and_any_changed_answer_are_found() -> None:
    exact = result(hip("Right", 0.2), hip("Left", 0.7000), category=Category.OSTEOPOROSIS)
    close = result(hip("Right", 0.2004), hip("Left", 0.7001), category=Category.OSTEOPOROSIS)
    flipped = result(hip("Right", 0.2), hip("Left", 0.49), category=Category.NORMAL)

    difference, where, agree = result_difference(exact, close)
    assert difference == pytest.approx(4e-4) and where == "Right hip: probability" and agree
    assert not result_difference(exact, flipped)[2]


def test_verify_precision_records_the_agreement_in_the_card_and_auto_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "lumbar-ap-demo"
    shutil.copytree(MODELS / "lumbar-ap-demo", folder)
    weights = {path.name: file_sha256(path) for path in folder.glob("*.safetensors")}

    outcome = CliRunner().invoke(app, ["models", "verify-precision", str(folder), "--films", "2"])

    assert outcome.exit_code == 0, outcome.output
    assert "largest difference from float32" in outcome.output
    metrics = read_model_card(folder).metrics
    assert 0.0 <= metrics[BFLOAT16_METRIC] < 0.1
    assert metrics[DECISIONS_METRIC] in (0.0, 1.0) and metrics[FILMS_METRIC] == 2.0
    assert {path.name: file_sha256(path) for path in folder.glob("*.safetensors")} == weights
    monkeypatch.setattr("osteonode.inference.cpu_has_native_bfloat16", lambda: True)
    recorded = metrics[BFLOAT16_METRIC]
    model = load_model(folder, device="cpu")  # the checksums still match
    assert prepare_model(model, InferenceSettings(bfloat16_tolerance=recorded + 1e-6)).bfloat16
    if recorded > 0:
        assert not prepare_model(model, InferenceSettings(bfloat16_tolerance=recorded / 2)).bfloat16
