"""One process per run: a lock on the run folder, taken by whatever writes the run (training, resuming,
`vqgen runs --clean` while it removes one).

`FolderLock(folder, doing).acquire()` takes an exclusive `flock` on `folder/.vqgen.lock` and writes in the file
who holds it: pid, host, since when, doing what. The kernel drops a flock when its process ends, however it
ends (kill -9 included), so a lock file that a dead process left holds no lock: the next process takes it and
writes itself in; the stale file is never in the way. A second process is refused with `RunInUse`, one line
naming the holder. `holder(folder)` says who holds a folder's lock, without taking it or writing anything.

The lock file is no temporary file (`files.remove_stale_temps` leaves it alone) and no part of a run: it is
removed when its holder lets go, and listings do not count it.

Where flock is missing (Windows) or the file system refuses it, the pid in the file stands in: a live process
on this host holds the folder, and a dead one's file is replaced.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vqgen.errors import RunError
from vqgen.files import alive

try:
    import fcntl
except ImportError:   # Windows
    fcntl = None

LOCK_NAME = ".vqgen.lock"


class RunInUse(RunError):
    """Another process holds the run folder."""


@dataclass
class Holder:
    """Who holds a folder's lock, as its lock file says."""
    pid: int | None
    host: str
    since: float | None
    doing: str

    def describe(self) -> str:
        """'process 1234 (resuming it, since 2025-05-01 14:02:11)', with the host where it is another."""
        who = f"process {self.pid}" if self.pid else "another process"
        if self.host and self.host != socket.gethostname():
            who += f" on {self.host}"
        what = [self.doing] if self.doing else []
        if self.since:
            what.append("since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)))
        return who + (f" ({', '.join(what)})" if what else "")


def _read(path: Path) -> Holder:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(found["pid"]), str(found.get("host", "")), float(found["since"]), str(found.get("doing", "")))
    except (OSError, ValueError, KeyError, TypeError):   # being written, or not ours: still held
        return Holder(None, "", None, "")


def _unsupported(e: OSError) -> bool:
    """A flock that the file system does not offer (some network and FUSE file systems)."""
    return e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS)


def _held_by_pid(path: Path) -> Holder | None:
    """Without flock: the holder the file names, if it is a live process of this host other than this one, or
    a process of another host (whose life cannot be told from here)."""
    if not path.is_file():
        return None
    h = _read(path)
    if h.pid is None or (h.pid == os.getpid() and h.host == socket.gethostname()):
        return None
    if h.host and h.host != socket.gethostname():
        return h
    return h if alive(h.pid) else None


class FolderLock:
    """An exclusive lock on a folder; `doing` says what for in the holder's line ("resuming it")."""

    def __init__(self, folder: Path, doing: str):
        self.folder, self.doing = Path(folder), doing
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise RunInUse naming its holder (OSError where the folder cannot be written)."""
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                locked = self._flock(fd)
                if not locked:
                    holder = _held_by_pid(self.path)
                    if holder is not None:
                        raise RunInUse(self.refusal(holder))
                # The holder before may have let go (and removed the file) between our open and lock: the lock
                # counts only on the file that is at the path now.
                try:
                    mine, there = os.fstat(fd), os.stat(self.path)
                    same = (mine.st_ino, mine.st_dev) == (there.st_ino, there.st_dev)
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                   "doing": self.doing}).encode()
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, text)
                self.fd = fd
                return self
            except BaseException:
                if self.fd != fd:
                    os.close(fd)
                raise
        raise RunInUse(f"{self.folder}: its lock file keeps changing; another process is taking it")

    def _flock(self, fd: int) -> bool:
        """Lock `fd` (False where flock is not to be had here); RunInUse where another process holds it."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            raise RunInUse(self.refusal(_read(self.path))) from None
        except OSError as e:
            if _unsupported(e):
                return False
            raise

    def refusal(self, holder: Holder) -> str:
        return (f"{self.folder} is in use by {holder.describe()}; one process at a time writes a run: wait for "
                "it to end, or stop it first")

    def release(self) -> None:
        """Let go: the lock file is removed (while still locked, so no one locks a file on its way out)."""
        if self.fd is None:
            return
        try:
            mine, there = os.fstat(self.fd), os.stat(self.path)
            if (mine.st_ino, mine.st_dev) == (there.st_ino, there.st_dev):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(folder: Path) -> Holder | None:
    """Who holds `folder`'s lock now, or None; takes nothing and writes nothing."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if fcntl is None:
            return _held_by_pid(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path)
        except OSError as e:
            return _held_by_pid(path) if _unsupported(e) else None
        return None
    finally:
        os.close(fd)   # drops the shared lock too
