"""Decode a radiograph once into a vendor-independent :class:`Radiograph`.

Everything a pipeline needs from the DICOM file is taken here: the pixels with the
Modality LUT applied and oriented so that bone is bright, the pixel spacing and where
it came from, the header facts (sex, age, view, laterality, body part, manufacturer)
and the identifying UIDs.  Files the node cannot analyse are refused with an
:class:`ImageError` whose :class:`ImageErrorReason` is recorded as the job's reason.

The size limits of ``[limits]`` (file size, rows, columns, pixels) are checked from the header
before anything is decoded.  Decoding itself (:func:`decode_stored_values`, the only step that runs
native decoder code) can be handed to a :class:`osteonode.imaging.isolation.DecoderProcess`, so that
a decoder crash costs a child process and not the node.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

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
from pydicom.uid import (
    JPEG2000,
    UID,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from osteonode.config import LimitsSettings
from osteonode.header import HeaderFacts, read_header, read_value

log = structlog.get_logger(__name__)

#: Decoding plugins tried first, in order, for a transfer syntax not in ``FASTEST_DECODING_PLUGINS``;
#: any other plugin pydicom has for the transfer syntax is tried after these.
PREFERRED_DECODING_PLUGINS: tuple[str, ...] = ("pylibjpeg", "gdcm")

#: The fastest decoding plugins per transfer syntax, fastest first, as measured on a 2000 x 2000
#: 15-bit film on 2 cores (bench/pixels.py prints the figures): CharLS (pyjpegls) decodes JPEG-LS
#: about 2x faster than GDCM and 4x faster than pylibjpeg-libjpeg; GDCM decodes JPEG 2000 about 2x
#: and lossless JPEG about 1.3x faster than pylibjpeg; pylibjpeg-rle decodes RLE 2.5x faster than
#: pydicom's own. The others stay behind them as fall-backs for files one decoder cannot read.
FASTEST_DECODING_PLUGINS: Mapping[str, tuple[str, ...]] = {
    **dict.fromkeys((JPEGLSLossless, JPEGLSNearLossless), ("pyjpegls", "gdcm", "pylibjpeg")),
    **dict.fromkeys((JPEG2000Lossless, JPEG2000), ("gdcm", "pylibjpeg")),
    **dict.fromkeys((JPEGLosslessSV1, JPEGLossless), ("gdcm", "pylibjpeg")),
    RLELossless: ("pylibjpeg", "pydicom"),
}

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
    TOO_LARGE = "too_large"
    """The file, or the image its header declares, exceeds the configured ``[limits]``."""
    DECODER_CRASHED = "decoder_crashed"
    """The isolated decoder process died on this file; it is not decoded again."""
    DECODER_TIMEOUT = "decoder_timeout"
    """The isolated decoder did not finish within ``limits.decode_timeout_s``."""


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


class StoredValuesDecoder(Protocol):
    """Decodes the stored values of a DICOM file, e.g. in another process."""

    def decode(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
        """The stored values (rows x columns) and the name of the plugin that decoded them."""
        ...


def load_radiograph(
    source: str | os.PathLike[str] | Dataset,
    *,
    limits: LimitsSettings | None = None,
    decoder: StoredValuesDecoder | None = None,
) -> Radiograph:
    """Decode a single-frame greyscale radiograph.

    Parameters
    ----------
    source : str, os.PathLike or pydicom.dataset.Dataset
        Path of a DICOM file, or a dataset (which is not modified).
    limits : LimitsSettings, optional
        File and image size limits, checked before decoding; the defaults of ``[limits]`` when
        None.
    decoder : StoredValuesDecoder, optional
        Decodes the file's compressed pixel data (e.g. a
        :class:`~osteonode.imaging.isolation.DecoderProcess`); None decodes in this process, as
        is always done for uncompressed pixel data. Requires `source` to be a path.

    Returns
    -------
    Radiograph
        The decoded image with its spacing, header facts and UIDs.

    Raises
    ------
    ImageError
        When the file is unreadable, has no pixel data, is multi-frame, colour or
        palette colour, has an invalid image header, pixel data shorter than the
        header says, exceeds the limits, or when no decoder can decode it (or the
        isolated decoder crashed or timed out on it).
    TypeError
        When `source` is neither a path nor a Dataset.
    ValueError
        When a `decoder` is given with a Dataset `source`.
    """
    limits = LimitsSettings() if limits is None else limits
    if not isinstance(limits, LimitsSettings):
        raise TypeError(f"limits must be LimitsSettings, not {type(limits).__name__}")
    if decoder is not None and isinstance(source, Dataset):
        raise ValueError("an isolated decoder reads the file itself: give a path, not a Dataset")
    if not isinstance(source, Dataset):
        _check_file_size(source, limits)
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
    _check_image_size(dataset, limits)
    if decoder is None or _is_uncompressed(dataset):
        # Uncompressed pixel data is read with numpy, no native decoder: nothing to isolate.
        stored, plugin = decode_stored_values(dataset)
    else:
        stored, plugin = decoder.decode(source)  # type: ignore[arg-type]  # a path, checked above
        if stored.shape != (dataset.Rows, dataset.Columns):
            raise ImageError(
                ImageErrorReason.DECODER_FAILURE,
                f"decoded shape {stored.shape} is not Rows x Columns ({dataset.Rows}, {dataset.Columns})",
            )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below, with the reason
        pixels, reflection = _to_attenuation(stored, dataset, photometric)
    if not np.isfinite(pixels).all():
        raise ImageError(
            ImageErrorReason.INVALID_HEADER,
            "the Modality LUT / Rescale gives values that are not finite numbers "
            f"(Rescale Slope {dataset.get('RescaleSlope')!r}, Intercept {dataset.get('RescaleIntercept')!r})",
        )
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
        decoder=plugin,
        photometric=photometric.value,
        spacing_source=spacing_source.value,
    )
    return radiograph


#: Values longer than this are read from the file only when used: the pixel data is not read at
#: all when an isolated decoder decodes it.
_DEFER_SIZE = "256 KB"


def _is_uncompressed(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax or not UID(syntax).is_transfer_syntax:
        return False
    return not UID(syntax).is_compressed


def _check_file_size(source: str | os.PathLike[str], limits: LimitsSettings) -> None:
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or a pydicom Dataset, not {type(source).__name__}")
    try:
        size = os.stat(source).st_size
    except OSError as exc:
        raise ImageError(
            ImageErrorReason.UNREADABLE_FILE, f"cannot read {os.fspath(source)!r}: {exc}"
        ) from exc
    if size > limits.max_file_mb * 1024 * 1024:
        raise ImageError(
            ImageErrorReason.TOO_LARGE,
            f"the file has {size / 1024 / 1024:.1f} MB; limits.max_file_mb is {limits.max_file_mb:g}",
        )


def _check_image_size(ds: Dataset, limits: LimitsSettings) -> None:
    """Refuse an image whose declared size exceeds the limits (decoding costs ~14 bytes a pixel)."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows > limits.max_rows or columns > limits.max_columns:
        raise ImageError(
            ImageErrorReason.TOO_LARGE,
            f"the header declares {rows} x {columns} pixels; limits.max_rows is {limits.max_rows} "
            f"and limits.max_columns {limits.max_columns}",
        )
    if rows * columns > limits.max_pixels:
        raise ImageError(
            ImageErrorReason.TOO_LARGE,
            f"the header declares {rows} x {columns} = {rows * columns} pixels; "
            f"limits.max_pixels is {limits.max_pixels}",
        )


def _read(source: str | os.PathLike[str] | Dataset) -> Dataset:
    if isinstance(source, Dataset):
        return source
    try:
        return pydicom.dcmread(source, defer_size=_DEFER_SIZE)
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


def decode_stored_values(ds: Dataset) -> tuple[np.ndarray, str]:
    """Decode the stored values, trying the fastest plugin for the transfer syntax first.

    This is the one step that runs native decoder code; the worker runs it in a
    :class:`~osteonode.imaging.isolation.DecoderProcess`.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A dataset whose header :func:`load_radiograph` has checked.

    Returns
    -------
    (numpy.ndarray, str)
        The stored values (Rows x Columns) and the name of the plugin that decoded them.

    Raises
    ------
    ImageError
        ``invalid_header``, ``truncated_pixel_data`` or ``decoder_failure``.
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
        preferred = FASTEST_DECODING_PLUGINS.get(syntax, PREFERRED_DECODING_PLUGINS)
        plugins = [p for p in preferred if p in available]
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
        except BaseException as exc:  # decoders raise anything, Rust panics included
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
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
        modality = _modality_values(stored, ds)
    except Exception as exc:  # a malformed Modality LUT or rescale is a header fault
        raise ImageError(
            ImageErrorReason.INVALID_HEADER,
            f"the Modality LUT / Rescale cannot be applied: {type(exc).__name__}: {exc}",
        ) from exc
    if photometric is PhotometricInterpretation.MONOCHROME2:
        return modality, None
    reflection = _modality_range_sum(ds)
    np.subtract(np.float32(reflection), modality, out=modality)
    return modality, reflection


def _modality_values(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """The Modality LUT's output as a new float32 array.

    A linear rescale is computed in float32, in place, rather than through pydicom's float64 copy
    of the whole film (twice the memory traffic for the same float32 result: stored values up to
    16 bits are exact in float32); a Modality LUT table goes through pydicom.
    """
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    values = stored.astype(np.float32)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        values *= np.float32(ds.RescaleSlope)
        values += np.float32(ds.RescaleIntercept)
    return values


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
    value = read_value(ds, keyword)
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
    value = read_value(ds, keyword)
    try:
        number = float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and _is_positive(number) else None


def _is_positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _uids(ds: Dataset) -> SourceUids:
    def uid(keyword: str) -> str | None:
        value = read_value(ds, keyword)
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
