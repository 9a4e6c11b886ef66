"""The contract between models and the rest of vqgen.

Every model is a `Model`: calling it on a batch returns its training loss, so
hooks, `torch.compile` and `DistributedDataParallel` see the whole step:

    losses = model(x, y)        # {"loss": scalar to minimise, other terms to show}

Per-epoch figures (codebook usage, say) are counted from `reset_metrics()` to
`epoch_metrics()`. An `Autoencoder` adds one way to get latents and decode
them, in each of its latent spaces:

    z = model.encode(x, space)  # space None: the model's first, default one
    x = model.decode(z, space)  # images in [0, 1]

Models know tensors only: no files, progress bars or command line.
"""

from __future__ import annotations

import torch
from torch import nn

from vqgen.errors import UsageError
from vqgen.models.registry import Picture, PictureContext


class Model(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

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


def reconstruction_picture(model: Autoencoder, ctx: PictureContext) -> list[Picture]:
    """Held-out originals on the top row, their reconstructions under them."""
    originals = ctx.originals
    recon = model.reconstruct(originals)
    return [Picture("recon", torch.cat([originals, recon]), nrow=originals.shape[0],
                    row_labels=["original", "reconstruction"])]
