"""Synthetic radiographs with known ground truth: lumbar spine, chest and hip phantoms written as
CR/DX DICOM files with a flat ground-truth table.

Typical use::

    from osteonode.phantoms import make_cohort, read_cohort
    table = make_cohort("lumbar", n=100, out_dir="phantoms/lumbar", seed=1, size=768)
    records = read_cohort(table)
"""

from osteonode.bone import Category
from osteonode.phantoms.cohort import (
    COHORT_FILE,
    PhantomError,
    PhantomRecord,
    SideTruth,
    make_cohort,
    make_sample_set,
    read_cohort,
)
from osteonode.phantoms.demographics import (
    FEMORAL_NECK_REFERENCE,
    LUMBAR_REFERENCE,
    TOTAL_HIP_REFERENCE,
)
from osteonode.phantoms.enum import HardCase, Part

__all__ = [
    "COHORT_FILE",
    "FEMORAL_NECK_REFERENCE",
    "LUMBAR_REFERENCE",
    "TOTAL_HIP_REFERENCE",
    "Category",
    "HardCase",
    "Part",
    "PhantomError",
    "PhantomRecord",
    "SideTruth",
    "make_cohort",
    "make_sample_set",
    "read_cohort",
]
