"""Where data comes from: what the user named, resolved once into a `DatasetSource`, and its images listed.

`KINDS` is the table of source kinds: a Hub id, a copy shipped inside the package (MNIST: `mnist`), and
three layouts of a local folder (MNIST's IDX files, a Hub-layout folder of parquet files, a folder of
images), tried in that order. Each kind says how its folder is recognised, which known dataset a folder is
a copy of (MNIST: by its content, never by its shape or a card), the shape to train it at, and how its splits
are listed for decoding (a `Listing`, with the class names the data has).
"""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import lzma
import math
import os
import socket
import struct
import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vqgen.decode import image_mode, mode_channels
from vqgen.errors import DatasetError, DiskFull, DownloadError, NotWritable, UsageError, explain
from vqgen.files import check_path_text, slug

SHORT_NAMES = {
    "mnist": "ylecun/mnist",
    "anime-faces": "DrishtiSharma/Anime-Face-Dataset",
}
# Short names read from a copy inside the package (no network), and its folder; a run records the source as
# "vqgen:mnist", which resolves to the installed copy wherever vqgen is. The Hub id still reads the Hub's.
PACKAGED = {"mnist": Path(__file__).resolve().parent.parent / "resources" / "mnist"}
PACKAGED_PREFIX = "vqgen:"
# (size, channels) the known datasets are trained at; other data at MNIST's if grayscale, else the faces'.
NATIVE_SHAPE = {"mnist": (28, 1), "anime-faces": (96, 3)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TABLE_SUFFIXES = {".parquet", ".arrow", ".csv", ".jsonl"}
TEST_SPLITS = ("test", "validation", "valid")
HOLDOUT_FRACTION = 0.05   # carved off as a test split when a dataset has none
PROBE_TRIES = 200         # images tried to find the first readable one
# MNIST is known by its content, not its shape: the SHA-256 of each IDX file's decoded bytes (the files of the
# original distribution, however compressed), and, for a Hub-layout copy, of its labels as bytes and of the
# pixels of its first training images (PNG files in parquet are not byte-identical from copy to copy).
MNIST_IDX_SHA256 = {
    ("train", "images"): "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ("train", "labels"): "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ("t10k", "images"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("t10k", "labels"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_LABELS_SHA256 = {"train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
                       "test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"}
MNIST_FIRST_IMAGES = 16
MNIST_FIRST_IMAGES_SHA256 = "b72be252ad746f920c972b6b8f0063d5e8973bb401881405783dff81ca106670"
DIGIT_DATASETS = {"mnist"}     # known datasets whose classes are digits: their grids say "digit 9", not "class 9"
CLASS_NAMES_FILE = "classes.txt"   # beside IDX files: the name of each label, one a line
LOCAL_LAYOUTS = ("a folder laid out like the Hub dataset (parquet files and a README.md card), a folder with "
                 "the MNIST IDX files (train-images-idx3-ubyte.gz, ...), or a folder of images "
                 "(class subfolders become labels)")


@dataclass
class DatasetSource:
    """A dataset resolved once per command, and carried to where it is read."""
    kind: str                  # a name in KINDS
    source: str                # Hub id or absolute path
    known: str | None = None   # the short name of a known dataset this is a copy of ("mnist")
    files: list[Path] = field(default_factory=list, repr=False)   # a local folder's files, listed once
    opened: Any = field(default=None, repr=False, compare=False)  # a Hub dataset, loaded once for probe and listing

    @property
    def native_shape(self) -> tuple[int, int] | None:
        return NATIVE_SHAPE.get(self.known) if self.known else None

    @property
    def label(self) -> str:
        """How the dataset reads in a run's name: 'mnist' for any copy of MNIST, else the folder or id."""
        return self.known or slug(self.source)

    def listing(self) -> Listing:
        return KINDS[self.kind].listing(self)


@dataclass
class Split:
    """One split's images, in order: items to decode, `chunks(n)` at a time, or (IDX) an array already decoded."""
    count: int
    chunks: Callable[[int], Iterator[list]] | None = None
    array: np.ndarray | None = None      # (N, H, W) uint8
    labels: np.ndarray | None = None     # (N,) int64


@dataclass
class Listing:
    """What a source hands the decoder: its splits and class names."""
    splits: dict[str, Split]
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
        n_test = self.splits[test].count if test else min(n, held_out_count(n))
        return {"train": (n - (0 if test else n_test), *shape), "test": (n_test, *shape)}


def held_out_count(n: int) -> int:
    return max(1, int(round(n * HOLDOUT_FRACTION)))


def _in_chunks(items: list) -> Callable[[int], Iterator[list]]:
    return lambda n: (items[i:i + n] for i in range(0, len(items), n))


def short_error(e: BaseException) -> str:
    """An exception's first line, at most 200 characters, or its class name."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return text[:200]


@dataclass(frozen=True)
class SourceKind:
    """One kind of source. Its name is part of every cache key made from it: never rename one."""
    name: str
    listing: Callable[[DatasetSource], Listing]          # its splits, in order, for decoding
    shape: Callable[[DatasetSource], tuple[int, int]]    # (size, channels) to train at, when no known dataset
    detect: Callable[[list[Path]], bool] | None = None   # whether a local folder's files are of this kind
    known: Callable[[Path, list[Path]], str | None] = lambda folder, files: None   # which known dataset it copies


# --------------------------------------------------------------------------- resolving


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
    check_path_text(name, "dataset")
    path = Path(name).expanduser()
    if name.startswith(PACKAGED_PREFIX) and name[len(PACKAGED_PREFIX):] in PACKAGED:
        return _packaged(name[len(PACKAGED_PREFIX):])
    if name in SHORT_NAMES and not path.is_dir():   # a folder of that name wins, as in datasets.load_dataset
        return _packaged(name) if name in PACKAGED else DatasetSource("hub", SHORT_NAMES[name], name)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"`dataset` {name}: is a file; give the folder that holds the dataset")
        path = path.resolve()
        files = _list_files(path)
        for kind in KINDS.values():
            if kind.detect is not None and kind.detect(files):
                return DatasetSource(kind.name, str(path), kind.known(path, files), files)
        raise UsageError(f"`dataset` {name}: no images, parquet files or MNIST IDX files in that folder; "
                         f"vqgen reads {LOCAL_LAYOUTS}")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        known = next((short for short, hub_id in SHORT_NAMES.items() if hub_id == name), None)
        return DatasetSource("hub", name, known)
    known = ", ".join(SHORT_NAMES)
    raise UsageError(f"`dataset` {name}: no such folder and not a dataset name; use {known}, "
                     "a Hub id such as ylecun/mnist, or a path to a local folder")


def _packaged(short: str) -> DatasetSource:
    """The copy of a known dataset shipped inside the package."""
    files = _list_files(PACKAGED[short])
    if not files:
        raise DatasetError(f"vqgen's own copy of {short} is missing from {PACKAGED[short]}; reinstall vqgen, "
                           f"or use the Hub's copy: `dataset` {SHORT_NAMES[short]}")
    return DatasetSource("packaged", PACKAGED_PREFIX + short, short, files)


def probe_shape(src: DatasetSource) -> tuple[int, int]:
    """(size, channels) to train a dataset at.

    Known datasets have their native shape. Otherwise the first readable image
    decides the channels (grayscale or colour), and the size is MNIST's 28 for
    grayscale and the anime faces' 96 for colour; `image_size` in a config file
    sets another.
    """
    return src.native_shape or KINDS[src.kind].shape(src)


def _first_readable_shape(src: DatasetSource, candidates: list) -> tuple[int, int]:
    for item in candidates[:PROBE_TRIES]:
        mode = image_mode(item)
        if mode is not None:
            return NATIVE_SHAPE["mnist" if mode_channels(mode) == 1 else "anime-faces"]
    raise DatasetError(f"`dataset` {src.source}: none of its first {min(len(candidates), PROBE_TRIES)} images "
                       "can be read; is it a folder of images?")


# --------------------------------------------------------------------------- a folder of images


def _image_files(files: list[Path]) -> list[Path]:
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]


def _list_image_folder(src: DatasetSource) -> Listing:
    """Image files, sorted; train/ and test/ folders become splits, class subfolders labels (as `imagefolder`)."""
    depth = len(Path(src.source).parts)
    files = _image_files(src.files)
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
        splits[name] = Split(len(items), _in_chunks([str(files[i]) for i in items]), labels=labels)
    return Listing(splits, classes if labelled else None)


# --------------------------------------------------------------------------- MNIST's IDX files


def _idx_open(path: Path):
    """An IDX file as it was downloaded (.gz), compressed with xz (.xz: vqgen's own copy), or plain."""
    return {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)(path, "rb")


def _idx_dims(path: Path) -> tuple[int, ...] | None:
    try:
        with _idx_open(path) as f:
            head = f.read(16)
        ndim = head[3]
        return struct.unpack(">" + "I" * ndim, head[4:4 + 4 * ndim])
    except (OSError, EOFError, lzma.LZMAError, struct.error, IndexError):
        return None


def _idx_kind(name: str) -> tuple[str, str] | None:
    """(split prefix, "images" or "labels") of an IDX file's name, or None."""
    for prefix in ("train", "t10k"):
        if name.startswith(prefix):
            if "idx3-ubyte" in name:
                return prefix, "images"
            if "idx1-ubyte" in name:
                return prefix, "labels"
    return None


@functools.lru_cache(maxsize=64)
def _decoded_sha256(path: str, size: int, mtime_ns: int) -> str | None:
    """The SHA-256 of an IDX file's decoded bytes (size and time: a changed file is hashed again)."""
    h = hashlib.sha256()
    try:
        with _idx_open(Path(path)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error, lzma.LZMAError):
        return None
    return h.hexdigest()


def _idx_known(folder: Path, files: list[Path]) -> str | None:
    """"mnist" where the folder's IDX files are MNIST's, byte for byte once decompressed; else None.

    The shape alone (60,000 images of 28x28) is shared by many datasets (letters, clothing, Kuzushiji, ...).
    The labels are compared first (small), and the images only where the training images' shape is MNIST's.
    """
    found = {}
    for p in files:
        kind = _idx_kind(p.name)
        if kind is not None and kind not in found:
            found[kind] = p
    train = found.get(("train", "images"))
    if train is None or _idx_dims(train) != (60000, 28, 28):
        return None
    for kind in sorted(found, key=lambda k: k[1] == "images"):   # labels first: they are small
        try:
            st = found[kind].stat()
        except OSError:
            return None
        if _decoded_sha256(str(found[kind]), st.st_size, st.st_mtime_ns) != MNIST_IDX_SHA256[kind]:
            return None
    return "mnist"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file's uint8 array, checked: magic number, dimensions, length."""
    try:
        with _idx_open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DatasetError(f"{path}: not a readable IDX file ({short_error(e)}); download it again") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise DatasetError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (bad header); download it again")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else None
    if dims is None or len(data) - 4 - 4 * ndim != math.prod(dims):
        raise DatasetError(f"{path}: truncated or padded IDX file (its header promises {dims}); download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _list_idx(src: DatasetSource) -> Listing:
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
        splits[split] = Split(len(images), array=images, labels=labels)
    has_labels = all(s.labels is not None for s in splits.values())
    if not has_labels:
        for s in splits.values():
            s.labels = None
        return Listing(splits, None)
    count = int(max(s.labels.max() for s in splits.values())) + 1
    return Listing(splits, _idx_class_names(src, count))


def _idx_class_names(src: DatasetSource, count: int) -> list[str]:
    """The names of IDX labels 0..count-1: from a classes.txt beside the files (one name a line), else the
    numbers themselves."""
    path = next((p for p in src.files if p.name == CLASS_NAMES_FILE and p.parent == Path(src.source)), None)
    if path is None:
        return [str(i) for i in range(count)]
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not readable as text ({e.__class__.__name__}); give one class name a line, "
                           "in UTF-8") from None
    while names and not names[-1]:
        names.pop()
    blank = [i for i, name in enumerate(names) if not name]
    twice = sorted({name for name in names if names.count(name) > 1})
    if blank or twice or len(names) < count:
        why = (f"line {blank[0] + 1} is blank" if blank else f"{twice[0]!r} names two classes" if twice else
               f"{len(names)} names for labels 0-{count - 1}")
        raise DatasetError(f"{path}: {why}; give one name per label, a line each, label 0 first")
    return names


# --------------------------------------------------------------------------- the Hugging Face Hub's layout


def _parquet_column(files: list[Path], column: str):
    """A column of parquet files, one after the other, as a pyarrow array; None where one lacks it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for p in files:
        table = pq.read_table(p, columns=[column])
        parts += table.column(column).chunks
    return pa.chunked_array(parts) if parts else None


def _hub_folder_known(folder: Path, files: list[Path]) -> str | None:
    """"mnist" where a Hub-layout folder holds MNIST (its labels, split by split, and the pixels of its first
    training images are MNIST's), whatever its dataset card says; else None."""
    import io

    from PIL import Image

    parquet = [p for p in files if p.suffix == ".parquet"]
    by_split = {split: [p for p in parquet if p.name.startswith(split) or f"/{split}/" in p.as_posix()]
                for split in ("train", "test")}
    try:
        import pyarrow.parquet as pq

        if sum(pq.ParquetFile(p).metadata.num_rows for p in by_split["train"]) != 60000:
            return None
        for split, want in MNIST_LABELS_SHA256.items():
            if not by_split[split] and split == "test":
                continue
            labels = _parquet_column(by_split[split], "label")
            got = np.asarray(labels.to_numpy(), dtype=np.int64) if labels is not None else None
            if got is None or got.min() < 0 or got.max() > 9 or \
                    hashlib.sha256(got.astype(np.uint8).tobytes()).hexdigest() != want:
                return None
        first = pq.ParquetFile(by_split["train"][0]).iter_batches(batch_size=MNIST_FIRST_IMAGES, columns=["image"])
        cells = next(first).column("image").to_pylist()
        pixels = b"".join(np.asarray(Image.open(io.BytesIO(c["bytes"] if isinstance(c, dict) else c)).convert("L"),
                                     dtype=np.uint8).tobytes() for c in cells)
    except Exception:  # noqa: BLE001 - any file that cannot be read this way is not a copy of MNIST
        return None
    return "mnist" if hashlib.sha256(pixels).hexdigest() == MNIST_FIRST_IMAGES_SHA256 else None


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


@contextmanager
def hub_offline():
    """`datasets` and `huggingface_hub` offline for the block, and back as they were after it."""
    import datasets

    switches = [(datasets.config, "HF_HUB_OFFLINE")]
    try:
        import huggingface_hub.constants as hf_constants

        switches.append((hf_constants, "HF_HUB_OFFLINE"))
    except ImportError:
        pass
    before = [getattr(module, name) for module, name in switches]
    for module, name in switches:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(switches, before):
            setattr(module, name, value)


@contextmanager
def _datasets_quiet():
    """`datasets` without its progress bars ("Generating train split") and notices for the block: vqgen says
    what it does in its own words."""
    from datasets import utils

    bars_off, level = utils.are_progress_bars_disabled(), utils.logging.get_verbosity()
    utils.disable_progress_bars()
    utils.logging.set_verbosity(utils.logging.CRITICAL)   # its "Failed to read file" too: vqgen says it
    try:
        yield
    finally:
        utils.logging.set_verbosity(level)
        if not bars_off:
            utils.enable_progress_bars()


def _load_hub(src: DatasetSource):
    """The Hub dataset (a Hub id, or a Hub-layout folder), loaded through `datasets` once per source."""
    if src.opened is not None:
        return src.opened
    import datasets

    remote = src.kind == "hub"
    reachable = remote and _hub_reachable()
    verbosity = datasets.logging.get_verbosity()
    try:
        # Offline: use the copy datasets cached on an earlier download, or fail at once.
        with hub_offline() if remote and not reachable else nullcontext(), _datasets_quiet():
            src.opened = datasets.load_dataset(src.source)
        return src.opened
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds: offline, missing repo, bad files
        kind = e.__class__.__name__
        full = explain(e, folder=datasets.config.HF_DATASETS_CACHE)   # a full or read-only HF_HOME
        if isinstance(full, (DiskFull, NotWritable)):
            raise full from None
        if remote:
            if kind in ("DatasetNotFoundError", "RepositoryNotFoundError") and reachable and _hub_reachable():
                raise UsageError(f"`dataset` {src.source}: not found on the Hugging Face Hub; "
                                 "check the id, or give a local folder") from None
            # Offline, the error is datasets' OfflineModeIsEnabled, for a switch vqgen threw: say what it means.
            why = (f" ({short_error(e)})" if reachable else ": it is not in the datasets cache and the Hub cannot be "
                   "reached" + (" (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""))
            raise DownloadError(f"could not download {src.source} from the Hugging Face Hub{why}; "
                                f"if offline, point `dataset` at a local copy: {LOCAL_LAYOUTS}") from None
        if "corresponds to no data" in str(e) or _holds_no_rows(src.files):
            raise DatasetError(f"no images in `dataset` {src.source}: its files hold no rows") from None
        raise DatasetError(f"`dataset` {src.source}: could not read it as a Hub-layout folder "
                           f"({short_error(e)})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


def _rows(path: Path) -> int | None:
    """How many rows a table file holds, read from its metadata or lines; None where that is not known."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if path.suffix in (".csv", ".jsonl"):
            with open(path, "rb") as f:
                lines = sum(1 for line in f if line.strip())
            return max(0, lines - 1) if path.suffix == ".csv" else lines
    except Exception:  # noqa: BLE001 - a damaged file: not known to be empty
        return None
    return None


def _holds_no_rows(files: list[Path]) -> bool:
    """Whether every table file of a Hub-layout folder is known to hold no rows (datasets then fails with
    "An error occurred while generating the dataset", or StopIteration)."""
    counts = [_rows(p) for p in files if p.suffix in TABLE_SUFFIXES]
    return bool(counts) and all(c == 0 for c in counts)


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


def _raw_images(split, col):
    from datasets import Image as HFImage

    split = split.select_columns([col])
    return split.cast_column(col, HFImage(decode=False)) if isinstance(split.features[col], HFImage) else split


def _hub_shape(src: DatasetSource) -> tuple[int, int]:
    for split in _load_hub(src).values():
        if len(split):
            col = _image_column(split, src.source)
            return _first_readable_shape(src, _raw_images(split, col).select(range(min(PROBE_TRIES, len(split))))[col])
    raise DatasetError(f"no images in `dataset` {src.source}: its files hold no rows")


def _list_hub(src: DatasetSource) -> Listing:
    from datasets import ClassLabel

    ds = _load_hub(src)
    if not any(len(split) for split in ds.values()):
        raise DatasetError(f"no images in `dataset` {src.source}: its files hold no rows")
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
        chunks = (lambda n, raw=raw, col=col: (batch[col] for batch in raw.iter(batch_size=n)))
        splits[name] = Split(len(split), chunks, labels=labels)
    if not all(s.labels is not None and (s.labels >= 0).all() for s in splits.values() if s.count):
        for s in splits.values():
            s.labels = None
        class_names = None
    return Listing(splits, class_names)


# --------------------------------------------------------------------------- the table

# A local folder is of the first kind here whose `detect` accepts its files.
KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (
    SourceKind("hub", _list_hub, _hub_shape),
    SourceKind("packaged", _list_idx, lambda src: NATIVE_SHAPE[src.known]),   # no detect: named, not found
    SourceKind("idx", _list_idx, lambda src: NATIVE_SHAPE["mnist"], known=_idx_known,
               detect=lambda files: any("idx3-ubyte" in p.name for p in files)),
    SourceKind("hub-folder", _list_hub, _hub_shape, known=_hub_folder_known,
               detect=lambda files: any(p.suffix in TABLE_SUFFIXES for p in files)),
    SourceKind("images", _list_image_folder, lambda src: _first_readable_shape(src, _image_files(src.files)),
               detect=lambda files: bool(_image_files(files))),
)}
