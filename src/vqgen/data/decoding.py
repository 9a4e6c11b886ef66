"""Decoding a source's listing into a cache entry, on every core for a large dataset.

Workers run `vqgen.decode` (Pillow and NumPy only). On Linux they are forked and decode into slots of
an anonymous mapping shared with this process, sending back only counts; elsewhere they are spawned
and pickle their chunks back. Stop signals (Ctrl-C, SIGTERM, SIGHUP) are this process's to handle:
workers ignore them, are killed when decoding stops early, and on Linux die with this process however
it ends (interrupts.as_worker), so none is left running.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vqgen import interrupts
from vqgen.data.cache import EntryWriter
from vqgen.data.sources import Listing, held_out_count
from vqgen.decode import decode_chunk
from vqgen.errors import DatasetError, UsageError
from vqgen.memory import physical_memory

CHUNK = 256               # images per decoding task
HOLDOUT_SEED = 0          # fixed, so every run of a dataset holds out the same images
MIN_FOR_WORKERS = 4096    # smaller datasets decode in this process: starting workers costs more
WORKER_MEMORY = 512 << 20 # at most one worker per this much of the memory this process may use (memory.py)

Progress = Callable[[int, int], None]   # (images done, images in all)


def decode_workers(n_images: int) -> int:
    """Worker processes to decode n images with: none for small datasets, else one per core, and no more than
    the memory this process may use (a container's limit where lower than the machine's) allows."""
    env = os.environ.get("VQGEN_DECODE_WORKERS")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            raise UsageError(f"VQGEN_DECODE_WORKERS={env!r}: give a whole number (0: decode in this process)") from None
    if n_images < MIN_FOR_WORKERS:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory = physical_memory()
    return max(1, min(cores, 32, memory // WORKER_MEMORY if memory else 32))


_SLOTS: np.ndarray | None = None   # in a decoding worker: the output buffers it shares with the main process


def _use_slots(slots: np.ndarray, parent: int) -> None:
    """A forked worker's start: stop signals left to the parent, and the output buffers it shares with it."""
    global _SLOTS
    interrupts.as_worker(parent)
    _SLOTS = slots


def _started(pool: ProcessPoolExecutor) -> ProcessPoolExecutor:
    """The pool with its workers started, no stop signal landing while they are forked: one that arrives then
    waits until they are (Python ignores an exception raised in its fork hooks: a Ctrl-C there was lost)."""
    try:
        with interrupts.blocked():
            pool.submit(int)   # the first task forks every worker (spawned ones start as tasks come)
    except BaseException:   # the stop that waited: raised as the block ends
        _stop(pool)
        raise
    return pool


def _stop(pool: ProcessPoolExecutor) -> None:
    """Decoding stopped early (an interruption, an error): kill the workers now rather than wait for the chunks
    in flight, then drop the queued ones."""
    if hasattr(pool, "kill_workers"):   # Python 3.14
        pool.kill_workers()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                process.kill()
            except (OSError, ValueError):
                pass
    pool.shutdown(wait=True, cancel_futures=True)


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
        with _started(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=interrupts.as_worker, initargs=(os.getpid(),))) as pool:
            try:
                pending = collections.deque()
                for chunk in chunks:
                    pending.append(pool.submit(decode_chunk, chunk, size, channels))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            except BaseException:
                _stop(pool)
                raise
        return
    # Workers run Pillow and NumPy only. "fork" starts them at once and, unlike "spawn", does not run the
    # caller's main script again in each (a notebook's or an unguarded script's). They decode into slots of
    # an anonymous mapping shared with this process, which they inherit: a chunk is neither pickled nor piped
    # back, and the slots are reused rather than allocated for every chunk.
    n_slots = 2 * workers   # the chunks in flight, the one being read here included
    shared = mmap.mmap(-1, n_slots * CHUNK * channels * size * size)
    slots = np.frombuffer(shared, dtype=np.uint8).reshape(n_slots, CHUNK, channels, size, size)
    with _started(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                      initializer=_use_slots, initargs=(slots, os.getpid()))) as pool:
        try:
            yield from _decoded_in_slots(pool, chunks, slots, size, channels)
        except BaseException:   # GeneratorExit too: the caller stopped reading
            _stop(pool)
            raise


def _decoded_in_slots(pool: ProcessPoolExecutor, chunks: Iterable[list], slots: np.ndarray, size: int,
                      channels: int) -> Iterator[tuple]:
    """Chunks decoded by forked workers into shared slots, in order, a few ahead at a time."""
    n_slots = len(slots)
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


def decode_listing(source: str, listing: Listing, writer: EntryWriter, size: int, channels: int,
                   workers: int | None, progress: Progress | None) -> tuple[int, int]:
    """Decode every split into the writer, holding out a fixed 5% where there is no test split.

    Returns (images converted to the model's mode, unreadable images skipped).
    """
    splits = listing.splits
    train_name, test_name = listing.roles()
    held_out: set[int] = set()
    if test_name is None:
        n = splits[train_name].count
        if n < 2:
            raise DatasetError(f"`dataset` {source}: {n} image(s); vqgen needs at least 2, one to train on "
                               "and one held out to evaluate")
        held_out = set(torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))[:held_out_count(n)]
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
            results = _decoded_chunks(split.chunks(CHUNK), size, channels, workers)
        offset = 0
        with contextlib.closing(results):   # stopped early: its workers stop now, not when collected
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
                interrupts.check()
    return converted, skipped
