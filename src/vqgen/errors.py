"""Errors that vqgen raises for what it cannot do, each with a message that says what and how to fix it.

Two exit codes, as the CLI reports them: `UsageError` and its kinds mean the
user asked for something that cannot work (exit 2); `RunError` and its kinds
mean a run failed while doing what was asked (exit 1). The named kinds say
which part of the outside world was at fault, so code can catch them:

    VQGenError
      UsageError (2)       a setting, option or path that cannot work
        DatasetError       a dataset that cannot be read as asked
        OutputPathError    an output path that is unusable or would overwrite an input
      RunError (1)         a run that failed
        CheckpointError    damaged weights, resume state or metadata
        DownloadError      the Hugging Face Hub could not be reached
        NonFiniteLoss      training diverged
        DiskFull           no space left where a file was being written
        NotWritable        a read-only or forbidden folder
        OutOfMemory        the machine's or the GPU's memory ran out

`explain` recognises the last three in what the system and the libraries
raise (an OSError's errno, safetensors' "os error 28", PyTorch's
"unexpected pos" and allocator messages), anywhere in an exception's chain:
the writers (files.atomic_write) and the command line ask it, so each such
fault reads the same wherever it happens.

Messages name the library's parameters between backticks ("`steps` must be at
least 2"). `str(error)` drops the backticks; the command line replaces each
name with its flag ("--steps must be at least 2"), so the library and the CLI
never word the same error twice.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

PARAM = re.compile(r"`([a-z][a-z0-9_]*)`")


class VQGenError(Exception):
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return PARAM.sub(r"\1", self.message)

    def render(self, name_for) -> str:
        """The message with each `param` replaced by `name_for(param)` (a flag, say)."""
        return PARAM.sub(lambda m: name_for(m.group(1)), self.message)


class UsageError(VQGenError, ValueError):
    """Also a ValueError, so Python callers can catch bad arguments the usual way."""
    exit_code = 2


class DatasetError(UsageError):
    """A dataset folder, file or Hub dataset that cannot be read as asked."""


class OutputPathError(UsageError):
    """An output path that cannot be written, or would overwrite an input."""


class RunError(VQGenError):
    exit_code = 1


class CheckpointError(RunError):
    """Weights, resume state or metadata that are damaged or from elsewhere."""


class DownloadError(RunError):
    """The Hugging Face Hub could not be reached."""


class NonFiniteLoss(RunError):
    """Training produced NaN or infinity."""


class DiskFull(RunError):
    """No space left on the disk (or over a quota) where a file was being written."""


class NotWritable(RunError):
    """A folder or file that cannot be written or removed: a read-only file system, or no permission."""


class OutOfMemory(RunError):
    """The machine's memory, or the GPU's, ran out."""


FULL = (errno.ENOSPC, errno.EDQUOT)
FORBIDDEN = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
             errno.EPERM: "permission denied"}
# What libraries say where they do not raise an OSError: safetensors (Rust) and PyTorch's file writer.
FULL_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122", "unexpected pos")
MEMORY_TEXTS = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "out of memory",
                "Unable to allocate")


def _chain(error: BaseException):
    """The error, then its causes and contexts."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def size_text(n: float) -> str:
    """Bytes as people read them, in decimal units: '1.2 GB', '45.3 MB', '770 kB', '312 bytes'. The one
    format of a size in vqgen's messages and tables."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= 0.9995 * scale:   # what would read "1000 kB" reads "1.0 MB"
            value = n / scale
            return f"{value:.1f} {unit}" if value < 99.95 else f"{value:.0f} {unit}"
    return f"{int(n)} bytes"


def free_space(path) -> int | None:
    """Bytes free on the disk that holds `path` (or its nearest existing folder)."""
    p = Path(os.fspath(path)).absolute()
    for folder in (p, *p.parents):
        try:
            return shutil.disk_usage(folder).free
        except (OSError, ValueError):
            continue
    return None


def disk_full(path=None, needed: int | None = None) -> DiskFull:
    where = f"for {path}" if path is not None else "to write to"
    free = free_space(path) if path is not None else None
    sizes = [f"it needs about {size_text(needed)}" if needed else None,
             f"{size_text(free)} free" if free is not None else None]
    known = " and ".join(s for s in sizes if s)
    return DiskFull(f"no space left on the disk {where}{f' ({known})' if known else ''}; "
                    "free some space, or write somewhere else")


def explain(error: BaseException, path=None, needed: int | None = None, action: str = "write",
            lower: str = "the batch size, or the number of images asked for", folder=None) -> VQGenError | None:
    """The named error for a full disk, a folder that cannot be written or exhausted memory, found anywhere in
    `error`'s chain; None for anything else.

    path: the file that was being written (else the OSError's own file name, else `folder`, the folder that
    was being written into); needed: its size, if known; action: what was being done to it ("write",
    "remove"), as the message says it; lower: the settings that use less memory, as the message names them.
    """
    for e in _chain(error):
        if isinstance(e, VQGenError):
            if e is error:   # named already
                return e
            continue
        code = e.errno if isinstance(e, OSError) else None
        where = path if path is not None else getattr(e, "filename", None) or folder
        text = str(e)
        if code in FULL or (code is None and any(t in text for t in FULL_TEXTS)):
            return disk_full(where, needed)
        if code in FORBIDDEN and where is not None:
            return NotWritable(f"cannot {action} {where}: {FORBIDDEN[code]}"
                               + ("; write somewhere else" if action == "write" else ""))
        if code == errno.ENOENT and path is not None:   # the folder went while a file was written into it
            return NotWritable(f"cannot {action} {path}: its folder {Path(os.fspath(path)).parent} is gone "
                               "(removed while vqgen wrote to it?)")
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
                (isinstance(e, RuntimeError) and any(t in text for t in MEMORY_TEXTS)):
            gpu = "CUDA" in text or type(e).__name__ == "OutOfMemoryError"
            asked = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ ?[KMG]i?B)", text, re.IGNORECASE)
            amount = (size_text(int(asked.group(1))) if asked.group(1) else asked.group(2)) if asked else None
            return OutOfMemory(f"out of {'GPU memory' if gpu else 'memory'}"
                               + (f" (asked for {amount} more)" if amount else "") + f"; lower {lower}")
    return None
