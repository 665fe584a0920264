"""Decoding in a child process: crashes, panics and hangs of a decoder cost one file, never the caller;
size limits refuse an image from its header before anything is decoded."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from imaging_dicom import build_dataset, encode, phantom_values, write
from structlog.testing import capture_logs

from osteonode.config import ConfigError, LimitsSettings, load_config
from osteonode.imaging.isolation import DecoderProcess
from osteonode.imaging.pixels import ImageError, ImageErrorReason, load_radiograph


@pytest.fixture
def decoder() -> DecoderProcess:
    process = DecoderProcess(timeout_s=30.0, memory_limit_mb=2048)
    yield process
    process.close()


@pytest.fixture
def radiograph_file(tmp_path: Path) -> Path:
    return write(build_dataset(phantom_values(64, 48, 12), bits_stored=12), tmp_path / "image.dcm")


@pytest.fixture
def compressed_file(tmp_path: Path, radiograph_file: Path) -> Path:
    return encode(radiograph_file, "jpeg_ls_lossless", tmp_path)


@pytest.fixture
def panicking_rle_file(tmp_path: Path, radiograph_file: Path) -> Path:
    """An RLE file whose Columns is one less than encoded: pylibjpeg-rle's Rust code panics on it
    (``pyo3_runtime.PanicException``, a BaseException); pydicom's own RLE decoder copes."""
    encoded = encode(radiograph_file, "rle", tmp_path)
    ds = pydicom.dcmread(encoded)
    ds.Columns = ds.Columns - 1
    return write(ds, tmp_path / "panicking-rle.dcm")


def _refusal(source: Path, **options: object) -> ImageError:
    with pytest.raises(ImageError) as caught:
        load_radiograph(source, **options)  # type: ignore[arg-type]
    return caught.value


def _decode_while_the_decoder_is_blocked(
    decoder: DecoderProcess, tmp_path: Path
) -> tuple[dict, int]:
    """Start a decode of a FIFO nobody writes to: the child blocks opening it. Returns the thread's
    outcome holder and the child's process ID."""
    fifo = tmp_path / "never-written.dcm"
    os.mkfifo(fifo)
    decoder.start()
    pid = decoder.pid
    assert pid is not None
    outcome: dict = {}

    def decode() -> None:
        try:
            outcome["value"] = decoder.decode(fifo)
        except ImageError as error:
            outcome["error"] = error

    thread = threading.Thread(target=decode)
    thread.start()
    outcome["thread"] = thread
    time.sleep(0.3)  # the child has the path and is blocked in open()
    return outcome, pid


def test_isolated_decoding_gives_the_same_pixels_as_decoding_in_process(
    decoder: DecoderProcess, tmp_path: Path, radiograph_file: Path
) -> None:
    for encoder in ("j2k_lossless", "rle", "jpeg_ls_lossless"):
        path = encode(radiograph_file, encoder, tmp_path)
        isolated = load_radiograph(path, decoder=decoder)
        in_process = load_radiograph(path)
        np.testing.assert_array_equal(isolated.pixels, in_process.pixels)
    assert decoder.starts == 1  # one warm child served all


def test_uncompressed_pixel_data_needs_no_decoder_process(
    decoder: DecoderProcess, radiograph_file: Path
) -> None:
    assert load_radiograph(radiograph_file, decoder=decoder).shape == (64, 48)
    assert decoder.starts == 0


@pytest.mark.filterwarnings("ignore:The decoded RLE segment contains non-conformant padding")
def test_rust_panic_in_a_decoder_is_caught_and_the_next_plugin_decodes_the_file(
    panicking_rle_file: Path,
) -> None:
    with capture_logs() as logs:
        radiograph = load_radiograph(panicking_rle_file)

    assert radiograph.shape == (64, 47)
    failures = [entry for entry in logs if entry["event"] == "pixel_decoder_failed"]
    assert [(entry["plugin"], entry["error"]) for entry in failures] == [
        ("pylibjpeg", "PanicException")
    ]


def test_rust_panic_in_the_decoder_process_leaves_the_child_running(
    decoder: DecoderProcess, panicking_rle_file: Path, compressed_file: Path
) -> None:
    assert load_radiograph(panicking_rle_file, decoder=decoder).shape == (64, 47)
    assert load_radiograph(compressed_file, decoder=decoder).shape == (64, 48)
    assert (decoder.starts, decoder.crashes) == (1, 0)


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGSEGV, signal.SIGKILL])
def test_decoder_process_that_dies_refuses_the_file_as_crashed_and_the_next_file_decodes(
    decoder: DecoderProcess, tmp_path: Path, compressed_file: Path, sig: signal.Signals
) -> None:
    outcome, pid = _decode_while_the_decoder_is_blocked(decoder, tmp_path)

    os.kill(pid, sig)  # what an uncaught C++ exception (SIGABRT) or a bad pointer does to it
    outcome["thread"].join(30)

    error = outcome["error"]
    assert error.reason is ImageErrorReason.DECODER_CRASHED
    assert sig.name in error.message and "not decoded again" in error.message
    assert decoder.crashes == 1
    assert load_radiograph(compressed_file, decoder=decoder).shape == (64, 48)
    assert decoder.starts == 2 and decoder.pid != pid


def test_decoder_that_hangs_is_stopped_after_the_timeout_and_replaced(
    tmp_path: Path, compressed_file: Path
) -> None:
    decoder = DecoderProcess(timeout_s=1.0)
    try:
        outcome, pid = _decode_while_the_decoder_is_blocked(decoder, tmp_path)
        outcome["thread"].join(30)

        error = outcome["error"]
        assert error.reason is ImageErrorReason.DECODER_TIMEOUT
        assert "1 s" in error.message
        assert load_radiograph(compressed_file, decoder=decoder).shape == (64, 48)
        assert decoder.pid != pid
    finally:
        decoder.close()


def test_image_declaring_more_pixels_than_the_limit_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    # An 18 KB JPEG-LS file declaring 8192 x 8192 took the node from 365 MB to 1.54 GB.
    small = write(build_dataset(phantom_values(64, 64, 12), bits_stored=12), tmp_path / "small.dcm")
    ds = pydicom.dcmread(encode(small, "jpeg_ls_lossless", tmp_path))
    ds.Rows = ds.Columns = 8192
    bomb = write(ds, tmp_path / "bomb.dcm")

    error = _refusal(bomb, limits=LimitsSettings(max_pixels=40_000_000))

    assert error.reason is ImageErrorReason.TOO_LARGE
    assert "8192 x 8192" in error.message and "limits.max_pixels" in error.message


def test_rows_and_columns_limits_are_each_enforced(radiograph_file: Path) -> None:
    assert (
        "limits.max_rows" in _refusal(radiograph_file, limits=LimitsSettings(max_rows=63)).message
    )
    assert (
        _refusal(radiograph_file, limits=LimitsSettings(max_columns=47)).reason
        is ImageErrorReason.TOO_LARGE
    )


def test_file_larger_than_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    ds = build_dataset(phantom_values(1024, 1024, 12), bits_stored=12)  # 2 MB
    path = write(ds, tmp_path / "large.dcm")

    error = _refusal(path, limits=LimitsSettings(max_file_mb=1))

    assert error.reason is ImageErrorReason.TOO_LARGE
    assert "limits.max_file_mb" in error.message


def test_default_limits_admit_a_full_field_detector_and_a_stitched_film(tmp_path: Path) -> None:
    # Header only: pixel data one row short, so the file is refused after the size checks, as truncated.
    for rows, columns in ((4300, 4300), (9000, 3000)):
        ds = build_dataset(np.zeros((1, columns), dtype=int), bits_stored=12)
        ds.Rows = rows
        path = write(ds, tmp_path / f"{rows}x{columns}.dcm")

        assert _refusal(path).reason is ImageErrorReason.TRUNCATED_PIXEL_DATA


def test_decoder_needs_a_path_not_a_dataset(decoder: DecoderProcess, radiograph_file: Path) -> None:
    with pytest.raises(ValueError, match="give a path"):
        load_radiograph(pydicom.dcmread(radiograph_file), decoder=decoder)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"timeout_s": 0}, "timeout_s"), ({"timeout_s": 1, "memory_limit_mb": 0}, "memory_limit_mb")],
)
def test_decoder_process_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecoderProcess(**options)  # type: ignore[arg-type]


def test_rescale_that_overflows_is_refused_as_an_invalid_header(
    radiograph_file: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(radiograph_file)
    ds.RescaleSlope, ds.RescaleIntercept = "1e300", "-1e300"
    error = _refusal(write(ds, tmp_path / "overflow.dcm"))

    assert error.reason is ImageErrorReason.INVALID_HEADER
    assert "not finite" in error.message


def test_limits_that_admit_nothing_are_refused_when_the_configuration_loads(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[limits]\nmax_pixels = 0\ndecoder_memory_mb = 16\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})

    assert {problem.key for problem in caught.value.problems} == {
        "limits.max_pixels",
        "limits.decoder_memory_mb",
    }
