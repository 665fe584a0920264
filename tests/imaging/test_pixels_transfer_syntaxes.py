"""The same radiograph decodes to the same pixels whatever the transfer syntax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import structlog.testing
from imaging_dicom import build_dataset, encode, phantom_values, write

from osteonode.imaging import PhotometricInterpretation, load_radiograph, pixels

LOSSLESS = ["rle", "jpeg_lossless", "jpeg_ls_lossless", "j2k_lossless"]


@pytest.fixture(scope="module")
def native_12bit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("native12")
    stored = phantom_values(67, 93, 12)
    return write(build_dataset(stored, bits_stored=12), directory / "native12.dcm")


@pytest.mark.parametrize("encoder", LOSSLESS)
@pytest.mark.parametrize(("bits_stored", "signed"), [(12, False), (15, False), (12, True)])
def test_lossless_encodings_decode_to_identical_pixels(
    tmp_path: Path, encoder: str, bits_stored: int, signed: bool
) -> None:
    stored = phantom_values(67, 93, bits_stored)
    if signed:
        stored = stored - 2 ** (bits_stored - 1)
    dataset = build_dataset(stored, bits_stored=bits_stored, signed=signed)
    native = write(dataset, tmp_path / "n.dcm")
    compressed = encode(native, encoder, tmp_path)

    reference = load_radiograph(native)
    decoded = load_radiograph(compressed)

    assert decoded.transfer_syntax_uid != reference.transfer_syntax_uid
    np.testing.assert_array_equal(decoded.pixels, stored.astype(np.float32))
    np.testing.assert_array_equal(decoded.pixels, reference.pixels)


@pytest.mark.parametrize(
    ("encoder", "max_error", "mean_error"),
    [
        ("jpeg_ls_near_lossless", 2.0, 2.0),
        ("jpeg_extended_lossy", 41.0, 10.0),
        ("j2k_lossy", 41.0, 10.0),
    ],
)
def test_lossy_encodings_decode_within_tolerance(
    tmp_path: Path, native_12bit: Path, encoder: str, max_error: float, mean_error: float
) -> None:
    reference = load_radiograph(native_12bit).pixels
    decoded = load_radiograph(encode(native_12bit, encoder, tmp_path)).pixels

    error = np.abs(decoded - reference)
    # JPEG-LS near-lossless guarantees NEAR=2; the others are held to 1% of the 12-bit range.
    assert error.max() <= max_error
    assert error.mean() <= mean_error
    assert error.max() > 0


@pytest.mark.parametrize("encoder", [None, *LOSSLESS])
def test_monochrome1_and_its_monochrome2_inverse_give_the_same_pixels(
    tmp_path: Path, encoder: str | None
) -> None:
    stored = phantom_values(41, 57, 12)
    rescale = {"RescaleSlope": 2, "RescaleIntercept": -1000}
    mono2 = write(build_dataset(stored, bits_stored=12, **rescale), tmp_path / "m2.dcm")
    inverse = 4095 - stored
    mono1 = write(
        build_dataset(inverse, bits_stored=12, photometric="MONOCHROME1", **rescale),
        tmp_path / "m1.dcm",
    )
    if encoder is not None:
        mono1 = encode(mono1, encoder, tmp_path)

    from_mono1 = load_radiograph(mono1)
    from_mono2 = load_radiograph(mono2)

    assert from_mono1.photometric_interpretation is PhotometricInterpretation.MONOCHROME1
    np.testing.assert_array_equal(from_mono1.pixels, from_mono2.pixels)
    np.testing.assert_array_equal(from_mono2.pixels, (2.0 * stored - 1000).astype(np.float32))


def test_dataset_and_path_sources_agree_and_the_dataset_is_left_intact(
    tmp_path: Path, native_12bit: Path
) -> None:
    compressed = encode(native_12bit, "jpeg_ls_lossless", tmp_path)
    dataset = pydicom.dcmread(compressed)
    pixel_bytes = dataset.PixelData

    from_dataset = load_radiograph(dataset)

    np.testing.assert_array_equal(from_dataset.pixels, load_radiograph(compressed).pixels)
    assert dataset.PixelData == pixel_bytes
    assert "PixelData" not in from_dataset.header
    assert from_dataset.header.PatientID == "IMG-1"
    assert from_dataset.header.file_meta.TransferSyntaxUID == dataset.file_meta.TransferSyntaxUID


@pytest.mark.parametrize(
    ("encoder", "plugin"),
    [
        ("jpeg_lossless", "gdcm"),
        ("jpeg_lossless", "pylibjpeg"),
        ("jpeg_ls_lossless", "pyjpegls"),
        ("jpeg_ls_lossless", "gdcm"),
        ("jpeg_ls_lossless", "pylibjpeg"),
        ("j2k_lossless", "gdcm"),
        ("j2k_lossless", "pylibjpeg"),
    ],
)
def test_every_decoder_of_a_lossless_encoding_gives_the_same_pixels(
    tmp_path: Path, native_12bit: Path, encoder: str, plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compressed = encode(native_12bit, encoder, tmp_path)
    monkeypatch.setattr(pixels, "FASTEST_DECODING_PLUGINS", {})
    monkeypatch.setattr(pixels, "PREFERRED_DECODING_PLUGINS", (plugin,))

    with structlog.testing.capture_logs() as events:
        decoded = load_radiograph(compressed)

    assert [e["decoder"] for e in events if e["event"] == "radiograph_loaded"] == [plugin]
    np.testing.assert_array_equal(decoded.pixels, load_radiograph(native_12bit).pixels)


@pytest.mark.parametrize(
    ("encoder", "fastest"),
    [("jpeg_lossless", "gdcm"), ("jpeg_ls_lossless", "pyjpegls"), ("j2k_lossless", "gdcm")],
)
def test_the_fastest_decoder_of_each_encoding_decodes_it(
    tmp_path: Path, native_12bit: Path, encoder: str, fastest: str
) -> None:
    compressed = encode(native_12bit, encoder, tmp_path)

    with structlog.testing.capture_logs() as events:
        load_radiograph(compressed)

    assert [e["decoder"] for e in events if e["event"] == "radiograph_loaded"] == [fastest]
