"""Inference over tensors: the latents of a morph, and samples.

Plain functions over loaded models and tensors: nothing here reads a file,
loads a dataset or looks for a run (the API's `Model` does, and hands the
tensors down). No model is named here: a morph goes through the autoencoder
contract (`encode` in a latent space), and sampling is routed by what each
registered model can do:

- a model that samples on its own (a VAE) draws images;
- a model trained on another's codes (a prior) draws code grids, which its
  parent decodes;
- a model with codes but no sampler of its own (a VQ-VAE) samples through
  the newest such model trained on its codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from vqgen import models
from vqgen.errors import UsageError


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
def morph_latents(model: models.Autoencoder, xa: torch.Tensor, xb: torch.Tensor, steps: int, method: str = "lerp",
                  space: str | None = None) -> torch.Tensor:
    """The latents of the `steps` frames of the morph from image xa to image xb, in the model's latent `space`,
    on the model's device; `model.decode(z, space)` makes the frames."""
    if method not in ("lerp", "slerp"):
        raise UsageError(f"`method` {method}: use lerp or slerp")
    model.eval()
    space = model.space(space)
    device = next(model.parameters()).device
    za, zb = model.encode(xa.to(device), space), model.encode(xb.to(device), space)
    return interpolate_latents(za, zb, steps, method)


# --------------------------------------------------------------------------- latent maps


def principal_components(z: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """Latents (N, ...) on their first two principal components, (N, 2), and the share of their variance
    along each."""
    flat = z.flatten(1).double()
    centred = flat - flat.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    var = (s ** 2) / (s ** 2).sum()
    return (centred @ v[:2].T).float(), (float(var[0]), float(var[1]) if len(var) > 1 else 0.0)


# --------------------------------------------------------------------------- sampling


LABEL_OPTIONS = ("digit", "class_name")   # the names a caller gives a class by; a sampler's "labels" option


def _shown_options(spec: models.ModelSpec) -> str:
    names = [n for o in spec.sample_options for n in (LABEL_OPTIONS if o == "labels" else (o,))]
    return ", ".join(f"`{n}`" for n in names)


def sampler_specs(spec: models.ModelSpec) -> list[models.ModelSpec]:
    """The models that can draw samples for a run of `spec`: its own, or those trained on its codes."""
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
    spec: models.ModelSpec
    model: models.Model
    class_names: list[str] | None = None            # the classes of the images it makes
    decoder: models.CodeModel | None = None
    latents: Callable[[], torch.Tensor | None] | None = None   # its training latents, for a model that keeps them
    class_word: str = "class"                       # what a class is called in titles: "digit" (MNIST) or "class"


def check_sample_options(spec: models.ModelSpec, options: dict) -> None:
    """Refuse options that no sampler of a run of `spec` takes, before any sampler is looked for."""
    specs = sampler_specs(spec)
    takes = {o for s in specs for o in s.sample_options}
    given = [k for k, v in options.items() if v is not None]
    wrong = [k for k in given if (k in LABEL_OPTIONS and "labels" not in takes)
             or (k not in LABEL_OPTIONS and k not in takes)]
    if not wrong:
        return
    drawer = specs[0]
    how = (f"a {drawer.display_name} samples with {_shown_options(drawer)}" if drawer is spec else
           f"a {spec.display_name} samples through its {drawer.display_name}, with {_shown_options(drawer)}")
    elsewhere = [s for s in models.names() if any(k in models.get(s).sample_options for k in wrong)]
    if elsewhere:
        where = models.display_names([models.get(s) for s in elsewhere])
        raise UsageError(f"{'/'.join(f'`{k}`' for k in wrong)} {'is' if len(wrong) == 1 else 'are'} for "
                         f"{where} runs; {how}")
    raise UsageError(f"{' and '.join(f'`{k}`' for k in wrong)} {'needs' if len(wrong) == 1 else 'need'} a model "
                     f"that samples by class; {how}")


def class_label(source: Sampler, digit: int | None, class_name: str | None) -> int | None:
    """The class index asked for by digit or by name, or None."""
    if digit is None and class_name is None:
        return None
    if digit is not None and class_name is not None:
        raise UsageError("give `digit` or `class_name`, not both")
    if not source.model.conditional:
        raise UsageError(f"this {source.spec.display_name} is unconditional (its dataset has no labels): "
                         "drop `digit`/`class_name`")
    names = source.class_names or []
    want, param = (str(digit), "digit") if digit is not None else (class_name, "class_name")
    if want in names:
        return names.index(want)
    if param == "digit" and names and not all(n.isdigit() for n in names):
        raise UsageError(f"`digit` {digit}: this dataset's classes have names, not numbers; give one with "
                         f"`class_name`: {shown_classes(names)}")
    raise UsageError(f"`{param}` {want}: the dataset's classes are {shown_classes(names) or 'none'}")


def shown_classes(names: list[str], most: int = 12) -> str:
    """A dataset's class names in a message: all of them, or the first and the last of many."""
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:most - 2]) + f", ..., {names[-1]} ({len(names)} classes)"


Preview = Callable[[torch.Tensor, float], None]


def _previewer(decoder: models.CodeModel, preview: Preview, every: float) -> Callable[[int, torch.Tensor], None]:
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
    spec, model, decoder = source.spec, source.model, source.decoder
    model.eval()
    kwargs = {**spec.sampling_defaults(model), **{k: v for k, v in options.items() if v is not None}}
    if "labels" in spec.sample_options and model.conditional:
        device = next(model.parameters()).device
        kwargs["labels"] = (torch.arange(n, device=device) % model.num_classes if label is None
                            else torch.full((n,), label, dtype=torch.long, device=device))
    if spec.keeps_latents:
        kwargs["latents"] = source.latents
    if preview is not None and decoder is not None:
        kwargs["on_code"] = _previewer(decoder, preview, preview_every)
    out = model.sample(n, generator=generator, **kwargs)
    if decoder is not None:
        out = decoder.decode_indices(out.to(next(decoder.parameters()).device))
    return out.cpu()
