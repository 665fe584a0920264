"""Modality LUT, VOI, bit depths, spacing and header facts, against numbers worked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from imaging_dicom import build_dataset, write
from pydicom.dataset import Dataset

from osteonode.bone import Sex
from osteonode.header import read_header
from osteonode.imaging import (
    SpacingSource,
    display_window,
    load_radiograph,
)


def _reload(ds: Dataset, tmp_path: Path) -> Dataset:
    """Round-trip through a file so ambiguous VRs are resolved as in real files."""
    return pydicom.dcmread(write(ds, tmp_path / "image.dcm"))


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    stored = np.array([[0, 1, 4095], [100, 2000, 7]])
    ds = build_dataset(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024)

    pixels = load_radiograph(_reload(ds, tmp_path)).pixels

    np.testing.assert_array_equal(pixels, [[-1024, -1022, 7166], [-824, 2976, -1010]])
    assert pixels.dtype == np.float32


def test_monochrome1_is_reflected_about_the_rescaled_stored_range(tmp_path: Path) -> None:
    stored = np.array([[0, 1, 4095], [100, 2000, 7]])
    ds = build_dataset(
        stored,
        bits_stored=12,
        photometric="MONOCHROME1",
        RescaleSlope=2,
        RescaleIntercept=-1024,
    )

    radiograph = load_radiograph(_reload(ds, tmp_path))

    # low + high = (2*0 - 1024) + (2*4095 - 1024) = 6142; pixels = 6142 - (2*s - 1024)
    assert radiograph.monochrome1_reflection == 6142
    np.testing.assert_array_equal(radiograph.pixels, [[7166, 7164, -1024], [6966, 3166, 7152]])


def _modality_lut(ds: Dataset) -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 10, 16]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "US", [100, 200, 400, 4000])
    ds.ModalityLUTSequence = [item]


@pytest.mark.parametrize(
    ("photometric", "expected"),
    [
        ("MONOCHROME2", [[100, 100, 200], [400, 4000, 4000]]),
        # Nominal LUT output range 0..65535 (16-bit entries), so pixels = 65535 - LUT value.
        ("MONOCHROME1", [[65435, 65435, 65335], [65135, 61535, 61535]]),
    ],
)
def test_modality_lut_table_maps_stored_values(
    tmp_path: Path, photometric: str, expected: list[list[int]]
) -> None:
    # Below the first mapped value (10) -> first entry; beyond the table -> last entry.
    ds = build_dataset(
        np.array([[5, 10, 11], [12, 13, 500]]), bits_stored=12, photometric=photometric
    )
    _modality_lut(ds)

    pixels = load_radiograph(_reload(ds, tmp_path)).pixels

    np.testing.assert_array_equal(pixels, expected)


def test_signed_12_bit_values_are_sign_extended_ignoring_unused_high_bits(tmp_path: Path) -> None:
    words = np.array([[0x0FFF, 0x0800], [0x07FF, 0xF005]], dtype=np.uint16)
    ds = build_dataset(words, bits_stored=12, signed=True)

    pixels = load_radiograph(_reload(ds, tmp_path)).pixels

    np.testing.assert_array_equal(pixels, [[-1, -2048], [2047, 5]])


def test_15_bit_values_ignore_bit_16_and_reflect_about_32767(tmp_path: Path) -> None:
    words = np.array([[0x8000 | 123, 0x7FFF, 0]], dtype=np.uint16)
    mono2 = load_radiograph(_reload(build_dataset(words, bits_stored=15), tmp_path)).pixels
    mono1 = load_radiograph(
        _reload(build_dataset(words, bits_stored=15, photometric="MONOCHROME1"), tmp_path)
    ).pixels

    np.testing.assert_array_equal(mono2, [[123, 32767, 0]])
    np.testing.assert_array_equal(mono1, [[32644, 0, 32767]])


def test_odd_sized_8_bit_image_keeps_its_shape_and_values(tmp_path: Path) -> None:
    stored = np.arange(15).reshape(3, 5) * 17
    ds = build_dataset(stored, bits_stored=8, bits_allocated=8)

    radiograph = load_radiograph(_reload(ds, tmp_path))

    assert radiograph.shape == (3, 5)
    np.testing.assert_array_equal(radiograph.pixels, stored)


@pytest.mark.parametrize(
    ("photometric", "expected"),
    [
        ("MONOCHROME2", [[0, 128, 255, 255, 255, 128]]),
        ("MONOCHROME1", [[255, 128, 0, 0, 0, 128]]),
    ],
)
def test_display_uses_the_voi_lut_table(
    tmp_path: Path, photometric: str, expected: list[list[int]]
) -> None:
    ds = build_dataset(np.array([[0, 1, 2, 5, 2, 1]]), bits_stored=12, photometric=photometric)
    item = Dataset()
    item.LUTDescriptor = [3, 0, 8]
    item.add_new("LUTData", "US", [10, 60, 110])
    ds.VOILUTSequence = [item]
    # The table's own range 10..110 maps to 0..255: 60 -> 127.5 -> 128.
    display = display_window(load_radiograph(_reload(ds, tmp_path)))

    assert display.dtype == np.uint8
    np.testing.assert_array_equal(display, expected)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        # LINEAR, centre 100.5 width 101: 0 at <= 50, 255 above 150, ((x-100)/100 + 0.5) * 255.
        ("LINEAR", [[0, 64, 128, 191, 255, 255]]),
        # SIGMOID, centre 100.5 width 101: 255 / (1 + exp(-4 (x - 100.5) / 101)).
        ("SIGMOID", [[15, 68, 126, 185, 224, 250]]),
    ],
)
def test_display_uses_the_window_and_its_function(
    tmp_path: Path, function: str, expected: list[list[int]]
) -> None:
    stored = np.array([[30, 75, 100, 125, 150, 200]])
    ds = build_dataset(
        stored, bits_stored=12, WindowCenter=100.5, WindowWidth=101, VOILUTFunction=function
    )

    display = display_window(load_radiograph(_reload(ds, tmp_path)))

    np.testing.assert_array_equal(display, expected)


def test_window_applies_to_rescaled_values_and_monochrome1_displays_bone_bright(
    tmp_path: Path,
) -> None:
    # Modality values 2*s - 100 = [0, 50, 100, 150, 200]; MONOCHROME1 so low = bright.
    stored = np.array([[50, 75, 100, 125, 150]])
    ds = build_dataset(
        stored,
        bits_stored=12,
        photometric="MONOCHROME1",
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=[100.5, 999],
        WindowWidth=[101, 10],
    )

    display = display_window(load_radiograph(_reload(ds, tmp_path)))

    np.testing.assert_array_equal(display, [[255, 255, 128, 0, 0]])


def test_display_without_voi_uses_a_robust_percentile_window(tmp_path: Path) -> None:
    # Percentiles 0.5 and 99.5 of 0..100 are 0.5 and 99.5: 50 -> 49.5/99 * 255 = 127.5.
    ds = build_dataset(np.arange(101).reshape(1, 101), bits_stored=12)

    display = display_window(load_radiograph(_reload(ds, tmp_path)))

    assert display[0, 0] == 0
    assert display[0, 50] == 128
    assert display[0, 100] == 255


def test_display_ignores_an_unusable_window(tmp_path: Path) -> None:
    ds = build_dataset(np.arange(101).reshape(1, 101), bits_stored=12, WindowCenter=50)
    ds.WindowWidth = 0

    display = display_window(load_radiograph(_reload(ds, tmp_path)))

    assert display[0, 50] == 128


@pytest.mark.parametrize(
    ("elements", "spacing", "source"),
    [
        ({"PixelSpacing": [0.2, 0.1]}, (0.2, 0.1), SpacingSource.PIXEL_SPACING),
        (
            {"PixelSpacing": [0.2, 0.2], "ImagerPixelSpacing": [0.15, 0.15]},
            (0.2, 0.2),
            SpacingSource.PIXEL_SPACING,
        ),
        ({"ImagerPixelSpacing": [0.15, 0.3]}, (0.15, 0.3), SpacingSource.IMAGER_PIXEL_SPACING),
        (
            {
                "PixelSpacing": [0, 0],
                "ImagerPixelSpacing": [0.15, 0.3],
                "EstimatedRadiographicMagnificationFactor": 1.2,
            },
            (0.125, 0.25),
            SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED,
        ),
        (
            {"ImagerPixelSpacing": [0.15, 0.15], "EstimatedRadiographicMagnificationFactor": 0},
            (0.15, 0.15),
            SpacingSource.IMAGER_PIXEL_SPACING,
        ),
        ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0, 0]}, None, SpacingSource.NONE),
        ({"PixelSpacing": [-0.1, 0.1]}, None, SpacingSource.NONE),
        ({}, None, SpacingSource.NONE),
    ],
)
def test_spacing_and_its_source(
    tmp_path: Path,
    elements: dict[str, object],
    spacing: tuple[float, float] | None,
    source: SpacingSource,
) -> None:
    ds = build_dataset(np.zeros((2, 2), dtype=int), bits_stored=12, **elements)

    radiograph = load_radiograph(_reload(ds, tmp_path))

    assert radiograph.spacing_source is source
    if spacing is None:
        assert radiograph.spacing_mm is None
    else:
        assert radiograph.spacing_mm == pytest.approx(spacing, rel=1e-12)


@pytest.mark.parametrize(
    ("age", "birth", "study", "years"),
    [
        ("067Y", "", "", 67),
        ("018M", "", "", 1),
        ("", "19500615", "20250614", 74),
        ("", "19500615", "20250615", 75),
        ("", "1950.06.15", "20250616", 75),
        ("", "20300101", "20250101", None),
        ("", "", "20250101", None),
    ],
)
def test_age_in_completed_years_from_age_or_dates(
    tmp_path: Path, age: str, birth: str, study: str, years: int | None
) -> None:
    ds = build_dataset(
        np.zeros((2, 2), dtype=int),
        bits_stored=12,
        PatientAge=age,
        PatientBirthDate=birth,
        StudyDate=study,
    )

    assert load_radiograph(_reload(ds, tmp_path)).facts.patient_age_years == years


def test_one_header_model_gives_routing_and_the_pipelines_the_same_facts(tmp_path: Path) -> None:
    ds = build_dataset(
        np.zeros((2, 2), dtype=int),
        bits_stored=12,
        PatientSex="F",
        ViewPosition="AP",
        Laterality="R",
        ImageLaterality="L",
        BodyPartExamined="lspine",
        Manufacturer="Acme Imaging",
    )

    reloaded = _reload(ds, tmp_path)
    radiograph = load_radiograph(reloaded)

    facts = radiograph.facts
    assert facts == read_header(reloaded)  # what routing reads
    assert facts.patient_sex is Sex.FEMALE
    assert facts.view == "AP"
    assert facts.laterality == "L"
    assert facts.body_part == "LSPINE"
    assert facts.manufacturer == "Acme Imaging"
    assert facts.modality == "DX"
    assert radiograph.uids.sop_instance_uid == ds.SOPInstanceUID
    assert radiograph.uids.study_instance_uid == ds.StudyInstanceUID
    assert radiograph.uids.series_instance_uid == ds.SeriesInstanceUID
    assert radiograph.uids.sop_class_uid == ds.SOPClassUID


def test_pixels_are_read_only(tmp_path: Path) -> None:
    ds = build_dataset(np.zeros((2, 2), dtype=int), bits_stored=12)
    radiograph = load_radiograph(_reload(ds, tmp_path))

    with pytest.raises(ValueError):
        radiograph.pixels[0, 0] = 1


def test_malformed_window_and_spacing_values_are_ignored_not_fatal(tmp_path: Path) -> None:
    ds = build_dataset(
        np.arange(101).reshape(1, 101),
        bits_stored=12,
        WindowCenter="777",
        WindowWidth="12",
        PixelSpacing=["0.5", "888"],
    )
    path = write(ds, tmp_path / "image.dcm")
    # Damage the values in the file the way broken writers do.
    path.write_bytes(path.read_bytes().replace(b"777 ", b"abc ").replace(b"888 ", b"x.y "))

    radiograph = load_radiograph(path)

    assert radiograph.spacing_source is SpacingSource.NONE
    assert display_window(radiograph)[0, 50] == 128
