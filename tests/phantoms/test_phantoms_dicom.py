"""Phantom files are valid CR/DX objects in every encoding variant and route to their pipeline."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures.validators import dciodvfy_errors

from osteonode.bone import Sex
from osteonode.phantoms.dicom import (
    HEADER_TEXTS,
    TRANSFER_SYNTAXES,
    build_dataset,
    choose_variant,
    make_identity,
    write_dataset,
)
from osteonode.phantoms.enum import Modality, Part, SpacingKind, VoiKind
from osteonode.routing import Route, route_file

needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed"
)


@needs_dciodvfy
def test_every_generated_file_passes_dciodvfy(
    lumbar_cohort, chest_cohort, hip_cohort, lateral_cohort
) -> None:
    for record in lumbar_cohort + chest_cohort + hip_cohort + lateral_cohort:
        assert dciodvfy_errors(record.file) == [], record.row


def _variant_matrix() -> list[tuple[Part, object]]:
    """Every header wording with every transfer syntax, other choices rotating through theirs."""
    rotations = {
        "modality": [Modality.CR, Modality.DX],
        "monochrome1": [False, True],
        "bits_stored": [10, 12, 14, 15, 16],
    }
    cases = []
    counter = itertools.count()
    for part in Part:
        for header, syntax in itertools.product(HEADER_TEXTS[part], TRANSFER_SYNTAXES):
            k = next(counter)
            modality = rotations["modality"][k % 2]
            vois = [VoiKind.WINDOW, VoiKind.LUT] + (
                [VoiKind.NONE] if modality is Modality.CR else []
            )
            spacings = (
                [SpacingKind.PIXEL, SpacingKind.IMAGER]
                if modality is Modality.CR
                else [SpacingKind.IMAGER, SpacingKind.BOTH]
            )
            variant = dataclasses.replace(
                choose_variant(part, np.random.default_rng(k)),
                modality=modality,
                monochrome1=rotations["monochrome1"][(k // 2) % 2],
                bits_stored=rotations["bits_stored"][k % 5],
                voi=vois[(k // 3) % len(vois)],
                spacing=spacings[(k // 4) % 2],
                transfer_syntax=syntax,
                header=header,
            )
            cases.append((part, variant))
    return cases


@needs_dciodvfy
def test_every_encoding_variant_passes_dciodvfy(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    cases = _variant_matrix()
    for k, (part, variant) in enumerate(cases):
        ds = build_dataset(
            image,
            variant,
            make_identity(1, part, k, Sex.MALE, 71),
            part,
            0.15,
            1.12,
            k % 2 == 0,
            80.0,
        )
        path = tmp_path / f"{k}.dcm"
        write_dataset(ds, path, variant.transfer_syntax)
        assert dciodvfy_errors(path) == [], variant
    seen = {
        field.name: {getattr(v, field.name) for _, v in cases}
        for field in dataclasses.fields(cases[0][1])
    }
    assert seen["voi"] == set(VoiKind) and seen["spacing"] == set(SpacingKind)
    assert seen["bits_stored"] == {10, 12, 14, 15, 16} and seen["monochrome1"] == {False, True}


@pytest.mark.parametrize("syntax", TRANSFER_SYNTAXES, ids=lambda uid: uid.name)
def test_compressed_files_decode_to_the_stored_pixels(tmp_path: Path, syntax) -> None:
    image = np.random.default_rng(1).random((64, 48)).astype(np.float32)
    variant = dataclasses.replace(
        choose_variant(Part.HIP, np.random.default_rng(2)), transfer_syntax=syntax, bits_stored=16
    )
    ds = build_dataset(
        image,
        variant,
        make_identity(1, Part.HIP, 0, Sex.FEMALE, 60),
        Part.HIP,
        0.15,
        1.1,
        False,
        75.0,
    )
    expected = ds.pixel_array.copy()
    write_dataset(ds, tmp_path / "x.dcm", syntax)
    decoded = pydicom.dcmread(tmp_path / "x.dcm")
    assert decoded.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(decoded.pixel_array, expected)


def test_cohorts_show_the_variety_of_real_modalities(
    lumbar_cohort, chest_cohort, hip_cohort
) -> None:
    rows = [r.row for r in lumbar_cohort + chest_cohort + hip_cohort]
    assert {row["modality"] for row in rows} == {"CR", "DX"}
    assert {row["photometric"] for row in rows} == {"MONOCHROME1", "MONOCHROME2"}
    assert len({row["transfer_syntax"] for row in rows}) >= 4
    assert len({row["bits_stored"] for row in rows}) >= 3


def test_spacing_attributes_agree_with_the_ground_truth(lumbar_cohort, hip_cohort) -> None:
    for record in lumbar_cohort + hip_cohort:
        ds = pydicom.dcmread(record.file, stop_before_pixels=True)
        pitch = ds.get("ImagerPixelSpacing") or ds.PixelSpacing
        assert float(pitch[0]) == pytest.approx(record.spacing_mm, rel=1e-4)
        if "ImagerPixelSpacing" in ds and "PixelSpacing" in ds:
            factor = float(ds.EstimatedRadiographicMagnificationFactor)
            assert float(ds.PixelSpacing[0]) == pytest.approx(record.spacing_mm / factor, rel=1e-3)


def test_every_file_routes_to_the_pipeline_of_its_part(
    lumbar_cohort, chest_cohort, hip_cohort, lateral_cohort
) -> None:
    for record in lumbar_cohort + chest_cohort + hip_cohort + lateral_cohort:
        decision = route_file(record.file)
        assert isinstance(decision, Route), (
            record.row["body_part_examined"],
            record.row["study_description"],
            decision,
        )
        assert decision.pipelines[0] == record.row["expected_route"] == record.part.value
