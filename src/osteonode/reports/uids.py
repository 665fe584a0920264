"""Deterministic UIDs for the objects the node produces.

Re-analysing an image with the same model must give the same Series and SOP Instance UIDs, so
that a PACS replaces the earlier results instead of storing a second copy; any change of source
image, model name, model version or object kind must give different UIDs. The UIDs are
name-based (version 5, SHA-1) UUIDs under the ``2.25`` root (PS3.5 B.2): the name is the
JSON list of the inputs, so no two different input lists share a name, and no organisation root
has to be registered. (``pydicom.uid.generate_uid`` hashes its entropy sources only under a
caller-supplied prefix, which would need such a root.)
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass

from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    SecondaryCaptureImageStorage,
)

from osteonode.pipelines.base import ModelIdentity

__all__ = [
    "OutputKind",
    "OutputUids",
    "device_uid",
    "output_uids",
    "tracking_uid",
]

#: Namespace of every name-based UUID the node derives; fixed forever, changing it renames
#: every object the node has ever sent.
_NAMESPACE = uuid.UUID("5b0f3f0e-7c1d-4b8e-9a52-6f2b8d1c4e37")


class OutputKind(enum.StrEnum):
    """The kinds of object the node writes; the value is the object's SOP Class UID.

    The two SR storage classes are different kinds: one SOP Instance UID must never name two
    objects of different SOP classes.
    """

    COMPREHENSIVE_3D_SR = Comprehensive3DSRStorage
    COMPREHENSIVE_SR = ComprehensiveSRStorage
    SECONDARY_CAPTURE = SecondaryCaptureImageStorage


@dataclass(frozen=True)
class OutputUids:
    """The Series Instance UID and SOP Instance UID of one produced object."""

    series_instance_uid: str
    sop_instance_uid: str


def _uid(*parts: str) -> str:
    name = json.dumps(["osteonode", *parts], ensure_ascii=True)
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def output_uids(source_sop_instance_uid: str, model: ModelIdentity, kind: OutputKind) -> OutputUids:
    """The UIDs of the object of `kind` made from one source image by one model.

    Parameters
    ----------
    source_sop_instance_uid : str
        SOP Instance UID of the analysed image.
    model : ModelIdentity
        The model whose result the object reports (name and version count).
    kind : OutputKind
        Which object.

    Returns
    -------
    OutputUids
        Series and instance UIDs, the same for the same inputs.

    Raises
    ------
    ValueError
        When the source UID is empty.
    TypeError
        When `model` is not a ModelIdentity.
    """
    _check_text("source_sop_instance_uid", source_sop_instance_uid)
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, not {type(model).__name__}")
    kind = OutputKind(kind)
    parts = (source_sop_instance_uid, model.name, model.version, kind.value)
    return OutputUids(
        series_instance_uid=_uid("series", *parts),
        sop_instance_uid=_uid("instance", *parts),
    )


def tracking_uid(source_sop_instance_uid: str, model: ModelIdentity, finding_name: str) -> str:
    """The Tracking Unique Identifier of one finding, the same in every object that reports it.

    Raises
    ------
    ValueError
        When the source UID or the finding name is empty.
    """
    _check_text("source_sop_instance_uid", source_sop_instance_uid)
    _check_text("finding_name", finding_name)
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, not {type(model).__name__}")
    return _uid("tracking", source_sop_instance_uid, model.name, model.version, finding_name)


def device_uid(node_name: str) -> str:
    """A stable Device Observer UID for a node that has no configured one.

    Raises
    ------
    ValueError
        When the name is empty.
    """
    _check_text("node_name", node_name)
    return _uid("device", node_name)
