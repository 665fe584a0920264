"""The paper's augmentations in torch: blur, sharpen, shear, small rotation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osteonode.train.augment import (
    Augmentation,
    AugmentationRanges,
    affine,
    gaussian_blur,
    random_choice_augment,
    sharpen,
)


def _images(n: int = 3) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(n, 1, 32, 40)).astype(np.float32))


def test_blur_keeps_a_flat_image_and_smooths_noise() -> None:
    flat = torch.full((1, 1, 16, 16), 0.7)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)
    noisy = _images()
    assert float(gaussian_blur(noisy, 1.5).std()) < 0.5 * float(noisy.std())


def test_blur_takes_one_sigma_per_image_and_zero_leaves_an_image_alone() -> None:
    images = _images(2)
    blurred = gaussian_blur(images, [0.0, 2.0])
    assert torch.allclose(blurred[0], images[0], atol=1e-5)
    assert not torch.allclose(blurred[1], images[1], atol=1e-2)


def test_sharpen_raises_detail_and_zero_amount_changes_nothing() -> None:
    images = _images()
    assert torch.allclose(sharpen(images, 0.0), images)
    assert float(sharpen(images, 1.0).std()) > float(images.std())


def test_rotation_by_a_quarter_turn_turns_a_bar() -> None:
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 16, 4:29] = 1.0  # a horizontal bar through the centre
    turned = affine(image, rotation_deg=90.0)[0, 0]
    assert float(turned[4:29, 16].mean()) > 0.9
    assert float(turned[16, 4:12].mean()) < 0.1


def test_shear_moves_rows_below_the_centre_to_the_right() -> None:
    image = torch.zeros(1, 1, 41, 41)
    image[0, 0, :, 20] = 1.0  # a vertical line through the centre
    sheared = affine(image, shear_deg=20.0)[0, 0]
    assert int(sheared[35].argmax()) > 20 > int(sheared[5].argmax())


def test_identity_affine_changes_nothing() -> None:
    images = _images()
    assert torch.allclose(affine(images), images, atol=1e-5)


def test_random_choice_is_reproducible_from_the_generator_and_keeps_shape() -> None:
    images = _images(8)
    first = random_choice_augment(images, np.random.default_rng(5))
    second = random_choice_augment(images, np.random.default_rng(5))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, second)


def test_original_only_returns_the_images_unchanged() -> None:
    images = _images()
    out = random_choice_augment(images, np.random.default_rng(1), choices=[Augmentation.ORIGINAL])
    assert torch.equal(out, images) and out is not images


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gaussian_blur(torch.zeros(4, 4), 1.0), "float"),
        (
            lambda: gaussian_blur(torch.zeros(2, 1, 8, 8), [1.0, 2.0, 3.0]),
            "one value or one per image",
        ),
        (lambda: sharpen(torch.zeros(1, 1, 8, 8), -1.0), ">= 0"),
        (lambda: affine(torch.zeros(1, 1, 8, 8), shear_deg=90.0), "within"),
        (lambda: AugmentationRanges(rotation_deg=60.0), "rotation_deg"),
        (
            lambda: random_choice_augment(
                torch.zeros(1, 1, 8, 8), np.random.default_rng(), choices=[]
            ),
            "empty",
        ),
    ],
)
def test_bad_arguments_are_refused(call, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        call()
