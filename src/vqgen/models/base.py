"""The contract between models and the rest of vqgen.

Every model is a `Model`: calling it on a batch returns its training loss, so
hooks, `torch.compile` and `DistributedDataParallel` see the whole step:

    losses = model(x, y)        # {"loss": scalar to minimise, other terms to show}

Per-epoch figures (codebook usage, say) are counted from `reset_metrics()` to
`epoch_metrics()`. A model trains as one group of parameters on its "loss",
or declares several `parameter_groups()`, each minimising its own term of the
same forward pass with its own optimizer settings (a generator and a
discriminator), optionally from a later step on. An `Autoencoder` adds one way to get latents and decode
them, in each of its latent spaces:

    z = model.encode(x, space)  # space None: the model's first, default one
    x = model.decode(z, space)  # images in [0, 1]

Models know tensors only: no files, progress bars or command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vqgen.errors import UsageError
from vqgen.models.registry import Figure, Picture, PictureContext


@dataclass
class ParameterGroup:
    """Parameters that one optimizer (Adam) trains on one term of the model's forward pass.

    The term is back-propagated into these parameters only, so a discriminator's loss does not
    move the generator and the generator's adversarial term does not move the discriminator.
    """
    name: str                                  # as it reads in logs: "generator", "discriminator"
    params: list                               # torch parameters
    loss: str = "loss"                         # the key of forward()'s dict this group minimises
    lr: float | None = None                    # None: the run's `lr`
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float | None = None          # None: the run's `weight_decay`
    start_step: int = 0                        # trains from this step of the whole run on (0: from the start)
    start_share: float = 0.0                   # or from this share of the run's steps on, whichever is later


def start_of(share: float, total_steps: int) -> int:
    """The step of a run of `total_steps` steps at which a share of it has passed: where a group with
    `start_share` starts (the trainer and the model count it alike)."""
    return math.ceil(share * total_steps)


class Model(nn.Module):
    """What every model offers the rest of vqgen; nothing outside `models/` asks a model anything else."""

    # The number of classes the model is conditioned on (a class label per image); 0: unconditioned.
    num_classes: int = 0

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameter_groups(self) -> list[ParameterGroup]:
        """What the trainer optimises: by default every parameter, on "loss", at the run's settings."""
        return [ParameterGroup("model", list(self.parameters()))]

    def begin_step(self, step: int, total_steps: int) -> None:
        """Told the step of the whole run, and the run's number of steps, before each training step (a loss
        that starts later reads it).

        A model that is compiled should keep what it derives from `step` in a tensor, not a Python
        number, so that the compiled forward is not rebuilt every step."""

    def sample(self, n: int, *, generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """A model with the operation "sample": n new images in [0, 1], or code grids that its parent decodes
        (a model trained on codes); `options` as its spec's `sample_options` and `sample_defaults` list them."""
        raise NotImplementedError

    def sampling_defaults(self) -> dict:
        """Defaults of `sample`'s options that this model's own settings choose, over its spec's
        `sample_defaults` (a prior's temperature and top-k, chosen for its code grid)."""
        return {}

    def reset_metrics(self) -> None:
        """Start counting the per-epoch figures afresh."""

    def epoch_metrics(self) -> dict[str, float]:
        """Figures counted since the last `reset_metrics()`."""
        return {}


class Autoencoder(Model):
    latent_spaces: tuple[str, ...] = ("latent",)

    def space(self, space: str | None) -> str:
        """The latent space asked for, or the default; refuses one the model does not have."""
        if space is None:
            return self.latent_spaces[0]
        if space not in self.latent_spaces:
            shown = " or ".join(self.latent_spaces)
            raise UsageError(f"`space` {space}: this model's latents are {shown}")
        return space

    def encode(self, x: torch.Tensor, space: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, space: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class CodeModel(Autoencoder):
    """An autoencoder that turns images into grids of code indices and back (operation "codes"),
    so that another model (a prior) can learn over its codes."""

    @property
    def codebook_size(self) -> int:
        """Distinct codes a grid position can take."""
        raise NotImplementedError

    @property
    def latent_grid(self) -> int:
        """The code grid is latent_grid x latent_grid."""
        raise NotImplementedError

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Code grids (B, h, w) of images in [0, 1]."""
        raise NotImplementedError

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] of code grids (B, h, w)."""
        raise NotImplementedError

    def code_fingerprint(self) -> str:
        """Changes whenever the codebook does: a model trained on these codes checks it."""
        raise NotImplementedError


# What an autoencoder reports of its reconstructions ("psnr" is derived from "mse" by vqgen).
RECONSTRUCTION_FIGURES = (
    Figure("mse", "MSE", fmt="{:.5f}", headline=True, shown=True, panel="reconstruction MSE"),
    Figure("psnr", "PSNR", fmt="{:.2f}", unit="dB", short="PSNR", lower_is_better=False, shown=True),
)


def reconstruction_picture(model: Autoencoder, ctx: PictureContext) -> list[Picture]:
    """Held-out originals on the top row, their reconstructions under them."""
    originals = ctx.originals
    recon = model.reconstruct(originals)
    return [Picture("recon", torch.cat([originals, recon]), nrow=originals.shape[0],
                    row_labels=["original", "reconstruction"])]
