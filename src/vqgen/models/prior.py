"""Prior over a VQ-VAE's code grid: a small causal transformer.

The VQ-VAE turns each image into a grid of code indices (7x7 for MNIST). The
prior reads the grid in raster order and predicts each code from the ones
before it, p(c_i | c_<i, class). The first token is the class label where the
dataset has labels (so `--digit 7` asks for sevens), else a learned start
token. Sampling draws one code at a time, with temperature and top-k.

A transformer rather than a gated PixelCNN: for 49 positions it costs about
the same, needs no masked convolutions (no blind spot to design around), and
sees the whole prefix at every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PriorConfig:
    codebook_size: int = 256      # set from the VQ-VAE it belongs to
    grid: int = 7                 # the code grid is grid x grid
    num_classes: int = 0          # 0: unconditional
    dim: int = 64                 # width of the transformer
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0          # one or two epochs do not overfit


class CodePrior(nn.Module):
    kind = "prior"

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.length = cfg.grid * cfg.grid
        self.code_embed = nn.Embedding(cfg.codebook_size, cfg.dim)
        # Row 0 is the start token of an unconditional prior; rows 1.. the classes.
        self.start_embed = nn.Embedding(max(cfg.num_classes, 1), cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.length, cfg.dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.codebook_size)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(self.length),
                             persistent=False)

    @property
    def conditional(self) -> bool:
        return self.cfg.num_classes > 0

    def _start(self, n: int, labels: torch.Tensor | None, device) -> torch.Tensor:
        if self.conditional:
            if labels is None:
                raise ValueError("this prior is class-conditional: give labels")
            return self.start_embed(labels)
        return self.start_embed(torch.zeros(n, dtype=torch.long, device=device))

    def logits(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Next-code logits (B, L, K) for flattened codes (B, L'), L' <= L."""
        b, t = codes.shape
        start = self._start(b, labels, codes.device).unsqueeze(1)
        # Inputs are shifted right by one: position i sees the start and codes < i.
        x = torch.cat([start, self.code_embed(codes[:, :-1])], dim=1) if t > 0 else start
        x = x[:, : max(t, 1)] + self.pos_embed[:, : max(t, 1)]
        if self.conditional:  # the class is added at every position, not only at the start
            x = x + start
        n = x.shape[1]
        h = self.blocks(x, mask=self.causal_mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))

    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        flat = codes.flatten(1)
        logits = self.logits(flat, labels)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat.reshape(-1))
        return {"loss": nll, "bits_per_code": nll / math.log(2)}

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Code grids (n, grid, grid), one code at a time."""
        device = self.pos_embed.device
        codes = torch.zeros(n, self.length, dtype=torch.long, device=device)
        for i in range(self.length):
            # Feeding i+1 positions gives the logits for position i.
            logits = self.logits(codes[:, : i + 1], labels)[:, i] / max(temperature, 1e-5)
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = F.softmax(logits.float(), dim=-1)
            codes[:, i] = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        return codes.view(n, self.cfg.grid, self.cfg.grid)
