"""Decoding, preprocessing and display of radiographs."""

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
from osteonode.imaging.overlay import blend_heatmap, compose_capture, heat_colours
from osteonode.imaging.transforms import (
    ScaleMap,
    grayscale_truncation,
    resize_with_scale,
    ztransform_2sigma,
)

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
    "blend_heatmap",
    "compose_capture",
    "heat_colours",
    "load_radiograph",
    "resize_with_scale",
    "ztransform_2sigma",
]
