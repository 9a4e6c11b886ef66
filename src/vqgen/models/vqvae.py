"""VQ-VAE: a convolutional encoder, a vector quantiser and a decoder.

The encoder halves the image `downsample` times (28x28 -> 7x7 by default),
the quantiser replaces each latent vector by a codebook entry, and the decoder
mirrors the encoder. Residual blocks follow the original paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vqgen.models.quantizer import VectorQuantizer


@dataclass
class VQVAEConfig:
    image_size: int = 28          # height = width of the images, divisible by 2**downsample
    channels: int = 1             # 1 for grayscale, 3 for RGB
    hidden: int = 32              # channels of the deepest feature map
    res_blocks: int = 2           # residual blocks on each side of the bottleneck
    res_hidden: int = 16          # channels inside a residual block
    downsample: int = 2           # stride-2 stages: 28 -> 7 for MNIST
    codebook_size: int = 512      # number of codes
    code_dim: int = 4             # dimension of each code vector (small dims keep codes in use)
    distance: str = "euclidean"   # euclidean | cosine
    ema: bool = True              # learn the codebook by moving averages (else by a loss)
    decay: float = 0.95           # EMA decay of the codebook
    commitment_weight: float = 0.5   # pulls encoder outputs towards their codes
    kmeans_init: bool = True      # initialise the codebook by k-means on the first batch
    dead_code_threshold: float = 0.5  # restart codes used fewer times than this per batch (EMA)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(), nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x):
        return x + self.block(x)


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = cfg.channels
        for i in range(cfg.downsample):
            out_ch = cfg.hidden // 2 ** (cfg.downsample - 1 - i)
            layers += [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1), nn.ReLU()]
            in_ch = out_ch
        layers.append(nn.Conv2d(in_ch, cfg.hidden, 3, padding=1))
        layers += [ResidualBlock(cfg.hidden, cfg.res_hidden) for _ in range(cfg.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(cfg.hidden, cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.hidden, 3, padding=1)]
        layers += [ResidualBlock(cfg.hidden, cfg.res_hidden) for _ in range(cfg.res_blocks)]
        in_ch = cfg.hidden
        for i in range(cfg.downsample):
            last = i == cfg.downsample - 1
            out_ch = cfg.channels if last else cfg.hidden // 2 ** (i + 1)
            layers += [nn.ReLU(), nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]
            in_ch = out_ch
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class VQVAE(nn.Module):
    kind = "vqvae"

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        if cfg.image_size % 2 ** cfg.downsample:
            raise ValueError(f"image_size {cfg.image_size} is not divisible by 2**downsample")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(
            codebook_size=cfg.codebook_size, dim=cfg.code_dim, distance=cfg.distance,
            ema=cfg.ema, decay=cfg.decay, commitment_weight=cfg.commitment_weight,
            kmeans_init=cfg.kmeans_init, dead_code_threshold=cfg.dead_code_threshold,
        )
        self.decoder = Decoder(cfg)

    @property
    def latent_grid(self) -> int:
        return self.cfg.image_size // 2 ** self.cfg.downsample

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents (B, D, h, w) of images in [0, 1]."""
        return self.encoder(x * 2 - 1)

    def quantize(self, z: torch.Tensor):
        return self.quantizer(z)

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code grids (B, h, w) of images in [0, 1]: the encoder and nearest codes only."""
        return self.quantizer.indices(self.encode(x))

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from (quantised) latents."""
        return self.decoder(zq).clamp(0, 1)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor):
        zq, indices, vq_loss = self.quantize(self.encode(x))
        return self.decoder(zq), indices, vq_loss

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        # A linear output with MSE: a sigmoid output can saturate at black and stall.
        out, _, vq_loss = self(x)
        recon = F.mse_loss(out, x)
        mse = F.mse_loss(out.detach().clamp(0, 1), x)  # what `reconstruct` delivers
        return {"loss": recon + vq_loss, "mse": mse, "vq": vq_loss}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        out, _, _ = self(x)
        return out.clamp(0, 1)

    def epoch_metrics(self) -> dict[str, float]:
        """Codebook usage and perplexity since the last call."""
        return self.quantizer.usage(reset=True)
