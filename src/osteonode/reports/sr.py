"""The Structured Report of a result: TID 1500 Imaging Measurement Report built with highdicom.

Layout of the document (PS3.16 template numbers in brackets)::

    Imaging Measurement Report [1500]                 PRELIMINARY, UNVERIFIED
      language, device observer [1004]: node name, UID, manufacturer, model + version
      procedure reported: XR of the film's body region (LOINC), from the result's site
      Image Library [1600]: the source radiograph
      Imaging Measurements
        Measurement Group "Overall result" [1410, outlined as the whole film]: body region, classification (or, for a
            two-class method's "not osteoporosis", osteoporosis absent), film T-score,
            not-evaluable reason, intended-use notes
        one Measurement Group per Finding [1410; the whole film when it has no outline]:
            tracking identifier and UID (the film's UID when outlined as the whole film),
            algorithm [4019: name, version, calibration and the decision threshold], finding
            site (+ laterality), BMD (0.001 g/cm2) and T-score (0.1) with method "Estimated",
            probability as Certainty of Finding (0.1 %), classification, osteoporosis
            present/absent, outline (SCOORD POLYLINE on the source image, closed or open),
            comments: why excluded or not evaluable
      Qualitative Evaluations: Finding "<the model's disclaimer>" (synthetic or research model)

Groups outlined as the whole film share one Tracking Unique Identifier: they describe one tracked
region, the film (the text Tracking Identifier still names each finding). Viewers that track regions
draw that region once with all its values (OHIF merges groups by Tracking UID) instead of stacking one
label per group on the same spot, as they would for the stages of a whole-film classifier.

The body region comes from the result's site (``Result.site``), never from the pipeline's name,
so any configured pipeline reports correctly.

Every CONTAINER is SEPARATE, so text renderers (``dsr2html``) print each label with its value.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import structlog
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes
from pydicom.sr.coding import Code

from osteonode.config import SrStorage
from osteonode.pipelines.base import Finding, FindingSite, Region, Result
from osteonode.reports import codes
from osteonode.reports.device import MANUFACTURER, MODEL_NAME, DeviceInfo
from osteonode.reports.series import series_date_time
from osteonode.reports.text import series_description
from osteonode.reports.uids import OutputKind, output_uids, tracking_uid

__all__ = [
    "OVERALL_TRACKING_IDENTIFIER",
    "SR_SERIES_NUMBER",
    "ReportError",
    "build_structured_report",
]

log = structlog.get_logger(__name__)

#: Series Number of the node's SR series (a fixed number keeps PACS series lists tidy).
SR_SERIES_NUMBER = 9901
#: Tracking identifier of the film-level measurement group.
OVERALL_TRACKING_IDENTIFIER = "Overall result"

_STORAGE_KINDS = {
    SrStorage.COMPREHENSIVE_3D: OutputKind.COMPREHENSIVE_3D_SR,
    SrStorage.COMPREHENSIVE: OutputKind.COMPREHENSIVE_SR,
}
_STORAGE_CLASSES: dict[SrStorage, type[hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR]] = {
    SrStorage.COMPREHENSIVE_3D: hd.sr.Comprehensive3DSR,
    SrStorage.COMPREHENSIVE: hd.sr.ComprehensiveSR,
}

#: Patient and study attributes that highdicom reads from the evidence; Type 2, so a source
#: without them still makes a valid SR with them present and empty.
_TYPE_2_FROM_EVIDENCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
#: Decimal places of the reported values: what the method can tell, not float noise.
BMD_DECIMALS = 3
T_SCORE_DECIMALS = 1
CERTAINTY_DECIMALS = 1
#: The model-card parameter that says on which DXA scale BMD is reported (zoo.ModelCard.identity).
_CALIBRATION_PARAMETER = "calibration"


class ReportError(ValueError):
    """A result and a source image that cannot make a report together."""


def build_structured_report(
    result: Result,
    source: Dataset,
    *,
    storage: SrStorage = SrStorage.COMPREHENSIVE_3D,
    device: DeviceInfo,
) -> Dataset:
    """Encode a result as a TID 1500 Imaging Measurement Report.

    Parameters
    ----------
    result : Result
        The analysed radiograph.
    source : pydicom.dataset.Dataset
        The analysed image (or its header without pixel data); patient and study are copied
        from it, and it is the Image Library entry that regions refer to.
    storage : SrStorage
        Comprehensive 3D SR (default) or Comprehensive SR, for PACS that reject 3D.
    device : DeviceInfo
        The node, as device observer and equipment.

    Returns
    -------
    pydicom.dataset.Dataset
        The SR document (a highdicom SR object), ready to be written or sent.

    Raises
    ------
    TypeError
        When an argument has the wrong type.
    ReportError
        When `source` is not the image the result describes, or lacks a UID the report needs.
    ValueError
        When a finding carries a measurement its site has no concept for (BMD of the chest).
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result, not {type(result).__name__}")
    if not isinstance(source, Dataset):
        raise TypeError(f"source must be a pydicom Dataset, not {type(source).__name__}")
    if not isinstance(device, DeviceInfo):
        raise TypeError(f"device must be a DeviceInfo, not {type(device).__name__}")
    storage = SrStorage(storage)
    _check_source(result, source)

    groups = [_overall_group(result)]
    groups += [_finding_group(result, finding) for finding in result.findings]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(device),
        procedure_reported=codes.procedure_code(result.site),
        imaging_measurements=groups,
        referenced_images=[_library_view(source)],
    )
    _append_disclaimer(report[0], result)
    uids = output_uids(result.source.sop_instance_uid, result.model, _STORAGE_KINDS[storage])
    document = _STORAGE_CLASSES[storage](
        evidence=[_evidence_view(source)],
        content=report[0],
        series_instance_uid=uids.series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=_is_complete(result),
        is_final=False,
        is_verified=False,
        series_description=series_description(result.model, "SR"),
        manufacturer_model_name=MODEL_NAME,
        software_versions=device.software_version,
    )
    _make_containers_separate(document)
    # General Series: a date and time, or PACS file the series under an unknown date.
    document.SeriesDate, document.SeriesTime = series_date_time(document)
    log.info(
        "structured_report_built",
        sop_instance_uid=uids.sop_instance_uid,
        source_sop_instance_uid=result.source.sop_instance_uid,
        storage=storage.value,
        groups=len(groups),
        evaluable=result.evaluable,
    )
    return document


def _check_source(result: Result, source: Dataset) -> None:
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not source.get(keyword):
            raise ReportError(f"the source image has no {keyword}")
    if str(source.SOPInstanceUID) != result.source.sop_instance_uid:
        raise ReportError(
            f"the source image {source.SOPInstanceUID} is not the image the result describes"
            f" ({result.source.sop_instance_uid})"
        )


def _is_complete(result: Result) -> bool:
    """COMPLETE only when the film and every site in it could be assessed."""
    return result.evaluable and all(finding.evaluable for finding in result.findings)


def _evidence_view(source: Dataset) -> Dataset:
    """The source's attributes with the Type 2 patient/study ones present (empty if unknown)."""
    view = Dataset()
    for element in source:
        if element.tag.group != 0x7FE0:
            # highdicom adds the very element objects it is given; the SR must not share them.
            view.add(copy.deepcopy(element))
    for keyword in _TYPE_2_FROM_EVIDENCE:
        if keyword not in view:
            setattr(view, keyword, None)
    return view


def _library_view(source: Dataset) -> Dataset:
    """What the Image Library entry describes of the source.

    highdicom describes a projection radiograph (TID 1603: patient orientation, pixel spacing)
    only when both Patient Orientation and Imager Pixel Spacing are known, and fails otherwise;
    those descriptors are optional, so a source lacking either gets the TID 1602 entry alone
    (modality, rows, columns), which an empty Modality in this view selects.
    """
    view = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "FrameOfReferenceUID"):
        if keyword in source:
            setattr(view, keyword, source.data_element(keyword).value)
    orientation = source.get("PatientOrientation")
    spacing = source.get("ImagerPixelSpacing")
    complete = orientation is not None and len(orientation) == 2 and spacing is not None
    if complete:
        view.PatientOrientation = orientation
        view.ImagerPixelSpacing = spacing
        view.Modality = source.get("Modality", "")
    else:
        view.Modality = ""
    return view


def _observation_context(device: DeviceInfo) -> hd.sr.ObservationContext:
    attributes = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device.uid,
        name=device.name,
        manufacturer_name=MANUFACTURER,
        model_name=device.observer_model_name,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dicom_codes.DCM.Device,
            observer_identifying_attributes=attributes,
        )
    )


def _algorithm(result: Result, finding: Finding | None) -> hd.sr.AlgorithmIdentification:
    """TID 4019: the model's name and version, and the parameters a reader needs to weigh the
    value (the DXA scale, the decision threshold); the rest of the model card (network sizes,
    training settings) is found by name and version, not repeated in every group."""
    parameters = [
        f"{key}: {value}" for key, value in result.model.parameters if key == _CALIBRATION_PARAMETER
    ]
    if finding is not None and finding.threshold is not None:
        parameters.append(f"decision threshold: {finding.threshold:g}")
    if result.disclaimer:
        parameters.append(result.disclaimer)
    return hd.sr.AlgorithmIdentification(
        name=result.model.name,
        version=result.model.version,
        parameters=parameters or None,
    )


def _whole_film(result: Result) -> Region:
    """The outline of the whole source image: the region of a finding about the film as such.

    Every measurement group carries a region (TID 1410), because viewers that draw TID 1500
    regions (OHIF) assume each group has one and fail on a group without.
    """
    return Region.box(0.0, 0.0, float(result.source.columns), float(result.source.rows))


def _tracking_uid(result: Result, outlined_finding: str | None) -> str:
    """The Tracking Unique Identifier of a finding with its own outline, or (None) of the film."""
    return tracking_uid(
        result.source.sop_instance_uid,
        result.model,
        OVERALL_TRACKING_IDENTIFIER if outlined_finding is None else outlined_finding,
    )


def _image_region(result: Result, region: Region) -> hd.sr.ImageRegion:
    """A 2-D SCOORD POLYLINE; closed outlines repeat the first point as the last.

    SCOORD has no POLYGON graphic type (only SCOORD3D does): a closed polyline is the 2-D
    polygon (PS3.3 C.18.6.1.2).
    """
    points = list(region.points)
    if region.closed:
        points.append(points[0])
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(points, dtype=np.float64),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=result.source.sop_class_uid,
            referenced_sop_instance_uid=result.source.sop_instance_uid,
        ),
    )


def _estimate(name: Code, value: float, unit: Code, decimals: int) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=name, value=_rounded(value, decimals), unit=unit, method=codes.ESTIMATED
    )


def _rounded(value: float, decimals: int) -> float:
    """`value` to `decimals` places, without a negative zero."""
    return round(value, decimals) + 0.0


def _t_score(site: FindingSite, value: float) -> hd.sr.Measurement:
    return _estimate(codes.t_score_concept(site), value, codes.T_SCORE_UNIT, T_SCORE_DECIMALS)


def _measurements(finding: Finding) -> list[hd.sr.Measurement]:
    measurements = []
    if finding.bmd_g_cm2 is not None:
        measurements.append(
            _estimate(
                codes.bmd_concept(finding.site), finding.bmd_g_cm2, codes.G_PER_CM2, BMD_DECIMALS
            )
        )
    if finding.t_score is not None:
        measurements.append(_t_score(finding.site, finding.t_score))
    if finding.probability is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.CERTAINTY_OF_FINDING,
                value=_rounded(100.0 * finding.probability, CERTAINTY_DECIMALS),
                unit=codes.PERCENT,
            )
        )
    return measurements


def _evaluations(finding: Finding) -> list[hd.sr.QualitativeEvaluation]:
    pairs = []
    if not finding.evaluable:
        pairs.append((codes.CLASSIFICATION, codes.INDETERMINATE))
    elif finding.category is not None:
        pairs.append(codes.category_evaluation(finding.category))
    if finding.osteoporosis_present is not None:
        presence = (
            codes.OSTEOPOROSIS,
            codes.PRESENT if finding.osteoporosis_present else codes.ABSENT,
        )
        # "Not osteoporosis" is already "osteoporosis absent"; say it once.
        if presence not in pairs:
            pairs.append(presence)
    return [hd.sr.QualitativeEvaluation(name, value) for name, value in pairs]


def _comments(finding: Finding) -> list[str]:
    if not finding.evaluable:
        return [f"Not evaluable: {finding.reason}"]
    if not finding.included:
        return [f"Excluded from the result: {finding.reason or 'no reason given'}"]
    return []


def _finding_group(
    result: Result, finding: Finding
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    site = hd.sr.FindingSite(
        anatomic_location=codes.finding_site_code(finding.site),
        laterality=None
        if finding.laterality is None
        else codes.laterality_code(finding.laterality),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_tracking_uid(result, finding.name if finding.region else None),
            identifier=finding.name,
        ),
        referenced_region=_image_region(result, finding.region or _whole_film(result)),
        algorithm_id=_algorithm(result, finding),
        finding_sites=[site],
        measurements=_measurements(finding) or None,
        qualitative_evaluations=_evaluations(finding) or None,
    )
    _append_comments(group, _comments(finding))
    return group


def _overall_group(result: Result) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """The film's answer, outlined as the whole film, so a reader finds it first."""
    if any(finding.name == OVERALL_TRACKING_IDENTIFIER for finding in result.findings):
        raise ReportError(f"a finding may not be named {OVERALL_TRACKING_IDENTIFIER!r}")
    answer = (
        (codes.CLASSIFICATION, codes.INDETERMINATE)
        if result.category is None
        else codes.category_evaluation(result.category)
    )
    measurements = None
    if result.t_score is not None:
        measurements = [_t_score(result.site, result.t_score)]
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_tracking_uid(result, None), identifier=OVERALL_TRACKING_IDENTIFIER
        ),
        referenced_region=_image_region(result, _whole_film(result)),
        algorithm_id=_algorithm(result, None),
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.finding_site_code(result.site))],
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(*answer)],
    )
    comments = [] if result.evaluable else [f"Not evaluable: {result.reason}"]
    _append_comments(group, comments + list(result.notes))
    return group


def _append_disclaimer(root: Dataset, result: Result) -> None:
    """State the model's disclaimer as a finding of the whole report (TID 1500 root-level
    Qualitative Evaluations), at the document's first level beside the measurements, not only
    inside each group's algorithm parameters."""
    if result.disclaimer is None:
        return
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = [
        hd.sr.TextContentItem(
            name=codes.FINDING,
            value=result.disclaimer,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    ]
    root.ContentSequence.append(container)


def _append_comments(group: Sequence[Dataset], comments: Sequence[str]) -> None:
    container = group[0]
    for comment in comments:
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=comment,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )


def _make_containers_separate(dataset: Dataset) -> None:
    """Set ContinuityOfContent SEPARATE on the root and on every nested CONTAINER."""
    if dataset.get("ValueType") == "CONTAINER":
        dataset.ContinuityOfContent = "SEPARATE"
    for item in dataset.get("ContentSequence", []):
        _make_containers_separate(item)
