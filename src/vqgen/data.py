"""Datasets as uint8 tensors in memory, decoded once and cached on disk.

`load_images` resolves what the user named (a short name, a Hugging Face Hub
id, or a local folder), decodes every image once at the model's resolution,
and keeps the result as a uint8 tensor (N, C, H, W) plus labels where the
dataset has them. The decoded tensors are cached, so the second run starts in
a second. `Batches` then serves shuffled batches straight from memory (on the
GPU when training there), and `augment` flips and rotates a whole batch at once
on the same device, instead of a per-sample PIL pipeline.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from vqgen.errors import DatasetError, RunError, UsageError
from vqgen.files import atomic_write, slug

SHORT_NAMES = {
    "mnist": "ylecun/mnist",
    "anime-faces": "DrishtiSharma/Anime-Face-Dataset",
}
# Resolution and channels the known datasets are trained at.
NATIVE_SHAPE = {
    "ylecun/mnist": (28, 1),
    "DrishtiSharma/Anime-Face-Dataset": (96, 3),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HOLDOUT_FRACTION = 0.05   # carved off as a test split when a dataset has none
HOLDOUT_SEED = 0          # fixed, so every run of a dataset holds out the same images
CACHE_FORMAT = 1

Log = Callable[[str], None]


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


# --------------------------------------------------------------------------- resolving


@dataclass
class DatasetSource:
    kind: str        # "hub", "hub-folder", "idx", "images"
    source: str      # Hub id or absolute path

    @property
    def native_shape(self) -> tuple[int, int] | None:
        return NATIVE_SHAPE.get(self.source)


def resolve_dataset(name: str) -> DatasetSource:
    """Turn `--dataset` into a source, or say clearly why it cannot be one."""
    if name in SHORT_NAMES:
        return DatasetSource("hub", SHORT_NAMES[name])
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--dataset {name}: is a file; give the folder that holds the dataset")
        path = path.resolve()
        files = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        names = [p.name for p in files]
        if any("idx3-ubyte" in n for n in names):
            return DatasetSource("idx", str(path))
        if any(p.suffix in {".parquet", ".arrow", ".csv", ".jsonl"} for p in files):
            return DatasetSource("hub-folder", str(path))
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            return DatasetSource("images", str(path))
        raise UsageError(f"--dataset {name}: no images, parquet files or MNIST IDX files found in that folder")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return DatasetSource("hub", name)
    known = ", ".join(SHORT_NAMES)
    raise UsageError(f"--dataset {name}: no such folder and not a dataset name; use {known}, "
                     "a Hub id such as ylecun/mnist, or a path to a local folder")


def probe_shape(src: DatasetSource) -> tuple[int, int]:
    """(size, channels) to train a dataset at.

    Known datasets have their native shape. Otherwise the first image decides
    the channels (grayscale or colour), and the size is MNIST's 28 for
    grayscale and the anime faces' 96 for colour; `image_size` in a config
    file sets another.
    """
    if src.native_shape:
        return src.native_shape
    if src.kind == "idx":
        return 28, 1
    if src.kind == "images":
        first = next(p for p in sorted(Path(src.source).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
        with Image.open(first) as im:
            mode = im.mode
    else:
        ds = _load_hub(src)
        split = next(iter(ds.values()))
        mode = split[0][_image_column(split)].mode
    gray = mode in ("L", "1", "I", "I;16", "LA")
    return (28, 1) if gray else (96, 3)


# --------------------------------------------------------------------------- decoding


def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image to L (1 channel) or RGB (3), transparency onto white."""
    if im.mode == "P" and "transparency" in im.info:
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


def load_image_file(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """One image file as a float tensor (1, C, size, size) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            arr = image_to_array(im, size, channels)
    except (UnidentifiedImageError, OSError) as e:
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


class _Decoder:
    """Decodes many images, counting the converted and the unreadable."""

    def __init__(self, size: int, channels: int):
        self.size, self.channels = size, channels
        self.converted = self.skipped = 0
        self.target_mode = "L" if channels == 1 else "RGB"

    def __call__(self, opener) -> np.ndarray | None:
        try:
            with opener() as im:
                if im.mode != self.target_mode:
                    self.converted += 1
                return image_to_array(im, self.size, self.channels)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            self.skipped += 1
            return None


def _stack(arrays: list, labels: list | None, size: int, channels: int):
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if keep:
        images = torch.from_numpy(np.stack([arrays[i] for i in keep]))
    else:
        images = torch.zeros(0, channels, size, size, dtype=torch.uint8)
    label_t = torch.tensor([labels[i] for i in keep], dtype=torch.long) if labels is not None else None
    return images, label_t


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    _, _, dtype_code, ndim = struct.unpack(">BBBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, prefix: str, kind: str) -> Path | None:
    for p in sorted(folder.rglob(f"{prefix}*{kind}-ubyte*")):
        return p
    return None


def _decode_idx(src: DatasetSource, size: int, channels: int, log: Log):
    folder = Path(src.source)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _find_idx(folder, prefix, "idx3")
        lbl_path = _find_idx(folder, prefix, "idx1")
        if img_path is None:
            if split == "train":
                raise UsageError(f"--dataset {src.source}: no train-images-idx3-ubyte file in that folder")
            continue
        raw = _read_idx(img_path)
        images = torch.from_numpy(raw.copy()).unsqueeze(1)
        if channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()
        if size != images.shape[-1]:
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear",
                                   antialias=True).round().clamp(0, 255).to(torch.uint8)
        labels = torch.from_numpy(_read_idx(lbl_path).astype(np.int64)) if lbl_path else None
        out[split] = (images, labels)
    names = [str(i) for i in range(10)] if out["train"][1] is not None else None
    return out, names, 0, 0


def _load_hub(src: DatasetSource):
    import datasets

    try:
        if src.kind == "hub":
            return datasets.load_dataset(src.source)
        if src.kind == "images":
            return datasets.load_dataset("imagefolder", data_dir=src.source)
        return datasets.load_dataset(src.source)
    except (ConnectionError, OSError) as e:
        if src.kind == "hub":
            raise RunError(f"could not download {src.source} from the Hugging Face Hub ({_short(e)}); "
                           "if offline, point --dataset at a local copy, e.g. --dataset ./mnist") from None
        raise RunError(f"could not read the dataset in {src.source}: {_short(e)}") from None
    except Exception as e:  # datasets raises many kinds: missing repo, bad card, ...
        if e.__class__.__name__ in ("DatasetNotFoundError", "FileNotFoundError", "RepositoryNotFoundError"):
            raise UsageError(f"--dataset {src.source}: not found on the Hugging Face Hub; "
                             "check the id, or give a local folder") from None
        raise RunError(f"could not load dataset {src.source}: {_short(e)}") from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return text[:200]


def _image_column(split) -> str:
    from datasets import Image as HFImage

    for col, feat in split.features.items():
        if isinstance(feat, HFImage):
            return col
    for col in ("image", "img", "picture"):
        if col in split.column_names:
            return col
    raise UsageError(f"the dataset has no image column (columns: {', '.join(split.column_names)})")


def _decode_hub(src: DatasetSource, size: int, channels: int, log: Log):
    from datasets import ClassLabel
    from datasets import Image as HFImage

    ds = _load_hub(src)
    decoder = _Decoder(size, channels)
    out = {}
    class_names = None
    for split_name in ds:
        split = ds[split_name]
        col = _image_column(split)
        label_col = "label" if "label" in split.column_names else None
        if label_col and isinstance(split.features[label_col], ClassLabel):
            class_names = split.features[label_col].names
        split = split.cast_column(col, HFImage(decode=False))
        arrays = []
        for item in split[col]:
            if item.get("bytes") is not None:
                arrays.append(decoder(lambda b=item["bytes"]: Image.open(io.BytesIO(b))))
            else:
                arrays.append(decoder(lambda p=item["path"]: Image.open(p)))
        labels = split[label_col] if label_col else None
        out[split_name] = _stack(arrays, labels, size, channels)
    return out, class_names, decoder.converted, decoder.skipped


def _holdout(out: dict):
    """Pick the test split; carve a fixed 5% off train when there is none."""
    train = out.get("train") or next(iter(out.values()))
    for name in ("test", "validation", "valid"):
        if name in out:
            return train, out[name]
    images, labels = train
    n = images.shape[0]
    n_test = max(1, int(round(n * HOLDOUT_FRACTION))) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    pick = lambda t, i: t[i] if t is not None else None  # noqa: E731
    return (images[train_idx], pick(labels, train_idx)), (images[test_idx], pick(labels, test_idx))


# --------------------------------------------------------------------------- caching


def _fingerprint(src: DatasetSource, size: int, channels: int) -> str:
    h = hashlib.sha1(f"{CACHE_FORMAT}|{src.kind}|{src.source}|{size}|{channels}".encode())
    if src.kind != "hub":  # local files: changes to any file make a new cache entry
        for p in sorted(Path(src.source).rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cache_path(src: DatasetSource, size: int, channels: int) -> Path:
    return cache_dir() / f"{slug(src.source)}-{size}px-{channels}ch-{_fingerprint(src, size, channels)}.safetensors"


def load_images(name: str, size: int, channels: int, log: Log = lambda s: None,
                use_cache: bool = True) -> ImageData:
    """Decode the dataset `name` at (size, channels), through the on-disk cache."""
    from safetensors.torch import load_file, save_file

    src = resolve_dataset(name)
    path = _cache_path(src, size, channels)
    if use_cache and path.exists():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        t = load_file(str(path))
        info = json.loads(meta["info"])
        return ImageData(name, src.source, t["train_images"], t["test_images"],
                         t.get("train_labels"), t.get("test_labels"), info["class_names"],
                         info["converted"], info["skipped"])

    log(f"Preparing {src.source} at {size}x{size}x{channels}: decoded once, then cached in {path.parent}")
    if src.kind == "idx":
        out, class_names, converted, skipped = _decode_idx(src, size, channels, log)
    else:
        out, class_names, converted, skipped = _decode_hub(src, size, channels, log)
    (train_x, train_y), (test_x, test_y) = _holdout(out)
    if train_x.shape[0] == 0:
        raise RunError(f"--dataset {name}: none of its images could be read")
    if class_names is None and train_y is not None:
        class_names = [str(i) for i in range(int(train_y.max()) + 1)]
    if converted:
        log(f"Converted {converted} images to {'grayscale' if channels == 1 else 'RGB'}")
    if skipped:
        log(f"Skipped {skipped} unreadable images")
    data = ImageData(name, src.source, train_x, test_x, train_y, test_y, class_names, converted, skipped)
    if use_cache:
        tensors = {"train_images": train_x.contiguous(), "test_images": test_x.contiguous()}
        if train_y is not None:
            tensors["train_labels"] = train_y
        if test_y is not None:
            tensors["test_labels"] = test_y
        info = {"class_names": class_names, "converted": converted, "skipped": skipped, "source": src.source}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"info": json.dumps(info)}))
    return data


def load_run_images(cfg, log: Log = lambda s: None) -> ImageData:
    """The images a run's config (a `RunConfig`) trains on, at its model's shape, through the cache."""
    source = cfg.dataset_source
    if Path(source).is_absolute() and not Path(source).exists():
        raise DatasetError(f"the dataset this run trained on, {source}, is gone; put it back there, "
                           "or train a new run on another copy")
    mc = cfg.model_config
    return load_images(source, mc.image_size, mc.channels, log)


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
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and rotation, drawn per image, for a whole batch at once."""
    n = x.shape[0]
    angles, flips = augment_params(n, max_degrees, flip_p, generator)
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
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int,
                 *, shuffle: bool = True, augment: bool = False, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, drop_last: bool = False, scale: bool = True):
        self.images = images.to(device)
        self.scale = scale
        self.labels = labels.to(device) if labels is not None else None
        self.batch_size = batch_size
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.generator = generator

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

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
            if i < start:
                if self.augment:
                    augment_params(len(idx), generator=self.generator)
                continue
            x = self.images[idx]
            if self.scale:
                x = x.float().div_(255)
            if self.augment:
                x = augment(x, generator=self.generator)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, (self.labels[idx] if self.labels is not None else None)
