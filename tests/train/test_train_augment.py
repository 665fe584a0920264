"""Declarative augmentation: specs a card can record, applied by albumentations, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from osteonode.train.augment import (
    CHEST_STRONG,
    CHEST_WEAK,
    HIP_PAPER,
    AugmentationSpec,
    Combine,
    Step,
    TransformName,
)

PAPER_STRONG_NAMES = {
    "Blur", "MotionBlur", "MedianBlur", "ShiftScaleRotate", "GridDistortion", "ElasticTransform",
    "OpticalDistortion", "RandomGamma", "GridDropout",
}


def _films(count: int = 6) -> np.ndarray:
    return (np.random.default_rng(0).random((count, 48, 40)) * 255).astype(np.float32)


def test_the_chest_specs_name_the_papers_transforms() -> None:
    assert {step.name.value for step in CHEST_WEAK.steps} >= {"HorizontalFlip"}
    assert {step.name.value for step in CHEST_STRONG.steps} >= PAPER_STRONG_NAMES | {"HorizontalFlip"}
    for name in PAPER_STRONG_NAMES:
        assert name in CHEST_STRONG.describe()


@pytest.mark.parametrize("spec", [CHEST_WEAK, CHEST_STRONG, HIP_PAPER], ids=["weak", "strong", "hip"])
def test_the_same_generator_state_gives_the_same_images(spec: AugmentationSpec) -> None:
    augment = spec.augmenter(value_range=(0.0, 255.0))
    films = _films()
    first = augment(films, np.random.default_rng(7))
    again = augment(films, np.random.default_rng(7))
    other = augment(films, np.random.default_rng(8))
    assert first.shape == films.shape and first.dtype == np.float32
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= 0.0 and first.max() <= 255.0


def test_a_flip_that_always_fires_mirrors_every_image_and_keeps_the_value_range() -> None:
    mirror = AugmentationSpec((Step(TransformName.HORIZONTAL_FLIP, 1.0),)).augmenter((-1.0, 1.0))
    crops = np.random.default_rng(1).uniform(-1, 1, (3, 16, 16)).astype(np.float32)
    assert np.allclose(mirror(crops, np.random.default_rng(0)), crops[..., ::-1], atol=1e-6)
    single = mirror(crops[0], np.random.default_rng(0))
    assert single.shape == (16, 16) and np.allclose(single, crops[0, :, ::-1], atol=1e-6)


def test_one_of_applies_a_single_step_per_image() -> None:
    spec = AugmentationSpec(
        (Step(TransformName.NO_OP, 1.0), Step(TransformName.HORIZONTAL_FLIP, 0.0)),
        Combine.ONE_OF,
    )
    films = _films(4)
    assert np.allclose(spec.augmenter((0.0, 255.0))(films, np.random.default_rng(3)), films, atol=1e-3)


def test_the_description_records_names_parameters_and_probabilities() -> None:
    step = Step(TransformName.RANDOM_GAMMA, 0.3, {"gamma_limit": [80, 120]})
    assert step.describe() == "RandomGamma(gamma_limit=(80, 120), p=0.3)"
    assert HIP_PAPER.describe().startswith("one_of: NoOp(p=1); GaussianBlur(")


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Step("Posterize"), ValueError, "unknown transform 'Posterize'"),
        (lambda: Step(TransformName.BLUR, 1.5), ValueError, "probability"),
        (lambda: Step(TransformName.BLUR, 0.5, {"blur_limit": {"a": 1}}), TypeError, "blur_limit"),
        (lambda: Step(TransformName.BLUR, 0.5, {"sigma": 3.0}), ValueError, "not valid for transform"),
        (lambda: AugmentationSpec(()), ValueError, "at least one step"),
        (lambda: AugmentationSpec(("Blur",)), TypeError, "Step"),
        (lambda: CHEST_WEAK + HIP_PAPER, ValueError, "joined"),
        (lambda: CHEST_WEAK.augmenter((1.0, 1.0)), ValueError, "increasing"),
        (lambda: CHEST_WEAK.augmenter()(np.zeros((1, 1, 8, 8)), np.random.default_rng()), ValueError, "batch"),
        (lambda: CHEST_WEAK.augmenter()(np.zeros((8, 8)), 3), TypeError, "Generator"),
    ],
)
def test_bad_specs_and_inputs_are_refused_with_the_reason(make, error, message: str) -> None:
    with pytest.raises(error, match=message):
        make()
