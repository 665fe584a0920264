"""What the viewer tests hold of each sample film."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import Result


@dataclass(frozen=True)
class Reported:
    """One sample film with the node's result, report and capture."""

    part: str
    film: Path
    radiograph: Radiograph
    result: Result
    report: Dataset
    capture: Dataset
