"""Quantisers: the discrete bottleneck of the VQ-VAE, one contract and a registry.

Every quantiser takes a feature map (B, D, H, W) and keeps to one contract:

    quantized, indices, loss = q(z)     # straight-through quantised map, codes (B, H, W), auxiliary loss
    q.indices(z)                        # codes only: nothing updated or counted
    q.lookup(indices)                   # codes -> (B, D, H, W)
    q.reset_usage(); q.usage()          # {"usage": share of codes used, "perplexity": ...} since the reset
    q.codebook_size, q.dim, q.codebook  # codes, channels, a tensor that changes when the codes do

One integer per grid position, whatever the quantiser, so the prior models
the codes of each. A quantiser is one file in `models/` that declares its
settings (a dataclass with `codebook_size` and `code_dim`, as fields or
properties) and registers a `QuantizerSpec`; the VQ-VAE's `quantizer` setting
names it and its `quantizer_config` holds those settings.

This file holds the contract and the vector quantiser ("vq"): each input
vector is replaced by its nearest codebook vector. Gradients pass straight
through the rounding (van den Oord et al., 2017), or, with the rotation trick
(Fifty et al., 2024), through the rotation and scaling that takes the input to
its code. The codebook is learned either by exponential moving averages of the
vectors assigned to each code (the stable default) or by a codebook loss.
Options follow the ones the field relies on: cosine or Euclidean distance,
k-means initialisation from the first batch, and restarting codes that fall
out of use.

Training on several processes (torch.distributed) keeps one codebook: the EMA
statistics of each batch are summed over all ranks before they update it, and
the k-means start and the encoder outputs that restart dead codes are rank
0's, sent to every rank. A training step never waits on the GPU for a Python
decision (which codes are dead is a mask, not a count). Under mixed precision
every quantiser runs in fp32: `Quantizer` turns autocast off around each
subclass's `forward` and `indices`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vqgen.settings import at_least, between, one_of, setting, validate


def _world() -> int:
    """Processes training together (torch.distributed), 1 when alone."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if _world() > 1:
        dist.all_reduce(t)
    return t


def _from_rank_zero(t: torch.Tensor) -> torch.Tensor:
    if _world() > 1:
        dist.broadcast(t, src=0)
    return t


def argmax_rows(scores: torch.Tensor) -> torch.Tensor:
    """The index of each row's largest score. On the CPU through NumPy, whose argmax is vectorised:
    for MNIST's 3,136 x 512 scores per batch it takes 0.26 ms against PyTorch's 1.6 ms (2 cores)."""
    if scores.device.type == "cpu" and not scores.requires_grad and scores.dtype == torch.float32:
        return torch.from_numpy(scores.contiguous().numpy().argmax(1))
    return scores.argmax(dim=1)


def kmeans(x: torch.Tensor, num_clusters: int, iters: int = 10, cosine: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain Lloyd's k-means on rows of `x`; returns `num_clusters` centroids."""
    n = x.shape[0]
    if n >= num_clusters:
        idx = torch.randperm(n, generator=generator, device="cpu")[:num_clusters].to(x.device)
    else:
        idx = torch.randint(0, n, (num_clusters,), generator=generator, device="cpu").to(x.device)
    centroids = x[idx].clone()
    for _ in range(iters):
        if cosine:
            assign = (x @ centroids.t()).argmax(dim=1)
        else:
            assign = torch.cdist(x, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=num_clusters).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = counts == 0
        new = sums / counts.clamp(min=1).unsqueeze(1)
        if cosine:
            new = F.normalize(new, dim=1)
        centroids = torch.where(empty.unsqueeze(1), centroids, new)
    return centroids


def to_rows(z: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) latents as (B*H*W, D) rows, in float32 also under mixed precision: distances, rounding
    and codebook updates are done in full precision."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()


def from_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B*H*W, D) rows back as a (B, D, H, W) map of the given latents' `shape`."""
    b, _, h, w = shape
    return rows.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


def straight_through(src: torch.Tensor, tgt: torch.Tensor, rotation_trick: bool = False) -> torch.Tensor:
    """`tgt` in the forward pass; in the backward pass the gradient reaches `src` unchanged (straight
    through), or, with the rotation trick, through the rotation and scaling that take each row of `src`
    to its row of `tgt`, held constant (Fifty et al., 2024, section 4.2). Rows are vectors: (N, D)."""
    if not rotation_trick:
        return src + (tgt - src).detach()
    src_norm = src.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
    tgt_norm = tgt.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
    u, q = src.detach() / src_norm, tgt.detach() / tgt_norm
    w = F.normalize(u + q, dim=1)
    # A reflection through w, then through q, turns u into q; both are linear in src.
    rotated = src - 2 * (src * w).sum(1, keepdim=True) * w + 2 * (src * u).sum(1, keepdim=True) * q
    rotated = rotated * (tgt_norm / src_norm)
    return rotated + (tgt - rotated).detach()   # exact where u and q are opposite (w undefined)


def _autocast_off(method: Callable) -> Callable:
    @functools.wraps(method)
    def run(self, z: torch.Tensor, *args, **kwargs):
        with torch.autocast(z.device.type, enabled=False):
            return method(self, z, *args, **kwargs)
    return run


class Quantizer(nn.Module):
    """The contract every quantiser keeps (see the module's docstring), with the counting of code use."""

    codebook_size: int
    dim: int

    def __init_subclass__(cls, **kwargs):
        """Every quantiser's `forward` and `indices` run with autocast off: under mixed precision the network
        around them runs in bf16 or fp16, while distances, rounding and codebook updates stay in fp32."""
        super().__init_subclass__(**kwargs)
        for name in ("forward", "indices"):
            if name in cls.__dict__:
                setattr(cls, name, _autocast_off(cls.__dict__[name]))

    def __init__(self, count_size: int):
        super().__init__()
        # Counts since the last `reset_usage()`: not saved with the weights.
        self.register_buffer("counts", torch.zeros(count_size), persistent=False)

    @property
    def codebook(self) -> torch.Tensor:
        raise NotImplementedError

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _count(self, indices: torch.Tensor) -> torch.Tensor:
        """Adds the use of each code to the counts (every rank's, while training) and returns this batch's."""
        counts = torch.bincount(indices.reshape(-1), minlength=self.counts.numel()).to(self.counts.dtype)
        if self.training:
            counts = _sum_over_ranks(counts)   # every rank counts every rank's codes
        self.counts += counts
        return counts

    def reset_usage(self) -> None:
        """Start counting code use afresh (an epoch, an evaluation)."""
        for m in self.modules():
            if isinstance(m, Quantizer):
                m.counts.zero_()

    def usage(self) -> dict[str, float]:
        """Share of codes used and perplexity since the last `reset_usage()`."""
        return usage_of(self.counts)


def usage_of(counts: torch.Tensor) -> dict[str, float]:
    total = counts.sum().item()
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"usage": (counts > 0).float().mean().item(), "perplexity": math.exp(entropy)}


@dataclass(frozen=True)
class QuantizerSpec:
    name: str                           # as in --quantizer and the VQ-VAE's `quantizer` setting
    config_class: type                  # its settings: a dataclass with `codebook_size` and `code_dim`
    build: Callable[[Any], Quantizer]   # the quantiser, from an instance of config_class
    description: str = ""               # a few words for --help


_QUANTIZERS: dict[str, QuantizerSpec] = {}


def register_quantizer(spec: QuantizerSpec) -> QuantizerSpec:
    """Make a quantiser known to the VQ-VAE, the command line and the docs by its name."""
    _QUANTIZERS[spec.name] = spec
    return spec


def unregister_quantizer(name: str) -> None:
    _QUANTIZERS.pop(name, None)


def quantizer_names() -> list[str]:
    return list(_QUANTIZERS)


def quantizer_specs() -> list[QuantizerSpec]:
    return list(_QUANTIZERS.values())


def quantizer_configs() -> dict[str, type]:
    """Each quantiser's settings dataclass, by name."""
    return {name: spec.config_class for name, spec in _QUANTIZERS.items()}


def build_quantizer(name: str, config) -> Quantizer:
    """The quantiser `name` from its settings (an instance of its `config_class`)."""
    return _QUANTIZERS[name].build(config)


class VectorQuantizer(Quantizer):
    """Nearest-neighbour quantisation of a feature map of shape (B, D, H, W).

    `forward` returns `(quantized, indices, loss)`: the quantised map with a
    straight-through gradient (or the rotation trick's), the code indices
    (B, H, W), and the commitment (plus, without EMA, codebook) loss.
    """

    def __init__(self, *, codebook_size: int, dim: int, distance: str = "euclidean",
                 ema: bool = True, decay: float = 0.99, commitment_weight: float = 0.25,
                 kmeans_init: bool = True, kmeans_iters: int = 10,
                 dead_code_threshold: float = 1.0, rotation_trick: bool = False, eps: float = 1e-5):
        super().__init__(codebook_size)
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', not {distance!r}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.cosine = distance == "cosine"
        self.ema = ema
        self.decay = decay
        self.commitment_weight = commitment_weight
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.rotation_trick = rotation_trick
        self.eps = eps

        embed = torch.randn(codebook_size, dim)
        if self.cosine:
            embed = F.normalize(embed, dim=1)
        if ema:
            self.register_buffer("embed", embed)
            self.register_buffer("embed_sum", embed.clone())
        else:
            self.embed = nn.Parameter(embed)
        # How many vectors each code received recently (EMA of counts per batch);
        # drives the EMA update and tells which codes are dead.
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self._initted_known = False   # whether `initted` was read since the weights were loaded


    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._initted_known = False

    @property
    def codebook(self) -> torch.Tensor:
        return F.normalize(self.embed, dim=1) if self.cosine else self.embed

    def _prepare(self, flat: torch.Tensor) -> torch.Tensor:
        return F.normalize(flat, dim=1) if self.cosine else flat

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flat` (N, D)."""
        codebook = self.codebook
        if self.cosine:
            return argmax_rows(flat @ codebook.t())
        # argmin |x - e|^2 = argmax (x.e - |e|^2 / 2): |x|^2 is the same for every code.
        return argmax_rows(torch.addmm(-0.5 * codebook.pow(2).sum(1), flat, codebook.t()))

    @torch.no_grad()
    def _init_from_data(self, flat: torch.Tensor) -> None:
        sample = flat[torch.randperm(flat.shape[0], device=flat.device)[:20000]]
        centroids = _from_rank_zero(kmeans(sample.float(), self.codebook_size, self.kmeans_iters, self.cosine))
        self.embed.data.copy_(centroids)
        if self.ema:
            self.embed_sum.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot_counts: torch.Tensor, indices: torch.Tensor) -> None:
        batch_sum = _sum_over_ranks(torch.zeros_like(self.embed_sum).index_add_(0, indices, flat))
        self.cluster_size.mul_(self.decay).add_(onehot_counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(batch_sum, alpha=1 - self.decay)
        # Laplace smoothing keeps codes with no recent use from dividing by zero.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        embed = self.embed_sum / smoothed.unsqueeze(1)
        self.embed.copy_(F.normalize(embed, dim=1) if self.cosine else embed)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        # Replace each dead code with a random encoder output from this batch, so every
        # code is somewhere the data actually is. (`cluster_size` is the same on every rank.)
        dead = self.cluster_size < self.dead_code_threshold
        # A row is drawn for every code and used where the code is dead: a mask, not a count, which on a
        # GPU would make the step wait for it. On the CPU a count-first path was 60-80 us faster per step
        # (under 1% of a default MNIST step), too little to keep a second path that draws other numbers.
        mask = dead.unsqueeze(1)
        picks = _from_rank_zero(flat[torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)])
        self.embed.data.copy_(torch.where(mask, picks, self.embed.data))
        self.cluster_size.copy_(torch.where(dead, self.dead_code_threshold, self.cluster_size))
        if self.ema:
            self.embed_sum.copy_(torch.where(mask, picks * self.dead_code_threshold, self.embed_sum))

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) latents as (B*H*W, D) rows, ready for the distance to each code."""
        return self._prepare(to_rows(z))

    @torch.no_grad()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Index grid (B, H, W) of the nearest codes, without updating or counting anything."""
        b, _, h, w = z.shape
        return self.nearest(self._flatten(z)).view(b, h, w)

    def forward(self, z: torch.Tensor):
        b, _, h, w = z.shape
        flat = self._flatten(z)
        if self.training and not self._initted_known:
            if not bool(self.initted):
                self._init_from_data(flat.detach())
            self._initted_known = True

        indices = self.nearest(flat.detach())
        codes = self.codebook[indices]
        counts = self._count(indices)

        if self.training:
            if self.ema:
                self._ema_update(flat.detach().float(), counts, indices)
            else:
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            if self.dead_code_threshold > 0:
                self._restart_dead_codes(flat.detach())

        commitment = F.mse_loss(flat, codes.detach())
        loss = self.commitment_weight * commitment
        if not self.ema:
            loss = loss + F.mse_loss(codes, flat.detach())
        # Forward uses the code, backward the input (straight through or rotated).
        quantized = from_rows(straight_through(flat, codes, self.rotation_trick), z.shape)
        return quantized, indices.reshape(b, h, w), loss

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for an index grid (B, H, W) -> (B, D, H, W)."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()


@dataclass
class CodebookConfig:
    """The settings of a learned codebook: vq's, and those of each stage of rvq."""
    code_dim: int = setting(4, "dimension of each code vector (small dims keep codes in use)", at_least(1, 4096))
    distance: str = setting("euclidean", "euclidean | cosine", one_of("euclidean", "cosine"))
    ema: bool = setting(True, "learn the codebook by moving averages (else by a loss)")
    decay: float = setting(0.95, "EMA decay of the codebook", between(0.0, 1.0))
    commitment_weight: float = setting(0.5, "pulls encoder outputs towards their codes", at_least(0.0, 1000.0))
    kmeans_init: bool = setting(True, "initialise the codebook by k-means on the first batch")
    dead_code_threshold: float = setting(0.5, "restart codes used fewer times than this per batch (EMA); 0: never",
                                         at_least(0.0, 1e6))
    rotation_trick: bool = setting(False, "pass gradients through the rotation from input to code "
                                          "(Fifty et al., 2024) instead of straight through")

    def __post_init__(self):
        validate(self)

    def codebook_options(self) -> dict:
        """A VectorQuantizer's keyword arguments for these settings, but its size and the rotation trick."""
        return {"dim": self.code_dim, "distance": self.distance, "ema": self.ema, "decay": self.decay,
                "commitment_weight": self.commitment_weight, "kmeans_init": self.kmeans_init,
                "dead_code_threshold": self.dead_code_threshold}


@dataclass
class VQConfig(CodebookConfig):
    codebook_size: int = setting(512, "number of codes", at_least(2, 65536))


register_quantizer(QuantizerSpec(
    name="vq", config_class=VQConfig, description="a learned codebook",
    build=lambda cfg: VectorQuantizer(codebook_size=cfg.codebook_size, rotation_trick=cfg.rotation_trick,
                                      **cfg.codebook_options())))
