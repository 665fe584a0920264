"""Helpers of the hip tests: a small random model folder and a pipeline with fixed localiser output."""

from __future__ import annotations

from pathlib import Path

import torch

from osteonode.bone import Laterality
from osteonode.imaging import Radiograph
from osteonode.nets import build_network
from osteonode.nets.femur_locator import IMAGE_SIDES, SideState
from osteonode.pipelines.hip import (
    CLASSIFIER_ROLE,
    LOCATOR_ROLE,
    HipGeometry,
    HipPipeline,
    SideLocation,
)
from osteonode.zoo import ModelCard, NetworkEntry, save_model


def write_random_model(directory: Path) -> Path:
    """A hip model folder with small randomly initialised networks (valid card, fast to run)."""
    torch.manual_seed(0)
    geometry = HipGeometry(locator_shape=(64, 96), crop_size=32)
    options = {
        LOCATOR_ROLE: ("femur_locator", {"widths": [4, 4, 8, 8, 8], "head_width": 8}),
        CLASSIFIER_ROLE: ("vgg16_nonlocal_demo", {"in_chans": 1}),
    }
    card = ModelCard(
        name="hip-test",
        version="0.0.1",
        pipeline="hip",
        intended_use="tests",
        training_data="none (random weights)",
        synthetic=True,
        input_size=(geometry.crop_size, geometry.crop_size),
        normalisation="two-sigma z-transform",
        parameters=geometry.as_parameters(),
        networks=[
            NetworkEntry(role=role, architecture=name, options=opts, weights=f"{role}.safetensors")
            for role, (name, opts) in options.items()
        ],
    )
    networks = {role: build_network(name, **opts) for role, (name, opts) in options.items()}
    save_model(directory, card, networks)
    return directory


class FixedLocations(HipPipeline):
    """The pipeline with its localiser's answer fixed, to reach every decision path."""

    locations: tuple[SideLocation, ...] = ()

    def locate(self, radiograph: Radiograph) -> tuple[tuple[SideLocation, ...], str | None]:
        """The fixed locations, no orientation note."""
        return self.locations, None


def side(
    laterality: Laterality,
    box: tuple[float, float, float, float],
    state: SideState = SideState.EVALUABLE,
    reason: str | None = None,
) -> SideLocation:
    """A side location as the standard AP display puts it (patient's right on the image left)."""
    image_side = IMAGE_SIDES[0] if laterality is Laterality.RIGHT else IMAGE_SIDES[1]
    return SideLocation(image_side, laterality, box, state, 0.9, reason)
