"""Planning a run: everything decided before training starts.

A new run: the model's spec, the data resolved once (an image dataset's shape, or the parent run whose codes
the model learns), and `resolve_config`'s `RunConfig` from the defaults, the config file and the flags. A
resumed run: its own config read back, each flag applied (APPLIED_ON_RESUME) or refused, and the state to
continue from (the end of an epoch, or the step where Ctrl-C or a SIGTERM stopped it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vqgen import data as D
from vqgen import choosing, distributed, models, runs
from vqgen.config import RunConfig, TrainConfig, choose_model, read_yaml, resolve_config, split_settings
from vqgen.errors import UsageError
from vqgen.files import check_writable, remove_stale_temps
from vqgen.settings import flat_values

# The settings a resumed run takes from flags: how long and where it trains, not what it learns.
APPLIED_ON_RESUME = ("epochs", "device", "threads", "precision", "compile", "data_in_memory")


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
    source: D.DatasetSource | None = None    # the dataset, resolved once (None: resolved when it is loaded)
    locks: list = field(default_factory=list)   # the run folder's lock (locks.FolderLock) while it trains

    def release(self) -> None:
        """Let go of the run folder's lock."""
        while self.locks:
            self.locks.pop().release()


def _parent_shape(parent: runs.Checkpoint) -> models.CodeShape:
    return models.CodeShape(parent.model.codebook_size, parent.model.latent_grid, len(parent.class_names or []))


def _image_shape(source: D.DatasetSource, file_model: dict) -> models.ImageShape:
    """The shape to train at: the config file's image_size and channels, else the data's."""
    if "image_size" in file_model and "channels" in file_model:
        return models.ImageShape(int(file_model["image_size"]), int(file_model["channels"]))
    size, channels = D.probe_shape(source)
    return models.ImageShape(int(file_model.get("image_size", size)), int(file_model.get("channels", channels)))


def plan_new(model: str | None, dataset: str | None, config_file: str | None, flags: dict, parent_run: Path | None,
             runs_dir: Path, log) -> Plan:
    """A new run's plan. `model`: the model asked for; None takes the config file's `model:`, else the default."""
    file_values = read_yaml(config_file) if config_file else {}
    model = choose_model(model, file_values, config_file)
    spec = models.get(model)
    file_train = split_settings(file_values, spec.config_class)[0]
    device = resolve_device(flags.get("device", file_train.get("device", TrainConfig.device)))
    if spec.trains_on == "codes":
        if dataset is not None:
            raise UsageError(f"`dataset`: a {spec.display_name} trains on the codes of another run's data; "
                             "drop `dataset` and pass that run with `run`")
        parents = models.with_operation("codes")
        parent_dir = Path(parent_run) if parent_run else choosing.find_latest_run(parents, runs_dir, ready=True)
        parent = runs.load_checkpoint(parent_dir, accept=parents)
        log(f"{spec.display_name.capitalize()} for the {parent.spec.display_name} run {runs.run_label(parent.run_dir)}"
            + (f": {runs.which_epoch(parent)}" if parent.is_earlier_best else ""))
        cfg = resolve_config(model, _parent_shape(parent), file_values=file_values,
                             flags={**flags, "dataset": parent.config.train.dataset}, file_name=config_file,
                             device_type=device.type)
        cfg.source = parent.config.dataset_source
        cfg.parent = {"run": runs.parent_reference(parent.run_dir), "fingerprint": parent.model.code_fingerprint()}
        source = _parent_source(cfg.source)
        label = source.label if source else parent.config.train.dataset
        # A sampler for a run of another model than the default says whose: runs/prior-vqgan-anime-faces.
        if parent.spec.name != models.DEFAULT_MODEL:
            label = f"{parent.spec.name}-{label}"
        return Plan(cfg, spec, parent=parent, data_label=label, source=source)
    if parent_run is not None:
        raise UsageError(f"`run` names the run whose codes a model learns; a {spec.display_name} trains on images")
    file_model = split_settings(file_values, spec.config_class)[1]
    name = dataset if dataset is not None else file_train.get("dataset", TrainConfig.dataset)
    source = D.resolve_dataset(name)
    cfg = resolve_config(model, _image_shape(source, file_model), file_values=file_values,
                         flags={**flags, **({"dataset": dataset} if dataset is not None else {})},
                         file_name=config_file, device_type=device.type)
    cfg.source = source.source
    return Plan(cfg, spec, data_label=source.label, source=source)


def _parent_source(source: str) -> D.DatasetSource | None:
    """The parent run's dataset, resolved; None when it cannot be (loading it then says why)."""
    try:
        return D.resolve_dataset(source)
    except UsageError:
        return None


RESUME_UNWRITABLE = ("; a resumed run writes into its folder: copy the run to a folder you can write, and resume "
                     "the copy")


def plan_resume(resume: Path, flags: dict, given: dict, log) -> Plan:
    """Reopen a run, holding its folder's lock first (one process trains a run at a time; under torchrun, the
    first process holds it), as `_plan_resume` says. The plan keeps the lock: `Plan.release` lets go."""
    run_dir = runs.run_dir_of(resume)
    lock = None
    if distributed.launched_rank() == 0 and run_dir.is_dir():
        lock = runs.lock_run(run_dir, "training it", RESUME_UNWRITABLE)
    try:
        plan = _plan_resume(resume, flags, given, log)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is not None:
        plan.locks.append(lock)
    return plan


def _plan_resume(resume: Path, flags: dict, given: dict, log) -> Plan:
    """Reopen a run; apply the flags it can take (APPLIED_ON_RESUME: how long, where and how fast it trains)
    and refuse every other."""
    run_dir = runs.run_dir_of(resume)
    remove_stale_temps(run_dir)
    try:
        ckpt = runs.load_checkpoint(run_dir, weights="latest")
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
    current = {**vars(cfg.train), **flat_values(cfg.model_config)}
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
    check_writable(run_dir, RESUME_UNWRITABLE)
    committed = ckpt.epoch if ckpt else 0
    plan = Plan(cfg, spec, run_dir=run_dir)
    partial = runs.load_interrupted(run_dir, committed)
    if partial is not None:
        plan.weights, plan.resume = partial["model"], partial
        plan.notes.append(f"Resuming {run_dir} in epoch {committed + 1} of {cfg.train.epochs} at step "
                          f"{partial['step']}, where it was stopped")
    elif ckpt is None:
        raise UsageError(f"{run_dir}: nothing to resume (no finished epoch and no saved state); start a new run")
    else:
        if (run_dir / runs.INTERRUPTED).is_file():
            plan.notes.append(f"Discarding {runs.INTERRUPTED}: it is older than the checkpoint of epoch {committed}")
            (run_dir / runs.INTERRUPTED).unlink()
        plan.weights = ckpt.model.state_dict()
        plan.resume = {**runs.load_resume(run_dir, committed), "step": 0}
        runs.reconcile_best(run_dir, spec, committed)
        plan.notes.append(f"Resuming {run_dir} at epoch {committed + 1} of {cfg.train.epochs}")
    if plan.resume["epoch"] >= cfg.train.epochs and plan.resume["step"] == 0:
        raise UsageError(f"{run_dir} has already trained {plan.resume['epoch']} of {cfg.train.epochs} epochs; "
                         "pass a larger `epochs` to train on")
    if spec.trains_on == "codes":
        plan.parent = runs.load_parent(cfg)
    return plan
