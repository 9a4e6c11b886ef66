"""Training progress for people: rich bars on a terminal, plain lines elsewhere.

On a terminal, three lines that fit 80 columns:

    ⠙ epoch 2/3  ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  1/3  0:00:41 • 0:00:31
      batches    ━━━━━━━━━━━━━━━━━━╸━━━━━━━━━━━━━━━━━━━━━  412/938  0:00:16 • 0:00:21
      loss 0.0104  mse 0.00948  vq 0.000408  usage 100%  ppl 431  2,310 img/s

The epoch bar moves with every logged step, so its time left is known from the
first seconds. The live figures wrap onto more lines on a narrow terminal
rather than being cut. When output is not a terminal (a log file, CI), one
line per epoch instead (two where one would be wider than the console: the
held-out figures under the training ones); `quiet` prints nothing.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

HIDDEN = ("lr", "img_per_s", "seconds")


def format_value(key: str, v, figure=None) -> str:
    """A figure's value: a share as a percentage and a count with thousands separators, as the model's
    `figure` (a models.Figure) declares them; other numbers to three significant digits."""
    fmt = figure.fmt if figure is not None else ""
    if isinstance(v, int) and ("%" in fmt or "," in fmt or key.endswith("img_per_s")):
        v = float(v)   # a whole number read back from a CSV
    if not isinstance(v, float):
        return str(v)
    if "%" in fmt or "," in fmt:
        return fmt.format(v)
    if key.endswith("img_per_s"):
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"


def format_logs(logs: dict, keys: list[str] | None = None, figures: dict | None = None) -> str:
    """Figures as 'loss 0.0104  mse 0.00948  usage 100%  ppl 431'; `figures`: models.Figure by name."""
    figures = figures or {}
    parts = [f"{_short(k, figures)} {format_value(k, v, figures.get(k))}" for k, v in logs.items()
             if (keys is None or k in keys) and k not in HIDDEN]
    return "  ".join(parts)


def _short(key: str, figures: dict) -> str:
    f = figures.get(key)
    return (f.short or key) if f is not None else key


class _Bars(Progress):
    """The two bars, then the live figures on a line of their own."""

    info: str = ""

    def get_renderables(self):
        yield Group(self.make_tasks_table(self.tasks), Text(self.info, style="dim", overflow="fold"))


class TrainProgress:
    """What the trainer reports to; knows nothing of models."""

    def __init__(self, console: Console | None = None, live: bool | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.quiet = quiet
        self.live = (self.console.is_terminal if live is None else live) and not quiet
        self.figures: dict = {}   # how the model's figures read (models.Figure by name), see `describe`
        self.progress: _Bars | None = None

    def describe(self, figures: list) -> None:
        """Show these figures (models.Figure) by their short names and formats."""
        self.figures = {f.name: f for f in figures}

    def log(self, text: str, always: bool = False) -> None:
        """A status line; `always`: also when quiet (what was kept of a stopped run, like an error)."""
        if self.quiet and not always:
            return
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
        else:
            self.console.print(text, highlight=False)

    def counter(self, description: str):
        """A progress(done, total) callback for work before training (decoding a dataset): on a terminal, a
        bar with images per second, gone when the work is done."""
        if not self.live:
            return None
        state: dict = {}

        def update(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = Progress(TextColumn(description), BarColumn(bar_width=None),
                                        TextColumn("{task.completed:,}/{task.total:,}"),
                                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                        console=self.console, transient=True, expand=True)
                state["bar"].start()
                state["task"] = state["bar"].add_task(description, total=total, rate="")
            bar = state["bar"]
            speed = bar.tasks[0].speed
            bar.update(state["task"], completed=done, rate=f"{speed:,.0f} img/s" if speed else "")
            if done >= total:
                bar.stop()
        return update

    def start(self, epochs: int, start_epoch: int, batches: int) -> None:
        self.epochs, self.batches = epochs, batches
        if not self.live:
            return
        self.progress = _Bars(SpinnerColumn(), TextColumn("{task.description}", style="bold"),
                              BarColumn(bar_width=None), TextColumn("{task.fields[count]}"),
                              TimeElapsedColumn(), TextColumn("•"), TimeRemainingColumn(),
                              console=self.console, transient=False, expand=True)
        self.progress.start()
        self.epoch_task = self.progress.add_task(f"epoch {start_epoch + 1}/{epochs}", total=epochs,
                                                 completed=start_epoch, count=f"{start_epoch}/{epochs}")
        self.batch_task = self.progress.add_task("  batches", total=batches, count="")

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        if self.progress:
            self.epoch_now = epoch
            self.progress.update(self.epoch_task, description=f"epoch {epoch}/{self.epochs}")
            self.progress.reset(self.batch_task, total=self.batches, completed=done,
                                count=f"{done}/{self.batches}")

    def batch(self, step: int, logs: dict | None = None) -> None:
        if not self.progress:
            return
        self.progress.update(self.batch_task, completed=step, count=f"{step}/{self.batches}")
        if logs is not None:   # every logged step: the figures, and the epoch bar's fraction (for its ETA)
            self.progress.update(self.epoch_task, completed=self.epoch_now - 1 + step / self.batches)
            self.progress.info = f"  {format_logs(logs, figures=self.figures)}  {logs.get('img_per_s', 0):,.0f} img/s"

    def end_epoch(self, epoch: int, logs: dict) -> None:
        if self.progress:
            self.progress.update(self.epoch_task, completed=epoch, count=f"{epoch}/{self.epochs}")
        train = {k: v for k, v in logs.items() if not k.startswith("test_")}
        test = {k[5:]: v for k, v in logs.items() if k.startswith("test_")}
        line = f"epoch {epoch}/{self.epochs}  {format_logs(train, figures=self.figures)}"
        held_out = f"held out: {format_logs(test, figures=self.figures)}" if test else ""
        if held_out and len(line) + 4 + len(held_out) <= self.console.width:
            line += f"  | {held_out}"
        elif held_out:   # too wide for one line: the held-out figures under the training ones
            line += f"\n  {held_out}"
        self.log(line)

    def stop(self) -> None:
        if self.progress:
            self.progress.info = ""
            self.progress.stop()
            self.progress = None
