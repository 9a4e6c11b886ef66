"""What a trained model makes: reconstructions, morphs and samples.

Plain functions over a loaded checkpoint and tensors; the CLI only parses
arguments, calls these and saves the pictures.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from vqgen import data as D
from vqgen import runs
from vqgen.errors import UsageError


def config_data(cfg, log=lambda s: None) -> D.ImageData:
    """The images a run's config trains on, at its model's shape, through the cache."""
    mc = cfg.model_config
    return D.load_images(cfg.train.dataset, mc.image_size, mc.channels, log)


def run_data(ckpt: runs.Checkpoint, log=lambda s: None) -> D.ImageData:
    """The dataset a model was trained on, from the cache (decoded again if need be)."""
    if ckpt.config.model == "prior":
        raise UsageError("a prior run has no images of its own; pass its VQ-VAE run")
    return config_data(ckpt.config, log)


def image_shape(ckpt: runs.Checkpoint) -> tuple[int, int]:
    mc = ckpt.config.model_config
    return mc.image_size, mc.channels


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


def endpoint_image(spec: str, ckpt: runs.Checkpoint, data_loader) -> torch.Tensor:
    """One endpoint as a (1, C, H, W) image in [0, 1].

    `data_loader` is called only when the endpoint needs the dataset.
    """
    class_names = ckpt.info.get("class_names")
    kind, value = parse_endpoint(spec, class_names)
    size, channels = image_shape(ckpt)
    if kind == "file":
        return D.load_image_file(value, size, channels)
    data = data_loader()
    images, labels = data.test_images, data.test_labels
    if kind == "index":
        if not 0 <= value < len(images):
            raise UsageError(f"{spec}: index out of range; the held-out split has {len(images)} images (#0-#{len(images) - 1})")
        return images[value:value + 1].float().div(255)
    hits = (labels == value).nonzero().flatten() if labels is not None else torch.zeros(0)
    if len(hits) == 0:
        raise UsageError(f"{spec!r}: no held-out image has that class")
    i = int(hits[0])
    return images[i:i + 1].float().div(255)


def endpoint_name(spec: str) -> str:
    p = Path(spec)
    text = p.stem if p.suffix else spec.lstrip("#")
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


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


def check_steps(steps: int) -> None:
    if steps < 2:
        raise UsageError(f"--steps {steps}: a morph needs at least 2 steps (start and end)")


@torch.no_grad()
def morph(model, xa: torch.Tensor, xb: torch.Tensor, steps: int, method: str = "lerp",
          space: str = "pre") -> torch.Tensor:
    """Frames (steps, C, H, W) of the morph from image xa to image xb.

    VQ-VAE: interpolate the continuous encoder outputs and quantise each step
    (`space="pre"`, the seed's way), or interpolate the quantised latents
    (`"post"`). VAE: interpolate the latent means.
    """
    check_steps(steps)
    if method not in ("lerp", "slerp"):
        raise UsageError(f"--method {method}: use lerp or slerp")
    model.eval()
    device = next(model.parameters()).device
    xa, xb = xa.to(device), xb.to(device)
    if model.kind == "vqvae":
        if space not in ("pre", "post"):
            raise UsageError(f"--space {space}: use pre (before quantisation) or post")
        za, zb = model.encode(xa), model.encode(xb)
        if space == "post":
            za, zb = model.quantize(za)[0], model.quantize(zb)[0]
            frames = model.decode(interpolate_latents(za, zb, steps, method))
        else:
            frames = model.decode(model.quantize(interpolate_latents(za, zb, steps, method))[0])
        return frames.cpu()
    za, zb = model.encode(xa)[0], model.encode(xb)[0]
    return model.decode(interpolate_latents(za, zb, steps, method)).cpu()


# --------------------------------------------------------------------------- reconstruction


@torch.no_grad()
def reconstruct(model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = [model.reconstruct(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def mse_psnr(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    mse = torch.mean((x - y) ** 2).item()
    return mse, 10 * math.log10(1 / max(mse, 1e-12))


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_vae(model, n: int, sampler: str = "prior", temperature: float = 1.0,
               latents: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """New images from a VAE: z ~ N(0, T^2 I), or random convex mixes of training latents."""
    model.eval()
    device = next(model.parameters()).device
    dim = model.cfg.latent_dim
    if sampler == "prior":
        z = torch.randn(n, dim, generator=generator) * temperature
    elif sampler == "mix":
        if latents is None or len(latents) == 0:
            raise UsageError("--sampler mix needs the training latents the run stores at its end; "
                             "finish the run (vqgen train --resume RUN) or use --sampler prior")
        # The seed's way: a random weighted average of stored training latents.
        # Three at a time: more would average every face into the same one.
        k = min(3, len(latents))
        idx = torch.randint(0, len(latents), (n, k), generator=generator)
        w = torch.rand(n, k, generator=generator)
        w = w / w.sum(1, keepdim=True)
        z = (latents[idx] * w.unsqueeze(-1)).sum(1)
    else:
        raise UsageError(f"--sampler {sampler}: use prior or mix")
    return model.decode(z.to(device)).cpu()


# A small prior's samples read best a little cooler than its own distribution,
# and with classifier-free guidance: on MNIST, of 100 samples per digit at 0.7,
# a classifier read 96% as their digit with guidance 1.5, 97.5% with 2 (where
# 1s begin to blur into blobs) and 86% without (benchmarks/prior_quality.py).
PRIOR_TEMPERATURE = 0.7
PRIOR_GUIDANCE = 1.5


def prior_guidance(prior, guidance: float | None) -> float:
    """The guidance to sample with: the default where the prior supports it, else 1 (none)."""
    if guidance is None:
        return PRIOR_GUIDANCE if prior.guidable else 1.0
    if guidance < 0:
        raise UsageError("--guidance must be 0 or more (1: none, 1.5: the default)")
    if guidance != 1.0 and not prior.guidable:
        what = "trained without class dropout" if prior.conditional else "unconditional"
        raise UsageError(f"--guidance needs a class-conditional prior; this one is {what}: drop --guidance")
    return guidance


@torch.no_grad()
def sample_vqvae(vqvae, prior, n: int, label: int | None = None, temperature: float = PRIOR_TEMPERATURE,
                 top_k: int = 0, generator: torch.Generator | None = None, guidance: float | None = None) -> torch.Tensor:
    """New images: code grids drawn from the prior, decoded by the VQ-VAE.

    A conditional prior draws `label`, or every class in turn when it is None.
    """
    device = next(prior.parameters()).device
    labels = None
    if prior.conditional:
        if label is None:   # all classes, in turn
            labels = torch.arange(n, device=device) % prior.cfg.num_classes
        else:
            labels = torch.full((n,), label, dtype=torch.long, device=device)
    codes = prior.sample(n, labels, temperature=temperature, top_k=top_k,
                         guidance=prior_guidance(prior, guidance), generator=generator)
    return vqvae.decode_indices(codes.to(next(vqvae.parameters()).device)).cpu()
