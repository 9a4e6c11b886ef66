"""Batches from tensors in memory (or memory-mapped), and augmentation of a whole batch at once.

`Batches` serves shuffled batches straight from memory (on the GPU when training there), and
`augment` flips and rotates a whole batch at once on the same device, instead of a per-sample PIL
pipeline.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from vqgen.errors import UsageError


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, *, batch_size: int = 500,
                device: str | torch.device = "cpu",
                progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`fn` over `data` in batches on `device`, without gradients; results concatenated on the CPU.

    uint8 images are scaled to [0, 1] floats on the device, so only bytes travel.
    progress: called as progress(done, total) after each batch.
    """
    out = []
    for i in range(0, data.shape[0], batch_size):
        x = data[i:i + batch_size].to(device)
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(fn(x).cpu())
        if progress is not None:
            progress(min(i + batch_size, data.shape[0]), data.shape[0])
    return torch.cat(out) if out else torch.zeros(0)


def augment_params(n: int, max_degrees: float = 10.0, flip_p: float = 0.5,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image rotation angles (radians) and flips (-1 or 1), drawn on the CPU from `generator`."""
    angles = (torch.rand(n, generator=generator, device="cpu") * 2 - 1) * math.radians(max_degrees)
    flips = torch.where(torch.rand(n, generator=generator, device="cpu") < flip_p, -1.0, 1.0)
    return angles, flips


def augment(x: torch.Tensor, max_degrees: float = 10.0, flip_p: float = 0.5,
            generator: torch.Generator | None = None,
            params: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Random horizontal flip and rotation, drawn per image, for a whole batch at once (or `params`)."""
    n = x.shape[0]
    angles, flips = params if params is not None else augment_params(n, max_degrees, flip_p, generator)
    cos, sin = angles.cos(), angles.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flips, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flips, cos
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Batches:
    """Shuffled batches from tensors held in memory.

    Images (uint8) come out as floats in [0, 1]; with `scale=False` the data
    (code grids, say) comes out as it is stored.

    Across `world` processes, `batch_size` is the global batch: every process
    draws the same order and augmentation and takes its slice (`rank`), so
    the global batches are those of a single process.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int,
                 *, shuffle: bool = True, augment: bool = False, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, drop_last: bool = False, scale: bool = True,
                 on_host: bool = False, rank: int = 0, world: int = 1):
        if batch_size < world:
            raise UsageError(f"`batch_size` {batch_size} is smaller than the {world} processes that share it; "
                             f"use at least {world}")
        self.rank, self.world = rank, world
        # Held on the training device (a GPU's memory included), or, `on_host`, where they are (a
        # memory-mapped cache): then each batch is gathered there and copied over.
        self.device = torch.device(device)
        self.images = images if on_host else images.to(device)
        self.scale = scale
        self.labels = (labels if on_host else labels.to(device)) if labels is not None else None
        self.batch_size = batch_size
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.generator = generator

    def __len__(self) -> int:
        n = self.images.shape[0]
        whole, rest = divmod(n, self.batch_size)
        # A last batch too small to give each process an image is left out.
        return whole + (1 if rest and not self.drop_last and rest >= self.world else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self.iterate()

    def iterate(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The epoch's batches from batch `start` on.

        Skipped batches draw their random numbers all the same, so that batch
        `start` and those after it are exactly those of an epoch run from the beginning.
        """
        n = self.images.shape[0]
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            params = augment_params(len(idx), generator=self.generator) if self.augment else None
            if i < start:
                continue
            if self.world > 1:
                idx = idx[self.rank::self.world]
                params = (params[0][self.rank::self.world], params[1][self.rank::self.world]) if params else None
            x = self.images[idx].to(self.device, non_blocking=True)
            if self.scale:
                x = x.float().div_(255)
            if self.augment:
                x = augment(x, params=params)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, (self.labels[idx].to(self.device, non_blocking=True) if self.labels is not None else None)
