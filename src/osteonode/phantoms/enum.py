"""Coded values of the phantom generator: body parts, hard cases, DICOM variants.

Patient sex and bone categories are the node's own (:class:`osteonode.bone.Sex`,
:class:`osteonode.bone.Category`): phantoms speak the vocabulary of the results they are checked against.
"""

from __future__ import annotations

from enum import Enum


class Part(str, Enum):
    """Body part a phantom shows; equals the name of the pipeline meant to analyse it."""

    LUMBAR = "lumbar"
    CHEST = "chest"
    HIP = "hip"


class HardCase(str, Enum):
    """Kinds of deliberately difficult phantoms; any but ``NONE`` is not evaluable."""

    NONE = "none"
    IMPLANT = "implant"
    SCOLIOSIS = "scoliosis"
    CROPPED = "cropped"


class Modality(str, Enum):
    """The two projection radiography objects the generator writes."""

    CR = "CR"
    DX = "DX"


class VoiKind(str, Enum):
    """How the display transform is carried in the file."""

    WINDOW = "window"
    LUT = "lut"
    NONE = "none"


class SpacingKind(str, Enum):
    """Which spacing attributes describe the pixel size."""

    PIXEL = "pixel"
    IMAGER = "imager"
    BOTH = "both"
