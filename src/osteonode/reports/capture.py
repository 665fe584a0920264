"""The Secondary Capture of a result: the radiograph as a reader sees it, with the answer burnt in.

Viewers show an SR's numbers and outlines but seldom its coded answers, so the category and the
key numbers also go into an RGB Secondary Capture: the source windowed for display, the region
outlines and the Grad-CAM heat-map on the film, and below it, in an added margin that covers
nothing, the answer, the key numbers and a legend that says what the colours mean. The film keeps
the source's pixel grid at the top left, so its coordinates are the source's. It joins the
source's patient and study in its own series and points back at the source image.
"""

from __future__ import annotations

import copy
import re

import highdicom as hd
import numpy as np
import structlog
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from osteonode.bone import Laterality
from osteonode.imaging.overlay import blend_heatmap, compose_capture
from osteonode.imaging.pixels import Radiograph, SpacingSource, display_window
from osteonode.pipelines.base import Finding, Result
from osteonode.reports.device import MANUFACTURER, MODEL_NAME, DeviceInfo
from osteonode.reports.series import series_date_time
from osteonode.reports.sr import ReportError
from osteonode.reports.text import banner_lines, heatmap_legend, series_description
from osteonode.reports.uids import OutputKind, output_uids

__all__ = [
    "EXCLUDED_OUTLINE",
    "INCLUDED_OUTLINE",
    "SC_SERIES_NUMBER",
    "build_secondary_capture",
    "draw_outlines",
    "render_result",
]

log = structlog.get_logger(__name__)

#: Series Number of the node's Secondary Capture series.
SC_SERIES_NUMBER = 9902
#: Grey level of the outline of a site that counts towards the result, and of one that does not
#: (excluded or not evaluable).
INCLUDED_OUTLINE = 255
EXCLUDED_OUTLINE = 0

#: A Patient Orientation value: one or more of the biped direction letters (PS3.3 C.7.6.1.1.1).
_ORIENTATION_VALUE = re.compile(r"^[APRLHF]+$")
#: The values General Series Laterality may take, and the value of each side.
_SERIES_LATERALITIES = frozenset({"R", "L"})
_LATERALITY_VALUES = {Laterality.RIGHT: "R", Laterality.LEFT: "L"}


def build_secondary_capture(
    result: Result, radiograph: Radiograph, *, device: DeviceInfo
) -> Dataset:
    """Render a result onto its radiograph as an RGB Secondary Capture.

    Parameters
    ----------
    result : Result
        The analysed radiograph's result; ``result.heatmap`` None gives no colour.
    radiograph : Radiograph
        The decoded source image the result was computed from.
    device : DeviceInfo
        The node, as the equipment that made the image.

    Returns
    -------
    pydicom.dataset.Dataset
        The Secondary Capture (a highdicom ``SCImage``): the source's pixel grid at the top left
        with the text margin below, and the source's patient and study.

    Raises
    ------
    TypeError
        When an argument has the wrong type.
    ReportError
        When the radiograph is not the image the result describes.
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result, not {type(result).__name__}")
    if not isinstance(radiograph, Radiograph):
        raise TypeError(f"radiograph must be a Radiograph, not {type(radiograph).__name__}")
    if not isinstance(device, DeviceInfo):
        raise TypeError(f"device must be a DeviceInfo, not {type(device).__name__}")
    rgb = render_result(result, radiograph)
    header = radiograph.header
    source_orientation = _source_orientation(header)
    uids = output_uids(result.source.sop_instance_uid, result.model, OutputKind.SECONDARY_CAPTURE)
    spacing = (
        radiograph.spacing_mm if radiograph.spacing_source is SpacingSource.PIXEL_SPACING else None
    )
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=uids.series_instance_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        pixel_spacing=spacing,
        # highdicom accepts single letters only and insists on a value; the real one is set below.
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=series_description(result.model, "SC"),
        manufacturer_model_name=MODEL_NAME,
        software_versions=device.software_version,
    )
    # Patient, General Study, Patient Study: everything the source says, not only the Type 1/2.
    # highdicom adds the very element objects it is given, so it gets a copy of the header.
    image.copy_patient_and_study_information(copy.deepcopy(header))
    # General Series: Laterality is Type 2C and dciodvfy wants it whenever no Image Laterality
    # is present (the SC IOD has none), so it is always sent: the one side the source or the
    # result's findings name, else empty (both sides, an unpaired part, or unknown).
    image.Laterality = _series_laterality(header, result.findings)
    # General Series: a date and time, or PACS file the series under an unknown date.
    image.SeriesDate, image.SeriesTime = series_date_time(image)
    # General Image: Patient Orientation is Type 2, so an unknown orientation is left empty
    # rather than guessed; compound values such as "FL" are carried over as they are.
    image.PatientOrientation = list(source_orientation) if source_orientation else None
    image.BurnedInAnnotation = "YES"
    image.DerivationDescription = (
        "Source film with result outlines and heat-map; text and legend in a margin below it"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = result.source.sop_class_uid
    reference.ReferencedSOPInstanceUID = result.source.sop_instance_uid
    image.SourceImageSequence = [reference]
    log.info(
        "secondary_capture_built",
        sop_instance_uid=uids.sop_instance_uid,
        source_sop_instance_uid=result.source.sop_instance_uid,
        rows=int(image.Rows),
        columns=int(image.Columns),
        heatmap=result.heatmap is not None,
    )
    return image


def render_result(result: Result, radiograph: Radiograph) -> np.ndarray:
    """The picture a reader sees: the windowed film with outlines and heat-map, text margin below.

    Parameters
    ----------
    result : Result
        The result to draw.
    radiograph : Radiograph
        The decoded source image the result was computed from.

    Returns
    -------
    numpy.ndarray
        RGB ``uint8`` image: the film at rows 0..H-1, columns 0..W-1, the margin below.

    Raises
    ------
    ReportError
        When the radiograph is not the image the result describes.
    """
    _check_radiograph(result, radiograph)
    grey = draw_outlines(display_window(radiograph), result.findings)
    film = blend_heatmap(grey, result.heatmap)
    return compose_capture(film, banner_lines(result), heatmap_legend(result))


def _check_radiograph(result: Result, radiograph: Radiograph) -> None:
    if radiograph.uids.sop_instance_uid != result.source.sop_instance_uid:
        raise ReportError(
            f"the radiograph {radiograph.uids.sop_instance_uid} is not the image the result"
            f" describes ({result.source.sop_instance_uid})"
        )
    if radiograph.shape != (result.source.rows, result.source.columns):
        raise ReportError(
            f"the radiograph is {radiograph.shape} pixels but the result describes"
            f" {(result.source.rows, result.source.columns)}"
        )
    if not radiograph.uids.study_instance_uid:
        raise ReportError("the radiograph has no Study Instance UID")


def _source_orientation(header: Dataset) -> tuple[str, str] | None:
    """The source's Patient Orientation when it holds two valid values, else None."""
    value = header.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    row, column = (str(part).strip().upper() for part in value)
    if _ORIENTATION_VALUE.match(row) and _ORIENTATION_VALUE.match(column):
        return row, column
    return None


def _series_laterality(header: Dataset, findings: tuple[Finding, ...]) -> str | None:
    """R or L from the source's (Image) Laterality, else the one side all sided findings share.

    None when neither names exactly one side; B and U are not series values.
    """
    for keyword in ("Laterality", "ImageLaterality"):
        value = str(header.get(keyword) or "").strip().upper()
        if value in _SERIES_LATERALITIES:
            return value
    sides = {finding.laterality for finding in findings if finding.laterality is not None}
    if len(sides) == 1:
        return _LATERALITY_VALUES[sides.pop()]
    return None


def draw_outlines(grey: np.ndarray, findings: tuple[Finding, ...]) -> np.ndarray:
    """Draw each finding's region, labelled with its name, onto a display image.

    Sites that count towards the result are outlined white, excluded or not-evaluable ones
    black, so the reader sees at once which vertebrae or sides the answer rests on.

    Parameters
    ----------
    grey : numpy.ndarray
        uint8 (H, W) display image; not modified.
    findings : tuple of Finding
        The findings; those without a region are skipped.

    Returns
    -------
    numpy.ndarray
        A uint8 (H, W) copy with the outlines and labels.

    Raises
    ------
    TypeError
        When `grey` is not a 2-D uint8 array.
    """
    if not isinstance(grey, np.ndarray) or grey.dtype != np.uint8 or grey.ndim != 2:
        raise TypeError("grey must be a 2-D uint8 numpy array")
    image = Image.fromarray(grey, mode="L")
    draw = ImageDraw.Draw(image)
    short_side = min(grey.shape)
    width = max(1, short_side // 256)
    font = ImageFont.load_default(size=max(12, short_side // 40))
    for finding in findings:
        if finding.region is None:
            continue
        colour = INCLUDED_OUTLINE if finding.included else EXCLUDED_OUTLINE
        points = [(float(column), float(row)) for column, row in finding.region.points]
        if finding.region.closed:
            draw.polygon(points, outline=colour, width=width)
        else:
            draw.line(points, fill=colour, width=width)
        left = min(column for column, _ in points)
        top = min(row for _, row in points)
        draw.text(
            (left + 2 * width, top + 2 * width),
            finding.name,
            fill=colour,
            font=font,
            stroke_width=1,
            stroke_fill=EXCLUDED_OUTLINE if colour == INCLUDED_OUTLINE else INCLUDED_OUTLINE,
        )
    return np.asarray(image, dtype=np.uint8)
