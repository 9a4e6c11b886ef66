"""Training a model end to end: config, data, run directory, trainer, checkpoints.

`train()` is what `vqgen train` and `vqgen.train()` call. In steps:

1. settings given as flags or keywords are checked (before anything heavy);
2. what the data looks like is probed (an image dataset's shape, or the
   parent run whose codes the model learns), and `resolve_config` turns
   defaults, the config file and the flags into a `RunConfig` - or, to
   resume, the run's own config is read back and each flag applied or refused;
3. the data is loaded once into memory (through the cache), the model built,
   the run directory made;
4. the generic `Trainer` runs, with callbacks that evaluate on the held-out
   split, draw the model's pictures and commit each epoch's checkpoint.

Nothing here names a model: what differs between models comes from their
`ModelSpec` in the registry.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vqgen import data as D
from vqgen import images, models, plots, runs
from vqgen.config import RunConfig, TrainConfig, check_train_flags, read_yaml, resolve_config, split_settings
from vqgen.errors import DatasetError, NonFiniteLoss, UsageError
from vqgen.files import remove_stale_temps
from vqgen.metrics import RunningMean, psnr
from vqgen.progress import TrainProgress
from vqgen.settings import field_names
from vqgen.trainer import Trainer
from vqgen.tracking import STEPS, RunLog, read_steps

SHOWN_TEST = ("mse", "psnr", "bits_per_code", "loss")   # held-out figures shown after each epoch
APPLIED_ON_RESUME = ("epochs", "device")                # the settings a resumed run takes from flags


@dataclass
class TrainResult:
    """What a training run left: its directory (also as a path: `vqgen.load(result)`) and final metrics."""
    run_dir: Path
    metrics: dict = field(default_factory=dict)
    interrupted: bool = False

    def __fspath__(self) -> str:
        return str(self.run_dir)

    @property
    def path(self) -> Path:
        return self.run_dir


# --------------------------------------------------------------------------- small steps


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("`device` cuda: no CUDA GPU is visible; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("`device` mps: Apple's MPS is not available here; use auto or cpu")
    return torch.device(name)


def check_fits(spec: models.ModelSpec, config, device: torch.device) -> None:
    """Refuse a model whose weights and optimizer state would not fit in the device's memory, before allocating."""
    with torch.device("meta"):
        n = sum(p.numel() for p in spec.build(config).parameters())
    need = n * 4 * 4   # float32 weights, gradients and Adam's two moments
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    else:
        return
    if need > total:
        raise UsageError(f"this {spec.display_name} would have {n:,} parameters: {need / 2**30:.1f} GiB with its "
                         f"optimizer state, more than the {total / 2**30:.0f} GiB of memory here; choose smaller "
                         "model settings")


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


@torch.no_grad()
def evaluate(model, batches) -> dict:
    """Mean loss terms on held-out data; PSNR where there is an MSE; the model's own figures."""
    model.eval()
    model.reset_metrics()   # count codebook use over the held-out data alone
    mean = RunningMean()
    for batch in batches:
        mean.add(model(*batch), batch[0].shape[0])
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
def interrupts_deferred():
    """Hold Ctrl-C back until the block ends, so a checkpoint is never cut in half by it."""
    try:
        previous = signal.getsignal(signal.SIGINT)
        caught = []
        signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    except ValueError:   # not the main thread: signals cannot be caught here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- planning a run


@dataclass
class Plan:
    """Everything decided before training starts."""
    config: RunConfig
    spec: models.ModelSpec
    run_dir: Path | None = None              # set when resuming
    parent: runs.Checkpoint | None = None    # the run whose codes the model learns
    weights: dict | None = None              # state to start from (resume)
    resume: dict | None = None               # optimizer, epoch, step, RNG state (resume)
    notes: list[str] = field(default_factory=list)
    data_label: str = ""                     # how the dataset reads in a run's name: "mnist" for any copy of it


def _parent_shape(parent: runs.Checkpoint) -> models.CodeShape:
    return models.CodeShape(parent.model.codebook_size, parent.model.latent_grid, len(parent.class_names or []))


def _image_shape(source: str, file_model: dict) -> models.ImageShape:
    """The shape to train at: the config file's image_size and channels, else the data's."""
    if "image_size" in file_model and "channels" in file_model:
        return models.ImageShape(int(file_model["image_size"]), int(file_model["channels"]))
    size, channels = D.probe_shape(D.resolve_dataset(source))
    return models.ImageShape(int(file_model.get("image_size", size)), int(file_model.get("channels", channels)))


def plan_new(model: str, dataset: str | None, config_file: str | None, flags: dict, parent_run: Path | None,
             runs_dir: Path, log) -> Plan:
    spec = models.get(model)
    file_values = read_yaml(config_file) if config_file else {}
    if spec.trains_on == "codes":
        if dataset is not None:
            raise UsageError(f"`dataset`: a {spec.display_name} trains on the codes of another run's data; "
                             "drop `dataset` and pass that run with `run`")
        parents = models.with_operation("codes")
        parent_dir = Path(parent_run) if parent_run else runs.find_latest_run(parents, runs_dir)
        parent = runs.load_checkpoint(parent_dir, accept=parents)
        log(f"{spec.display_name.capitalize()} for the {parent.spec.display_name} run {parent.run_dir}")
        cfg = resolve_config(model, _parent_shape(parent), file_values=file_values,
                             flags={**flags, "dataset": parent.config.train.dataset}, file_name=config_file)
        cfg.source = parent.config.dataset_source
        cfg.parent = {"run": str(parent.run_dir.resolve()), "fingerprint": parent.model.code_fingerprint()}
        return Plan(cfg, spec, parent=parent, data_label=_label(cfg.source, parent.config.train.dataset))
    if parent_run is not None:
        raise UsageError(f"`run` names the run whose codes a model learns; a {spec.display_name} trains on images")
    file_train, file_model = split_settings(file_values, spec.config_class)
    name = dataset if dataset is not None else file_train.get("dataset", TrainConfig.dataset)
    source = D.resolve_dataset(name)
    cfg = resolve_config(model, _image_shape(name, file_model), file_values=file_values,
                         flags={**flags, **({"dataset": dataset} if dataset is not None else {})},
                         file_name=config_file)
    cfg.source = source.source
    return Plan(cfg, spec, data_label=source.label)


def _label(source: str, fallback: str) -> str:
    try:
        return D.resolve_dataset(source).label
    except UsageError:
        return fallback


def plan_resume(resume: Path, flags: dict, given: dict, log) -> Plan:
    """Reopen a run; apply the flags it can take (epochs, device) and refuse every other."""
    run_dir = runs.run_dir_of(resume)
    remove_stale_temps(run_dir)
    try:
        ckpt = runs.load_checkpoint(run_dir)
    except UsageError:
        if (run_dir / runs.WEIGHTS).exists() or not (run_dir / runs.CONFIG).is_file():
            raise
        ckpt = None   # stopped in its first epoch: only config.yaml and the mid-epoch state
    cfg = ckpt.config if ckpt else runs.read_run_config(run_dir)
    spec = models.get(cfg.model)
    for key, value in given.items():
        if key == "model" and value == cfg.model:
            continue
        raise UsageError(f"`resume` continues a run with its own settings; drop `{key}` "
                         f"(this run is a {spec.display_name} on {cfg.train.dataset})")
    current = {**vars(cfg.train), **vars(cfg.model_config)}
    for key, value in flags.items():
        if key in APPLIED_ON_RESUME:
            continue
        if key not in current:
            raise UsageError(f"unknown setting {key!r}")
        if current[key] != value:
            raise UsageError(f"`{key}` {value}: a resumed run keeps its own {key} ({current[key]}) so that it "
                             "continues as it began; drop it, or start a new run")
    for key in APPLIED_ON_RESUME:
        if key in flags:
            setattr(cfg.train, key, flags[key])
    committed = ckpt.epoch if ckpt else 0
    plan = Plan(cfg, spec, run_dir=run_dir)
    partial = runs.load_interrupted(run_dir, committed)
    if partial is not None:
        plan.weights, plan.resume = partial["model"], partial
        plan.notes.append(f"Resuming {run_dir} in epoch {committed + 1} of {cfg.train.epochs} at step "
                          f"{partial['step']}, where Ctrl-C stopped it")
    elif ckpt is None:
        raise UsageError(f"{run_dir}: nothing to resume (no finished epoch and no saved state); start a new run")
    else:
        if (run_dir / runs.INTERRUPTED).is_file():
            plan.notes.append(f"Discarding {runs.INTERRUPTED}: it is older than the checkpoint of epoch {committed}")
            (run_dir / runs.INTERRUPTED).unlink()
        plan.weights = ckpt.model.state_dict()
        plan.resume = {**runs.load_resume(run_dir, committed), "step": 0}
        plan.notes.append(f"Resuming {run_dir} at epoch {committed + 1} of {cfg.train.epochs}")
    if plan.resume["epoch"] >= cfg.train.epochs and plan.resume["step"] == 0:
        raise UsageError(f"{run_dir} has already trained {plan.resume['epoch']} of {cfg.train.epochs} epochs; "
                         "pass a larger `epochs` to train on")
    if spec.trains_on == "codes":
        plan.parent = runs.load_parent(cfg)
    return plan


# --------------------------------------------------------------------------- the run


def train(model: str | None = None, dataset: str | None = None, config_file: str | None = None,
          flags: dict | None = None, out: Path | None = None, name: str | None = None,
          resume: Path | None = None, parent_run: Path | None = None,
          progress: TrainProgress | None = None) -> TrainResult:
    """Train a new run (or resume one) and return its directory and final metrics.

    `flags`: settings of the training or of the model that win over the config file.
    """
    progress = progress or TrainProgress()
    log = progress.log
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    flags.update(check_train_flags({k: v for k, v in flags.items() if k in field_names(TrainConfig)}))
    if "device" in flags:
        resolve_device(flags["device"])   # refuse a missing GPU before loading any data
    if name is not None:
        runs.check_run_name(name)

    if resume is not None:
        given = {k: v for k, v in {"model": model, "dataset": dataset, "config": config_file, "name": name,
                                   "out": out, "run": parent_run}.items() if v is not None}
        plan = plan_resume(Path(resume), flags, given, log)
    else:
        plan = plan_new(model or models.DEFAULT_MODEL, dataset, config_file, flags, parent_run, Path(out or "runs"), log)
    cfg, spec = plan.config, plan.spec

    device = resolve_device(cfg.train.device)
    with denormals_flushed():
        return _run(plan, device, out, name, progress)


def _run(plan: Plan, device: torch.device, out: Path | None, name: str | None, progress: TrainProgress) -> TrainResult:
    """Load the data, build the model and the run directory, and train."""
    cfg, spec = plan.config, plan.spec
    log = progress.log
    generator = seed_everything(cfg.train.seed)

    # Data: decoded once, cached, then kept in memory (on the GPU when training there).
    img = D.load_run_images(plan.parent.config if plan.parent is not None else cfg, log)
    labels_wanted = getattr(cfg.model_config, "num_classes", None) != 0
    train_y = img.train_labels if labels_wanted else None
    test_y = img.test_labels if labels_wanted else None
    if img.train_images.shape[0] < 1 or img.test_images.shape[0] < 1:
        raise DatasetError(f"{img.source}: too few images to train ({img.train_images.shape[0]} for training, "
                           f"{img.test_images.shape[0]} held out); a dataset needs at least 2 images")
    if plan.parent is not None:
        plan.parent.model.to(device)
        train_x = D.map_batches(plan.parent.model.encode_indices, img.train_images, batch_size=256, device=device)
        test_x = D.map_batches(plan.parent.model.encode_indices, img.test_images, batch_size=256, device=device)
    else:
        train_x, test_x = img.train_images, img.test_images
    on_images = spec.trains_on == "images"
    batches = D.Batches(train_x, train_y, cfg.train.batch_size, augment=cfg.train.augment and on_images,
                        device=device, generator=generator, scale=on_images)
    test_batches = D.Batches(test_x, test_y, cfg.train.eval_batch_size, shuffle=False, device=device,
                             scale=on_images)

    check_fits(spec, cfg.model_config, device)
    net = spec.build(cfg.model_config).to(device)
    if on_images:  # convolutional models run faster on channels-last tensors, on CPU and GPU alike
        net = net.to(memory_format=torch.channels_last)
    # The fused Adam step is one kernel instead of several per parameter.
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    schedule = lr_lambda(cfg.train.lr_schedule, cfg.train.epochs * len(batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, start_step, running, rows = 0, 0, None, []
    if plan.resume is not None:
        state = plan.resume
        net.load_state_dict(plan.weights)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_step = int(state["epoch"]), int(state.get("step", 0))
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["data_rng"])
        running = state.get("running")
        rows = runs.read_metrics(plan.run_dir / runs.METRICS, upto_epoch=start_epoch)
        # continue the schedule where the run stopped (over the new total of epochs)
        done = start_epoch * len(batches) + start_step
        scheduler.last_epoch = done
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * schedule(done)

    if plan.run_dir is None:
        run_dir = runs.new_run_dir(Path(out or "runs"), name or runs.run_name(cfg.model, plan.data_label))
        cfg.save_yaml(run_dir / runs.CONFIG)
        log(f"Run directory: {run_dir}")
    else:
        run_dir = plan.run_dir
    for note in plan.notes:
        log(note)
    what = "code grids" if plan.parent is not None else "images"
    log(f"Training a {spec.display_name} on {img.source}: {len(train_x):,} training and "
        f"{len(test_x):,} held-out {what}, on {device}")

    info = {"dataset_source": img.source, "class_names": img.class_names, "image_size": img.image_size,
            "channels": img.channels, "train_images": len(train_x), "test_images": len(test_x)}
    originals = img.test_images[: cfg.train.grid_images].to(device).float().div(255) if on_images else None
    committed = {"epoch": start_epoch}   # the last epoch whose checkpoint is on disk

    def on_epoch_end(tr: Trainer) -> None:
        test_logs = evaluate(net, test_batches)
        row = {"epoch": tr.epoch, **{f"train_{k}": v for k, v in tr.epoch_logs.items()
                                      if k not in ("img_per_s", "seconds")},
               **{f"test_{k}": v for k, v in test_logs.items()},
               "img_per_s": tr.epoch_logs["img_per_s"], "seconds": tr.epoch_logs["seconds"]}
        ctx = models.PictureContext(originals, img.class_names, plan.parent.model if plan.parent else None,
                                    torch.Generator().manual_seed(0))
        pictures = {}
        with torch.no_grad():
            for pic in spec.pictures(net, ctx):
                pictures[pic.name] = images.render_grid(pic.images, pic.nrow, row_labels=pic.row_labels,
                                                        col_labels=pic.col_labels, title=f"epoch {tr.epoch}")
                images.save_image(pictures[pic.name], runs.picture_path(run_dir, pic.name, tr.epoch))
        if spec.keeps_latents and tr.epoch == tr.epochs:
            net.eval()
            runs.save_latents(run_dir, D.map_batches(net.encode, train_x, device=device))
        resume_state = {"optimizer": optimizer.state_dict(), "epoch": tr.epoch, "step": 0,
                        "torch_rng": torch.get_rng_state(), "data_rng": generator.get_state()}
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        with interrupts_deferred():
            runs.commit_epoch(run_dir, net, cfg, {**info, "epoch": tr.epoch, "metrics": metrics},
                              resume_state, rows + [row])
            rows.append(row)
            committed["epoch"] = tr.epoch
        run_log.epoch(tr.global_step, test_logs, pictures)
        tr.epoch_logs = {**{k: v for k, v in tr.epoch_logs.items() if k != "seconds"},
                         **{f"test_{k}": v for k, v in test_logs.items() if k in SHOWN_TEST}}

    trainer = Trainer(net, optimizer, batches, epochs=cfg.train.epochs, start_epoch=start_epoch,
                      start_step=start_step, running=running, scheduler=scheduler,
                      grad_clip=cfg.train.grad_clip, progress=progress)
    trainer.add_callback("on_epoch_end", on_epoch_end)
    run_log = RunLog(run_dir, start_epoch * len(batches) + start_step, log)
    trainer.add_callback("on_log", lambda tr: run_log.step(tr.global_step, tr.epoch + tr.step / len(batches),
                                                           tr.step_logs))
    try:
        trainer.run()
    except KeyboardInterrupt:
        return _interrupted(trainer, run_dir, net, optimizer, committed["epoch"], len(batches), rows, log)
    except Exception as e:
        nothing_saved = committed["epoch"] == 0 and plan.run_dir is None
        if nothing_saved:   # a new run that never finished an epoch: leave no empty run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(e, NonFiniteLoss):
            if nothing_saved:
                raise NonFiniteLoss(f"{e}; no epoch had finished, so nothing was saved (the run directory is "
                                    "removed): lower `lr` and train again") from None
            raise NonFiniteLoss(f"{e}; the last good checkpoint is kept (epoch {committed['epoch']}): "
                                f"lower `lr` and resume, or retrain") from None
        raise
    finally:
        run_log.close()
    plots.save(plots.curves_figure([(run_dir.name, read_steps(run_dir / STEPS), rows)],
                                   title=f"{spec.display_name} on {cfg.train.dataset}  ({run_dir.name})"),
               run_dir / runs.CURVES)
    return TrainResult(run_dir, rows[-1] if rows else {})


def _interrupted(trainer: Trainer, run_dir: Path, net, optimizer, committed: int, steps: int, rows: list,
                 log) -> TrainResult:
    """Ctrl-C: keep the last committed epoch as it is; save the state since then, if any, to resume at."""
    epochs = trainer.epochs
    step = trainer.step if trainer.epoch == committed else steps   # past the epoch's batches, before its commit
    if step == 0:
        log(f"Interrupted after epoch {committed} of {epochs}: {run_dir} is saved. "
            f"Continue with: vqgen train --resume {run_dir}")
    else:
        runs.save_interrupted(run_dir, {
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": optimizer.state_dict(), "epoch": committed, "step": step,
            "torch_rng": torch.get_rng_state(), "data_rng": trainer.epoch_start_rng,
            "running": trainer.running.state()})
        kept = f"the checkpoint of epoch {committed} is kept" if committed else "no epoch had finished"
        log(f"Interrupted in epoch {committed + 1} of {epochs} at step {step} of {steps}: saved that state "
            f"({kept}). Continue with: vqgen train --resume {run_dir}")
    return TrainResult(run_dir, rows[-1] if rows else {}, interrupted=True)
