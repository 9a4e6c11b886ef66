"""A run's record step by step: `steps.csv` and TensorBoard event files, both in the run directory.

The trainer reports at most every quarter of a second (reading a loss off a
GPU stalls it, so not every step): the loss terms, codebook usage and
perplexity, the learning rate and images per second. Each epoch adds the
held-out figures and the epoch's pictures. `tensorboard --logdir runs` shows
every run; `steps.csv` is the same record for a spreadsheet or pandas.

A resumed run continues the record from where its checkpoint is: rows and
events after that step (of an epoch that is being trained again) are dropped.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from vqgen.files import atomic_write

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


class RunLog:
    def __init__(self, run_dir: Path, start_step: int = 0):
        self.path = Path(run_dir) / STEPS
        rows = read_steps(self.path)
        kept = [r for r in rows if r["step"] <= start_step]
        if len(kept) != len(rows) or (self.path.exists() and not rows):
            self._rewrite(kept)
        self.columns = list(kept[0]) if kept else None
        self.file = open(self.path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, self.columns, extrasaction="ignore") if self.columns else None
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir=str(run_dir), purge_step=start_step or None, flush_secs=30)

    def _rewrite(self, rows: list[dict]) -> None:
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if rows:
                    w = csv.DictWriter(f, list(rows[0]))
                    w.writeheader()
                    w.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
        atomic_write(self.path, write)

    def step(self, step: int, epoch: float, logs: dict) -> None:
        row = {"step": step, "epoch": round(epoch, 4), **logs}
        if self.writer is None:
            self.columns = list(row)
            self.writer = csv.DictWriter(self.file, self.columns, extrasaction="ignore")
            self.writer.writeheader()
        self.writer.writerow({k: _fmt(v) for k, v in row.items()})
        for k, v in logs.items():
            self.tb.add_scalar(f"train/{k}", v, step)

    def epoch(self, step: int, test: dict, pictures: dict) -> None:
        """Held-out figures and the epoch's pictures (PIL images by name)."""
        self.file.flush()
        for k, v in test.items():
            self.tb.add_scalar(f"test/{k}", v, step)
        for name, image in pictures.items():
            arr = np.asarray(image)
            self.tb.add_image(f"pictures/{name}", arr, step, dataformats="HW" if arr.ndim == 2 else "HWC")
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(int(v)) if isinstance(v, (int, np.integer)) else str(v)
