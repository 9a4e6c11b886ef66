"""File mechanics shared by the data cache and run directories: atomic writes and names.

`atomic_write` writes under a temporary name and renames, so a crash never
leaves a half-written file under the real name; `remove_stale_temps` clears
what a killed process left behind. `slug` is the one way a name becomes part
of a file or directory name; `shown_path` the one way a long path is shown.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable

from vqgen.errors import OutputPathError

TEMP_PATTERN = re.compile(r"^\..+\.(\d+)\.tmp$")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then rename the result over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files and folders in `folder` left by processes that no longer run; returns how many."""
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for p in Path(folder).iterdir():
        m = TEMP_PATTERN.match(p.name)
        if m and not _alive(int(m.group(1))):
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


def _under_cwd(path: str | Path) -> Path:
    """`path` relative to the current folder when it is under it (a path that still works there), else as
    it is."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(Path.cwd())
        except ValueError:
            pass
    return p


def shown_path(path: str | Path, width: int = 36) -> str:
    """A path as people read it in a line of output: relative to the current folder when under it, else with
    ~ for the home folder, and at most `width` characters (an ellipsis in the middle, the last part whole
    where it fits). A name that is not a local path (mnist, owner/name) is shown as it is."""
    p = _under_cwd(path)
    text = str(p) if p != Path(path) else str(path)
    if p.is_absolute():
        try:
            text = "~/" + str(p.relative_to(Path.home()))
        except ValueError:
            pass
    if len(text) <= width:
        return text
    tail = min(len(p.name), width - 4) if p.name else width // 2
    tail = max(tail, (width - 1) * 2 // 3)
    return text[:width - 1 - tail] + "…" + text[-tail:]
