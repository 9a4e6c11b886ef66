"""A training loop that knows no model.

It calls the model on each batch (`model(*batch)` returns a dict whose "loss"
it minimises and whose other terms it averages and shows), counts per-epoch
figures from `reset_metrics()` to `epoch_metrics()`, and hands everything
else (evaluation, pictures, checkpoints, per-step logs) to callbacks, as in
minGPT's trainer.

It steps one optimizer or several (`Optimization`s): each minimises its own
term of the same forward pass, back-propagated into its own parameters only,
from its own start step on (a generator and a discriminator), with mixed
precision, gradient clipping and a schedule for each.

It keeps where it is (`epoch`, `step` within the epoch, the running means and
the data order's random state at the start of the epoch), so a run stopped in
the middle of an epoch can be saved and continued at the same step.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Callable

import torch

from vqgen.errors import NonFiniteLoss
from vqgen.metrics import RunningMean
from vqgen.progress import TrainProgress

LOG_SECONDS = 0.25   # live figures and per-step logs at most this often: reading a GPU's loss stalls it
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, precision: str):
    """A context that runs the forward pass in `precision` ("fp32": as it is)."""
    if precision not in DTYPES:
        return nullcontext()
    return torch.autocast(device_type, dtype=DTYPES[precision])


class Optimization:
    """One optimizer, the term of the forward pass it minimises, from which step of the run on, and the
    schedule of its learning rate: each step's rate is the optimizer's base rate times `schedule(step)`."""

    def __init__(self, optimizer: torch.optim.Optimizer, loss: str = "loss", start_step: int = 0,
                 schedule: Callable[[int], float] | None = None, name: str = "model"):
        self.optimizer, self.loss, self.start_step, self.schedule, self.name = optimizer, loss, start_step, schedule, name
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]   # as built, whatever a state holds
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def set_step(self, step: int) -> None:
        """The learning rate for this step of the run."""
        if self.schedule is not None:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * self.schedule(step)


class Trainer:
    def __init__(self, model: torch.nn.Module, optimizations: list[Optimization], batches, *, epochs: int,
                 core: torch.nn.Module | None = None, start_epoch: int = 0, start_step: int = 0,
                 running: dict | None = None, grad_clip: float = 0.0, progress: TrainProgress | None = None,
                 precision: str = "fp32", device_type: str = "cpu",
                 sync_gradients: Callable[[list[torch.nn.Parameter]], None] | None = None,
                 before_step: Callable[[], None] | None = None):
        """`model`: what runs the forward pass (wrapped for several processes or compiled); `core`: the model
        itself (default: `model`), whose metrics and step the trainer reads and sets. `optimizations`: one per
        parameter group. `sync_gradients(params)` averages a group's gradients over processes where no
        DistributedDataParallel does it; `before_step()` runs before each forward pass."""
        self.model, self.core, self.optimizations, self.batches = model, core or model, list(optimizations), batches
        self.precision, self.device_type = precision, device_type
        # fp16's small range needs the loss scaled up before backward (and the gradients back down)
        self.scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None
        self.epochs, self.epoch, self.step = epochs, start_epoch, start_step
        self.grad_clip, self.sync_gradients, self.before_step = grad_clip, sync_gradients, before_step
        self.progress = progress or TrainProgress(live=False)
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        self.running = RunningMean(**running) if running else RunningMean()
        self.epoch_logs: dict = {}
        self.step_logs: dict = {}
        self.epoch_start_rng: torch.Tensor | None = None

    @property
    def global_step(self) -> int:
        return self.epoch * len(self.batches) + self.step

    def add_callback(self, event: str, fn: Callable[["Trainer"], None]) -> None:
        """Events: "on_epoch_end" (epoch_logs set), "on_log" (step_logs set, every LOG_SECONDS)."""
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
                self.step = 0
                self.trigger_callbacks("on_epoch_end")
                self.progress.end_epoch(self.epoch, self.epoch_logs)
        finally:
            self.progress.stop()

    def run_epoch(self) -> None:
        self.model.train()
        core = self.core
        if self.step == 0:   # a fresh epoch; a resumed one keeps its counts
            core.reset_metrics()
            self.running = RunningMean()
        generator = getattr(self.batches, "generator", None)
        self.epoch_start_rng = generator.get_state() if generator is not None else None
        self.progress.start_epoch(self.epoch + 1, self.step)
        t0 = time.perf_counter()
        images, last_log = 0, 0.0
        for batch in self.batches.iterate(start=self.step):
            if self.before_step is not None:
                self.before_step()
            core.begin_step(self.global_step, self.epochs * len(self.batches))
            with autocast(self.device_type, self.precision):
                out = self.model(*batch)
            self.optimize(out)
            n = batch[0].shape[0]
            self.running.add(out, n)
            self.step += 1
            images += n
            now = time.perf_counter()
            if now - last_log >= LOG_SECONDS or self.step == len(self.batches):
                last_log = now
                logs = {k: v.item() for k, v in out.items()}
                if not math.isfinite(logs["loss"]):
                    raise NonFiniteLoss(f"the loss became {logs['loss']} in epoch {self.epoch + 1}")
                lr = self.optimizations[0].optimizer.param_groups[0]["lr"]
                self.step_logs = {**logs, **core.epoch_metrics(), "lr": lr, "img_per_s": images / max(now - t0, 1e-9)}
                self.progress.batch(self.step, self.step_logs)
                self.trigger_callbacks("on_log")
            else:
                self.progress.batch(self.step)
        seconds = time.perf_counter() - t0
        self.epoch_logs = {**self.running.mean(), **core.epoch_metrics(),
                           "img_per_s": images / max(seconds, 1e-9), "seconds": seconds}
        if not all(math.isfinite(v) for v in self.epoch_logs.values()):
            raise NonFiniteLoss(f"training produced non-finite values in epoch {self.epoch + 1}")

    def optimize(self, out: dict[str, torch.Tensor]) -> None:
        """One step of every optimization whose start step has come: backward, clip, step; then each
        learning rate for the next step."""
        step = self.global_step
        active = [o for o in self.optimizations if step >= o.start_step]
        for o in active:
            o.set_step(step)
            o.optimizer.zero_grad(set_to_none=True)
        if len(self.optimizations) == 1:
            for o in active:
                self._backward(out[o.loss])
        else:
            # Each term into its own group's parameters only; the graph is kept for the terms after it.
            for i, o in enumerate(active):
                self._backward(out[o.loss], inputs=o.params, retain_graph=i < len(active) - 1)
        stepped = False
        for o in active:
            if self.sync_gradients is not None:
                self.sync_gradients(o.params)
            if all(p.grad is None for p in o.params):   # its term reached none of them this step
                continue
            if self.scaler is not None:
                self.scaler.unscale_(o.optimizer)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(o.params, self.grad_clip)
            if self.scaler is not None:
                self.scaler.step(o.optimizer)
            else:
                o.optimizer.step()
            stepped = True
        if self.scaler is not None and stepped:
            self.scaler.update()
        for o in self.optimizations:
            o.set_step(step + 1)

    def _backward(self, loss: torch.Tensor, **kwargs) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(**kwargs)
