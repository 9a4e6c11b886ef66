"""The model registry: each model says, in one `ModelSpec`, everything the rest of vqgen asks of it.

Training, generation, runs and the command line look a model up here by the
name stored in its run (`get("vqvae")`) or by what it can do
(`with_operation("interpolate")`); nothing outside `models/` compares a
model's name. A new model is one file that defines its module, its config
dataclass and a `register(ModelSpec(...))`, plus one import line in
`models/__init__.py`.

Operations a spec can list:

- "reconstruct", "interpolate", "encode": the model is an `Autoencoder`;
- "codes": it turns images into grids of code indices and back
  (`encode_indices`, `decode_indices`), so a model with `trains_on="codes"`
  can learn over them;
- "sample": it draws new data itself (`sample(n, **options)`): images, or,
  for a model that trains on codes, code grids that its parent decodes.

What `vqgen score` measures of a model's runs is declared too (`scores`):
"reconstructions" of held-out images (PSNR, SSIM, rFID), for a model that
reconstructs; "samples" (gFID, KID and, by class, the share read as the class
asked), for a model that samples, or one with codes that samples through a
model trained on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from vqgen.errors import UsageError
from vqgen.settings import build

OPERATIONS = frozenset({"reconstruct", "interpolate", "encode", "codes", "sample"})
SCORES = ("reconstructions", "samples")   # what `vqgen score` can measure, in the order it reports them


@dataclass(frozen=True)
class ImageShape:
    """What a model that trains on images is told about its data."""
    size: int                 # height = width
    channels: int             # 1 or 3
    num_classes: int = 0      # 0 when the dataset has no labels


@dataclass(frozen=True)
class CodeShape:
    """What a model that trains on a parent's code grids is told about them."""
    codebook_size: int
    grid: int                 # the code grid is grid x grid
    num_classes: int = 0


@dataclass(frozen=True)
class Figure:
    """A figure a model reports: a term of its forward pass, one of its `epoch_metrics()`, or "psnr",
    which vqgen derives from "mse". Recorded per epoch as test_NAME (held out) and train_NAME."""
    name: str                       # as the model names it: "mse", "bits_per_code"
    label: str                      # as people read it in tables and titles: "MSE", "NLL"
    fmt: str = "{:.4g}"             # one value as shown: "{:.5f}", "{:.0%}"
    unit: str = ""                  # after the value: "dB", "bits per code"
    short: str = ""                 # in the live training line (default: the name): "ppl", "bits/code"
    lower_is_better: bool = True
    headline: bool = False          # the one figure that says how good a run is (`vqgen runs`, the demo)
    shown: bool = False             # held out, on the line each finished epoch prints
    panel: str = ""                 # the plot panel it is drawn in ("" : not plotted; "loss": with the loss)
    log: bool = True                # that panel on a log scale (where its values span a decade)
    twin: str = ""                  # another figure drawn dashed on this one's panel, on a right-hand axis

    def format(self, value: float, unit: bool = True) -> str:
        text = self.fmt.format(value)
        return f"{text} {self.unit}" if unit and self.unit else text


@dataclass
class ParentData:
    """What a model that learns a parent run's codes prepares its training data from (`ModelSpec.from_parent`)."""
    parent: torch.nn.Module                 # the parent model (its "codes" operation), on the training device
    train_images: torch.Tensor              # uint8 (N, C, H, W)
    train_labels: torch.Tensor | None
    test_images: torch.Tensor
    mirrored: bool                          # the parent learned mirrored images too (its run's `augment`)
    map_batches: Callable[[Callable, torch.Tensor], torch.Tensor]   # fn over images in batches, on the device


@dataclass
class Picture:
    """One per-epoch picture: images in [0, 1] laid out in rows, with optional row labels."""
    name: str                              # file stem: "recon" -> recon_epoch_003.png
    images: torch.Tensor                   # (N, C, H, W)
    nrow: int                              # images per row
    row_labels: list[str] | None = None    # one per row, drawn in a margin on the left
    col_labels: list[str] | None = None    # one per column, drawn above


@dataclass
class PictureContext:
    """What a model's per-epoch pictures may use."""
    originals: torch.Tensor | None         # held-out images in [0, 1] (models that train on images)
    class_names: list[str] | None
    parent: torch.nn.Module | None         # the model whose codes this one learns (trains_on="codes")
    generator: torch.Generator | None


@dataclass(frozen=True)
class ModelSpec:
    name: str                                   # as in --model and in the weights' metadata
    display_name: str                           # as people read it: "VQ-VAE"
    model_class: type                           # built as model_class(config)
    config_class: type                          # a dataclass whose fields validate themselves
    defaults: Callable[[Any], tuple[dict, dict]]  # (training preset, model settings) for an ImageShape or CodeShape
    pictures: Callable[[Any, PictureContext], list[Picture]]   # what to draw after each epoch
    operations: frozenset = field(default_factory=frozenset)
    trains_on: str = "images"                   # "images", or "codes" of a parent model with "codes"
    sample_options: tuple[str, ...] = ()        # keyword options of its `sample`
    sample_defaults: dict = field(default_factory=dict)
    # Where a person's controls for those options start (the demo's sliders), where it differs from
    # `sample_defaults`: a default of None lets the model choose (the prior's guidance where it can guide).
    sample_starts: dict = field(default_factory=dict)
    keeps_latents: bool = False                 # store the training latents when a run ends (for sampling)
    gpu_defaults: dict = field(default_factory=dict)   # training settings on a GPU: bigger batches keep it busy
    description: str = ""                       # one line for --help
    figures: tuple[Figure, ...] = ()            # what it reports beyond "loss", headline first
    # A model with trains_on="codes": the settings its parent's codes decide, over the file and flags
    # (shape: a CodeShape), and its training data, (train_x, train_y, test_x), from a ParentData.
    settle: Callable[[Any, dict], dict] = lambda shape, values: values
    from_parent: Callable[[ParentData], tuple] | None = None
    # What `vqgen score` measures of its runs (of SCORES): "reconstructions" (with "reconstruct"), "samples"
    # (with "sample", or "codes" that a model trained on them samples through). None: nothing.
    scores: frozenset = field(default_factory=frozenset)
    # The epoch with the best held-out headline figure is the run's best, kept and used by the commands. False
    # for a model whose held-out figures do not say which epoch is best (an adversarial autoencoder's pixel
    # error rises as it learns to draw detail): its latest epoch is its best.
    best_epoch: bool = True

    def __post_init__(self):
        unknown = set(self.operations) - OPERATIONS
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)} for model {self.name}")
        if self.trains_on not in ("images", "codes"):
            raise ValueError(f"trains_on must be 'images' or 'codes', not {self.trains_on!r}")
        if self.trains_on == "codes" and self.from_parent is None:
            raise ValueError(f"model {self.name} trains on codes: it needs `from_parent`")
        if sum(f.headline for f in self.figures) > 1:
            raise ValueError(f"model {self.name}: at most one headline figure")
        needs = {"reconstructions": ("reconstruct",), "samples": ("sample", "codes")}
        for what in self.scores:
            if what not in needs:
                raise ValueError(f"model {self.name}: unknown score {what!r} (known: {', '.join(SCORES)})")
            if not any(self.can(op) for op in needs[what]):
                raise ValueError(f"model {self.name}: scoring {what} needs the operation "
                                 f"{' or '.join(needs[what])}")

    @property
    def headline(self) -> Figure:
        """The figure that says how good a run is: the declared one, else the held-out loss."""
        return next((f for f in self.figures if f.headline), LOSS)

    def sampling_defaults(self, model) -> dict:
        """Where `sample`'s options start for this model: the spec's defaults, with those its settings choose."""
        return {**self.sample_defaults, **model.sampling_defaults()}

    def config(self, values: dict):
        """The model's config dataclass from a dict; unknown keys and bad values refused by name."""
        return build(self.config_class, values)

    def build(self, config) -> torch.nn.Module:
        return self.model_class(config)

    def can(self, operation: str) -> bool:
        return operation in self.operations

    @property
    def scored(self) -> tuple[str, ...]:
        """What `vqgen score` measures of its runs, in the order it reports them."""
        return tuple(what for what in SCORES if what in self.scores)


LOSS = Figure("loss", "loss", panel="loss")   # every model's: what the trainer minimises
LR = Figure("lr", "learning rate", fmt="{:.3g}", panel="learning rate", log=False)   # the trainer's


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Make a model known to training, generation, runs and the command line."""
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"`model` {name!r} is not one of {', '.join(repr(n) for n in names())}: "
                         "no such model is registered") from None


def find(name: str) -> ModelSpec | None:
    return _REGISTRY.get(name)


def with_operation(operation: str) -> list[ModelSpec]:
    return [s for s in _REGISTRY.values() if s.can(operation)]


def figures(specs: list[ModelSpec] | None = None) -> list[Figure]:
    """The loss, every figure of these models (default: all registered), the learning rate: each name once."""
    seen: dict[str, Figure] = {"loss": LOSS}
    for spec in (specs if specs is not None else _REGISTRY.values()):
        for f in spec.figures:
            seen.setdefault(f.name, f)
    seen.setdefault("lr", LR)
    return list(seen.values())


def display_names(specs: list[ModelSpec]) -> str:
    """'VQ-VAE or VAE' for a list of specs."""
    shown = [s.display_name for s in specs]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
