"""File mechanics shared by the data cache and run directories: atomic writes and names.

`atomic_write` writes under a temporary name and renames, so a crash never
leaves a half-written file under the real name; `remove_stale_temps` clears
what a killed process left behind, and `discard_own_temps` what this process
is writing when it must end at once (a second Ctrl-C or SIGTERM). `slug` is
the one way a name becomes part of a file or directory name.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from vqgen.errors import OutputPathError

# The temporary names that vqgen and its libraries write beside a file, and how to tell that their writer is gone:
# - vqgen's own (`atomic_write`, a cache entry being decoded): `.NAME.PID.tmp`, gone when no process PID runs;
# - safetensors' (save_file writes `.tmpXXXXXX` beside its target, 6 letters or digits, then renames it: the
#   Rust tempfile crate's names), which name no process: gone when no process here holds the file open (on
#   Linux, from /proc), elsewhere when untouched for LIBRARY_TEMP_AGE seconds.
# torch.save, Pillow, matplotlib and TensorBoard write their files directly, under the names they are given.
TEMP_PATTERN = re.compile(r"^\..+\.(\d+)\.tmp$")
LIBRARY_TEMP_PATTERN = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
LIBRARY_TEMP_AGE = 3600.0

_writing: set[Path] = set()   # this process's temporary files and folders, while it writes them


@contextmanager
def temporary(path: Path):
    """`path` is this process's temporary file or folder in this block: removed if the process must end at once."""
    _writing.add(Path(path))
    try:
        yield Path(path)
    finally:
        _writing.discard(Path(path))


def discard_own_temps() -> None:
    """Remove the temporary files and folders this process is writing (it is about to end without finishing)."""
    for p in list(_writing):
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            pass


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then rename the result over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary(tmp):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_files() -> set[str] | None:
    """The paths of the files that the processes here have open (those this user may see), or None where that
    cannot be known (no /proc)."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    return found


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files and folders in `folder` left by processes that no longer run; returns how many."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    open_files: set[str] | None = None
    scanned = False
    for p in Path(folder).iterdir():
        m = TEMP_PATTERN.match(p.name)
        if m:
            stale = not _alive(int(m.group(1)))
        elif LIBRARY_TEMP_PATTERN.match(p.name) and p.is_file():
            if not scanned:
                open_files, scanned = _open_files() if sys.platform.startswith("linux") else None, True
            try:
                stale = os.path.realpath(p) not in open_files if open_files is not None else \
                    time.time() - p.stat().st_mtime > LIBRARY_TEMP_AGE
            except OSError:
                continue
        else:
            continue
        if stale:
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def slug(text: str) -> str:
    """A name as it reads in a file or directory name: 'ylecun/mnist' -> 'mnist', 'My Data!' -> 'my-data'."""
    name = Path(str(text).rstrip("/")).name or str(text)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_output_file(path: Path, param: str, suffixes: tuple[str, ...] = PICTURE_SUFFIXES,
                      inputs: Iterable[Path] = ()) -> Path:
    """An output file that can be written and overwrites no input, or a clear error naming `param`."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"`{param}` {path}: is a folder; give a file name such as {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise OutputPathError(f"`{param}` {path}: give a file name ending in {' or '.join(suffixes[:2])}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"`{param}` {path}: {parent} is a file, not a folder")
            break
    for other in inputs:
        if _same(path, Path(other)):
            raise OutputPathError(f"`{param}` {path}: is one of the inputs, which it would overwrite; "
                                  "give another file name")
    return path


def check_output_dir(path: Path, param: str, inputs: Iterable[Path] = ()) -> Path:
    """An output folder that is not a file and not an input folder, or a clear error naming `param`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"`{param}` {path}: is a file; give a folder")
    for other in inputs:
        if _same(path, Path(other)):
            raise OutputPathError(f"`{param}` {path}: is the input folder, whose images would be overwritten; "
                                  "give another folder")
    return path


def unique_path(path: Path) -> Path:
    """`path`, or `name-2.ext`, `name-3.ext`, ... if it is taken: a default output never overwrites."""
    path = Path(path)
    if not path.exists():
        return path
    for i in range(2, 100_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise OutputPathError(f"{path}: too many files of that name; give `out`")


def output_names(paths: list[Path], suffix: str = ".png") -> list[str]:
    """One output file name per input file, all different even where inputs share a name.

    'a.jpg' -> 'a.png'; where 'a.png' and 'a.jpg' both come in: 'a-png.png' and 'a-jpg.png'.
    """
    stems = [p.stem.lower() for p in paths]
    taken: set[str] = set()
    names = []
    for p, stem in zip(paths, stems):
        base = p.stem if stems.count(stem) == 1 else f"{p.stem}-{p.suffix.lstrip('.')}"
        name, i = base + suffix, 2
        while name.lower() in taken:
            name, i = f"{base}-{i}{suffix}", i + 1
        taken.add(name.lower())
        names.append(name)
    return names


def writing(path: Path):
    """A context that turns a failed write (disk full, no permission) into one clear error."""
    return _Writing(Path(path))


class _Writing:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self.path

    def __exit__(self, kind, error, tb):
        if isinstance(error, OSError):
            raise OutputPathError(f"could not write {self.path} ({error.strerror or error.__class__.__name__})") \
                from None
        return False
