"""Choosing a run: the one a command takes when it is given none.

A command that needs a run and was given none takes the newest run under ./runs (runs.list_runs) that has a
finished epoch, is of a model that can do what was asked, and fits what the command needs (`Need`: the
classes of a morph, a sampler by class); where none does, the ready-trained run of such a model shipped with
vqgen, saying which and why in one line. A model with codes but no sampler finds the run trained on its codes
beside it (`find_child_run`: the prior of a VQ-VAE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vqgen import models, runs
from vqgen.errors import UsageError


@dataclass(frozen=True)
class Need:
    """What a command asks of a run it picks itself: a run that `fits`, said as `why` after "newest" and "no run"
    ("with the classes 4 and 9"), and `how` to make one where none does."""
    why: str
    fits: Callable[[runs.RunSummary], bool] = lambda s: True
    how: str = ""
    # Where no run fits, nor a ready-trained one: the newest run that comes `near` (has classes, but not
    # these) is taken, said as `near_why`, so that its own error names the classes it has.
    near: Callable[[runs.RunSummary], bool] | None = None
    near_why: str = ""


def with_classes(names: list[str]) -> Need:
    """A run whose data has these classes (a morph from class 4 to class 9)."""
    shown = " and ".join(names)
    return Need(f"with the class{'es' if len(names) > 1 else ''} {shown}",
                lambda s: set(names) <= set(s.info.get("class_names") or []),
                f"train one on labelled data that has them (vqgen train --dataset mnist for digits), or pass `run`",
                near=lambda s: bool(s.info.get("class_names")), near_why="with class labels")


def samples_class(name: str) -> Need:
    """A run that samples by class and knows this one (a class-conditional sampler, `sample --digit 7`)."""
    samplers = [s for s in models.with_operation("sample") if "labels" in s.sample_options]
    how = ", then ".join(f"vqgen train{'' if s.name == models.DEFAULT_MODEL else ' --model ' + s.name}"
                        for s in ([models.get(models.DEFAULT_MODEL)] if samplers and samplers[0].trains_on == "codes"
                                  else []) + samplers[:1])

    def by_class(s: runs.RunSummary, name: str | None) -> bool:
        """Samples by class (that one, if named): itself, or (a model of codes) through a prior beside it."""
        spec, classes = models.get(s.model), s.info.get("class_names") or []
        if not classes or (name is not None and name not in classes):
            return False
        if "labels" in spec.sample_options:
            return s.model_config.get("num_classes") != 0
        if spec.can("codes"):
            me = s.path.resolve()
            return any(by_class(c, name) for c in runs.list_runs(s.path.parent)
                       if c.usable and c.path != s.path and _names_run(parent_of(c.meta), me))
        return False

    return Need(f"that samples class {name}", lambda s: by_class(s, name),
                f"train one on labelled data that has it ({how}), or pass `run`",
                near=lambda s: by_class(s, None), near_why="that samples by class")


def choose_run(accept: list[models.ModelSpec], runs_dir: Path = Path("runs"), need: Need | None = None,
               ready: bool = True) -> tuple[Path, str]:
    """The newest run under `runs_dir` with a finished epoch whose model is one of `accept` and that fits
    `need`; where there is none and `ready`, the ready-trained run of such a model shipped with vqgen. With the
    status line that says which and why."""
    names = {s.name for s in accept}
    need = need or Need(f"{runs.describe_kinds(accept)} run")
    mine = [s for s in runs.list_runs(runs_dir) if s.usable and s.model in names]
    fit = [s for s in mine if need.fits(s)]
    if fit:
        return fit[-1].path, f"Using run {fit[-1].path} (newest {need.why})"
    if ready:
        shipped = [s for s in runs.list_runs(runs.READY_DIR) if s.usable and s.model in names and need.fits(s)]
        # the model that learns images first (the VQ-VAE, which samples through its prior), then by name
        shipped.sort(key=lambda s: (models.get(s.model).trains_on != "images", s.path.name))
        if shipped:
            path = shipped[0].path
            if not mine:
                return path, runs.using(path)
            return path, (f"Using the ready-trained {models.get(shipped[0].model).display_name} "
                          f"{runs.ready_name(path)}: no run in {runs_dir}/ {need.why}")
    near = [s for s in mine if need.near(s)] if need.near is not None else []
    if near:
        return near[-1].path, f"Using run {near[-1].path} (newest {need.near_why})"
    shipped_any = ready and any(s.usable and s.model in names for s in runs.list_runs(runs.READY_DIR))
    if need.how and (mine or shipped_any):   # runs there are, but none that can: say what would
        newest = f" (newest: {mine[-1].path.name})" if mine else ""
        raise UsageError(f"no run in {runs_dir}/ {need.why}{newest}{', nor a ready-trained one' if ready else ''}; "
                         f"{need.how}")
    raise UsageError(f"no trained {runs.describe_kinds(accept)} run under {runs_dir}/; train one with "
                     f"`vqgen train --model {accept[0].name}`, or pass `run`")


def find_latest_run(accept: list[models.ModelSpec], runs_dir: Path = Path("runs"),
                    where: Callable[[runs.RunSummary], bool] | None = None, ready: bool = False) -> Path:
    """The newest run under `runs_dir` with a finished epoch whose model is one of `accept`; with `ready`,
    where there is none, the ready-trained run of such a model shipped with vqgen (`is_ready` tells)."""
    need = Need(f"{runs.describe_kinds(accept)} run", where) if where is not None else None
    return choose_run(accept, runs_dir, need, ready)[0]


def parent_of(meta: dict) -> str | None:
    """The parent run recorded in a run's weights metadata (a model trained on its codes)."""
    cfg = json.loads(meta["config"])
    parent = cfg.get("parent") or {}
    return parent.get("run") or (cfg.get("extra") or {}).get("vqvae_run")


def find_child_run(parent: runs.Checkpoint, child_specs: list[models.ModelSpec]) -> Path:
    """The newest run beside `parent` that was trained on its codes (the prior of a VQ-VAE)."""
    want = parent.run_dir.resolve()
    try:
        return find_latest_run(child_specs, parent.run_dir.parent,
                               where=lambda s: _names_run(parent_of(s.meta), want))
    except UsageError:
        names = runs.describe_kinds(child_specs)
        raise UsageError(f"no {names} for {parent.run_dir} yet: a {parent.spec.display_name} samples through "
                         f"a learned {names}; train one with `vqgen train --model {child_specs[0].name} "
                         f"--run {parent.run_dir}`") from None


def _names_run(ref: str | None, run_dir: Path) -> bool:
    """Whether a recorded parent run (a path, or `ready:NAME`) is `run_dir`."""
    if not ref:
        return False
    try:
        return runs.resolve_run(ref).resolve() == run_dir
    except (UsageError, OSError):
        return False
