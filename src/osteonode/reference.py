"""The site-editable reference data: young-adult references and DXA cross-calibrations.

Read from ``node_config/reference.toml`` when the node's working directory has one, else from the
copy shipped inside the package (``defaults/reference.toml``). A site's file replaces the shipped
one as a whole; every entry names its ``source``, which is recorded with each result.

Problems are reported like those of the node configuration: :func:`load_reference` raises one
:class:`~osteonode.config.ConfigError` listing every :class:`~osteonode.config.ConfigProblem`
(dotted key and reason), and :func:`check_reference` returns the same list without raising, for
``osteonode config check``.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from osteonode.bone import (
    DxaManufacturer,
    LinearCalibration,
    MeasurementSite,
    Sex,
    YoungAdultReference,
)
from osteonode.config import ConfigError, ConfigProblem, describe_validation_error

__all__ = [
    "DEFAULT_REFERENCE_PATH",
    "CalibrationEntry",
    "LumbarCalibrationSettings",
    "MissingReferenceError",
    "ReferenceData",
    "YoungAdultEntry",
    "check_reference",
    "load_reference",
]

#: The site's reference file, relative to the node's working directory.
DEFAULT_REFERENCE_PATH = Path("node_config/reference.toml")
#: The shipped reference file, inside the package.
_SHIPPED_RESOURCE = "defaults/reference.toml"

#: Physically plausible range of a young-adult areal BMD mean (g/cm2).
BmdMean = Annotated[float, Field(ge=0.2, le=2.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Source = Annotated[str, Field(min_length=1, pattern=r"\S")]


class MissingReferenceError(LookupError):
    """The reference data has no entry for what was asked."""


class _Section(BaseModel):
    """Base of every table: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class YoungAdultEntry(_Section):
    """One ``[[young_adult]]`` table: mean and SD of young-adult BMD."""

    manufacturer: DxaManufacturer
    site: MeasurementSite
    sex: Sex
    mean: BmdMean
    sd: PositiveFloat
    source: Source

    @field_validator("sex")
    @classmethod
    def _reference_population(cls, sex: Sex) -> Sex:
        if sex not in (Sex.FEMALE, Sex.MALE):
            raise ValueError("a reference population is 'F' or 'M'")
        return sex

    @property
    def key(self) -> tuple[DxaManufacturer, MeasurementSite, Sex]:
        """What the entry is looked up by."""
        return (self.manufacturer, self.site, self.sex)


class CalibrationEntry(_Section):
    """One ``[[calibration]]`` table: ``to = slope x from + intercept`` at one site."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_manufacturer: DxaManufacturer = Field(alias="from")
    to_manufacturer: DxaManufacturer = Field(alias="to")
    site: MeasurementSite
    slope: PositiveFloat
    intercept: Annotated[float, Field(allow_inf_nan=False)]
    source: Source

    @property
    def key(self) -> tuple[DxaManufacturer, DxaManufacturer, MeasurementSite]:
        """What the entry is looked up by."""
        return (self.from_manufacturer, self.to_manufacturer, self.site)


class LumbarCalibrationSettings(_Section):
    """``[lumbar]``: the DXA scale the site reports lumbar BMD on (the model card gives its own)."""

    site_manufacturer: DxaManufacturer


class ReferenceData(_Section):
    """The whole reference file, validated; look entries up with the methods.

    The entry lists are ``young_adults`` and ``calibrations`` (``[[young_adult]]`` and
    ``[[calibration]]`` in the file), leaving the singular names to the look-up methods.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    lumbar: LumbarCalibrationSettings
    young_adults: list[YoungAdultEntry] = Field(alias="young_adult", min_length=1)
    calibrations: list[CalibrationEntry] = Field(alias="calibration", default_factory=list)

    def young_adult(
        self, manufacturer: DxaManufacturer, site: MeasurementSite, sex: Sex
    ) -> YoungAdultReference:
        """The young-adult reference for one manufacturer, site and sex.

        Parameters
        ----------
        manufacturer, site, sex
            What to look up; ``sex`` is ``F`` or ``M``.

        Returns
        -------
        YoungAdultReference

        Raises
        ------
        MissingReferenceError
            When the file has no such entry.
        """
        key = (DxaManufacturer(manufacturer), MeasurementSite(site), Sex(sex))
        for entry in self.young_adults:
            if entry.key == key:
                return YoungAdultReference(
                    mean=entry.mean, sd=entry.sd, site=entry.site, sex=entry.sex,
                    manufacturer=entry.manufacturer, source=entry.source,
                )
        raise MissingReferenceError(
            f"no young-adult reference for manufacturer={key[0]}, site={key[1]}, sex={key[2]};"
            " add a [[young_adult]] entry to the reference file"
        )

    def calibration(
        self,
        from_manufacturer: DxaManufacturer,
        to_manufacturer: DxaManufacturer,
        site: MeasurementSite,
    ) -> LinearCalibration:
        """The configured conversion from one manufacturer's scale to another's at one site.

        Same manufacturer: the identity. The reverse of a configured equation is not inferred.

        Parameters
        ----------
        from_manufacturer, to_manufacturer
            The scales converted from and to.
        site
            Skeletal site.

        Returns
        -------
        LinearCalibration

        Raises
        ------
        MissingReferenceError
            When the file has no entry for the direction and site asked.
        """
        key = (
            DxaManufacturer(from_manufacturer), DxaManufacturer(to_manufacturer),
            MeasurementSite(site),
        )
        if key[0] is key[1]:
            return LinearCalibration.identity(key[0], key[2])
        for entry in self.calibrations:
            if entry.key == key:
                return LinearCalibration(
                    slope=entry.slope, intercept=entry.intercept,
                    from_manufacturer=entry.from_manufacturer,
                    to_manufacturer=entry.to_manufacturer, site=entry.site, source=entry.source,
                )
        raise MissingReferenceError(
            f"no calibration from {key[0]} to {key[1]} at {key[2]};"
            " add a [[calibration]] entry to the reference file"
        )

    def lumbar_calibration(self, model_calibration: DxaManufacturer) -> LinearCalibration:
        """The conversion of a lumbar model's BMD to the site's DXA scale (``[lumbar]``).

        Parameters
        ----------
        model_calibration
            The scale the model's BMD estimates are on, as its model card declares.

        Raises
        ------
        MissingReferenceError
            If the reference file has no conversion from that scale to the site's.
        """
        return self.calibration(
            DxaManufacturer(model_calibration), self.lumbar.site_manufacturer,
            MeasurementSite.LUMBAR_L1_L4,
        )


def load_reference(path: Path | str | None = None) -> ReferenceData:
    """Read and validate a reference file.

    Parameters
    ----------
    path
        The TOML file. ``None`` reads ``node_config/reference.toml`` when it exists in the working
        directory, else the copy shipped in the package.

    Returns
    -------
    ReferenceData

    Raises
    ------
    ConfigError
        Listing every problem (file unreadable or not TOML, unknown keys, wrong types, values out
        of range, duplicate entries, the lumbar calibration or reference missing).
    """
    data, problems = _parse(path)
    if problems or data is None:
        raise ConfigError(_describe_source(path), problems)
    return data


def check_reference(path: Path | str | None = None) -> list[ConfigProblem]:
    """Every problem :func:`load_reference` would raise, without raising.

    Parameters
    ----------
    path
        As for :func:`load_reference`.

    Returns
    -------
    list of ConfigProblem
        Empty when the file is usable.
    """
    return _parse(path)[1]


def _describe_source(path: Path | str | None) -> str:
    if path is not None:
        return str(path)
    if DEFAULT_REFERENCE_PATH.is_file():
        return str(DEFAULT_REFERENCE_PATH)
    return "(shipped reference)"


def _read_text(path: Path | str | None) -> str:
    if path is not None:
        return Path(path).read_text("utf-8")
    if DEFAULT_REFERENCE_PATH.is_file():
        return DEFAULT_REFERENCE_PATH.read_text("utf-8")
    return resources.files("osteonode").joinpath(_SHIPPED_RESOURCE).read_text("utf-8")


def _parse(path: Path | str | None) -> tuple[ReferenceData | None, list[ConfigProblem]]:
    try:
        raw = tomllib.loads(_read_text(path))
    except OSError as error:
        reason = f"cannot read {_describe_source(path)}: {error.strerror or error}"
        return None, [ConfigProblem("(file)", reason)]
    except tomllib.TOMLDecodeError as error:
        return None, [ConfigProblem("(file)", f"not valid TOML: {error}")]
    try:
        data = ReferenceData.model_validate(raw)
    except ValidationError as error:
        return None, [describe_validation_error(item) for item in error.errors()]
    problems = _consistency_problems(data)
    return (None if problems else data), problems


def _consistency_problems(data: ReferenceData) -> list[ConfigProblem]:
    """Checks across entries: duplicates, pointless identities, the lumbar pair configured."""
    problems = []
    first_young: dict[tuple[Any, ...], int] = {}
    for index, entry in enumerate(data.young_adults):
        if entry.key in first_young:
            problems.append(ConfigProblem(
                f"young_adult.{index}",
                f"duplicate of young_adult.{first_young[entry.key]}"
                f" ({entry.manufacturer}, {entry.site}, {entry.sex})",
            ))
        first_young.setdefault(entry.key, index)
    first_calibration: dict[tuple[Any, ...], int] = {}
    for index, calibration in enumerate(data.calibrations):
        if calibration.from_manufacturer is calibration.to_manufacturer:
            problems.append(ConfigProblem(
                f"calibration.{index}",
                "'from' and 'to' are the same manufacturer; the identity is implied, remove it",
            ))
        elif calibration.key in first_calibration:
            problems.append(ConfigProblem(
                f"calibration.{index}",
                f"duplicate of calibration.{first_calibration[calibration.key]}"
                f" ({calibration.from_manufacturer} -> {calibration.to_manufacturer},"
                f" {calibration.site})",
            ))
        first_calibration.setdefault(calibration.key, index)

    settings = data.lumbar
    lumbar = MeasurementSite.LUMBAR_L1_L4
    if not any(key[:2] == (settings.site_manufacturer, lumbar) for key in first_young):
        problems.append(ConfigProblem(
            "lumbar.site_manufacturer",
            f"no [[young_adult]] reference for {settings.site_manufacturer} at {lumbar}",
        ))
    return problems
