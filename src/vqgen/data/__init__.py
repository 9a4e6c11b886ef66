"""Datasets as uint8 tensors, decoded once (on every core) and cached on disk.

`load_images` takes what the user named (a short name, a Hugging Face Hub id, or a local folder), or
the source it was already resolved to, decodes every image once at the model's resolution, and keeps
the result as uint8 tensors (N, C, H, W) plus labels where the dataset has them. One file per job:

    sources.py      where data comes from: the table of source kinds, resolving a name, listing the splits
    cache.py        the on-disk cache format, and ImageData
    decoding.py     decoding a listing into a cache entry, and its worker processes
    batches.py      batches from memory, and augmentation
    user_images.py  users' own images: files, folders, tensors
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from vqgen.data.batches import Batches, augment, augment_params, map_batches
from vqgen.data.cache import (CACHE_FORMAT, Damaged, EntryWriter, ImageData, cache_dir, entry_name, fits_in_memory,
                              physical_memory, read_entry, usable_cache_dir)
from vqgen.data.decoding import Progress, decode_listing, decode_workers
from vqgen.data.sources import (DIGIT_DATASETS, IMAGE_SUFFIXES, KINDS, NATIVE_SHAPE, SHORT_NAMES, DatasetSource, SourceKind,
                                _list_files, probe_shape, resolve_dataset, short_error)
from vqgen.data.user_images import load_image_file, load_image_folder, to_images
from vqgen.decode import image_to_array
from vqgen.errors import DatasetError, RunError
from vqgen.files import remove_stale_temps, shown_path, temporary

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def load_images(name: str, size: int, channels: int, log: Log = _quiet, use_cache: bool = True,
                workers: int | None = None, progress: Progress | None = None,
                in_memory: bool | None = None, source: DatasetSource | None = None) -> ImageData:
    """Decode the dataset `name` at (size, channels), through the on-disk cache.

    workers: decoding processes (None: one per core for large datasets, 0: this process only).
    progress: called as progress(done, total) while decoding.
    in_memory: hold the images in memory, or (False) read them memory-mapped from the cache, for data
    larger than memory; None: in memory if they take at most a quarter of it.
    source: `name` already resolved (`resolve_dataset`), so that it is not resolved again.
    """
    src = source if source is not None else resolve_dataset(name)
    found = _load_images(src, name, size, channels, log, use_cache, workers, progress, in_memory)
    found.class_word = "digit" if src.known in DIGIT_DATASETS else "class"
    return found


def _load_images(src: DatasetSource, name: str, size: int, channels: int, log: Log, use_cache: bool,
                 workers: int | None, progress: Progress | None, in_memory: bool | None) -> ImageData:
    entry = entry_name(src, size, channels)
    root = usable_cache_dir() if use_cache else None
    if root is not None:
        remove_stale_temps(root)
        if (root / entry).is_dir():
            try:
                return read_entry(root / entry, name, in_memory)
            except Damaged as why:
                log(f"The cached copy of {src.source} is damaged ({why}); decoding it again")
                shutil.rmtree(root / entry, ignore_errors=True)
    tmp_root = root if root is not None else Path(tempfile.mkdtemp(prefix="vqgen-"))
    tmp = tmp_root / f".{entry}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with temporary(tmp if root is not None else tmp_root):   # gone if a second Ctrl-C ends the process at once
            tmp.mkdir(parents=True)
            held = _decode_entry(src, name, tmp, root, size, channels, in_memory, log, workers, progress)
            if root is None:
                return held
            try:
                os.rename(tmp, root / entry)
            except OSError:   # another process cached the same data meanwhile: use theirs
                return read_entry(root / entry, name, in_memory)
        return held if held is not None else read_entry(root / entry, name, in_memory=False)
    except BrokenProcessPool:
        raise RunError("a decoding worker process died (out of memory?); decode with fewer processes: "
                       "VQGEN_DECODE_WORKERS=1") from None
    except OSError as e:
        raise RunError(f"could not write the decoded dataset to {tmp_root} ({e.strerror or short_error(e)}); "
                       "free some space or point VQGEN_CACHE at another folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if root is None:
            shutil.rmtree(tmp_root, ignore_errors=True)


def _decode_entry(src: DatasetSource, name: str, folder: Path, root: Path | None, size: int, channels: int,
                  in_memory: bool | None, log: Log, workers: int | None,
                  progress: Progress | None) -> ImageData | None:
    """Decode a source into a cache entry's folder, to be moved into the cache `root` (None: no cache).

    Returns the images when they are to be held in memory (always without a cache; else `in_memory`, or
    None: if they take at most a quarter of it), copied as they were written; else None.
    """
    listing = src.listing()
    if root is not None:
        text = f"at {size}x{size}x{channels}: decoded once, cached in"
        what, where = shown_path(src.source, 40), shown_path(root, 40)
        room = 80 - len(f"Preparing   {text} ")   # both paths shown whole where they fit, else halves of the room
        if len(what) + len(where) > room:
            what = shown_path(src.source, max(room - len(where), room // 2))
            where = shown_path(root, room - len(what))
        log(f"Preparing {what} {text} {where}")
        if in_memory is None:
            in_memory = fits_in_memory(listing.count * channels * size * size)
    else:
        in_memory = True
    writer = EntryWriter(folder, listing.most_per_split((channels, size, size)) if in_memory else None)
    started = time.perf_counter()
    try:
        converted, skipped = decode_listing(src.source, listing, writer, size, channels, workers, progress)
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
    return writer.image_data(name) if in_memory else None


def load_run_images(cfg, log: Log = _quiet, progress: Progress | None = None,
                    source: DatasetSource | None = None) -> ImageData:
    """The images a run's config (a `RunConfig`) trains on, at its model's shape, through the cache.

    source: the config's dataset already resolved in this command (`Plan.source`).
    """
    name = cfg.dataset_source
    if Path(name).is_absolute() and not Path(name).exists():
        raise DatasetError(f"the dataset this run trained on, {name}, is gone; put it back there, "
                           "or train a new run on another copy")
    mc = cfg.model_config
    in_memory = {"auto": None, "yes": True, "no": False}[cfg.train.data_in_memory]
    return load_images(name, mc.image_size, mc.channels, log, progress=progress, in_memory=in_memory,
                       source=source)


__all__ = ["CACHE_FORMAT", "IMAGE_SUFFIXES", "KINDS", "NATIVE_SHAPE", "SHORT_NAMES", "Batches", "DatasetSource",
           "ImageData", "SourceKind", "augment", "augment_params", "cache_dir", "decode_workers", "fits_in_memory",
           "image_to_array", "load_image_file", "load_image_folder", "load_images", "load_run_images",
           "map_batches", "physical_memory", "probe_shape", "resolve_dataset", "to_images", "usable_cache_dir",
           "_list_files"]
