"""The digit reader: a small classifier of 28x28 grey digits, trained on MNIST and shipped in the package.

It reads what a model drew as a digit (the share of samples read as the digit asked) and gives the
features of an MNIST FID (its 64-wide hidden layer), with no download and no extra. It was trained by
`benchmarks/train_digit_reader.py` on MNIST's training split; its weights (fp16) and the figures of that
training (test accuracy, epochs, seed, date) are in `digit_reader.safetensors` beside this file.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vqgen.errors import UsageError

WEIGHTS = Path(__file__).with_name("digit_reader.safetensors")
SIZE, CHANNELS, CLASSES = 28, 1, [str(d) for d in range(10)]
FEATURES = 64


class DigitReader(nn.Module):
    """Two 3x3 convolution blocks (32 channels each, 28 -> 14 -> 7), a hidden layer of 64 (the features)
    and a linear read-out of the ten digits; 111,000 weights. Takes images in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, FEATURES), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURES, len(CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def reader_fits(image_size: int, channels: int, class_names: list[str] | None) -> str | None:
    """None where the digit reader applies to a dataset (28x28 grey, classes "0".."9"), else why not."""
    what = f"{image_size}x{image_size} {'grey' if channels == 1 else 'colour'}"
    if (image_size, channels) != (SIZE, CHANNELS):
        return f"the digit reader knows 28x28 grey digits; this dataset is {what}"
    if class_names is None:
        return "the digit reader knows the classes 0-9; this dataset has no classes"
    if list(class_names) != CLASSES:
        shown = ", ".join(class_names[:4]) + (", ..." if len(class_names) > 4 else "")
        return f"the digit reader knows the classes 0-9; this dataset's are {shown}"
    return None


def metadata() -> dict[str, str]:
    """What the shipped weights record of their training: accuracy, epochs, seed, date, ..."""
    from safetensors import safe_open

    with safe_open(str(WEIGHTS), "pt") as f:
        return dict(f.metadata() or {})


@functools.lru_cache(maxsize=1)
def _shipped() -> DigitReader:
    from safetensors.torch import load_file

    reader = DigitReader()
    reader.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS)).items()})
    return reader.eval().requires_grad_(False)


def load_reader(device: str | torch.device = "cpu") -> DigitReader:
    """The shipped reader, in float32 on `device` (read from the package once per process)."""
    reader = _shipped()
    return reader if torch.device(device).type == "cpu" else copy.deepcopy(reader).to(device)


def _check(images: torch.Tensor) -> None:
    if images.dim() != 4 or tuple(images.shape[1:]) != (CHANNELS, SIZE, SIZE):
        shape = "x".join(map(str, images.shape[1:])) if images.dim() == 4 else str(tuple(images.shape))
        raise UsageError(f"the digit reader reads (N, 1, 28, 28) images; these are {shape}")


def _map(fn, images: torch.Tensor, device, batch_size: int, progress) -> torch.Tensor:
    from vqgen.data import map_batches

    _check(images)
    return map_batches(fn, images, batch_size=batch_size, device=device, progress=progress)


def digit_features(images: torch.Tensor, *, device: str | torch.device = "cpu", batch_size: int = 500,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The reader's hidden layer for each image, (N, 64) float64; images (N, 1, 28, 28) in [0, 1] or uint8."""
    reader = load_reader(device)
    return _map(lambda x: reader.features(x.clamp(0, 1)), images, device, batch_size, progress).double()


def read_digits(images: torch.Tensor, *, device: str | torch.device = "cpu", batch_size: int = 500,
                progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The digit the reader reads in each image, a LongTensor (N,)."""
    reader = load_reader(device)
    return _map(lambda x: reader(x.clamp(0, 1)).argmax(1), images, device, batch_size, progress).long()
