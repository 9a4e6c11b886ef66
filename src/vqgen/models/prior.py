"""Prior over a VQ-VAE's code grid: a small causal transformer.

The VQ-VAE turns each image into a grid of code indices (7x7 for MNIST). The
prior reads the grid in raster order and predicts each code from the ones
before it, p(c_i | c_<i, class). The first token is the class label where the
dataset has labels (so `--digit 7` asks for sevens), else a learned start
token; the class is also added at every position. Sampling draws one code at
a time, with temperature and top-k, reusing the keys and values of earlier
positions (a KV cache), so each step costs one position, not the whole prefix.

Classifier-free guidance: a conditional prior also sees a share of its
training grids with the class hidden (`class_dropout`), so it learns
p(codes) next to p(codes | class). Sampling with guidance w draws from
logits_uncond + w * (logits_class - logits_uncond): w = 1 is the plain
conditional model; w = 2 makes the class much more legible for the cost of a
second, batched forward pass.

A transformer rather than a gated PixelCNN: for 49 positions it costs about
the same, needs no masked convolutions (no blind spot to design around), and
sees the whole prefix at every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vqgen.errors import UsageError
from vqgen.models.base import Model
from vqgen.models.registry import CodeShape, Figure, ModelSpec, ParentData, Picture, PictureContext, register
from vqgen.settings import at_least, between, setting, validate

# A small prior's samples read best a little cooler than its own distribution,
# and with classifier-free guidance: on MNIST, of 100 samples per digit at 0.7,
# a classifier read 96% as their digit with guidance 1.5, 97.5% with 2 (where
# 1s begin to blur into blobs) and 86% without (benchmarks/prior_quality.py).
PRIOR_TEMPERATURE = 0.7
PRIOR_GUIDANCE = 1.5


@dataclass
class PriorConfig:
    codebook_size: int = setting(256, "set from the VQ-VAE it belongs to", at_least(2, 65536))
    grid: int = setting(7, "the code grid is grid x grid", at_least(1, 128))
    num_classes: int = setting(0, "0: unconditional", at_least(0, 100_000))
    dim: int = setting(64, "width of the transformer", at_least(1, 4096))
    layers: int = setting(2, "transformer blocks", at_least(1, 64))
    heads: int = setting(2, "attention heads per block (dim must be a multiple)", at_least(1, 64))
    mlp_ratio: int = setting(2, "hidden width of each block's MLP, in multiples of dim", at_least(1, 16))
    dropout: float = setting(0.0, "one epoch does not overfit", between(0.0, 0.9))
    class_dropout: float = setting(0.1, "training grids shown without their class (for guidance)", between(0.0, 1.0))
    temperature: float = setting(PRIOR_TEMPERATURE, "sampling's default temperature (below 1: safer samples)",
                                 between(1e-3, 100.0))
    top_k: int = setting(0, "sampling's default: draw only from the k likeliest codes (0: from all)",
                         at_least(0, 65536))

    def __post_init__(self):
        validate(self)
        if self.dim % self.heads:
            raise UsageError(f"`dim` {self.dim} is not a multiple of `heads` {self.heads}")


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a ReLU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        if cache is None:
            # No dropout inside attention: on the CPU it takes SDPA off its fused kernel (4x slower at 576
            # positions); the residual branches keep theirs.
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # Decoding one position at a time: it may attend to every cached one.
            if cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
            a = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, t, c)), drop, self.training)
        return x + F.dropout(self.fc2(F.relu(self.fc1(self.norm2(x)))), drop, self.training)


class CodePrior(Model):

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.length = cfg.grid * cfg.grid
        self.code_embed = nn.Embedding(cfg.codebook_size, cfg.dim)
        # One row per class, and a last row for "no class": the start token of
        # an unconditional prior, and the hidden class of class dropout.
        self.class_embed = nn.Embedding(cfg.num_classes + 1, cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.length, cfg.dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.codebook_size)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def guidable(self) -> bool:
        """Whether classifier-free guidance works: the prior also learned p(codes) without a class."""
        return self.conditional and self.cfg.class_dropout > 0

    def _classes(self, n: int, labels: torch.Tensor | None, device) -> torch.Tensor:
        if labels is None:
            if self.conditional and not self.guidable:
                raise ValueError("this prior is class-conditional: give labels")
            return torch.full((n,), self.cfg.num_classes, dtype=torch.long, device=device)
        if not self.conditional:
            raise ValueError("this prior is unconditional: it takes no labels")
        return labels

    def _inputs(self, tokens: torch.Tensor, start: torch.Tensor, first: int) -> torch.Tensor:
        """Token embeddings (B, T, dim) at positions first.. plus their position and the class.

        The class goes in at every position, not only as the start token.
        """
        return tokens + self.pos_embed[:, first:first + tokens.shape[1]] + start

    def logits(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Next-code logits (B, L', K) for flattened codes (B, L'), L' <= L."""
        b, t = codes.shape
        start = self.class_embed(self._classes(b, labels, codes.device)).unsqueeze(1)
        # Inputs are shifted right by one: position i sees the start and codes < i.
        x = self._inputs(torch.cat([start, self.code_embed(codes[:, : t - 1])], dim=1), start, 0)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training loss: next-code cross-entropy, also in bits per code."""
        flat = codes.flatten(1)
        if self.training and labels is not None and self.guidable:
            hide = torch.rand(labels.shape, device=labels.device) < self.cfg.class_dropout
            labels = labels.masked_fill(hide, self.cfg.num_classes)
        logits = self.logits(flat, labels)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat.reshape(-1))
        return {"loss": nll, "bits_per_code": nll / math.log(2)}

    def resolve_guidance(self, guidance: float | None) -> float:
        """The guidance to sample with: the default where the prior supports it, else 1 (none)."""
        if guidance is None:
            return PRIOR_GUIDANCE if self.guidable else 1.0
        if guidance != 1.0 and not self.guidable:
            what = "trained without class dropout (class_dropout 0)" if self.conditional else "unconditional"
            raise UsageError(f"`guidance` needs a class-conditional prior; this one is {what}: drop `guidance`")
        return guidance

    def sampling_defaults(self) -> dict:
        return {"temperature": self.cfg.temperature, "top_k": self.cfg.top_k}

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int = 0, guidance: float | None = 1.0, generator: torch.Generator | None = None,
               on_code: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Code grids (n, grid, grid), one code at a time.

        `labels` None on a conditional prior draws without a class (where the
        prior learned to); `guidance` != 1 needs labels and a guidable prior
        (None: the default guidance where the prior learned it). `on_code(k,
        grids)` is called after each of the grid's positions with the codes
        drawn so far (the first k in raster order; the rest are 0).
        """
        # The default: guided where the prior learned it and a class is asked for.
        guidance = self.resolve_guidance(guidance) if guidance is not None or labels is not None else 1.0
        device = self.pos_embed.device
        classes = self._classes(n, labels, device)
        guided = guidance != 1.0
        if guided:
            if labels is None or not self.guidable:
                raise ValueError("guidance needs class labels and a prior trained with class_dropout > 0")
            classes = torch.cat([classes, torch.full_like(classes, self.cfg.num_classes)])
        start = self.class_embed(classes).unsqueeze(1)      # (n or 2n, 1, dim)
        caches: list[dict] = [{} for _ in self.blocks]
        codes = torch.zeros(n, self.length, dtype=torch.long, device=device)
        h = self._inputs(start, start, 0)
        for i in range(self.length):
            for block, cache in zip(self.blocks, caches):
                h = block(h, cache)
            logits = self.head(self.norm(h[:, 0])).float()
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance * (cond - uncond)
            logits = logits / max(temperature, 1e-5)
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = F.softmax(logits, dim=-1)
            codes[:, i] = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
            if on_code is not None:
                on_code(i + 1, codes.view(n, self.cfg.grid, self.cfg.grid))
            if i + 1 < self.length:
                e = self.code_embed(codes[:, i:i + 1])
                h = self._inputs(torch.cat([e, e]) if guided else e, start, i + 1)
        return codes.view(n, self.cfg.grid, self.cfg.grid)


def pictures(prior: CodePrior, ctx: PictureContext) -> list[Picture]:
    """Ten samples per class, one class per row (labelled), or an 8x8 grid for an unconditional prior."""
    device = prior.pos_embed.device
    if prior.conditional:
        k = prior.cfg.num_classes
        labels = torch.arange(k, device=device).repeat_interleave(10)
        n, nrow, rows = 10 * k, 10, list(ctx.class_names or range(k))
    else:
        labels, n, nrow, rows = None, 64, 8, None
    codes = prior.sample(n, labels, guidance=None, generator=ctx.generator, **prior.sampling_defaults())
    images = ctx.parent.decode_indices(codes.to(next(ctx.parent.parameters()).device))
    return [Picture("samples", images, nrow=nrow, row_labels=[str(r) for r in rows] if rows else None)]


SMALL_GRID = 64   # positions: MNIST's 7x7 codes are small; a face's are hundreds
# Sampling over a large grid (a face's 144 codes), chosen by FID of 500 samples against the real faces over
# temperatures and top-k (docs/benchmarks.md, "Faces with edges").
LARGE_GRID_TEMPERATURE = 1.0
LARGE_GRID_TOP_K = 100


def defaults(shape: CodeShape) -> tuple[dict, dict]:
    """By the size of the code grid. Small grids (MNIST's 49 codes, 60,000 of them): one epoch at batch 16
    learns more per grid than more epochs at larger batches (docs/design.md). Large grids (a face's hundreds
    of codes, a few thousand grids): a wider, deeper transformer, with dropout, for more epochs, and the
    sampling temperature and top-k that gave the lowest FID."""
    model = {"codebook_size": shape.codebook_size, "grid": shape.grid, "num_classes": shape.num_classes}
    if shape.grid ** 2 <= SMALL_GRID:
        return {"epochs": 1, "lr": 2e-2, "batch_size": 16}, model
    return ({"epochs": 8, "lr": 3e-3, "batch_size": 32},
            {**model, "dim": 128, "layers": 4, "heads": 4, "dropout": 0.1,
             "temperature": LARGE_GRID_TEMPERATURE, "top_k": LARGE_GRID_TOP_K})


def settle(shape: CodeShape, values: dict) -> dict:
    """The parent's codes decide the codebook and the grid; the classes are the data's, or none."""
    if values.get("num_classes") not in (0, shape.num_classes):
        raise UsageError(f"`num_classes` {values['num_classes']}: the parent run's data has "
                         f"{shape.num_classes} classes; use {shape.num_classes} or 0 (unconditional)")
    return {**values, "codebook_size": shape.codebook_size, "grid": shape.grid}


def code_grids(data: ParentData) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The parent's code grids of its training and held-out images, computed once; where the parent
    learned mirrored images, the grids of the mirrored training images count too (with their labels)."""
    encode = data.parent.encode_indices
    train_x, train_y = data.map_batches(encode, data.train_images), data.train_labels
    if data.mirrored:
        train_x = torch.cat([train_x, data.map_batches(lambda x: encode(x.flip(-1)), data.train_images)])
        train_y = torch.cat([train_y, train_y]) if train_y is not None else None
    return train_x, train_y, data.map_batches(encode, data.test_images)


register(ModelSpec(
    name="prior", display_name="prior", model_class=CodePrior, config_class=PriorConfig,
    defaults=defaults, pictures=pictures, trains_on="codes", operations=frozenset({"sample"}),
    scores=frozenset({"samples"}),
    sample_options=("labels", "temperature", "top_k", "guidance"),
    sample_defaults={"guidance": None},   # temperature and top-k: the prior's own settings (`sampling_defaults`)
    sample_starts={"guidance": PRIOR_GUIDANCE},
    # Batch 16 keeps a GPU waiting on kernel launches; two epochs at batch 128 reached NLL 5.52 (and 96-98%
    # of digits read right) in vqgen 0.2's measurements on the CPU, against 5.58 for the CPU default.
    gpu_defaults={"batch_size": 128, "epochs": 2, "lr": 2e-2},
    description="a sampler for a VQ-VAE: a causal transformer over its code grids, by class where labelled",
    figures=(Figure("bits_per_code", "NLL", fmt="{:.3f}", unit="bits per code", short="bits/code", headline=True,
                    shown=True, panel="bits per code", log=False),),
    settle=settle, from_parent=code_grids,
))
