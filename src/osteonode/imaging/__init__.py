"""Decoding and display of radiographs (the papers' preprocessing, which needs torch, is in
:mod:`~osteonode.imaging.transforms`)."""

from osteonode.imaging.pixels import (
    HeaderFacts,
    ImageError,
    ImageErrorReason,
    PhotometricInterpretation,
    Radiograph,
    SourceUids,
    SpacingSource,
    display_window,
    load_radiograph,
)
from osteonode.imaging.overlay import blend_heatmap, compose_capture, heat_colours

__all__ = [
    "HeaderFacts",
    "ImageError",
    "ImageErrorReason",
    "PhotometricInterpretation",
    "Radiograph",
    "SourceUids",
    "SpacingSource",
    "display_window",
    "blend_heatmap",
    "compose_capture",
    "heat_colours",
    "load_radiograph",
]
