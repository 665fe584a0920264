"""Phantom patients: sex, age and site bone mineral density with their T-scores.

The model works in T-score units: a patient has one skeletal z value (mean falls with age, faster
in women after 50) and each site adds its own smaller deviation. The numbers are tuned so that the
over-50 population splits roughly into thirds of normal / low bone mass / osteoporosis; they are a
phantom assumption, not epidemiology.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteonode.bone import Category, Sex

#: Young-adult reference for L1-L4 areal BMD (g/cm2, mean, SD). A phantom assumption, not a
#: clinical reference: real lumbar references are manufacturer databases (METHODS.md section 4).
LUMBAR_REFERENCE = (1.047, 0.110)
#: The DXA scale the phantom BMD values are on (the ``bmd_manufacturer`` column of a cohort):
#: :data:`LUMBAR_REFERENCE` is the Hologic L1-L4 reference of the shipped ``reference.toml`` and the
#: hip references are NHANES III, measured on Hologic scanners; so a phantom's T-score and WHO
#: category are those the node computes from its BMD on a Hologic site.
BMD_MANUFACTURER = "hologic"
#: NHANES III femoral neck, white women 20-29 (METHODS.md section 4).
FEMORAL_NECK_REFERENCE = (0.858, 0.120)
#: NHANES III total hip, white women 20-29 (METHODS.md section 4).
TOTAL_HIP_REFERENCE = (0.942, 0.122)

#: Vertebrae drawn on a lumbar film, top to bottom.
VERTEBRAE = ("T12", "L1", "L2", "L3", "L4", "L5")
#: Vertebrae whose mean gives the L1-L4 BMD.
L1_L4 = ("L1", "L2", "L3", "L4")
#: Each vertebra's BMD relative to the L1-L4 mean (density rises caudally).
_VERTEBRA_RATIO = {"T12": 0.93, "L1": 0.96, "L2": 0.99, "L3": 1.01, "L4": 1.04, "L5": 1.02}

AGE_RANGE = (40, 90)


def t_score(bmd: float, reference: tuple[float, float]) -> float:
    """T-score of a BMD against a (mean, SD) young-adult reference, rounded to 0.01."""
    mean, sd = reference
    return round((bmd - mean) / sd, 2)


def who_category(score: float) -> Category:
    """WHO category of a phantom's exact T-score (METHODS.md section 4): its ground truth.

    Unlike :func:`osteonode.bone.who_category`, which decides on the reported one-decimal value as a
    report must, the truth is decided on the T-score itself.
    """
    if score >= -1.0:
        return Category.NORMAL
    if score <= -2.5:
        return Category.OSTEOPOROSIS
    return Category.LOW_BONE_MASS


@dataclass(frozen=True)
class HipSide:
    """Ground truth of one proximal femur."""

    neck_bmd: float
    total_hip_bmd: float

    @property
    def t_score(self) -> float:
        """Lowest of femoral neck and total hip T-score (ISCD)."""
        return min(
            t_score(self.neck_bmd, FEMORAL_NECK_REFERENCE),
            t_score(self.total_hip_bmd, TOTAL_HIP_REFERENCE),
        )

    @property
    def category(self) -> Category:
        return who_category(self.t_score)


@dataclass(frozen=True)
class Patient:
    """A phantom patient with BMD at every site the generator can draw.

    Attributes
    ----------
    sex, age:
        Demographics (age in whole years).
    vertebra_bmd:
        Areal BMD (g/cm2) per vertebra in :data:`VERTEBRAE`.
    right_hip, left_hip:
        Patient's right and left proximal femur.
    """

    sex: Sex
    age: int
    vertebra_bmd: dict[str, float]
    right_hip: HipSide
    left_hip: HipSide

    @property
    def lumbar_bmd(self) -> float:
        """Mean BMD of L1-L4 (g/cm2)."""
        return round(float(np.mean([self.vertebra_bmd[v] for v in L1_L4])), 4)

    @property
    def lumbar_t_score(self) -> float:
        return t_score(self.lumbar_bmd, LUMBAR_REFERENCE)

    @property
    def lowest_t_score(self) -> float:
        """Lowest T-score over lumbar spine and both hips, the chest ground truth."""
        return min(self.lumbar_t_score, self.right_hip.t_score, self.left_hip.t_score)

    @property
    def skeletal_quality(self) -> float:
        """Whole-skeleton density relative to young adults (1.0 = reference mean)."""
        spine = self.lumbar_bmd / LUMBAR_REFERENCE[0]
        hips = (self.right_hip.total_hip_bmd + self.left_hip.total_hip_bmd) / (
            2 * TOTAL_HIP_REFERENCE[0]
        )
        return (spine + hips) / 2


def _mean_skeletal_z(sex: Sex, age: int) -> float:
    """Expected skeletal T-score at an age: faster loss in women after 50."""
    if sex is Sex.FEMALE:
        return -0.5 - 0.085 * max(0, age - 48)
    return -0.4 - 0.045 * max(0, age - 50)


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw one phantom patient.

    Parameters
    ----------
    rng:
        The image's random generator.

    Returns
    -------
    Patient
    """
    sex = Sex.FEMALE if rng.random() < 0.5 else Sex.MALE
    age = int(rng.integers(AGE_RANGE[0], AGE_RANGE[1] + 1))
    z = _mean_skeletal_z(sex, age) + rng.normal(0.0, 0.95)
    # Sites share the skeletal z; each adds its own deviation (spine and hip correlate ~0.7).
    z_spine = z + rng.normal(0.0, 0.45)
    z_hip = z + rng.normal(0.0, 0.45)
    spine_mean = LUMBAR_REFERENCE[0] + LUMBAR_REFERENCE[1] * z_spine
    vertebra_bmd = {
        name: round(max(0.35, spine_mean * ratio + rng.normal(0.0, 0.02)), 4)
        for name, ratio in _VERTEBRA_RATIO.items()
    }
    sides = []
    for _ in range(2):
        z_side = z_hip + rng.normal(0.0, 0.15)
        neck = FEMORAL_NECK_REFERENCE[0] + FEMORAL_NECK_REFERENCE[1] * (
            z_side + rng.normal(0, 0.25)
        )
        total = TOTAL_HIP_REFERENCE[0] + TOTAL_HIP_REFERENCE[1] * (z_side + rng.normal(0, 0.15))
        sides.append(HipSide(round(max(0.3, neck), 4), round(max(0.35, total), 4)))
    return Patient(sex, age, vertebra_bmd, right_hip=sides[0], left_hip=sides[1])
