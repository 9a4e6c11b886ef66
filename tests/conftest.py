"""Shared fixtures: tiny synthetic datasets on disk, and a private cache per test."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REAL_DATA = os.environ.get("VQGEN_TEST_DATA")

TINY_VQVAE = """\
epochs: 1
batch_size: 16
lr: 0.01
eval_batch_size: 64
hidden: 16
res_hidden: 8
res_blocks: 1
codebook_size: 16
code_dim: 4
"""


def real_data(sub: str) -> Path:
    """A folder of ../shared/datasets, or skip the test when it is not there."""
    if not REAL_DATA:
        pytest.skip("set VQGEN_TEST_DATA to the shared datasets folder to run real-data tests")
    path = Path(REAL_DATA) / sub
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def digit_image(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A crude handwritten-looking digit: the label drawn with PIL's font, jittered."""
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    x, y = rng.integers(6, 12), rng.integers(4, 10)
    d.text((int(x), int(y)), str(label), fill=255, font_size=int(rng.integers(14, 18)))
    return np.asarray(im, dtype=np.uint8)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_mnist_idx(folder: Path, n_train: int = 320, n_test: int = 80, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.stack([digit_image(int(lbl), rng) for lbl in labels])
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("VQGEN_DEBUG", raising=False)


@pytest.fixture(scope="session")
def mnist_idx(tmp_path_factory) -> Path:
    return make_mnist_idx(tmp_path_factory.mktemp("tiny-mnist"))


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_VQVAE)
    return p


@pytest.fixture
def face_folder(tmp_path) -> Path:
    """A folder of small RGB 'faces' in mixed sizes and modes, plus one broken file."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(24):
        size = int(rng.integers(40, 70))
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        if i == 0:
            im = im.convert("L")
        elif i == 1:
            im = im.convert("RGBA")
        elif i == 2:
            im = im.convert("P")
        im.save(folder / f"face_{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    return folder


def labelled_grid(path, cols: int, rows: int, tile: int, *, left: bool, top: bool):
    """Check a labelled picture: `rows` x `cols` tiles of `tile` px (2 px apart), a left margin of row
    labels and a top band (title or column labels) exactly where asked, each holding text. Returns the
    pixels of the tiles alone."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L")).astype(int)
    h, w = img.shape
    tiles_w, tiles_h = cols * (tile + 2) + 2, rows * (tile + 2) + 2
    margin_left, margin_top = w - tiles_w, h - tiles_h
    assert (margin_left > 0) == left and (margin_top > 0) == top, (w, h, tiles_w, tiles_h)
    if left:
        assert (img[margin_top:, :margin_left - 4] < 128).sum() > 20, "the left margin holds no text"
    if top:
        assert (img[:margin_top - 2, :] < 128).sum() > 10, "the top band holds no text"
    tiles = img[margin_top:, margin_left:]
    assert (tiles[:, :2] == 255).all() and (tiles[:2, :] == 255).all(), "tiles are not where they should be"
    return tiles
