"""Decode a radiograph once into a vendor-independent :class:`Radiograph`.

Everything a pipeline needs from the DICOM file is taken here: the pixels with the
Modality LUT applied and oriented so that bone is bright, the pixel spacing and where
it came from, the header facts (sex, age, view, laterality, body part, manufacturer)
and the identifying UIDs.  Files the node cannot analyse are refused with an
:class:`ImageError` whose :class:`ImageErrorReason` is recorded as the job's reason.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pydicom
import structlog
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
    pixel_array,
)
from pydicom.uid import UID

from osteonode.header import HeaderFacts, read_header

log = structlog.get_logger(__name__)

#: Decoding plugins tried first, in order; any other plugin pydicom has for the
#: transfer syntax is tried after these.
PREFERRED_DECODING_PLUGINS: tuple[str, ...] = ("pylibjpeg", "gdcm")

#: Percentiles of the pixel values that bound the display window when the file has none.
ROBUST_WINDOW_PERCENTILES: tuple[float, float] = (0.5, 99.5)

#: Group of the Pixel Data, Float Pixel Data and Extended Offset Table elements.
_PIXEL_DATA_GROUP = 0x7FE0


class ImageErrorReason(StrEnum):
    """Why an image was refused; the value is stored as the job's reason code."""

    UNREADABLE_FILE = "unreadable_file"
    NO_PIXEL_DATA = "no_pixel_data"
    MULTI_FRAME = "multi_frame"
    COLOUR = "colour"
    PALETTE_COLOUR = "palette_colour"
    INVALID_HEADER = "invalid_header"
    TRUNCATED_PIXEL_DATA = "truncated_pixel_data"
    DECODER_FAILURE = "decoder_failure"


class ImageError(Exception):
    """A radiograph that cannot be analysed.

    Parameters
    ----------
    reason : ImageErrorReason
        Machine-readable reason code.
    message : str
        Human-readable explanation naming what is wrong.
    """

    def __init__(self, reason: ImageErrorReason, message: str) -> None:
        if not isinstance(reason, ImageErrorReason):
            raise TypeError(f"reason must be an ImageErrorReason, not {type(reason).__name__}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[ImageError], tuple[ImageErrorReason, str]]:
        # Errors cross process boundaries (worker pools); keep both fields.
        return (type(self), (self.reason, self.message))

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class SpacingSource(StrEnum):
    """The header attribute the pixel spacing was taken from."""

    PIXEL_SPACING = "pixel_spacing"
    IMAGER_PIXEL_SPACING = "imager_pixel_spacing"
    IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED = "imager_pixel_spacing_magnification_corrected"
    NONE = "none"


class PhotometricInterpretation(StrEnum):
    """The greyscale Photometric Interpretations the node accepts."""

    MONOCHROME1 = "MONOCHROME1"
    MONOCHROME2 = "MONOCHROME2"


_GREYSCALE_VALUES = frozenset(member.value for member in PhotometricInterpretation)


@dataclass(frozen=True)
class SourceUids:
    """The identifying UIDs of the source image (None where the header lacks one)."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One decoded greyscale radiograph.

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D float32, read-only; Modality LUT applied, higher value = more attenuation
        (bone bright) whatever the Photometric Interpretation.
    spacing_mm : tuple of float or None
        (row, column) spacing in mm, or None when the header gives no valid spacing.
    spacing_source : SpacingSource
        Where ``spacing_mm`` came from; ``SpacingSource.NONE`` exactly when it is None.
    facts : HeaderFacts
        Header facts for routing and the pipelines.
    uids : SourceUids
        Identifying UIDs of the source image.
    header : pydicom.dataset.Dataset
        The source dataset without its pixel data (group 7FE0), for the VOI LUT module
        (display) and for copying the patient and study modules into reports.
    photometric_interpretation : PhotometricInterpretation
        The source's Photometric Interpretation.
    monochrome1_reflection : float or None
        For MONOCHROME1 sources the constant ``c`` with ``pixels = c - modality value``;
        None for MONOCHROME2.
    transfer_syntax_uid : str
        The transfer syntax the pixel data was decoded from.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    facts: HeaderFacts
    uids: SourceUids
    header: Dataset
    photometric_interpretation: PhotometricInterpretation
    monochrome1_reflection: float | None
    transfer_syntax_uid: str

    def __post_init__(self) -> None:
        if not isinstance(self.pixels, np.ndarray) or self.pixels.ndim != 2:
            raise ValueError("pixels must be a 2-D numpy array")
        if self.pixels.dtype != np.float32:
            raise TypeError(f"pixels must be float32, not {self.pixels.dtype}")
        if (self.spacing_mm is None) != (self.spacing_source is SpacingSource.NONE):
            raise ValueError("spacing_source must be NONE exactly when spacing_mm is None")
        if self.spacing_mm is not None and (
            len(self.spacing_mm) != 2 or not all(_is_positive(v) for v in self.spacing_mm)
        ):
            raise ValueError(f"spacing_mm must be two positive numbers, got {self.spacing_mm}")
        is_mono1 = self.photometric_interpretation is PhotometricInterpretation.MONOCHROME1
        if is_mono1 != (self.monochrome1_reflection is not None):
            raise ValueError("monochrome1_reflection is required for, and only for, MONOCHROME1")
        if any(tag.group == _PIXEL_DATA_GROUP for tag in self.header.keys()):
            raise ValueError("header must not hold pixel data")
        self.pixels.flags.writeable = False

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the image."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    def modality_values(self) -> np.ndarray:
        """The Modality LUT output in the source's own orientation (float64).

        This is the input the file's VOI LUT or window applies to.
        """
        if self.monochrome1_reflection is None:
            return self.pixels.astype(np.float64)
        return self.monochrome1_reflection - self.pixels.astype(np.float64)


def load_radiograph(source: str | os.PathLike[str] | Dataset) -> Radiograph:
    """Decode a single-frame greyscale radiograph.

    Parameters
    ----------
    source : str, os.PathLike or pydicom.dataset.Dataset
        Path of a DICOM file, or a dataset (which is not modified).

    Returns
    -------
    Radiograph
        The decoded image with its spacing, header facts and UIDs.

    Raises
    ------
    ImageError
        When the file is unreadable, has no pixel data, is multi-frame, colour or
        palette colour, has an invalid image header, pixel data shorter than the
        header says, or when no decoder can decode it.
    TypeError
        When `source` is neither a path nor a Dataset.
    """
    dataset = _read(source)
    try:
        photometric = _check_greyscale_single_frame(dataset)
    except ImageError:
        raise
    except Exception as exc:  # malformed values surface only when pydicom converts them
        raise ImageError(
            ImageErrorReason.INVALID_HEADER,
            f"the image header cannot be read: {type(exc).__name__}: {exc}",
        ) from exc
    stored, decoder = _decode(dataset)
    pixels, reflection = _to_attenuation(stored, dataset, photometric)
    spacing, spacing_source = spacing_from_header(dataset)
    radiograph = Radiograph(
        pixels=pixels,
        spacing_mm=spacing,
        spacing_source=spacing_source,
        facts=read_header(dataset),
        uids=_uids(dataset),
        header=header_without_pixels(dataset),
        photometric_interpretation=photometric,
        monochrome1_reflection=reflection,
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
    )
    log.info(
        "radiograph_loaded",
        sop_instance_uid=radiograph.uids.sop_instance_uid,
        rows=radiograph.shape[0],
        columns=radiograph.shape[1],
        transfer_syntax=radiograph.transfer_syntax_uid,
        decoder=decoder,
        photometric=photometric.value,
        spacing_source=spacing_source.value,
    )
    return radiograph


def _read(source: str | os.PathLike[str] | Dataset) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or a pydicom Dataset, not {type(source).__name__}")
    try:
        return pydicom.dcmread(source)
    except Exception as exc:  # pydicom raises many kinds of error on damaged files
        raise ImageError(
            ImageErrorReason.UNREADABLE_FILE, f"cannot read {os.fspath(source)!r} as DICOM: {exc}"
        ) from exc


def _check_greyscale_single_frame(ds: Dataset) -> PhotometricInterpretation:
    """Refuse what the pipelines cannot use, before any decoding is spent on it."""
    if "PixelData" not in ds:
        extra = ""
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            extra = " (float pixel data is not supported for radiographs)"
        raise ImageError(
            ImageErrorReason.NO_PIXEL_DATA, f"the dataset has no Pixel Data (7FE0,0010){extra}"
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        raise ImageError(
            ImageErrorReason.PALETTE_COLOUR,
            "Photometric Interpretation is PALETTE COLOR; only greyscale radiographs are analysed",
        )
    samples = _header_int(ds, "SamplesPerPixel", default=1)
    if samples != 1 or (photometric and photometric not in _GREYSCALE_VALUES):
        raise ImageError(
            ImageErrorReason.COLOUR,
            f"colour image (Photometric Interpretation {photometric or 'absent'}, "
            f"Samples per Pixel {samples}); only MONOCHROME1/MONOCHROME2 are analysed",
        )
    if not photometric:
        raise ImageError(
            ImageErrorReason.INVALID_HEADER, "Photometric Interpretation (0028,0004) is absent"
        )
    frames = _header_int(ds, "NumberOfFrames", default=1)
    if frames != 1:
        raise ImageError(
            ImageErrorReason.MULTI_FRAME,
            f"the image has {frames} frames; only single-frame radiographs are analysed",
        )
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored"):
        if _header_int(ds, keyword, default=0) < 1:
            raise ImageError(
                ImageErrorReason.INVALID_HEADER, f"{keyword} is absent or not a positive integer"
            )
    if _header_int(ds, "PixelRepresentation", default=-1) not in (0, 1):
        raise ImageError(
            ImageErrorReason.INVALID_HEADER, "Pixel Representation is absent or not 0 or 1"
        )
    if ds.BitsStored > ds.BitsAllocated:
        raise ImageError(
            ImageErrorReason.INVALID_HEADER,
            f"Bits Stored ({ds.BitsStored}) exceeds Bits Allocated ({ds.BitsAllocated})",
        )
    return PhotometricInterpretation(photometric)


def _header_int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ImageError(
            ImageErrorReason.INVALID_HEADER, f"{keyword} is not an integer: {value!r}"
        ) from exc


def _decode(ds: Dataset) -> tuple[np.ndarray, str]:
    """Decode the stored values, trying pylibjpeg first and GDCM after it.

    Returns the stored values and the name of the plugin that decoded them.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise ImageError(
            ImageErrorReason.INVALID_HEADER,
            "the dataset has no Transfer Syntax UID, so its pixel data cannot be decoded",
        )
    syntax = UID(syntax)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageError(
            ImageErrorReason.DECODER_FAILURE,
            f"no decoder for transfer syntax {syntax.name} ({syntax})",
        ) from exc
    if decoder.is_native:
        _check_native_length(ds)
        plugins: list[str] = [""]
    else:
        available = list(decoder.available_plugins)
        plugins = [p for p in PREFERRED_DECODING_PLUGINS if p in available]
        plugins += [p for p in available if p not in plugins]
        if not plugins:
            raise ImageError(
                ImageErrorReason.DECODER_FAILURE,
                f"no decoding plugin is installed for {syntax.name} ({syntax})",
            )
    failures: list[str] = []
    for plugin in plugins:
        try:
            stored = pixel_array(ds, decoding_plugin=plugin)
        except Exception as exc:  # decoders raise anything; each failure is reported below
            failures.append(f"{plugin or 'native'}: {type(exc).__name__}: {exc}")
            log.warning(
                "pixel_decoder_failed",
                transfer_syntax=str(syntax),
                plugin=plugin or "native",
                error=type(exc).__name__,
            )
            continue
        if stored.shape != (ds.Rows, ds.Columns):
            failures.append(
                f"{plugin or 'native'}: decoded shape {stored.shape} is not "
                f"Rows x Columns ({ds.Rows}, {ds.Columns})"
            )
            continue
        return stored, plugin or "native"
    raise ImageError(
        ImageErrorReason.DECODER_FAILURE,
        f"cannot decode {syntax.name} ({syntax}) pixel data: " + "; ".join(failures),
    )


def _check_native_length(ds: Dataset) -> None:
    expected_bits = ds.Rows * ds.Columns * ds.BitsAllocated
    expected = (expected_bits + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise ImageError(
            ImageErrorReason.TRUNCATED_PIXEL_DATA,
            f"Pixel Data holds {actual} bytes but Rows {ds.Rows} x Columns {ds.Columns} "
            f"x Bits Allocated {ds.BitsAllocated} needs {expected}",
        )


def _to_attenuation(
    stored: np.ndarray, ds: Dataset, photometric: PhotometricInterpretation
) -> tuple[np.ndarray, float | None]:
    """Apply the Modality LUT and turn MONOCHROME1 round so bone is bright.

    Presentation LUT Shape is not consulted: in the CR and DX objects it agrees with
    the Photometric Interpretation (IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1).
    """
    try:
        modality = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except Exception as exc:  # a malformed Modality LUT or rescale is a header fault
        raise ImageError(
            ImageErrorReason.INVALID_HEADER,
            f"the Modality LUT / Rescale cannot be applied: {type(exc).__name__}: {exc}",
        ) from exc
    if photometric is PhotometricInterpretation.MONOCHROME2:
        return modality.astype(np.float32), None
    reflection = _modality_range_sum(ds)
    return (reflection - modality).astype(np.float32), reflection


def _modality_range_sum(ds: Dataset) -> float:
    """Lowest plus highest value the Modality LUT can output.

    MONOCHROME1 is turned round by reflecting each value about the middle of the
    range the header allows (``low + high - value``), not about the image's own
    minimum and maximum: the result then depends only on the header, so a
    MONOCHROME1 image and its MONOCHROME2 inverse (stored values reflected the same
    way, same rescale) give identical pixels, and the file's VOI window still
    applies to ``low + high - pixels``.  For a Modality LUT table the range is the
    nominal output range ``0 .. 2**bits - 1`` of its LUT Descriptor; for a linear
    rescale (or none) it is the image of the stored-value range.
    """
    lut_items = ds.get("ModalityLUTSequence")
    if lut_items:
        bits = int(lut_items[0].LUTDescriptor[2])
        return float(2**bits - 1)
    bits_stored = int(ds.BitsStored)
    if int(ds.PixelRepresentation) == 1:
        ends = np.array([-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1])
    else:
        ends = np.array([0, 2**bits_stored - 1])
    return float(np.sum(np.asarray(apply_modality_lut(ends, ds), dtype=np.float64)))


def spacing_from_header(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource]:
    """The (row, column) pixel spacing in mm and where it came from.

    Pixel Spacing wins when valid (in DX it is already at the patient plane or
    calibrated); otherwise Imager Pixel Spacing, divided by Estimated Radiographic
    Magnification Factor when that is a positive number.  Zero, negative, non-finite
    or malformed values count as missing.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The image header.

    Returns
    -------
    tuple
        ``(spacing_mm or None, SpacingSource)``.
    """
    pixel_spacing = _spacing_pair(ds, "PixelSpacing")
    if pixel_spacing is not None:
        return pixel_spacing, SpacingSource.PIXEL_SPACING
    imager_spacing = _spacing_pair(ds, "ImagerPixelSpacing")
    if imager_spacing is None:
        return None, SpacingSource.NONE
    magnification = _positive_float(ds, "EstimatedRadiographicMagnificationFactor")
    if magnification is None:
        return imager_spacing, SpacingSource.IMAGER_PIXEL_SPACING
    corrected = (imager_spacing[0] / magnification, imager_spacing[1] / magnification)
    return corrected, SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED


def _spacing_pair(ds: Dataset, keyword: str) -> tuple[float, float] | None:
    value = _safe_get(ds, keyword)
    if value is None or isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None
    if len(value) != 2:
        return None
    try:
        pair = (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        return None
    if not all(_is_positive(v) for v in pair):
        log.info("spacing_ignored", attribute=keyword, reason="not_positive")
        return None
    return pair


def _positive_float(ds: Dataset, keyword: str) -> float | None:
    value = _safe_get(ds, keyword)
    try:
        number = float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and _is_positive(number) else None


def _is_positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _safe_get(ds: Dataset, keyword: str) -> Any:
    """Read an element whose value may be malformed in the wild."""
    try:
        return ds.get(keyword)
    except Exception:  # pydicom raises assorted errors on malformed values
        log.info("header_value_unreadable", attribute=keyword)
        return None


def _uids(ds: Dataset) -> SourceUids:
    def uid(keyword: str) -> str | None:
        value = _safe_get(ds, keyword)
        return str(value) if value else None

    return SourceUids(
        study_instance_uid=uid("StudyInstanceUID"),
        series_instance_uid=uid("SeriesInstanceUID"),
        sop_instance_uid=uid("SOPInstanceUID"),
        sop_class_uid=uid("SOPClassUID"),
    )


def header_without_pixels(ds: Dataset) -> Dataset:
    """A deep copy of `ds` (with its file meta) without group 7FE0.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The source dataset, not modified.

    Returns
    -------
    pydicom.dataset.Dataset
        The header, safe to keep alongside the decoded pixels.
    """
    header = Dataset()
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        header.file_meta = copy.deepcopy(meta)
    for tag in ds.keys():
        if tag.group == _PIXEL_DATA_GROUP:
            continue
        try:
            element = ds[tag]
        except Exception:  # one malformed element must not cost the whole image
            log.warning("header_element_dropped", tag=str(tag))
            continue
        header.add(copy.deepcopy(element))
    return header


def display_window(radiograph: Radiograph) -> np.ndarray:
    """An 8-bit grey display image, bone bright.

    Uses the file's first VOI LUT when present, else its first Window Center /
    Width (with its VOI LUT Function), else a robust window between the
    :data:`ROBUST_WINDOW_PERCENTILES` of the pixels.  The file's VOI applies to the
    Modality LUT output in the file's own orientation; MONOCHROME1 results are then
    inverted so that the image always shows bone bright.

    Parameters
    ----------
    radiograph : Radiograph
        The decoded image.

    Returns
    -------
    numpy.ndarray
        uint8 array of the radiograph's shape.
    """
    if not isinstance(radiograph, Radiograph):
        raise TypeError(f"radiograph must be a Radiograph, not {type(radiograph).__name__}")
    unit = _file_voi(radiograph)
    if unit is None:
        unit = _robust_window(radiograph.pixels)
    elif radiograph.monochrome1_reflection is not None:
        unit = 1.0 - unit
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _file_voi(radiograph: Radiograph) -> np.ndarray | None:
    """The file's VOI transform scaled to [0, 1], or None when it has no usable one."""
    header = radiograph.header
    try:
        if header.get("VOILUTSequence"):
            return _voi_lut_unit(radiograph.modality_values(), header)
        if "WindowCenter" in header and "WindowWidth" in header:
            return _window_unit(radiograph.modality_values(), header)
    except Exception as exc:  # a malformed VOI module must not stop the display
        log.warning(
            "voi_ignored",
            sop_instance_uid=radiograph.uids.sop_instance_uid,
            error=f"{type(exc).__name__}: {exc}",
        )
    return None


def _voi_lut_unit(values: np.ndarray, header: Dataset) -> np.ndarray:
    # The table maps integer inputs; its own lowest and highest entries bound the
    # output because LUT Descriptor bit depths are often wrong in the wild.
    item = header.VOILUTSequence[0]
    entries = int(item.LUTDescriptor[0]) or 2**16
    first = int(item.LUTDescriptor[1])
    table = apply_voi(np.arange(first, first + entries, dtype=np.int64), header).astype(np.float64)
    low, high = float(table.min()), float(table.max())
    mapped = apply_voi(np.rint(values).astype(np.int64), header).astype(np.float64)
    if high <= low:
        return np.zeros_like(mapped)
    return (mapped - low) / (high - low)


def _window_unit(values: np.ndarray, header: Dataset) -> np.ndarray:
    # pydicom scales its output to the stored range of the dataset it is given; a
    # dataset holding only the window and an 8-bit unsigned range gives 0..255
    # (in MONOCHROME2 sense; the caller turns MONOCHROME1 round).
    window = Dataset()
    window.PhotometricInterpretation = PhotometricInterpretation.MONOCHROME2.value
    window.WindowCenter = _first(header.WindowCenter)
    window.WindowWidth = _first(header.WindowWidth)
    function = str(header.get("VOILUTFunction", "") or "").strip().upper()
    if function:
        window.VOILUTFunction = function
    window.BitsStored = 8
    window.PixelRepresentation = 0
    return apply_windowing(values, window) / 255.0


def _first(value: Any) -> float:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def _robust_window(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels, ROBUST_WINDOW_PERCENTILES)
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.float64)
    return (pixels.astype(np.float64) - low) / (high - low)
