"""VAE: the anime-face model of the second seed, and a small one for MNIST.

The encoder is a stack of stride-2 Conv2d -> BatchNorm -> LeakyReLU layers
(3-32-64-128-256-512 takes 96x96 down to 3x3), flattened into linear heads for
the mean and log-variance of a Gaussian latent. The decoder mirrors it with a
linear layer and transposed convolutions. Loss: BCE-with-logits reconstruction
plus KL divergence, both summed per image and averaged over the batch.

New images come from z ~ N(0, T^2 I), or (the seed's way) from random convex
mixes of the latent means of training images, which a run stores when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vqgen.errors import UsageError
from vqgen.models.base import RECONSTRUCTION_FIGURES, Autoencoder, reconstruction_picture
from vqgen.models.registry import Figure, ImageShape, ModelSpec, Picture, PictureContext, register
from vqgen.settings import at_least, each, one_of, setting, validate

SAMPLERS = ("prior", "mix")
MIX_OF = 3   # training latents per mixed sample: more would average every face into the same one


@dataclass
class VAEConfig:
    image_size: int = setting(96, "height = width, divisible by 2**len(hidden_dims)", at_least(4, 1024))
    channels: int = setting(3, "1 for grayscale, 3 for RGB", one_of(1, 3))
    hidden_dims: list[int] = setting([32, 64, 128, 256, 512], "channels of each stride-2 layer",
                                     each(at_least(1, 4096), 1, 8))
    latent_dim: int = setting(256, "dimension of the Gaussian latent", at_least(1, 8192))
    kl_weight: float = setting(1.0, "weight of the KL term (beta)", at_least(0.0, 1e6))

    def __post_init__(self):
        validate(self)
        step = 2 ** len(self.hidden_dims)
        if self.image_size % step:
            raise UsageError(f"`image_size` {self.image_size} is not divisible by 2**len(hidden_dims) = {step}; "
                             f"use a multiple of {step} or fewer `hidden_dims`")


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1),
                         nn.BatchNorm2d(out_ch), nn.LeakyReLU())


def deconv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1),
                         nn.BatchNorm2d(out_ch), nn.LeakyReLU())


class VAE(Autoencoder):
    """Latent space: "mean", the mean of q(z | x)."""

    latent_spaces = ("mean",)

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = list(cfg.hidden_dims)
        self.cfg = cfg
        self.bottom = cfg.image_size // 2 ** len(dims)
        flat = dims[-1] * self.bottom ** 2
        self.encoder = nn.Sequential(*[conv_block(i, o) for i, o in zip([cfg.channels] + dims[:-1], dims)])
        self.fc_mu = nn.Linear(flat, cfg.latent_dim)
        self.fc_logvar = nn.Linear(flat, cfg.latent_dim)
        self.fc_decode = nn.Linear(cfg.latent_dim, flat)
        rev = dims[::-1]
        blocks = [deconv_block(i, o) for i, o in zip(rev[:-1], rev[1:])]
        blocks.append(nn.ConvTranspose2d(rev[-1], cfg.channels, 3, stride=2, padding=1, output_padding=1))
        self.decoder = nn.Sequential(*blocks)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x) for images in [0, 1]."""
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc_decode(z).view(-1, self.cfg.hidden_dims[-1], self.bottom, self.bottom)
        return self.decoder(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        logits = self.decode_logits(z)
        n = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        mu32, logvar32 = mu.float(), logvar.float()   # under mixed precision too: a sum over every latent
        kl = -0.5 * torch.sum(1 + logvar32 - mu32.pow(2) - logvar32.exp()) / n
        mse = F.mse_loss(torch.sigmoid(logits.detach()), x)
        return {"loss": recon + self.cfg.kl_weight * kl, "recon": recon, "kl": kl, "mse": mse}

    def encode(self, x: torch.Tensor, space: str | None = None) -> torch.Tensor:
        """The latent means (B, latent_dim) of images in [0, 1]."""
        self.space(space)
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor, space: str | None = None) -> torch.Tensor:
        """Images in [0, 1] from latents."""
        self.space(space)
        return torch.sigmoid(self.decode_logits(z))

    @torch.no_grad()
    def sample(self, n: int, *, sampler: str = "prior", temperature: float = 1.0,
               latents: torch.Tensor | Callable[[], torch.Tensor | None] | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """New images: z ~ N(0, T^2 I) (`sampler="prior"`), or random convex mixes of training latents ("mix").

        `latents` (the training latent means, or a function that loads them) is needed for "mix" only.
        """
        if sampler not in SAMPLERS:
            raise UsageError(f"`sampler` {sampler}: use {' or '.join(SAMPLERS)}")
        device = next(self.parameters()).device
        if sampler == "prior":
            z = torch.randn(n, self.cfg.latent_dim, generator=generator) * temperature
        else:
            latents = latents() if callable(latents) else latents
            if latents is None or len(latents) == 0:
                raise UsageError("`sampler` mix needs the training latents that a run stores when its last "
                                 "epoch ends; finish the run (resume it) or use `sampler` prior")
            k = min(MIX_OF, len(latents))
            idx = torch.randint(0, len(latents), (n, k), generator=generator)
            w = torch.rand(n, k, generator=generator)
            w = w / w.sum(1, keepdim=True)
            z = (latents[idx] * w.unsqueeze(-1)).sum(1)
        return self.decode(z.to(device)).cpu()


def pictures(model: VAE, ctx: PictureContext) -> list[Picture]:
    """Reconstructions, and (as pytorch/examples' VAE) new images from the same latents every epoch."""
    samples = model.sample(64, generator=ctx.generator)
    return reconstruction_picture(model, ctx) + [Picture("samples", samples, nrow=8)]


def defaults(shape: ImageShape) -> tuple[dict, dict]:
    """The seed's training; depth and width chosen by image size (28x28 gets a small VAE)."""
    dims = [32, 64, 128, 256, 512]
    depth = 0
    while depth < len(dims) and shape.size % 2 ** (depth + 1) == 0 and shape.size // 2 ** (depth + 1) >= 3:
        depth += 1
    if depth == 0:
        raise UsageError(f"images of {shape.size}x{shape.size} are too small or odd-sized for the VAE; "
                         "set `image_size` to a multiple of 4 in the config")
    small = shape.size <= 32
    train = {"epochs": 20, "lr": 1e-3, "batch_size": 64, "augment": shape.channels == 3}  # the seed's flips and turns
    model = {"image_size": shape.size, "channels": shape.channels, "hidden_dims": dims[:depth],
             "latent_dim": 16 if small else 256}
    return train, model


register(ModelSpec(
    name="vae", display_name="VAE", model_class=VAE, config_class=VAEConfig,
    defaults=defaults, pictures=pictures,
    operations=frozenset({"reconstruct", "interpolate", "encode", "sample"}),
    scores=frozenset({"reconstructions", "samples"}),
    sample_options=("sampler", "temperature"), sample_defaults={"sampler": "prior", "temperature": 1.0},
    keeps_latents=True,
    # The seed's batch of 64 leaves a GPU waiting (9,525 faces/s on an H100 in vqgen 0.1, 33,976 at 256);
    # the learning rate grows with the square root of the batch.
    gpu_defaults={"batch_size": 256, "lr": 2e-3},
    description="a VAE: images -> a Gaussian latent -> images; samples from N(0, I) or mixes",
    figures=RECONSTRUCTION_FIGURES + (Figure("recon", "reconstruction", panel="loss"),
                                      Figure("kl", "KL", panel="KL divergence")),
))
