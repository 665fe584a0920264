"""What the viewer tests hold of each sample film."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import Result

#: The pipelines of the shipped demo models, one per part of the demo's sample set.
PARTS = ("lumbar", "chest", "hip")


@dataclass(frozen=True)
class Reported:
    """One sample film with the result, report and capture built from it in this process."""

    part: str
    film: Path
    radiograph: Radiograph
    result: Result
    report: Dataset
    capture: Dataset


@dataclass(frozen=True)
class Delivered:
    """One sample film as the PACS holds it after the node reported on it: the Structured Report
    and Secondary Capture that a running node sent back, read from Orthanc."""

    part: str
    film: Path
    report: Dataset
    capture: Dataset
