"""The Secondary Capture picture: lookup-table blending, the film untouched, text in a margin."""

from __future__ import annotations

import numpy as np
import pytest

from osteonode.imaging.overlay import (
    HEAT_COLOUR_TABLE,
    HEAT_FLOOR,
    MARGIN_BACKGROUND,
    MAX_HEAT_ALPHA,
    MIN_CAPTURE_WIDTH,
    blend_heatmap,
    compose_capture,
    heat_colours,
)

LINES = ["Osteoporosis, T-score -2.7", "L1 0.701 g/cm2 T -2.9", "not for diagnostic use"]


def _white_pixels(rgb: np.ndarray) -> np.ndarray:
    return np.all(rgb >= 200, axis=-1)


def _float_blend(grey: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The blend written out in floating point, as the lookup table must reproduce it."""
    alpha = MAX_HEAT_ALPHA * np.clip((heat - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1)[..., None]
    colour = HEAT_COLOUR_TABLE[np.rint(heat * 255).astype(int)].astype(float)
    return grey[..., None] * (1 - alpha) + colour * alpha


def test_lookup_table_blend_matches_the_floating_point_blend() -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    heat = (np.round(rng.random((64, 80)) * 255) / 255).astype(np.float32)

    out = blend_heatmap(grey, heat)

    assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
    np.testing.assert_allclose(out, _float_blend(grey, heat), atol=0.51)


def test_heat_is_blended_with_warm_colours_where_high_and_faint_heat_leaves_the_film_grey() -> None:
    grey = np.full((100, 100), 100, dtype=np.uint8)
    heat = np.zeros((100, 100), dtype=np.float32)
    heat[60:90, 10:40] = 1.0
    heat[10:20, 10:20] = HEAT_FLOOR / 2

    out = blend_heatmap(grey, heat)

    hot = out[75, 25].astype(float)
    expected = 100 * (1 - MAX_HEAT_ALPHA) + HEAT_COLOUR_TABLE[255] * MAX_HEAT_ALPHA
    np.testing.assert_allclose(hot, np.rint(expected), atol=1)
    assert hot[0] > hot[2]
    np.testing.assert_array_equal(out[75, 60], [100, 100, 100])
    np.testing.assert_array_equal(out[15, 15], [100, 100, 100])


def test_no_heatmap_gives_the_grey_film_in_colour_channels() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(blend_heatmap(grey, None), np.repeat(grey[..., None], 3, 2))


def test_colour_map_runs_from_cold_to_warm() -> None:
    cold, warm = heat_colours(np.array([0.0, 0.8]))

    assert cold[2] > cold[0]
    assert warm[0] > warm[2]
    assert HEAT_COLOUR_TABLE.shape == (256, 3)


def test_text_goes_below_the_film_which_keeps_its_pixels_and_origin() -> None:
    film = np.full((700, 600, 3), 90, dtype=np.uint8)

    out = compose_capture(film, LINES)

    assert out.shape[1] == 600 and out.shape[0] > 700
    np.testing.assert_array_equal(out[:700], film)
    margin = out[700:]
    assert _white_pixels(margin).sum() > 100
    assert np.all(margin[0] == MARGIN_BACKGROUND)  # a dark gap before the first line


def test_a_narrow_film_is_widened_with_dark_space_so_the_text_stays_readable() -> None:
    film = np.full((300, 120, 3), 90, dtype=np.uint8)

    out = compose_capture(film, LINES)

    assert out.shape[1] == MIN_CAPTURE_WIDTH
    np.testing.assert_array_equal(out[:300, :120], film)
    assert np.all(out[:300, 120:] == MARGIN_BACKGROUND)


def test_long_lines_wrap_instead_of_shrinking_the_text() -> None:
    film = np.zeros((100, 600, 3), dtype=np.uint8)
    short = compose_capture(film, ["Not evaluable", "Reason: metal"])
    long = compose_capture(film, ["Not evaluable", "Reason: " + "metal implant " * 30])

    assert long.shape[0] > short.shape[0]  # more lines, same font size
    assert long.shape[1] == short.shape[1]


def test_legend_caption_and_colour_bar_run_from_low_on_the_left_to_high_on_the_right() -> None:
    film = np.zeros((100, 800, 3), dtype=np.uint8)
    plain = compose_capture(film, LINES)
    with_legend = compose_capture(film, LINES, "evidence of osteoporosis (Grad-CAM)")

    assert with_legend.shape[0] > plain.shape[0]
    bar = with_legend[plain.shape[0] :]
    warm = (bar[..., 0] > 150) & (bar[..., 2] < 80)
    cold = (bar[..., 2] > 150) & (bar[..., 0] < 100)
    assert warm.any() and cold.any()
    assert np.argwhere(warm)[:, 1].mean() > np.argwhere(cold)[:, 1].mean()
    assert not (plain[100:].max(-1).astype(int) - plain[100:].min(-1) > 60).any()


@pytest.mark.parametrize(
    ("grey", "heat", "error"),
    [
        (np.zeros((10, 10)), np.zeros((10, 10)), TypeError),
        (np.zeros((10, 10), dtype=np.uint8), np.full((10, 10), 1.5), ValueError),
        (np.zeros((10, 10), dtype=np.uint8), np.full((10, 10), np.nan), ValueError),
        (np.zeros((10, 10), dtype=np.uint8), np.zeros((5, 10)), ValueError),
        (np.zeros((10,), dtype=np.uint8), None, ValueError),
    ],
)
def test_invalid_blend_inputs_are_rejected(
    grey: np.ndarray, heat: np.ndarray | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        blend_heatmap(grey, heat)


@pytest.mark.parametrize(
    ("film", "lines", "legend", "error"),
    [
        (np.zeros((10, 10, 3)), LINES, None, TypeError),
        (np.zeros((10, 10), dtype=np.uint8), LINES, None, ValueError),
        (np.zeros((10, 10, 3), dtype=np.uint8), "text", None, TypeError),
        (np.zeros((10, 10, 3), dtype=np.uint8), [], None, ValueError),
        (np.zeros((10, 10, 3), dtype=np.uint8), LINES, 3, TypeError),
    ],
)
def test_invalid_compose_inputs_are_rejected(
    film: np.ndarray, lines: object, legend: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        compose_capture(film, lines, legend)  # type: ignore[arg-type]
