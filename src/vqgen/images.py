"""Pictures out: PNG grids and strips (torchvision), GIFs (imageio), loss curves.

Small images are scaled up by whole factors (nearest neighbour) so a 28x28
digit is big enough to see; `--frames` files stay at the model's resolution.
"""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from vqgen.files import writing

MIN_TILE = 96   # smaller images are scaled up by a whole factor to about this size


def upscale_factor(size: int) -> int:
    return max(1, math.ceil(MIN_TILE / size))


def upscale(images: torch.Tensor, factor: int | None = None) -> torch.Tensor:
    factor = factor or upscale_factor(images.shape[-1])
    return images if factor == 1 else F.interpolate(images, scale_factor=factor, mode="nearest")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8; grayscale stays 2-D per image."""
    arr = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def grid_image(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tiles (N, C, H, W) into one (C, H', W') image, scaled up when small."""
    return make_grid(upscale(images.detach().cpu().float()), nrow=nrow, padding=padding, pad_value=pad_value)


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (C, H, W) image in [0, 1] as a PIL image."""
    return Image.fromarray(to_uint8(image.unsqueeze(0))[0])


def save_png(image: torch.Tensor, path: Path) -> Path:
    """Write a (C, H, W) image in [0, 1] as PNG."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(image).save(path)
    return path


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    return save_png(grid_image(images, nrow), path)


def save_picture(picture, path: Path) -> Path:
    """A model's per-epoch `Picture`: its images tiled in rows."""
    return save_grid(picture.images, path, nrow=picture.nrow)


def save_frames(images: torch.Tensor, folder: Path, prefix: str = "frame") -> list[Path]:
    """Each image as its own PNG at the model's resolution: frame_00.png, frame_01.png, ..."""
    folder = Path(folder)
    digits = max(2, len(str(len(images) - 1)))
    paths = []
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(to_uint8(images)):
            p = folder / f"{prefix}_{i:0{digits}d}.png"
            Image.fromarray(arr).save(p)
            paths.append(p)
    return paths


def save_gif(frames: torch.Tensor, path: Path, fps: float = 8.0, bounce: bool = True,
             hold: int = 3) -> Path:
    """An animated GIF that loops forever; `bounce` plays it there and back.

    The first and last frames show `hold` times as long, so the endpoints read.
    """
    frames = upscale(frames.detach().cpu().float())
    seq = list(range(len(frames)))
    if bounce and len(seq) > 1:
        seq = seq + seq[-2:0:-1]
    step = 1000 / fps
    durations = [step * hold if bounce and i in (0, len(frames) - 1) else step for i in seq]
    arr = to_uint8(frames[seq])
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # Pillow takes a list of durations only for two frames or more.
        iio.imwrite(path, arr, extension=".gif", duration=durations if len(seq) > 1 else durations[0], loop=0)
    return path


def plot_curves(rows: list[dict], columns: list[str], path: Path, title: str = "") -> Path | None:
    """A small line plot of metrics per epoch (no plotting library needed)."""
    series = {c: [(r["epoch"], r[c]) for r in rows if isinstance(r.get(c), (int, float))] for c in columns}
    series = {c: s for c, s in series.items() if s}
    if not series:
        return None
    w, h, left, right, top, bottom = 640, 400, 70, 20, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = [x for s in series.values() for x, _ in s]
    ys = [y for s in series.values() for _, y in s if math.isfinite(y)]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:  # one epoch: its points in the middle, not on the frame
        x0, x1 = x0 - 1, x1 + 1
    positive = all(y > 0 for y in ys)
    f = (lambda v: math.log10(v)) if positive else (lambda v: v)
    y0, y1 = f(min(ys)), f(max(ys))
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    px = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)  # noqa: E731
    py = lambda y: top + (1 - (f(y) - y0) / (y1 - y0)) * (h - top - bottom)  # noqa: E731
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        label = 10 ** v if positive else v
        y = top + (1 - i / 4) * (h - top - bottom)
        d.line([left - 4, y, left, y], fill="black")
        d.text((4, y - 6), f"{label:.3g}", fill="black")
    for e in sorted(set(xs)):
        d.text((px(e) - 3, h - bottom + 6), str(e), fill="black")
    d.text((w // 2 - 20, h - 20), "epoch", fill="black")
    d.text((left, 12), title + (" (log scale)" if positive else ""), fill="black")
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for i, (name, pts) in enumerate(series.items()):
        c = colors[i % len(colors)]
        coords = [(px(x), py(y)) for x, y in pts if math.isfinite(y)]
        if len(coords) > 1:
            d.line(coords, fill=c, width=2)
        for x, y in coords:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        d.text((w - right - 150, top + 8 + 14 * i), name, fill=c)
    path = Path(path)
    img.save(path)
    return path
