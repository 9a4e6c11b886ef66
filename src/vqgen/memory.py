"""How much memory this process may use: the machine's, or less where a container caps it.

Docker's `--memory`, Kubernetes' limits, SLURM's `--mem` and Colab put the process in a cgroup whose memory
limit is lower than the machine's (`SC_PHYS_PAGES`, the host's). `physical_memory()` is the lower of the two;
vqgen decides with it whether a dataset is held in memory (data/cache.py), whether a model fits
(training.check_fits) and how many processes decode (data/decoding.py).

The limit is read from cgroup v2 (`memory.max`) or v1 (`memory/memory.limit_in_bytes`), in the process's own
cgroup as `/proc/self/cgroup` names it and in each cgroup above it (a parent's limit holds for its children),
down to the root of the mount (a container often sees its own cgroup there). "max", a v1 "no limit" (a
number near 2**63) and missing files mean no limit.

VQGEN_CGROUP_ROOT: where the cgroup file systems are mounted instead of /sys/fs/cgroup; for tests, which lay
out fake cgroup files there.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")   # lines "ID:CONTROLLERS:PATH"; cgroup v2's is "0::PATH"
V2_FILE = "memory.max"
V1_FILE = "memory.limit_in_bytes"


def host_memory() -> int | None:
    """The machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _own_paths(controller: str = "memory") -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's `controller` (None: not listed)."""
    v2 = v1 = None
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ident, controllers, path = parts
        if ident == "0" and controllers == "":
            v2 = path
        elif controller in controllers.split(","):
            v1 = path
    return v2, v1


def _up_to(base: Path, path: str | None) -> list[Path]:
    """`base/path` and each folder above it, down to `base` itself."""
    parts = [p for p in (path or "").split("/") if p and p not in (".", "..")]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():   # "max": no limit (and anything unreadable counts as none)
        return None
    value = int(text)
    return value if 0 < value < 2**60 else None   # v1 says "no limit" with a number near 2**63


def cgroup_folders(controller: str) -> tuple[list[Path], list[Path]]:
    """The folders of this process's cgroup and of each above it: in the v2 hierarchy, and in v1's
    `controller` ("memory", "cpu"); a limit set in any of them holds for this process."""
    root = Path(os.environ.get("VQGEN_CGROUP_ROOT") or CGROUP_ROOT)
    v2, v1 = _own_paths(controller)
    return _up_to(root, v2), _up_to(root / controller, v1)


def cgroup_limit() -> int | None:
    """The lowest memory limit of this process's cgroups (v2 and v1), or None where none is set."""
    v2, v1 = cgroup_folders("memory")
    files = [d / V2_FILE for d in v2] + [d / V1_FILE for d in v1]
    limits = [n for n in map(_read_limit, files) if n is not None]
    return min(limits) if limits else None


def physical_memory() -> int | None:
    """The memory this process may use: the machine's, or its cgroup's limit where that is lower."""
    found = [n for n in (host_memory(), cgroup_limit()) if n is not None]
    return min(found) if found else None


def limited_by_cgroup() -> bool:
    """Whether `physical_memory()` is a container's limit rather than the machine's memory."""
    limit, host = cgroup_limit(), host_memory()
    return limit is not None and (host is None or limit < host)


def describe() -> str:
    """How the memory of `physical_memory()` reads in a message: this machine's, or the container's limit."""
    return "the memory limit of this container (its cgroup)" if limited_by_cgroup() else "this machine's memory"
