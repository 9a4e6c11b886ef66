"""Training progress for people: rich bars on a terminal, plain lines elsewhere.

One bar for epochs and one for the batches of the current epoch, with the live
loss terms, codebook figures, images per second and time left. When output is
not a terminal (a log file, CI), one line per epoch instead.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


def format_logs(logs: dict, keys: list[str] | None = None) -> str:
    parts = []
    for k, v in logs.items():
        if keys is not None and k not in keys:
            continue
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}" if abs(v) < 1e4 else f"{k} {v:.0f}")
        else:
            parts.append(f"{k} {v}")
    return "  ".join(parts)


class TrainProgress:
    """What the trainer reports to; knows nothing of models."""

    def __init__(self, console: Console | None = None, live: bool | None = None):
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.live = self.console.is_terminal if live is None else live
        self.progress: Progress | None = None

    def log(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
        else:
            self.console.print(text, highlight=False)

    def start(self, epochs: int, start_epoch: int, batches: int) -> None:
        self.epochs, self.batches = epochs, batches
        if not self.live:
            return
        self.progress = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                                 BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=self.console, transient=False)
        self.progress.start()
        self.epoch_task = self.progress.add_task("epochs", total=epochs, completed=start_epoch, info="")
        self.batch_task = self.progress.add_task("batches", total=batches, info="")

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        if self.progress:
            self.progress.reset(self.batch_task, total=self.batches, completed=done,
                                description=f"epoch {epoch}/{self.epochs}", info="")

    def batch(self, step: int, logs: dict | None = None, extra: dict | None = None) -> None:
        if not self.progress:
            return
        if logs is None:
            self.progress.update(self.batch_task, completed=step)
            return
        shown = {k: v for k, v in logs.items() if k not in ("lr", "img_per_s")}
        info = f"{format_logs({**shown, **(extra or {})})}  {logs.get('img_per_s', 0):.0f} img/s"
        self.progress.update(self.batch_task, completed=step, info=info)

    def end_epoch(self, epoch: int, logs: dict) -> None:
        if self.progress:
            self.progress.update(self.epoch_task, completed=epoch)
        self.log(f"epoch {epoch}/{self.epochs}  {format_logs(logs)}")

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None
