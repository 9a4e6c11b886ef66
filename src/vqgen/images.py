"""Pictures out: PNG grids and strips, labelled where a grid needs words, and GIFs (imageio).

Small images are scaled up by whole factors (nearest neighbour) so a 28x28
digit is big enough to see; `--frames` files stay at the model's resolution.
Labels (which row is the original, which epoch, which digit) are drawn with
Pillow's built-in font, so they never depend on a font the system may lack.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from vqgen.files import readable, write_bytes

MIN_TILE = 96   # smaller images are scaled up by a whole factor to about this size
PADDING = 2     # white pixels between tiles
GAP = 8         # between a label and the tiles


def upscale_factor(size: int) -> int:
    return max(1, math.ceil(MIN_TILE / size))


def upscale(images: torch.Tensor, factor: int | None = None) -> torch.Tensor:
    factor = factor or upscale_factor(images.shape[-1])
    return images if factor == 1 else F.interpolate(images, scale_factor=factor, mode="nearest")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8; grayscale stays 2-D per image."""
    arr = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def grid_image(images: torch.Tensor, nrow: int, padding: int = PADDING, pad_value: float = 1.0) -> torch.Tensor:
    """Tiles (N, C, H, W) into one (C, H', W') image, scaled up when small.

    The layout of torchvision's `make_grid` (`padding` pixels around and between tiles, `nrow` a row),
    without importing torchvision: its import pulls in torch._dynamo, about 3 s for every command.
    """
    x = upscale(images.detach().cpu().float())
    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (C, H, W) image in [0, 1] as a PIL image."""
    return Image.fromarray(to_uint8(image.unsqueeze(0))[0])


def font_for(tile: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in font, sized to the tiles it labels."""
    return ImageFont.load_default(size=max(12, min(20, tile // 7)))


def labelled(grid: Image.Image, tile: int, *, row_labels: list[str] | None = None,
             col_labels: list[str] | None = None, title: str | None = None) -> Image.Image:
    """A grid of `tile`-pixel tiles with row labels in a left margin, and column labels and a title above."""
    if not (row_labels or col_labels or title):
        return grid
    row_labels, col_labels = [readable(t) for t in row_labels or []], [readable(t) for t in col_labels or []]
    title = readable(title) if title else title
    font = font_for(tile)
    line = font.getbbox("Ag")[3] + 4

    def width(text: str) -> int:
        box = font.getbbox(text)
        return box[2] - box[0]

    left = max(width(t) for t in row_labels) + 2 * GAP if row_labels else 0
    top = (line + GAP if title else 0) + (line + 2 if col_labels else 0)
    white, ink = (255, 40) if grid.mode == "L" else ((255, 255, 255), (40, 40, 40))
    canvas = Image.new(grid.mode, (grid.width + left, grid.height + top), white)
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + PADDING, GAP // 2), title, font=font, fill=ink)
    for c, text in enumerate(col_labels or []):
        draw.text((left + PADDING + c * (tile + PADDING) + tile // 2, top - 2), text, font=font, fill=ink, anchor="md")
    for r, text in enumerate(row_labels or []):
        draw.text((left - GAP, top + PADDING + r * (tile + PADDING) + tile // 2), text, font=font, fill=ink,
                  anchor="rm")
    return canvas


def render_grid(images: torch.Tensor, nrow: int, *, row_labels: list[str] | None = None,
                col_labels: list[str] | None = None, title: str | None = None) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] as one labelled PIL grid."""
    tile = images.shape[-1] * upscale_factor(images.shape[-1])
    return labelled(to_pil(grid_image(images, nrow)), tile, row_labels=row_labels, col_labels=col_labels,
                    title=title)


def encode(image: Image.Image, suffix: str = ".png", title: str | None = None) -> bytes:
    """A PIL image as the bytes of a file of that suffix (PNG, JPEG, WebP ...); a PNG's `title` is also kept in
    its metadata (the PNG keyword "Title")."""
    buf = io.BytesIO()
    fmt = Image.registered_extensions().get(suffix.lower(), "PNG")
    if title and fmt == "PNG":
        meta = PngInfo()
        meta.add_itxt("Title", title)
        image.save(buf, format=fmt, pnginfo=meta)
    else:
        image.save(buf, format=fmt)
    return buf.getvalue()


def save_image(image: Image.Image, path: Path, title: str | None = None) -> Path:
    """A PIL image as a file, encoded in memory and written whole (`files.write_bytes`)."""
    path = Path(path)
    return write_bytes(path, encode(image, path.suffix, title))


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write a (C, H, W) image in [0, 1] as PNG."""
    return save_image(to_pil(image), path)


def save_grid(images: torch.Tensor, path: Path, nrow: int, **labels) -> Path:
    """Images as a grid PNG; `row_labels`, `col_labels` and `title` label it (the title is also kept in the
    PNG's metadata)."""
    return save_image(render_grid(images, nrow, **labels), path, title=labels.get("title"))


def save_frames(images: torch.Tensor, folder: Path, prefix: str = "frame") -> list[Path]:
    """Each image as its own PNG at the model's resolution: frame_00.png, frame_01.png, ... (each whole)."""
    folder = Path(folder)
    digits = max(2, len(str(len(images) - 1)))
    return [write_bytes(folder / f"{prefix}_{i:0{digits}d}.png", encode(Image.fromarray(arr)))
            for i, arr in enumerate(to_uint8(images))]


def save_gif(frames: torch.Tensor, path: Path, fps: float = 8.0, bounce: bool = True,
             hold: int = 3) -> Path:
    """An animated GIF that loops forever; `bounce` plays it there and back.

    The first and last frames show `hold` times as long, so the endpoints read. The GIF is encoded in
    memory (imageio) and written whole, so a failed write leaves no file and prints nothing from imageio.
    """
    frames = upscale(frames.detach().cpu().float())
    seq = list(range(len(frames)))
    if bounce and len(seq) > 1:
        seq = seq + seq[-2:0:-1]
    step = 1000 / fps
    durations = [step * hold if bounce and i in (0, len(frames) - 1) else step for i in seq]
    arr = to_uint8(frames[seq])
    # Pillow takes a list of durations only for two frames or more.
    data = iio.imwrite("<bytes>", arr, extension=".gif", duration=durations if len(seq) > 1 else durations[0], loop=0)
    return write_bytes(path, data)
