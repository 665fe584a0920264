"""The Secondary Capture overlay: size, colours, legend and banner text."""

from __future__ import annotations

import numpy as np
import pytest

from osteonode.imaging.overlay import (
    HEAT_COLOUR_TABLE,
    MAX_HEAT_ALPHA,
    heat_colours,
    heatmap_overlay,
)

BANNER = ["OSTEOPOROSIS 87%", "not for diagnostic use"]


def _white_pixels(rgb: np.ndarray) -> np.ndarray:
    return np.all(rgb >= 200, axis=-1)


def test_overlay_has_the_source_size_and_is_8_bit_rgb() -> None:
    grey = np.zeros((123, 161), dtype=np.uint8)

    out = heatmap_overlay(grey, np.zeros((123, 161)), BANNER)

    assert out.shape == (123, 161, 3)
    assert out.dtype == np.uint8


def test_banner_text_is_drawn_white_on_dark_across_the_top() -> None:
    grey = np.full((200, 300), 90, dtype=np.uint8)
    heat = np.zeros((200, 300))

    with_banner = heatmap_overlay(grey, heat, BANNER)
    without_banner = heatmap_overlay(grey, heat, [])

    strip = with_banner[:20, :150]
    assert _white_pixels(strip).sum() > 20
    assert not _white_pixels(without_banner[:20, :150]).any()
    # The strip is dark where there is no text.
    assert np.median(strip) < 40
    # Below the banner and away from the legend the image is untouched.
    np.testing.assert_array_equal(with_banner[150:, :100], 90)


def test_heat_is_blended_with_warm_colours_where_high() -> None:
    grey = np.full((100, 100), 100, dtype=np.uint8)
    heat = np.zeros((100, 100))
    heat[60:90, 10:40] = 1.0

    out = heatmap_overlay(grey, heat, [])

    hot = out[75, 25].astype(float)
    expected = 100 * (1 - MAX_HEAT_ALPHA) + HEAT_COLOUR_TABLE[255] * MAX_HEAT_ALPHA
    np.testing.assert_allclose(hot, np.rint(expected), atol=1)
    assert hot[0] > hot[2]
    np.testing.assert_array_equal(out[75, 60], [100, 100, 100])


def test_colour_map_runs_from_cold_to_warm() -> None:
    cold, warm = heat_colours(np.array([0.0, 0.8]))

    assert cold[2] > cold[0]
    assert warm[0] > warm[2]
    assert HEAT_COLOUR_TABLE.shape == (256, 3)


def test_legend_shows_the_colour_bar_on_the_right() -> None:
    out = heatmap_overlay(np.zeros((300, 300), dtype=np.uint8), np.zeros((300, 300)), [])

    right = out[:, 270:]
    warm = (right[..., 0] > 150) & (right[..., 2] < 80)
    cold = (right[..., 2] > 150) & (right[..., 0] < 100)
    assert warm.any() and cold.any()
    assert np.argwhere(warm)[:, 0].mean() < np.argwhere(cold)[:, 0].mean()


def test_a_smaller_heatmap_is_stretched_over_the_whole_image() -> None:
    heat = np.zeros((10, 10))
    heat[:, 5:] = 1.0

    out = heatmap_overlay(np.full((100, 100), 50, dtype=np.uint8), heat, [])

    assert out[80, 70, 0] > out[80, 20, 0]


@pytest.mark.parametrize(
    ("grey", "heat", "lines", "error"),
    [
        (np.zeros((10, 10)), np.zeros((10, 10)), [], TypeError),
        (np.zeros((10, 10), dtype=np.uint8), np.full((10, 10), 1.5), [], ValueError),
        (np.zeros((10, 10), dtype=np.uint8), np.full((10, 10), np.nan), [], ValueError),
        (np.zeros((10, 10), dtype=np.uint8), np.zeros((10, 10)), "text", TypeError),
        (np.zeros((40, 400), dtype=np.uint8), np.zeros((40, 400)), ["a"] * 9, ValueError),
    ],
)
def test_invalid_inputs_are_rejected(
    grey: np.ndarray, heat: np.ndarray, lines: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        heatmap_overlay(grey, heat, lines)  # type: ignore[arg-type]
