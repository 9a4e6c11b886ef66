"""A run's record step by step: `steps.csv` and TensorBoard event files, both in the run directory.

The trainer reports at most every quarter of a second (reading a loss off a
GPU stalls it, so not every step): the loss terms, codebook usage and
perplexity, the learning rate and images per second. Each epoch adds the
held-out figures and the epoch's pictures. `tensorboard --logdir runs` shows
every run; `steps.csv` is the same record for a spreadsheet or pandas.

A resumed run continues the record from where its checkpoint is: rows and
events after that step (of an epoch that is being trained again) are dropped.
Each row of steps.csv is appended whole or not at all (`files.append_whole`):
rewriting the whole file through a temporary one at every row would cost time
that grows with the run; the rewrite on resume is a whole-file write.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

import numpy as np

from vqgen.errors import explain
from vqgen.files import append_whole, write_text

STEPS = "steps.csv"


def read_steps(path: Path) -> list[dict]:
    """The rows of a steps.csv as numbers; an unreadable file reads as no rows (it is only a record)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    out.append({k: float(v) for k, v in row.items() if k and v not in (None, "")})
                except ValueError:
                    continue
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [r for r in out if "step" in r and "epoch" in r]


def _tensorboard_dir(run_dir: Path) -> tuple[str, int | None]:
    """The folder name to hand TensorBoard, and a descriptor to close when it is done.

    TensorBoard encodes a folder's name in UTF-8 whatever the locale's file-name encoding is, so under a
    Latin-1 or ASCII locale a non-ASCII name would be another folder, or none. There it is given the folder
    through an open descriptor (/proc/self/fd/N), a name all in ASCII.
    """
    name = str(run_dir)
    try:
        if name.encode("utf-8") == os.fsencode(name):
            return name, None
    except UnicodeEncodeError:   # surrogates: bytes that are not UTF-8
        pass
    proc = Path("/proc/self/fd")
    if not proc.is_dir():
        return name, None
    fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return f"{proc}/{fd}", fd


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread hands its errors (a full disk, a folder gone) to the next write of the
    main thread, where they are named; it also lets them escape, and Python would print the thread's
    traceback. This hook keeps that one quiet and leaves every other thread's errors as they were."""
    if getattr(threading.excepthook, "vqgen", False):
        return
    before = threading.excepthook

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, Exception):
            return
        before(args)

    hook.vqgen = True
    threading.excepthook = hook


class RunLog:
    """steps.csv, a row appended whole at a time, and TensorBoard's events; a failed write of either (a full
    disk, the run folder removed) is raised as a named error naming the file."""

    def __init__(self, run_dir: Path, start_step: int = 0):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STEPS
        rows = read_steps(self.path)
        kept = [r for r in rows if r["step"] <= start_step]
        if len(kept) != len(rows) or (self.path.exists() and not rows):
            self._rewrite(kept)
        self.columns = list(kept[0]) if kept else None
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise explain(e, self.path) or e from None
        self.tb, self.tb_fd = None, None
        from torch.utils.tensorboard import SummaryWriter

        _quiet_writer_threads()
        try:
            name, self.tb_fd = _tensorboard_dir(self.run_dir)
            self.tb = self._events(lambda: SummaryWriter(log_dir=name, purge_step=start_step or None,
                                                         flush_secs=30))
        except BaseException:
            self.close()
            raise

    def _rewrite(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, list(rows[0]))
            w.writeheader()
            w.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
        write_text(self.path, buf.getvalue(), make_folder=False)

    def _events(self, write):
        """Call `write` on TensorBoard's writer; its failure raised as a named error naming the events file."""
        try:
            return write() if self.tb is None else write(self.tb)
        except Exception as e:
            named = explain(e, self.run_dir / "events.out.tfevents.*")
            if named is None:
                raise
            raise named from None

    def step(self, step: int, epoch: float, logs: dict) -> None:
        row = {"step": step, "epoch": round(epoch, 4), **logs}
        buf = io.StringIO()
        if self.columns is None:
            self.columns = list(row)
            csv.DictWriter(buf, self.columns).writeheader()
        csv.DictWriter(buf, self.columns, extrasaction="ignore").writerow({k: _fmt(v) for k, v in row.items()})
        append_whole(self.fd, buf.getvalue().encode("utf-8"), self.path)

        def add(tb):
            for k, v in logs.items():
                tb.add_scalar(f"train/{k}", v, step)
        self._events(add)

    def epoch(self, step: int, test: dict, pictures: dict) -> None:
        """Held-out figures and the epoch's pictures (PIL images by name)."""
        def add(tb):
            for k, v in test.items():
                tb.add_scalar(f"test/{k}", v, step)
            for name, image in pictures.items():
                arr = np.asarray(image)
                tb.add_image(f"pictures/{name}", arr, step, dataformats="HW" if arr.ndim == 2 else "HWC")
            tb.flush()
        self._events(add)

    def close(self) -> None:
        """Close the files; a failure here raises nothing (the record is what was written until then)."""
        os.close(self.fd)
        try:
            if self.tb is not None:
                self.tb.close()
        except Exception:  # noqa: BLE001 - the run's own outcome is what is reported
            pass
        finally:
            if self.tb_fd is not None:
                os.close(self.tb_fd)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(int(v)) if isinstance(v, (int, np.integer)) else str(v)
