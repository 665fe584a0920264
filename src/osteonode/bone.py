"""Clinical arithmetic of bone densitometry: T-scores, calibration, WHO categories, ISCD rules.

Everything here is a pure function of its arguments or a small frozen value, so that each result can
be checked by hand. The numbers come from METHODS.md section 1 (calibration of the lumbar estimator)
and section 4 (clinical rules); the reference values themselves are site configuration, loaded by
:mod:`osteonode.reference`.

Conventions
-----------
- BMD is areal bone mineral density in g/cm2; standardised BMD (sBMD) is in mg/cm2.
- A T-score is kept unrounded in calculations and reported to one decimal
  (:func:`reported_t_score`); the WHO category is always taken from the reported value, so the
  number a reader sees and the category printed beside it never disagree.
"""

from __future__ import annotations

import enum
import math
import numbers
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

__all__ = [
    "DISCORDANCE_LIMIT",
    "MIN_LUMBAR_VERTEBRAE",
    "NORMAL_T_SCORE",
    "OSTEOPOROSIS_T_SCORE",
    "WHO_CATEGORIES",
    "WHO_MIN_AGE_YEARS",
    "Category",
    "DxaManufacturer",
    "ExclusionKind",
    "HipDecision",
    "HipSideMeasure",
    "Laterality",
    "LinearCalibration",
    "LumbarSummary",
    "MeasurementSite",
    "Sex",
    "Vertebra",
    "VertebraExclusion",
    "VertebraMeasure",
    "YoungAdultReference",
    "combine_lumbar",
    "lowest_hip",
    "reported_t_score",
    "standardized_bmd",
    "standardized_bmd_calibration",
    "t_score",
    "who_applicability",
    "who_category",
]

#: Lowest T-score that is still normal (WHO).
NORMAL_T_SCORE = -1.0
#: Highest T-score that is osteoporosis (WHO).
OSTEOPOROSIS_T_SCORE = -2.5
#: ISCD: a vertebra may be excluded when its T-score differs by more than this from its neighbours.
DISCORDANCE_LIMIT = 1.0
#: ISCD: a lumbar result needs at least two vertebrae, never one.
MIN_LUMBAR_VERTEBRAE = 2
#: WHO categories apply to postmenopausal women and to men from this age.
WHO_MIN_AGE_YEARS = 50.0

#: Two distances closer than this are a tie (guards against float noise in the outlier choice).
_TIE_TOLERANCE = 1e-9


class Category(enum.StrEnum):
    """The answer about a patient's bone: a WHO category, or a two-class method's "no".

    The three WHO categories (:data:`WHO_CATEGORIES`) come from a T-score or a three-class method;
    a two-class method (osteoporosis or not) cannot tell normal from low bone mass, and its negative
    answer is :attr:`NOT_OSTEOPOROSIS`, which is none of the three. One vocabulary for results,
    reports, phantoms and validation.
    """

    NORMAL = "normal"
    LOW_BONE_MASS = "low_bone_mass"
    """Osteopenia: -2.5 < T < -1.0."""
    OSTEOPOROSIS = "osteoporosis"
    NOT_OSTEOPOROSIS = "not_osteoporosis"
    """A two-class method's negative answer: normal or low bone mass, not told apart."""

    @property
    def osteoporosis(self) -> bool:
        """Whether the answer is osteoporosis."""
        return self is Category.OSTEOPOROSIS

    @property
    def is_who(self) -> bool:
        """Whether the answer is one of the three WHO categories."""
        return self is not Category.NOT_OSTEOPOROSIS


#: The WHO categories of a T-score, from the best bone to the worst.
WHO_CATEGORIES: tuple[Category, ...] = (Category.NORMAL, Category.LOW_BONE_MASS, Category.OSTEOPOROSIS)


class DxaManufacturer(enum.StrEnum):
    """DXA scanner families whose BMD scales differ and need cross-calibration.

    Norland is left out: no cross-calibration equation for it is in METHODS.md.
    """

    GE_LUNAR = "ge_lunar"
    HOLOGIC = "hologic"


class MeasurementSite(enum.StrEnum):
    """Skeletal sites that have a young-adult reference."""

    LUMBAR_L1_L4 = "lumbar_l1_l4"
    FEMORAL_NECK = "femoral_neck"
    TOTAL_HIP = "total_hip"


class Sex(enum.StrEnum):
    """Patient sex with the values of DICOM Patient's Sex (0010,0040), plus ``unknown``."""

    FEMALE = "F"
    MALE = "M"
    OTHER = "O"
    UNKNOWN = "unknown"

    @classmethod
    def from_dicom(cls, value: str | None) -> Sex:
        """Read Patient's Sex; an empty, missing or non-standard value is ``UNKNOWN``.

        Parameters
        ----------
        value
            The attribute value as found in the header (may be ``None``).

        Returns
        -------
        Sex
        """
        text = (value or "").strip().upper()
        return {"F": cls.FEMALE, "M": cls.MALE, "O": cls.OTHER}.get(text, cls.UNKNOWN)


class Vertebra(enum.StrEnum):
    """The lumbar vertebrae of the ISCD L1-L4 region, in cranio-caudal order."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"


class Laterality(enum.StrEnum):
    """Side of the body, with the values of DICOM (Image) Laterality."""

    RIGHT = "R"
    LEFT = "L"


class ExclusionKind(enum.StrEnum):
    """Why a vertebra did not count towards the L1-L4 result."""

    FLAGGED = "flagged"
    """The pipeline marked it not evaluable (structural change, artefact, not detected)."""
    NOT_MEASURED = "not_measured"
    """No measurement was given for it."""
    DISCORDANT = "discordant"
    """Its T-score differs by more than 1.0 from its neighbours (ISCD)."""


def _require_finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _require_positive(name: str, value: float) -> float:
    value = _require_finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


# --- T-scores and WHO categories -------------------------------------------------------------


@dataclass(frozen=True)
class YoungAdultReference:
    """Young-adult mean and SD of areal BMD for one manufacturer, site and sex.

    Parameters
    ----------
    mean
        Young-adult mean BMD (g/cm2), > 0.
    sd
        Young-adult standard deviation (g/cm2), > 0.
    site
        Skeletal site the values describe.
    sex
        Sex of the reference population: ``F`` or ``M``.
    manufacturer
        DXA manufacturer whose BMD scale the values are on.
    source
        Where the values come from and how sure that is; recorded with every result.

    Raises
    ------
    TypeError, ValueError
        When a value is of the wrong type or out of range.
    """

    mean: float
    sd: float
    site: MeasurementSite
    sex: Sex
    manufacturer: DxaManufacturer
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _require_positive("mean", self.mean))
        object.__setattr__(self, "sd", _require_positive("sd", self.sd))
        object.__setattr__(self, "site", MeasurementSite(self.site))
        object.__setattr__(self, "manufacturer", DxaManufacturer(self.manufacturer))
        if Sex(self.sex) not in (Sex.FEMALE, Sex.MALE):
            raise ValueError(f"a reference population is F or M, got {self.sex!r}")
        object.__setattr__(self, "sex", Sex(self.sex))
        if not self.source.strip():
            raise ValueError("source must say where the reference values come from")


def t_score(bmd: float, reference: YoungAdultReference) -> float:
    """T-score of a BMD: ``(bmd - young-adult mean) / young-adult SD``, unrounded.

    Parameters
    ----------
    bmd
        Areal BMD (g/cm2) on the reference's manufacturer scale, > 0.
    reference
        The young-adult reference for the site, sex and manufacturer.

    Returns
    -------
    float
        The T-score; round it for display with :func:`reported_t_score`.

    Raises
    ------
    TypeError, ValueError
        When ``bmd`` is not a positive finite number.
    """
    bmd = _require_positive("bmd", bmd)
    return (bmd - reference.mean) / reference.sd


def reported_t_score(score: float) -> float:
    """A T-score as reported: one decimal, halves rounded away from zero.

    The value is rounded as it is written (its shortest decimal form), so ``-2.45`` becomes ``-2.5``
    although the binary float nearest to -2.45 lies a hair above it. A score that rounds to zero is
    reported as ``0.0``, not ``-0.0``.

    Parameters
    ----------
    score
        An unrounded T-score.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        When ``score`` is not a finite number.
    """
    score = _require_finite("score", score)
    # ROUND_HALF_UP in decimal rounds halves away from zero, the usual reporting convention.
    rounded = float(Decimal(repr(score)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
    return rounded + 0.0  # -0.04 is reported as 0.0, never as -0.0


def who_category(score: float) -> Category:
    """WHO category of a T-score, decided on the reported (one-decimal) value.

    Normal: T >= -1.0; low bone mass (osteopenia): -2.5 < T < -1.0; osteoporosis: T <= -2.5. The
    score is first rounded as :func:`reported_t_score` rounds it, so the category always matches the
    printed number: -2.46 and -2.45 are reported as -2.5 (osteoporosis), -1.04 and -0.95 as -1.0
    (normal).

    Parameters
    ----------
    score
        A T-score, rounded or not.

    Returns
    -------
    Category

    Raises
    ------
    TypeError, ValueError
        When ``score`` is not a finite number.
    """
    reported = reported_t_score(score)
    if reported >= NORMAL_T_SCORE:
        return Category.NORMAL
    if reported <= OSTEOPOROSIS_T_SCORE:
        return Category.OSTEOPOROSIS
    return Category.LOW_BONE_MASS


def who_applicability(age_years: float | None, sex: Sex | None) -> list[str]:
    """Notes on whether the WHO categories apply to this patient; empty when they plainly do.

    The WHO T-score categories apply to postmenopausal women and to men aged 50 or over; below 50,
    Z-scores are the convention (for women, unless postmenopausal). Menopausal status is not in a
    radiograph's header, so a woman of 50 or over is taken to be postmenopausal.

    Parameters
    ----------
    age_years
        Age at the time of the image, ``None`` when unknown.
    sex
        Patient sex, ``None`` when unknown.

    Returns
    -------
    list of str
        Human-readable notes to carry with the result.

    Raises
    ------
    TypeError, ValueError
        When the age is not a finite, non-negative number.
    """
    notes = []
    if age_years is not None:
        age_years = _require_finite("age_years", age_years)
        if age_years < 0:
            raise ValueError(f"age_years must be >= 0, got {age_years!r}")
    sex = Sex.UNKNOWN if sex is None else Sex(sex)
    if age_years is None:
        notes.append(
            "age unknown: WHO categories apply only to postmenopausal women and men aged 50 or over"
        )
    elif age_years < WHO_MIN_AGE_YEARS:
        if sex is Sex.FEMALE:
            notes.append(
                f"age {age_years:g} is under 50: WHO categories apply only if postmenopausal;"
                " otherwise Z-scores are the convention"
            )
        else:
            notes.append(
                f"age {age_years:g} is under 50: Z-scores, not WHO T-score categories, are the"
                " convention"
            )
    if sex is Sex.UNKNOWN:
        notes.append("sex unknown: the reference population and WHO applicability are unconfirmed")
    elif sex is Sex.OTHER:
        notes.append("sex recorded as other: the reference population was chosen by site policy")
    return notes


# --- Cross-calibration -----------------------------------------------------------------------


@dataclass(frozen=True)
class LinearCalibration:
    """Convert BMD from one manufacturer's scale to another's: ``to = slope x from + intercept``.

    Parameters
    ----------
    slope
        Multiplier, > 0.
    intercept
        Offset (g/cm2).
    from_manufacturer, to_manufacturer
        The scales converted from and to.
    site
        Skeletal site the equation was derived for.
    source
        Where the equation comes from; recorded with every converted result.

    Raises
    ------
    TypeError, ValueError
        When a value is of the wrong type or out of range.
    """

    slope: float
    intercept: float
    from_manufacturer: DxaManufacturer
    to_manufacturer: DxaManufacturer
    site: MeasurementSite
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "slope", _require_positive("slope", self.slope))
        object.__setattr__(self, "intercept", _require_finite("intercept", self.intercept))
        object.__setattr__(self, "from_manufacturer", DxaManufacturer(self.from_manufacturer))
        object.__setattr__(self, "to_manufacturer", DxaManufacturer(self.to_manufacturer))
        object.__setattr__(self, "site", MeasurementSite(self.site))
        if not self.source.strip():
            raise ValueError("source must say where the equation comes from")

    @classmethod
    def identity(cls, manufacturer: DxaManufacturer, site: MeasurementSite) -> LinearCalibration:
        """The no-op conversion used when the model's and the site's manufacturer are the same.

        Parameters
        ----------
        manufacturer
            Both the source and the target scale.
        site
            Skeletal site.

        Returns
        -------
        LinearCalibration
        """
        return cls(1.0, 0.0, manufacturer, manufacturer, site, "identity (same manufacturer)")

    @property
    def is_identity(self) -> bool:
        """True when the conversion leaves every BMD unchanged."""
        return self.slope == 1.0 and self.intercept == 0.0

    def apply(self, bmd: float) -> float:
        """Convert one BMD (g/cm2).

        Parameters
        ----------
        bmd
            BMD on the ``from_manufacturer`` scale.

        Returns
        -------
        float
            BMD on the ``to_manufacturer`` scale.

        Raises
        ------
        TypeError, ValueError
            When ``bmd`` is not a finite number.
        """
        return self.slope * _require_finite("bmd", bmd) + self.intercept

    def inverse(self) -> LinearCalibration:
        """The algebraic inverse: ``from = (to - intercept) / slope``.

        A regression of A on B is not the inverse of the regression of B on A (Genant 1994 publishes
        ``Lunar = 1.074 x Hologic + 0.054``, while inverting ``Hologic = 0.906 x Lunar - 0.025``
        gives slope 1.104); where a published reverse equation exists, configure it instead.

        Returns
        -------
        LinearCalibration
        """
        return LinearCalibration(
            slope=1.0 / self.slope,
            intercept=-self.intercept / self.slope,
            from_manufacturer=self.to_manufacturer,
            to_manufacturer=self.from_manufacturer,
            site=self.site,
            source=f"algebraic inverse of: {self.source}",
        )


#: Hip standardised BMD coefficients (b, a) per site and manufacturer: sBMD = 1000 x (a + b x BMD)
#: in mg/cm2 (METHODS.md section 4).
_SBMD_COEFFICIENTS: dict[tuple[MeasurementSite, DxaManufacturer], tuple[float, float]] = {
    (MeasurementSite.TOTAL_HIP, DxaManufacturer.HOLOGIC): (1.008, 0.006),
    (MeasurementSite.TOTAL_HIP, DxaManufacturer.GE_LUNAR): (0.979, -0.031),
    (MeasurementSite.FEMORAL_NECK, DxaManufacturer.HOLOGIC): (1.087, 0.019),
    (MeasurementSite.FEMORAL_NECK, DxaManufacturer.GE_LUNAR): (0.939, -0.023),
}
_SBMD_SOURCE = "hip standardised BMD equations (METHODS.md section 4)"


def _sbmd_coefficients(site: MeasurementSite, manufacturer: DxaManufacturer) -> tuple[float, float]:
    key = (MeasurementSite(site), DxaManufacturer(manufacturer))
    if key not in _SBMD_COEFFICIENTS:
        raise ValueError(f"no standardised BMD equation for {key[0]} (hip sites only)")
    return _SBMD_COEFFICIENTS[key]


def standardized_bmd(bmd: float, site: MeasurementSite, manufacturer: DxaManufacturer) -> float:
    """Hip standardised BMD: ``sBMD = 1000 x (a + b x BMD)`` in mg/cm2.

    Parameters
    ----------
    bmd
        Areal BMD (g/cm2) as the manufacturer's scanner reports it, > 0.
    site
        ``femoral_neck`` or ``total_hip``.
    manufacturer
        The scanner's manufacturer.

    Returns
    -------
    float
        sBMD in mg/cm2.

    Raises
    ------
    ValueError
        For the lumbar site (no equation configured) or a non-positive BMD.
    """
    slope, intercept = _sbmd_coefficients(site, manufacturer)
    return 1000.0 * (intercept + slope * _require_positive("bmd", bmd))


def standardized_bmd_calibration(
    site: MeasurementSite, from_manufacturer: DxaManufacturer, to_manufacturer: DxaManufacturer
) -> LinearCalibration:
    """Hip cross-calibration through standardised BMD: equal sBMD on both scales.

    From ``a_f + b_f x BMD_f = a_t + b_t x BMD_t`` follows
    ``BMD_t = (b_f / b_t) x BMD_f + (a_f - a_t) / b_t``.

    Parameters
    ----------
    site
        ``femoral_neck`` or ``total_hip``.
    from_manufacturer, to_manufacturer
        The scales converted from and to.

    Returns
    -------
    LinearCalibration

    Raises
    ------
    ValueError
        For the lumbar site.
    """
    b_from, a_from = _sbmd_coefficients(site, from_manufacturer)
    b_to, a_to = _sbmd_coefficients(site, to_manufacturer)
    return LinearCalibration(
        slope=b_from / b_to,
        intercept=(a_from - a_to) / b_to,
        from_manufacturer=from_manufacturer,
        to_manufacturer=to_manufacturer,
        site=site,
        source=f"derived from the {_SBMD_SOURCE}",
    )


# --- ISCD lumbar rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class VertebraMeasure:
    """One vertebra's estimate as the lumbar pipeline hands it over.

    Parameters
    ----------
    label
        Which vertebra.
    bmd
        Estimated BMD (g/cm2) on the reference's scale; ``None`` only when not evaluable.
    t_score
        Unrounded T-score of ``bmd``; ``None`` only when not evaluable.
    evaluable
        False when the pipeline found structural change, an artefact or a failed detection.
    reason
        Why it is not evaluable (required then, and only then).

    Raises
    ------
    TypeError, ValueError
        When the fields contradict each other or a number is not finite.
    """

    label: Vertebra
    bmd: float | None
    t_score: float | None
    evaluable: bool = True
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", Vertebra(self.label))
        if self.evaluable:
            if self.bmd is None or self.t_score is None:
                raise ValueError(f"{self.label}: an evaluable vertebra needs bmd and t_score")
            if self.reason is not None:
                raise ValueError(f"{self.label}: an evaluable vertebra has no exclusion reason")
        elif not (self.reason and self.reason.strip()):
            raise ValueError(f"{self.label}: a vertebra that is not evaluable needs a reason")
        if self.bmd is not None:
            object.__setattr__(self, "bmd", _require_positive(f"{self.label} bmd", self.bmd))
        if self.t_score is not None:
            object.__setattr__(
                self, "t_score", _require_finite(f"{self.label} t_score", self.t_score)
            )


@dataclass(frozen=True)
class VertebraExclusion:
    """A vertebra left out of the L1-L4 result, and why."""

    label: Vertebra
    kind: ExclusionKind
    reason: str


@dataclass(frozen=True)
class LumbarSummary:
    """The L1-L4 result after the ISCD rules.

    Attributes
    ----------
    evaluable
        False when fewer than two vertebrae remain or the outlier cannot be decided.
    included
        Vertebrae that count, in cranio-caudal order.
    excluded
        Every vertebra that does not count, with its reason, in the order the rules removed them
        (flagged and unmeasured first, then discordant ones).
    bmd
        Mean BMD of the included vertebrae (g/cm2); ``None`` when not evaluable.
    t_score
        Unrounded T-score of ``bmd`` against the L1-L4 reference; ``None`` when not evaluable.
    category
        WHO category of the reported T-score; ``None`` when not evaluable.
    reason
        Why the result is not evaluable; ``None`` when it is.
    notes
        Remarks for the reader (e.g. adjacent vertebrae that still differ by more than 1.0).
    reference
        The young-adult reference the T-score is computed against.
    """

    evaluable: bool
    included: tuple[Vertebra, ...]
    excluded: tuple[VertebraExclusion, ...]
    bmd: float | None
    t_score: float | None
    category: Category | None
    reason: str | None
    notes: tuple[str, ...]
    reference: YoungAdultReference

    @property
    def reported_t_score(self) -> float | None:
        """The T-score to one decimal, as the category was decided on."""
        return None if self.t_score is None else reported_t_score(self.t_score)


def _neighbours(label: Vertebra, included: Sequence[Vertebra]) -> list[Vertebra]:
    """The nearest included vertebra above and below (fewer at the ends of the region)."""
    index = included.index(label)
    return [included[i] for i in (index - 1, index + 1) if 0 <= i < len(included)]


def _discordant(first: float, second: float) -> bool:
    """More than 1.0 apart; exactly 1.0 (up to float noise) is not more."""
    return abs(first - second) > DISCORDANCE_LIMIT + _TIE_TOLERANCE


def _format_t(value: float) -> str:
    return f"{value:+.2f}"


def combine_lumbar(
    measures: Sequence[VertebraMeasure], reference: YoungAdultReference
) -> LumbarSummary:
    """Apply the ISCD lumbar rules to per-vertebra estimates and combine the rest.

    ISCD (Adult Official Positions): use L1-L4 and all evaluable vertebrae; exclude only vertebrae
    affected by local structural change or artefact; anatomically abnormal vertebrae may be excluded
    when "there is more than a 1.0 T-score difference between the vertebra in question and the
    adjacent vertebra"; use at least two vertebrae, never one (two non-contiguous vertebrae are
    acceptable). The T-score rule is made precise and deterministic here:

    1. Vertebrae the pipeline marked not evaluable are excluded with its reason; L1-L4 labels with
       no measure are excluded as not measured.
    2. The neighbours of an included vertebra are the nearest included vertebrae above and below it
       (after an exclusion, the vertebrae either side of the gap become neighbours).
    3. A vertebra is an outlier when its (unrounded) T-score differs by more than 1.0 from *every*
       neighbour; a difference of exactly 1.0 is not more. A step between two pairs (L1, L2 low; L3, L4 high) therefore excludes nothing, since the
       numbers cannot tell which pair is abnormal; it is reported in ``notes`` for review instead.
    4. Among the outliers, the one whose T-score lies furthest from the median T-score of the other
       included vertebrae is excluded, and step 2 is repeated. If two outliers are equally far (two
       remaining vertebrae that differ by more than 1.0 always are), no choice is defensible and the
       result is not evaluable.
    5. Fewer than two included vertebrae: not evaluable.

    The combined BMD is the mean of the included vertebrae's BMD. DXA uses the area-weighted total
    (total BMC / total area); a radiograph gives no DXA projected area, so the unweighted mean is
    the approximation (projected vertebral areas grow caudally, so the plain mean gives the upper
    vertebrae somewhat more weight than DXA would). The combined T-score is computed from the
    combined BMD against the L1-L4 reference, not averaged from the vertebrae's T-scores.

    Parameters
    ----------
    measures
        At most one measure per vertebra L1-L4, in any order.
    reference
        The L1-L4 young-adult reference on the same manufacturer scale as the BMDs.

    Returns
    -------
    LumbarSummary

    Raises
    ------
    ValueError
        When a vertebra is given twice or the reference is not an L1-L4 reference.
    """
    if reference.site is not MeasurementSite.LUMBAR_L1_L4:
        raise ValueError(f"the combined T-score needs an L1-L4 reference, got {reference.site}")
    by_label: dict[Vertebra, VertebraMeasure] = {}
    for measure in measures:
        if not isinstance(measure, VertebraMeasure):
            raise TypeError(f"expected VertebraMeasure, got {type(measure).__name__}")
        if measure.label in by_label:
            raise ValueError(f"{measure.label} is given more than once")
        by_label[measure.label] = measure

    excluded: list[VertebraExclusion] = []
    included: list[Vertebra] = []
    scores: dict[Vertebra, float] = {}
    bmds: dict[Vertebra, float] = {}
    for label in Vertebra:
        measure = by_label.get(label)
        if measure is None:
            excluded.append(VertebraExclusion(label, ExclusionKind.NOT_MEASURED, "not measured"))
        elif not measure.evaluable:
            excluded.append(VertebraExclusion(label, ExclusionKind.FLAGGED, str(measure.reason)))
        else:
            # VertebraMeasure guarantees both numbers for an evaluable vertebra.
            assert measure.t_score is not None and measure.bmd is not None
            included.append(label)
            scores[label] = measure.t_score
            bmds[label] = measure.bmd

    def not_evaluable(reason: str) -> LumbarSummary:
        return LumbarSummary(
            evaluable=False, included=tuple(included), excluded=tuple(excluded), bmd=None,
            t_score=None, category=None, reason=reason, notes=(), reference=reference,
        )

    while len(included) >= MIN_LUMBAR_VERTEBRAE:
        outliers = [
            label for label in included
            if all(
                _discordant(scores[label], scores[other]) for other in _neighbours(label, included)
            )
        ]
        if not outliers:
            break
        distance = {
            label: abs(scores[label] - statistics.median(
                scores[other] for other in included if other != label
            ))
            for label in outliers
        }
        ranked = sorted(outliers, key=lambda label: -distance[label])
        if len(ranked) > 1 and distance[ranked[0]] - distance[ranked[1]] <= _TIE_TOLERANCE:
            tied = ", ".join(
                f"{label} ({_format_t(scores[label])})" for label in ranked
                if distance[ranked[0]] - distance[label] <= _TIE_TOLERANCE
            )
            return not_evaluable(
                f"T-scores of {tied} differ by more than {DISCORDANCE_LIMIT} and are equally"
                " discordant; cannot decide which vertebra to exclude"
            )
        outlier = ranked[0]
        around = " and ".join(
            f"{other} ({_format_t(scores[other])})" for other in _neighbours(outlier, included)
        )
        excluded.append(VertebraExclusion(
            outlier, ExclusionKind.DISCORDANT,
            f"T-score {_format_t(scores[outlier])} differs by more than {DISCORDANCE_LIMIT}"
            f" from adjacent {around}",
        ))
        included.remove(outlier)

    if len(included) < MIN_LUMBAR_VERTEBRAE:
        remaining = ", ".join(included) or "none"
        return not_evaluable(
            f"fewer than {MIN_LUMBAR_VERTEBRAE} evaluable vertebrae (remaining: {remaining});"
            " ISCD: never report one vertebra"
        )

    notes = tuple(
        f"{upper} ({_format_t(scores[upper])}) and {lower} ({_format_t(scores[lower])}) differ by"
        f" more than {DISCORDANCE_LIMIT}; review for structural change"
        for upper, lower in zip(included, included[1:])
        if _discordant(scores[upper], scores[lower])
    )
    combined_bmd = statistics.fmean(bmds[label] for label in included)
    combined_t = t_score(combined_bmd, reference)
    return LumbarSummary(
        evaluable=True, included=tuple(included), excluded=tuple(excluded), bmd=combined_bmd,
        t_score=combined_t, category=who_category(combined_t), reason=None, notes=notes,
        reference=reference,
    )


# --- Hip -------------------------------------------------------------------------------------

#: Tie-break order when two hip T-scores are equal: femoral neck first, right side first.
_HIP_SITE_ORDER = (MeasurementSite.FEMORAL_NECK, MeasurementSite.TOTAL_HIP)
_SIDE_ORDER = (Laterality.RIGHT, Laterality.LEFT)


@dataclass(frozen=True)
class HipSideMeasure:
    """T-scores of one proximal femur; at least one site must be given.

    Parameters
    ----------
    side
        Which hip.
    femoral_neck_t, total_hip_t
        Unrounded T-scores, ``None`` where not measured.

    Raises
    ------
    TypeError, ValueError
        When neither T-score is given or one is not finite.
    """

    side: Laterality
    femoral_neck_t: float | None = None
    total_hip_t: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", Laterality(self.side))
        if self.femoral_neck_t is None and self.total_hip_t is None:
            raise ValueError(f"hip {self.side}: give a femoral neck or total hip T-score")
        for name in ("femoral_neck_t", "total_hip_t"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _require_finite(name, getattr(self, name)))

    def scores(self) -> dict[MeasurementSite, float]:
        """The measured sites and their T-scores."""
        pairs = (
            (MeasurementSite.FEMORAL_NECK, self.femoral_neck_t),
            (MeasurementSite.TOTAL_HIP, self.total_hip_t),
        )
        return {site: score for site, score in pairs if score is not None}


@dataclass(frozen=True)
class HipDecision:
    """The hip T-score that decides the category, and where it came from."""

    t_score: float
    site: MeasurementSite
    side: Laterality
    category: Category

    @property
    def reported_t_score(self) -> float:
        """The T-score to one decimal, as the category was decided on."""
        return reported_t_score(self.t_score)


def lowest_hip(sides: Sequence[HipSideMeasure]) -> HipDecision:
    """ISCD hip rule: the lowest of femoral neck and total hip T-score, over the hips given.

    Equal T-scores are resolved deterministically: femoral neck before total hip, right before left.

    Parameters
    ----------
    sides
        One or two hips, each side at most once.

    Returns
    -------
    HipDecision

    Raises
    ------
    ValueError
        When no hip, or the same side twice, is given.
    """
    if not sides:
        raise ValueError("give at least one hip")
    for side in sides:
        if not isinstance(side, HipSideMeasure):
            raise TypeError(f"expected HipSideMeasure, got {type(side).__name__}")
    seen = [side.side for side in sides]
    if len(set(seen)) != len(seen):
        raise ValueError("each hip side may be given only once")
    candidates = [
        (score, _HIP_SITE_ORDER.index(site), _SIDE_ORDER.index(side.side), site, side.side)
        for side in sides
        for site, score in side.scores().items()
    ]
    score, _, _, site, laterality = min(candidates)
    return HipDecision(t_score=score, site=site, side=laterality, category=who_category(score))
