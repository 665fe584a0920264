"""The paper's network: ConvNeXt-S with a two-class head at 512 x 512 runs through the pipeline."""

from __future__ import annotations

import pytest
import torch
from pydicom.dataset import Dataset

from osteonode.config import PipelineSettings
from osteonode.imaging.pixels import load_radiograph
from osteonode.nets import build_network
from osteonode.pipelines.base import ModelIdentity
from osteonode.pipelines.chest import ChestPipeline, Stage
from osteonode.train.chest import PAPER_CONFIGURATION


@pytest.fixture(scope="module")
def convnext_small() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(
        PAPER_CONFIGURATION.architecture,
        num_classes=2,
        in_chans=PAPER_CONFIGURATION.preprocessing.channels,
    ).eval()


def test_convnext_small_with_two_classes_has_the_published_size(convnext_small) -> None:
    parameters = sum(p.numel() for p in convnext_small.parameters())
    assert 49.4e6 <= parameters <= 49.5e6


def test_both_stages_of_convnext_small_at_512_give_probabilities_and_heat_maps(
    convnext_small, chest_dataset: Dataset
) -> None:
    # Stage 1 answers "not osteoporosis" on every film, so stage 2 runs as well.
    stage1 = build_network(PAPER_CONFIGURATION.architecture, num_classes=2, in_chans=3).eval()
    stage1.load_state_dict(convnext_small.state_dict())
    with torch.no_grad():
        stage1.head.bias.copy_(torch.tensor([5.0, -5.0]))
    pipeline = ChestPipeline(
        networks={Stage.OSTEOPOROSIS: stage1, Stage.LOW_BONE_MASS: convnext_small},
        preprocessing=PAPER_CONFIGURATION.preprocessing,
        settings=PipelineSettings(),
        identity=ModelIdentity(
            "chest-full", "0", "convnext_small", synthetic=True, diagnostic_use=False
        ),
        device=torch.device("cpu"),
    )
    radiograph = load_radiograph(chest_dataset)
    inputs = pipeline.locate(radiograph).inputs
    assert tuple(inputs.shape) == (1, 3, 512, 512)
    with torch.no_grad():
        assert tuple(convnext_small.forward_features(inputs).shape) == (1, 768, 16, 16)
    analysis = pipeline.analyse(radiograph)
    assert set(analysis.heatmaps) == {Stage.OSTEOPOROSIS, Stage.LOW_BONE_MASS}
    for heatmap in analysis.heatmaps.values():
        assert heatmap.shape == radiograph.shape
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert analysis.heatmaps[Stage.LOW_BONE_MASS].max() > 0.9
    assert all(
        0.0 <= f.probability <= 1.0 for f in analysis.result.findings if f.probability is not None
    )
