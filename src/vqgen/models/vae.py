"""VAE: the anime-face model of the second seed, and a small one for MNIST.

The encoder is a stack of stride-2 Conv2d -> BatchNorm -> LeakyReLU layers
(3-32-64-128-256-512 takes 96x96 down to 3x3), flattened into linear heads for
the mean and log-variance of a Gaussian latent. The decoder mirrors it with a
linear layer and transposed convolutions. Loss: BCE-with-logits reconstruction
plus KL divergence, both summed per image and averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VAEConfig:
    image_size: int = 96          # divisible by 2**len(hidden_dims)
    channels: int = 3
    hidden_dims: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    latent_dim: int = 256
    kl_weight: float = 1.0        # weight of the KL term (beta)


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1),
                         nn.BatchNorm2d(out_ch), nn.LeakyReLU())


def deconv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1),
                         nn.BatchNorm2d(out_ch), nn.LeakyReLU())


class VAE(nn.Module):
    kind = "vae"

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = list(cfg.hidden_dims)
        if cfg.image_size % 2 ** len(dims):
            raise ValueError(f"image_size {cfg.image_size} is not divisible by 2**{len(dims)}")
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

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x) for images in [0, 1]."""
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc_decode(z).view(-1, self.cfg.hidden_dims[-1], self.bottom, self.bottom)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from latents."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode_logits(z), mu, logvar

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits, mu, logvar = self(x)
        n = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        mse = F.mse_loss(torch.sigmoid(logits.detach()), x)
        return {"loss": recon + self.cfg.kl_weight * kl, "recon": recon, "kl": kl, "mse": mse}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(x)
        return self.decode(mu)
