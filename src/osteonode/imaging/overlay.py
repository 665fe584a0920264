"""The Secondary Capture picture: the film with its heat-map, and a text margin below it.

Nothing is written over the film. The heat-map is blended onto it (with 8-bit lookup tables, so a
2500 x 2500 film costs one table look-up per pixel, not a float64 blend), and the answer, the key
numbers and the colour legend go into a dark margin added *below* the film. The film keeps its
top-left corner at (0, 0) and its pixel size, so the picture's coordinates are the source's and
the SR's outlines fall on the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "HEAT_COLOUR_STOPS",
    "HEAT_COLOUR_TABLE",
    "HEAT_FLOOR",
    "MARGIN_BACKGROUND",
    "MAX_HEAT_ALPHA",
    "MIN_CAPTURE_WIDTH",
    "blend_heatmap",
    "compose_capture",
    "heat_colours",
]

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

#: Opacity of the colour at heat 1.
MAX_HEAT_ALPHA = 0.6
#: Heat below this share of the map's peak is not coloured: Grad-CAM's faint tail spreads over
#: the whole film, and colouring it washes out the bone the reader needs to see. Above it the
#: opacity rises linearly to :data:`MAX_HEAT_ALPHA`.
HEAT_FLOOR = 0.2

#: Narrowest picture: a narrower film gets dark space on its right, so the margin's text stays
#: readable on a small image.
MIN_CAPTURE_WIDTH = 512
#: The margin's background and text colours.
MARGIN_BACKGROUND = (16, 16, 16)
TEXT_COLOUR = (255, 255, 255)
#: Body text size as a share of the picture's width, and its bounds in pixels.
_FONT_SHARE = 1 / 56
_FONT_SIZES = (12, 44)
#: The first line (the answer) is this much larger than the rest.
_HEADLINE_SCALE = 1.35


def _colour_table() -> np.ndarray:
    positions = np.array([stop for stop, _ in HEAT_COLOUR_STOPS])
    colours = np.array([colour for _, colour in HEAT_COLOUR_STOPS], dtype=np.float64)
    levels = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(levels, positions, colours[:, c]) for c in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


#: The colour map as a 256-entry RGB lookup table.
HEAT_COLOUR_TABLE: np.ndarray = _colour_table()
HEAT_COLOUR_TABLE.flags.writeable = False


def _blend_table() -> np.ndarray:
    """RGB of every (heat level, grey level) pair, flattened: index ``heat * 256 + grey``."""
    heat = np.linspace(0.0, 1.0, 256)
    alpha = MAX_HEAT_ALPHA * np.clip((heat - HEAT_FLOOR) / (1.0 - HEAT_FLOOR), 0.0, 1.0)
    grey = np.arange(256, dtype=np.float64)
    blended = (
        grey[None, :, None] * (1.0 - alpha[:, None, None])
        + HEAT_COLOUR_TABLE[:, None, :].astype(np.float64) * alpha[:, None, None]
    )
    return np.rint(blended).astype(np.uint8).reshape(256 * 256, 3)


_BLEND_TABLE: np.ndarray = _blend_table()
_BLEND_TABLE.flags.writeable = False


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
    return HEAT_COLOUR_TABLE[_heat_levels(np.asarray(heat, dtype=np.float32))]


def _heat_levels(heat: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] as 8-bit levels 0..255 (rounded to nearest)."""
    scaled = np.clip(heat, 0.0, 1.0) * np.float32(255.0)
    scaled += np.float32(0.5)
    return scaled.astype(np.uint8)


def blend_heatmap(grey: np.ndarray, heatmap: np.ndarray | None) -> np.ndarray:
    """Blend a heat-map onto a display image through an 8-bit lookup table.

    Each pixel's colour is looked up from its grey level and its heat quantised to 256 levels;
    heat below :data:`HEAT_FLOOR` leaves the grey untouched.

    Parameters
    ----------
    grey : numpy.ndarray
        uint8 (H, W) display image (e.g. from ``display_window``).
    heatmap : numpy.ndarray or None
        Finite values in [0, 1], shaped (H, W); None leaves the film grey.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3) RGB image.

    Raises
    ------
    TypeError
        When `grey` is not a uint8 array.
    ValueError
        When `grey` is not a non-empty 2-D array, or the heat-map differs from it in shape,
        is not finite, or leaves [0, 1].
    """
    if not isinstance(grey, np.ndarray) or grey.dtype != np.uint8:
        raise TypeError("grey must be a uint8 numpy array")
    if grey.ndim != 2 or 0 in grey.shape:
        raise ValueError(f"grey must be a non-empty 2-D array, got shape {grey.shape}")
    if heatmap is None:
        return np.repeat(grey[..., None], 3, axis=2)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != grey.shape:
        raise ValueError(f"heatmap shape {heat.shape} differs from the image's {grey.shape}")
    if not np.all(np.isfinite(heat)) or heat.min() < -1e-6 or heat.max() > 1 + 1e-6:
        raise ValueError("heatmap values must be finite and within [0, 1]")
    index = _heat_levels(heat).astype(np.uint16)
    index <<= 8
    index |= grey
    return np.take(_BLEND_TABLE, index, axis=0)


@dataclass(frozen=True)
class _Layout:
    """Fonts and sizes of the margin, scaled with the picture's width."""

    width: int
    pad: int
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    headline_font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    line_height: int
    headline_height: int

    @classmethod
    def for_width(cls, width: int) -> _Layout:
        size = int(np.clip(round(width * _FONT_SHARE), *_FONT_SIZES))
        headline = round(size * _HEADLINE_SCALE)
        return cls(
            width=width,
            pad=size,
            font=ImageFont.load_default(size=size),
            headline_font=ImageFont.load_default(size=headline),
            line_height=round(size * 1.35),
            headline_height=round(headline * 1.35),
        )

    @property
    def text_width(self) -> int:
        return self.width - 2 * self.pad


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Break `text` at spaces (a word too long on its own at characters) to fit `width` px."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > width and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and font.getlength(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines


def compose_capture(
    film: np.ndarray, text_lines: Sequence[str], legend: str | None = None
) -> np.ndarray:
    """The film with a dark margin below it holding the text and the heat-map legend.

    Parameters
    ----------
    film : numpy.ndarray
        uint8 (H, W, 3) RGB film (from :func:`blend_heatmap`); copied unchanged to the top-left.
    text_lines : sequence of str
        The answer first (drawn larger), then the key numbers; each is wrapped to the width.
    legend : str or None
        What the colours mean (e.g. "Evidence of osteoporosis (Grad-CAM)"), written above a
        colour bar from low to high; None draws no bar.

    Returns
    -------
    numpy.ndarray
        uint8 RGB picture, at least (H, W) plus the margin; the film occupies rows 0..H-1 and
        columns 0..W-1.

    Raises
    ------
    TypeError
        When `film` is not a uint8 RGB array or the texts are not strings.
    ValueError
        When `film` is empty or `text_lines` has no line.
    """
    if not isinstance(film, np.ndarray) or film.dtype != np.uint8:
        raise TypeError("film must be a uint8 numpy array")
    if film.ndim != 3 or film.shape[2] != 3 or 0 in film.shape:
        raise ValueError(f"film must be a non-empty (H, W, 3) array, got shape {film.shape}")
    if isinstance(text_lines, str) or not all(isinstance(line, str) for line in text_lines):
        raise TypeError("text_lines must be a sequence of strings")
    if not text_lines:
        raise ValueError("text_lines needs at least the answer line")
    if legend is not None and not isinstance(legend, str):
        raise TypeError(f"legend must be a string or None, not {type(legend).__name__}")
    rows, columns = film.shape[:2]
    layout = _Layout.for_width(max(columns, MIN_CAPTURE_WIDTH))
    headline = _wrap(text_lines[0], layout.headline_font, layout.text_width)
    body = [part for line in text_lines[1:] for part in _wrap(line, layout.font, layout.text_width)]
    caption = [] if legend is None else _wrap(f"Colour: {legend}", layout.font, layout.text_width)
    bar_height = layout.line_height if legend is not None else 0
    margin = (
        2 * layout.pad
        + len(headline) * layout.headline_height
        + len(body) * layout.line_height
        + (len(caption) * layout.line_height + bar_height + layout.pad // 2 if caption else 0)
    )
    # Only the margin is drawn with PIL; the film is copied once, as an array.
    panel = Image.new("RGB", (layout.width, margin), MARGIN_BACKGROUND)
    draw = ImageDraw.Draw(panel)
    top = layout.pad
    for line in headline:
        draw.text((layout.pad, top), line, fill=TEXT_COLOUR, font=layout.headline_font)
        top += layout.headline_height
    for line in body:
        draw.text((layout.pad, top), line, fill=TEXT_COLOUR, font=layout.font)
        top += layout.line_height
    if caption:
        top += layout.pad // 2
        for line in caption:
            draw.text((layout.pad, top), line, fill=TEXT_COLOUR, font=layout.font)
            top += layout.line_height
        _draw_colour_bar(panel, draw, layout, top, bar_height)
    canvas = np.empty((rows + margin, layout.width, 3), dtype=np.uint8)
    canvas[:rows, columns:] = MARGIN_BACKGROUND
    canvas[:rows, :columns] = film
    canvas[rows:] = np.asarray(panel, dtype=np.uint8)
    return canvas


def _draw_colour_bar(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: _Layout, top: int, height: int
) -> None:
    """A horizontal bar from the lowest coloured heat (left, "low") to the peak (right, "high")."""
    low_width = int(layout.font.getlength("low"))
    high_width = int(layout.font.getlength("high"))
    gap = layout.pad // 2
    left = layout.pad + low_width + gap
    right = layout.width - layout.pad - high_width - gap
    length = max(2, right - left)
    levels = np.linspace(HEAT_FLOOR, 1.0, length, dtype=np.float32)[None, :].repeat(height, 0)
    canvas.paste(Image.fromarray(heat_colours(levels), mode="RGB"), (left, top))
    draw.text((layout.pad, top), "low", fill=TEXT_COLOUR, font=layout.font)
    draw.text((left + length + gap, top), "high", fill=TEXT_COLOUR, font=layout.font)
