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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vqgen.config import check_train_flags
from vqgen.errors import UsageError
from vqgen.files import check_output_dir
from vqgen.settings import at_least, check_arg, positive

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from vqgen.data import ImageData
    from vqgen.runs import Checkpoint
    from vqgen.training import TrainResult

PathLike = str | os.PathLike
Log = Callable[[str], None]

MAX_STEPS = 1000          # frames of a morph
MAX_SAMPLES = 10_000      # images per sample call


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

    model: "vqvae" (default), "vae", "prior" or another registered model.
    dataset: "mnist", "anime-faces", a Hub id, or a local folder.
    config: a YAML file of settings; the keyword arguments win over it.
    settings: any other setting of the training or the model, e.g. `codebook_size=64`.
    resume: continue this run to `epochs` epochs in all (`device` may change; other settings may not).
    run: for a model that learns another's codes (the prior), that run (default: the latest).
    precision: "auto" (bf16 or fp16 on a GPU, fp32 elsewhere), "fp32", "bf16" or "fp16".
    compile: torch.compile the model.
    devices: train on this many GPUs (or CPU processes) through torchrun; `batch_size` is the global batch.
    """
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device, "seed": seed,
             "precision": precision, "compile": compile, **settings}
    check_train_flags({k: v for k, v in flags.items() if k in ("epochs", "batch_size", "lr", "device", "seed",
                                                               "precision", "compile")})
    if devices is not None:
        check_arg("devices", devices, at_least(1, 1024))
        from vqgen import distributed

        world = distributed.launched_world()
        if world == 1 and devices > 1:
            return _train_in_processes(devices, model, dataset, config, flags, out, name, resume, run,
                                       quiet=getattr(progress, "quiet", False))
        if world > 1 and devices != world:
            raise UsageError(f"`devices` {devices}: torchrun started {world} processes; drop `devices` under torchrun")
    if dataset is not None:
        check_train_flags({"dataset": dataset})
    if resume is None:
        check_output_dir(Path(out if out is not None else "runs"), "out")
    from vqgen import training

    return training.train(model, dataset, str(config) if config is not None else None, flags,
                          Path(out) if out is not None else None, name,
                          Path(resume) if resume is not None else None,
                          Path(run) if run is not None else None, progress)


FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "device": "--device", "seed": "--seed",
         "precision": "--precision"}


def _train_in_processes(devices: int, model, dataset, config, flags: dict, out, name, resume, run,
                        quiet: bool = False) -> "TrainResult":
    """`vqgen train` in `devices` processes through torchrun, as the command line would run it."""
    import tempfile

    import yaml

    from vqgen import distributed, runs
    from vqgen.config import read_yaml
    from vqgen.errors import RunError
    from vqgen.training import TrainResult

    argv = []
    for key, value in (("--model", model), ("--dataset", dataset), ("--out", out), ("--name", name),
                       ("--resume", resume), ("--run", run)):
        if value is not None:
            argv += [key, str(value)]
    rest = {k: v for k, v in flags.items() if v is not None and k not in FLAGS and k != "compile"}
    argv += [a for k, flag in FLAGS.items() if flags.get(k) is not None for a in (flag, str(flags[k]))]
    if flags.get("compile"):
        argv.append("--compile")
    if quiet:
        argv.append("--quiet")
    with tempfile.TemporaryDirectory() as tmp:
        if rest:   # settings without a flag go in a config file, over the one given
            if resume is not None:
                raise UsageError(f"`{next(iter(rest))}`: a resumed run keeps its settings; drop it")
            merged = {**(read_yaml(config) if config is not None else {}), **rest}
            config = Path(tmp) / "settings.yaml"
            config.write_text(yaml.safe_dump(merged))
        if config is not None:
            argv += ["--config", str(config)]
        done = distributed.launch(devices, argv)
    lines = [ln for ln in (done.stdout or "").splitlines() if ln.strip()]
    if done.returncode not in (0, 130) or not lines:
        raise RunError(f"training in {devices} processes failed (exit code {done.returncode}); "
                       "its messages are above")
    run_dir = Path(lines[-1])
    rows = runs.read_metrics(run_dir / runs.METRICS)
    return TrainResult(run_dir, rows[-1] if rows else {}, interrupted=done.returncode == 130)


# --------------------------------------------------------------------------- load


def load(path: PathLike, *, device: str = "cpu") -> "Model":
    """A trained model from a run directory, a `model.safetensors` file, or the result of `vqgen.train`."""
    from vqgen import runs

    return Model(runs.load_checkpoint(Path(os.fspath(path)), device))


def open_run(run: PathLike | None, operation: str | None, log: Log = _quiet, device: str = "cpu",
             runs_dir: PathLike = "runs") -> "Checkpoint":
    """`run`, or the newest run under ./runs whose model can do `operation` (saying which)."""
    from vqgen import models, runs

    accept = models.with_operation(operation) if operation else [models.get(n) for n in models.names()]
    if operation == "sample":   # models with codes sample through a model trained on them
        accept += [s for s in models.with_operation("codes") if s not in accept]
    if run is None:
        run = runs.find_latest_run(accept, Path(runs_dir))
        log(f"Using run {run}")
    return runs.load_checkpoint(Path(os.fspath(run)), device, accept=accept)


class Model:
    """A trained model: reconstruct, encode, decode, interpolate and sample, as its kind allows."""

    def __init__(self, checkpoint: "Checkpoint"):
        self.checkpoint = checkpoint
        self._data: ImageData | None = None
        self._sampler = None

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
    def device(self) -> "torch.device":
        return next(self.module.parameters()).device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images it makes."""
        info = self.checkpoint.info
        return int(info.get("channels", 1)), int(info.get("image_size", 28)), int(info.get("image_size", 28))

    def to(self, device: str) -> "Model":
        self.module.to(device)
        self._sampler = None
        return self

    def __repr__(self) -> str:
        ops = ", ".join(sorted(self.spec.operations)) or "none"
        return (f"<vqgen.Model {self.spec.display_name} from {self.checkpoint.path}, {self.checkpoint.epoch} "
                f"epochs on {self.config.train.dataset}; can: {ops}>")

    def _require(self, operation: str) -> None:
        if not self.spec.can(operation):
            raise UsageError(f"a {self.spec.display_name} cannot {operation}; it can: "
                             f"{', '.join(sorted(self.spec.operations)) or 'nothing of that kind'}")

    # ------------------------------------------------------------------ data

    def data(self, log: Log = _quiet) -> "ImageData":
        """The dataset it was trained on, decoded (through the cache), loaded once."""
        if self._data is None:
            from vqgen import generate

            self._data = generate.run_images(self.checkpoint, log)
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

    # ------------------------------------------------------------------ operations

    def reconstruct(self, images) -> "torch.Tensor":
        """Reconstructions (N, C, H, W) in [0, 1] of images."""
        from vqgen import generate

        self._require("reconstruct")
        return generate.reconstruct(self.module, self.images(images))

    def encode(self, images, space: str | None = None) -> "torch.Tensor":
        """Latents of images (for a VQ-VAE, `space="pre"` before quantisation or "post" after)."""
        from vqgen import data

        self._require("encode")
        self.module.eval().space(space)
        return data.map_batches(lambda x: self.module.encode(x, space), self.images(images), device=self.device)

    def decode(self, latents: "torch.Tensor", space: str | None = None) -> "torch.Tensor":
        """Images (N, C, H, W) in [0, 1] from latents as `encode` returns them."""
        from vqgen import data

        self._require("encode")
        self.module.eval().space(space)
        return data.map_batches(lambda z: self.module.decode(z, space), latents, device=self.device)

    def codes(self, images) -> "torch.Tensor":
        """Code grids (N, h, w) of images, for a model with a codebook."""
        from vqgen import data

        self._require("codes")
        self.module.eval()
        return data.map_batches(self.module.encode_indices, self.images(images), device=self.device)

    def endpoint(self, spec, log: Log = _quiet) -> "torch.Tensor":
        """One morph endpoint as (1, C, H, W): a class label ("4" or 4), "#INDEX" of a held-out image, an image
        file, or an image (tensor, PIL)."""
        from vqgen import generate

        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = str(spec)
        if isinstance(spec, (str, os.PathLike)) and not (isinstance(spec, str) and Path(spec).is_dir()):
            return generate.endpoint_image(os.fspath(spec), self.checkpoint, lambda: self.data(log))
        return self.images(spec)[:1]

    def interpolate(self, a, b, steps: int = 12, *, method: str = "lerp", space: str | None = None,
                    log: Log = _quiet) -> "torch.Tensor":
        """Frames (steps, C, H, W) in [0, 1] morphing a into b through the latent space.

        a, b: class labels ("4"), "#INDEX" into the held-out split, image files, or images.
        method: "lerp" or "slerp". space: for a VQ-VAE, "pre" (default) or "post" quantisation.
        """
        from vqgen import generate

        check_steps(steps)
        self._require("interpolate")
        self.module.space(space)   # before any data is loaded
        xa, xb = self.endpoint(a, log), self.endpoint(b, log)
        return generate.morph(self.module, xa, xb, steps, method, space)

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
        generate.check_sample_options(self.checkpoint, {**options, "digit": digit, "class_name": class_name})
        if self._sampler is None:
            self._sampler = generate.find_sampler(self.checkpoint, log)
        label = generate.class_label(self._sampler, digit, class_name)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return generate.sample(self._sampler, n, label=label, generator=generator, preview=preview, **options)

    @property
    def sample_classes(self) -> list[str] | None:
        """The classes `sample` draws in turn when no class is asked for (None: it does not sample by class)."""
        from vqgen import generate

        if self._sampler is None:
            self._sampler = generate.find_sampler(self.checkpoint)
        return self._sampler.class_names if getattr(self._sampler.checkpoint.model, "conditional", False) else None

    @property
    def sample_options(self) -> tuple[str, ...]:
        """The options `sample` takes for this model (e.g. temperature, top_k, guidance; sampler for a VAE)."""
        from vqgen import generate

        if self._sampler is None:
            self._sampler = generate.find_sampler(self.checkpoint)
        names = {"temperature", "top_k", "guidance", "sampler"}
        return tuple(o for o in self._sampler.spec.sample_options if o in names)

    def metrics(self) -> list[dict]:
        """The run's held-out figures, one dict per finished epoch (empty for a bare weights file)."""
        from vqgen import runs

        path = self.run_dir / runs.METRICS
        return runs.read_metrics(path, upto_epoch=self.checkpoint.epoch) if path.is_file() else []

    @property
    def sampler_run(self) -> Path:
        """The run that draws this model's samples (itself, or the prior of a VQ-VAE)."""
        from vqgen import generate

        if self._sampler is None:
            self._sampler = generate.find_sampler(self.checkpoint)
        return self._sampler.checkpoint.run_dir


# --------------------------------------------------------------------------- show


def show(images: "torch.Tensor | Sequence[torch.Tensor]", nrow: int | None = None) -> "Image.Image":
    """Images (N, C, H, W) in [0, 1] as one PIL image grid (small images scaled up); shows inline in Jupyter.

    nrow: images per row (default: all in one row up to 16, else a square).
    """
    import torch

    from vqgen import images as I

    x = torch.cat(list(images)) if isinstance(images, (list, tuple)) else images
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise UsageError(f"`images`: expected (N, C, H, W), not shape {tuple(x.shape)}")
    n = x.shape[0]
    nrow = nrow or (n if n <= 16 else math.ceil(math.sqrt(n)))
    return I.to_pil(I.grid_image(x, nrow=nrow))
