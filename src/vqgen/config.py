"""Configuration: dataclasses with defaults, overridden by a YAML file, then by flags.

A run's resolved configuration is one `RunConfig`: which model, which data, how
to train (`TrainConfig`) and the model's own dataclass. It is written to the
run directory as `config.yaml` and into the weights' metadata, so every run
says exactly how it was made.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vqgen.errors import UsageError
from vqgen.models import MODEL_CONFIGS


@dataclass
class TrainConfig:
    dataset: str = "mnist"        # short name, Hub id or local folder
    epochs: int = 3               # passes over the training split
    batch_size: int = 64
    lr: float = 1e-2              # peak learning rate (Adam)
    lr_schedule: str = "onecycle"  # onecycle (warm up, then anneal) | constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0        # clip the gradient norm; 0 turns it off
    augment: bool = False         # random flips and +-10 degree rotations, per batch
    device: str = "auto"          # auto | cpu | cuda | mps
    seed: int = 0                 # seeds weights, shuffling and augmentation
    eval_batch_size: int = 1000
    grid_images: int = 8          # test images in each epoch's reconstruction grid


# Training defaults that differ by model (the dataclass holds the VQ-VAE's).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "vqvae": {},
    "vae": {"epochs": 20, "lr": 1e-3, "batch_size": 64},
    "prior": {"epochs": 1, "lr": 2e-2, "batch_size": 16},
}


@dataclass
class RunConfig:
    model: str
    train: TrainConfig
    model_config: Any
    extra: dict = field(default_factory=dict)   # e.g. the VQ-VAE run a prior belongs to

    def to_dict(self) -> dict:
        return {"model": self.model, "train": dataclasses.asdict(self.train),
                "model_config": dataclasses.asdict(self.model_config), **({"extra": self.extra} if self.extra else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        model = d["model"]
        return cls(model, build(TrainConfig, d.get("train", {})),
                   build(MODEL_CONFIGS[model], d.get("model_config", {})), d.get("extra", {}))

    def save_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls, values: dict):
    """Make a dataclass from a dict, refusing unknown keys by name."""
    unknown = set(values) - set(field_names(cls))
    if unknown:
        raise UsageError(f"unknown setting {sorted(unknown)[0]!r} for {cls.__name__}; "
                         f"known: {', '.join(field_names(cls))}")
    return cls(**values)


def read_yaml(path: str | Path) -> dict:
    """A config file: flat keys like the seed's config.yaml, or `train:`/`model:` sections."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UsageError(f"--config {path}: not valid YAML{where}; fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected key: value pairs at the top level")
    return data


def split_settings(data: dict, model_cls) -> tuple[dict, dict]:
    """Sort a flat or sectioned dict into train and model settings."""
    train, model = {}, {}
    train_keys, model_keys = set(field_names(TrainConfig)), set(field_names(model_cls))
    for key, value in data.items():
        if key in ("train", "model_config") and isinstance(value, dict):
            (train if key == "train" else model).update(value)
        elif key == "model" and isinstance(value, dict):
            model.update(value)
        elif key == "model":
            continue  # the model's name; the CLI's --model decides
        elif key in train_keys:
            train[key] = value
        elif key in model_keys:
            model[key] = value
        else:
            raise UsageError(f"unknown setting {key!r} in the config; known: "
                             f"{', '.join(sorted(train_keys | model_keys))}")
    return train, model


def coerce(cls, values: dict) -> dict:
    """Check the types of YAML values against the dataclass defaults."""
    out = {}
    defaults = cls()
    for key, value in values.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, list):
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise UsageError(f"setting {key!r} should be a {type(default).__name__}, not {value!r}")
        out[key] = value
    return out
