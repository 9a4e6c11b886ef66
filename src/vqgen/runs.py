"""Run directories and checkpoints.

A run lives in `runs/<model>-<dataset>` (then `-2`, `-3`, ...; never
overwritten) and holds:

- `config.yaml`: the resolved configuration;
- `model.safetensors`: the weights, with the model type, configuration, dataset
  and vqgen version in the metadata, so the file alone loads;
- `resume.pt`: optimizer, scheduler, epoch and RNG state, plain tensors and
  numbers that `torch.load(..., weights_only=True)` reads;
- `metrics.csv`, one row per epoch, and the per-epoch picture grids.

Every file is written to a temporary name and renamed, so a crash or Ctrl-C
never leaves a half-written checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vqgen import __version__
from vqgen.config import RunConfig
from vqgen.errors import RunError, UsageError
from vqgen.models import build_model

WEIGHTS = "model.safetensors"
RESUME = "resume.pt"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
LATENTS = "latents.safetensors"   # a VAE's training latent means, for the mix sampler
MODEL_NAMES = {"vqvae": "VQ-VAE", "vae": "VAE", "prior": "prior"}


def slug(text: str) -> str:
    """A dataset name as it reads in a run directory: 'ylecun/mnist' -> 'mnist'."""
    name = Path(text.rstrip("/")).name or text
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


def new_run_dir(out: Path, name: str) -> Path:
    """Create `out/name`, or `out/name-2`, `-3`, ...: never an existing directory."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"too many runs named {name} in {out}")


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_weights(path: Path, model: torch.nn.Module, config: RunConfig, info: dict) -> None:
    """`model.safetensors` with everything needed to rebuild the model in its metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "vqgen_model": config.model, "vqgen_version": __version__,
            "config": config.to_json(), "info": json.dumps(info)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def save_resume(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_resume(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"{path.parent}: no {RESUME} to resume from; start a new run instead")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        raise RunError(f"{path}: unreadable resume state ({e.__class__.__name__}); start a new run") from None


class Checkpoint:
    """A loaded `model.safetensors`: the model, its config and what it was trained on."""

    def __init__(self, path: Path, model: torch.nn.Module, config: RunConfig, info: dict, version: str):
        self.path, self.model, self.config, self.info, self.version = path, model, config, info, version

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def kind(self) -> str:
        return self.config.model


def read_metadata(path: Path) -> dict:
    """The metadata of a vqgen weights file, or a clear error if it is not one."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path}: corrupt or truncated weights file ({str(e).splitlines()[0][:80]}); "
                       "retrain, or resume the run if it has resume.pt") from None
    if "vqgen_model" not in meta or "config" not in meta:
        raise UsageError(f"{path}: a safetensors file, but not one written by vqgen")
    return meta


def load_checkpoint(path: Path, device: str | torch.device = "cpu", expect: tuple[str, ...] | None = None) -> Checkpoint:
    """Rebuild the model in `path` (a run directory or a .safetensors file)."""
    path = weights_path(path)
    meta = read_metadata(path)
    kind = meta["vqgen_model"]
    if expect and kind not in expect:
        wanted = " or ".join(MODEL_NAMES.get(k, k) for k in expect)
        raise UsageError(f"{path} holds a {MODEL_NAMES.get(kind, kind)}, but this needs a {wanted} run; "
                         "pass --run with one")
    written = meta.get("vqgen_version", "?")
    config = RunConfig.from_dict(json.loads(meta["config"]))
    model = build_model(kind, config.model_config)
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        if written != __version__:
            raise RunError(f"{path}: weights written by vqgen {written} do not load in vqgen {__version__}; "
                           "train this run again (see CHANGELOG.md)") from None
        raise RunError(f"{path}: weights do not load ({str(e).splitlines()[0][:80]}); "
                       "the file is damaged") from None
    model.to(device).eval()
    return Checkpoint(path, model, config, json.loads(meta.get("info", "{}")), written)


def weights_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        w = path / WEIGHTS
        if not w.is_file():
            raise UsageError(f"{path}: no {WEIGHTS} in this run directory; train it first "
                             "(or it was stopped before its first epoch ended)")
        return w
    if not path.exists():
        raise UsageError(f"{path}: no such run directory or checkpoint file")
    return path


def find_latest_run(kinds: tuple[str, ...], runs_dir: Path = Path("runs"), where=None) -> Path:
    """The newest run under `runs_dir` whose model is one of `kinds`."""
    candidates = []
    if runs_dir.is_dir():
        for w in runs_dir.glob(f"*/{WEIGHTS}"):
            try:
                meta = read_metadata(w)
            except (UsageError, RunError):
                continue
            if meta["vqgen_model"] in kinds and (where is None or where(meta)):
                candidates.append((w.stat().st_mtime, w.parent))
    if not candidates:
        names = " or ".join(MODEL_NAMES[k] for k in kinds)
        raise UsageError(f"no trained {names} run under {runs_dir}/; train one with "
                         f"`vqgen train --model {kinds[0]}`, or pass --run")
    return max(candidates)[1]


def write_metrics(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            for row in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    atomic_write(path, write)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            try:
                parsed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
            except (ValueError, AttributeError):
                parsed[k] = v
        out.append(parsed)
    return out
