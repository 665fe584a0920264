"""The papers' transforms against small hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from osteonode.imaging.transforms import ScaleMap, grayscale_truncation, resize_with_scale, ztransform_2sigma
from osteonode.imaging.transforms import central_half_bounds


def test_grayscale_truncation_clips_to_the_central_range_and_stretches_to_255() -> None:
    # Central half of a 4 x 4 image is rows 1-2, columns 1-2: values 10, 20, 30, 40.
    pixels = np.array(
        [
            [0, 0, 100, 100],
            [0, 10, 20, 100],
            [0, 30, 40, 100],
            [5, 25, 35, 100],
        ]
    )

    out = grayscale_truncation(pixels, size=4)

    expected = (np.clip(pixels, 10, 40) - 10) * (255 / 30)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    assert out.dtype == np.float32


def test_grayscale_truncation_of_a_flat_centre_is_zero() -> None:
    pixels = np.full((8, 8), 7.0)
    pixels[0, 0] = 100.0

    np.testing.assert_array_equal(grayscale_truncation(pixels, size=4), np.zeros((4, 4)))


def test_grayscale_truncation_resizes_to_a_square_of_the_given_size() -> None:
    pixels = np.arange(30 * 50, dtype=float).reshape(30, 50)

    out = grayscale_truncation(pixels, size=16)

    assert out.shape == (16, 16)
    assert out.min() >= 0.0 and out.max() <= 255.0


@pytest.mark.parametrize(
    ("shape", "rows", "columns"),
    [((8, 8), slice(2, 6), slice(2, 6)), ((7, 9), slice(1, 6), slice(2, 7))],
)
def test_central_half_covers_the_pixels_touching_the_middle_rectangle(
    shape: tuple[int, int], rows: slice, columns: slice
) -> None:
    assert central_half_bounds(shape) == (rows, columns)


def test_ztransform_2sigma_divides_by_two_population_sigmas() -> None:
    # mean 2, population sigma 4 -> z = (x - 2) / 8
    pixels = np.array([[0, 0, 0, 0, 10]])

    np.testing.assert_allclose(ztransform_2sigma(pixels), [[-0.25, -0.25, -0.25, -0.25, 1.0]])


def test_ztransform_2sigma_clips_to_plus_minus_one() -> None:
    # Nine zeros and one 10: mean 1, sigma 3; z(10) = 9 / 6 = 1.5 -> 1, z(0) = -1/6.
    pixels = np.zeros((2, 5))
    pixels[1, 4] = 10

    out = ztransform_2sigma(pixels)

    assert out[1, 4] == 1.0
    np.testing.assert_allclose(out[0, 0], -1 / 6, rtol=1e-6)


def test_ztransform_2sigma_of_a_flat_image_is_zero() -> None:
    np.testing.assert_array_equal(ztransform_2sigma(np.full((3, 3), 5.0)), np.zeros((3, 3)))


def test_ztransform_2sigma_jitter_moves_the_divisor_within_epsilon_sigma() -> None:
    pixels = np.array([[1.0, 3.0]])  # mean 2, sigma 1, z = -+1 / divisor

    divisors = []
    for seed in range(20):
        out = ztransform_2sigma(pixels, jitter=0.5, rng=np.random.default_rng(seed))
        divisors.append(1.0 / out[0, 1])
    again = ztransform_2sigma(pixels, jitter=0.5, rng=np.random.default_rng(0))

    assert all(1.5 <= d <= 2.5 for d in divisors)
    assert len(set(np.round(divisors, 6))) > 1
    assert 1.0 / again[0, 1] == pytest.approx(divisors[0])


def test_ztransform_2sigma_rejects_a_negative_jitter() -> None:
    with pytest.raises(ValueError, match="jitter"):
        ztransform_2sigma(np.zeros((2, 2)), jitter=-0.1)


def test_downscaling_is_antialiased_with_a_triangle_filter() -> None:
    # Output pixel 0 of a 4 -> 2 resize is centred on source 0.5 with triangle weights
    # 0.75, 0.75, 0.25 over source pixels 0, 1, 2 (normalised by 1.75).
    row = np.array([[0.0, 7.0, 14.0, 70.0]])

    resized, scale_map = resize_with_scale(row, (1, 2))

    assert resized[0, 0] == pytest.approx((0.75 * 0 + 0.75 * 7 + 0.25 * 14) / 1.75, abs=1e-5)
    assert scale_map.scale == (1.0, 2.0)


def test_scale_map_maps_pixel_centres_and_edges_exactly() -> None:
    scale_map = ScaleMap(source_shape=(1000, 600), target_shape=(500, 400))

    # Target pixel centre (0, 0) covers source rows [-0.5, 1.5): centre 0.5.
    np.testing.assert_array_equal(scale_map.to_source([0, 0]), [0.5, 0.25])
    # The outer edges coincide.
    np.testing.assert_array_equal(scale_map.to_source([-0.5, -0.5]), [-0.5, -0.5])
    np.testing.assert_array_equal(scale_map.to_source([499.5, 399.5]), [999.5, 599.5])
    points = np.array([[12.25, 77.0], [499.0, 0.0]])
    np.testing.assert_allclose(scale_map.to_target(scale_map.to_source(points)), points)


def test_resize_keeps_a_feature_at_its_mapped_position() -> None:
    # With a scale of 3, target pixel (20, 10) is centred on source pixel (61, 31).
    source = np.zeros((90, 120))
    source[61, 31] = 1000.0

    resized, scale_map = resize_with_scale(source, (30, 40))

    peak = np.unravel_index(np.argmax(resized), resized.shape)
    assert peak == (20, 10)
    np.testing.assert_array_equal(scale_map.to_source(np.array(peak, dtype=float)), [61, 31])
    np.testing.assert_array_equal(scale_map.to_target([61.0, 31.0]), [20, 10])


def test_resize_rejects_an_invalid_size() -> None:
    with pytest.raises(ValueError, match="size"):
        resize_with_scale(np.zeros((4, 4)), 0)
