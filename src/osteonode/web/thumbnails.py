"""Small PNG pictures of the Secondary Captures the node made, for the admin page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

__all__ = ["THUMBNAIL_SIZE", "ThumbnailError", "thumbnail_png"]

#: Longest side of a thumbnail, in pixels.
THUMBNAIL_SIZE = 320


class ThumbnailError(ValueError):
    """The file is gone or is not an 8-bit picture the page can show."""


def thumbnail_png(path: Path, size: int = THUMBNAIL_SIZE) -> bytes:
    """A PNG of the Secondary Capture at ``path``, its longest side ``size`` pixels at most.

    Parameters
    ----------
    path
        A Secondary Capture file written by the node (RGB or greyscale, 8 bits).
    size
        Longest side of the thumbnail.

    Raises
    ------
    ThumbnailError
        If the file is missing (purged after its retention) or holds no 8-bit single-frame image.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except FileNotFoundError:
        raise ThumbnailError(
            f"{path.name} is no longer in the spool (purged after its retention)"
        ) from None
    except Exception as error:  # noqa: BLE001 - an unreadable file is an answer, not a crash
        raise ThumbnailError(
            f"{path.name} cannot be read: {type(error).__name__}: {error}"
        ) from None
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ThumbnailError(f"{path.name} is not an 8-bit single-frame picture")
    picture = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L")
    picture.thumbnail((size, size))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
