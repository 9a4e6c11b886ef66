"""An adversarial VQ-VAE (the VQGAN recipe of Esser et al. 2021, without LPIPS).

The VQ-VAE's encoder, quantiser and decoder, trained on the pixel loss as the
VQ-VAE is, and, from a share of the run on, against a patch discriminator
(PatchGAN, as in pix2pix and taming-transformers) with the hinge loss. A pixel
loss averages over the detail it cannot place, so it draws blur; the
discriminator, which judges each patch as real or made, makes the decoder draw
plausible edges and texture instead.

- The generator's adversarial term is weighed by taming's adaptive rule: the
  ratio of the gradient norms of the pixel loss and of the adversarial term at
  the decoder's last layer, so neither overwhelms the other; capped.
- On small data (a few thousand images) a discriminator learns the training
  images by heart. It sees real and generated images through the same random,
  differentiable augmentation (DiffAugment, Zhao et al. 2020: colour,
  translation, cutout), and LeCam's regulariser (Tseng et al. 2021) can hold
  its outputs near their moving averages.
- Each reconstruction is also pulled towards its original in the
  discriminator's features, layer by layer (pix2pixHD's feature matching): a
  perceptual loss learned on the data itself, where LPIPS would need ImageNet
  weights downloaded.
- Before its start, the discriminator neither trains nor weighs in, and is not
  run at all: those steps cost what a VQ-VAE's do.

The discriminator is its own parameter group with its own optimizer settings
(`disc_lr`, betas 0.5 and 0.9), trained on "d_loss"; everything else on "loss".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from vqgen.models.base import ParameterGroup, start_of
from vqgen.models.registry import Figure, register
from vqgen.models.vqvae import VQVAE, VQVAE_SPEC, VQVAEConfig
from vqgen.settings import at_least, between, setting


AUGMENTATIONS = ("colour", "translation", "cutout")


def _augmentations(value) -> str | None:
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    wrong = [n for n in names if n not in AUGMENTATIONS + ("none",)]
    if wrong or not names:
        return f"must be none or some of {', '.join(AUGMENTATIONS)}, comma-separated, not {value!r}"
    return None


def augmentations(value: str) -> tuple[str, ...]:
    """The DiffAugment policies a `diffaugment` setting names, in their fixed order."""
    names = {v.strip() for v in value.split(",")}
    return tuple(a for a in AUGMENTATIONS if a in names)


@dataclass(init=False)
class VQGANConfig(VQVAEConfig):
    """The VQ-VAE's settings, and the discriminator's."""

    disc_channels: int = setting(16, "channels of the discriminator's first layer (doubled at each)", at_least(1, 1024))
    disc_layers: int = setting(3, "the discriminator's stride-2 layers: its patches grow with them", at_least(1, 6))
    disc_start: float = setting(0.5, "share of the run's steps after which the discriminator trains and weighs in",
                                between(0.0, 1.0))
    disc_lr: float = setting(2e-4, "the discriminator's learning rate (before the run's schedule)", between(0.0, 1.0))
    disc_weight: float = setting(1.0, "the adversarial term's weight: times the adaptive ratio, where adaptive",
                                 at_least(0.0, 1e4))
    adaptive: bool = setting(True, "weigh the adversarial term by the ratio of gradient norms at the decoder's "
                                   "last layer (taming's rule); false: by disc_weight alone")
    max_weight: float = setting(1.0, "the cap on the adversarial term's weight", at_least(0.0, 1e4))
    diffaugment: str = setting("translation,cutout", "what the discriminator sees real and generated images "
                               "through (DiffAugment): some of colour, translation, cutout, comma-separated; "
                               "none: as they are", _augmentations)
    feature_matching: float = setting(5.0, "weight of the distance between the discriminator's features of real "
                                      "and reconstructed images (pix2pixHD's feature matching, a perceptual loss that needs no download; 0: off)",
                                      at_least(0.0, 1e4))
    lecam: float = setting(0.0, "weight of LeCam's regulariser of the discriminator (0: off)", at_least(0.0, 1e4))


# --------------------------------------------------------------------------- the discriminator


class PatchDiscriminator(nn.Module):
    """Stride-2 4x4 convolutions (channels doubling, LeakyReLU 0.2) and a 3x3 convolution to one logit per
    patch: a 96x96 image gets 12x12 patch verdicts with three layers, each seeing about 40x40 pixels."""

    def __init__(self, channels: int, width: int, layers: int):
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch = channels
        for i in range(layers):
            out_ch = width * 2 ** i
            blocks += [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        blocks.append(nn.Conv2d(in_ch, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each layer's activations on the way, and the verdicts."""
        found = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                found.append(x)
        return found, x


def diff_augment(x: torch.Tensor, policies: tuple[str, ...] = AUGMENTATIONS) -> torch.Tensor:
    """DiffAugment's colour, translation (up to 1/8 of the side) and cutout (a square of half the side), those
    in `policies`, differentiable in x (images in [-1, 1]). `x` holds real images and then as many made ones:
    the i-th made image is drawn the same augmentation as the i-th real one (a new draw for each pair), so
    their features can be compared."""
    n, c, h, w = x.shape
    if n % 2:
        raise ValueError(f"diff_augment takes pairs of real and made images, not {n} images")
    dev, dt = x.device, x.dtype

    def draw(*shape, low=None, high=None) -> torch.Tensor:   # one draw per pair
        size = (n // 2, *shape)
        t = torch.rand(size, device=dev, dtype=dt) if low is None else torch.randint(low, high, size, device=dev)
        return torch.cat([t, t])

    if "colour" in policies:   # brightness, saturation, contrast
        x = x + (draw(1, 1, 1) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (draw(1, 1, 1) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (draw(1, 1, 1) + 0.5) + mean
    if "translation" in policies:   # filled with zeros: each image's pixels gathered from the padded image
        sh, sw = max(1, h // 8), max(1, w // 8)
        ty, tx = draw(1, 1, low=0, high=2 * sh + 1), draw(1, 1, low=0, high=2 * sw + 1)
        padded = F.pad(x, [sw, sw, sh, sh])
        where = ((torch.arange(h, device=dev).view(1, h, 1) + ty) * (w + 2 * sw)
                 + torch.arange(w, device=dev).view(1, 1, w) + tx)
        x = padded.reshape(n, c, -1).gather(2, where.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    if "cutout" in policies:   # a square of half the side, centred anywhere (clipped at the edges)
        ch, cw = h // 2, w // 2
        top, left = draw(1, 1, low=0, high=h) - ch // 2, draw(1, 1, low=0, high=w) - cw // 2
        ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
        cut = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
        x = x * (~cut).unsqueeze(1).to(dt)
    return x.contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- the model


class VQGAN(VQVAE):
    """A VQ-VAE with a patch discriminator: the same latent spaces ("pre", "post") and codes."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__(cfg)
        self.discriminator = PatchDiscriminator(cfg.channels, cfg.disc_channels, cfg.disc_layers)
        self.adversarial = False   # the discriminator's start has come (told before each training step)
        self.policies = augmentations(cfg.diffaugment)   # parsed once, not every step
        # Figures kept across steps (saved, so a resumed run continues them): the last adaptive weight,
        # LeCam's moving averages of the verdicts.
        self.register_buffer("weight", torch.zeros(()))
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def parameter_groups(self) -> list[ParameterGroup]:
        disc = list(self.discriminator.parameters())
        seen = {id(p) for p in disc}
        rest = [p for p in self.parameters() if id(p) not in seen]
        return [ParameterGroup("autoencoder", rest),
                ParameterGroup("discriminator", disc, loss="d_loss", lr=self.cfg.disc_lr, betas=(0.5, 0.9),
                               start_share=self.cfg.disc_start)]

    def begin_step(self, step: int, total_steps: int) -> None:
        # A Python flag, not a tensor: it changes once in a run, so a compiled forward is rebuilt once.
        self.adversarial = step >= start_of(self.cfg.disc_start, total_steps)

    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, where the two terms' gradients are compared."""
        return self.decoder.net[-1].weight

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out, rec, mse, vq_loss = self.reconstruction_terms(x)
        zero = out.new_zeros(())
        terms = {"rec": rec.detach(), "mse": mse, "vq": vq_loss.detach()}
        training = self.training and torch.is_grad_enabled()
        if not self.adversarial:   # the discriminator is not run before its start
            return {"loss": rec + vq_loss, "d_loss": zero, **terms, "g": zero, "fm": zero, "d_real": zero,
                    "d_fake": zero, "weight": zero}
        real, fake = x * 2 - 1, out * 2 - 1
        both = torch.cat([real, fake])
        if self.policies and training:
            both = diff_augment(both, self.policies)
        feats, logits = self.discriminator.features(both)
        real_logits, fake_logits = logits[: len(x)], logits[len(x):]
        matching = zero
        if self.cfg.feature_matching:   # pulls the made image's features to its original's, layer by layer
            matching = sum((f[len(x):] - f[: len(x)].detach()).abs().mean() for f in feats) / len(feats)
        g = -fake_logits.mean()
        d_real, d_fake = F.relu(1 - real_logits).mean(), F.relu(1 + fake_logits).mean()
        d_loss = d_real + d_fake
        if training:
            weight = self.adaptive_weight(rec, g)
            self.weight.copy_(weight)
            if self.cfg.lecam:
                d_loss = d_loss + self.cfg.lecam * (F.relu(real_logits - self.ema_fake).pow(2).mean()
                                                    + F.relu(self.ema_real - fake_logits).pow(2).mean())
                with torch.no_grad():
                    self.ema_real.lerp_(real_logits.mean().float(), 0.01)
                    self.ema_fake.lerp_(fake_logits.mean().float(), 0.01)
        else:
            weight = self.weight
        # The discriminator's own term reaches only its parameters (the trainer back-propagates each group's
        # term into its own), so the made images need no detaching.
        generator = rec + vq_loss + weight * g + self.cfg.feature_matching * matching
        return {"loss": generator, "d_loss": d_loss, **terms, "g": g.detach(), "fm": matching.detach(),
                "d_real": d_real.detach(), "d_fake": d_fake.detach(), "weight": weight.detach()}

    def adaptive_weight(self, rec: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """taming's rule: |grad rec| / |grad g| at the decoder's last layer, times `disc_weight`, capped."""
        if not self.cfg.adaptive:
            return g.new_tensor(min(self.cfg.disc_weight, self.cfg.max_weight))
        layer = self.last_layer()
        rec_grad, = torch.autograd.grad(rec, layer, retain_graph=True)
        g_grad, = torch.autograd.grad(g, layer, retain_graph=True)
        ratio = rec_grad.norm() / (g_grad.norm() + 1e-4)
        return (ratio * self.cfg.disc_weight).clamp(0, self.cfg.max_weight).detach()


GAN_FIGURES = (
    Figure("rec", "reconstruction loss", panel="loss"),
    Figure("g", "generator's adversarial loss", short="g", panel="adversarial", log=False),
    Figure("fm", "feature matching", short="fm", panel="loss"),
    Figure("d_real", "discriminator on real", short="d_real", panel="adversarial", log=False),
    Figure("d_fake", "discriminator on made", short="d_fake", panel="adversarial", log=False),
    Figure("weight", "adversarial weight", short="w", panel="adversarial weight", log=False),
)

# The VQ-VAE's spec: its defaults by image shape (network, codes, loss, training; the discriminator's settings
# are the config's own defaults, chosen on the development faces, docs/benchmarks.md "Faces with edges"), its
# pictures, operations, scores and figures, and the adversarial figures besides. No GPU defaults of its own:
# the VQ-VAE's were measured for the VQ-VAE only.
register(replace(
    VQVAE_SPEC, name="vqgan", display_name="VQGAN", model_class=VQGAN, config_class=VQGANConfig, gpu_defaults={},
    best_epoch=False,   # its pixel error rises as it learns to draw detail: the latest weights are the ones
    description="a VQ-VAE trained against a patch discriminator (VQGAN): sharper colour images",
    figures=VQVAE_SPEC.figures + GAN_FIGURES,
))
