"""Hand-made results of every pipeline shape, and the small radiographs they describe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from osteonode.bone import Laterality
from osteonode.imaging.pixels import Radiograph, load_radiograph
from osteonode.pipelines.base import (
    Category,
    Finding,
    FindingSite,
    ModelIdentity,
    Region,
    Result,
    SourceImage,
)
from osteonode.reports import DeviceInfo

ROWS, COLUMNS = 320, 256

DEVICE = DeviceInfo.for_node("osteonode-test", software_version="9.9.9")

SYNTHETIC_MODEL = ModelIdentity(
    name="lumbar-demo",
    version="1.2.0",
    architecture="resnet18-regressor",
    synthetic=True,
    diagnostic_use=False,
    parameters=(
        ("calibration", "GE Lunar to Hologic: 0.856 x - 0.016"),
        ("reference", "NHANES III"),
    ),
)
RESEARCH_MODEL = ModelIdentity(
    name="ospen-chest",
    version="0.3",
    architecture="convnext_small",
    synthetic=False,
    diagnostic_use=False,
    parameters=(("preprocessing", "grayscale truncation"),),
)
DIAGNOSTIC_MODEL = ModelIdentity(
    name="hip-vgg-nl",
    version="2.0",
    architecture="vgg16_nonlocal",
    synthetic=False,
    diagnostic_use=True,
)


@dataclass(frozen=True)
class Case:
    """A result with the source file it describes."""

    result: Result
    source: Dataset
    path: Path
    radiograph: Radiograph


def source_dataset(*, modality: str, projection_descriptors: bool, seed: int) -> Dataset:
    """A small CR or DX film of a smooth body with a bright 'spine' down the middle."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:ROWS, 0:COLUMNS]
    body = 900 + 1200 * np.exp(-(((c - COLUMNS / 2) / (COLUMNS / 4)) ** 2))
    spine = 1500 * (np.abs(c - COLUMNS / 2) < 20) * (r % 48 < 38)
    stored = np.clip(body + spine + rng.normal(0, 30, size=(ROWS, COLUMNS)), 0, 4095)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = (
        DigitalXRayImageStorageForPresentation
        if modality == "DX"
        else ComputedRadiographyImageStorage
    )
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Reports^Test"
    ds.PatientID = f"REP-{seed}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyDate = "20260102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{seed}"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if projection_descriptors:
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.PixelSpacing = [0.14, 0.14]
    ds.PixelData = np.rint(stored).astype(np.uint16).tobytes()
    return ds


def _write(ds: Dataset, directory: Path) -> Path:
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _source_image(ds: Dataset) -> SourceImage:
    return SourceImage(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        rows=ROWS,
        columns=COLUMNS,
    )


def _blob(row: float, column: float, radius: float) -> np.ndarray:
    r, c = np.mgrid[0:ROWS, 0:COLUMNS]
    return np.exp(-((r - row) ** 2 + (c - column) ** 2) / (2 * radius**2)).astype(np.float32)


def _case(directory: Path, ds: Dataset, **result_fields: object) -> Case:
    path = _write(ds, directory)
    result = Result(source=_source_image(ds), **result_fields)  # type: ignore[arg-type]
    return Case(result=result, source=ds, path=path, radiograph=load_radiograph(path))


def _vertebra(top: float) -> Region:
    return Region(((110.0, top), (146.0, top + 2), (147.5, top + 34.5), (109.0, top + 33)))


def lumbar_case(directory: Path) -> Case:
    """Four vertebrae and the L1-L4 summary; L3 excluded as discordant; a heat-map."""
    ds = source_dataset(modality="DX", projection_descriptors=True, seed=1)
    findings = (
        Finding(
            "L1",
            FindingSite.L1,
            bmd_g_cm2=0.812,
            t_score=-2.1,
            category=Category.LOW_BONE_MASS,
            region=_vertebra(80),
        ),
        Finding(
            "L2",
            FindingSite.L2,
            bmd_g_cm2=0.745,
            t_score=-2.7,
            category=Category.OSTEOPOROSIS,
            region=_vertebra(128),
        ),
        Finding(
            "L3",
            FindingSite.L3,
            included=False,
            reason="T-score differs by more than 1.0 from its neighbours",
            bmd_g_cm2=0.951,
            t_score=-0.9,
            category=Category.NORMAL,
            region=_vertebra(176),
        ),
        Finding(
            "L4",
            FindingSite.L4,
            bmd_g_cm2=0.760,
            t_score=-2.6,
            category=Category.OSTEOPOROSIS,
            region=_vertebra(224),
        ),
        Finding(
            "L1-L4",
            FindingSite.LUMBAR_SPINE,
            bmd_g_cm2=0.772,
            t_score=-2.5,
            category=Category.OSTEOPOROSIS,
            region=Region(((128.0, 80.0), (128.5, 170.0), (128.0, 258.0)), closed=False),
        ),
    )
    return _case(
        directory,
        ds,
        pipeline="lumbar",
        site=FindingSite.LUMBAR_SPINE,
        model=SYNTHETIC_MODEL,
        evaluable=True,
        category=Category.OSTEOPOROSIS,
        t_score=-2.5,
        findings=findings,
        notes=("WHO categories assume a postmenopausal woman or a man aged 50 or over",),
        heatmap=_blob(150, 128, 30),
        heatmap_meaning="evidence of lower bone density (Grad-CAM of the BMD estimate)",
    )


def chest_case(directory: Path) -> Case:
    """Two classifier stages on a CR film without orientation or spacing; no heat-map."""
    ds = source_dataset(modality="CR", projection_descriptors=False, seed=2)
    findings = (
        Finding(
            "Stage 1: osteoporosis",
            FindingSite.CHEST,
            probability=0.31,
            threshold=0.5,
            osteoporosis_present=False,
        ),
        Finding(
            "Stage 2: low bone mass",
            FindingSite.CHEST,
            probability=0.72,
            threshold=0.5,
            category=Category.LOW_BONE_MASS,
        ),
    )
    return _case(
        directory,
        ds,
        pipeline="chest",
        site=FindingSite.CHEST,
        model=RESEARCH_MODEL,
        evaluable=True,
        category=Category.LOW_BONE_MASS,
        findings=findings,
    )


def hip_case(directory: Path) -> Case:
    """Both sides; the left has a prosthesis and is not evaluable."""
    ds = source_dataset(modality="DX", projection_descriptors=True, seed=3)
    findings = (
        Finding(
            "Right hip",
            FindingSite.HIP,
            laterality=Laterality.RIGHT,
            probability=0.81,
            threshold=0.5,
            osteoporosis_present=True,
            category=Category.OSTEOPOROSIS,
            region=Region.box(20.0, 150.0, 110.0, 290.0),
        ),
        Finding(
            "Left hip",
            FindingSite.HIP,
            laterality=Laterality.LEFT,
            evaluable=False,
            included=False,
            reason="hip prosthesis",
            region=Region.box(146.0, 150.0, 236.0, 290.0),
        ),
    )
    return _case(
        directory,
        ds,
        pipeline="hip",
        site=FindingSite.HIP,
        model=DIAGNOSTIC_MODEL,
        evaluable=True,
        category=Category.OSTEOPOROSIS,
        findings=findings,
        heatmap=_blob(220, 65, 25),
    )


def hip_negative_case(directory: Path) -> Case:
    """Both sides below the two-class hip method's threshold: "not osteoporosis", no WHO category."""
    ds = source_dataset(modality="DX", projection_descriptors=True, seed=5)
    findings = tuple(
        Finding(
            name,
            FindingSite.HIP,
            laterality=laterality,
            probability=probability,
            threshold=0.5,
            osteoporosis_present=False,
            category=Category.NOT_OSTEOPOROSIS,
            region=Region.box(column0, 150.0, column0 + 90.0, 290.0),
        )
        for name, laterality, probability, column0 in (
            ("Right hip", Laterality.RIGHT, 0.23, 20.0),
            ("Left hip", Laterality.LEFT, 0.41, 146.0),
        )
    )
    return _case(
        directory,
        ds,
        pipeline="hip",
        site=FindingSite.HIP,
        model=DIAGNOSTIC_MODEL,
        evaluable=True,
        category=Category.NOT_OSTEOPOROSIS,
        findings=findings,
        heatmap=_blob(220, 190, 25),
    )


def not_evaluable_case(directory: Path) -> Case:
    """A lumbar film on which too few vertebrae were found."""
    ds = source_dataset(modality="CR", projection_descriptors=False, seed=4)
    findings = (
        Finding(
            "L2",
            FindingSite.L2,
            evaluable=False,
            included=False,
            reason="metal implant over the vertebral body",
        ),
    )
    return _case(
        directory,
        ds,
        pipeline="lumbar",
        site=FindingSite.LUMBAR_SPINE,
        model=SYNTHETIC_MODEL,
        evaluable=False,
        reason="fewer than two of L1-L4 could be measured",
        findings=findings,
    )


CASES = {
    "lumbar": lumbar_case,
    "chest": chest_case,
    "hip": hip_case,
    "hip_negative": hip_negative_case,
    "not_evaluable": not_evaluable_case,
}
