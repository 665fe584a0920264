"""Plain-data results: what every pipeline returns and what the reports read.

A :class:`Result` is one analysed radiograph. It holds the film's answer (a :class:`Category` and,
where the method gives one, a T-score), one :class:`Finding` per measurement group of the Structured Report
(a vertebra, the L1-L4 summary, a chest stage, a hip side), the model that produced it, notes on
intended use, and the Grad-CAM heat-map at the source image's size. It carries no torch tensors
and no DICOM encoding, so reports, the database and ``osteonode analyze --json`` all read the same
thing.

Coordinates follow the DICOM SCOORD convention: ``(column, row)`` in source pixels, sub-pixel,
with (0, 0) the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from osteonode.bone import Category, Laterality
from osteonode.imaging.pixels import Radiograph

__all__ = [
    "Category",
    "Finding",
    "FindingSite",
    "Method",
    "Truth",
    "ModelIdentity",
    "OutsideIntendedUse",
    "Region",
    "RegionKind",
    "Result",
    "SourceImage",
]


class OutsideIntendedUse(Exception):
    """The film is outside the method's intended population and the site's policy is to skip it.

    Parameters
    ----------
    reason
        What puts the film outside (e.g. "patient aged 42; the method is for ages 50 and over"),
        recorded as the job's skip reason.
    """

    def __init__(self, reason: str) -> None:
        if not reason:
            raise ValueError("OutsideIntendedUse needs a reason")
        super().__init__(reason)
        self.reason = reason


def _check_category(owner: str, category: Category | None) -> None:
    if category is not None and not isinstance(category, Category):
        raise TypeError(
            f"{owner}.category must be a Category or None, got {category!r}"
        )


class Method(enum.StrEnum):
    """The pipeline implementations a model card can ask for (its ``pipeline`` key).

    A node pipeline (``[pipelines.<name>]``) runs whatever its model folder's card names, so the
    configured name is free and several pipelines can use one implementation.
    """

    LUMBAR = "lumbar"
    """Vertebra detection and BMD regression of a frontal lumbar film (T-score, WHO category)."""
    CHEST = "chest"
    """Two-stage ConvNeXt of a PA chest film."""
    HIP = "hip"
    """Femur localiser and VGG16 non-local classifier per hip."""
    CLASSIFIER = "classifier"
    """A card-driven classifier of the whole film: preprocessing, stages and cut-offs in the card."""


class RegionKind(enum.StrEnum):
    """Where a card-driven classifier looks on the film (the ``regions`` key of ``[classifier]``)."""

    WHOLE_FILM = "whole_film"
    """The whole film is one input (Park 2025's chest, Boonrod 2025's lumbar films)."""
    FEMUR_SIDES = "femur_sides"
    """A locator network finds the proximal femur on each side; each crop is one input (Jang 2021)."""

    @property
    def truth(self) -> Truth:
        """What a validation cohort must give to judge answers about these regions."""
        return Truth.PER_SIDE if self is RegionKind.FEMUR_SIDES else Truth.FILM


class Truth(enum.StrEnum):
    """What a method's answers are compared with when a site validates it on its own cohort."""

    FILM = "film"
    """One answer per film: the cohort's ``category`` or ``t_score``."""
    PER_SIDE = "per_side"
    """One answer per side (a hip): ``right_``/``left_`` ``category`` or ``t_score``."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The cohort columns of which at least one gives this truth."""
        prefixes = ("",) if self is Truth.FILM else ("right_", "left_")
        return tuple(f"{prefix}{name}" for prefix in prefixes for name in ("category", "t_score"))


class FindingSite(enum.StrEnum):
    """Where a finding is: a single lumbar vertebra, the L1-L4 summary, the chest, a hip."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    LUMBAR_SPINE = "lumbar_spine"
    CHEST = "chest"
    HIP = "hip"


def _check_probability(name: str, value: float | None) -> None:
    if value is not None and not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _check_finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


@dataclass(frozen=True)
class ModelIdentity:
    """The model behind a result, as the SR's algorithm identification (TID 4019) names it.

    Parameters
    ----------
    name, version
        Model name and version from its model card.
    architecture
        Network description, e.g. ``"convnext_small"``.
    synthetic
        Trained on synthetic phantoms (the shipped demo weights).
    diagnostic_use
        The model card allows diagnostic use; False puts "not for diagnostic use" on every output.
    parameters
        Algorithm parameters recorded with the result (calibration, thresholds), as text.
    """

    name: str
    version: str
    architecture: str
    synthetic: bool
    diagnostic_use: bool
    parameters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for attribute in ("name", "version", "architecture"):
            if not getattr(self, attribute):
                raise ValueError(f"ModelIdentity.{attribute} must not be empty")
        if self.synthetic and self.diagnostic_use:
            raise ValueError("a model trained on synthetic phantoms cannot allow diagnostic use")

    @property
    def disclaimer(self) -> str | None:
        """The line every output made with this model must carry, or None."""
        if self.synthetic:
            return "Synthetic demonstration model - not for diagnostic use"
        if not self.diagnostic_use:
            return "Research model - not for diagnostic use"
        return None


@dataclass(frozen=True)
class Region:
    """An outline on the source image: a closed polygon or an open polyline.

    Parameters
    ----------
    points
        ``(column, row)`` pairs in source pixels; a closed polygon does not repeat its first point.
    closed
        Polygon (True) or polyline (False).
    """

    points: tuple[tuple[float, float], ...]
    closed: bool = True

    def __post_init__(self) -> None:
        needed = 3 if self.closed else 2
        if len(self.points) < needed:
            raise ValueError(f"a {'polygon' if self.closed else 'polyline'} needs >= {needed} points")
        for point in self.points:
            if len(point) != 2 or not all(math.isfinite(v) for v in point):
                raise ValueError(f"region points must be finite (column, row) pairs, got {point}")

    @classmethod
    def box(cls, column0: float, row0: float, column1: float, row1: float) -> Region:
        """The closed rectangle with corners ``(column0, row0)`` and ``(column1, row1)``."""
        if column1 <= column0 or row1 <= row0:
            raise ValueError("a box needs column1 > column0 and row1 > row0")
        return cls(((column0, row0), (column1, row0), (column1, row1), (column0, row1)))


@dataclass(frozen=True)
class SourceImage:
    """The analysed image, as the reports reference it."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    rows: int
    columns: int

    @classmethod
    def from_radiograph(cls, radiograph: Radiograph) -> SourceImage:
        """The identity and size of a decoded film (an empty string for a UID its header lacks)."""
        uids = radiograph.uids
        rows, columns = radiograph.shape
        return cls(
            sop_class_uid=uids.sop_class_uid or "",
            sop_instance_uid=uids.sop_instance_uid or "",
            study_instance_uid=uids.study_instance_uid or "",
            series_instance_uid=uids.series_instance_uid or "",
            rows=rows,
            columns=columns,
        )

    def __post_init__(self) -> None:
        for attribute in ("sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid"):
            if not getattr(self, attribute):
                raise ValueError(f"SourceImage.{attribute} must not be empty")
        if self.rows < 1 or self.columns < 1:
            raise ValueError("SourceImage rows and columns must be positive")


@dataclass(frozen=True)
class Finding:
    """One measurement group: what the method measured or decided at one site.

    Parameters
    ----------
    name
        Tracking identifier shown to the reader, e.g. ``"L2"``, ``"L1-L4"``,
        ``"Stage 1: osteoporosis"``, ``"Right hip"``; unique within a result.
    site
        Anatomical site.
    laterality
        Side, for a hip.
    evaluable
        False when this site could not be measured; ``reason`` says why.
    reason
        Why the site is not evaluable or not included.
    included
        Whether the site counts towards the film's answer (ISCD exclusions make it False).
    bmd_g_cm2, t_score
        Estimated areal BMD (site DXA calibration) and its T-score.
    probability, threshold
        A classifier's probability of the finding, and the threshold it was compared with.
    category
        The answer at this site (a WHO category, or "not osteoporosis" from a two-class
        method), when the method gives one.
    osteoporosis_present
        The classifier's decision, when the method gives one; it must agree with a category of
        osteoporosis or not osteoporosis.
    region
        Outline of the site on the source image.
    """

    name: str
    site: FindingSite
    laterality: Laterality | None = None
    evaluable: bool = True
    reason: str | None = None
    included: bool = True
    bmd_g_cm2: float | None = None
    t_score: float | None = None
    probability: float | None = None
    threshold: float | None = None
    category: Category | None = None
    osteoporosis_present: bool | None = None
    region: Region | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Finding.name must not be empty")
        if not self.evaluable and not self.reason:
            raise ValueError(f"finding {self.name!r} is not evaluable and needs a reason")
        if not self.evaluable and self.included:
            raise ValueError(f"finding {self.name!r} is not evaluable, so it cannot be included")
        for name in ("bmd_g_cm2", "t_score"):
            _check_finite(name, getattr(self, name))
        if self.bmd_g_cm2 is not None and self.bmd_g_cm2 <= 0:
            raise ValueError(f"bmd_g_cm2 must be positive, got {self.bmd_g_cm2}")
        _check_probability("probability", self.probability)
        _check_probability("threshold", self.threshold)
        _check_category("Finding", self.category)
        if (
            self.osteoporosis_present is not None
            and self.category in (Category.OSTEOPOROSIS, Category.NOT_OSTEOPOROSIS)
            and self.osteoporosis_present != self.category.osteoporosis
        ):
            raise ValueError(
                f"finding {self.name!r}: osteoporosis_present={self.osteoporosis_present}"
                f" contradicts the category {self.category.value!r}"
            )


@dataclass(frozen=True, eq=False)
class Result:
    """One analysed radiograph.

    Parameters
    ----------
    pipeline
        The name of the configured pipeline that produced it (``[pipelines.<name>]``).
    source
        The analysed image.
    model
        The model behind it.
    site
        Where the film's answer is: the lumbar spine, the chest, the hips (keyword only).
    evaluable
        False when the film as a whole could not be assessed; ``reason`` says why.
    reason
        Why the film is not evaluable.
    category
        The film's answer (a WHO category, or "not osteoporosis" from a two-class method), None
        when not evaluable.
    t_score
        The film's T-score where the method estimates one.
    findings
        The measurement groups, in report order.
    notes
        Intended-use and assumption notes for the reader (age, view, assumed reference, ...).
    heatmap
        Grad-CAM map, float32 in [0, 1], shaped like the source image; None when not computed.
    heatmap_meaning
        What the heat-map's colours show, in the reader's words (the Secondary Capture's
        legend), e.g. "evidence of osteoporosis (Grad-CAM of stage 1)"; only with a heat-map.
    """

    pipeline: str
    source: SourceImage
    model: ModelIdentity
    evaluable: bool
    site: FindingSite = field(kw_only=True)
    reason: str | None = None
    category: Category | None = None
    t_score: float | None = None
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    heatmap: np.ndarray | None = field(default=None, repr=False)
    heatmap_meaning: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pipeline, str) or not self.pipeline:
            raise TypeError("Result.pipeline must be the configured pipeline's name")
        if not isinstance(self.site, FindingSite):
            raise TypeError(f"Result.site must be a FindingSite, got {self.site!r}")
        _check_category("Result", self.category)
        if self.evaluable and self.category is None:
            raise ValueError("an evaluable result needs a category")
        if not self.evaluable and (not self.reason or self.category is not None):
            raise ValueError("a result that is not evaluable needs a reason and no category")
        _check_finite("t_score", self.t_score)
        names = [finding.name for finding in self.findings]
        if len(set(names)) != len(names):
            raise ValueError(f"finding names must be unique, got {names}")
        if self.heatmap is not None:
            heatmap = np.asarray(self.heatmap)
            if heatmap.shape != (self.source.rows, self.source.columns):
                raise ValueError(
                    f"heatmap shape {heatmap.shape} differs from the source image"
                    f" ({self.source.rows}, {self.source.columns})"
                )
            if heatmap.size and (float(heatmap.min()) < 0.0 or float(heatmap.max()) > 1.0):
                raise ValueError("heatmap values must lie in [0, 1]")
        if self.heatmap_meaning is not None and (
            not isinstance(self.heatmap_meaning, str) or not self.heatmap_meaning.strip()
        ):
            raise ValueError("Result.heatmap_meaning must be a non-empty string or None")

    @property
    def disclaimer(self) -> str | None:
        """The model's "not for diagnostic use" line, when it has one."""
        return self.model.disclaimer

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of everything but the heat-map (stored with the reports)."""
        return _plain({f.name: getattr(self, f.name) for f in fields(self) if f.name != "heatmap"})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], heatmap: np.ndarray | None = None) -> Result:
        """Rebuild a result written by :meth:`to_dict`."""
        model = dict(data["model"])
        model["parameters"] = tuple(tuple(pair) for pair in model.get("parameters", ()))
        return cls(
            pipeline=str(data["pipeline"]),
            # Results stored by osteonode 0.1 name no site; their pipelines were named after it.
            site=FindingSite(data.get("site") or _SITES_OF_0_1[data["pipeline"]]),
            source=SourceImage(**data["source"]),
            model=ModelIdentity(**model),
            evaluable=data["evaluable"],
            reason=data.get("reason"),
            category=_optional(Category, data.get("category")),
            t_score=data.get("t_score"),
            findings=tuple(_finding_from_dict(item) for item in data.get("findings", ())),
            notes=tuple(data.get("notes", ())),
            heatmap=heatmap,
            heatmap_meaning=data.get("heatmap_meaning"),
        )


_SITES_OF_0_1 = {"lumbar": FindingSite.LUMBAR_SPINE, "chest": FindingSite.CHEST, "hip": FindingSite.HIP}


def _optional(kind: type[enum.Enum], value: Any) -> Any:
    return None if value is None else kind(value)


def _finding_from_dict(data: Mapping[str, Any]) -> Finding:
    values = dict(data)
    values["site"] = FindingSite(values["site"])
    values["laterality"] = _optional(Laterality, values.get("laterality"))
    values["category"] = _optional(Category, values.get("category"))
    region = values.get("region")
    if region is not None:
        values["region"] = Region(tuple(tuple(p) for p in region["points"]), region["closed"])
    return Finding(**values)


def _plain(value: Any) -> Any:
    """Dataclasses, enums and tuples as JSON types."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
