"""The Python API, for notebooks and scripts: train, load, make pictures.

    import vqgen
    run = vqgen.train(model="vqvae", dataset="mnist", epochs=3)   # the same run directory and progress as the CLI
    model = vqgen.load(run)                                  # a run directory, a .safetensors file, or that result
    frames = model.interpolate("4", "9", steps=12)           # tensor (12, C, H, W) in [0, 1]
    vqgen.show(frames)                                       # a PIL image; shows inline in Jupyter

Images go in as tensors (N, C, H, W) in [0, 1] (or uint8), PIL images, file
or folder paths, or lists of these, and come out as float tensors in [0, 1]
on the CPU. Errors are `vqgen.errors.UsageError` (a ValueError) for bad
arguments and `RunError` for failures, with messages that name the argument.

Importing this module is cheap: PyTorch and the rest load on first use.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vqgen.config import check_train_flags
from vqgen.errors import UsageError
from vqgen.files import check_output_dir
from vqgen.scoring import newest_scores
from vqgen.settings import at_least, check_arg, one_of, positive

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from vqgen import choosing, runs

    from vqgen.data import ImageData
    from vqgen.generate import Sampler
    from vqgen.runs import Checkpoint
    from vqgen.training import TrainResult

PathLike = str | os.PathLike
Log = Callable[[str], None]

MAX_STEPS = 1000          # frames of a morph
MAX_SAMPLES = 10_000      # images per sample call
MAX_MAP = 100_000         # held-out images placed on a latent map
MAX_SCORE = 50_000        # images scored per figure: the 50,000 of the FID literature
# Images scored by default. FID is biased upwards at small n (KID is not), so FIDs compare only at the same n,
# and each score reports beside it the same figure for two sets of real images of that size (how low it can
# go). 1,000 keeps a CPU's Inception pass to minutes and fits in every held-out split vqgen knows (MNIST's
# 10,000; anime faces' 5%, about 3,200), which then also holds the second set of the floor.
SCORE_N = 1_000


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- argument checks


def check_steps(steps: int) -> int:
    def check(v):
        if v < 2:
            return f"{v}: a morph needs at least 2 steps (start and end)"
        if v > MAX_STEPS:
            return f"{v}: at most {MAX_STEPS:,} frames; a longer morph would not fit in memory or a picture"
        return None
    return check_arg("steps", steps, check)


def check_map_size(n: int) -> int:
    return check_arg("n", n, at_least(10, MAX_MAP))


def check_scoring(n: int, seed: int = 0, device: str | None = None) -> None:
    from vqgen.config import DEVICES
    from vqgen.settings import one_of

    check_arg("n", n, at_least(10, MAX_SCORE))
    check_arg("seed", seed, at_least(0, 2**31 - 1))
    if device is not None:
        check_arg("device", device, one_of(*DEVICES))


def check_sampling(n: int, temperature: float | None, top_k: int | None, guidance: float | None,
                   seed: int | None = None) -> None:
    check_arg("n", n, at_least(1, MAX_SAMPLES))
    if seed is not None:
        check_arg("seed", seed, at_least(0, 2**63 - 1))
    if temperature is not None:
        check_arg("temperature", temperature, positive(100.0))
    if top_k is not None:
        check_arg("top_k", top_k, at_least(0, 1_000_000))
    if guidance is not None:
        check_arg("guidance", guidance, lambda v: None if math.isfinite(v) and 0 <= v <= 100 else
                  "must be 0 or more (1: none, 1.5: the default)" if not v >= 0 else f"must be a finite number up to 100, not {v}")


# --------------------------------------------------------------------------- train


def train(model: str | None = None, dataset: str | None = None, *, config: PathLike | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          device: str | None = None, seed: int | None = None, out: PathLike | None = None,
          name: str | None = None, resume: PathLike | None = None, run: PathLike | None = None,
          precision: str | None = None, compile: bool | None = None, devices: int | None = None,
          progress=None, **settings: Any) -> "TrainResult":
    """Train a model and return the run (its `.run_dir` and final `.metrics`; `vqgen.load(result)` loads it).

    model: "vqvae", "vqgan", "vae", "prior" or another registered model; by default the one the config file
    names (`model: vqgan`), else "vqvae". A config file that names another model than `model` is refused.
    dataset: "mnist", "anime-faces", a Hub id, or a local folder.
    config: a YAML file of settings; the keyword arguments win over it.
    settings: any other setting of the training or the model, e.g. `codebook_size=64`.
    resume: continue this run to `epochs` epochs in all (`device` may change; other settings may not).
    run: for a model that learns another's codes (the prior), that run (default: the latest).
    precision: "auto" (bf16 or fp16 on a GPU, fp32 elsewhere), "fp32", "bf16" or "fp16".
    compile: torch.compile the model.
    threads (a setting): CPU threads; 0 (default) takes the cores other programs leave free, looking again as
    it trains.
    devices: train on this many GPUs (or CPU processes) through torchrun; `batch_size` is the global batch.
    """
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device, "seed": seed,
             "precision": precision, "compile": compile, **settings}
    check_train_flags({k: v for k, v in flags.items() if k in ("epochs", "batch_size", "lr", "device", "seed",
                                                               "precision", "compile")})
    if devices is not None:
        check_arg("devices", devices, at_least(1, 1024))
    if dataset is not None:
        check_train_flags({"dataset": dataset})
    if resume is None:
        check_output_dir(Path(out if out is not None else "runs"), "out")
    plan = {"model": model, "dataset": dataset, "config_file": str(config) if config is not None else None,
            "flags": flags, "out": out, "name": name, "resume": resume, "parent_run": run}
    if devices is not None:
        from vqgen import distributed

        world = distributed.launched_world()
        if world == 1 and devices > 1:
            return _train_in_processes(devices, plan, quiet=progress.quiet if progress is not None else False)
        if world > 1 and devices != world:
            raise UsageError(f"`devices` {devices}: torchrun started {world} processes; drop `devices` under torchrun")
    return _train(plan, progress)


def _train(plan: dict, progress) -> "TrainResult":
    """Train as `plan` says: the arguments of `training.train`, as `train` checked them (paths may be strings)."""
    from vqgen import training

    paths = {k: Path(plan[k]) if plan[k] is not None else None for k in ("out", "resume", "parent_run")}
    return training.train(plan["model"], plan["dataset"], plan["config_file"], plan["flags"], paths["out"],
                          plan["name"], paths["resume"], paths["parent_run"], progress)


def _train_in_processes(devices: int, plan: dict, quiet: bool = False) -> "TrainResult":
    """`train` in `devices` processes through torchrun: each reads the plan from a file (`train_planned`), and
    the first writes what the run left to a file named in it."""
    import json
    import tempfile

    from vqgen import distributed
    from vqgen.errors import RunError
    from vqgen.interrupts import Interrupted
    from vqgen.training import TrainResult

    with tempfile.TemporaryDirectory() as tmp:
        plan_file, result_file = Path(tmp) / "plan.json", Path(tmp) / "result.json"
        plan = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in plan.items()}
        plan_file.write_text(json.dumps({"train": plan, "quiet": quiet, "result": str(result_file)}, default=_plain))
        code, stopped = distributed.launch(devices, plan_file)
        done = json.loads(result_file.read_text()) if result_file.is_file() else None
    if done is None or (code != 0 and not done["interrupted"]):
        if stopped:   # Ctrl-C, SIGTERM or SIGHUP passed on before the first process could say what it kept
            raise Interrupted(stopped)
        raise RunError(f"training in {devices} processes failed (exit code {code}); its messages are above")
    # (stopped, torchrun may fail where a scheduler signalled it too; the first process said what it kept)
    return TrainResult(Path(done["run_dir"]) if done["run_dir"] is not None else None, done["metrics"],
                       interrupted=done["interrupted"], summary=done["summary"], signal=done["signal"])


def _plain(value):
    """A setting as the plan file can hold it: a settings dataclass as its fields, a NumPy number as a number."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item") and callable(value.item):   # a NumPy or PyTorch scalar
        return value.item()
    raise UsageError(f"a setting of type {type(value).__name__} cannot be passed to the processes `devices` "
                     "starts; give it as a number, text, list or mapping")


def train_planned(plan_file: PathLike) -> "TrainResult":
    """One of the processes `train(devices=N)` starts under torchrun: it trains as the plan file says, and the
    first process writes the run's directory, metrics and state where the plan says, for the process that
    started them."""
    import json
    from contextlib import nullcontext

    from vqgen import distributed, interrupts
    from vqgen.files import atomic_write
    from vqgen.progress import TrainProgress
    from vqgen.training import TrainResult

    plan = json.loads(Path(plan_file).read_text())
    # Stop signals come from the process that started torchrun, once this one has announced itself; they are
    # held back until the processes decide together to stop (training.train).
    with interrupts.handled(), interrupts.polled() if distributed.launched_world() > 1 else nullcontext():
        distributed.announce(Path(plan_file).parent)
        try:
            result = _train(plan["train"], TrainProgress(quiet=plan["quiet"]))
        except KeyboardInterrupt as e:   # stopped before training began (every rank at the same point): no run
            result = TrainResult(None, interrupted=True, signal=interrupts.signal_of(e))
            if distributed.launched_rank() == 0:
                print(f"Interrupted{interrupts.by(result.signal)}", file=sys.stderr)
    if distributed.launched_rank() == 0:
        done = {"run_dir": str(result.run_dir) if result.run_dir is not None else None, "metrics": result.metrics,
                "interrupted": result.interrupted, "summary": result.summary, "signal": result.signal}
        atomic_write(Path(plan["result"]), lambda tmp: tmp.write_text(json.dumps(done)))
    return result


# --------------------------------------------------------------------------- load


def load(path: PathLike | None = None, *, device: str = "cpu", log: Log = _quiet) -> "Model":
    """A trained model from a run directory, a `model.safetensors` file, the result of `vqgen.train`, or
    `"ready:vqvae-mnist"` (a ready-trained model shipped with vqgen). None: the newest run under ./runs,
    else the ready-trained VQ-VAE, as the commands choose (`log` says which).

    A run directory gives its best epoch's weights (best.safetensors: by the held-out headline figure), as
    the commands use; `model.checkpoint.epoch` says which epoch, and a run's model.safetensors file its
    latest."""
    from vqgen import runs

    if path is None:
        return Model(open_run(None, None, log, device))
    return Model(runs.load_checkpoint(Path(os.fspath(path)), device))


def open_run(run: PathLike | None, operation: str | None, log: Log = _quiet, device: str = "cpu",
             runs_dir: PathLike = "runs", need: "choosing.Need | None" = None) -> "Checkpoint":
    """`run`, or the newest run under ./runs whose model can do `operation` (and that fits `need`: has the
    classes asked for, say), else the ready-trained one shipped with vqgen; saying which and why."""
    from vqgen import choosing, models, runs

    accept = models.with_operation(operation) if operation else [models.get(n) for n in models.names()]
    if operation == "score":   # not an operation: what the model declares `vqgen score` measures
        accept = [models.get(n) for n in models.names() if models.get(n).scored]
    if operation == "sample":   # models with codes sample through a model trained on them
        accept += [s for s in models.with_operation("codes") if s not in accept]
    if run is None:
        if need is None and operation:
            need = choosing.Need(f"that can {operation}")
        run, line = choosing.choose_run(accept, Path(runs_dir), need)
        ckpt = runs.load_checkpoint(Path(os.fspath(run)), device, accept=accept)
        log(line + (f": {runs.which_epoch(ckpt)}" if ckpt.is_earlier_best else ""))
        return ckpt
    ckpt = runs.load_checkpoint(Path(os.fspath(run)), device, accept=accept)
    if ckpt.is_earlier_best:   # say which weights of the run are used where they are not its latest
        log(f"Using {runs.run_label(ckpt.run_dir)}: {runs.which_epoch(ckpt)}")
    return ckpt


def class_endpoints(*specs) -> list[str]:
    """The endpoints of a morph that name a class ("4", "cat"), not "#INDEX" or an image file."""
    from vqgen.data import IMAGE_SUFFIXES

    found = []
    for spec in specs:
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = str(spec)
        if not isinstance(spec, str) or spec.startswith("#") or Path(spec).exists() \
                or Path(spec).suffix.lower() in IMAGE_SUFFIXES:   # "T-shirt/top" is a class name
            continue
        found += [spec] if spec not in found else []
    return found


def open_sampler(ckpt: "Checkpoint", log: Log = _quiet) -> tuple["Checkpoint", "Sampler"]:
    """The run that draws samples for `ckpt` and its `Sampler`: itself (with its parent run as decoder, for a
    model of codes), or the newest run beside it trained on its codes (saying which)."""
    from vqgen import choosing, generate, runs

    specs = generate.sampler_specs(ckpt.spec)
    device = next(ckpt.model.parameters()).device
    if ckpt.spec.can("sample"):
        parent = runs.load_parent(ckpt.config, device) if ckpt.spec.trains_on == "codes" else None
        return ckpt, _sampler(ckpt, parent)
    child_dir = choosing.find_child_run(ckpt, specs)
    log(f"Using {runs.describe_kinds(specs)} {runs.run_label(child_dir)}")
    child = runs.load_checkpoint(child_dir, device, accept=specs)
    runs.check_parent(child.config, ckpt)
    return child, _sampler(child, ckpt)


def _sampler(ckpt: "Checkpoint", decoder: "Checkpoint | None") -> "Sampler":
    from vqgen import generate, runs

    return generate.Sampler(ckpt.spec, ckpt.model, (decoder or ckpt).class_names,
                            decoder.model if decoder is not None else None,
                            latents=lambda: runs.load_latents(ckpt.run_dir), class_word=(decoder or ckpt).class_word)


def parse_endpoint(spec: str, class_names: list[str] | None) -> tuple[str, object]:
    """What an interpolation endpoint names: ("index", i), ("file", path) or ("class", k)."""
    from vqgen.data import IMAGE_SUFFIXES

    if spec.startswith("#"):
        try:
            return "index", int(spec[1:])
        except ValueError:
            raise UsageError(f"{spec!r}: after # comes a dataset index, such as #10") from None
    if Path(spec).is_file():
        return "file", Path(spec)
    if class_names and spec in class_names:
        return "class", class_names.index(spec)
    looks_like_file = Path(spec).suffix.lower() in IMAGE_SUFFIXES or "/" in spec
    if looks_like_file:
        raise UsageError(f"{spec}: no such image file")
    if class_names:
        from vqgen.generate import shown_classes

        numbered = class_names == [str(i) for i in range(len(class_names))]
        shown = f"{class_names[0]}-{class_names[-1]}" if numbered else shown_classes(class_names)
        raise UsageError(f"{spec!r}: the dataset has no such class (classes: {shown}); "
                         "or give #INDEX or an image file")
    raise UsageError(f"{spec!r}: this dataset has no class labels; give #INDEX into its held-out "
                     "images or an image file")


@dataclass
class LatentMap:
    """Held-out images placed in 2-D by the first two principal components of their latents."""
    images: "torch.Tensor"                 # (n, C, H, W) in [0, 1]
    labels: "torch.Tensor | None"          # their classes, where the dataset has labels
    coords: "torch.Tensor"                 # (n, 2)
    explained: tuple[float, float]         # the share of the latents' variance along each axis
    codes: "torch.Tensor | None" = None    # code grids (n, h, w), for a model with codes
    usage: "torch.Tensor | None" = None    # how many times each code is used in them


class Model:
    """A trained model: reconstruct, encode, decode, interpolate and sample, as its kind allows."""

    def __init__(self, checkpoint: "Checkpoint"):
        self.checkpoint = checkpoint
        self._data: ImageData | None = None
        self._draws_with = None

    # ------------------------------------------------------------------ what it is

    @property
    def kind(self) -> str:
        return self.checkpoint.kind

    @property
    def spec(self):
        return self.checkpoint.spec

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def module(self) -> "torch.nn.Module":
        """The PyTorch module itself."""
        return self.checkpoint.model

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.run_dir

    @property
    def class_names(self) -> list[str] | None:
        return self.checkpoint.class_names

    @property
    def class_word(self) -> str:
        """What its classes are called in titles: "digit" for MNIST's, else "class"."""
        return self.checkpoint.class_word

    @property
    def device(self) -> "torch.device":
        return next(self.module.parameters()).device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images it makes."""
        info = self.checkpoint.info
        return int(info.get("channels", 1)), int(info.get("image_size", 28)), int(info.get("image_size", 28))

    def to(self, device: str) -> "Model":
        self.module.to(device)
        self._draws_with = None
        return self

    def __repr__(self) -> str:
        from vqgen import runs

        ops = ", ".join(sorted(self.spec.operations)) or "none"
        ckpt = self.checkpoint
        epochs = f"epoch {ckpt.epoch} of {ckpt.latest_epoch} (its best)" if ckpt.is_earlier_best else \
            f"{ckpt.epoch} epochs"
        return (f"<vqgen.Model {self.spec.display_name} from {runs.run_label(ckpt.path)}, "
                f"{epochs} on {self.config.train.dataset}; can: {ops}>")

    def _require(self, operation: str) -> None:
        if not self.spec.can(operation):
            raise UsageError(f"a {self.spec.display_name} cannot {operation}; it can: "
                             f"{', '.join(sorted(self.spec.operations)) or 'nothing of that kind'}")

    # ------------------------------------------------------------------ data

    def data(self, log: Log = _quiet) -> "ImageData":
        """The dataset it was trained on, decoded (through the cache), loaded once."""
        if self._data is None:
            from vqgen import data

            if self.spec.trains_on != "images":
                raise UsageError(f"a {self.spec.display_name} run has no images of its own; pass the run it was "
                                 "trained on")
            self._data = data.load_run_images(self.config, log)
        return self._data

    def held_out(self, n: int = 8) -> "torch.Tensor":
        """The first n held-out images, (n, C, H, W) in [0, 1]."""
        check_arg("n", n, at_least(1, MAX_SAMPLES))
        return self.data().test_images[:n].float().div(255)

    def images(self, images) -> "torch.Tensor":
        """Any images (tensor, PIL, paths, lists) as this model's input: (N, C, H, W) in [0, 1]."""
        from vqgen import data

        c, size, _ = self.image_shape
        return data.to_images(images, size, c)

    def _batched(self, fn, x: "torch.Tensor", batch_size: int = 500) -> "torch.Tensor":
        """`fn` of the module in eval mode over x in batches on its device, without gradients; on the CPU."""
        from vqgen import data

        self.module.eval()
        return data.map_batches(fn, x, batch_size=batch_size, device=self.device)

    # ------------------------------------------------------------------ operations

    def reconstruct(self, images) -> "torch.Tensor":
        """Reconstructions (N, C, H, W) in [0, 1] of images."""
        self._require("reconstruct")
        return self._batched(self.module.reconstruct, self.images(images))

    def encode(self, images, space: str | None = None) -> "torch.Tensor":
        """Latents of images (for a VQ-VAE, `space="pre"` before quantisation or "post" after)."""
        self._require("encode")
        self.module.space(space)
        return self._batched(lambda x: self.module.encode(x, space), self.images(images))

    def decode(self, latents: "torch.Tensor", space: str | None = None) -> "torch.Tensor":
        """Images (N, C, H, W) in [0, 1] from latents as `encode` returns them."""
        self._require("encode")
        self.module.space(space)
        return self._batched(lambda z: self.module.decode(z, space), latents)

    def codes(self, images) -> "torch.Tensor":
        """Code grids (N, h, w) of images, for a model with a codebook."""
        self._require("codes")
        return self._batched(self.module.encode_indices, self.images(images))

    def endpoint(self, spec, log: Log = _quiet) -> "torch.Tensor":
        """One morph endpoint as (1, C, H, W): a class label ("4" or 4), "#INDEX" of a held-out image, an image
        file, or an image (tensor, PIL). The dataset is loaded only for a label or an index."""
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = str(spec)
        if not isinstance(spec, (str, os.PathLike)) or (isinstance(spec, str) and Path(spec).is_dir()):
            return self.images(spec)[:1]
        spec = os.fspath(spec)
        kind, value = parse_endpoint(spec, self.class_names)
        if kind == "file":
            from vqgen import data

            mc = self.config.model_config
            return data.load_image_file(value, mc.image_size, mc.channels)
        held_out = self.data(log)
        images, labels = held_out.test_images, held_out.test_labels
        if kind == "index":
            if not 0 <= value < len(images):
                raise UsageError(f"{spec}: index out of range; the held-out split has {len(images)} images "
                                 f"(#0-#{len(images) - 1})")
            return images[value:value + 1].float().div(255)
        hits = (labels == value).nonzero().flatten() if labels is not None else []
        if len(hits) == 0:
            raise UsageError(f"{spec!r}: no held-out image has that class")
        i = int(hits[0])
        return images[i:i + 1].float().div(255)

    def interpolate(self, a, b, steps: int = 12, *, method: str = "lerp", space: str | None = None,
                    log: Log = _quiet) -> "torch.Tensor":
        """Frames (steps, C, H, W) in [0, 1] morphing a into b through the latent space.

        a, b: class labels ("4"), "#INDEX" into the held-out split, image files, or images.
        method: "lerp" or "slerp". space: for a VQ-VAE, "pre" (default) or "post" quantisation.
        """
        from vqgen import generate

        check_steps(steps)
        self._require("interpolate")
        space = self.module.space(space)   # before any data is loaded
        xa, xb = self.endpoint(a, log), self.endpoint(b, log)
        latents = generate.morph_latents(self.module, xa, xb, steps, method, space)
        return self._batched(lambda z: self.module.decode(z, space), latents, batch_size=256)

    def latent_map(self, n: int = 2000, log: Log = _quiet) -> LatentMap:
        """The first n held-out images in 2-D (the PCA of their latents); for a model with codes, their code
        grids and how often each code is used."""
        import torch

        from vqgen import generate

        check_map_size(n)
        self._require("encode")
        held_out = self.data(log)
        x = held_out.test_images[:n].float().div(255)
        labels = held_out.test_labels[:n] if held_out.test_labels is not None else None
        coords, explained = generate.principal_components(self.encode(x))
        found = LatentMap(x, labels, coords, explained)
        if self.spec.can("codes"):
            found.codes = self.codes(x)
            found.usage = torch.bincount(found.codes.flatten(), minlength=self.module.codebook_size)
        return found

    def _sampling(self, log: Log = _quiet) -> tuple["Checkpoint", "Sampler"]:
        if self._draws_with is None:
            self._draws_with = open_sampler(self.checkpoint, log)
        return self._draws_with

    def sample(self, n: int = 16, *, digit: int | None = None, class_name: str | None = None,
               temperature: float | None = None, top_k: int | None = None, guidance: float | None = None,
               sampler: str | None = None, seed: int | None = None, log: Log = _quiet,
               preview: "Callable[[torch.Tensor, float], None] | None" = None) -> "torch.Tensor":
        """n new images (n, C, H, W) in [0, 1].

        A VAE draws z ~ N(0, T^2 I) (`sampler="prior"`) or mixes of training latents ("mix"). A VQ-VAE
        samples through the newest prior trained on its codes: `digit` or `class_name` picks a class
        (default: every class in turn), with `temperature` (0.7), `top_k` and `guidance` (1.5).
        `seed` makes the draw repeatable. `preview(images, done)`, for a sampler that draws one code
        at a time, receives the images so far about twice a second (rows not yet drawn are grey).
        """
        import torch

        from vqgen import generate

        check_sampling(n, temperature, top_k, guidance, seed)
        options = {"temperature": temperature, "top_k": top_k, "guidance": guidance, "sampler": sampler}
        generate.check_sample_options(self.spec, {**options, "digit": digit, "class_name": class_name})
        _, source = self._sampling(log)
        label = generate.class_label(source, digit, class_name)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return generate.sample(source, n, label=label, generator=generator, preview=preview, **options)

    @property
    def sample_classes(self) -> list[str] | None:
        """The classes `sample` draws in turn when no class is asked for (None: it does not sample by class)."""
        _, source = self._sampling()
        return source.class_names if source.model.conditional else None

    @property
    def sample_class_word(self) -> str:
        """What the classes `sample` draws are called in titles: "digit" for MNIST's, else "class"."""
        return self._sampling()[1].class_word

    @property
    def sample_options(self) -> tuple[str, ...]:
        """The options `sample` takes for this model (e.g. temperature, top_k, guidance; sampler for a VAE)."""
        names = {"temperature", "top_k", "guidance", "sampler"}
        return tuple(o for o in self._sampling()[1].spec.sample_options if o in names)

    @property
    def sample_defaults(self) -> dict:
        """Where the options of `sample_options` start: the sampler's own defaults (the demo's sliders)."""
        source = self._sampling()[1]
        spec = source.spec
        return {k: v for k, v in {**spec.sampling_defaults(source.model), **spec.sample_starts}.items()
                if k in self.sample_options}

    def metrics(self) -> list[dict]:
        """The run's held-out figures, one dict per finished epoch (empty for a bare weights file)."""
        from vqgen import runs

        path = self.run_dir / runs.METRICS
        return runs.read_metrics(path, upto_epoch=self.checkpoint.run_epoch) if path.is_file() else []

    @property
    def sampler_run(self) -> Path:
        """The run that draws this model's samples (itself, or the prior of a VQ-VAE)."""
        return self._sampling()[0].run_dir

    # ------------------------------------------------------------------ scores

    def score(self, n: int = SCORE_N, *, again: bool = False, device: str | None = None, seed: int = 0,
              sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
              guidance: float | None = None, network: str | None = None, log: Log = _quiet,
              progress=None) -> dict:
        """Score the run as its model declares (`spec.scored`) and keep the figures in its scores.json.

        Reconstructions of n real images: PSNR, SSIM and rFID. n samples: gFID and KID and, for a sampler
        of digits by class, the share the digit reader reads as the digit asked, overall and per class.
        Against n real images of the held-out split (of the training split where the held-out one has
        fewer). Beside each figure, `real`: the same figure for two sets of real images of that size (FID,
        KID: how low it can go) or for the real images themselves (the share read as their label).
        FID and KID use the Inception network (the `score` extra); on 28x28 digits the digit reader gives
        a second FID and the share read as asked. Settings scored before (n, split, seed, the run's epoch,
        the sampler's options) are read back from scores.json, not computed again, unless `again`.
        The samples of a VQ-VAE are drawn, and kept, by the prior trained on its codes.

        `network`: "inception" or "digits" alone (default: each that fits the data).
        `sampler`, `temperature`, `top_k`, `guidance`: the samples' options, as `sample` takes them (the
        sampler's own defaults otherwise); each set of options is scored and kept on its own.
        Returns {"run", "n", "split", "scores": [entries as scores.json keeps them], "notes": [lines]}.
        `seed`: of the samples and of KID's subsets. `device`: where to score ("auto": a GPU if there is
        one); the model stays there. `progress`: a `vqgen.progress.TrainProgress` (default: bars with
        images/s on a terminal).
        """
        check_scoring(n, seed, device)
        if network is not None:
            check_arg("network", network, one_of("inception", "digits"))
        if not self.spec.scored:
            raise UsageError(f"a {self.spec.display_name} declares nothing to score (its ModelSpec's `scores`)")
        options = {k: v for k, v in {"sampler": sampler, "temperature": temperature, "top_k": top_k,
                                     "guidance": guidance}.items() if v is not None}
        if options:   # options of the samples, as `sample` takes them
            from vqgen import generate

            check_sampling(1, temperature, top_k, guidance, seed)
            generate.check_sample_options(self.spec, options)
        from vqgen import scoring

        return scoring.score(self, n, again=again, device=device, seed=seed, given=options, network=network,
                             log=log, progress=progress)

    def scores(self) -> list[dict]:
        """The newest scores kept in the run's scores.json, one entry per kind and network (see `score`)."""
        from vqgen import runs

        return newest_scores(runs.read_scores(self.run_dir))

    def _image_model(self, log: Log = _quiet) -> "Model":
        """The model whose dataset this one's images are scored against: itself, or its parent run for a
        model trained on another's codes."""
        if self.spec.trains_on == "images":
            return self
        from vqgen import runs

        return Model(runs.load_parent(self.config, self.device))

    def _reconstructions(self, x: "torch.Tensor", progress) -> tuple["torch.Tensor", dict, list[str]]:
        """Reconstructions of x as uint8 images, and their PSNR and SSIM against x (as images: in [0, 1])."""
        import torch

        from vqgen import data
        from vqgen.metrics import psnr
        from vqgen.scoring import SSIM_MISSING, ssim_function

        self._require("reconstruct")
        ssim = ssim_function()
        sums = {"se": 0.0, "ssim": 0.0}

        def one(batch):
            r = self.module.reconstruct(batch).clamp(0, 1)
            sums["se"] += float(((r - batch) ** 2).sum())
            if ssim is not None:
                sums["ssim"] += float(ssim(r.float(), batch.float(), data_range=1.0)) * len(batch)
            return r.mul(255).round().to(torch.uint8)

        self.module.eval()
        out = data.map_batches(one, x, batch_size=250, device=self.device, progress=progress.counter("reconstructing"))
        figures = {"psnr": psnr(sums["se"] / x[0].numel() / len(x))}
        if ssim is not None:
            figures["ssim"] = sums["ssim"] / len(x)
        return out, figures, ([] if ssim is not None else [SSIM_MISSING])

    def _samples(self, n: int, seed: int, progress, options: dict) -> tuple["torch.Tensor", dict, list[str]]:
        """n samples as uint8 images, drawn in chunks (each class in turn, for a sampler by class)."""
        import torch

        _, source = self._sampling()
        classes = source.model.num_classes if source.model.conditional else 1
        chunk = max(1, (1000 if self.device.type == "cuda" else 250) // classes) * classes   # a bar that moves
        bar = progress.counter("sampling")
        out = []
        for i, start in enumerate(range(0, n, chunk)):
            size = min(chunk, n - start)
            out.append(self.sample(size, seed=seed + i, **options).clamp(0, 1).mul(255).round().to(torch.uint8))
            if bar is not None:
                bar(start + size, n)
        return torch.cat(out), {}, []


# --------------------------------------------------------------------------- show


def show(images: "torch.Tensor | Sequence[torch.Tensor]", nrow: int | None = None) -> "Image.Image":
    """Images (N, C, H, W) in [0, 1] as one PIL image grid (small images scaled up); shows inline in Jupyter.

    nrow: images per row (default: a square-ish grid, ceil(sqrt(N)) per row).
    """
    import torch

    from vqgen import images as I

    x = torch.cat(list(images)) if isinstance(images, (list, tuple)) else images
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise UsageError(f"`images`: expected (N, C, H, W), not shape {tuple(x.shape)}")
    n = x.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    return I.to_pil(I.grid_image(x, nrow=nrow))
