"""Residual vector quantisation (RVQ; as in SoundStream and RQ-VAE): a few vector quantisers in a row.

The first stage quantises the latent, each next stage quantises what the
stages before it left over, and the code of a position is the sum of the
stages' codes. With `stages` S and `stage_codes` K per stage, a position has
K**S possible codes from S*K learned vectors.

To keep one integer per position (the contract every quantiser keeps, so the
prior models RVQ codes unchanged), the S stage indices are packed into one in
mixed radix: index = i_1 + K*i_2 + K**2*i_3 ... The prior then predicts over
K**S values, so keep that small (the default: K 32 and 2 stages, 1,024). Usage is the mean
share of each stage's codebook in use; perplexity is that of the packed codes,
which is what the prior sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vqgen.errors import UsageError
from vqgen.models.quantizer import (CodebookConfig, Quantizer, QuantizerSpec, VectorQuantizer, from_rows,
                                   register_quantizer, straight_through, to_rows, usage_of)
from vqgen.settings import at_least, setting


@dataclass
class RVQConfig(CodebookConfig):
    stages: int = setting(2, "quantisers in a row", at_least(2, 8))
    stage_codes: int = setting(32, "codes per stage; the prior sees stage_codes**stages codes", at_least(2, 65536))

    def __post_init__(self):
        super().__post_init__()
        if self.codebook_size > 65536:
            raise UsageError(f"`stage_codes` {self.stage_codes} with `stages` {self.stages} makes "
                             f"{self.codebook_size:,} codes for the prior; at most 65,536 "
                             "(try stage_codes 32, stages 2)")
        if self.distance == "cosine":
            raise UsageError("`distance` cosine does not suit rvq (residuals are not directions); use euclidean")

    @property
    def codebook_size(self) -> int:
        """The stages decide how many codes a position can take: stage_codes**stages."""
        return self.stage_codes ** self.stages


class ResidualVQ(Quantizer):
    def __init__(self, stages: int, rotation_trick: bool = False, **vq_settings):
        k = vq_settings["codebook_size"]
        super().__init__(k ** stages)
        self.codebook_size = k ** stages
        self.dim = vq_settings["dim"]
        self.per_stage = k
        self.rotation_trick = rotation_trick
        self.stages = nn.ModuleList(VectorQuantizer(**vq_settings) for _ in range(stages))

    @property
    def codebook(self) -> torch.Tensor:
        return torch.cat([s.codebook for s in self.stages])

    def _pack(self, stage_indices: list[torch.Tensor]) -> torch.Tensor:
        return sum(i * self.per_stage ** s for s, i in enumerate(stage_indices))

    @torch.no_grad()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        residual, found = z.float(), []
        for stage in self.stages:
            i = stage.indices(residual)
            residual = residual - stage.lookup(i)
            found.append(i)
        return self._pack(found)

    def forward(self, z: torch.Tensor):
        residual, total, loss, found = z.float(), torch.zeros_like(z, dtype=torch.float32), 0.0, []
        for stage in self.stages:
            codes, i, stage_loss = stage(residual)   # updates the stage's codebook; loss pulls the residual in
            residual = residual - codes.detach()
            total = total + codes.detach()
            loss = loss + stage_loss
            found.append(i)
        indices = self._pack(found)
        self._count(indices)
        quantized = straight_through(to_rows(z), to_rows(total), self.rotation_trick)
        return from_rows(quantized, z.shape), indices, loss

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        out = 0
        for s, stage in enumerate(self.stages):
            out = out + stage.lookup(torch.div(indices, self.per_stage ** s, rounding_mode="floor") % self.per_stage)
        return out

    def usage(self) -> dict[str, float]:
        per_stage = [usage_of(s.counts)["usage"] for s in self.stages]
        return {"usage": sum(per_stage) / len(per_stage), "perplexity": usage_of(self.counts)["perplexity"]}


register_quantizer(QuantizerSpec(
    name="rvq", config_class=RVQConfig, description="residual VQ, stages of learned codebooks",
    build=lambda cfg: ResidualVQ(cfg.stages, rotation_trick=cfg.rotation_trick, codebook_size=cfg.stage_codes,
                                 **cfg.codebook_options())))
