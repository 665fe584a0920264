"""Images the node cannot analyse are refused with a specific ImageError."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
from imaging_dicom import build_dataset, encode, phantom_values, write
from pydicom.encaps import encapsulate, generate_frames

from osteonode.imaging import ImageError, ImageErrorReason, load_radiograph


def _image() -> pydicom.Dataset:
    return build_dataset(np.zeros((4, 6), dtype=int), bits_stored=12)


def _refusal(source: object) -> ImageError:
    with pytest.raises(ImageError) as caught:
        load_radiograph(source)  # type: ignore[arg-type]
    return caught.value


def test_missing_pixel_data_is_refused() -> None:
    ds = _image()
    del ds.PixelData

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.NO_PIXEL_DATA
    assert "Pixel Data" in error.message


def test_multi_frame_image_is_refused() -> None:
    ds = build_dataset(np.zeros((8, 6), dtype=int), bits_stored=12)
    ds.Rows = 4
    ds.NumberOfFrames = 2

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.MULTI_FRAME
    assert "2 frames" in error.message


def test_colour_image_is_refused() -> None:
    ds = _image()
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.COLOUR
    assert "RGB" in error.message


def test_palette_colour_image_is_refused() -> None:
    ds = _image()
    ds.PhotometricInterpretation = "PALETTE COLOR"

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.PALETTE_COLOUR
    assert "PALETTE COLOR" in error.message


def test_pixel_data_shorter_than_the_header_says_is_refused(tmp_path: Path) -> None:
    ds = _image()
    ds.PixelData = ds.PixelData[:-8]

    error = _refusal(pydicom.dcmread(write(ds, tmp_path / "short.dcm")))

    assert error.reason is ImageErrorReason.TRUNCATED_PIXEL_DATA
    assert "40 bytes" in error.message and "needs 48" in error.message


def test_undecodable_compressed_data_is_refused_naming_the_transfer_syntax(
    tmp_path: Path,
) -> None:
    native = write(build_dataset(phantom_values(32, 32, 12), bits_stored=12), tmp_path / "n.dcm")
    ds = pydicom.dcmread(encode(native, "jpeg_ls_lossless", tmp_path))
    fragment = next(generate_frames(ds.PixelData, number_of_frames=1))
    # Keep the SOI marker, destroy the rest of the codestream.
    ds.PixelData = encapsulate([fragment[:2] + b"\x00" * (len(fragment) - 2)])

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.DECODER_FAILURE
    assert "JPEG-LS Lossless" in error.message
    assert "pylibjpeg" in error.message and "gdcm" in error.message


def test_a_file_that_is_not_dicom_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")

    error = _refusal(path)

    assert error.reason is ImageErrorReason.UNREADABLE_FILE
    assert "notes.txt" in error.message


def test_missing_photometric_interpretation_is_an_invalid_header() -> None:
    ds = _image()
    del ds.PhotometricInterpretation

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.INVALID_HEADER
    assert "Photometric Interpretation" in error.message


def test_the_error_text_carries_the_reason_code() -> None:
    ds = _image()
    del ds.PixelData

    assert str(_refusal(ds)).startswith("no_pixel_data: ")


def test_a_source_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        load_radiograph(42)  # type: ignore[arg-type]


def test_the_error_survives_pickling_for_worker_processes() -> None:
    ds = _image()
    del ds.PixelData

    copy = pickle.loads(pickle.dumps(_refusal(ds)))

    assert copy.reason is ImageErrorReason.NO_PIXEL_DATA
    assert "Pixel Data" in copy.message


def test_an_unknown_transfer_syntax_is_a_decoder_failure_naming_it() -> None:
    ds = _image()
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"

    error = _refusal(ds)

    assert error.reason is ImageErrorReason.DECODER_FAILURE
    assert "1.2.3.4.5" in error.message
