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
from dataclasses import dataclass
from typing import Any, Callable

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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel or torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


@dataclass
class Optimization:
    """One optimizer, the term of the forward pass it minimises, and from which step of the run on."""
    optimizer: torch.optim.Optimizer
    loss: str = "loss"
    start_step: int = 0
    scheduler: Any = None
    name: str = "model"

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]


class Trainer:
    def __init__(self, model: torch.nn.Module, optimizations: list[Optimization] | torch.optim.Optimizer, batches,
                 *, epochs: int, start_epoch: int = 0, start_step: int = 0, running: dict | None = None,
                 scheduler=None, grad_clip: float = 0.0, progress: TrainProgress | None = None,
                 precision: str = "fp32", device_type: str = "cpu",
                 sync_gradients: Callable[[list[torch.nn.Parameter]], None] | None = None,
                 before_step: Callable[[], None] | None = None):
        """`optimizations`: one `Optimization` per parameter group (or one optimizer, with `scheduler`).
        `sync_gradients(params)` averages a group's gradients over processes where no
        DistributedDataParallel does it; `before_step()` runs before each forward pass."""
        if isinstance(optimizations, torch.optim.Optimizer):
            optimizations = [Optimization(optimizations, scheduler=scheduler)]
        self.model, self.optimizations, self.batches = model, list(optimizations), batches
        self.optimizer = self.optimizations[0].optimizer
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
        core = unwrap(self.model)
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
            core.begin_step(self.global_step)
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
        """One step of every optimization whose start step has come: backward, clip, step, schedule."""
        step = self.global_step
        active = [o for o in self.optimizations if step >= o.start_step]
        for o in active:
            o.optimizer.zero_grad(set_to_none=True)
        if len(self.optimizations) == 1:
            for o in active:
                self._backward(out[o.loss])
        else:
            # Each term into its own group's parameters only; the graph is kept for the terms after it.
            for i, o in enumerate(active):
                self._backward(out[o.loss], inputs=o.params, retain_graph=i < len(active) - 1)
        for o in active:
            if self.sync_gradients is not None:
                self.sync_gradients(o.params)
            if self.scaler is not None:
                self.scaler.unscale_(o.optimizer)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(o.params if len(self.optimizations) > 1 else self.model.parameters(),
                                               self.grad_clip)
            if self.scaler is not None:
                self.scaler.step(o.optimizer)
            else:
                o.optimizer.step()
        if self.scaler is not None and active:
            self.scaler.update()
        for o in self.optimizations:   # every schedule follows the run's steps, started or not
            if o.scheduler is not None:
                o.scheduler.step()

    def _backward(self, loss: torch.Tensor, **kwargs) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(**kwargs)
