"""What a trained model makes: reconstructions, morphs and samples.

Plain functions over loaded checkpoints and tensors. No model is named here:
a morph goes through the autoencoder contract (`encode`/`decode` in a latent
space), and sampling is routed by what each registered model can do:

- a model that samples on its own (a VAE) draws images;
- a model trained on another's codes (a prior) draws code grids, which its
  parent decodes;
- a model with codes but no sampler of its own (a VQ-VAE) samples through
  the newest such model trained on its codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from vqgen import data as D
from vqgen import models, runs
from vqgen.errors import UsageError
from vqgen.files import slug

Log = Callable[[str], None]


def run_images(ckpt: runs.Checkpoint, log: Log = lambda s: None) -> D.ImageData:
    """The dataset a model was trained on, from the cache (decoded again if need be)."""
    if ckpt.spec.trains_on != "images":
        raise UsageError(f"a {ckpt.spec.display_name} run has no images of its own; pass the run it was trained on")
    return D.load_run_images(ckpt.config, log)


# --------------------------------------------------------------------------- endpoints


def parse_endpoint(spec: str, class_names: list[str] | None) -> tuple[str, object]:
    """What an interpolation endpoint names: ("index", i), ("file", path) or ("class", k)."""
    if spec.startswith("#"):
        try:
            return "index", int(spec[1:])
        except ValueError:
            raise UsageError(f"{spec!r}: after # comes a dataset index, such as #10") from None
    if Path(spec).is_file():
        return "file", Path(spec)
    if class_names and spec in class_names:
        return "class", class_names.index(spec)
    looks_like_file = Path(spec).suffix.lower() in D.IMAGE_SUFFIXES or "/" in spec
    if looks_like_file:
        raise UsageError(f"{spec}: no such image file")
    if class_names:
        numbered = class_names == [str(i) for i in range(len(class_names))]
        shown = f"{class_names[0]}-{class_names[-1]}" if numbered or len(class_names) > 12 else ", ".join(class_names)
        raise UsageError(f"{spec!r}: the dataset has no such class (classes: {shown}); "
                         "or give #INDEX or an image file")
    raise UsageError(f"{spec!r}: this dataset has no class labels; give #INDEX into its held-out "
                     "images or an image file")


def endpoint_image(spec: str, ckpt: runs.Checkpoint, data_loader: Callable[[], D.ImageData]) -> torch.Tensor:
    """One endpoint as a (1, C, H, W) image in [0, 1]; `data_loader` is called only if the dataset is needed."""
    kind, value = parse_endpoint(spec, ckpt.class_names)
    mc = ckpt.config.model_config
    if kind == "file":
        return D.load_image_file(value, mc.image_size, mc.channels)
    data = data_loader()
    images, labels = data.test_images, data.test_labels
    if kind == "index":
        if not 0 <= value < len(images):
            raise UsageError(f"{spec}: index out of range; the held-out split has {len(images)} images "
                             f"(#0-#{len(images) - 1})")
        return images[value:value + 1].float().div(255)
    hits = (labels == value).nonzero().flatten() if labels is not None else torch.zeros(0)
    if len(hits) == 0:
        raise UsageError(f"{spec!r}: no held-out image has that class")
    i = int(hits[0])
    return images[i:i + 1].float().div(255)


def endpoint_name(spec: str) -> str:
    """An endpoint as it reads in a file name: '4', '10' for '#10', 'a' for 'a.png'."""
    p = Path(spec)
    return slug(p.stem if p.suffix else spec.lstrip("#"))


# --------------------------------------------------------------------------- morphs


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of flattened vectors (falls back to lerp when parallel)."""
    af, bf = a.flatten(), b.flatten()
    cos = torch.dot(af, bf) / (af.norm() * bf.norm() + 1e-12)
    omega = torch.acos(cos.clamp(-1, 1))
    if omega.abs() < 1e-4:
        return torch.lerp(a, b, t)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolate_latents(za: torch.Tensor, zb: torch.Tensor, steps: int, method: str = "lerp") -> torch.Tensor:
    """`steps` latents from za to zb inclusive, stacked on a new first axis."""
    ts = torch.linspace(0, 1, steps).tolist()
    if method == "slerp":
        return torch.cat([slerp(za, zb, t) for t in ts])
    return torch.cat([torch.lerp(za, zb, t) for t in ts])


@torch.no_grad()
def morph(model: models.Autoencoder, xa: torch.Tensor, xb: torch.Tensor, steps: int, method: str = "lerp",
          space: str | None = None, batch_size: int = 256) -> torch.Tensor:
    """Frames (steps, C, H, W) of the morph from image xa to image xb, through the model's latent `space`.

    Frames are decoded in batches, so memory stays bounded however many are asked for.
    """
    if method not in ("lerp", "slerp"):
        raise UsageError(f"`method` {method}: use lerp or slerp")
    model.eval()
    space = model.space(space)
    device = next(model.parameters()).device
    za, zb = model.encode(xa.to(device), space), model.encode(xb.to(device), space)
    latents = interpolate_latents(za, zb, steps, method)
    return D.map_batches(lambda z: model.decode(z, space), latents, batch_size=batch_size, device=device)


@torch.no_grad()
def reconstruct(model: models.Autoencoder, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    return D.map_batches(model.reconstruct, x, batch_size=batch_size, device=next(model.parameters()).device)


# --------------------------------------------------------------------------- sampling


LABEL_OPTIONS = ("digit", "class_name")   # the names a caller gives a class by; a sampler's "labels" option


def _shown_options(spec: models.ModelSpec) -> str:
    names = [n for o in spec.sample_options for n in (LABEL_OPTIONS if o == "labels" else (o,))]
    return ", ".join(f"`{n}`" for n in names)


def sampler_specs(ckpt: runs.Checkpoint) -> list[models.ModelSpec]:
    """The models that can draw samples for this run: its own, or those trained on its codes."""
    spec = ckpt.spec
    if spec.can("sample"):
        return [spec]
    if spec.can("codes"):
        found = [s for s in models.with_operation("sample") if s.trains_on == "codes"]
        if found:
            return found
    raise UsageError(f"a {spec.display_name} cannot make new images; pass `run` with a model that samples")


@dataclass
class Sampler:
    """A model that draws samples, and the model that decodes what it draws (if it draws codes)."""
    checkpoint: runs.Checkpoint
    decoder: runs.Checkpoint | None = None

    @property
    def spec(self) -> models.ModelSpec:
        return self.checkpoint.spec

    @property
    def class_names(self) -> list[str] | None:
        return (self.decoder or self.checkpoint).class_names


def check_sample_options(ckpt: runs.Checkpoint, options: dict) -> None:
    """Refuse options that no sampler of this run takes, before any sampler is looked for."""
    specs = sampler_specs(ckpt)
    takes = {o for s in specs for o in s.sample_options}
    given = [k for k, v in options.items() if v is not None]
    wrong = [k for k in given if (k in LABEL_OPTIONS and "labels" not in takes)
             or (k not in LABEL_OPTIONS and k not in takes)]
    if not wrong:
        return
    spec = specs[0]
    how = (f"a {spec.display_name} samples with {_shown_options(spec)}" if spec is ckpt.spec else
           f"a {ckpt.spec.display_name} samples through its {spec.display_name}, with {_shown_options(spec)}")
    elsewhere = [s for s in models.names() if any(k in models.get(s).sample_options for k in wrong)]
    if elsewhere:
        where = models.display_names([models.get(s) for s in elsewhere])
        raise UsageError(f"{'/'.join(f'`{k}`' for k in wrong)} {'is' if len(wrong) == 1 else 'are'} for "
                         f"{where} runs; {how}")
    raise UsageError(f"{'/'.join(f'`{k}`' for k in wrong)} need a model that samples by class; {how}")


def find_sampler(ckpt: runs.Checkpoint, log: Log = lambda s: None) -> Sampler:
    """The model that draws samples for this run (see the module's docstring)."""
    specs = sampler_specs(ckpt)
    if ckpt.spec.can("sample"):
        if ckpt.spec.trains_on == "codes":
            return Sampler(ckpt, runs.load_parent(ckpt.config, next(ckpt.model.parameters()).device))
        return Sampler(ckpt)
    child_dir = runs.find_child_run(ckpt, specs)
    log(f"Using {runs.describe_kinds(specs)} {child_dir}")
    child = runs.load_checkpoint(child_dir, next(ckpt.model.parameters()).device, accept=specs)
    runs.check_parent(child.config, ckpt)
    return Sampler(child, ckpt)


def class_label(source: Sampler, digit: int | None, class_name: str | None) -> int | None:
    """The class index asked for by digit or by name, or None."""
    if digit is None and class_name is None:
        return None
    if digit is not None and class_name is not None:
        raise UsageError("give `digit` or `class_name`, not both")
    if not getattr(source.checkpoint.model, "conditional", False):
        raise UsageError(f"this {source.spec.display_name} is unconditional (its dataset has no labels): "
                         "drop `digit`/`class_name`")
    names = source.class_names or []
    want, param = (str(digit), "digit") if digit is not None else (class_name, "class_name")
    if want not in names:
        raise UsageError(f"`{param}` {want}: the dataset's classes are {', '.join(names) or 'none'}")
    return names.index(want)


Preview = Callable[[torch.Tensor, float], None]


def _previewer(decoder: torch.nn.Module, preview: Preview, every: float) -> Callable[[int, torch.Tensor], None]:
    """An `on_code` hook that decodes the grids drawn so far, at most every `every` seconds."""
    last = time.monotonic()

    def on_code(done: int, grids: torch.Tensor) -> None:
        nonlocal last
        g = grids.shape[-1]
        if done == g * g or time.monotonic() - last < every:
            return
        images = decoder.decode_indices(grids.to(next(decoder.parameters()).device)).cpu()
        rows = done // g   # whole rows of codes drawn; the rest shown grey
        images[..., rows * images.shape[-2] // g:, :] = 0.5
        preview(images, done / (g * g))
        last = time.monotonic()

    return on_code


@torch.no_grad()
def sample(source: Sampler, n: int, *, label: int | None = None, generator: torch.Generator | None = None,
           preview: Preview | None = None, preview_every: float = 0.5, **options) -> torch.Tensor:
    """n new images (n, C, H, W) in [0, 1] from `source`; `options` as its spec lists them.

    A model that samples by class draws `label`, or every class in turn when it is None.
    `preview(images, done)`, where sampling goes one code at a time, is called at most every
    `preview_every` seconds with the images so far (rows not yet drawn grey) and the share done.
    """
    spec, model = source.spec, source.checkpoint.model
    model.eval()
    kwargs = {**spec.sample_defaults, **{k: v for k, v in options.items() if v is not None}}
    if "labels" in spec.sample_options:
        if getattr(model, "conditional", False):
            device = next(model.parameters()).device
            kwargs["labels"] = (torch.arange(n, device=device) % model.num_classes if label is None
                                else torch.full((n,), label, dtype=torch.long, device=device))
    if spec.keeps_latents:
        kwargs["latents"] = lambda: runs.load_latents(source.checkpoint.run_dir)
    if preview is not None and source.decoder is not None:
        kwargs["on_code"] = _previewer(source.decoder.model, preview, preview_every)
    out = model.sample(n, generator=generator, **kwargs)
    if source.decoder is not None:
        decoder = source.decoder.model
        out = decoder.decode_indices(out.to(next(decoder.parameters()).device))
    return out.cpu()
