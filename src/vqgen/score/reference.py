"""The features of a reference set (a dataset's split), cached on disk so that the next score skips them.

Each entry is one safetensors file in `<vqgen cache>/reference/`, named by the caller's key (which holds
the dataset's fingerprint, split and count), the network and the network's own fingerprint (its
weights' SHA-1), so a retrained digit reader or another Inception file never reads stale features.
"""

from __future__ import annotations

import hashlib
import functools
import os
from pathlib import Path
from typing import Callable

import torch

from vqgen.errors import UsageError

FOLDER = "reference"


@functools.lru_cache(maxsize=None)
def network_fingerprint(network: str) -> str:
    """A short hash of a network's weights: the digit reader's file, the Inception file's published SHA-1."""
    from vqgen.score import digits, inception

    if network == "digits":
        return hashlib.sha1(digits.WEIGHTS.read_bytes()).hexdigest()[:12]
    if network == "inception":
        return inception.SHA1[:12]
    raise UsageError(f"unknown network {network!r}; one of: digits, inception")


def reference_path(key: str, network: str) -> Path:
    from vqgen.data import usable_cache_dir
    from vqgen.files import slug

    digest = hashlib.sha1(os.fsencode(f"{key}|{network}|{network_fingerprint(network)}")).hexdigest()[:16]
    return usable_cache_dir() / FOLDER / f"{slug(key)[:80]}-{network}-{digest}.safetensors"


def cached_reference(key: str, network: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The features (N, D) of the reference set `key` under `network`: read from the cache, or computed by
    `compute()` and written there atomically. A damaged entry is computed again."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from vqgen.files import atomic_write, remove_stale_temps

    path = reference_path(key, network)
    if path.is_file():
        try:
            return load_file(str(path))["features"]
        except (SafetensorError, KeyError, OSError):
            pass
    features = compute().double().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    # A key with a path the locale could not decode holds surrogates, which safetensors' metadata refuses.
    meta = {"key": key.encode("utf-8", "backslashreplace").decode("utf-8"), "network": network,
            "fingerprint": network_fingerprint(network)}
    atomic_write(path, lambda tmp: save_file({"features": features}, str(tmp), metadata=meta), size=features.nbytes)
    return features
