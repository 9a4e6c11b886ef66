"""File mechanics shared by the data cache and run directories: atomic writes and names.

`atomic_write` writes under a temporary name and renames, so a crash never
leaves a half-written file under the real name; `remove_stale_temps` clears
what a killed process left behind. `slug` is the one way a name becomes part
of a file or directory name.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

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
