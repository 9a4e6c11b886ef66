"""Finite scalar quantisation (FSQ; Mentzer et al., 2023): a codebook nobody learns.

Each of the D channels is squashed into a bounded range and rounded to one of
`levels[d]` values, so the code of a position is a point of a fixed grid of
prod(levels) points: [8, 5, 5, 5] gives 1,000 codes of dimension 4. There is
no codebook to learn, no commitment loss, no dead codes and nothing to keep
in step across processes; gradients pass straight through the rounding.
The index of a code is its grid point in mixed radix, one integer per
position like every quantiser's, so the prior models FSQ codes unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vqgen.errors import UsageError
from vqgen.models.quantizer import Quantizer, QuantizerSpec, from_rows, register_quantizer, to_rows
from vqgen.settings import at_least, each, setting, validate


@dataclass
class FSQConfig:
    levels: list[int] = setting([8, 5, 5, 5], "values per channel of a code", each(at_least(2, 256), 1, 16))

    def __post_init__(self):
        validate(self)
        if self.codebook_size > 65536:
            raise UsageError(f"`levels` {self.levels} make {self.codebook_size:,} codes; at most 65,536")

    @property
    def codebook_size(self) -> int:
        """The levels decide the codes: their product."""
        return math.prod(self.levels)

    @property
    def code_dim(self) -> int:
        return len(self.levels)


class FSQ(Quantizer):
    def __init__(self, levels: list[int], eps: float = 1e-3):
        size = math.prod(levels)
        super().__init__(size)
        self.codebook_size = size
        self.dim = len(levels)
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", torch.tensor([math.prod(levels[:i]) for i in range(len(levels))]),
                             persistent=False)
        half = (lv - 1) * (1 + eps) / 2
        offset = (lv % 2 == 0).float() * 0.5      # even levels: the grid sits half a step off zero
        self.register_buffer("half_range", half, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("half_width", torch.div(lv, 2, rounding_mode="floor"), persistent=False)

    def _round(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows bounded to each channel's range and rounded (straight through): integers around 0."""
        bounded = torch.tanh(rows + self.shift) * self.half_range - self.offset
        return bounded + (bounded.round() - bounded).detach()

    def _to_indices(self, steps: torch.Tensor) -> torch.Tensor:
        return ((steps.detach() + self.half_width) * self.basis).sum(1).round().long()

    @property
    def codebook(self) -> torch.Tensor:
        """Every code, in index order (prod(levels), D): fixed by the levels."""
        return self._codes(torch.arange(self.codebook_size, device=self.levels.device))

    def _codes(self, flat_indices: torch.Tensor) -> torch.Tensor:
        digits = torch.div(flat_indices.unsqueeze(-1), self.basis, rounding_mode="floor") % self.levels.long()
        return (digits.float() - self.half_width) / self.half_width

    @torch.no_grad()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        b, _, h, w = z.shape
        return self._to_indices(self._round(to_rows(z))).view(b, h, w)

    def forward(self, z: torch.Tensor):
        b, _, h, w = z.shape
        steps = self._round(to_rows(z))
        indices = self._to_indices(steps)
        self._count(indices)
        return from_rows(steps / self.half_width, z.shape), indices.view(b, h, w), z.new_zeros((), dtype=torch.float32)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self._codes(indices).permute(0, 3, 1, 2).contiguous()


register_quantizer(QuantizerSpec(name="fsq", config_class=FSQConfig, description="rounding to fixed levels",
                                 build=lambda cfg: FSQ(list(cfg.levels))))
