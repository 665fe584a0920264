"""What osteonode reads from an image's header, read once, for routing and for the pipelines.

:func:`read_header` takes a dataset whose pixel data need not be loaded and returns
:class:`HeaderFacts`: the values routing compares (normalised: upper case without spaces, hyphens or
underscores, so ``L-SPINE`` and ``l spine`` are the same body part), the view as one canonical
projection whether the header gives it as View Position or only in the View Code Sequence, and the
patient facts the methods' intended use depends on. Values the header lacks are empty strings (a
routing criterion ``""`` accepts them), an unknown sex, or no age. Malformed values in the wild read
as missing, never as an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pydicom
import structlog

from osteonode.bone import Sex

__all__ = [
    "DESCRIPTION_KEYWORDS",
    "HeaderFacts",
    "canonical_view",
    "normalise",
    "read_header",
    "read_value",
]

log = structlog.get_logger(__name__)

#: Descriptions that routing keywords are searched in.
DESCRIPTION_KEYWORDS = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
)
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# View Position (0018,5101) defined terms, and the looser values vendors write, by projection.
_VIEW_POSITIONS = {
    "AP": "AP",
    "PA": "PA",
    "LL": "LATERAL",
    "RL": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "LLO": "OBLIQUE",
    "RLO": "OBLIQUE",
    "OBL": "OBLIQUE",
    "OBLIQUE": "OBLIQUE",
}
# Words of View Code Sequence code meanings (CID 4010/4012), in the order they are tested.
_VIEW_MEANINGS = (
    ("ANTEROPOSTERIOR", "AP"),
    ("ANTERIORPOSTERIOR", "AP"),
    ("POSTEROANTERIOR", "PA"),
    ("POSTERIORANTERIOR", "PA"),
    ("OBLIQUE", "OBLIQUE"),
    ("LATERAL", "LATERAL"),
    ("LATERO", "LATERAL"),
)
#: Days per unit of an Age String (AS) value.
_AGE_UNIT_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}


@dataclass(frozen=True)
class HeaderFacts:
    """The header facts routing and the pipelines need.

    Parameters
    ----------
    modality : str
        Modality (CR, DX, ...), normalised.
    sop_class_uid : str
        SOP Class UID.
    body_part : str
        Body Part Examined, normalised.
    view : str
        The projection: AP, PA, LATERAL, OBLIQUE, another View Position value as written
        (normalised), or "" when neither View Position nor the View Code Sequence gives one.
    laterality : str
        Image Laterality, else (series) Laterality (R, L, B, U), normalised.
    descriptions : tuple of str
        The Study, Series, Protocol and Requested / Performed Procedure descriptions.
    has_pixel_data : bool
        Whether the object carries pixel data.
    frames : int
        Number of Frames (1 when absent).
    samples_per_pixel : int
        Samples per Pixel (1 when absent).
    photometric : str
        Photometric Interpretation, normalised.
    patient_sex : Sex
        Patient's Sex; ``UNKNOWN`` when absent or not a defined term.
    patient_age_years : int or None
        Completed years, from Patient's Age or else from Patient's Birth Date and Study Date;
        None when neither gives a valid age.
    manufacturer : str or None
        Manufacturer as written.
    """

    modality: str
    sop_class_uid: str
    body_part: str
    view: str
    laterality: str
    descriptions: tuple[str, ...]
    has_pixel_data: bool
    frames: int
    samples_per_pixel: int
    photometric: str
    patient_sex: Sex
    patient_age_years: int | None
    manufacturer: str | None

    def __post_init__(self) -> None:
        if not isinstance(self.patient_sex, Sex):
            raise TypeError(f"patient_sex must be a Sex, got {self.patient_sex!r}")
        if self.patient_age_years is not None and (
            not isinstance(self.patient_age_years, int) or self.patient_age_years < 0
        ):
            raise ValueError("patient_age_years must be a non-negative int or None")


def normalise(value: object) -> str:
    """A header value as routing compares it: upper case, without spaces, hyphens or underscores."""
    return re.sub(r"[\s_\-]+", "", str(value or "")).upper()


def canonical_view(value: object) -> str:
    """The projection a View Position value names (``LL`` and ``rl`` are LATERAL), else the value."""
    position = normalise(value)
    return _VIEW_POSITIONS.get(position, position)


def read_header(ds: pydicom.Dataset) -> HeaderFacts:
    """Read the header facts of a dataset (no pixel decoding).

    Parameters
    ----------
    ds
        The dataset; large values may be deferred.

    Returns
    -------
    HeaderFacts
    """
    age = _age_from_patient_age(_text(ds, "PatientAge"))
    if age is None:
        age = _age_from_dates(_text(ds, "PatientBirthDate"), _text(ds, "StudyDate"))
    laterality = read_value(ds, "ImageLaterality") or read_value(ds, "Laterality")
    manufacturer = str(read_value(ds, "Manufacturer") or "").strip()
    return HeaderFacts(
        modality=normalise(read_value(ds, "Modality")),
        sop_class_uid=str(read_value(ds, "SOPClassUID") or ""),
        body_part=normalise(read_value(ds, "BodyPartExamined")),
        view=_view(ds),
        laterality=normalise(laterality),
        descriptions=tuple(str(read_value(ds, keyword) or "") for keyword in DESCRIPTION_KEYWORDS),
        has_pixel_data=any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS),
        frames=_int(ds, "NumberOfFrames", 1),
        samples_per_pixel=_int(ds, "SamplesPerPixel", 1),
        photometric=normalise(read_value(ds, "PhotometricInterpretation")),
        patient_sex=Sex.from_dicom(_text(ds, "PatientSex")),
        patient_age_years=age,
        manufacturer=manufacturer or None,
    )


def read_value(ds: pydicom.Dataset, keyword: str) -> Any:
    """An element's value, or None when it is absent or too malformed to read (values from the
    wild make pydicom raise assorted errors; the attribute is logged, its value never)."""
    try:
        return ds.get(keyword)
    except Exception:  # pydicom raises assorted errors on malformed values
        log.info("header_value_unreadable", attribute=keyword)
        return None


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = read_value(ds, keyword)
    text = str(value).strip().upper() if value is not None else ""
    return text or None


def _int(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    try:
        return int(read_value(ds, keyword) or default)
    except (TypeError, ValueError):
        return default


def _view(ds: pydicom.Dataset) -> str:
    position = canonical_view(read_value(ds, "ViewPosition"))
    if position:
        return position
    for item in read_value(ds, "ViewCodeSequence") or []:
        meaning = normalise(item.get("CodeMeaning", ""))
        for word, view in _VIEW_MEANINGS:
            if word in meaning:
                return view
    return ""


def _age_from_patient_age(value: str | None) -> int | None:
    """Completed years from an Age String such as ``045Y`` or ``006M``."""
    if value is None or len(value) != 4 or not value[:3].isdigit():
        return None
    unit = value[3]
    if unit not in _AGE_UNIT_DAYS:
        return None
    number = int(value[:3])
    if unit == "Y":
        return number
    return int(number * _AGE_UNIT_DAYS[unit] // _AGE_UNIT_DAYS["Y"])


def _age_from_dates(birth: str | None, study: str | None) -> int | None:
    born, studied = _parse_date(birth), _parse_date(study)
    if born is None or studied is None:
        return None
    years = studied.year - born.year - ((studied.month, studied.day) < (born.month, born.day))
    return years if years >= 0 else None


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    # ACR-NEMA style dates (YYYY.MM.DD) still arrive from old archives.
    digits = value.replace(".", "")
    try:
        return datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        return None
