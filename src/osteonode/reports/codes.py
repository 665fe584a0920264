"""Every coded concept osteonode writes into its reports, in one place.

Each constant is a :class:`pydicom.sr.coding.Code`. Most are in pydicom's concept dictionary
(``pydicom.sr.codedict.codes``) and carry the dictionary's code meaning word for word; the test
suite checks that they still agree. The few that the dictionary lacks (LOINC bone-density
observables, two SNOMED CT disorders and two UCUM units) are listed in
:data:`OUTSIDE_DICTIONARY` with the primary source their value and meaning were checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydicom.sr.coding import Code

from osteonode.bone import Laterality
from osteonode.pipelines.base import Category, FindingSite

__all__ = [
    "ABSENT",
    "BMD_FEMUR",
    "BMD_LUMBAR_SPINE",
    "CERTAINTY_OF_FINDING",
    "CHEST",
    "CLASSIFICATION",
    "COMMENT",
    "ESTIMATED",
    "FINDING",
    "G_PER_CM2",
    "HIP",
    "INDETERMINATE",
    "L1_VERTEBRA",
    "L2_VERTEBRA",
    "L3_VERTEBRA",
    "L4_VERTEBRA",
    "LEFT",
    "LUMBAR_SPINE",
    "NORMAL",
    "OSTEOPENIA",
    "OSTEOPOROSIS",
    "OUTSIDE_DICTIONARY",
    "PERCENT",
    "PRESENT",
    "PROCEDURE_XR_CHEST",
    "PROCEDURE_XR_HIP",
    "PROCEDURE_XR_LUMBAR_SPINE",
    "QUALITATIVE_EVALUATIONS",
    "RIGHT",
    "T_SCORE_FEMUR",
    "T_SCORE_LUMBAR_SPINE",
    "T_SCORE_UNIT",
    "all_codes",
    "bmd_concept",
    "body_region",
    "category_code",
    "category_evaluation",
    "finding_site_code",
    "laterality_code",
    "procedure_code",
    "t_score_concept",
]

# Anatomy (SNOMED CT); the vertebrae use the CID 7151 meanings, not the "Bone structure of" ones.
L1_VERTEBRA = Code("66794005", "SCT", "L1 vertebra")
L2_VERTEBRA = Code("14293000", "SCT", "L2 vertebra")
L3_VERTEBRA = Code("36470004", "SCT", "L3 vertebra")
L4_VERTEBRA = Code("11994002", "SCT", "L4 vertebra")
LUMBAR_SPINE = Code("122496007", "SCT", "Lumbar spine")
CHEST = Code("816094009", "SCT", "Chest")
HIP = Code("29836001", "SCT", "Hip")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")

# Diagnoses and qualitative values (SNOMED CT).
OSTEOPOROSIS = Code("64859006", "SCT", "Osteoporosis")
OSTEOPENIA = Code("312894000", "SCT", "Osteopenia")
NORMAL = Code("17621005", "SCT", "Normal")
INDETERMINATE = Code("82334004", "SCT", "Indeterminate")
CLASSIFICATION = Code("278201002", "SCT", "Classification (attribute)")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
ESTIMATED = Code("414135002", "SCT", "Estimated")

# Measurements (LOINC; DICOM for the classifier's probability).
BMD_LUMBAR_SPINE = Code("24966-4", "LN", "DXA Lumbar spine [Mass/Area] Bone density")
BMD_FEMUR = Code("24701-5", "LN", "DXA Femur [Mass/Area] Bone density")
T_SCORE_LUMBAR_SPINE = Code("38267-1", "LN", "DXA Lumbar spine [T-score] Bone density")
T_SCORE_FEMUR = Code("38263-0", "LN", "DXA Femur [T-score] Bone density")
CERTAINTY_OF_FINDING = Code("111012", "DCM", "Certainty of Finding")

# Free text in a measurement group: reasons, exclusions, intended-use notes.
COMMENT = Code("121106", "DCM", "Comment")

# Procedure reported (CID 100 is extensible): a plain radiograph of the film's body region.
PROCEDURE_XR_LUMBAR_SPINE = Code("24972-2", "LN", "XR Lumbar spine Views")
PROCEDURE_XR_CHEST = Code("30745-4", "LN", "XR Chest Views")
PROCEDURE_XR_HIP = Code("24762-7", "LN", "XR Hip Views")

# Root-level evaluations of the report (TID 1500 "Qualitative Evaluations"): the synthetic or
# research model's disclaimer, stated as a finding of the whole report.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
FINDING = Code("121071", "DCM", "Finding")

# Units (UCUM).
G_PER_CM2 = Code("g/cm2", "UCUM", "gram per square centimeter")
T_SCORE_UNIT = Code("{T-score}", "UCUM", "T-score")
PERCENT = Code("%", "UCUM", "Percent")

#: Codes not in pydicom's concept dictionary, with the source their value and meaning come from.
OUTSIDE_DICTIONARY: Mapping[Code, str] = MappingProxyType(
    {
        BMD_LUMBAR_SPINE: "LOINC 24966-4, long common name 'DXA Lumbar spine [Mass/Area] Bone"
        " density' (loinc.org; member of panel 83311-1 'Bone density quantitative measurement"
        " by DXA panel')",
        BMD_FEMUR: "LOINC 24701-5, long common name 'DXA Femur [Mass/Area] Bone density'"
        " (loinc.org; used as the code of the HL7 FHIR example observation-example-bmd)",
        T_SCORE_LUMBAR_SPINE: "LOINC 38267-1 'DXA Lumbar spine [T-score] Bone density',"
        " example UCUM unit {T-score} (loinc.org)",
        T_SCORE_FEMUR: "LOINC 38263-0 'DXA Femur [T-score] Bone density', example UCUM unit"
        " {T-score} (loinc.org)",
        OSTEOPOROSIS: "SNOMED CT 64859006 'Osteoporosis (disorder)' (SNOMED CT International"
        " browser; mapped to ICD-10 M81)",
        OSTEOPENIA: "SNOMED CT 312894000 'Osteopenia (disorder)' (SNOMED CT International"
        " browser; UMLS C0029453 preferred term 'Osteopenia')",
        G_PER_CM2: "UCUM expression g/cm2: gram per square centimetre; UCUM writes exponents"
        " without a caret (unitsofmeasure.org, section 'Syntax rules')",
        PROCEDURE_XR_LUMBAR_SPINE: "LOINC 24972-2 'XR Lumbar spine Views' (LOINC/RSNA radiology"
        " playbook)",
        PROCEDURE_XR_CHEST: "LOINC 30745-4 'XR Chest Views' (LOINC/RSNA radiology playbook)",
        PROCEDURE_XR_HIP: "LOINC 24762-7 'XR Hip Views' (LOINC/RSNA radiology playbook)",
        QUALITATIVE_EVALUATIONS: "UMLS C0034375 'Qualitative Evaluations', the concept name of"
        " TID 1500's root-level qualitative evaluations container (DICOM PS3.16 TID 1500)",
        T_SCORE_UNIT: "UCUM annotation {T-score}, the unit LOINC gives for 38267-1 and 38263-0;"
        " an annotation is the unit 1 (unitsofmeasure.org, 'Curly braces')",
    }
)

_FINDING_SITES: Mapping[FindingSite, Code] = MappingProxyType(
    {
        FindingSite.L1: L1_VERTEBRA,
        FindingSite.L2: L2_VERTEBRA,
        FindingSite.L3: L3_VERTEBRA,
        FindingSite.L4: L4_VERTEBRA,
        FindingSite.LUMBAR_SPINE: LUMBAR_SPINE,
        FindingSite.CHEST: CHEST,
        FindingSite.HIP: HIP,
    }
)

_LUMBAR_SITES = frozenset(
    {FindingSite.L1, FindingSite.L2, FindingSite.L3, FindingSite.L4, FindingSite.LUMBAR_SPINE}
)

_LATERALITIES: Mapping[Laterality, Code] = MappingProxyType(
    {Laterality.LEFT: LEFT, Laterality.RIGHT: RIGHT}
)

_WHO_CATEGORIES: Mapping[Category, Code] = MappingProxyType(
    {
        Category.NORMAL: NORMAL,
        Category.LOW_BONE_MASS: OSTEOPENIA,
        Category.OSTEOPOROSIS: OSTEOPOROSIS,
    }
)


#: The body region, and the procedure code, of each finding site.
_BODY_REGIONS: Mapping[FindingSite, FindingSite] = MappingProxyType(
    {site: FindingSite.LUMBAR_SPINE for site in _LUMBAR_SITES}
    | {FindingSite.CHEST: FindingSite.CHEST, FindingSite.HIP: FindingSite.HIP}
)
_PROCEDURES: Mapping[FindingSite, Code] = MappingProxyType(
    {
        FindingSite.LUMBAR_SPINE: PROCEDURE_XR_LUMBAR_SPINE,
        FindingSite.CHEST: PROCEDURE_XR_CHEST,
        FindingSite.HIP: PROCEDURE_XR_HIP,
    }
)


def body_region(site: FindingSite) -> FindingSite:
    """The body region a site lies in: the lumbar spine for a vertebra, else the site itself."""
    return _BODY_REGIONS[FindingSite(site)]


def procedure_code(site: FindingSite) -> Code:
    """The LOINC radiograph procedure of the body region a site lies in."""
    return _PROCEDURES[body_region(site)]


def finding_site_code(site: FindingSite) -> Code:
    """The SNOMED CT anatomy code of a finding site."""
    return _FINDING_SITES[FindingSite(site)]


def laterality_code(laterality: Laterality) -> Code:
    """The SNOMED CT code of a side."""
    return _LATERALITIES[Laterality(laterality)]


def category_code(category: Category) -> Code:
    """The SNOMED CT disorder (or "Normal") that names a WHO category.

    Raises
    ------
    ValueError
        For :attr:`Category.NOT_OSTEOPOROSIS`, which names no WHO category (normal and low bone
        mass alike); :func:`category_evaluation` encodes it.
    """
    category = Category(category)
    if category not in _WHO_CATEGORIES:
        raise ValueError(f"{category.value!r} is no WHO category and has no classification code")
    return _WHO_CATEGORIES[category]


def category_evaluation(category: Category) -> tuple[Code, Code]:
    """The qualitative evaluation (concept name, value) that states an answer in an SR.

    A WHO category is a classification (278201002) with its disorder or "Normal" code; "not
    osteoporosis" is osteoporosis (64859006) absent (272519000), so that no osteopenia or normal
    code is claimed for a patient whose WHO category the method cannot tell.
    """
    category = Category(category)
    if category is Category.NOT_OSTEOPOROSIS:
        return OSTEOPOROSIS, ABSENT
    return CLASSIFICATION, category_code(category)


def bmd_concept(site: FindingSite) -> Code:
    """The LOINC BMD observable for a site.

    Raises
    ------
    ValueError
        For the chest, which has no DXA BMD observable.
    """
    return _dxa_concept(site, lumbar=BMD_LUMBAR_SPINE, femur=BMD_FEMUR, what="BMD")


def t_score_concept(site: FindingSite) -> Code:
    """The LOINC T-score observable for a site.

    Raises
    ------
    ValueError
        For the chest, which has no DXA T-score observable.
    """
    return _dxa_concept(site, lumbar=T_SCORE_LUMBAR_SPINE, femur=T_SCORE_FEMUR, what="T-score")


def _dxa_concept(site: FindingSite, *, lumbar: Code, femur: Code, what: str) -> Code:
    site = FindingSite(site)
    if site in _LUMBAR_SITES:
        return lumbar
    if site is FindingSite.HIP:
        return femur
    raise ValueError(f"there is no DXA {what} concept for the finding site {site.value!r}")


def all_codes() -> dict[str, Code]:
    """Every code constant of this module by name (for the dictionary check)."""
    return {name: value for name, value in globals().items() if isinstance(value, Code)}
