"""The Structured Report: valid DICOM, readable by dcmtk and highdicom, and true to the Result."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from fixtures.validators import dciodvfy_errors, rendered_text, tool, write
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dictionary
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage
from reports_cases import CASES, DEVICE, Case

from osteonode.config import SrStorage
from osteonode.pipelines.base import Finding, FindingSite, Result
from osteonode.reports import ReportError, build_structured_report, codes
from osteonode.reports.sr import OVERALL_TRACKING_IDENTIFIER
from osteonode.reports.uids import tracking_uid

Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


@pytest.fixture(scope="module")
def reports(
    cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, SrStorage], Path]:
    """Every case as both SR storage classes, written to files."""
    directory = tmp_path_factory.mktemp("sr")
    return {
        (name, storage): write(
            build_structured_report(case.result, case.source, storage=storage, device=DEVICE),
            directory / f"{name}-{storage.value}.dcm",
        )
        for name, case in cases.items()
        for storage in SrStorage
    }


def _groups(path: Path) -> dict[str, Group]:
    document = hd.sr.srread(path)
    content = document.content
    found = [*content.get_planar_roi_measurement_groups(), *content.get_image_measurement_groups()]
    return {group.tracking_identifier: group for group in found}


def _value(group: Group, name: object) -> float:
    (measurement,) = group.get_measurements(name=name)
    return float(measurement.value)


def _evaluation(group: Group, name: object) -> hd.sr.CodedConcept:
    (evaluation,) = group.get_qualitative_evaluations(name=name)
    return evaluation.value


def _comments(group: Group) -> list[str]:
    return [item.value for item in group[0].ContentSequence if item.name == codes.COMMENT]


@pytest.mark.parametrize("storage", list(SrStorage))
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_report_passes_dciodvfy(reports: dict, name: str, storage: SrStorage) -> None:
    assert dciodvfy_errors(reports[(name, storage)]) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_dsrdump_reads_every_report(reports: dict, name: str) -> None:
    completed = subprocess.run(
        [tool("dsrdump"), str(reports[(name, SrStorage.COMPREHENSIVE_3D)])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Imaging Measurement Report" in completed.stdout
    assert "Error" not in completed.stderr


def test_rendered_lumbar_report_shows_each_label_beside_its_value(reports: dict) -> None:
    text = rendered_text(reports[("lumbar", SrStorage.COMPREHENSIVE_3D)])
    assert 'Tracking Identifier = "L1"' in text
    assert "Finding Site = L1 vertebra (66794005, SCT)" in text
    assert re.search(r"DXA Lumbar spine \[Mass/Area\] Bone density: 0\.812 g/cm2", text)
    assert re.search(r"DXA Lumbar spine \[T-score\] Bone density: -2\.1 \{T-score\}", text)
    assert "Measurement Method = Estimated (414135002, SCT)" in text
    assert "Classification (attribute): Osteoporosis (64859006, SCT)" in text
    assert "Classification (attribute): Osteopenia (312894000, SCT)" in text
    assert "Comment: Excluded from the result: T-score differs by more than 1.0" in text
    assert "PRELIMINARY" in text and "UNVERIFIED" in text
    assert 'Patient Orientation Row = "L"' in text  # TID 1603 descriptors of a DX source


def test_image_library_of_a_source_without_orientation_has_the_basic_entry(reports: dict) -> None:
    text = rendered_text(reports[("chest", SrStorage.COMPREHENSIVE_3D)])
    assert "Modality = Computed Radiography (CR, DCM)" in text
    assert "Pixel Data Rows = 320" in text
    assert "Patient Orientation Row" not in text


def test_rendered_chest_and_hip_reports_show_probabilities_and_sides(reports: dict) -> None:
    chest = rendered_text(reports[("chest", SrStorage.COMPREHENSIVE)])
    assert re.search(
        r'Tracking Identifier = "Stage 1: osteoporosis".*?Certainty of Finding: 31(\.0)? %', chest
    )
    assert "Osteoporosis: Absent (272519000, SCT)" in chest
    assert 'Algorithm Parameters = "decision threshold: 0.5"' in chest
    hip = rendered_text(reports[("hip", SrStorage.COMPREHENSIVE_3D)])
    assert "Laterality = Right (24028007, SCT)" in hip
    assert "Laterality = Left (7771000, SCT)" in hip
    assert "Osteoporosis: Present (52101004, SCT)" in hip
    assert "Comment: Not evaluable: hip prosthesis" in hip


@pytest.mark.parametrize("storage", list(SrStorage))
def test_lumbar_round_trip_gives_back_numbers_codes_and_outlines(
    cases: dict[str, Case], reports: dict, storage: SrStorage
) -> None:
    result = cases["lumbar"].result
    groups = _groups(reports[("lumbar", storage)])
    assert set(groups) == {OVERALL_TRACKING_IDENTIFIER, *(f.name for f in result.findings)}
    for finding in result.findings:
        group = groups[finding.name]
        assert group.tracking_uid == tracking_uid(
            result.source.sop_instance_uid, result.model, finding.name
        )
        (site,) = group.finding_sites
        assert site.value == codes.finding_site_code(finding.site)
        assert _value(group, codes.bmd_concept(finding.site)) == pytest.approx(finding.bmd_g_cm2)
        assert _value(group, codes.t_score_concept(finding.site)) == pytest.approx(finding.t_score)
        for measurement in group.get_measurements():
            assert measurement.method == codes.ESTIMATED
        assert _evaluation(group, codes.CLASSIFICATION) == codes.category_code(finding.category)
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = np.asarray(finding.region.points)
        if finding.region.closed:
            points = np.vstack([points, points[:1]])
        np.testing.assert_allclose(region.value, points, atol=1e-4)
        assert (
            region.ContentSequence[0].referenced_sop_instance_uid == result.source.sop_instance_uid
        )
        algorithm = group[0].ContentSequence
        names = [item.value for item in algorithm if item.name == dictionary.DCM.AlgorithmName]
        assert names == [result.model.name]
    assert _comments(groups["L3"]) == [f"Excluded from the result: {result.findings[2].reason}"]
    overall = groups[OVERALL_TRACKING_IDENTIFIER]
    assert _value(overall, codes.T_SCORE_LUMBAR_SPINE) == pytest.approx(-2.5)
    assert _evaluation(overall, codes.CLASSIFICATION) == codes.OSTEOPOROSIS
    assert _comments(overall) == list(result.notes)


def test_chest_round_trip_gives_back_probabilities_and_decisions(
    cases: dict[str, Case], reports: dict
) -> None:
    groups = _groups(reports[("chest", SrStorage.COMPREHENSIVE_3D)])
    stage1, stage2 = groups["Stage 1: osteoporosis"], groups["Stage 2: low bone mass"]
    assert _value(stage1, codes.CERTAINTY_OF_FINDING) == pytest.approx(31.0)
    (measurement,) = stage1.get_measurements()
    assert measurement.unit == codes.PERCENT
    assert _evaluation(stage1, codes.OSTEOPOROSIS) == codes.ABSENT
    assert _value(stage2, codes.CERTAINTY_OF_FINDING) == pytest.approx(72.0)
    assert _evaluation(stage2, codes.CLASSIFICATION) == codes.OSTEOPENIA
    # A classifier of the whole film is outlined as the whole film (320 x 256) on its source.
    np.testing.assert_allclose(
        stage1.roi.value, [[0, 0], [256, 0], [256, 320], [0, 320], [0, 0]]
    )
    assert stage1.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        cases["chest"].result.source.sop_instance_uid
    )
    assert (
        _evaluation(groups[OVERALL_TRACKING_IDENTIFIER], codes.CLASSIFICATION) == codes.OSTEOPENIA
    )


def test_groups_outlined_as_the_whole_film_track_one_region_and_outlined_findings_their_own(
    reports: dict,
) -> None:
    chest = _groups(reports[("chest", SrStorage.COMPREHENSIVE_3D)])
    # The film and both stages of the chest classifier: one region, so one Tracking UID (a viewer
    # draws it once with every value, not three labels on one spot) ...
    assert len({group.tracking_uid for group in chest.values()}) == 1
    stages = {"Stage 1: osteoporosis", "Stage 2: low bone mass"}
    assert set(chest) == {OVERALL_TRACKING_IDENTIFIER, *stages}
    # ... while each outlined vertebra is a region of its own, apart from the film.
    lumbar = _groups(reports[("lumbar", SrStorage.COMPREHENSIVE_3D)])
    assert len({group.tracking_uid for group in lumbar.values()}) == len(lumbar)


def test_hip_round_trip_gives_back_sides_and_the_reason_one_is_not_evaluable(reports: dict) -> None:
    groups = _groups(reports[("hip", SrStorage.COMPREHENSIVE)])
    right, left = groups["Right hip"], groups["Left hip"]
    assert right.finding_sites[0].laterality == codes.RIGHT
    assert left.finding_sites[0].laterality == codes.LEFT
    assert _evaluation(right, codes.OSTEOPOROSIS) == codes.PRESENT
    assert _value(right, codes.CERTAINTY_OF_FINDING) == pytest.approx(81.0)
    assert left.get_measurements() == []
    assert _evaluation(left, codes.CLASSIFICATION) == codes.INDETERMINATE
    assert _comments(left) == ["Not evaluable: hip prosthesis"]
    np.testing.assert_allclose(left.roi.value[0], left.roi.value[-1])


def _coded_values(ds: Dataset) -> set[str]:
    """Every code value of every CODE item in the content tree."""
    found: set[str] = set()
    for item in ds.get("ContentSequence", []):
        found.update(concept.CodeValue for concept in item.get("ConceptCodeSequence", []))
        found |= _coded_values(item)
    return found


@pytest.mark.parametrize("storage", list(SrStorage))
def test_a_hip_film_without_osteoporosis_says_osteoporosis_absent_and_claims_no_who_category(
    reports: dict, storage: SrStorage
) -> None:
    path = reports[("hip_negative", storage)]
    groups = _groups(path)
    for name in (OVERALL_TRACKING_IDENTIFIER, "Right hip", "Left hip"):
        assert _evaluation(groups[name], codes.OSTEOPOROSIS) == codes.ABSENT, name
        assert groups[name].get_qualitative_evaluations(name=codes.CLASSIFICATION) == [], name
    values = _coded_values(hd.sr.srread(path))
    assert codes.ABSENT.value in values
    assert not values & {codes.OSTEOPENIA.value, codes.NORMAL.value, codes.OSTEOPOROSIS.value}
    text = rendered_text(path)
    assert text.count("Osteoporosis: Absent (272519000, SCT)") == 3  # the film and both sides
    assert "Osteopenia" not in text and "Normal (17621005" not in text


def test_a_film_that_is_not_evaluable_says_so_and_why(
    cases: dict[str, Case], reports: dict
) -> None:
    path = reports[("not_evaluable", SrStorage.COMPREHENSIVE_3D)]
    groups = _groups(path)
    overall = groups[OVERALL_TRACKING_IDENTIFIER]
    assert _evaluation(overall, codes.CLASSIFICATION) == codes.INDETERMINATE
    assert _comments(overall) == [f"Not evaluable: {cases['not_evaluable'].result.reason}"]
    assert _comments(groups["L2"]) == ["Not evaluable: metal implant over the vertebral body"]
    document = hd.sr.srread(path)
    assert document.CompletionFlag == "PARTIAL"


def test_report_is_preliminary_unverified_and_joins_the_source_study(
    cases: dict[str, Case], reports: dict
) -> None:
    for (name, storage), path in reports.items():
        source = cases[name].source
        document = hd.sr.srread(path)
        assert document.PreliminaryFlag == "PRELIMINARY"
        assert document.VerificationFlag == "UNVERIFIED"
        assert document.PatientID == source.PatientID
        assert document.PatientName == source.PatientName
        assert document.StudyInstanceUID == source.StudyInstanceUID
        assert document.AccessionNumber == source.AccessionNumber
        assert document.SeriesInstanceUID != source.SeriesInstanceUID
        assert (
            document.SOPClassUID
            == {
                SrStorage.COMPREHENSIVE_3D: Comprehensive3DSRStorage,
                SrStorage.COMPREHENSIVE: ComprehensiveSRStorage,
            }[storage]
        )
        (study,) = document.CurrentRequestedProcedureEvidenceSequence
        (series,) = study.ReferencedSeriesSequence
        assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (
        hd.sr.srread(reports[("lumbar", SrStorage.COMPREHENSIVE_3D)]).CompletionFlag == "COMPLETE"
    )
    assert hd.sr.srread(reports[("hip", SrStorage.COMPREHENSIVE_3D)]).CompletionFlag == "PARTIAL"


def test_series_description_names_the_model_and_carries_the_disclaimer(reports: dict) -> None:
    synthetic = hd.sr.srread(reports[("lumbar", SrStorage.COMPREHENSIVE_3D)]).SeriesDescription
    research = hd.sr.srread(reports[("chest", SrStorage.COMPREHENSIVE_3D)]).SeriesDescription
    diagnostic = hd.sr.srread(reports[("hip", SrStorage.COMPREHENSIVE_3D)]).SeriesDescription
    assert "lumbar-demo 1.2.0" in synthetic and "not for diagnostic use" in synthetic.lower()
    assert "ospen-chest 0.3" in research and "not for diagnostic use" in research.lower()
    assert "hip-vgg-nl 2.0" in diagnostic and "diagnostic" not in diagnostic.lower()


def _containers(item: Dataset) -> list[Dataset]:
    found = [item] if item.get("ValueType") == "CONTAINER" else []
    for child in item.get("ContentSequence", []):
        found += _containers(child)
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_measurement_group_has_a_region_on_the_source_image(
    cases: dict[str, Case], reports: dict, name: str
) -> None:
    # OHIF assumes every TID 1500 group has a SCOORD and stops showing the report otherwise.
    content = hd.sr.srread(reports[(name, SrStorage.COMPREHENSIVE_3D)]).content
    assert not content.get_image_measurement_groups()
    groups = content.get_planar_roi_measurement_groups()
    assert len(groups) == 1 + len(cases[name].result.findings)
    for group in groups:
        (reference,) = group.roi.ContentSequence[0].ReferencedSOPSequence
        assert reference.ReferencedSOPInstanceUID == cases[name].source.SOPInstanceUID


def test_every_container_is_separate(reports: dict) -> None:
    for path in reports.values():
        containers = _containers(hd.sr.srread(path))
        assert len(containers) > 3
        assert {container.ContinuityOfContent for container in containers} == {"SEPARATE"}


def test_device_observer_names_the_node_its_uid_and_version(reports: dict) -> None:
    document = hd.sr.srread(reports[("chest", SrStorage.COMPREHENSIVE_3D)])
    (observer,) = document.content.get_observer_contexts(observer_type=dictionary.DCM.Device)
    attributes = observer.observer_identifying_attributes
    assert attributes.uid == DEVICE.uid
    assert attributes.name == DEVICE.name
    assert DEVICE.software_version in attributes.model_name
    assert document.SoftwareVersions == DEVICE.software_version


def test_rebuilding_a_report_keeps_its_uids_and_another_storage_class_changes_them(
    cases: dict[str, Case],
) -> None:
    case = cases["hip"]
    first = build_structured_report(case.result, case.source, device=DEVICE)
    again = build_structured_report(case.result, case.source, device=DEVICE)
    other = build_structured_report(
        case.result, case.source, storage=SrStorage.COMPREHENSIVE, device=DEVICE
    )
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID,
        again.SeriesInstanceUID,
    )
    assert first.SOPInstanceUID != other.SOPInstanceUID


def test_a_source_without_orientation_or_patient_details_still_makes_a_valid_report(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    case = cases["chest"]
    source = Dataset()
    source.update(case.source)
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "PixelData"):
        delattr(source, keyword)
    document = build_structured_report(case.result, source, device=DEVICE)
    for keyword in ("PatientBirthDate", "AccessionNumber"):
        assert keyword in document and not document[keyword].value
    assert dciodvfy_errors(write(document, tmp_path / "sparse.dcm")) == []


def test_a_report_for_another_image_is_refused(cases: dict[str, Case]) -> None:
    with pytest.raises(ReportError, match="not the image the result describes"):
        build_structured_report(cases["lumbar"].result, cases["chest"].source, device=DEVICE)


def test_wrong_argument_types_are_refused(cases: dict[str, Case]) -> None:
    case = cases["lumbar"]
    with pytest.raises(TypeError, match="Result"):
        build_structured_report(case.result.to_dict(), case.source, device=DEVICE)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DeviceInfo"):
        build_structured_report(case.result, case.source, device="node")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_structured_report(case.result, case.source, storage="enhanced", device=DEVICE)  # type: ignore[arg-type]


def test_a_chest_finding_with_a_bmd_is_refused(cases: dict[str, Case]) -> None:
    case = cases["chest"]
    finding = Finding("Chest BMD", FindingSite.CHEST, bmd_g_cm2=0.8)
    result: Result = dataclasses.replace(case.result, findings=(*case.result.findings, finding))
    with pytest.raises(ValueError, match="no DXA BMD concept"):
        build_structured_report(result, case.source, device=DEVICE)


def _root_items(path: Path) -> list[Dataset]:
    return list(hd.sr.srread(path).ContentSequence)


@pytest.mark.parametrize(
    ("name", "procedure"),
    [
        ("lumbar", codes.PROCEDURE_XR_LUMBAR_SPINE),
        ("not_evaluable", codes.PROCEDURE_XR_LUMBAR_SPINE),
        ("chest", codes.PROCEDURE_XR_CHEST),
        ("hip", codes.PROCEDURE_XR_HIP),
    ],
)
def test_procedure_reported_names_the_films_body_region(
    reports: dict, name: str, procedure: object
) -> None:
    (item,) = [
        item
        for item in _root_items(reports[(name, SrStorage.COMPREHENSIVE_3D)])
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"  # Procedure reported
    ]
    assert hd.sr.CodedConcept.from_dataset(item.ConceptCodeSequence[0]) == procedure


def test_body_region_comes_from_the_results_site_not_from_the_pipelines_name(
    cases: dict[str, Case],
) -> None:
    # A pipeline configured under any name (here a lumbar classifier named "lumbar-ap") reports
    # the region its result names.
    lumbar = cases["lumbar"]
    renamed = dataclasses.replace(lumbar.result, pipeline="lumbar-ap")
    text = _text_of(build_structured_report(renamed, lumbar.source, device=DEVICE))
    assert "XR Lumbar spine Views (24972-2, LN)" in text
    assert "Finding Site = Lumbar spine (122496007, SCT)" in text


def test_values_are_rounded_to_what_the_method_can_tell(cases: dict[str, Case]) -> None:
    chest = cases["chest"]
    first, second = chest.result.findings
    noisy = dataclasses.replace(
        chest.result,
        findings=(dataclasses.replace(first, probability=0.499975949525833), second),
    )
    text = _text_of(build_structured_report(noisy, chest.source, device=DEVICE))
    assert re.search(r"Certainty of Finding: 50(\.0)? %", text)
    assert "49.99" not in text
    lumbar = cases["lumbar"]
    l1, *rest = lumbar.result.findings
    noisy = dataclasses.replace(
        lumbar.result, findings=(dataclasses.replace(l1, bmd_g_cm2=0.81234567, t_score=-2.0499),
                                 *rest)
    )
    groups = _groups_of(build_structured_report(noisy, lumbar.source, device=DEVICE))
    assert _value(groups["L1"], codes.BMD_LUMBAR_SPINE) == 0.812
    assert _value(groups["L1"], codes.T_SCORE_LUMBAR_SPINE) == -2.0


def test_a_synthetic_models_disclaimer_is_a_finding_of_the_whole_report(reports: dict) -> None:
    (container,) = [
        item
        for item in _root_items(reports[("lumbar", SrStorage.COMPREHENSIVE_3D)])
        if item.ValueType == "CONTAINER"
        and item.ConceptNameCodeSequence[0].CodeValue == codes.QUALITATIVE_EVALUATIONS.value
    ]
    (finding,) = container.ContentSequence
    assert finding.ConceptNameCodeSequence[0].CodeValue == codes.FINDING.value
    assert finding.TextValue == "Synthetic demonstration model - not for diagnostic use"
    # A model cleared for diagnostic use has no disclaimer to state.
    hip = [item.ValueType for item in _root_items(reports[("hip", SrStorage.COMPREHENSIVE_3D)])]
    assert hip.count("CONTAINER") == 2  # Image Library, Imaging Measurements


def test_algorithm_parameters_are_the_scale_and_threshold_not_training_settings(
    cases: dict[str, Case],
) -> None:
    hip = cases["hip"]
    model = dataclasses.replace(
        hip.result.model,
        parameters=(("calibration", "hologic"), ("learning_rate", "0.001"), ("crop_size", "128")),
    )
    result = dataclasses.replace(hip.result, model=model)
    text = _text_of(build_structured_report(result, hip.source, device=DEVICE))
    assert 'Algorithm Parameters = "calibration: hologic"' in text
    assert 'Algorithm Parameters = "decision threshold: 0.5"' in text
    assert "learning_rate" not in text and "crop_size" not in text
    assert 'Algorithm Name = "hip-vgg-nl"' in text and 'Algorithm Version = "2.0"' in text


def test_report_series_has_a_date_and_time(reports: dict) -> None:
    for path in reports.values():
        document = hd.sr.srread(path)
        assert (document.SeriesDate, document.SeriesTime) == (
            document.ContentDate,
            document.ContentTime,
        )


def _text_of(document: Dataset) -> str:
    path = Path(tempfile.mkdtemp()) / "report.dcm"
    return rendered_text(write(document, path))


def _groups_of(document: Dataset) -> dict[str, Group]:
    path = Path(tempfile.mkdtemp()) / "report.dcm"
    return _groups(write(document, path))
