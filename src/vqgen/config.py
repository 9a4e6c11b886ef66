"""Configuration: dataclasses with defaults, overridden by a YAML file, then by flags.

A run's resolved configuration is one `RunConfig`: which model, which data,
how to train (`TrainConfig`) and the model's own dataclass. It is written to
the run directory as `config.yaml` and into the weights' metadata, so every
run says exactly how it was made.

`resolve_config` is a pure step: it takes the model's name, what is known of
the data (an `ImageShape`, or a `CodeShape` for a model that learns a parent's
codes), the values of a config file and of flags, and returns a `RunConfig`.
It opens no dataset and no checkpoint; probing those is the caller's step.
Every value is checked where its dataclass defines it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqgen.errors import UsageError
from vqgen.settings import (at_least, build, check_value, field_names, one_of, positive, setting, setting_names,
                            spread, validate)

DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("onecycle", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IN_MEMORY = ("auto", "yes", "no")


@dataclass
class TrainConfig:
    dataset: str = setting("mnist", "short name, Hub id or local folder",
                           lambda v: None if v.strip() else "is empty; give mnist, anime-faces, a Hub id or a folder")
    epochs: int = setting(3, "passes over the training split", at_least(1, 100_000))
    batch_size: int = setting(64, "images per batch", at_least(1, 65_536))
    lr: float = setting(1e-2, "peak learning rate (Adam)", positive(10.0))
    lr_schedule: str = setting("onecycle", "onecycle (warm up, then anneal) | constant", one_of(*LR_SCHEDULES))
    weight_decay: float = setting(0.0, "Adam's weight decay", at_least(0.0, 10.0))
    grad_clip: float = setting(1.0, "clip the gradient norm; 0 turns it off", at_least(0.0, 1e6))
    augment: bool = setting(False, "random flips and +-10 degree rotations, per batch")
    device: str = setting("auto", "auto | cpu | cuda | mps", one_of(*DEVICES))
    threads: int = setting(0, "CPU threads; 0: the cores other programs leave free, checked as it trains",
                           at_least(0, 4096))
    seed: int = setting(0, "seeds weights, shuffling and augmentation", at_least(0, 2**63 - 1))
    eval_batch_size: int = setting(1000, "held-out images per evaluation batch", at_least(1, 65_536))
    grid_images: int = setting(8, "test images in each epoch's reconstruction grid", at_least(1, 64))
    precision: str = setting("auto", "auto (bf16 or fp16 on a GPU, fp32 elsewhere) | fp32 | bf16 | fp16",
                             one_of(*PRECISIONS))
    compile: bool = setting(False, "torch.compile the model (faster steps after a slow first one)")
    data_in_memory: str = setting("auto", "auto (if the data takes at most a quarter of the memory) | yes | no: "
                                  "read batches from the memory-mapped cache", one_of(*IN_MEMORY))

    def __post_init__(self):
        validate(self)


@dataclass
class RunConfig:
    model: str                     # a name in the model registry
    train: TrainConfig
    model_config: Any              # the model's own config dataclass
    source: str | None = None      # what `train.dataset` resolved to: a Hub id or an absolute path
    parent: dict = field(default_factory=dict)   # a model trained on codes: {"run": path, "fingerprint": ...}

    def to_dict(self) -> dict:
        d = {"model": self.model, "train": dataclasses.asdict(self.train),
             "model_config": spread(type(self.model_config), dataclasses.asdict(self.model_config))}
        if self.source:
            d["source"] = self.source
        if self.parent:
            d["parent"] = self.parent
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A RunConfig from `to_dict()`'s output, or from a vqgen 0.2 run's."""
        from vqgen import models

        spec = models.get(d["model"])
        parent = dict(d.get("parent") or {})
        old = d.get("extra") or {}          # vqgen 0.2 kept the parent run under "extra"
        if "vqvae_run" in old:
            parent = {"run": old["vqvae_run"], "fingerprint": old.get("vqvae_codebook")}
        return cls(d["model"], build(TrainConfig, d.get("train", {})), spec.config(d.get("model_config", {})),
                   d.get("source"), parent)

    def save_yaml(self, path: Path) -> None:
        import yaml

        from vqgen.files import write_text

        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False), make_folder=False)

    @property
    def dataset_source(self) -> str:
        """Where the run's data comes from: the resolved source, else the name as given."""
        return self.source or self.train.dataset


# --------------------------------------------------------------------------- config files


def read_yaml(path: str | Path) -> dict:
    """A config file: flat keys like the seed's config.yaml, or `train:`/`model_config:` sections."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise UsageError(f"`config` {path}: is a folder; give a YAML file")
    if not p.is_file():
        raise UsageError(f"`config` {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"`config` {path}: not a text file; give a YAML file of key: value lines") from None
    except OSError as e:
        raise UsageError(f"`config` {path}: cannot be read ({e.strerror or e.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UsageError(f"`config` {path}: not valid YAML{where}; fix the file") from None
    if not isinstance(data, dict):
        raise UsageError(f"`config` {path}: expected key: value pairs at the top level")
    return data


def model_in_file(data: dict, file_name) -> str | None:
    """The model a config file names (`model: vqgan`), or None; a `model:` mapping holds the model's settings."""
    from vqgen import models

    named = data.get("model")
    if named is None or isinstance(named, dict):
        return None
    if not isinstance(named, str) or models.find(named) is None:
        raise UsageError(f"{file_name} says model: {named!r}, which is not one of "
                         f"{', '.join(repr(n) for n in models.names())}")
    return named


def choose_model(flag: str | None, data: dict, file_name) -> str:
    """The model to train: the `model` flag, else the config file's `model:`, else the default; a flag and a
    file that name different models are refused."""
    from vqgen import models

    named = model_in_file(data, file_name)
    if flag is not None and named is not None and flag != named:
        raise UsageError(f"`model` {flag}, but {file_name} says model: {named}; drop one of them, or make them "
                         "the same")
    return flag or named or models.DEFAULT_MODEL


def split_settings(data: dict, model_cls) -> tuple[dict, dict]:
    """Sort a flat or sectioned dict into training and model settings; the model's are flat (a quantiser's
    `quantizer_config` spread among the others), so that defaults, a file and flags merge setting by setting."""
    train, model = {}, {}
    train_keys, model_keys = set(field_names(TrainConfig)), set(setting_names(model_cls))
    for key, value in data.items():
        if key in ("train", "model_config") and isinstance(value, dict):
            (train if key == "train" else model).update(value)
        elif key == "model" and isinstance(value, dict):
            model.update(value)
        elif key == "model":
            continue  # the model's name: `model_in_file` reads it, and the caller decides
        elif key in train_keys:
            train[key] = value
        elif key in model_keys:
            model[key] = value
        else:
            raise UsageError(f"unknown setting {key!r} in the config; known: "
                             f"{', '.join(sorted(train_keys | model_keys))}")
    model = spread(model_cls, model)
    for section, values, known in (("train", train, train_keys), ("model", model, model_keys)):
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown setting {unknown[0]!r} in the config's {section} section; "
                             f"known: {', '.join(sorted(known))}")
    return train, model


def check_values(cls, values: dict, where: str | None = None) -> dict:
    """Each value checked as `cls` defines it. `where` (a file) is named in the error instead of a flag."""
    out = {}
    for key, value in values.items():
        try:
            out[key] = check_value(cls, key, value)
        except UsageError as e:
            if where is None:
                raise
            raise UsageError(f"{e} (in {where})") from None
    return out


def check_train_flags(flags: dict) -> dict:
    """Training flags that were given (not None), checked before anything heavy is loaded."""
    return check_values(TrainConfig, {k: v for k, v in flags.items() if v is not None})


# --------------------------------------------------------------------------- resolving


def resolve_config(model: str, shape, *, file_values: dict | None = None, flags: dict | None = None,
                   file_name: str = "the config file", device_type: str = "cpu") -> RunConfig:
    """Defaults for the model and its data (and for a GPU, when `device_type` is "cuda"), then the file's
    values, then flags: a checked RunConfig."""
    from vqgen import models

    spec = models.get(model)
    file_train, file_model = split_settings(file_values or {}, spec.config_class)
    file_train = check_values(TrainConfig, file_train, file_name)
    file_model = check_values(spec.config_class, file_model, file_name)
    flag_train, flag_model = split_settings(flags or {}, spec.config_class)
    preset_train, preset_model = spec.defaults(shape)
    if device_type == "cuda":
        preset_train = {**preset_train, **spec.gpu_defaults}
    train_values = {**preset_train, **file_train, **check_values(TrainConfig, flag_train)}
    model_values = {**preset_model, **file_model, **check_values(spec.config_class, flag_model)}
    return RunConfig(model, build(TrainConfig, train_values), spec.config(spec.settle(shape, model_values)))
