"""Builders for the imaging tests: small radiograph datasets and their compressed twins."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

#: Command lines (before input and output paths) that re-encode a file, by name.
ENCODERS: dict[str, list[str]] = {
    "rle": ["dcmcrle"],
    "jpeg_lossless": ["dcmcjpeg"],
    "jpeg_ls_lossless": ["dcmcjpls"],
    "j2k_lossless": ["gdcmconv", "--j2k"],
    # +sr: scale by the stored range, not the image's own min/max, so values stay comparable.
    "jpeg_extended_lossy": ["dcmcjpeg", "+ee", "+sr", "+q", "90"],
    "jpeg_ls_near_lossless": ["dcmcjpls", "+en", "+md", "2"],
    "j2k_lossy": ["gdcmconv", "--j2k", "--lossy", "-q", "80"],
}


def phantom_values(rows: int, columns: int, bits_stored: int, *, seed: int = 7) -> np.ndarray:
    """Smooth anatomy-like structure plus noise covering most of the unsigned range."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:columns]
    top = 2**bits_stored - 1
    body = 0.25 + 0.35 * np.exp(-(((c - columns / 2) / (columns / 5)) ** 2))
    bone = 0.3 * (np.abs(c - columns / 2) < columns / 12) * (r % 12 < 9)
    noise = rng.normal(0.0, 0.02, size=(rows, columns))
    values = np.clip(body + bone + noise, 0.0, 1.0) * top
    return np.rint(values).astype(np.int64)


def build_dataset(
    stored: np.ndarray,
    *,
    bits_stored: int,
    bits_allocated: int = 16,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    **elements: Any,
) -> Dataset:
    """A DX For Presentation dataset holding `stored` (already in range) natively."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = "Test^Imaging"
    ds.PatientID = "IMG-1"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {8: np.int8 if signed else np.uint8, 16: np.int16 if signed else np.uint16}[
        bits_allocated
    ]
    ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Write `ds` as a DICOM file and return its path."""
    ds.save_as(path, enforce_file_format=True)
    return path


def encode(source: Path, encoder: str, directory: Path) -> Path:
    """Re-encode `source` with a dcmtk / GDCM command-line tool."""
    command = ENCODERS[encoder]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    target = directory / f"{source.stem}_{encoder}.dcm"
    subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
    return target
