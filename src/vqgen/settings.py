"""Settings of the config dataclasses: declared once, with a doc line, a type and a check.

Every config dataclass (training and each model's) declares its fields with
`setting(default, doc, check)` and calls `validate(self)` in `__post_init__`,
so a value is checked where it is defined, whether it came from a flag, a
YAML file or Python: numbers must be finite and in range, choices from their
set. YAML's quirks are forgiven where the meaning is plain (`lr: 1e-3` reads
as a string in YAML 1.1; `epochs: 3.0` is 3).

A `group` field holds a settings dataclass of its own, the one that another
field names (the VQ-VAE's `quantizer_config`, picked by its `quantizer`): it is
given as a dict, or its settings are given flat among the others.

This module imports nothing heavy, so the command line can check its flags
before it loads PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable

from vqgen.errors import UsageError

Check = Callable[[Any], "str | None"]   # returns what is wrong, or None


def setting(default: Any, doc: str = "", check: Check | None = None) -> Any:
    """A dataclass field with its documentation and its check."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def group(chosen_by: str, classes: Callable[[], dict[str, type]], doc: str = "") -> Any:
    """A field holding the settings dataclass that the earlier field `chosen_by` names among `classes()`
    (name -> dataclass). It is given as a dict (or an instance), or its settings are given flat among the
    others: `build` gathers those of the chosen class and drops those of the others (a config written
    before the settings had their own dataclass has every class's)."""
    return dataclasses.field(default=None, metadata={"doc": doc, "check": _key_values, "group": (chosen_by, classes)})


def _key_values(value) -> str | None:
    return None if value is None or isinstance(value, dict) else f"should be key: value pairs, not {value!r}"


# --------------------------------------------------------------------------- checks


def _fmt(v) -> str:
    """A number as people write it: 65,536 and 0.5 and 1000 (not 1000.0)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def _not_finite(v) -> str | None:
    if isinstance(v, float) and not math.isfinite(v):
        return f"must be a finite number, not {v}"
    return None


def at_least(lo: float, hi: float | None = None) -> Check:
    def check(v):
        if _not_finite(v):
            return _not_finite(v)
        if not v >= lo:
            return f"must be at least {_fmt(lo)}, not {_fmt(v)}"
        if hi is not None and not v <= hi:
            return f"must be at most {_fmt(hi)}, not {_fmt(v)}"
        return None
    return check


def between(lo: float, hi: float) -> Check:
    def check(v):
        if _not_finite(v):
            return _not_finite(v)
        if not lo <= v <= hi:
            return f"must be from {_fmt(lo)} to {_fmt(hi)}, not {_fmt(v)}"
        return None
    return check


def positive(hi: float | None = None) -> Check:
    def check(v):
        if _not_finite(v):
            return _not_finite(v)
        if not v > 0:
            return f"must be positive, not {_fmt(v)}"
        if hi is not None and not v <= hi:
            return f"must be at most {_fmt(hi)}, not {_fmt(v)}"
        return None
    return check


def one_of(*choices: Any) -> Check:
    shown = ", ".join(str(c) for c in choices[:-1]) + f" or {choices[-1]}"

    def check(v):
        return None if v in choices else f"{v}: use {shown}"
    return check


def each(inner: Check, min_len: int = 1, max_len: int = 16) -> Check:
    def check(values):
        if not min_len <= len(values) <= max_len:
            return f"needs {min_len} to {max_len} values, not {len(values)}"
        for v in values:
            problem = inner(v)
            if problem:
                return f"has a value that {problem}"
        return None
    return check


# --------------------------------------------------------------------------- types


def _kind(hint) -> tuple[type, type | None]:
    """(int, None), (list, int), ... from a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return list, (args[0] if args else None)
    return hint, None


def _coerce(name: str, value: Any, hint) -> Any:
    kind, item = _kind(hint)
    if kind is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise UsageError(f"`{name}` should be a list such as [32, 64], not {value!r}")
        return [_coerce(name, v, item) for v in value] if item else value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"`{name}` should be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise UsageError(f"`{name}` should be a whole number, not {value!r}")
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        if isinstance(value, int):
            return value
        raise UsageError(f"`{name}` should be a whole number, not {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise UsageError(f"`{name}` should be a number, not {value!r}")
        if isinstance(value, str):   # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value.strip())
            except ValueError:
                raise UsageError(f"`{name}` should be a number, not {value!r}") from None
        if not isinstance(value, (int, float)):
            raise UsageError(f"`{name}` should be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UsageError(f"`{name}` must be a finite number, not {value}")
        return value
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):   # YAML 1.1 reads yes/no as booleans
            return "yes" if value else "no"
        raise UsageError(f"`{name}` should be text, not {value!r}")
    return value


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_value(cls, name: str, value: Any) -> Any:
    """One setting of `cls`, coerced to its type and checked; raises UsageError naming it."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        return _check_grouped(cls, name, value)
    f = fields[name]
    value = _coerce(name, value, _hints(cls)[name])
    check = f.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise UsageError(f"`{name}` {problem}")
    return value


def check_arg(name: str, value: Any, check: Check) -> Any:
    """A function argument checked like a setting; raises UsageError naming it."""
    problem = check(value)
    if problem:
        raise UsageError(f"`{name}` {problem}")
    return value


def validate(obj) -> None:
    """Coerce and check every field of a dataclass instance (call it in `__post_init__`); a group's dict
    becomes the settings dataclass its chooser names."""
    for f in dataclasses.fields(obj):
        value = _grouped(obj, f) if "group" in f.metadata else check_value(type(obj), f.name, getattr(obj, f.name))
        object.__setattr__(obj, f.name, value)


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _groups(cls) -> list[tuple[str, str, dict[str, type]]]:
    """(field, chooser, name -> dataclass) for each group field of `cls`."""
    return [(f.name, f.metadata["group"][0], f.metadata["group"][1]())
            for f in dataclasses.fields(cls) if "group" in f.metadata]


def _grouped(obj, f) -> Any:
    chosen_by, classes = f.metadata["group"]
    cls, value = classes()[getattr(obj, chosen_by)], getattr(obj, f.name)
    if isinstance(value, cls):
        return value
    if _key_values(value):
        raise UsageError(f"`{f.name}` {_key_values(value)}")
    clash = sorted(set(field_names(cls)) & set(field_names(type(obj))))
    if clash:
        raise ValueError(f"{cls.__name__} and {type(obj).__name__} both have the setting {clash[0]!r}")
    return build(cls, value or {})


def _check_grouped(cls, name: str, value: Any) -> Any:
    """A group's setting given flat: accepted as the first of its classes that has it accepts it, else
    refused as the first refused it."""
    refused = None
    for _, _, classes in _groups(cls):
        for c in classes.values():
            if name in field_names(c):
                try:
                    return check_value(c, name, value)
                except UsageError as e:
                    refused = refused or e
    if refused is not None:
        raise refused
    raise UsageError(f"unknown setting {name!r} for {cls.__name__}; known: {', '.join(setting_names(cls))}")


def setting_names(cls) -> list[str]:
    """The names settings of `cls` are given by: its fields, then its groups' settings given flat."""
    names = field_names(cls)
    for _, _, classes in _groups(cls):
        for c in classes.values():
            names += [n for n in field_names(c) if n not in names]
    return names


def spread(cls, values: dict) -> dict:
    """`values` with each group's dict spread in its place, so that layers of settings (defaults, a file,
    flags) merge setting by setting, and a config file lists them as it did before they had a group."""
    groups, out = {name for name, _, _ in _groups(cls)}, {}
    for key, value in values.items():
        if key in groups and isinstance(value, dict):
            out.update(value)
        else:
            out[key] = value
    return out


def _gathered(cls, values: dict) -> dict:
    """`values` with each group's settings given flat moved into its dict: those of the chosen class;
    those of the others dropped."""
    out, own = dict(values), set(field_names(cls))
    for name, chosen_by, classes in _groups(cls):
        chooser = next(f for f in dataclasses.fields(cls) if f.name == chosen_by)
        chosen = classes.get(out.get(chosen_by, chooser.default))
        if chosen is None:   # refused by name before its settings could read as unknown ones
            check_value(cls, chosen_by, out.get(chosen_by, chooser.default))
        flat = {k: out.pop(k) for k in list(out) if k not in own and any(k in field_names(c) for c in classes.values())}
        mine = {k: v for k, v in flat.items() if chosen is not None and k in field_names(chosen)}
        given = out.get(name)
        if dataclasses.is_dataclass(given) and not isinstance(given, type):
            given = dataclasses.asdict(given)
        if mine and (given is None or isinstance(given, dict)):
            out[name] = {**(given or {}), **mine}
    return out


def flat_values(obj) -> dict:
    """Every setting of a dataclass instance by the name it is given by: its fields, and its groups'
    settings among them."""
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for name, _, _ in _groups(type(obj)):
        out.update({k: getattr(out[name], k) for k in field_names(type(out[name]))})
    return out


def _known(cls, values: dict) -> dict:
    """`values` by field, a group's settings gathered into it; unknown keys refused by name."""
    values = _gathered(cls, values)
    unknown = sorted(set(values) - set(field_names(cls)))
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r} for {cls.__name__}; known: {', '.join(setting_names(cls))}")
    return values


def build(cls, values: dict):
    """Make a dataclass from a dict, refusing unknown keys by name; a group's settings may be given flat."""
    return cls(**_known(cls, values))


def init_grouped(obj, values: dict) -> None:
    """The `__init__` of a dataclass with a group (declared with `init=False`): settings by field name, and
    the group's also flat (`VQVAEConfig(codebook_size=64)`), as in config files."""
    values = _known(type(obj), values)
    for f in dataclasses.fields(obj):
        if f.name in values:
            value = values[f.name]
        else:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        object.__setattr__(obj, f.name, value)
    obj.__post_init__()

