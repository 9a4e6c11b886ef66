"""VQ-VAE: a convolutional encoder, a vector quantiser and a decoder.

The encoder halves the image `downsample` times (28x28 -> 7x7 by default),
the quantiser replaces each latent vector by a codebook entry, and the decoder
mirrors the encoder. Residual blocks follow the original paper.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vqgen.errors import UsageError
from vqgen.models.base import RECONSTRUCTION_FIGURES, CodeModel, reconstruction_picture
from vqgen.models.quantizer import build_quantizer, quantizer_configs, quantizer_names
from vqgen.models.registry import Figure, ImageShape, ModelSpec, register
from vqgen.settings import at_least, group, init_grouped, one_of, setting, validate


def _known_quantizer(name) -> str | None:
    return None if name in quantizer_names() else f"must be one of {', '.join(quantizer_names())}, not {name!r}"


@dataclass(init=False)
class VQVAEConfig:
    """Settings by name; the quantiser's in `quantizer_config` (a dict or its dataclass) or flat among the
    others (`codebook_size=64`), as in config files and flags."""

    image_size: int = setting(28, "height = width of the images, divisible by 2**downsample", at_least(4, 1024))
    channels: int = setting(1, "1 for grayscale, 3 for RGB", one_of(1, 3))
    hidden: int = setting(32, "channels of the deepest feature map", at_least(1, 4096))
    res_blocks: int = setting(2, "residual blocks on each side of the bottleneck", at_least(0, 64))
    res_hidden: int = setting(16, "channels inside a residual block", at_least(1, 4096))
    downsample: int = setting(2, "stride-2 stages: 28 -> 7 for MNIST", at_least(1, 8))
    quantizer: str = setting("vq", "the quantiser's registered name: vq (a learned codebook), fsq, rvq, ...",
                             _known_quantizer)
    quantizer_config: Any = group("quantizer", quantizer_configs, "the quantiser's own settings (given flat too)")
    loss: str = setting("mse", "reconstruction loss: mse | l1 (sharper for colour images)", one_of("mse", "l1"))
    upsample: str = setting("transposed", "the decoder's stride-2 stages: transposed (4x4 transposed convolutions) | "
                            "nearest (nearest-neighbour doubling and a 3x3 convolution: no checkerboard under an "
                            "adversarial loss)", one_of("transposed", "nearest"))

    def __init__(self, **settings):
        init_grouped(self, settings)

    def __post_init__(self):
        validate(self)
        step = 2 ** self.downsample
        if self.image_size % step:
            raise UsageError(f"`image_size` {self.image_size} is not divisible by 2**downsample = {step}; "
                             f"use a multiple of {step} or change `downsample`")
        if self.hidden % 2 ** (self.downsample - 1):
            raise UsageError(f"`hidden` {self.hidden} must be divisible by 2**(downsample - 1) = "
                             f"{2 ** (self.downsample - 1)}, the encoder halves it at each stage")

    @property
    def codebook_size(self) -> int:
        """Distinct codes at a grid position, as the quantiser's settings give it (fsq: from its levels)."""
        return self.quantizer_config.codebook_size

    @property
    def code_dim(self) -> int:
        """Channels of the code grid: what the encoder outputs and the decoder takes."""
        return self.quantizer_config.code_dim


# The colour default (docs/benchmarks.md, "Faces": chosen among the widths, grids, losses and codebooks
# measured there for held-out PSNR within the VAE's training time).
FACE_MODEL = {"hidden": 64, "res_hidden": 32, "code_dim": 8, "codebook_size": 1024, "loss": "l1"}
FACE_EPOCHS = 50


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


def upsampling(kind: str, in_ch: int, out_ch: int) -> list[nn.Module]:
    """One stage that doubles the side: a transposed convolution, or nearest-neighbour doubling and a 3x3
    convolution (whose output has no checkerboard of the transposed kernel's overlaps)."""
    if kind == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, padding=1)]
    return [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1)]


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, cfg.hidden, 3, padding=1)]
        layers += [ResidualBlock(cfg.hidden, cfg.res_hidden) for _ in range(cfg.res_blocks)]
        in_ch = cfg.hidden
        for i in range(cfg.downsample):
            last = i == cfg.downsample - 1
            out_ch = cfg.channels if last else cfg.hidden // 2 ** (i + 1)
            layers += [nn.ReLU(), *upsampling(cfg.upsample, in_ch, out_ch)]
            in_ch = out_ch
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class VQVAE(CodeModel):
    """Latent spaces: "pre" (the encoder's continuous output, the seed's way to morph)
    and "post" (after quantisation)."""

    latent_spaces = ("pre", "post")

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = build_quantizer(cfg.quantizer, cfg.quantizer_config)
        self.decoder = Decoder(cfg)

    # ------------------------------------------------------------------ training

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _, recon, mse, vq_loss = self.reconstruction_terms(x)
        return {"loss": recon + vq_loss, "mse": mse, "vq": vq_loss}

    def reconstruction_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoder's raw output, the reconstruction loss, the MSE of what `reconstruct` delivers, and
        the quantiser's loss, for a training step."""
        # A linear output (under either loss): a sigmoid output can saturate at black and stall.
        zq, _, vq_loss = self.quantizer(self.encode(x))
        out = self.decoder(zq)
        recon = F.l1_loss(out, x) if self.cfg.loss == "l1" else F.mse_loss(out, x)
        mse = F.mse_loss(out.detach().clamp(0, 1), x)
        return out, recon, mse, vq_loss

    def reset_metrics(self) -> None:
        self.quantizer.reset_usage()

    def epoch_metrics(self) -> dict[str, float]:
        """Codebook usage and perplexity since the last reset."""
        return self.quantizer.usage()

    # ------------------------------------------------------------------ latents

    def encode(self, x: torch.Tensor, space: str | None = None) -> torch.Tensor:
        """Latents (B, D, h, w) of images in [0, 1]: before quantisation, or after (`space="post"`)."""
        z = self.encoder(x * 2 - 1)
        return self.quantize(z) if self.space(space) == "post" else z

    def decode(self, z: torch.Tensor, space: str | None = None) -> torch.Tensor:
        """Images in [0, 1]; latents of the "pre" space are quantised first."""
        if self.space(space) == "pre":
            z = self.quantize(z)
        return self.decoder(z).clamp(0, 1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """The nearest codes of latents, without counting their use or updating the codebook."""
        return self.quantizer.lookup(self.quantizer.indices(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ codes

    @property
    def codebook_size(self) -> int:
        """Distinct codes a grid position can take (for rvq: every combination of the stages' codes)."""
        return self.quantizer.codebook_size

    @property
    def latent_grid(self) -> int:
        return self.cfg.image_size // 2 ** self.cfg.downsample

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code grids (B, h, w) of images in [0, 1]: the encoder and nearest codes only."""
        return self.quantizer.indices(self.encode(x))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.lookup(indices), "post")

    def code_fingerprint(self) -> str:
        """Changes whenever the codebook does: a model trained on these codes checks it."""
        return hashlib.sha1(self.quantizer.codebook.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]


def defaults(shape: ImageShape) -> tuple[dict, dict]:
    """MNIST-sized grey images: the 0.2 defaults (a 7x7 grid of 512 codes). Colour images (96x96 faces): a
    code per 8x8 pixels (12x12 codes) from a wider network, an L1 loss (sharper colour edges than MSE at
    the same PSNR, docs/benchmarks.md), flips and turns as for the VAE, and more epochs of smaller batches,
    which on the 1,900 development faces take about the VAE's default time on a CPU."""
    model = {"image_size": shape.size, "channels": shape.channels}
    if shape.channels == 1 or shape.size < 64:
        return {}, model
    downsample = next((d for d in (3, 2, 1) if shape.size % 2 ** d == 0), 1)
    train = {"epochs": FACE_EPOCHS, "lr": 1e-2, "batch_size": 32, "augment": True}
    return train, {**model, **FACE_MODEL, "downsample": downsample}


VQVAE_SPEC = register(ModelSpec(
    name="vqvae", display_name="VQ-VAE", model_class=VQVAE, config_class=VQVAEConfig,
    defaults=defaults, pictures=reconstruction_picture,
    operations=frozenset({"reconstruct", "interpolate", "encode", "codes"}),
    scores=frozenset({"reconstructions", "samples"}),   # samples through a prior trained on its codes
    # Batch 64 keeps a GPU waiting on kernel launches. Larger batches learn less per image, so they need
    # more epochs: measured on the CPU in fp32 (docs/benchmarks.md), batch 512 at lr 0.015 for 20 epochs
    # reaches test MSE 0.00193 against 0.00197 for the CPU default, in as many steps as 10 epochs at 256.
    gpu_defaults={"batch_size": 512, "lr": 1.5e-2, "epochs": 20},
    description="a VQ-VAE: images -> a grid of codes from a learned codebook -> images",
    figures=RECONSTRUCTION_FIGURES + (
        Figure("vq", "VQ loss", panel="loss"),
        Figure("usage", "codebook usage", fmt="{:.0%}", short="usage", lower_is_better=False, shown=True,
               panel="codebook usage", log=False, twin="perplexity"),
        Figure("perplexity", "perplexity", fmt="{:,.0f}", short="ppl", lower_is_better=False)),
))
