"""Routing decisions from headers, the way vendors really fill them."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from osteonode.config import NodeConfig, RoutingRule, RoutingSettings, SkipReason
from osteonode.routing import Route, Skip, route_dataset, route_file, to_enabled_pipelines

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def radiograph(**attributes: object) -> pydicom.Dataset:
    """A small greyscale CR header with pixel data; keyword arguments set or (None) delete tags."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = CR
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = b"\0" * 8
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


ROUTED = [
    ({"BodyPartExamined": "LSPINE", "ViewPosition": "AP"}, ("lumbar", "lumbar_ap"), "lumbar-spine"),
    ({"BodyPartExamined": "L-SPINE", "ViewPosition": "PA"}, ("lumbar", "lumbar_ap"), "lumbar-spine"),
    ({"BodyPartExamined": "l spine"}, ("lumbar", "lumbar_ap"), "lumbar-spine"),
    ({"BodyPartExamined": "Lumbar_Spine", "ViewPosition": "ap"}, ("lumbar", "lumbar_ap"), "lumbar-spine"),
    ({"BodyPartExamined": "", "StudyDescription": "XR L-SPINE 2 VIEWS"}, ("lumbar", "lumbar_ap"),
     "lumbar-by-description"),
    ({"StudyDescription": "lumbar spine ap"}, ("lumbar", "lumbar_ap"), "lumbar-by-description"),
    ({"BodyPartExamined": "ABDOMEN", "StudyDescription": "KUB"}, ("lumbar",), "kub-abdomen"),
    ({"SeriesDescription": "Abdomen KUB supine"}, ("lumbar",), "kub-abdomen"),
    ({"BodyPartExamined": "CHEST", "ViewPosition": "PA"}, ("chest",), "chest"),
    ({"BodyPartExamined": "chest", "ViewPosition": "AP"}, ("chest",), "chest"),
    ({"BodyPartExamined": "THORAX"}, ("chest",), "chest"),
    ({"ProtocolName": "CXR PA"}, ("chest",), "chest-by-description"),
    ({"BodyPartExamined": "HIP", "ViewPosition": "AP", "Laterality": "L"}, ("hip",),
     "hip-pelvis"),
    ({"BodyPartExamined": "PELVIS"}, ("hip",), "hip-pelvis"),
    ({"RequestedProcedureDescription": "XR HIPS BILATERAL"}, ("hip",), "hip-by-description"),
    ({"BodyPartExamined": "LSPINE", "ViewPosition": "LL"}, ("lumbar_lateral",), "lumbar-lateral"),
    ({"BodyPartExamined": "LSPINE", "ViewPosition": "rl"}, ("lumbar_lateral",), "lumbar-lateral"),
    ({"StudyDescription": "L-spine lateral", "ViewPosition": "LATERAL"}, ("lumbar_lateral",),
     "lumbar-lateral-by-description"),
    ({"BodyPartExamined": "LSPINE", "SOPClassUID": DX_PRESENTATION, "Modality": "DX"},
     ("lumbar", "lumbar_ap"), "lumbar-spine"),
]


@pytest.mark.parametrize(("attributes", "pipeline", "rule"), ROUTED)
def test_radiographs_go_to_the_pipelines_of_their_part_and_view(attributes, pipeline, rule):
    decision = route_dataset(radiograph(**attributes))
    assert decision == Route(pipeline, rule)


SKIPPED = [
    ({"BodyPartExamined": "HIP", "ViewPosition": "LL"}, SkipReason.LATERAL_VIEW),
    ({"BodyPartExamined": "PELVIS", "ViewPosition": "rl"}, SkipReason.LATERAL_VIEW),
    ({"BodyPartExamined": "CHEST", "ViewPosition": "LATERAL"}, SkipReason.LATERAL_VIEW),
    ({"BodyPartExamined": "KNEE", "ViewPosition": "AP"}, SkipReason.UNKNOWN_BODY_PART),
    ({}, SkipReason.UNKNOWN_BODY_PART),
    ({"BodyPartExamined": "CHIP"}, SkipReason.UNKNOWN_BODY_PART),
    ({"BodyPartExamined": "LSPINE", "Modality": "CT", "SOPClassUID": CT}, SkipReason.NOT_RADIOGRAPH),
    ({"BodyPartExamined": "CHEST", "Modality": "MR"}, SkipReason.NOT_RADIOGRAPH),
    ({"BodyPartExamined": "HIP", "Modality": None}, SkipReason.NOT_RADIOGRAPH),
    ({"BodyPartExamined": "LSPINE", "PixelData": None}, SkipReason.NO_PIXEL_DATA),
    ({"BodyPartExamined": "LSPINE", "NumberOfFrames": 3}, SkipReason.MULTI_FRAME),
    ({"BodyPartExamined": "LSPINE", "SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"},
     SkipReason.COLOUR_IMAGE),
    ({"BodyPartExamined": "LSPINE", "PhotometricInterpretation": "PALETTE COLOR"},
     SkipReason.COLOUR_IMAGE),
    ({"BodyPartExamined": "LSPINE", "SOPClassUID": DX_PROCESSING, "Modality": "DX"},
     SkipReason.FOR_PROCESSING),
]


@pytest.mark.parametrize(("attributes", "reason"), SKIPPED)
def test_images_no_pipeline_can_read_are_skipped_with_their_reason(attributes, reason):
    decision = route_dataset(radiograph(**attributes))
    assert isinstance(decision, Skip)
    assert decision.reason is reason
    assert decision.detail


def test_view_is_read_from_the_view_code_sequence_when_view_position_is_empty():
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "R-10232", "SRT"
    code.CodeMeaning = "latero-medial"
    lateral = radiograph(BodyPartExamined="LSPINE", ViewPosition="", ViewCodeSequence=[code])
    assert route_dataset(lateral) == Route(("lumbar_lateral",), "lumbar-lateral")
    code.CodeMeaning = "antero-posterior"
    frontal = radiograph(BodyPartExamined="LSPINE", ViewCodeSequence=[code])
    assert route_dataset(frontal) == Route(("lumbar", "lumbar_ap"), "lumbar-spine")


def test_unknown_body_part_detail_names_what_was_seen():
    decision = route_dataset(radiograph(BodyPartExamined="KNEE", ViewPosition="AP"))
    assert "'KNEE'" in decision.detail and "'AP'" in decision.detail


def test_first_matching_site_rule_wins_and_can_skip_or_redirect():
    settings = RoutingSettings(
        rules=[
            RoutingRule(name="no-paediatric-ward", skip=SkipReason.EXCLUDED_BY_RULE, keywords=["PAEDS"]),
            RoutingRule(name="spine-to-lumbar", pipeline="lumbar", body_part=["SPINE"],
                        laterality=[""], destinations=["research-pacs"]),
        ]
    )
    skipped = route_dataset(radiograph(BodyPartExamined="SPINE", StudyDescription="Paeds spine"), settings)
    assert skipped == Skip(SkipReason.EXCLUDED_BY_RULE, "skipped by rule 'no-paediatric-ward'",
                           "no-paediatric-ward")
    routed = route_dataset(radiograph(BodyPartExamined="SPINE"), settings)
    assert routed == Route(("lumbar",), "spine-to-lumbar", ("research-pacs",))
    lateralised = route_dataset(radiograph(BodyPartExamined="SPINE", Laterality="R"), settings)
    assert lateralised.reason is SkipReason.UNKNOWN_BODY_PART


def test_a_disabled_pipeline_is_left_out_and_a_rule_with_none_left_skips_with_the_reason():
    no_classifier = NodeConfig.model_validate({"pipelines": {"lumbar_ap": {"enabled": False}}})
    frontal = route_dataset(radiograph(BodyPartExamined="LSPINE", ViewPosition="AP"))
    assert to_enabled_pipelines(frontal, no_classifier.pipelines) == Route(("lumbar",), "lumbar-spine")
    no_lateral = NodeConfig.model_validate({"pipelines": {"lumbar_lateral": {"enabled": False}}})
    lateral = route_dataset(radiograph(BodyPartExamined="LSPINE", ViewPosition="LL"))
    skipped = to_enabled_pipelines(lateral, no_lateral.pipelines)
    assert skipped.reason is SkipReason.PIPELINE_DISABLED and "lumbar_lateral" in skipped.detail


def test_accepted_modalities_are_configurable():
    settings = RoutingSettings(accepted_modalities=["DX"])
    assert route_dataset(radiograph(BodyPartExamined="CHEST"), settings).reason is SkipReason.NOT_RADIOGRAPH


def write(ds: pydicom.Dataset, path) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_route_file_reads_a_file_header(tmp_path):
    path = tmp_path / "spine.dcm"
    write(radiograph(BodyPartExamined="LSPINE", ViewPosition="AP"), path)
    assert route_file(path) == Route(("lumbar", "lumbar_ap"), "lumbar-spine")


@pytest.mark.parametrize("content", [b"", b"not a dicom file at all" * 10, b"\0" * 128 + b"DICM" + b"\x02"])
def test_unreadable_files_are_skipped_not_raised(tmp_path, content):
    path = tmp_path / "broken.dcm"
    path.write_bytes(content)
    decision = route_file(path)
    assert decision.reason is SkipReason.UNREADABLE
    assert "cannot read" in decision.detail


def test_missing_file_is_skipped_as_unreadable(tmp_path):
    assert route_file(tmp_path / "gone.dcm").reason is SkipReason.UNREADABLE
