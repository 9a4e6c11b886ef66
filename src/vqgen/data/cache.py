"""The on-disk cache of decoded datasets, and `ImageData`, what an entry reads back as.

The cache (`~/.cache/vqgen`, or `VQGEN_CACHE`) holds one folder per dataset and shape: raw uint8
files written a chunk at a time, and an `info.json` with their shapes and checksums, written last.
A damaged entry is found by its sizes and checksums (`Damaged`), removed and decoded again: an entry read into
memory and one memory-mapped alike, each checked by a whole pass of CRC-32 (`_check`) before a run trusts it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqgen.data.sources import DatasetSource
from vqgen.errors import UsageError
from vqgen.files import slug
from vqgen.memory import physical_memory

CACHE_FORMAT = 2


@dataclass
class ImageData:
    """A dataset decoded into memory."""
    name: str                        # what the user asked for
    source: str                      # Hub id or absolute path it resolved to
    train_images: torch.Tensor       # uint8 (N, C, H, W)
    test_images: torch.Tensor
    train_labels: torch.Tensor | None  # int64 (N,) or None
    test_labels: torch.Tensor | None
    class_names: list[str] | None
    converted: int = 0               # images converted to the model's mode
    skipped: int = 0                 # unreadable images left out
    mapped: bool = False             # the images are memory-mapped from the cache, not held in memory
    class_word: str = "class"        # what a class is called in titles: "digit" for MNIST's, else "class"

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]



def cache_dir() -> Path:
    if os.environ.get("VQGEN_CACHE"):
        return Path(os.environ["VQGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqgen"


def usable_cache_dir() -> Path:
    """The cache folder, made if need be, or a clear error if it cannot be written."""
    path = cache_dir()
    what = f"VQGEN_CACHE={path}" if os.environ.get("VQGEN_CACHE") else f"the cache folder {path}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} is a file, not a folder; point VQGEN_CACHE at a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{what} cannot be written ({e.strerror or e.__class__.__name__}); "
                         "point VQGEN_CACHE at a folder you can write") from None
    return path


def fits_in_memory(nbytes: int) -> bool:
    """Whether a dataset is small enough to hold in memory: at most a quarter of the memory this process may
    use (the machine's, or a container's limit where lower: memory.py)."""
    total = physical_memory()
    return total is None or nbytes <= total // 4


class Damaged(Exception):
    pass


def _fingerprint(src: DatasetSource, size: int, channels: int) -> str:
    # Paths as the file system's bytes (os.fsencode): a name the locale cannot decode holds surrogates, which
    # .encode() refuses; a UTF-8 name gives the same bytes, and so the same key, as it always did.
    h = hashlib.sha1(os.fsencode(f"{CACHE_FORMAT}|{src.kind}|{src.source}|{size}|{channels}"))
    for p in src.files:   # local files: a change to any file makes a new cache entry
        try:
            st = p.stat()
            h.update(os.fsencode(f"{p}|{st.st_size}|{st.st_mtime_ns}"))
        except OSError:
            h.update(os.fsencode(f"{p}|missing"))
    return h.hexdigest()[:16]


def entry_name(src: DatasetSource, size: int, channels: int) -> str:
    """The cache entry of a source at a shape: its files' sizes and times are part of the name."""
    return f"{slug(src.source)}-{size}px-{channels}ch-{_fingerprint(src, size, channels)}"


class EntryWriter:
    """Writes a cache entry's raw uint8 images a chunk at a time, and its labels and info at the end.

    keep: also copy the images into arrays of at most `keep[split]` images, allocated once, so that a
    dataset that is to be held in memory is there when decoding ends, without reading the cache back.
    """

    def __init__(self, folder: Path, keep: dict[str, tuple] | None = None):
        self.folder = folder
        self.files = {s: open(folder / f"images-{s}.u8", "wb") for s in ("train", "test")}
        self.counts = {"train": 0, "test": 0}
        self.crcs = {"train": 0, "test": 0}
        self.labels: dict[str, list] = {"train": [], "test": []}
        self.kept = {s: np.empty(shape, dtype=np.uint8) for s, shape in keep.items()} if keep else None

    def add(self, split: str, images: np.ndarray, labels: np.ndarray | None) -> None:
        if len(images) == 0:
            return
        images = np.ascontiguousarray(images, dtype=np.uint8)
        buf = memoryview(images).cast("B")
        self.files[split].write(buf)
        self.crcs[split] = zlib.crc32(buf, self.crcs[split])
        if self.kept is not None:
            self.kept[split][self.counts[split]:self.counts[split] + len(images)] = images
        self.counts[split] += len(images)
        if labels is not None:
            self.labels[split].append(np.asarray(labels, dtype=np.int64))

    def finish(self, shape: tuple[int, int, int], info: dict) -> None:
        for f in self.files.values():
            f.close()
        splits = {}
        for s in ("train", "test"):
            entry = {"shape": [self.counts[s], *shape], "crc32": self.crcs[s]}
            if self.labels[s]:
                labels = np.concatenate(self.labels[s])
                labels.tofile(self.folder / f"labels-{s}.i64")
                entry["labels_crc32"] = zlib.crc32(labels.tobytes())
            splits[s] = entry
        self.info = {"format": CACHE_FORMAT, "splits": splits, **info}
        (self.folder / "info.json").write_text(json.dumps(self.info))

    def image_data(self, name: str) -> ImageData:
        """What was written, from the kept arrays (after `finish`): the same ImageData as reading it back."""
        t = {}
        for s in ("train", "test"):
            t[f"{s}_images"] = torch.from_numpy(self.kept[s][:self.counts[s]])
            t[f"{s}_labels"] = torch.from_numpy(np.concatenate(self.labels[s])) if self.labels[s] else None
        return _image_data(name, self.info, t, mapped=False)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


CHECK_BYTES = 64 << 20   # checksummed this much at a time: a mapped file's pages are read, never all held


def _check(arr: np.ndarray, crc: int, name: str) -> None:
    """The one checksum of a cache file, held in memory or memory-mapped: CRC-32 over its bytes, as
    `EntryWriter` computed it while writing."""
    flat = arr.reshape(-1)
    found = 0
    for i in range(0, flat.shape[0], CHECK_BYTES):
        found = zlib.crc32(flat[i:i + CHECK_BYTES], found)
    if found != crc:
        raise Damaged(f"{name} does not match its checksum")


def _read_u8(path: Path, shape: list[int], crc: int, mapped: bool) -> np.ndarray:
    """A cache file's images, read into memory or memory-mapped, checked against its size and checksum.

    A mapped file is checked too, by the same whole pass: about a second per GB from the page cache (MNIST's
    55 MB in 0.07 s, 2,000 faces at 64 px in 0.02 s: docs/benchmarks.md), far less than an epoch over the
    same bytes, which it reads ahead of the first."""
    expected = math.prod(shape)
    try:
        actual = path.stat().st_size
    except OSError:
        raise Damaged(f"{path.name} is missing") from None
    if actual != expected:
        raise Damaged(f"{path.name} has {actual:,} bytes, not {expected:,}")
    if mapped:
        if not expected:
            return np.zeros(shape, np.uint8)
        # Copy-on-write: the pages stay the file's (no anonymous memory) as long as nothing writes to them.
        arr = np.memmap(path, dtype=np.uint8, mode="c", shape=tuple(shape))
    else:
        arr = np.fromfile(path, dtype=np.uint8).reshape(shape)
    _check(arr, crc, path.name)
    return arr


def read_entry(folder: Path, name: str, in_memory: bool | None = None) -> ImageData:
    """A cache entry as an ImageData; raises Damaged saying what is wrong with it.

    in_memory: read the images into memory, or (False) memory-map them; None decides by their size.
    """
    try:
        info = json.loads((folder / "info.json").read_text())
        splits = info["splits"]
        if info.get("format") != CACHE_FORMAT:
            raise Damaged(f"format {info.get('format')}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Damaged(f"info.json unreadable ({e.__class__.__name__})") from None
    if in_memory is None:
        in_memory = fits_in_memory(sum(math.prod(splits[s]["shape"]) for s in ("train", "test")))
    tensors = {}
    for s in ("train", "test"):
        shape = splits[s]["shape"]
        tensors[f"{s}_images"] = torch.from_numpy(_read_u8(folder / f"images-{s}.u8", shape, splits[s]["crc32"],
                                                           mapped=not in_memory))
        tensors[f"{s}_labels"] = None
        if "labels_crc32" in splits[s]:
            p = folder / f"labels-{s}.i64"
            labels = np.fromfile(p, dtype=np.int64) if p.is_file() else np.zeros(0, dtype=np.int64)
            if len(labels) != shape[0] or zlib.crc32(labels.tobytes()) != splits[s]["labels_crc32"]:
                raise Damaged(f"{p.name} does not match its images")
            tensors[f"{s}_labels"] = torch.from_numpy(labels)
    return _image_data(name, info, tensors, mapped=not in_memory)


def _image_data(name: str, info: dict, tensors: dict, mapped: bool) -> ImageData:
    """A cache entry's info and its {split}_images / {split}_labels tensors as an ImageData."""
    return ImageData(name, info["source"], tensors["train_images"], tensors["test_images"],
                     tensors["train_labels"], tensors["test_labels"], info["class_names"],
                     info["converted"], info["skipped"], mapped=mapped)
