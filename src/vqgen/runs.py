"""Run directories and checkpoints: the one place that knows their layout.

A run lives in `runs/<model>-<dataset>` (then `-2`, `-3`, ...; never
overwritten) and holds:

- `config.yaml`: the resolved configuration;
- `model.safetensors`: the weights after the last finished epoch, with the
  model's name, configuration, dataset and vqgen version in the metadata, so
  the file alone loads;
- `best.safetensors`, where the latest epoch is not the run's best: the
  weights of the epoch with the best held-out headline figure (the model's
  `headline`, else the loss; the later epoch on a tie). Where it is absent,
  `model.safetensors` is the best too. Commands and `vqgen.load` use the best
  weights of a run folder; `--resume` continues from the latest. Weights are
  written with the umask's mode (0644 as a rule), like every other file;
- `resume.pt`: the state of every optimizer ("optimizer", or "optimizers" by parameter group), epoch and
  RNG state of that epoch, plain tensors and
  numbers that `torch.load(..., weights_only=True)` reads;
- `metrics.csv`, one row per epoch, and the per-epoch pictures
  (`recon_epoch_001.png`, `samples_epoch_001.png`, ...);
- `interrupted.pt`: after Ctrl-C in the middle of an epoch, the state at that
  step, so that `--resume` continues from it;
- `latents.safetensors`: training latents, for models that sample from them;
- `scores.json`: what `vqgen score` measured, with the settings that produced
  each figure (the samples of a VQ-VAE are kept with the prior that drew them);
- `.vqgen.lock`, while a process trains the run (locks.py): who holds it. A
  second trainer is refused, and `vqgen runs --clean` leaves the run alone.

An epoch is committed as one transaction. Its resume state is staged
(`resume.next.pt`), its metrics written, then (for an epoch worse than the
best, where the best was the latest) the best weights kept as
`best.safetensors`, then its weights, the commit point, then
`best.safetensors` removed where this epoch is the best, and then the staged
state takes its place. On load the weights' epoch decides:
resume state and metrics are reconciled to it, so `info` and `--resume` never
disagree, even after `kill -9` in the middle of a write. Every file is written
under a temporary name and renamed; temporary files left by a killed process
are removed the next time the run is opened.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vqgen import __version__, models
from vqgen.config import RunConfig
from vqgen.errors import CheckpointError, OutputPathError, RunError, UsageError, explain
from vqgen.files import atomic_write, check_path_text, remove_stale_temps, slug, write_text
from vqgen.locks import LOCK_NAME, FolderLock

WEIGHTS = "model.safetensors"
BEST = "best.safetensors"          # the run's best epoch's weights, where its latest is not its best
LOCK = LOCK_NAME                   # held by the process that trains the run
RECENT_SECONDS = 10 * 60           # a run whose record was written this recently may be training: --clean keeps it
RESUME = "resume.pt"
RESUME_STAGED = "resume.next.pt"
INTERRUPTED = "interrupted.pt"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
LATENTS = "latents.safetensors"
SCORES = "scores.json"
SCORES_FORMAT = 1
CURVES = "loss_curve.png"          # the run's figures, one panel per kind (plots.py)
PICTURE_KINDS = ("recon", "samples")   # per-epoch pictures: <kind>_epoch_NNN.png
MODEL_CARD = "MODEL_CARD.md"       # what a shipped run is and how it was made (`vqgen info` shows it)
# Ready-trained runs shipped inside the package (read-only), named `ready:NAME`; what the commands make with
# one goes to READY_OUTPUTS instead of beside it.
READY_DIR = Path(__file__).resolve().parent / "resources" / "ready"
READY_PREFIX = "ready:"
READY_OUTPUTS = Path("runs") / "ready-trained"


# --------------------------------------------------------------------------- run directories


def run_name(model: str, data_label: str) -> str:
    """The default name of a run: model and dataset, 'vqvae-mnist' (for MNIST, and for a local copy of it)."""
    return f"{model}-{slug(data_label)}"


def check_run_name(name: str) -> str:
    """A run name must be one ordinary path component: no folders, no '..'."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or "\0" in name:
        raise UsageError(f"`name` {name!r}: a run name is one folder name, such as my-run (no / or ..)")
    check_path_text(name, "name")
    return name


def new_run_dir(out: Path, name: str) -> Path:
    """Create `out/name`, or `out/name-2`, `-3`, ...: never an existing directory."""
    check_run_name(name)
    check_path_text(out, "out")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"`out` {out}: is a file, not a folder for runs; give another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise explain(e, out) or OutputPathError(f"`out` {out}: cannot create the folder "
                                                 f"({e.strerror or e.__class__.__name__})") from None
    for i in range(1, 10_000):
        path = out / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise explain(e, path) or OutputPathError(f"`out` {out}: cannot create a run folder in it "
                                                      f"({e.strerror or e.__class__.__name__})") from None
    raise RunError(f"too many runs named {name} in {out}")


def run_dir_of(path: Path) -> Path:
    """The run directory of a run directory or of a file in one."""
    path = resolve_run(path)
    return path if path.is_dir() else path.parent


# --------------------------------------------------------------------------- weights


@dataclass
class Checkpoint:
    """A loaded `model.safetensors`: the model, its config and what it was trained on."""
    path: Path
    model: torch.nn.Module
    config: RunConfig
    info: dict
    version: str
    latest_epoch: int | None = None   # the run's latest epoch, where these weights are its best (BEST)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def kind(self) -> str:
        return self.config.model

    @property
    def spec(self) -> models.ModelSpec:
        return models.get(self.config.model)

    @property
    def epoch(self) -> int:
        return int(self.info.get("epoch", 0))

    @property
    def class_names(self) -> list[str] | None:
        return self.info.get("class_names")

    @property
    def class_word(self) -> str:
        """What its classes are called in titles: "digit" (MNIST's) or "class"."""
        return class_word(self.info)

    @property
    def run_epoch(self) -> int:
        """The run's latest epoch (that of these weights, unless they are its earlier best)."""
        return self.latest_epoch if self.latest_epoch is not None else self.epoch

    @property
    def is_earlier_best(self) -> bool:
        """These are the run's best weights, of an epoch before its latest."""
        return self.latest_epoch is not None and self.latest_epoch != self.epoch


def class_word(info: dict) -> str:
    """"digit" for a run on MNIST, else "class"; runs before vqgen recorded it: "digit" for the classes 0-9."""
    recorded = info.get("class_word")
    if recorded in ("digit", "class"):
        return recorded
    return "digit" if info.get("class_names") == [str(i) for i in range(10)] else "class"


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _save_safetensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """A safetensors file written whole under its name, with the mode the umask gives a new file (safetensors
    writes 0600: colleagues in a shared folder could not read the weights)."""
    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())
    atomic_write(path, write, size=sum(t.nbytes for t in tensors.values()))


def save_weights(path: Path, model: torch.nn.Module, config: RunConfig, info: dict) -> None:
    """`model.safetensors` with everything needed to rebuild the model in its metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "vqgen_model": config.model, "vqgen_version": __version__,
            "config": config.to_json(), "info": json.dumps(info)}
    _save_safetensors(tensors, path, meta)


def read_metadata(path: Path) -> dict:
    """The metadata of a vqgen weights file, or a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        other = not_weights(path)
        if other is not None:
            raise UsageError(f"{path.name} is {other}, not a vqgen model; pass a run folder or its {WEIGHTS}") \
                from None
        raise CheckpointError(f"{path}: corrupt or truncated weights file ({str(e).splitlines()[0][:80]}); "
                              "retrain, or resume the run if it has resume.pt") from None
    if "vqgen_model" not in meta or "config" not in meta:
        raise UsageError(f"{path}: a safetensors file, but not one written by vqgen")
    return meta


# What a file that is not a safetensors file looks like, by its first bytes.
MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
         (b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "a gzip file"), (b"\xfd7zXZ", "an xz file"),
         (b"%PDF", "a PDF file"), (b"\x80", "a Python pickle"))


def not_weights(path: Path) -> str | None:
    """What a file that safetensors cannot open looks like, when it is not a safetensors file at all ("a text
    file", "a PNG image", "PyTorch's resume state"); None when it is one (a damaged one: its 8-byte header
    length is followed by the JSON header's opening brace)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if path.suffix.lower() == ".safetensors":   # whatever it holds, under that name: a damaged one
        return None
    if not head:
        return "an empty file"
    if len(head) > 8 and head[8:9] == b"{":
        return None
    if head.startswith(b"PK\x03\x04") and b"data.pkl" in head:
        return "a PyTorch file (torch.save)"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4 or b"\0" in head:   # not just a character cut off at 4096 bytes
            return "not a safetensors file"
    if b"\0" in head:
        return "not a safetensors file"
    kinds = {".yaml": "a YAML file", ".yml": "a YAML file", ".md": "a text file", ".json": "a JSON file",
             ".csv": "a CSV file"}
    return kinds.get(path.suffix.lower(), "a text file")


def _config_from_meta(path: Path, meta: dict) -> tuple[RunConfig, dict]:
    kind = meta["vqgen_model"]
    if models.find(kind) is None:
        raise CheckpointError(f"{path}: its metadata names an unknown model {kind!r} (known: "
                              f"{', '.join(models.names())}); it was written by another program or a newer vqgen")
    try:
        config_dict = json.loads(meta["config"])
        info = json.loads(meta.get("info", "{}"))
        if not isinstance(config_dict, dict) or not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged metadata ({e.__class__.__name__}: {str(e)[:60]}); "
                              "retrain the run") from None
    if config_dict.get("model") != kind:
        raise CheckpointError(f"{path}: damaged metadata: it says {kind!r} but its config says "
                              f"{config_dict.get('model')!r}; retrain the run")
    try:
        config = RunConfig.from_dict(config_dict)
    except (UsageError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged metadata: the stored config does not load ({e}); "
                              "retrain the run") from None
    if not config.source and info.get("dataset_source"):   # runs of vqgen 0.2 kept it here only
        config.source = info["dataset_source"]
    return config, info


def describe_kinds(accept: list[models.ModelSpec]) -> str:
    return models.display_names(accept)


def load_checkpoint(path: Path, device: str | torch.device = "cpu",
                    accept: list[models.ModelSpec] | None = None, weights: str = "best") -> Checkpoint:
    """Rebuild the model in `path` (a run directory or a .safetensors file).

    `accept`: the models this use needs; another one is refused by name.
    `weights`, for a run directory: "best", the weights of its best epoch (best.safetensors, where it has one),
    or "latest" (model.safetensors, what --resume continues).
    """
    path = weights_path(path, weights)
    meta = read_metadata(path)
    config, info = _config_from_meta(path, meta)
    spec = models.get(config.model)
    if accept is not None and spec not in accept:
        raise UsageError(f"{path} holds a {spec.display_name}, but this needs a {describe_kinds(accept)} run; "
                         "pass `run` with one")
    written = meta.get("vqgen_version", "?")
    model = spec.build(config.model_config)
    try:
        model.load_state_dict(load_file(str(path)))
    except (SafetensorError, RuntimeError, OSError) as e:
        if written != __version__:
            raise CheckpointError(f"{path}: weights written by vqgen {written} do not load in vqgen {__version__}; "
                                  "train this run again (see CHANGELOG.md)") from None
        raise CheckpointError(f"{path}: weights do not load ({str(e).splitlines()[0][:80]}); "
                              "the file is damaged") from None
    model.to(device).eval()
    latest = None
    if path.name == BEST:
        try:
            latest = int(json.loads(read_metadata(path.parent / WEIGHTS).get("info", "{}")).get("epoch", 0))
        except (UsageError, RunError, ValueError, TypeError, AttributeError):
            latest = None
    return Checkpoint(path, model, config, info, written, latest)


def weights_path(path: Path, weights: str = "latest") -> Path:
    """The weights file of a run directory (its latest, or with "best" its best epoch's) or the file given."""
    path = resolve_run(path)
    if path.is_dir():
        if weights == "best" and (path / BEST).is_file() and (path / WEIGHTS).is_file():
            return path / BEST
        w = path / WEIGHTS
        if not w.is_file():
            inside = [] if (path / CONFIG).is_file() else [s for s in list_runs(path) if s.usable]
            if inside:   # a folder of runs: name them
                shown = ", ".join(str(s.path) for s in inside[::-1][:4]) + (", ..." if len(inside) > 4 else "")
                raise UsageError(f"{path} is a folder of {len(inside)} runs, not a run; pass one of them "
                                 f"with `run` (newest first): {shown}")
            why = ("it was stopped before its first epoch ended; resume it with --resume"
                   if (path / INTERRUPTED).is_file() or (path / CONFIG).is_file() else "train it first")
            raise UsageError(f"{path}: no {WEIGHTS} in this run directory; {why}")
        return w
    if not path.exists():
        raise UsageError(f"{path}: no such run directory or checkpoint file")
    return path


def read_run_config(run_dir: Path) -> RunConfig:
    """The config of a run that may have no weights yet (stopped in its first epoch)."""
    import yaml

    p = Path(run_dir) / CONFIG
    try:
        return RunConfig.from_dict(yaml.safe_load(p.read_text()))
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: not a run directory (no {CONFIG} or {WEIGHTS})") from None
    except Exception as e:  # noqa: BLE001 - any damage to the file reads the same to the user
        raise CheckpointError(f"{p}: damaged ({e.__class__.__name__}); this run cannot be resumed") from None


# --------------------------------------------------------------------------- epoch commits and resume state


def _nbytes(state) -> int:
    """The bytes of the tensors in a nested state (about the size of its file)."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(_nbytes(v) for v in state.values())
    return sum(_nbytes(v) for v in state) if isinstance(state, (list, tuple)) else 0


def _torch_save(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp), size=_nbytes(state))


def _torch_load(path: Path) -> dict:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - pickles with code, truncation, garbage: all refused alike
        raise CheckpointError(f"{path}: unreadable resume state ({e.__class__.__name__}); "
                              "start a new run, or delete the file to resume from the last epoch") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path}: not a vqgen resume state; start a new run")
    return state


def commit_epoch(run_dir: Path, model: torch.nn.Module, config: RunConfig, info: dict, resume_state: dict,
                 rows: list[dict], best: bool = True) -> None:
    """Save one finished epoch as a transaction; the weights' rename is the commit point. `best`: the epoch is
    the run's best (then WEIGHTS holds the best, and BEST goes); else the best weights are kept in BEST before
    WEIGHTS is replaced, where they were WEIGHTS."""
    run_dir = Path(run_dir)
    _torch_save(run_dir / RESUME_STAGED, resume_state)
    try:
        write_metrics(run_dir / METRICS, rows)
        if not best and not (run_dir / BEST).is_file() and (run_dir / WEIGHTS).is_file():
            keep_best(run_dir)
        save_weights(run_dir / WEIGHTS, model, config, info)
    except BaseException:   # not committed (a full disk, say): the staged state belongs to no epoch
        try:
            (run_dir / RESUME_STAGED).unlink(missing_ok=True)
        except OSError:
            pass
        raise
    if best:
        (run_dir / BEST).unlink(missing_ok=True)
    os.replace(run_dir / RESUME_STAGED, run_dir / RESUME)
    (run_dir / INTERRUPTED).unlink(missing_ok=True)


def keep_best(run_dir: Path) -> None:
    """The weights in WEIGHTS kept as BEST, whole: a hard link to the same file (a copy where the file system
    has no links). WEIGHTS is replaced by a new file when the next epoch commits; BEST stays as it is."""
    import shutil

    run_dir = Path(run_dir)

    def write(tmp: Path) -> None:
        try:
            os.link(run_dir / WEIGHTS, tmp)
        except OSError:
            shutil.copy2(run_dir / WEIGHTS, tmp)
    atomic_write(run_dir / BEST, write)


def best_row(rows: list[dict], spec: models.ModelSpec | None) -> tuple[models.Figure, dict] | None:
    """The epoch (a metrics row) with the run's best held-out headline figure (its model's, else the loss), and
    that figure: the lowest, or the highest where higher is better; the later epoch on a tie. None: no row has
    a held-out figure. `vqgen runs` and the best checkpoint pick by this alike. For a model whose best epoch is
    its latest (`ModelSpec.best_epoch` False): the latest row with the figure."""
    from vqgen.models.registry import LOSS

    for figure in ((spec.headline,) if spec is not None else ()) + (LOSS,):
        key = f"test_{figure.name}"
        found = [r for r in rows if isinstance(r.get(key), (int, float)) and r[key] == r[key]]   # not NaN
        if found:
            if spec is not None and not spec.best_epoch:
                return figure, found[-1]
            sign = 1 if figure.lower_is_better else -1
            return figure, min(reversed(found), key=lambda r: sign * r[key])
    return None


def reconcile_best(run_dir: Path, spec: models.ModelSpec, epoch: int) -> None:
    """After a commit cut off around the weights: where the committed `epoch` is the run's best, WEIGHTS holds
    the best and a BEST left beside it goes."""
    run_dir = Path(run_dir)
    if not (run_dir / BEST).is_file():
        return
    found = best_row(read_metrics(run_dir / METRICS, upto_epoch=epoch), spec)
    if found is not None and found[1].get("epoch") == epoch:
        (run_dir / BEST).unlink(missing_ok=True)


# --------------------------------------------------------------------------- who writes a run


def lock_run(run_dir: Path, doing: str, then: str = "", action: str = "write in") -> FolderLock:
    """Take `run_dir`'s lock for this process (training, resuming, removing it), or refuse in one line naming
    the process that holds it (locks.RunInUse, exit 1). A folder that cannot be written is named as what
    `action` could not do in it (`errors.explain`), with `then` (what to do instead) after."""
    lock = FolderLock(Path(run_dir), doing)
    try:
        return lock.acquire()
    except OSError as e:
        named = explain(e, run_dir, action=action) or RunError(
            f"cannot {action} {run_dir} ({e.strerror or e.__class__.__name__})")
        raise type(named)(named.message + then) from None


def load_resume(run_dir: Path, epoch: int) -> dict:
    """The resume state of the committed `epoch`, from `resume.pt` or a staged one not yet renamed."""
    run_dir = Path(run_dir)
    remove_stale_temps(run_dir)
    found = []
    for name in (RESUME, RESUME_STAGED):
        p = run_dir / name
        if p.is_file():
            state = _torch_load(p)
            if int(state["epoch"]) == epoch:
                if name == RESUME_STAGED:   # the commit was cut off after the weights: finish it
                    os.replace(p, run_dir / RESUME)
                return state
            found.append(int(state["epoch"]))
    if not found:
        raise UsageError(f"{run_dir}: no {RESUME} to resume from; start a new run instead")
    raise CheckpointError(f"{run_dir}: the resume state is for epoch {found[0]} but the weights are of epoch "
                          f"{epoch}; start a new run")


def save_interrupted(run_dir: Path, state: dict) -> None:
    """The state of a run stopped in the middle of an epoch (weights included)."""
    _torch_save(Path(run_dir) / INTERRUPTED, state)


def load_interrupted(run_dir: Path, committed_epoch: int) -> dict | None:
    """The mid-epoch state, if there is one that continues the committed epoch; else None."""
    p = Path(run_dir) / INTERRUPTED
    if not p.is_file():
        return None
    state = _torch_load(p)
    return state if int(state["epoch"]) == committed_epoch else None


# --------------------------------------------------------------------------- listing runs


@dataclass
class RunSummary:
    """What a listing needs to know of a run directory, read from its files without building the model."""
    path: Path
    model: str | None
    epoch: int                  # finished epochs
    epochs: int | None          # epochs asked for
    meta: dict | None           # the weights' metadata, where there are weights
    mtime: float
    interrupted: bool           # stopped before its epochs were done, or mid-epoch

    @property
    def finished(self) -> bool:
        return self.epoch >= 1 and not self.interrupted

    @property
    def usable(self) -> bool:
        """Has weights of at least one finished epoch."""
        return self.meta is not None and self.epoch >= 1

    @property
    def info(self) -> dict:
        """What the weights' metadata records of the run's data: class_names, dataset_source, ..."""
        try:
            found = json.loads((self.meta or {}).get("info", "{}"))
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    @property
    def model_config(self) -> dict:
        try:
            found = json.loads((self.meta or {}).get("config", "{}")).get("model_config")
        except (ValueError, AttributeError):
            return {}
        return found if isinstance(found, dict) else {}


def summarize(run_dir: Path) -> RunSummary | None:
    """A run directory's state, or None if it is not one."""
    run_dir = Path(run_dir)
    w = run_dir / WEIGHTS
    meta, model, epoch, epochs = None, None, 0, None
    if w.is_file():
        try:
            meta = read_metadata(w)
            info = json.loads(meta.get("info", "{}"))
            cfg = json.loads(meta["config"])
            model, epoch, epochs = meta["vqgen_model"], int(info.get("epoch", 0)), int(cfg["train"]["epochs"])
        except (UsageError, RunError, ValueError, KeyError, TypeError):
            meta = None
    if meta is None:
        if not (run_dir / CONFIG).is_file():
            return None
        try:
            cfg = read_run_config(run_dir)
            model, epochs = cfg.model, cfg.train.epochs
        except (UsageError, RunError):
            pass
    mtime = (w if w.is_file() else run_dir).stat().st_mtime
    interrupted = (run_dir / INTERRUPTED).is_file() or epochs is None or epoch < epochs
    return RunSummary(run_dir, model, epoch, epochs, meta, mtime, interrupted)


def list_runs(runs_dir: Path = Path("runs")) -> list[RunSummary]:
    """Every run directory under `runs_dir`, oldest first."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UsageError(f"{runs_dir} is a file, not a folder of runs; pass `run`, or move the file")
    if not runs_dir.is_dir():
        return []
    found = [s for p in runs_dir.iterdir() if p.is_dir() for s in [summarize(p)] if s is not None]
    return sorted(found, key=lambda s: s.mtime)


def load_parent(child: RunConfig, device: str | torch.device = "cpu") -> Checkpoint:
    """The run whose codes a model was trained on, refused if it is gone or was retrained since."""
    run = resolve_run(child.parent["run"])
    what = models.get(child.model).display_name
    if not (run / WEIGHTS).is_file():
        raise UsageError(f"the run this {what} was trained on ({run}) is gone; "
                         f"train that model and a new {what} for it")
    parent = load_checkpoint(run, device, accept=models.with_operation("codes"))
    check_parent(child, parent)
    return parent


def check_parent(child: RunConfig, parent: Checkpoint) -> None:
    """Refuse a parent whose codes changed since the child was trained on them."""
    want = child.parent.get("fingerprint")
    if want and want != parent.model.code_fingerprint():
        raise RunError(f"the {parent.spec.display_name} in {parent.run_dir} has changed since this "
                       f"{models.get(child.model).display_name} was trained on it (different codebook); "
                       f"train a new one: vqgen train --model {child.model} --run {parent.run_dir}")


# --------------------------------------------------------------------------- ready-trained runs


def resolve_run(run: Path | str) -> Path:
    """A run as the user names it: a path, or `ready:NAME`, a ready-trained run shipped with vqgen."""
    text = os.fspath(run)
    if not text.startswith(READY_PREFIX):
        check_path_text(text, "run")
        return Path(text)
    name = text[len(READY_PREFIX):]
    shipped = sorted(s.path.name for s in list_runs(READY_DIR) if s.usable)
    if name in shipped:
        return READY_DIR / name
    listed = ", ".join(READY_PREFIX + n for n in shipped) or "none in this install"
    raise UsageError(f"{text}: no such ready-trained run (vqgen ships: {listed})")


def ready_name(run: Path | str) -> str | None:
    """`ready:NAME` for a ready-trained run shipped with vqgen (its folder or a file in it); else None."""
    path = Path(os.fspath(run))
    path = path.parent if path.is_file() else path
    try:
        return READY_PREFIX + path.name if path.resolve().parent == READY_DIR.resolve() else None
    except OSError:
        return None


def is_ready(run: Path | str) -> bool:
    return ready_name(run) is not None


def run_label(run: Path | str) -> str:
    """How a run reads in a status line: `ready:NAME` for a shipped one, else its path."""
    return ready_name(run) or str(run)


def using(run: Path) -> str:
    """The status line of a command that picked `run` itself: which run, and for a ready-trained one, how
    to train your own."""
    name = ready_name(run)
    if name is None:
        return f"Using run {run}"
    spec = models.get(summarize(Path(run)).model)
    train = "vqgen train" + ("" if spec.name == models.DEFAULT_MODEL else f" --model {spec.name}")
    return f"Using the ready-trained {spec.display_name} {name}; train your own: {train}"


def which_epoch(ckpt: Checkpoint) -> str:
    """Which weights of a run a command uses, where they are not its latest: 'its best epoch, 2 of 4 (held-out
    MSE 0.00213); the latest is in model.safetensors'."""
    rows = []
    try:
        rows = read_metrics(ckpt.run_dir / METRICS, upto_epoch=ckpt.latest_epoch)
    except RunError:
        pass
    found = best_row(rows, ckpt.spec)
    row = next((r for r in rows if r.get("epoch") == ckpt.epoch), None)
    figure = f" (held-out {found[0].label} {found[0].format(row[f'test_{found[0].name}'])})" \
        if found is not None and row is not None and f"test_{found[0].name}" in row else ""
    return (f"its best epoch, {ckpt.epoch} of {ckpt.latest_epoch}{figure}; the latest epoch's weights are "
            f"{ckpt.run_dir / WEIGHTS}")


def output_dir(run_dir: Path) -> Path:
    """Where a command writes what it makes with a run by default: beside it, or, for a ready-trained run
    (read-only, inside the package), in runs/ready-trained/."""
    return READY_OUTPUTS if is_ready(run_dir) else Path(run_dir)


def read_card(run: Path) -> str | None:
    """The run's model card (MODEL_CARD.md beside its weights), or None."""
    p = run_dir_of(run) / MODEL_CARD
    try:
        return p.read_text(encoding="utf-8") if p.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def parent_reference(run_dir: Path) -> str:
    """How a run records its parent: `ready:NAME` for a shipped run (wherever vqgen is installed), else the
    absolute path."""
    return ready_name(run_dir) or str(Path(run_dir).resolve())


# --------------------------------------------------------------------------- metrics, latents, pictures


def write_metrics(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue(), make_folder=False)


def read_metrics(path: Path, upto_epoch: int | None = None) -> list[dict]:
    """Rows of `metrics.csv` (only those up to the committed epoch, if given)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error, OSError) as e:
        raise CheckpointError(f"{path}: damaged metrics file ({e.__class__.__name__}); "
                              "delete it to go on without the history") from None
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            if k is None:
                continue
            try:
                parsed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
            except (ValueError, AttributeError):
                parsed[k] = v
        if not isinstance(parsed.get("epoch"), int):
            raise CheckpointError(f"{path}: damaged metrics file (a row without an epoch number); "
                                  "delete it to go on without the history")
        out.append(parsed)
    if upto_epoch is not None:
        out = [r for r in out if r["epoch"] <= upto_epoch]
    return out


def save_latents(run_dir: Path, latents: torch.Tensor) -> None:
    _save_safetensors({"latents": latents.contiguous()}, Path(run_dir) / LATENTS)


def load_latents(run_dir: Path) -> torch.Tensor | None:
    """The training latents a run stored at its end, or None."""
    p = Path(run_dir) / LATENTS
    if not p.is_file():
        return None
    try:
        t = load_file(str(p))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{p}: damaged ({str(e).splitlines()[0][:60]}); "
                              "delete it and finish the run again with --resume") from None
    found = t.get("latents", t.get("mu"))   # vqgen 0.2 called them "mu"
    if found is None or found.dim() != 2:
        raise CheckpointError(f"{p}: not a latents file; delete it and finish the run again with --resume")
    return found


def picture_path(run_dir: Path, kind: str, epoch: int) -> Path:
    return Path(run_dir) / f"{kind}_epoch_{epoch:03d}.png"


def epoch_pictures(run_dir: Path) -> list[Path]:
    """The per-epoch pictures of a run, of its first kind that has any, in epoch order."""
    for kind in PICTURE_KINDS:
        found = sorted(Path(run_dir).glob(f"{kind}_epoch_*.png"))
        if found:
            return found
    return []


# --------------------------------------------------------------------------- scores


def scores_path(run_dir: Path) -> Path:
    """Where `vqgen score` keeps a run's scores: its scores.json, or, for a ready-trained run (read-only,
    inside the package), runs/ready-trained/NAME.scores.json."""
    name = ready_name(run_dir)
    return READY_OUTPUTS / f"{name[len(READY_PREFIX):]}.{SCORES}" if name else Path(run_dir) / SCORES


def _score_entries(p: Path) -> list[dict]:
    if not p.is_file():
        return []
    try:
        found = json.loads(p.read_text(encoding="utf-8"))
        entries = found["scores"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("not a list of entries")
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise CheckpointError(f"{p}: damaged ({e.__class__.__name__}); delete it and score the run again") from None
    return entries


def read_scores(run_dir: Path) -> list[dict]:
    """The score entries `vqgen score` kept for a run, oldest first (none where it has none); for a
    ready-trained run, those shipped with it, then those scored here."""
    shipped = _score_entries(Path(run_dir) / SCORES) if is_ready(run_dir) else []
    return shipped + _score_entries(scores_path(run_dir))


def write_scores(run_dir: Path, entries: list[dict]) -> None:
    """Replace a run's score entries (written under a temporary name and renamed); a ready-trained run's
    scored here go to `scores_path`, and those it shipped with stay as they are."""
    path = scores_path(run_dir)
    if is_ready(run_dir):
        shipped = _score_entries(Path(run_dir) / SCORES)
        entries = [e for e in entries if e not in shipped]
        path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"format": SCORES_FORMAT, "scores": entries}, indent=1) + "\n", make_folder=False)
