"""Images into uint8 arrays at a model's shape, one at a time or a chunk at a time.

Any file Pillow reads becomes a (C, size, size) uint8 array in grayscale (L)
or RGB: transparency onto white, 16-bit and float images scaled to 8 bits
(not clipped), CIELAB converted through a colour profile, other modes through
Pillow. What cannot be read (broken files, dangling links, images over
Pillow's decompression-bomb limit) is skipped and counted, never a crash.

This module imports Pillow and NumPy only, so the worker processes that decode
a large dataset on every core start in a fraction of a second.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
GRAY_MODES = ("1", "L", "LA", "La", "I", "F", "P;gray") + SIXTEEN_BIT
# Every way a hostile or damaged file fails inside Pillow.
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError,
                 Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError)


def to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale images as 8-bit L, scaled rather than clipped."""
    arr = np.asarray(im)
    if im.mode in SIXTEEN_BIT:
        arr = arr.astype(np.float64) / 257.0
    elif im.mode == "I":   # 32-bit integers; a 16-bit PNG opens as this in some Pillow versions
        top = float(arr.max()) if arr.size else 0.0
        arr = arr.astype(np.float64) / (257.0 if 255 < top <= 65535 else max(top, 255.0) / 255.0)
    else:                  # "F": floats, in [0, 1] or in [0, 255]
        arr = np.nan_to_num(arr.astype(np.float64))
        arr = arr * 255.0 if arr.size and arr.max() <= 1.0 else arr
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    from PIL import ImageCms

    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(im, transform)


def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Any PIL image as L (1 channel) or RGB (3), transparency onto white."""
    if im.mode in SIXTEEN_BIT + ("I", "F"):
        im = to_8bit(im)
    elif im.mode == "LAB":
        im = _lab_to_rgb(im)
    elif im.mode in ("La", "RGBa"):   # premultiplied alpha
        im = im.convert("RGBA")
    if im.mode in ("P", "PA") and ("transparency" in im.info or im.mode == "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im.convert("RGBA"))
    return im.convert("L" if channels == 1 else "RGB")


def image_to_array(im: Image.Image, size: int, channels: int) -> np.ndarray:
    """A PIL image as a uint8 array (C, size, size) at the model's resolution."""
    im = to_mode(im, channels)
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def open_image(item) -> Image.Image:
    """A path, raw bytes, or a Hugging Face image cell ({"bytes": ..., "path": ...}) as a PIL image."""
    if isinstance(item, dict):
        item = item.get("bytes") if item.get("bytes") is not None else item.get("path")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(item)))
    if isinstance(item, (str, Path)):
        return Image.open(item)
    raise TypeError(f"not an image: {type(item).__name__}")


def image_mode(item) -> str | None:
    """The mode of an image, read from its header, or None if it cannot be read (a bomb included)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(item) as im:
                return im.mode
    except DECODE_ERRORS:
        return None


def decode(item, size: int, channels: int) -> tuple[np.ndarray | None, bool]:
    """(array, converted) for one image, or (None, False) if it cannot be read.

    Images over Pillow's pixel limit (`Image.MAX_IMAGE_PIXELS`) count as unreadable
    instead of being decoded into gigabytes.
    """
    target = "L" if channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(item) as im:
                return image_to_array(im, size, channels), im.mode != target
    except DECODE_ERRORS:
        return None, False


def decode_chunk(items: list, size: int, channels: int,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, list[int], int, int]:
    """Decode a list of images: (arrays of the readable ones, their positions in `items`, converted, skipped).

    out: a (len(items) or more, channels, size, size) uint8 array to decode into (the arrays returned are its
    first rows), so that decoding chunk after chunk reuses one buffer instead of allocating each chunk's.
    """
    if out is None:
        out = np.empty((len(items), channels, size, size), dtype=np.uint8)
    kept, converted = [], 0
    for i, item in enumerate(items):
        arr, was_converted = decode(item, size, channels)
        if arr is not None:
            out[len(kept)] = arr
            kept.append(i)
            converted += was_converted
    return out[:len(kept)], kept, converted, len(items) - len(kept)


def mode_channels(mode: str) -> int:
    """1 for grayscale modes, 3 for colour ones."""
    return 1 if mode in GRAY_MODES else 3
