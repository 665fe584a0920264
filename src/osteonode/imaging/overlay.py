"""Heat-map overlay for the Secondary Capture: colour map, legend and result banner.

The output keeps the source image's size (the banner is drawn inside it), so the
Secondary Capture has the same geometry as the radiograph it explains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Control points (heat, (R, G, B)) of the heat colour map: a rainbow-like ramp from
#: dark blue through cyan, green and yellow to dark red, so warm colours mean high
#: heat; lightness rises to yellow and falls to red, as in turbo-like maps.
HEAT_COLOUR_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.00, (48, 18, 59)),
    (0.13, (65, 90, 220)),
    (0.30, (35, 180, 230)),
    (0.45, (40, 235, 150)),
    (0.60, (160, 245, 60)),
    (0.72, (240, 200, 40)),
    (0.85, (245, 110, 25)),
    (1.00, (150, 15, 5)),
)

#: Opacity of the colour at heat 1; opacity is proportional to heat.
MAX_HEAT_ALPHA = 0.6

#: Banner and legend colours.
BANNER_BACKGROUND = (16, 16, 16)
TEXT_COLOUR = (255, 255, 255)

#: Font sizes (pixels): preferred range, and the floor when shrinking long lines to fit.
PREFERRED_FONT_SIZES = (10, 48)
MIN_FONT_SIZE = 6
#: The image-height fraction the banner may take.
MAX_BANNER_FRACTION = 0.5


def _colour_table() -> np.ndarray:
    positions = np.array([stop for stop, _ in HEAT_COLOUR_STOPS])
    colours = np.array([colour for _, colour in HEAT_COLOUR_STOPS], dtype=np.float64)
    levels = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(levels, positions, colours[:, c]) for c in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


#: The colour map as a 256-entry RGB lookup table.
HEAT_COLOUR_TABLE: np.ndarray = _colour_table()
HEAT_COLOUR_TABLE.flags.writeable = False


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """Colour a heat-map in [0, 1] with :data:`HEAT_COLOUR_TABLE`.

    Parameters
    ----------
    heat : numpy.ndarray
        Values in [0, 1] (clipped).

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``heat.shape + (3,)``.
    """
    index = np.rint(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.intp)
    return HEAT_COLOUR_TABLE[index]


def heatmap_overlay(
    grey: np.ndarray, heatmap: np.ndarray, banner_lines: Sequence[str]
) -> np.ndarray:
    """Blend a heat-map over a display image and add a legend and a text banner.

    Parameters
    ----------
    grey : numpy.ndarray
        uint8 (H, W) display image (e.g. from ``display_window``).
    heatmap : numpy.ndarray
        Finite values in [0, 1] covering the same field of view; resized
        bilinearly to (H, W) when its shape differs.
    banner_lines : sequence of str
        Lines written white on dark in a strip across the top; none gives no strip.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3) RGB image.

    Raises
    ------
    TypeError
        When `grey` is not uint8 or `banner_lines` is not a sequence of strings.
    ValueError
        When an array is not 2-D, the heat-map is outside [0, 1] or not finite, or
        the banner does not fit in half the image height.
    """
    grey, heat, lines = _checked(grey, heatmap, banner_lines)
    alpha = (MAX_HEAT_ALPHA * heat)[..., None]
    blended = grey[..., None].astype(np.float64) * (1.0 - alpha) + heat_colours(heat) * alpha
    image = Image.fromarray(np.rint(blended).astype(np.uint8), mode="RGB")
    layout = _Layout.for_image(image.size, lines)
    draw = ImageDraw.Draw(image)
    _draw_banner(draw, image.size, lines, layout)
    _draw_legend(image, draw, layout)
    return np.asarray(image, dtype=np.uint8)


def _checked(
    grey: np.ndarray, heatmap: np.ndarray, banner_lines: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not isinstance(grey, np.ndarray) or grey.dtype != np.uint8:
        raise TypeError("grey must be a uint8 numpy array")
    if grey.ndim != 2 or 0 in grey.shape:
        raise ValueError(f"grey must be a non-empty 2-D array, got shape {grey.shape}")
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2 or 0 in heat.shape:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {heat.shape}")
    if not np.all(np.isfinite(heat)) or heat.min() < -1e-6 or heat.max() > 1 + 1e-6:
        raise ValueError("heatmap values must be finite and within [0, 1]")
    if heat.shape != grey.shape:  # display only: Pillow's bilinear resize, no torch on the report side
        heat = np.asarray(
            Image.fromarray(heat.astype(np.float32), mode="F").resize(
                (grey.shape[1], grey.shape[0]), Image.Resampling.BILINEAR
            )
        )
    if isinstance(banner_lines, str) or not all(isinstance(line, str) for line in banner_lines):
        raise TypeError("banner_lines must be a sequence of strings")
    return grey, np.clip(heat, 0.0, 1.0), list(banner_lines)


@dataclass(frozen=True)
class _Layout:
    """Sizes, in pixels, derived from the image size so text scales with the image."""

    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    line_height: int
    margin: int
    banner_height: int

    @classmethod
    def for_image(cls, size: tuple[int, int], lines: list[str]) -> _Layout:
        width, height = size
        margin = max(2, min(width, height) // 100)
        font_size = int(np.clip(min(width, height) // 30, *PREFERRED_FONT_SIZES))
        font = ImageFont.load_default(size=font_size)
        # Shrink the text until the widest line fits across the image.
        widest = max(lines, key=len, default="")
        while font_size > MIN_FONT_SIZE and font.getlength(widest) > width - 2 * margin:
            font_size -= 1
            font = ImageFont.load_default(size=font_size)
        line_height = int(round(font_size * 1.3))
        banner_height = len(lines) * line_height + 2 * margin if lines else 0
        if banner_height > MAX_BANNER_FRACTION * height:
            raise ValueError(
                f"a banner of {len(lines)} lines ({banner_height} px) does not fit in "
                f"half of an image {height} px high"
            )
        return cls(font=font, line_height=line_height, margin=margin, banner_height=banner_height)


def _draw_banner(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], lines: list[str], layout: _Layout
) -> None:
    if not lines:
        return
    draw.rectangle((0, 0, size[0] - 1, layout.banner_height - 1), fill=BANNER_BACKGROUND)
    for number, line in enumerate(lines):
        top = layout.margin + number * layout.line_height
        draw.text((layout.margin, top), line, fill=TEXT_COLOUR, font=layout.font)


def _draw_legend(image: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout) -> None:
    """A vertical colour bar, high at the top, labelled on its left, in a dark box."""
    width, height = image.size
    margin = layout.margin
    label_width = int(max(layout.font.getlength("high"), layout.font.getlength("low")))
    bar_width = max(4, width // 60)
    top = layout.banner_height + margin
    available = height - top - margin
    bar_height = min(max(8, height // 4), available)
    if bar_height < 8:
        return
    bar_left = width - margin - bar_width
    box_left = bar_left - margin - label_width - margin
    draw.rectangle(
        (box_left, top - margin // 2, width - 1, top + bar_height + margin // 2),
        fill=BANNER_BACKGROUND,
    )
    levels = np.linspace(1.0, 0.0, bar_height)[:, None].repeat(bar_width, axis=1)
    image.paste(Image.fromarray(heat_colours(levels), mode="RGB"), (bar_left, top))
    text_left = box_left + margin
    draw.text((text_left, top), "high", fill=TEXT_COLOUR, font=layout.font)
    draw.text(
        (text_left, top + bar_height - layout.line_height),
        "low",
        fill=TEXT_COLOUR,
        font=layout.font,
    )
