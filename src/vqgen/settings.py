"""Settings of the config dataclasses: declared once, with a doc line, a type and a check.

Every config dataclass (training and each model's) declares its fields with
`setting(default, doc, check)` and calls `validate(self)` in `__post_init__`,
so a value is checked where it is defined, whether it came from a flag, a
YAML file or Python: numbers must be finite and in range, choices from their
set. YAML's quirks are forgiven where the meaning is plain (`lr: 1e-3` reads
as a string in YAML 1.1; `epochs: 3.0` is 3).

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
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
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
    """Coerce and check every field of a dataclass instance (call it in `__post_init__`)."""
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, check_value(type(obj), f.name, getattr(obj, f.name)))


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls, values: dict):
    """Make a dataclass from a dict, refusing unknown keys by name."""
    unknown = sorted(set(values) - set(field_names(cls)))
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r} for {cls.__name__}; known: {', '.join(field_names(cls))}")
    return cls(**values)


def docs(cls) -> dict[str, str]:
    """Each setting's doc line, for help texts and documentation."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}
