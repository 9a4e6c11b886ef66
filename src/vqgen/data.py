"""Datasets as uint8 tensors, decoded once (on every core) and cached on disk.

`load_images` resolves what the user named (a short name, a Hugging Face Hub
id, or a local folder), decodes every image once at the model's resolution,
and keeps the result as uint8 tensors (N, C, H, W) plus labels where the
dataset has them. The decoded data is cached (`~/.cache/vqgen`, or
`VQGEN_CACHE`) as one folder per dataset and shape: raw uint8 files written a
chunk at a time, and an `info.json` with their shapes and checksums, written
last. A damaged entry is found by its sizes and checksums, removed and
decoded again.

`Batches` then serves shuffled batches straight from memory (on the GPU when
training there), and `augment` flips and rotates a whole batch at once on the
same device, instead of a per-sample PIL pipeline.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import math
import mmap
import multiprocessing
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vqgen.decode import DECODE_ERRORS, decode_chunk, image_mode, image_to_array, mode_channels, open_image
from vqgen.errors import DatasetError, DownloadError, RunError, UsageError
from vqgen.files import remove_stale_temps, slug

SHORT_NAMES = {
    "mnist": "ylecun/mnist",
    "anime-faces": "DrishtiSharma/Anime-Face-Dataset",
}
# Resolution and channels the known datasets are trained at.
NATIVE_SHAPE = {"mnist": (28, 1), "anime-faces": (96, 3)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TABLE_SUFFIXES = {".parquet", ".arrow", ".csv", ".jsonl"}
TEST_SPLITS = ("test", "validation", "valid")
HOLDOUT_FRACTION = 0.05   # carved off as a test split when a dataset has none
HOLDOUT_SEED = 0          # fixed, so every run of a dataset holds out the same images
CACHE_FORMAT = 2
CHUNK = 256               # images per decoding task
MIN_FOR_WORKERS = 4096    # smaller datasets decode in this process: starting workers costs more
PROBE_TRIES = 200         # images tried to find the first readable one
LOCAL_LAYOUTS = ("a folder laid out like the Hub dataset (parquet files and a README.md card), a folder with "
                 "the MNIST IDX files (train-images-idx3-ubyte.gz, ...), or a folder of images "
                 "(class subfolders become labels)")

Log = Callable[[str], None]
Progress = Callable[[int, int], None]   # (images done, images in all)


def _quiet(_: str) -> None:
    pass


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

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if name == "train":
            return self.train_images, self.train_labels
        return self.test_images, self.test_labels


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


# --------------------------------------------------------------------------- resolving


@dataclass
class DatasetSource:
    kind: str                  # "hub", "hub-folder", "idx", "images"
    source: str                # Hub id or absolute path
    known: str | None = None   # the short name of a known dataset this is a copy of ("mnist")
    files: list[Path] = field(default_factory=list, repr=False)   # a local folder's files, listed once

    @property
    def native_shape(self) -> tuple[int, int] | None:
        return NATIVE_SHAPE.get(self.known) if self.known else None

    @property
    def label(self) -> str:
        """How the dataset reads in a run's name: 'mnist' for any copy of MNIST, else the folder or id."""
        return self.known or slug(self.source)


def _known_from_card(folder: Path) -> str | None:
    """The short name of a known dataset whose Hub id or name a folder's dataset card gives."""
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8", errors="replace")[:20_000] if card.is_file() else ""
    except OSError:
        return None
    for short, hub_id in SHORT_NAMES.items():
        if hub_id in text or f"config_name: {short}" in text:
            return short
    return None


def _idx_dims(path: Path) -> tuple[int, ...] | None:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            head = f.read(16)
        ndim = head[3]
        return struct.unpack(">" + "I" * ndim, head[4:4 + 4 * ndim])
    except (OSError, EOFError, struct.error, IndexError):
        return None


def _list_files(path: Path) -> list[Path]:
    """Every file under a folder (dangling links included: they are unreadable images), hidden ones left out,
    in the order Path objects sort. Linked folders are not walked.

    One scandir per folder and no stat for plain files: 200,000 images list in 2.5 s where Path.rglob,
    a stat per file and sorting Path objects took six (most of what is left is making the Path objects).
    """
    found: list[tuple[str, ...]] = []
    todo: list[tuple[str, tuple[str, ...]]] = [(str(path), ())]
    while todo:
        folder, parts = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:   # unreadable or gone: as Path.rglob, leave it out
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    todo.append((e.path, parts + (e.name,)))
                elif e.is_file() or (e.is_symlink() and not os.path.exists(e.path)):
                    found.append(parts + (e.name,))
            except OSError:
                continue
    # Paths compare part by part (case-folded on Windows): so do these tuples of parts.
    found.sort(key=(lambda t: tuple(map(os.path.normcase, t))) if os.name == "nt" else None)
    return [path.joinpath(*parts) for parts in found]


def resolve_dataset(name: str) -> DatasetSource:
    """Turn `dataset` into a source, or say clearly why it cannot be one."""
    if not str(name).strip():
        raise UsageError("`dataset` is empty; give mnist, anime-faces, a Hub id or a folder")
    path = Path(name).expanduser()
    if name in SHORT_NAMES and not path.is_dir():   # a folder of that name wins, as in datasets.load_dataset
        return DatasetSource("hub", SHORT_NAMES[name], name)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"`dataset` {name}: is a file; give the folder that holds the dataset")
        path = path.resolve()
        files = _list_files(path)
        if any("idx3-ubyte" in p.name for p in files):
            train = next((p for p in files if p.name.startswith("train-images-idx3-ubyte")), None)
            dims = _idx_dims(train) if train else None
            return DatasetSource("idx", str(path), "mnist" if dims == (60000, 28, 28) else None, files)
        if any(p.suffix in TABLE_SUFFIXES for p in files):
            return DatasetSource("hub-folder", str(path), _known_from_card(path), files)
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            return DatasetSource("images", str(path), None, files)
        raise UsageError(f"`dataset` {name}: no images, parquet files or MNIST IDX files in that folder; "
                         f"vqgen reads {LOCAL_LAYOUTS}")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        known = next((short for short, hub_id in SHORT_NAMES.items() if hub_id == name), None)
        return DatasetSource("hub", name, known)
    known = ", ".join(SHORT_NAMES)
    raise UsageError(f"`dataset` {name}: no such folder and not a dataset name; use {known}, "
                     "a Hub id such as ylecun/mnist, or a path to a local folder")


def probe_shape(src: DatasetSource) -> tuple[int, int]:
    """(size, channels) to train a dataset at.

    Known datasets have their native shape. Otherwise the first readable image
    decides the channels (grayscale or colour), and the size is MNIST's 28 for
    grayscale and the anime faces' 96 for colour; `image_size` in a config file
    sets another.
    """
    if src.native_shape:
        return src.native_shape
    if src.kind == "idx":
        return 28, 1
    if src.kind == "images":
        candidates = [p for p in src.files if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        candidates = _first_hub_items(src, PROBE_TRIES)
    for item in candidates[:PROBE_TRIES]:
        mode = image_mode(item)
        if mode is not None:
            return (28, 1) if mode_channels(mode) == 1 else (96, 3)
    raise DatasetError(f"`dataset` {src.source}: none of its first {min(len(candidates), PROBE_TRIES)} images "
                       "can be read; is it a folder of images?")


# --------------------------------------------------------------------------- listing what to decode


@dataclass
class _Split:
    """One split's images, in order: items to decode in chunks, or (IDX) an array already decoded."""
    count: int
    chunks: Callable[[], Iterator[list]] | None = None
    array: np.ndarray | None = None      # (N, H, W) uint8
    labels: np.ndarray | None = None     # (N,) int64


@dataclass
class _Listing:
    splits: dict[str, _Split]
    class_names: list[str] | None = None

    def roles(self) -> tuple[str, str | None]:
        """The split to train on, and the one to test on (None: a fixed share of the training split)."""
        train = "train" if "train" in self.splits else next(iter(self.splits))
        return train, next((t for t in TEST_SPLITS if t in self.splits), None)

    @property
    def count(self) -> int:
        """Images to decode."""
        return sum(self.splits[s].count for s in self.roles() if s)

    def most_per_split(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """The most images the cache's train and test splits can get (unreadable ones make fewer), by shape."""
        train, test = self.roles()
        n = self.splits[train].count
        n_test = self.splits[test].count if test else min(n, _held_out_count(n))
        return {"train": (n - (0 if test else n_test), *shape), "test": (n_test, *shape)}


def _held_out_count(n: int) -> int:
    return max(1, int(round(n * HOLDOUT_FRACTION)))


def _in_chunks(items: list) -> Callable[[], Iterator[list]]:
    return lambda: (items[i:i + CHUNK] for i in range(0, len(items), CHUNK))


def _list_image_folder(src: DatasetSource) -> _Listing:
    """Image files, sorted; train/ and test/ folders become splits, class subfolders labels (as `imagefolder`)."""
    depth = len(Path(src.source).parts)
    files = [p for p in src.files if p.suffix.lower() in IMAGE_SUFFIXES]
    rel = [p.parts[depth:] for p in files]
    tops = {r[0] for r in rel if len(r) > 1}
    split_of = ["train"] * len(files)
    if all(len(r) > 1 for r in rel) and "train" in tops and tops <= {"train", *TEST_SPLITS}:
        split_of = [r[0] for r in rel]
        rel = [r[1:] for r in rel]
    classes = sorted({r[0] for r in rel if len(r) == 2})
    labelled = len(classes) >= 2 and all(len(r) == 2 for r in rel)
    class_index = {c: i for i, c in enumerate(classes)}
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, split in enumerate(split_of):
        groups[split].append(i)
    splits = {}
    for name, items in groups.items():
        labels = np.array([class_index[rel[i][0]] for i in items], dtype=np.int64) if labelled else None
        splits[name] = _Split(len(items), _in_chunks([str(files[i]) for i in items]), labels=labels)
    return _Listing(splits, classes if labelled else None)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file's uint8 array, checked: magic number, dimensions, length."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable IDX file ({_short(e)}); download it again") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise DatasetError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (bad header); download it again")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else None
    if dims is None or len(data) - 4 - 4 * ndim != math.prod(dims):
        raise DatasetError(f"{path}: truncated or padded IDX file (its header promises {dims}); download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _list_idx(src: DatasetSource) -> _Listing:
    files = src.files
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = next((p for p in files if p.name.startswith(prefix) and "idx3-ubyte" in p.name), None)
        lbl = next((p for p in files if p.name.startswith(prefix) and "idx1-ubyte" in p.name), None)
        if img is None:
            if split == "train":
                raise DatasetError(f"`dataset` {src.source}: no train-images-idx3-ubyte file in that folder")
            continue
        images = _read_idx(img, 3)
        labels = _read_idx(lbl, 1).astype(np.int64) if lbl else None
        if labels is not None and len(labels) != len(images):
            raise DatasetError(f"{lbl}: {len(labels):,} labels for the {len(images):,} images of {img.name}; "
                               "the two files do not belong together")
        splits[split] = _Split(len(images), array=images, labels=labels)
    has_labels = all(s.labels is not None for s in splits.values())
    if not has_labels:
        for s in splits.values():
            s.labels = None
    names = [str(i) for i in range(int(max(s.labels.max() for s in splits.values())) + 1)] if has_labels else None
    return _Listing(splits, names)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers at all: offline, a download would retry for half a minute before failing."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
        host = constants.ENDPOINT.split("://")[-1].split("/")[0]
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(src: DatasetSource):
    import datasets

    try:
        if src.kind == "hub" and not _hub_reachable():
            # Offline: use the copy datasets cached on an earlier download, or fail at once.
            datasets.config.HF_HUB_OFFLINE = True
            try:
                import huggingface_hub.constants as hf_constants

                hf_constants.HF_HUB_OFFLINE = True
            except ImportError:
                pass
        return datasets.load_dataset(src.source)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds: offline, missing repo, bad files
        kind = e.__class__.__name__
        if src.kind == "hub":
            if kind in ("DatasetNotFoundError", "RepositoryNotFoundError") and _hub_reachable():
                raise UsageError(f"`dataset` {src.source}: not found on the Hugging Face Hub; "
                                 "check the id, or give a local folder") from None
            raise DownloadError(f"could not download {src.source} from the Hugging Face Hub ({_short(e)}); "
                                f"if offline, point `dataset` at a local copy: {LOCAL_LAYOUTS}") from None
        if "corresponds to no data" in str(e):
            raise DatasetError(f"`dataset` {src.source}: its files hold no rows") from None
        raise DatasetError(f"`dataset` {src.source}: could not read it as a Hub-layout folder ({_short(e)})") from None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return text[:200]


def _image_column(split, source: str) -> str:
    from datasets import Image as HFImage
    from datasets import Value

    for col, feat in split.features.items():
        if isinstance(feat, HFImage):
            return col
    for col in ("image", "img", "picture"):
        if col in split.column_names:
            feat = split.features[col]
            if isinstance(feat, Value) and feat.dtype in ("binary", "large_binary"):
                return col
            raise DatasetError(f"`dataset` {source}: its column {col!r} holds {getattr(feat, 'dtype', feat)}, "
                               "not images; vqgen reads an image column (PNG or JPEG bytes)")
    raise DatasetError(f"`dataset` {source}: no image column (columns: {', '.join(split.column_names)})")


def _first_hub_items(src: DatasetSource, n: int) -> list:
    ds = _load_hub(src)
    for split in ds.values():
        if len(split):
            col = _image_column(split, src.source)
            return _raw_images(split, col).select(range(min(n, len(split))))[col]
    raise DatasetError(f"`dataset` {src.source}: its files hold no rows")


def _raw_images(split, col):
    from datasets import Image as HFImage

    split = split.select_columns([col])
    return split.cast_column(col, HFImage(decode=False)) if isinstance(split.features[col], HFImage) else split


def _list_hub(src: DatasetSource) -> _Listing:
    from datasets import ClassLabel

    ds = _load_hub(src)
    if not any(len(split) for split in ds.values()):
        raise DatasetError(f"`dataset` {src.source}: its files hold no rows")
    splits, class_names = {}, None
    for name, split in ds.items():
        col = _image_column(split, src.source)
        labels = None
        if "label" in split.column_names:
            feat = split.features["label"]
            if isinstance(feat, ClassLabel):
                class_names = feat.names
            if isinstance(feat, ClassLabel) or getattr(feat, "dtype", "").startswith(("int", "uint")):
                labels = np.asarray(split["label"], dtype=np.int64)
        raw = _raw_images(split, col)
        chunks = (lambda raw=raw, col=col: (batch[col] for batch in raw.iter(batch_size=CHUNK)))
        splits[name] = _Split(len(split), chunks, labels=labels)
    if not all(s.labels is not None and (s.labels >= 0).all() for s in splits.values() if s.count):
        for s in splits.values():
            s.labels = None
        class_names = None
    return _Listing(splits, class_names)


# --------------------------------------------------------------------------- the cache


class _Damaged(Exception):
    pass


def _fingerprint(src: DatasetSource, size: int, channels: int) -> str:
    h = hashlib.sha1(f"{CACHE_FORMAT}|{src.kind}|{src.source}|{size}|{channels}".encode())
    for p in src.files:   # local files: a change to any file makes a new cache entry
        try:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{p}|missing".encode())
    return h.hexdigest()[:16]


def _entry_name(src: DatasetSource, size: int, channels: int) -> str:
    return f"{slug(src.source)}-{size}px-{channels}ch-{_fingerprint(src, size, channels)}"


class _EntryWriter:
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


def _read_u8(path: Path, shape: list[int], crc: int, mapped: bool) -> np.ndarray:
    """A cache file's images: read into memory (and checked against its checksum), or memory-mapped
    (checked by size: reading it all to check it would take as long as the first epoch)."""
    expected = math.prod(shape)
    try:
        actual = path.stat().st_size
    except OSError:
        raise _Damaged(f"{path.name} is missing") from None
    if actual != expected:
        raise _Damaged(f"{path.name} has {actual:,} bytes, not {expected:,}")
    if mapped:
        # Copy-on-write: the pages stay the file's (no anonymous memory) as long as nothing writes to them.
        return np.memmap(path, dtype=np.uint8, mode="c", shape=tuple(shape)) if expected else np.zeros(shape, np.uint8)
    arr = np.fromfile(path, dtype=np.uint8)
    if zlib.crc32(arr) != crc:
        raise _Damaged(f"{path.name} does not match its checksum")
    return arr.reshape(shape)


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(nbytes: int) -> bool:
    """Whether a dataset is small enough to hold in memory: at most a quarter of the machine's."""
    total = physical_memory()
    return total is None or nbytes <= total // 4


def _read_entry(folder: Path, name: str, in_memory: bool | None = None) -> ImageData:
    """A cache entry as an ImageData; raises _Damaged saying what is wrong with it.

    in_memory: read the images into memory, or (False) memory-map them; None decides by their size.
    """
    try:
        info = json.loads((folder / "info.json").read_text())
        splits = info["splits"]
        if info.get("format") != CACHE_FORMAT:
            raise _Damaged(f"format {info.get('format')}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _Damaged(f"info.json unreadable ({e.__class__.__name__})") from None
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
                raise _Damaged(f"{p.name} does not match its images")
            tensors[f"{s}_labels"] = torch.from_numpy(labels)
    return _image_data(name, info, tensors, mapped=not in_memory)


def _image_data(name: str, info: dict, tensors: dict, mapped: bool) -> ImageData:
    """A cache entry's info and its {split}_images / {split}_labels tensors as an ImageData."""
    return ImageData(name, info["source"], tensors["train_images"], tensors["test_images"],
                     tensors["train_labels"], tensors["test_labels"], info["class_names"],
                     info["converted"], info["skipped"], mapped=mapped)


# --------------------------------------------------------------------------- decoding


def decode_workers(n_images: int) -> int:
    """Worker processes to decode n images with: none for small datasets, else one per core."""
    env = os.environ.get("VQGEN_DECODE_WORKERS")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise UsageError(f"VQGEN_DECODE_WORKERS={env!r}: give a whole number (0: decode in this process)") from None
    if n_images < MIN_FOR_WORKERS:
        return 0
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 32))


_SLOTS: np.ndarray | None = None   # in a decoding worker: the output buffers it shares with the main process


def _use_slots(slots: np.ndarray) -> None:
    global _SLOTS
    _SLOTS = slots


def _decode_into_slot(items: list, size: int, channels: int, slot: int) -> tuple[int, list[int], int, int]:
    """In a forked worker: decode into a shared slot; only the counts travel back."""
    arrays, kept, converted, skipped = decode_chunk(items, size, channels, out=_SLOTS[slot])
    return len(arrays), kept, converted, skipped


def _decoded_chunks(chunks: Iterable[list], size: int, channels: int, workers: int) -> Iterator[tuple]:
    """decode_chunk over chunks, in order; with workers, a few chunks ahead at a time (memory stays bounded).

    Each chunk's arrays are valid until the next one is asked for: they live in buffers used over again.
    """
    if workers == 0:
        buffer = np.empty((CHUNK, channels, size, size), dtype=np.uint8)
        for chunk in chunks:
            yield decode_chunk(chunk, size, channels, out=buffer)
        return
    if not sys.platform.startswith("linux"):   # macOS cannot fork safely: spawned workers send their arrays
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = collections.deque()
            for chunk in chunks:
                pending.append(pool.submit(decode_chunk, chunk, size, channels))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        return
    # Workers run Pillow and NumPy only. "fork" starts them at once and, unlike "spawn", does not run the
    # caller's main script again in each (a notebook's or an unguarded script's). They decode into slots of
    # an anonymous mapping shared with this process, which they inherit: a chunk is neither pickled nor piped
    # back, and the slots are reused rather than allocated for every chunk.
    n_slots = 2 * workers   # the chunks in flight, the one being read here included
    shared = mmap.mmap(-1, n_slots * CHUNK * channels * size * size)
    slots = np.frombuffer(shared, dtype=np.uint8).reshape(n_slots, CHUNK, channels, size, size)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_use_slots, initargs=(slots,)) as pool:
        free, pending = collections.deque(range(n_slots)), collections.deque()

        def take():
            future, slot = pending.popleft()
            n, kept, converted, skipped = future.result()
            return slot, (slots[slot][:n], kept, converted, skipped)

        for chunk in chunks:
            slot = free.popleft()
            pending.append((pool.submit(_decode_into_slot, chunk, size, channels, slot), slot))
            if len(pending) == n_slots:
                slot, result = take()
                yield result
                free.append(slot)   # asked for the next chunk: done with this one
        while pending:
            slot, result = take()
            yield result
            free.append(slot)


def _resize_u8(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(n, H, W) uint8 grayscale as (n, C, size, size) uint8."""
    t = torch.from_numpy(np.array(images)).unsqueeze(1)
    if size != t.shape[-1]:
        t = F.interpolate(t.float(), size=(size, size), mode="bilinear", antialias=True).round().clamp(0, 255)
        t = t.to(torch.uint8)
    if channels == 3:
        t = t.expand(-1, 3, -1, -1)
    return t.contiguous().numpy()


def _decode(src: DatasetSource, listing: _Listing, writer: _EntryWriter, size: int, channels: int,
            workers: int | None, progress: Progress | None) -> tuple[int, int]:
    """Decode every split into the writer, holding out a fixed 5% where there is no test split."""
    splits = listing.splits
    train_name, test_name = listing.roles()
    held_out: set[int] = set()
    if test_name is None:
        n = splits[train_name].count
        if n < 2:
            raise DatasetError(f"`dataset` {src.source}: {n} image(s); vqgen needs at least 2, one to train on "
                               "and one held out to evaluate")
        held_out = set(torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))[:_held_out_count(n)]
                       .tolist())
    total = listing.count
    workers = decode_workers(total) if workers is None else workers
    done = converted = skipped = 0
    for name, out in ((train_name, "train"), (test_name, "test")):
        if name is None:
            continue
        split = splits[name]
        if split.array is not None:
            results = ((_resize_u8(split.array[i:i + CHUNK], size, channels), list(range(min(CHUNK, split.count - i))),
                        0, 0) for i in range(0, split.count, CHUNK))
        else:
            results = _decoded_chunks(split.chunks(), size, channels, workers)
        offset = 0
        for arrays, kept, conv, skip in results:
            index = np.asarray(kept, dtype=np.int64) + offset
            labels = split.labels[index] if split.labels is not None else None
            if held_out and name == train_name:
                test_mask = np.array([i in held_out for i in index.tolist()], dtype=bool)
                writer.add("test", arrays[test_mask], labels[test_mask] if labels is not None else None)
                arrays, labels = arrays[~test_mask], (labels[~test_mask] if labels is not None else None)
            writer.add(out, arrays, labels)
            chunk_len = len(kept) + skip
            offset += chunk_len
            done += chunk_len
            converted += conv
            skipped += skip
            if progress:
                progress(done, total)
    return converted, skipped


def load_images(name: str, size: int, channels: int, log: Log = _quiet, use_cache: bool = True,
                workers: int | None = None, progress: Progress | None = None,
                in_memory: bool | None = None) -> ImageData:
    """Decode the dataset `name` at (size, channels), through the on-disk cache.

    workers: decoding processes (None: one per core for large datasets, 0: this process only).
    progress: called as progress(done, total) while decoding.
    in_memory: hold the images in memory, or (False) read them memory-mapped from the cache, for data
    larger than memory; None: in memory if they take at most a quarter of it.
    """
    src = resolve_dataset(name)
    entry = _entry_name(src, size, channels)
    root = usable_cache_dir() if use_cache else None
    if root is not None:
        remove_stale_temps(root)
        if (root / entry).is_dir():
            try:
                return _read_entry(root / entry, name, in_memory)
            except _Damaged as why:
                log(f"The cached copy of {src.source} is damaged ({why}); decoding it again")
                shutil.rmtree(root / entry, ignore_errors=True)
    tmp_root = root if root is not None else Path(tempfile.mkdtemp(prefix="vqgen-"))
    tmp = tmp_root / f".{entry}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        if src.kind == "idx":
            listing = _list_idx(src)
        elif src.kind == "images":
            listing = _list_image_folder(src)
        else:
            listing = _list_hub(src)
        if root is not None:
            log(f"Preparing {src.source} at {size}x{size}x{channels}: decoded once, then cached in {root}")
        image_bytes = channels * size * size
        if root is None or (in_memory if in_memory is not None else fits_in_memory(listing.count * image_bytes)):
            keep = listing.most_per_split((channels, size, size))
        else:
            keep = None
        writer = _EntryWriter(tmp, keep)
        started = time.perf_counter()
        try:
            converted, skipped = _decode(src, listing, writer, size, channels, workers, progress)
        finally:
            writer.close()
        seconds = time.perf_counter() - started
        count = writer.counts["train"] + writer.counts["test"] + skipped
        log(f"Decoded {count:,} images in {seconds:.1f} s ({count / max(seconds, 1e-9):,.0f} images/s)")
        if writer.counts["train"] == 0:
            raise DatasetError(f"`dataset` {name}: none of its {skipped:,} images can be read")
        writer.finish((channels, size, size), {"source": src.source, "class_names": listing.class_names,
                                               "converted": converted, "skipped": skipped})
        if converted:
            log(f"Converted {converted} images to {'grayscale' if channels == 1 else 'RGB'}")
        if skipped:
            log(f"Skipped {skipped} unreadable images")
        if root is None:
            return writer.image_data(name)
        try:
            os.rename(tmp, root / entry)
        except OSError:   # another process cached the same data meanwhile: use theirs
            return _read_entry(root / entry, name, in_memory)
        return writer.image_data(name) if keep else _read_entry(root / entry, name, in_memory)
    except BrokenProcessPool:
        raise RunError("a decoding worker process died (out of memory?); decode with fewer processes: "
                       "VQGEN_DECODE_WORKERS=1") from None
    except OSError as e:
        raise RunError(f"could not write the decoded dataset to {tmp_root} ({e.strerror or _short(e)}); "
                       "free some space or point VQGEN_CACHE at another folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if root is None:
            shutil.rmtree(tmp_root, ignore_errors=True)


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


def load_image_folder(folder: str | Path, size: int, channels: int) -> tuple[torch.Tensor, list[Path], int]:
    """Every readable image in a folder as floats (N, C, size, size) in [0, 1], their paths, and how many were skipped."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f"`input` {folder}: no image files in that folder")
    loaded, paths, skipped = [], [], 0
    for p in files:
        try:
            loaded.append(load_image_file(p, size, channels))
            paths.append(p)
        except UsageError:
            skipped += 1
    if not loaded:
        raise UsageError(f"`input` {folder}: none of the images could be read")
    return torch.cat(loaded), paths, skipped


def load_run_images(cfg, log: Log = lambda s: None, progress: Progress | None = None) -> ImageData:
    """The images a run's config (a `RunConfig`) trains on, at its model's shape, through the cache."""
    source = cfg.dataset_source
    if Path(source).is_absolute() and not Path(source).exists():
        raise DatasetError(f"the dataset this run trained on, {source}, is gone; put it back there, "
                           "or train a new run on another copy")
    mc = cfg.model_config
    in_memory = {"auto": None, "yes": True, "no": False}[cfg.train.data_in_memory]
    return load_images(source, mc.image_size, mc.channels, log, progress=progress, in_memory=in_memory)


# --------------------------------------------------------------------------- batches


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, *, batch_size: int = 500,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """`fn` over `data` in batches on `device`, without gradients; results concatenated on the CPU.

    uint8 images are scaled to [0, 1] floats on the device, so only bytes travel.
    """
    out = []
    for i in range(0, data.shape[0], batch_size):
        x = data[i:i + batch_size].to(device)
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(fn(x).cpu())
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
