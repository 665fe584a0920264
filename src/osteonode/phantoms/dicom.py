"""Write phantom radiographs as CR or DX (For Presentation) DICOM files the way vendors do.

Lower-case wording appears only in descriptions (LO): Body Part Examined and View Position are CS,
whose character set has no lower case, and ``dciodvfy`` rejects lower case there.

Each file draws one :class:`DicomVariant`: modality, photometric interpretation, bits stored, how
the VOI transform is carried, which spacing attributes describe the pixels, the transfer syntax, and
the identifying header text (Body Part Examined, View Position, descriptions) a modality of some
vendor would fill in.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from osteonode.bone import Sex
from osteonode.phantoms.enum import Modality, Part, SpacingKind, VoiKind

CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_IMAGE_STORAGE_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)
#: Uncompressed syntaxes are written directly; the others through ``Dataset.compress``.
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class HeaderText:
    """How one vendor labels a study of a body part."""

    body_part: str | None  # None leaves Body Part Examined out, "" writes it empty
    view_position: str
    study_description: str
    series_description: str


#: Labelling variants per part, as different modalities fill them.
HEADER_TEXTS: dict[Part, tuple[HeaderText, ...]] = {
    Part.LUMBAR: (
        HeaderText("LSPINE", "AP", "XR LUMBAR SPINE 2 VIEWS", "L-SPINE AP"),
        HeaderText("L SPINE", "AP", "Lumbar spine", "AP"),
        HeaderText("", "", "Lumbar spine AP", "LWS a.p."),
        HeaderText("ABDOMEN", "AP", "KUB", "Abdomen supine"),
        HeaderText(None, "PA", "XR L-SPINE", "lumbar spine pa"),
        HeaderText("", "", "lumbar spine", "lws ap"),
    ),
    Part.CHEST: (
        HeaderText("CHEST", "PA", "XR CHEST PA", "PA"),
        HeaderText("CHEST", "", "Chest PA", "Thorax p.a."),
        HeaderText("", "PA", "CHEST 1 VIEW", "chest pa"),
        HeaderText(None, "PA", "Thorax", "Chest PA erect"),
    ),
    Part.HIP: (
        HeaderText("HIP", "AP", "XR HIPS BILATERAL", "Pelvis AP"),
        HeaderText("PELVIS", "AP", "Pelvis", "AP"),
        HeaderText("", "", "Becken a.p.", "pelvis ap"),
        HeaderText(None, "AP", "XR PELVIS AND HIPS", "Hip AP"),
    ),
}

#: SNOMED CT codes for the Anatomic Region Sequence of DX objects.
_ANATOMIC_REGION = {
    Part.LUMBAR: ("122496007", "Lumbar spine"),
    Part.CHEST: ("816094009", "Chest"),
    Part.HIP: ("12921003", "Pelvis"),
}
#: View Code Sequence values (SNOMED CT) by View Position.
_VIEW_CODES = {"AP": ("399348003", "antero-posterior"), "PA": ("399300004", "postero-anterior")}
#: Body Part Examined defined terms of unpaired parts (General Series Laterality is then absent).
_UNPAIRED_BODY_PARTS = frozenset({"LSPINE", "CHEST", "ABDOMEN", "PELVIS"})
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://osteonode.invalid/phantoms")
_MANUFACTURERS = (
    ("Phantom Imaging", "CR-100"),
    ("Osteonode Synthetic", "DR Flat 43"),
    ("Acme Radiography", "XR-9"),
)


@dataclass(frozen=True)
class DicomVariant:
    """The encoding choices of one file."""

    modality: Modality
    monochrome1: bool
    bits_stored: int
    voi: VoiKind
    spacing: SpacingKind
    transfer_syntax: UID
    header: HeaderText
    manufacturer: tuple[str, str]


def choose_variant(part: Part, rng: np.random.Generator) -> DicomVariant:
    """Draw the encoding choices of one file.

    Parameters
    ----------
    part:
        Body part drawn (selects the header wording).
    rng:
        The image's random generator.
    """

    def pick(options: tuple):
        return options[int(rng.integers(len(options)))]

    modality = pick((Modality.CR, Modality.DX))
    # DX For Presentation needs a VOI transform; CR may leave it to the viewer.
    voi_options = (
        (VoiKind.WINDOW, VoiKind.LUT, VoiKind.NONE)
        if modality is Modality.CR
        else (VoiKind.WINDOW, VoiKind.LUT)
    )
    spacing_options = (
        (SpacingKind.PIXEL, SpacingKind.IMAGER)
        if modality is Modality.CR
        else (SpacingKind.IMAGER, SpacingKind.BOTH)
    )
    return DicomVariant(
        modality=modality,
        monochrome1=pick((False, True)),
        bits_stored=pick((10, 12, 14, 15, 16)),
        voi=pick(voi_options),
        spacing=pick(spacing_options),
        transfer_syntax=pick(TRANSFER_SYNTAXES),
        header=pick(HEADER_TEXTS[part]),
        manufacturer=pick(_MANUFACTURERS),
    )


@dataclass(frozen=True)
class Identity:
    """Patient, study and instance identity of one phantom file (all synthetic)."""

    patient_name: str
    patient_id: str
    sex: Sex
    age: int
    accession: str
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_of_reference_uid: str
    acquired: dt.datetime


def make_identity(seed: int, part: Part, index: int, sex: Sex, age: int) -> Identity:
    """Deterministic synthetic identity: UIDs hash (seed, part, index), dates follow the seed."""

    def uid(kind: str) -> str:
        # A name-based (version 5) UUID under the 2.25 root: stable, and unique per name. (pydicom's
        # generate_uid ignores its entropy sources when asked for a 2.25 UID, so it cannot be used.)
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{seed}/{part.value}/{index}/{kind}').int}"

    acquired = dt.datetime(2024, 1, 1, 8, 0) + dt.timedelta(
        days=(seed * 37 + index) % 700, minutes=(seed + 7 * index) % 600
    )
    return Identity(
        patient_name=f"PHANTOM^{part.value.upper()}{index:05d}",
        patient_id=f"PH{seed % 100000:05d}{part.value[0].upper()}{index:06d}",
        sex=sex,
        age=age,
        accession=f"A{seed % 10000:04d}{index:07d}",
        study_uid=uid("study"),
        series_uid=uid("series"),
        sop_uid=uid("instance"),
        frame_of_reference_uid=uid("frame"),
        acquired=acquired,
    )


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _voi_lut(stored: np.ndarray, low: int, high: int) -> Dataset:
    """A sigmoid VOI LUT over [low, high] with 16-bit output entries."""
    entries = int(min(high - low + 1, 65535))
    x = np.linspace(-4.0, 4.0, entries)
    table = np.round(65535 / (1 + np.exp(-x))).astype("<u2")
    item = Dataset()
    item.add(DataElement(0x00283002, "US", [entries, int(low), 16]))
    item.LUTExplanation = "PHANTOM SIGMOID"
    item.add(DataElement(0x00283006, "OW", table.tobytes()))
    return item


def build_dataset(
    image: np.ndarray,
    variant: DicomVariant,
    identity: Identity,
    part: Part,
    spacing_mm: float,
    magnification: float,
    burned_text: bool,
    exposure_kvp: float,
) -> Dataset:
    """Build the dataset of one phantom radiograph.

    Parameters
    ----------
    image:
        Display image in [0, 1] with bone bright.
    variant:
        Encoding choices.
    identity:
        Synthetic patient/study/instance identity.
    part:
        Body part drawn.
    spacing_mm:
        Detector pixel pitch (Imager Pixel Spacing).
    magnification:
        Estimated radiographic magnification; Pixel Spacing is ``spacing_mm / magnification``.
    burned_text:
        Whether text was burned into the pixels.
    exposure_kvp:
        Nominal tube voltage to record.

    Returns
    -------
    pydicom.dataset.Dataset
        Uncompressed dataset with file meta for ``variant.transfer_syntax`` when it is native.
    """
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    maximum = (1 << variant.bits_stored) - 1
    stored = np.round(np.clip(image, 0.0, 1.0) * maximum).astype(np.uint16)
    if variant.monochrome1:
        stored = (maximum - stored).astype(np.uint16)
    date = identity.acquired.strftime("%Y%m%d")
    time = identity.acquired.strftime("%H%M%S")
    birth = identity.acquired.date().replace(month=1, day=1) - dt.timedelta(days=365 * identity.age)
    header = variant.header
    is_dx = variant.modality is Modality.DX

    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DX_IMAGE_STORAGE_FOR_PRESENTATION if is_dx else CR_IMAGE_STORAGE
    ds.SOPInstanceUID = identity.sop_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    # Patient
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = f"{birth.year:04d}0101"
    ds.PatientSex = identity.sex.value
    # General Study, Patient Study
    ds.StudyInstanceUID = identity.study_uid
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = ""
    ds.StudyID = identity.accession[-8:]
    ds.AccessionNumber = identity.accession
    ds.StudyDescription = header.study_description
    ds.PatientAge = f"{identity.age:03d}Y"
    # General Series, CR Series / DX Series
    ds.Modality = variant.modality.value
    ds.SeriesInstanceUID = identity.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.SeriesDescription = header.series_description
    if header.body_part is not None:
        ds.BodyPartExamined = header.body_part
    elif not is_dx:
        ds.BodyPartExamined = ""  # Type 2 in the CR Series module
    ds.ViewPosition = header.view_position
    if is_dx:
        ds.PresentationIntentType = "FOR PRESENTATION"
    elif header.body_part not in _UNPAIRED_BODY_PARTS:
        # Type 2C for paired or unrecognised parts; empty says "both or unknown" (a bilateral film).
        ds.Laterality = ""
    # Frame of Reference is not written: projection images have none.
    # General Equipment
    ds.Manufacturer, ds.ManufacturerModelName = variant.manufacturer
    ds.InstitutionName = "Osteonode Phantom Site"
    ds.StationName = "PHANTOM1"
    ds.SoftwareVersions = "osteonode-phantoms"
    # General Acquisition, General Image
    ds.AcquisitionDate = date
    ds.AcquisitionTime = time
    ds.ContentDate = date
    ds.ContentTime = time
    ds.InstanceNumber = 1
    # Drawn in the standard display of frontal films: the patient's left on the image right, feet
    # down, for AP and PA alike.
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""] if is_dx else ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "YES" if burned_text else "NO"
    ds.LossyImageCompression = "00"
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if variant.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = variant.bits_stored
    ds.HighBit = variant.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()
    # CR Image / DX Image, DX Detector, DX Anatomy Imaged, DX Positioning
    ds.KVP = round(exposure_kvp, 1)
    ds.DistanceSourceToDetector = 1150.0
    ds.DistanceSourceToPatient = round(1150.0 / magnification, 1)
    pitch = f"{spacing_mm:.6f}".rstrip("0")
    calibrated = f"{spacing_mm / magnification:.6f}".rstrip("0")
    # CR vendors usually put the detector pitch in Pixel Spacing; DX separates the two.
    if variant.spacing is SpacingKind.PIXEL:
        ds.PixelSpacing = [pitch, pitch]
    elif variant.spacing is SpacingKind.IMAGER:
        ds.ImagerPixelSpacing = [pitch, pitch]
    else:
        ds.ImagerPixelSpacing = [pitch, pitch]
        ds.PixelSpacing = [calibrated, calibrated]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Estimated radiographic magnification"
    if is_dx:
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if variant.monochrome1 else 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "INVERSE" if variant.monochrome1 else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
        ds.PositionerType = "COLUMN"
        ds.EstimatedRadiographicMagnificationFactor = round(magnification, 4)
        ds.ImageLaterality = "B" if part is Part.HIP else "U"
        ds.AnatomicRegionSequence = Sequence([_code(*_ANATOMIC_REGION[part])])
        ds.AcquisitionContextSequence = Sequence()
        if header.view_position in _VIEW_CODES:
            ds.ViewCodeSequence = Sequence([_code(*_VIEW_CODES[header.view_position])])
    # VOI LUT
    body = stored[
        stored.shape[0] // 4 : 3 * stored.shape[0] // 4 : 4,
        stored.shape[1] // 4 : 3 * stored.shape[1] // 4 : 4,
    ]
    low, high = (int(v) for v in np.percentile(body, [1.0, 99.0]))
    high = max(high, low + 2)
    if variant.voi is VoiKind.WINDOW:
        ds.WindowCenter = f"{(low + high) / 2:.1f}"
        ds.WindowWidth = f"{high - low:.1f}"
        ds.VOILUTFunction = "LINEAR"
    elif variant.voi is VoiKind.LUT:
        ds.VOILUTSequence = Sequence([_voi_lut(stored, low, high)])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = (
        variant.transfer_syntax if variant.transfer_syntax in _NATIVE else ExplicitVRLittleEndian
    )
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    meta.ImplementationVersionName = "OSTEONODE_PH"
    ds.file_meta = meta
    return ds


def write_dataset(ds: Dataset, path: Path, transfer_syntax: UID) -> None:
    """Encode (compressing losslessly where asked) and write a dataset as a DICOM file."""
    if transfer_syntax not in _NATIVE:
        # Lossless: the pixels do not change, so neither does the SOP Instance UID.
        ds.compress(transfer_syntax, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
