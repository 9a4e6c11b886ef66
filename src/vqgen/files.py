"""File mechanics shared by the commands, run directories and the data cache: whole writes and names.

`atomic_write` is the one way vqgen writes a file: under a temporary name
beside the target, renamed into place, so the target is either the whole new
file or, after a failure (a full disk, a read-only folder, Ctrl-C), exactly
what it was; the temporary file goes, and a full disk or a folder that cannot
be written is raised as a named error (`errors.explain`) naming the file.
`write_bytes` and `write_text` are it for data already in memory (pictures,
GIFs and figures are encoded in memory first, so their size is known);
`append_whole` adds to a log file a record at a time, each whole or not at
all; `check_writable` refuses a folder that cannot be written before work
that would be lost. `remove_stale_temps` clears what a killed process left
behind, and `discard_own_temps` what this process is writing when it must
end at once (a second Ctrl-C or SIGTERM). `slug` is the one way a name becomes part of a file or directory
name; `check_path_text` refuses one the locale cannot put in a file name, and
`readable` shows one the locale could not decode; `shown_path` is the one way
a long path is shown.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from vqgen.errors import OutputPathError, UsageError, explain

# The temporary names that vqgen and its libraries write beside a file, and how to tell that their writer is gone:
# - vqgen's own (`atomic_write`, a cache entry being decoded): `.NAME.PID.tmp`, gone when no process PID runs;
# - safetensors' (save_file writes `.tmpXXXXXX` beside its target, 6 letters or digits, then renames it: the
#   Rust tempfile crate's names), which name no process: gone when no process here holds the file open (on
#   Linux, from /proc), elsewhere when untouched for LIBRARY_TEMP_AGE seconds.
# torch.save, Pillow, matplotlib and TensorBoard write their files directly, under the names they are given.
TEMP_PATTERN = re.compile(r"^\..+\.(\d+)\.tmp$")
NAME_MAX = 255

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


def temp_path(path: Path) -> Path:
    """The temporary name beside `path` that this process writes it under (a hash where the name is too long)."""
    path = Path(path)
    name = f".{path.name}.{os.getpid()}.tmp"
    if len(os.fsencode(name)) > NAME_MAX:
        name = f".{hashlib.sha1(os.fsencode(path.name)).hexdigest()[:16]}.{os.getpid()}.tmp"
    return path.with_name(name)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    except OSError:   # a folder that is gone or read-only: nothing can be left in it either
        pass


def atomic_write(path: Path, write: Callable[[Path], None], *, size: int | None = None,
                 make_folder: bool = False) -> Path:
    """Call `write(tmp_path)`, then rename the result over `path`; returns `path`.

    On any failure the temporary file is removed and `path` is as it was. A full disk, a read-only or
    forbidden folder, or a folder removed meanwhile, is raised as a named error (`errors.explain`) naming
    `path` and, for a full disk, `size` (the bytes it needs) where given; another OSError as an
    OutputPathError naming `path`. make_folder: create the folder first.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        if make_folder:
            path.parent.mkdir(parents=True, exist_ok=True)
        with temporary(tmp):
            write(tmp)
            os.replace(tmp, path)
    except BaseException as e:
        _discard(tmp)
        named = explain(e, path, size) if isinstance(e, Exception) else None
        if named is None and isinstance(e, OSError):   # a name too long, a link loop ...
            named = OutputPathError(f"could not write {path} ({e.strerror or e.__class__.__name__})")
        if named is None or named is e:
            raise
        raise named from None
    return path


def write_bytes(path: Path, data: bytes, make_folder: bool = True) -> Path:
    """`data` as the file `path`, whole or not at all (`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), size=len(data), make_folder=make_folder)


def write_text(path: Path, text: str, make_folder: bool = True) -> Path:
    """`text` as the UTF-8 file `path`, whole or not at all (`atomic_write`)."""
    return write_bytes(path, text.encode("utf-8", "surrogateescape"), make_folder)


def append_whole(fd: int, data: bytes, path: Path) -> None:
    """Append `data` to the log file open as `fd` (O_APPEND) in one go, whole or not at all: after a failed
    write (a full disk) the file is cut back to where it was, and the failure raised as a named error naming
    `path`."""
    before = os.lseek(fd, 0, os.SEEK_END)
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError as e:
        try:
            os.ftruncate(fd, before)
        except OSError:
            pass
        raise explain(e, path, len(data)) or e from None


def check_writable(folder: Path, then: str = "") -> None:
    """Refuse, as a named error, a folder no file can be written in (a read-only file system, no
    permission); `then` is added to the message (what to do instead)."""
    probe = temp_path(Path(folder) / "write-check")
    try:
        probe.touch()
    except OSError as e:
        named = explain(e, folder, action="write in")
        if named is None:
            raise
        raise type(named)(named.message + then) from None
    finally:
        _discard(probe)


def readable(text: str) -> str:
    """A name read from the file system as it can be drawn or shown: bytes that the locale could not decode
    (held as surrogates, under an ASCII locale) read as UTF-8, and what is not UTF-8 as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_path_text(value, param: str) -> None:
    """Refuse, naming `param`, a name or path that the locale's file-name encoding cannot write (a letter
    outside Latin-1 under a Latin-1 locale, any non-ASCII letter given as text under an ASCII one)."""
    text = os.fspath(value)
    if isinstance(text, bytes):
        return
    try:
        os.fsencode(text)
    except UnicodeEncodeError as e:
        raise UsageError(f"`{param}` {text!r}: {text[e.start]!r} cannot be part of a file name under this locale "
                         f"(its file names are {sys.getfilesystemencoding()}); use other letters, or a UTF-8 "
                         "locale (LANG=C.UTF-8)") from None


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (this process does; one that cannot be signalled, another
    user's, counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
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
            stale = not alive(int(m.group(1)))
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
