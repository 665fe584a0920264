"""What a user of the lumbar pipeline sees: the Result, its notes and reasons, and its reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures.validators import dciodvfy_errors, write

from osteonode.bone import DxaManufacturer
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.imaging import load_radiograph
from osteonode.phantoms import HardCase
from osteonode.pipelines.base import FindingSite, OutsideIntendedUse, Result
from osteonode.pipelines.lumbar import LumbarPipeline
from osteonode.reference import MissingReferenceError, ReferenceData, load_reference
from osteonode.reports import DeviceInfo, build_secondary_capture, build_structured_report
from osteonode.zoo import LoadedModel

DEVICE = DeviceInfo.for_node("osteonode-test", software_version="0.0.0")


@pytest.fixture(scope="module")
def normal_film(acceptance_films):
    return next(r for r in acceptance_films if r.evaluable)


@pytest.fixture(scope="module")
def normal_result(demo_pipeline: LumbarPipeline, normal_film) -> Result:
    return demo_pipeline.run(load_radiograph(normal_film.file))


@pytest.fixture(scope="module")
def implant_result(demo_pipeline: LumbarPipeline, acceptance_films) -> Result:
    record = next(r for r in acceptance_films if r.hard_case is HardCase.IMPLANT)
    return demo_pipeline.run(load_radiograph(record.file))


def _edited(path: Path, **attributes: object) -> pydicom.Dataset:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.fixture(scope="module")
def skipping_pipeline(demo_model: LoadedModel) -> LumbarPipeline:
    settings = PipelineSettings(outside_intended_use=IntendedUsePolicy.SKIP)
    return LumbarPipeline.from_model(demo_model, settings, load_reference())


def test_evaluable_film_has_four_vertebrae_and_the_l1_l4_summary(normal_result: Result) -> None:
    assert normal_result.evaluable, normal_result.reason
    names = [f.name for f in normal_result.findings]
    assert names == ["L1", "L2", "L3", "L4", "L1-L4"]
    summary = normal_result.findings[-1]
    assert summary.site is FindingSite.LUMBAR_SPINE
    assert summary.category is normal_result.category and summary.t_score == normal_result.t_score
    for finding in normal_result.findings[:4]:
        assert len(finding.region.points) == 4
        assert finding.bmd_g_cm2 > 0 and finding.category is not None
        assert finding.included or finding.reason


def test_result_carries_heatmap_model_disclaimer_and_calibration_notes(
    normal_result: Result,
) -> None:
    heatmap = normal_result.heatmap
    assert heatmap.shape == (normal_result.source.rows, normal_result.source.columns)
    assert (
        heatmap.dtype == np.float32
        and 0.0 <= heatmap.min()
        and heatmap.max() <= 1.0
        and heatmap.max() > 0
    )
    assert normal_result.model.name == "lumbar-demo" and normal_result.model.synthetic
    assert "not for diagnostic use" in normal_result.disclaimer
    assert ("calibration", "hologic") in normal_result.model.parameters
    notes = " ".join(normal_result.notes)
    assert "BMD on the hologic scale (the site's manufacturer); no conversion" in notes
    assert "young-adult reference" in notes
    assert Result.from_dict(normal_result.to_dict()).to_dict() == normal_result.to_dict()


def _ge_lunar_site() -> ReferenceData:
    """The shipped reference data for a site whose DXA scanner is a GE Lunar."""
    shipped = load_reference()
    lumbar = shipped.lumbar.model_copy(update={"site_manufacturer": DxaManufacturer.GE_LUNAR})
    return shipped.model_copy(update={"lumbar": lumbar})


def test_a_site_on_another_dxa_scale_gets_the_converted_bmd_and_its_reference(
    demo_model: LoadedModel, demo_pipeline: LumbarPipeline, normal_film
) -> None:
    """The demo model estimates on the Hologic scale; a GE Lunar site reads Lunar BMD and T-scores."""
    lunar = LumbarPipeline.from_model(demo_model, PipelineSettings(), _ge_lunar_site())
    radiograph = load_radiograph(normal_film.file)
    hologic_result, lunar_result = demo_pipeline.run(radiograph), lunar.run(radiograph)
    assert lunar_result.evaluable and hologic_result.evaluable
    for on_hologic, on_lunar in zip(hologic_result.findings, lunar_result.findings):
        # Genant 1994, the shipped Hologic-to-Lunar equation (rounding of both to 1 mg/cm2).
        assert on_lunar.bmd_g_cm2 == pytest.approx(1.074 * on_hologic.bmd_g_cm2 + 0.054, abs=2e-3)
    notes = " ".join(lunar_result.notes)
    assert "BMD estimated on the hologic scale and converted to ge_lunar: 1.074 x BMD +0.054" in notes
    assert "against the ge_lunar L1-L4 young-adult reference" in notes


def test_a_site_scale_without_a_configured_conversion_leaves_the_pipeline_unavailable(
    demo_model: LoadedModel,
) -> None:
    with_conversion = _ge_lunar_site()
    no_conversion = with_conversion.model_copy(
        update={
            "calibrations": [
                c
                for c in with_conversion.calibrations
                if c.to_manufacturer is not DxaManufacturer.GE_LUNAR
            ]
        }
    )
    with pytest.raises(MissingReferenceError, match="no calibration from hologic to ge_lunar"):
        LumbarPipeline.from_model(demo_model, PipelineSettings(), no_conversion)


def test_implant_makes_the_film_not_evaluable_and_says_which_vertebra(
    implant_result: Result,
) -> None:
    assert not implant_result.evaluable and implant_result.category is None
    assert "metal" in implant_result.reason
    assert "L3" in implant_result.reason or "L4" in implant_result.reason
    flagged = [
        f for f in implant_result.findings if not f.evaluable and "metal" in (f.reason or "")
    ]
    assert flagged and all(f.region is not None for f in flagged)


def test_unknown_sex_assumes_the_female_reference_and_says_so(
    demo_pipeline: LumbarPipeline, normal_film
) -> None:
    result = demo_pipeline.run(load_radiograph(_edited(normal_film.file, PatientSex=None)))
    notes = " ".join(result.notes)
    assert "female young-adult reference was assumed" in notes
    assert "sex unknown" in notes


def test_young_patient_gets_a_note_or_is_skipped_by_policy(
    demo_pipeline: LumbarPipeline, skipping_pipeline: LumbarPipeline, normal_film
) -> None:
    young = _edited(normal_film.file, PatientAge="042Y")
    result = demo_pipeline.run(load_radiograph(young))
    assert any("aged 42" in note for note in result.notes)
    with pytest.raises(OutsideIntendedUse, match="aged 42"):
        skipping_pipeline.run(load_radiograph(young))


def test_lateral_view_is_outside_intended_use(
    skipping_pipeline: LumbarPipeline, normal_film
) -> None:
    with pytest.raises(OutsideIntendedUse, match="lateral"):
        skipping_pipeline.run(load_radiograph(_edited(normal_film.file, ViewPosition="LL")))


def test_film_without_a_spine_is_not_evaluable_and_does_not_raise(
    demo_pipeline: LumbarPipeline, normal_film
) -> None:
    ds = pydicom.dcmread(normal_film.file)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.PixelData = np.full((ds.Rows, ds.Columns), 500, dtype=ds.pixel_array.dtype).tobytes()
    result = demo_pipeline.run(load_radiograph(ds))
    assert not result.evaluable
    assert "not all of T12-L5 found" in result.reason


@pytest.mark.parametrize("which", ["normal_result", "implant_result"])
def test_structured_report_and_secondary_capture_pass_dciodvfy(
    which: str, request: pytest.FixtureRequest, acceptance_films, tmp_path: Path
) -> None:
    result: Result = request.getfixturevalue(which)
    record = next(
        r for r in acceptance_films if r.sop_instance_uid == result.source.sop_instance_uid
    )
    source = pydicom.dcmread(record.file)
    report = build_structured_report(result, source, device=DEVICE)
    capture = build_secondary_capture(result, load_radiograph(record.file), device=DEVICE)
    assert dciodvfy_errors(write(report, tmp_path / "sr.dcm")) == []
    assert dciodvfy_errors(write(capture, tmp_path / "sc.dcm")) == []
