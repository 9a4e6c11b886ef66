"""Users' own images: an image file, a folder of them, or tensors, arrays and PIL images, at a model's shape."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vqgen.data.sources import IMAGE_SUFFIXES
from vqgen.decode import DECODE_ERRORS, decode, image_to_array, open_image
from vqgen.errors import UsageError


def load_image_file(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """One image file as a float tensor (1, C, size, size) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such image file")
    try:
        with open_image(path) as im:
            arr = image_to_array(im, size, channels)
    except DECODE_ERRORS as e:
        raise UsageError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    return torch.from_numpy(arr.copy()).float().div(255).unsqueeze(0)


def to_images(x, size: int, channels: int) -> torch.Tensor:
    """Images in any usual form as floats (N, C, size, size) in [0, 1].

    Takes a tensor or array (N, C, H, W), (C, H, W) or (H, W) with values in
    [0, 1] or uint8, a PIL image, the path of an image file or a folder of
    images, or a list of these. Other sizes are resized, other modes converted.
    """
    if isinstance(x, (list, tuple)):
        if not x:
            raise UsageError("`images`: the list is empty")
        return torch.cat([to_images(i, size, channels) for i in x])
    if isinstance(x, (str, Path)):
        return load_image_folder(x, size, channels)[0] if Path(x).is_dir() else load_image_file(x, size, channels)
    if isinstance(x, Image.Image):
        return torch.from_numpy(image_to_array(x, size, channels).copy()).float().div(255).unsqueeze(0)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise UsageError(f"`images`: cannot read a {type(x).__name__}; give a tensor, a PIL image or a path")
    t = x.detach().cpu()
    t = t.float().div(255) if t.dtype == torch.uint8 else t.float()
    t = t[None, None] if t.dim() == 2 else t[None] if t.dim() == 3 else t
    if t.dim() != 4 or t.shape[1] not in (1, 3) or t.shape[0] == 0:
        raise UsageError(f"`images`: expected a tensor of shape (N, C, H, W), (C, H, W) or (H, W) with 1 or 3 "
                         f"channels, not {tuple(x.shape)}")
    if not torch.isfinite(t).all():
        raise UsageError("`images`: the tensor holds NaN or infinite values")
    if t.shape[1] != channels:   # the same weights as Pillow's convert("L")
        t = (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True) if channels == 1 \
            else t.expand(-1, 3, -1, -1)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.clamp(0, 1).contiguous()


def load_image_folder(folder: str | Path, size: int, channels: int) -> tuple[torch.Tensor, list[Path], list[Path]]:
    """Every readable image in a folder as floats (N, C, size, size) in [0, 1], their paths, and the image
    files that could not be read (broken or empty files, dangling links, images over Pillow's pixel limit).

    Image files are those with an image suffix; other files, and folders, are not images and not counted.
    """
    folder = Path(folder)
    files = []
    with os.scandir(folder) as entries:
        for e in entries:
            if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and \
                    (e.is_file() or (e.is_symlink() and not os.path.exists(e.path))):   # dangling: unreadable
                files.append(Path(e.path))
    files.sort()
    if not files:
        raise UsageError(f"`input` {folder}: no image files in that folder")
    loaded, paths, unreadable = [], [], []
    for p in files:
        arr, _ = decode(p, size, channels)
        if arr is None:
            unreadable.append(p)
        else:
            loaded.append(torch.from_numpy(arr.copy()).float().div(255).unsqueeze(0))
            paths.append(p)
    if not loaded:
        raise UsageError(f"`input` {folder}: none of its {len(files)} images could be read")
    return torch.cat(loaded), paths, unreadable
