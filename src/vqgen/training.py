"""Training a planned run end to end: data, model, optimizers, run directory, trainer, checkpoints.

`train()` is what `vqgen train` and `vqgen.train()` call. In steps:

1. settings given as flags or keywords are checked (before anything heavy);
2. the run is planned (planning.py): the data resolved and its shape probed, or
   the parent run opened, and the config resolved; or, to resume, the run's own
   config read back and each flag applied or refused;
3. the data is loaded once into memory (through the cache), the model built
   with an optimizer per parameter group, the run directory made;
4. the generic `Trainer` runs, with callbacks that evaluate on the held-out
   split, draw the model's pictures and commit each epoch's checkpoint.

Ctrl-C, SIGTERM and SIGHUP (interrupts.py) stop it alike: a checkpoint being
committed is finished first, the state in the middle of an epoch is saved
(`interrupted.pt`), and one line says how to resume. Under torchrun every
rank stops at the same step and rank 0 saves.

Nothing here names a model: what differs between models comes from their
`ModelSpec` in the registry.
"""

from __future__ import annotations

import math
import random
import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from vqgen import data as D
from vqgen import distributed, images, interrupts, memory, models, plots, runs
from vqgen.config import TrainConfig, check_train_flags
from vqgen.errors import DatasetError, NonFiniteLoss, RunError, UsageError, size_text
from vqgen.files import check_path_text, shown_path
from vqgen.memory import physical_memory
from vqgen.metrics import RunningMean, psnr
from vqgen.planning import Plan, plan_new, plan_resume, resolve_device
from vqgen.progress import TrainProgress
from vqgen.settings import field_names
from vqgen.threads import Threads
from vqgen.trainer import Optimization, Trainer, autocast
from vqgen.tracking import STEPS, RunLog, read_steps

@dataclass
class TrainResult:
    """What a training run left: its directory (also as a path: `vqgen.load(result)`) and final metrics."""
    run_dir: Path
    metrics: dict = field(default_factory=dict)
    interrupted: bool = False
    summary: str = ""        # the held-out figures as people read them: "Test MSE 0.00188  PSNR 27.25 dB ..."
    signal: int = 0          # what interrupted it: 2 (SIGINT, Ctrl-C), 15 (SIGTERM) or 1 (SIGHUP)

    def __fspath__(self) -> str:
        return str(self.run_dir)

    @property
    def path(self) -> Path:
        return self.run_dir


# --------------------------------------------------------------------------- small steps


def check_fits(spec: models.ModelSpec, config, device: torch.device) -> None:
    """Refuse a model whose weights and optimizer state would not fit in the device's memory, before allocating
    (on the CPU: the memory this process may use, a container's limit where lower than the machine's)."""
    with torch.device("meta"):
        n = sum(p.numel() for p in spec.build(config).parameters())
    need = n * 4 * 4   # float32 weights, gradients and Adam's two moments
    if device.type == "cuda":
        total, where = torch.cuda.get_device_properties(device).total_memory, "memory here"
    else:
        total, where = physical_memory(), "memory here" if not memory.limited_by_cgroup() else \
            "memory this container may use (its cgroup's limit)"
        if total is None:
            return
    if need > total:
        raise UsageError(f"this {spec.display_name} would have {n:,} parameters: {size_text(need)} with its "
                         f"optimizer state, more than the {size_text(total)} of {where}; choose smaller "
                         "model settings")


def check_groups(groups: list[models.ParameterGroup], net: torch.nn.Module, spec: models.ModelSpec) -> None:
    """Every parameter of the model in exactly one group, and group names told apart."""
    seen: dict[int, str] = {}
    for g in groups:
        for p in g.params:
            if id(p) in seen:
                raise RunError(f"the {spec.display_name}'s parameter groups {seen[id(p)]!r} and {g.name!r} share "
                               "a parameter; each parameter belongs to one group")
            seen[id(p)] = g.name
    missing = sum(1 for p in net.parameters() if p.requires_grad and id(p) not in seen)
    if missing:
        raise RunError(f"the {spec.display_name}'s parameter groups leave {missing} parameters out; every trained "
                       "parameter belongs to one group")
    if len({g.name for g in groups}) != len(groups):
        raise RunError(f"the {spec.display_name}'s parameter groups repeat a name ({', '.join(g.name for g in groups)});"
                       " each group has its own")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_lambda(schedule: str, total_steps: int) -> Callable[[int], float]:
    """One-cycle style: 10% linear warm-up, then cosine decay to 1% of the peak; or constant."""
    if schedule == "constant":
        return lambda step: 1.0
    warm = max(1, int(0.1 * total_steps))

    def f(step: int) -> float:
        if step < warm:
            return 0.04 + 0.96 * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
    return f


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on a GPU that has it, else fp16 on a GPU, else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@torch.no_grad()
def evaluate(model, batches, precision: str = "fp32", device_type: str = "cpu") -> dict:
    """Mean loss terms on held-out data; PSNR where there is an MSE; the model's own figures."""
    model.eval()
    model.reset_metrics()   # count codebook use over the held-out data alone
    mean = RunningMean()
    for batch in batches:
        with autocast(device_type, precision):
            out = model(*batch)
        mean.add({k: v.float() for k, v in out.items()}, batch[0].shape[0])
    logs = mean.mean()
    if "mse" in logs:
        logs["psnr"] = psnr(logs["mse"])
    logs.update(model.epoch_metrics())
    return logs


@contextmanager
def denormals_flushed():
    """Flush denormal floats to zero while training, and give the process its own setting back after.

    Tiny gradients late in training become denormal floats, which CPUs handle many
    times slower; flushing them keeps later epochs as fast as the first.
    """
    was = (torch.tensor([1e-310], dtype=torch.float64) * 1.0).item() == 0.0
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


@contextmanager
def cudnn_benchmark(on: bool):
    """cuDNN's kernel timing on for the block (where `on`), and the process's own setting back after."""
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = was or on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


def stop_together(ranks: distributed.Ranks, signum: int = 0) -> None:
    """Under torchrun: every rank stops here, at the same point, if any received a stop signal (or `signum`)."""
    signum = distributed.agree_to_stop(ranks, signum or interrupts.received())
    if signum:
        interrupts.stop(signum)


# --------------------------------------------------------------------------- the run


def train(model: str | None = None, dataset: str | None = None, config_file: str | None = None,
          flags: dict | None = None, out: Path | None = None, name: str | None = None,
          resume: Path | None = None, parent_run: Path | None = None,
          progress: TrainProgress | None = None) -> TrainResult:
    """Train a new run (or resume one) and return its directory and final metrics.

    `flags`: settings of the training or of the model that win over the config file. Under torchrun,
    each process trains its share (distributed.py); rank 0 writes the run. Ctrl-C, SIGTERM and SIGHUP stop it
    with its state saved (the result says `interrupted`, and by which `signal`).
    """
    # Under torchrun a stop is held back from the start: the ranks decide together to stop (`stop_together`).
    with interrupts.handled(), interrupts.polled() if distributed.launched_world() > 1 else nullcontext():
        return _train(model, dataset, config_file, flags, out, name, resume, parent_run, progress)


def _train(model, dataset, config_file, flags, out, name, resume, parent_run, progress) -> TrainResult:
    progress = progress or TrainProgress()
    log = progress.log
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    flags.update(check_train_flags({k: v for k, v in flags.items() if k in field_names(TrainConfig)}))
    if "device" in flags:
        resolve_device(flags["device"])   # refuse a missing GPU before loading any data
    if name is not None:
        runs.check_run_name(name)
    if out is not None:
        check_path_text(out, "out")   # before any data is loaded

    if resume is not None:
        given = {k: v for k, v in {"model": model, "dataset": dataset, "config": config_file, "name": name,
                                   "out": out, "run": parent_run}.items() if v is not None}
        plan = plan_resume(Path(resume), flags, given, log)
    else:
        plan = plan_new(model, dataset, config_file, flags, parent_run, Path(out or "runs"), log)
    device = resolve_device(plan.config.train.device)
    ranks = distributed.join(device.type)
    if device.type == "cuda" and ranks.many:
        device = torch.device("cuda", ranks.local)
    try:
        # The batches keep one shape: cuDNN may time its kernels once and keep the fastest.
        # On the CPU, as many threads as the cores other programs leave free (several processes: torchrun's).
        cpu_threads = Threads(plan.config.train.threads, log) if device.type == "cpu" and not ranks.many else None
        if cpu_threads is not None:
            cpu_threads.start()
        with denormals_flushed(), cudnn_benchmark(device.type == "cuda"):
            session = Session(plan, device, ranks, progress if ranks.main else TrainProgress(quiet=True), cpu_threads)
            result = session.run(out, name)
        # Every rank done (rank 0 draws the curves last) before the group is torn down: a rank that tore it
        # down while another still used it aborted now and then ("terminate called without an active exception").
        distributed.barrier(ranks)
        return result
    finally:
        distributed.leave()
        plan.release()   # the run folder's lock: one process trains a run at a time


# A held-out headline figure worse than the run's best by more than this share of it, epoch after epoch for
# DIVERGED_EPOCHS epochs, is said in one warning (training goes on; the best epoch's weights stay in BEST).
DIVERGED_BY = 0.5
DIVERGED_EPOCHS = 2


class Session:
    """One training session of a planned run: data, model, optimizer, run directory, record, checkpoints."""

    def __init__(self, plan: Plan, device: torch.device, ranks: distributed.Ranks, progress: TrainProgress,
                 cpu_threads: Threads | None = None):
        self.plan, self.cfg, self.spec, self.cpu_threads = plan, plan.config, plan.spec, cpu_threads
        self.warned_diverged = False
        self.device, self.ranks, self.progress, self.log = device, ranks, progress, progress.log
        progress.describe(models.figures([self.spec]))
        self.on_images = self.spec.trains_on == "images"
        self.shown = {f.name for f in self.spec.figures if f.shown} | {"loss"}   # held out, after each epoch
        self.rows: list[dict] = []
        self.committed = 0            # the last epoch whose checkpoint is on disk
        self.run_dir: Path | None = plan.run_dir
        self.run_log: RunLog | None = None

    # ------------------------------------------------------------------ steps

    def load_data(self) -> None:
        """Decoded once and cached (rank 0 first: the others then read its cache), then in memory."""
        plan, cfg = self.plan, self.cfg
        if not self.ranks.main:
            stop_together(self.ranks)   # rank 0 decodes first (the first point where the ranks decide on a stop)
        stopped = 0
        try:
            # Decoding may take long: a stop ends it at once on rank 0 of several too (the others wait above).
            with interrupts.raising() if self.ranks.main else nullcontext():
                img = D.load_run_images(plan.parent.config if plan.parent is not None else cfg, self.log,
                                        self.progress.counter("decoding"), source=plan.source)
        except KeyboardInterrupt as e:
            if not self.ranks.many:
                raise
            stopped = interrupts.signal_of(e)
        if self.ranks.main:
            stop_together(self.ranks, stopped)
        if img.train_images.shape[0] < 1 or img.test_images.shape[0] < 1:
            raise DatasetError(f"{img.source}: too few images to train ({img.train_images.shape[0]} for "
                               f"training, {img.test_images.shape[0]} held out); a dataset needs at least 2 images")
        with torch.device("meta"):   # the model says whether it is conditioned on classes (no memory used)
            labels_wanted = self.spec.build(cfg.model_config).num_classes > 0
        train_y = img.train_labels if labels_wanted else None
        test_y = img.test_labels if labels_wanted else None
        if plan.parent is not None:   # a model of codes prepares what it learns from the parent's images
            parent = plan.parent.model.to(self.device)
            train_x, train_y, test_x = self.spec.from_parent(models.ParentData(
                parent, img.train_images, train_y, img.test_images, mirrored=plan.parent.config.train.augment,
                map_batches=lambda fn, x: D.map_batches(fn, x, batch_size=256, device=self.device)))
        else:
            train_x, test_x = img.train_images, img.test_images
        on_host = img.mapped and plan.parent is None   # memory-mapped images; a parent's codes are in memory
        if on_host:
            self.log(f"The dataset is larger than a quarter of {memory.describe()}: batches are read from the "
                     "memory-mapped cache" if cfg.train.data_in_memory == "auto" else
                     "Batches are read from the memory-mapped cache (data_in_memory: no)")
        self.img, self.train_x, self.test_x = img, train_x, test_x
        self.generator = seed_everything(cfg.train.seed)
        self.batches = D.Batches(train_x, train_y, cfg.train.batch_size, device=self.device, on_host=on_host,
                                 augment=cfg.train.augment and self.on_images, generator=self.generator,
                                 scale=self.on_images, rank=self.ranks.rank, world=self.ranks.world)
        self.test_batches = D.Batches(test_x, test_y, cfg.train.eval_batch_size, shuffle=False, device=self.device,
                                      scale=self.on_images, on_host=on_host)

    def build(self) -> None:
        """The model (wrapped for several processes and compiled where asked), optimizer, schedule, resume state."""
        cfg, device = self.cfg, self.device
        check_fits(self.spec, cfg.model_config, device)
        net = self.spec.build(cfg.model_config).to(device)
        if self.on_images:  # convolutional models run faster on channels-last tensors, on CPU and GPU alike
            net = net.to(memory_format=torch.channels_last)
        self.precision = resolve_precision(cfg.train.precision, device)
        groups = net.parameter_groups()
        check_groups(groups, net, self.spec)
        # The callbacks below hold `ranks`, not `self`: no cycle through the session keeps it (and DDP's hold on
        # the process group) alive after training returns.
        ranks = self.ranks
        train_net, self.sync_gradients, broadcast = net, None, None
        if self.ranks.many:
            if device.type == "cuda":
                train_net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(train_net)
            if len(groups) == 1:
                train_net = DistributedDataParallel(train_net,
                                                    device_ids=[device.index] if device.type == "cuda" else None)
            else:   # one backward pass per group: gradients averaged by the trainer, buffers as DDP would
                distributed.broadcast_state(net)
                self.sync_gradients = lambda params: distributed.average_gradients(params, ranks)
                broadcast = net
        if cfg.train.compile:
            train_net = torch.compile(train_net)

        def before_step() -> None:
            """A stop that came (decided by every rank together), then rank 0's buffers where DDP does not send them."""
            if ranks.many:
                stop_together(ranks)
            else:
                interrupts.check()
            if broadcast is not None:
                distributed.broadcast_buffers(broadcast)
        self.before_step = before_step
        total_steps = cfg.train.epochs * len(self.batches)
        schedule = lr_lambda(cfg.train.lr_schedule, total_steps)
        self.optimizations = [self.optimization(g, schedule, total_steps) for g in groups]
        self.start_epoch, self.start_step, self.running = 0, 0, None
        if self.plan.resume is not None:
            state = self.plan.resume
            net.load_state_dict(self.plan.weights)
            self.load_optimizer_state(state)
            self.start_epoch, self.start_step = int(state["epoch"]), int(state.get("step", 0))
            torch.set_rng_state(state["torch_rng"])
            self.generator.set_state(state["data_rng"])
            self.running = state.get("running")
            self.rows = runs.read_metrics(self.plan.run_dir / runs.METRICS, upto_epoch=self.start_epoch)
        self.committed = self.start_epoch
        self.net, self.train_net = net, train_net

    def optimization(self, group: models.ParameterGroup, schedule: Callable[[int], float],
                     total_steps: int) -> Optimization:
        """Adam over one parameter group, at its own settings where it has them, else the run's; it starts at
        its start step or its share of the run's `total_steps`, whichever is later."""
        train = self.cfg.train
        # The fused Adam step is one kernel instead of several per parameter.
        optimizer = torch.optim.Adam(group.params, lr=train.lr if group.lr is None else group.lr, betas=group.betas,
                                     weight_decay=train.weight_decay if group.weight_decay is None
                                     else group.weight_decay, fused=self.device.type in ("cpu", "cuda"))
        # Each step's rate follows the schedule from the run's settings (a resumed run's too), over the
        # whole run's steps: the new total where a resumed run trains for more epochs.
        start = max(group.start_step, models.start_of(group.start_share, total_steps))
        return Optimization(optimizer, group.loss, start, schedule, group.name)

    def optimizer_state(self) -> dict:
        """Every optimizer's state for resume.pt: "optimizer" for one (as vqgen 0.3 wrote it), else by group."""
        if len(self.optimizations) == 1:
            return {"optimizer": self.optimizations[0].optimizer.state_dict()}
        return {"optimizers": {o.name: o.optimizer.state_dict() for o in self.optimizations}}

    def load_optimizer_state(self, state: dict) -> None:
        names = [o.name for o in self.optimizations]
        if "optimizers" not in state and len(names) > 1:
            raise RunError(f"{self.plan.run_dir}: its saved state has one optimizer, but this model trains "
                           f"{len(names)} parameter groups ({', '.join(names)}); start a new run")
        saved = state.get("optimizers") or {names[0]: state["optimizer"]}
        if set(saved) != set(names):
            raise RunError(f"{self.plan.run_dir}: its saved optimizer state is for {', '.join(sorted(saved))}, but "
                           f"this model trains {', '.join(names)}; start a new run")
        for o in self.optimizations:
            # The learning rate, betas and weight decay come from the run's config, as the optimizer was built:
            # only the per-parameter state (Adam's moments and step) comes from the file. A rate written into
            # resume.pt (raised by hand, or by another program) is not trained with.
            built = [{k: v for k, v in g.items() if k != "params"} for g in o.optimizer.param_groups]
            o.optimizer.load_state_dict(saved[o.name])
            for group, settings in zip(o.optimizer.param_groups, built):
                group.update(settings)

    def open_run_dir(self, out: Path | None, name: str | None) -> None:
        """A new run's directory (rank 0), and the record of its steps."""
        cfg = self.cfg
        if self.run_dir is None:
            self.run_dir = runs.new_run_dir(Path(out or "runs"), name or runs.run_name(cfg.model, self.plan.data_label))
            self.plan.locks.append(runs.lock_run(self.run_dir, "training it"))   # before `runs --clean` sees a run
            cfg.save_yaml(self.run_dir / runs.CONFIG)
            self.log(f"Run directory: {self.run_dir}")
        for note in self.plan.notes:
            self.log(note)
        what = "code grids" if self.plan.parent is not None else "images"
        where = f"{self.ranks.world} processes" + (" (one per GPU)" if self.device.type == "cuda" else "") \
            if self.ranks.many else str(self.device)
        counts = (f": {len(self.train_x):,} training and {len(self.test_x):,} held-out {what}, on {where}"
                  + (f", in {self.precision}" if self.precision != "fp32" else ""))
        head = f"Training a {self.spec.display_name} on "
        self.log(head + shown_path(self.img.source, max(16, 80 - len(head) - len(counts))) + counts)
        self.run_log = RunLog(self.run_dir, self.start_epoch * len(self.batches) + self.start_step)

    def on_epoch_end(self, tr: Trainer) -> None:
        """Evaluate, draw the pictures and commit the epoch's checkpoint (pictures and files: rank 0)."""
        net, cfg = self.net, self.cfg
        test_logs = evaluate(net, self.test_batches, self.precision, self.device.type)
        row = {"epoch": tr.epoch, **{f"train_{k}": v for k, v in tr.epoch_logs.items()
                                      if k not in ("img_per_s", "seconds")},
               **{f"test_{k}": v for k, v in test_logs.items()},
               "img_per_s": tr.epoch_logs["img_per_s"] * self.ranks.world, "seconds": tr.epoch_logs["seconds"]}
        if not distributed.ranks_agree(net, self.ranks):
            raise RunError(f"the {self.ranks.world} processes hold different weights after epoch {tr.epoch}; "
                           "this is a bug in vqgen's distributed training: train on one device")
        tr.epoch_logs = {**{k: v for k, v in tr.epoch_logs.items() if k != "seconds"},
                         **{f"test_{k}": v for k, v in test_logs.items() if k in self.shown}}
        if not self.ranks.main:
            return
        originals = self.img.test_images[: cfg.train.grid_images].to(self.device).float().div(255) \
            if self.on_images else None
        ctx = models.PictureContext(originals, self.img.class_names,
                                    self.plan.parent.model if self.plan.parent else None,
                                    torch.Generator().manual_seed(0))
        pictures = {}
        with torch.no_grad():
            for pic in self.spec.pictures(net, ctx):
                pictures[pic.name] = images.render_grid(pic.images, pic.nrow, row_labels=pic.row_labels,
                                                        col_labels=pic.col_labels, title=f"epoch {tr.epoch}")
                images.save_image(pictures[pic.name], runs.picture_path(self.run_dir, pic.name, tr.epoch))
        if self.spec.keeps_latents and tr.epoch == tr.epochs:
            net.eval()
            runs.save_latents(self.run_dir, D.map_batches(net.encode, self.train_x, device=self.device))
        resume_state = {**self.optimizer_state(), "epoch": tr.epoch, "step": 0,
                        "torch_rng": torch.get_rng_state(), "data_rng": self.generator.get_state()}
        info = {"dataset_source": self.img.source, "class_names": self.img.class_names,
                "class_word": self.img.class_word,
                "image_size": self.img.image_size, "channels": self.img.channels,
                "train_images": len(self.train_x), "test_images": len(self.test_x), "epoch": tr.epoch,
                "metrics": {k: v for k, v in row.items() if isinstance(v, (int, float))},
                "precision": self.precision, "processes": self.ranks.world}
        best = runs.best_row(self.rows + [row], self.spec)
        with interrupts.deferred():   # a stop waits until the checkpoint is whole
            runs.commit_epoch(self.run_dir, net, cfg, info, resume_state, self.rows + [row],
                              best=best is None or best[1] is row)
            self.rows.append(row)
            self.committed = tr.epoch
        self.run_log.epoch(tr.global_step, test_logs, pictures)
        self.warn_if_diverged(best)

    def warn_if_diverged(self, found: tuple | None) -> None:
        """One warning where the held-out headline figure has been much worse than the run's best (`found`:
        runs.best_row of the rows so far) for DIVERGED_EPOCHS epochs in a row: training goes on, and the best
        epoch's weights stay in BEST."""
        if found is None or self.warned_diverged:
            return
        figure, best = found
        key, value = f"test_{figure.name}", best[f"test_{figure.name}"]
        margin = DIVERGED_BY * abs(value)

        def much_worse(row: dict) -> bool:
            v = row.get(key)
            if not isinstance(v, (int, float)):
                return False
            if math.isnan(v):
                return True
            return v > value + margin if figure.lower_is_better else v < value - margin

        streak = 0
        for row in reversed(self.rows):
            if not much_worse(row):
                break
            streak += 1
        if streak >= DIVERGED_EPOCHS:
            self.warned_diverged = True
            latest = self.rows[-1]
            self.log(f"Warning: held-out {figure.label} {figure.format(latest[key])} in epoch {latest['epoch']} is "
                     f"much worse than the run's best, {figure.format(value)} in epoch {best['epoch']}, for "
                     f"{streak} epochs: it may be diverging (a lower lr helps). Training goes on; the best "
                     f"epoch's weights stay in {self.run_dir / runs.BEST}, which the commands use")

    # ------------------------------------------------------------------ the whole session

    def run(self, out: Path | None, name: str | None) -> TrainResult:
        self.load_data()
        self.build()
        if self.ranks.main:
            self.open_run_dir(out, name)
        trainer = Trainer(self.train_net, self.optimizations, self.batches, epochs=self.cfg.train.epochs, core=self.net,
                          start_epoch=self.start_epoch, start_step=self.start_step, running=self.running,
                          grad_clip=self.cfg.train.grad_clip, progress=self.progress, precision=self.precision,
                          device_type=self.device.type, sync_gradients=self.sync_gradients,
                          before_step=self.before_step)
        trainer.add_callback("on_epoch_end", self.on_epoch_end)
        if self.cpu_threads is not None and self.cpu_threads.adaptive:
            trainer.add_callback("on_log", lambda tr: self.cpu_threads.revisit())
        if self.run_log is not None:
            steps = len(self.batches)
            trainer.add_callback("on_log", lambda tr: self.run_log.step(tr.global_step, tr.epoch + tr.step / steps,
                                                                        tr.step_logs))
        try:
            trainer.run()
        except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM or SIGHUP
            return self.interrupted(trainer, interrupts.signal_of(e))
        except Exception as e:
            raise self.failed(e) from None
        finally:
            if self.run_log is not None:
                self.run_log.close()
        return self.finish()

    def failed(self, e: Exception) -> Exception:
        """The error to report; a new run that never finished an epoch leaves no empty directory behind."""
        nothing_saved = self.committed == 0 and self.plan.run_dir is None
        if nothing_saved and self.ranks.main and self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if isinstance(e, NonFiniteLoss):
            if nothing_saved:
                return NonFiniteLoss(f"{e}; no epoch had finished, so nothing was saved (the run directory is "
                                     "removed): lower `lr` and train again")
            return NonFiniteLoss(f"{e}; the last good checkpoint is kept (epoch {self.committed}): "
                                 f"lower `lr` and resume, or retrain")
        if "torch._dynamo" in type(e).__module__ or "torch._inductor" in type(e).__module__:
            return RunError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''});"
                            " train without `compile`")
        return e

    def finish(self) -> TrainResult:
        if self.ranks.main:
            plots.save(plots.curves_figure([(self.run_dir.name, read_steps(self.run_dir / STEPS), self.rows)],
                                           title=f"{self.spec.display_name} on {self.cfg.train.dataset}  "
                                                 f"({self.run_dir.name})", figures=models.figures([self.spec])),
                       self.run_dir / runs.CURVES)
        metrics = self.rows[-1] if self.rows else {}
        shown = [f"{f.label} {f.format(metrics[f'test_{f.name}'])}" for f in self.spec.figures
                 if f.shown and f"test_{f.name}" in metrics]
        return TrainResult(self.run_dir, metrics, summary="Test " + "  ".join(shown) if shown else "")

    def interrupted(self, trainer: Trainer, signum: int) -> TrainResult:
        """Ctrl-C, SIGTERM or SIGHUP (`signum`): keep the last committed epoch as it is; save the state since
        then, if any, to resume at."""
        if not self.ranks.main:
            return TrainResult(self.run_dir, {}, interrupted=True, signal=signum)
        epochs, steps, committed = trainer.epochs, len(self.batches), self.committed
        step = trainer.step if trainer.epoch == committed else steps   # past the epoch's batches, before its commit
        said = f"Interrupted{interrupts.by(signum)}"
        if step == 0 and committed == 0 and self.plan.run_dir is None:   # a new run, before its first step
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.progress.log(f"{said} before the first step: nothing to keep (the run directory is removed)",
                              always=True)
            return TrainResult(None, {}, interrupted=True, signal=signum)
        if step == 0:
            self.progress.log(f"{said} after epoch {committed} of {epochs}: {self.run_dir} is saved. "
                              f"Continue with: vqgen train --resume {self.run_dir}", always=True)
        else:
            runs.save_interrupted(self.run_dir, {
                "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                **self.optimizer_state(), "epoch": committed, "step": step,
                "torch_rng": torch.get_rng_state(), "data_rng": trainer.epoch_start_rng,
                "running": trainer.running.state()})
            kept = f"the checkpoint of epoch {committed} is kept" if committed else "no epoch had finished"
            self.progress.log(f"{said} in epoch {committed + 1} of {epochs} at step {step} of {steps}: saved that "
                              f"state ({kept}). Continue with: vqgen train --resume {self.run_dir}", always=True)
        return TrainResult(self.run_dir, self.rows[-1] if self.rows else {}, interrupted=True, signal=signum)
