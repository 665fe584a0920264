"""Helpers of the hip tests: a small random model folder and fixed femur regions."""

from __future__ import annotations

from pathlib import Path

from fixtures.classifier_models import (
    HIP_CROP_SIZE,
    HIP_LOCATOR_SIZE,
    HIP_NETWORKS,
    save_random_networks,
)

from osteonode.bone import Laterality
from osteonode.pipelines.hip import HipGeometry
from osteonode.pipelines.regions import FilmRegion


def write_random_model(directory: Path) -> Path:
    """A hip model folder with small randomly initialised networks (valid card, fast to run)."""
    geometry = HipGeometry(locator_shape=HIP_LOCATOR_SIZE, crop_size=HIP_CROP_SIZE)
    card = {
        "name": "hip-test",
        "version": "0.0.1",
        "pipeline": "hip",
        "intended_use": "tests",
        "training_data": "none (random weights)",
        "synthetic": True,
        "input_size": (geometry.crop_size, geometry.crop_size),
        "normalisation": "two-sigma z-transform",
        "parameters": geometry.as_parameters(),
    }
    return save_random_networks(directory, card, HIP_NETWORKS)


def side(
    laterality: Laterality,
    box: tuple[float, float, float, float],
    reason: str | None = None,
) -> FilmRegion:
    """A femur region as the standard AP display puts it (patient's right on the image left)."""
    return FilmRegion(
        name=f"{laterality.name.capitalize()} hip",
        box=box,
        laterality=laterality,
        mirrored=laterality is Laterality.LEFT,
        confidence=0.9,
        reason=reason,
    )
