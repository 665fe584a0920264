"""Decoding, preprocessing and display of radiographs.

The names are imported on first use, so that importing :mod:`osteonode.imaging.pixels` (as the
decoder child process of :mod:`osteonode.imaging.isolation` does) does not import torch through
:mod:`osteonode.imaging.transforms`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from osteonode.imaging.overlay import heat_colours, heatmap_overlay
    from osteonode.imaging.pixels import (
        HeaderFacts,
        ImageError,
        ImageErrorReason,
        PatientSex,
        PhotometricInterpretation,
        Radiograph,
        SourceUids,
        SpacingSource,
        display_window,
        load_radiograph,
    )
    from osteonode.imaging.transforms import (
        ScaleMap,
        grayscale_truncation,
        resize_with_scale,
        ztransform_2sigma,
    )

#: The module that defines each name this package exports.
_HOMES = {
    "HeaderFacts": "pixels",
    "ImageError": "pixels",
    "ImageErrorReason": "pixels",
    "PatientSex": "pixels",
    "PhotometricInterpretation": "pixels",
    "Radiograph": "pixels",
    "SourceUids": "pixels",
    "SpacingSource": "pixels",
    "display_window": "pixels",
    "load_radiograph": "pixels",
    "heat_colours": "overlay",
    "heatmap_overlay": "overlay",
    "ScaleMap": "transforms",
    "grayscale_truncation": "transforms",
    "resize_with_scale": "transforms",
    "ztransform_2sigma": "transforms",
}

__all__ = [
    "HeaderFacts",
    "ImageError",
    "ImageErrorReason",
    "PatientSex",
    "PhotometricInterpretation",
    "Radiograph",
    "ScaleMap",
    "SourceUids",
    "SpacingSource",
    "display_window",
    "grayscale_truncation",
    "heat_colours",
    "heatmap_overlay",
    "load_radiograph",
    "resize_with_scale",
    "ztransform_2sigma",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
