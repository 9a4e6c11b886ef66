"""A training loop that knows no model.

It asks the model for `loss(*batch)` (a dict whose "loss" it minimises and
whose other entries it averages and shows) and, if the model has one,
`epoch_metrics()` after each epoch. Everything else (evaluation, pictures,
checkpoints) hooks in through callbacks, as in minGPT's trainer.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Callable, Iterable

import torch

from vqgen.errors import RunError
from vqgen.progress import TrainProgress


class NonFiniteLoss(RunError):
    pass


class Trainer:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 batches: Iterable, *, epochs: int, start_epoch: int = 0,
                 scheduler=None, grad_clip: float = 0.0, progress: TrainProgress | None = None):
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.epochs, self.epoch = epochs, start_epoch
        self.scheduler, self.grad_clip = scheduler, grad_clip
        self.progress = progress or TrainProgress(live=False)
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        self.epoch_logs: dict = {}

    def add_callback(self, event: str, fn: Callable[["Trainer"], None]) -> None:
        self.callbacks[event].append(fn)

    def trigger_callbacks(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    def run(self) -> None:
        self.progress.start(self.epochs, self.epoch, len(self.batches))
        try:
            while self.epoch < self.epochs:
                self.run_epoch()
                self.epoch += 1
                self.trigger_callbacks("on_epoch_end")
                self.progress.end_epoch(self.epoch, self.epoch_logs)
        finally:
            self.progress.stop()

    def run_epoch(self) -> None:
        self.model.train()
        if hasattr(self.model, "epoch_metrics"):
            self.model.epoch_metrics()  # start counting afresh: pictures and evaluation count too
        self.progress.start_epoch(self.epoch + 1)
        sums: dict[str, float] = defaultdict(float)
        count = 0
        t0 = time.perf_counter()
        for batch in self.batches:
            out = self.model.loss(*batch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"the loss became {loss.item()} in epoch {self.epoch + 1}; "
                                    "the last good checkpoint is kept: lower --lr and resume or retrain")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            n = batch[0].shape[0]
            count += n
            logs = {k: v.item() for k, v in out.items()}
            for k, v in logs.items():
                sums[k] += v * n
            self.progress.batch(logs, n)
        seconds = time.perf_counter() - t0
        self.epoch_logs = {k: v / max(count, 1) for k, v in sums.items()}
        if hasattr(self.model, "epoch_metrics"):
            self.epoch_logs.update(self.model.epoch_metrics())
        self.epoch_logs["img_per_s"] = count / max(seconds, 1e-9)
        self.epoch_logs["seconds"] = seconds
        if not all(math.isfinite(v) for v in self.epoch_logs.values()):
            raise NonFiniteLoss(f"training produced non-finite values in epoch {self.epoch + 1}; "
                                "the last good checkpoint is kept: lower --lr and resume or retrain")
