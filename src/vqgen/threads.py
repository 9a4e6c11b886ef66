"""CPU threads for training on the CPU: as many as the cores that other programs leave free.

Two PyTorch jobs on a 2-core laptop, each with a thread per core, fight over the cores: on the 2-core
development machine one epoch of the default VQ-VAE took 24 s alone, while two such trainings at once
took 88 s until both finished, and 27 s with one thread each. So a training counts the cores it may use
(its CPU affinity and a container's CPU quota), measures how busy they are with other programs (from
/proc/stat, minus its own time), takes the cores left free, and looks again every few seconds as it trains:
a training that started alone gives a core back when a second one starts, and takes it again when that one
ends. A fixed number (the `threads` setting, `--threads`, or OMP_NUM_THREADS) turns this off.
Where /proc/stat cannot be read (macOS, Windows), PyTorch's own choice stands.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vqgen.memory import cgroup_folders

PROC = Path("/proc")                      # tests point it at fake files (and cgroups: VQGEN_CGROUP_ROOT)
WINDOW_S = 0.25                           # the first look: how busy the cores are, before training starts
EVERY_S = 5.0                             # then a look at least this far apart, as training goes
AGREE = 2                                 # a new count is taken when this many looks in a row ask for it


def _quota(folder: Path, v1: bool) -> float | None:
    """The CPU quota in cores that one cgroup folder sets (v2 `cpu.max`, v1 `cpu.cfs_quota_us` and
    `cpu.cfs_period_us`); None where it sets none."""
    try:
        if v1:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        else:
            text, period_text = (folder / "cpu.max").read_text().split()[:2]
            quota, period = (-1 if text == "max" else int(text)), int(period_text)
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota() -> float | None:
    """A container's CPU quota in cores: the lowest that this process's cgroup or one above it sets (cgroup v2
    or v1, found as for memory: memory.cgroup_folders); None where there is none."""
    v2, v1 = cgroup_folders("cpu")
    found = [q for q in [_quota(d, False) for d in v2] + [_quota(d, True) for d in v1] if q is not None]
    return min(found) if found else None


def affinity() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a container's quota."""
    cores = len(affinity())
    quota = cpu_quota()
    return max(1, min(cores, int(quota + 0.5))) if quota is not None else max(1, cores)


@dataclass
class Sample:
    """Busy and total clock ticks of this process's CPUs, and this process's own ticks, at one moment."""
    busy: int
    total: int
    cpus: int
    own: int


def sample(cpus: list[int]) -> Sample | None:
    """Read /proc/stat and /proc/self/stat; None where they cannot be read."""
    try:
        lines = (PROC / "stat").read_text().splitlines()
        own_fields = (PROC / "self" / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    busy = total = seen = 0
    for line in lines:
        name, *ticks = line.split()
        if name not in wanted:
            continue
        t = [int(v) for v in ticks[:8]] + [0] * max(0, 8 - len(ticks))
        user, nice, system, idle, iowait, irq, softirq, steal = t[:8]
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
        seen += 1
    if not seen:
        return None
    own = int(own_fields[11]) + int(own_fields[12])   # utime + stime, after the state field: fields 14 and 15
    return Sample(busy, total, seen, own)


def others_busy(before: Sample, after: Sample) -> float | None:
    """Cores kept busy by other programs between two samples (this process's own time taken out)."""
    elapsed = (after.total - before.total) / max(1, after.cpus)   # ticks of one core
    if elapsed <= 0:
        return None
    busy = (after.busy - before.busy) / elapsed
    own = (after.own - before.own) / elapsed
    return max(0.0, busy - own)


def fixed_threads(setting: int) -> tuple[int | None, str]:
    """A count the user chose (the `threads` setting, else OMP_NUM_THREADS), and where it came from."""
    if setting:
        return setting, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    return None, ""


class Threads:
    """The CPU threads of one training: chosen at the start, then revisited as it trains (`revisit`)."""

    def __init__(self, setting: int = 0, log: Callable[[str], None] = lambda s: None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        import torch

        self._torch, self.log, self.clock, self.sleep = torch, log, clock, sleep
        self.cpus = affinity()
        self.cores = usable_cores()
        self.fixed, self.source = fixed_threads(setting)
        self.count = torch.get_num_threads()
        self.last: Sample | None = None
        self.last_time = 0.0
        self.wanted: list[int] = []

    @property
    def adaptive(self) -> bool:
        return self.fixed is None and self.last is not None

    def start(self) -> int:
        """Choose the count (a short look at the cores first), set it, and say it in one line."""
        if self.fixed is not None:
            self._set(self.fixed)
            self.log(f"CPU threads: {self.fixed} ({self.source})")
            return self.count
        first = sample(self.cpus)
        if first is None:   # no /proc: PyTorch's choice stands
            return self.count
        self.sleep(WINDOW_S)
        self.last, self.last_time = sample(self.cpus), self.clock()
        busy = others_busy(first, self.last) if self.last is not None else None
        if busy is None:
            self.last = None
            return self.count
        self._set(self.free(busy))
        cores = f"{self.cores} cores" if self.cores > 1 else "1 core"
        state = f"{busy:.1f} of {cores} busy elsewhere" if busy >= 0.5 else \
            ("the core free" if self.cores == 1 else f"all {cores} free")
        self.log(f"CPU threads: {self.count} ({state}; --threads N to choose)")
        return self.count

    def free(self, busy: float) -> int:
        """The threads to use when other programs keep `busy` cores busy."""
        return max(1, min(self.cores, int(len(self.cpus) - busy + 0.5)))

    def revisit(self) -> None:
        """Look again (at most every EVERY_S seconds); change the count when AGREE looks in a row ask for it."""
        if not self.adaptive or self.clock() - self.last_time < EVERY_S:
            return
        now = sample(self.cpus)
        if now is None:
            return
        busy = others_busy(self.last, now)
        self.last, self.last_time = now, self.clock()
        if busy is None:
            return
        self.wanted = (self.wanted + [self.free(busy)])[-AGREE:]
        if len(self.wanted) == AGREE and len(set(self.wanted)) == 1 and self.wanted[0] != self.count:
            was = self.count
            self._set(self.wanted[0])
            why = "other programs use the CPU" if self.count < was else "the CPU is free again"
            self.log(f"CPU threads: {self.count} (was {was}: {why})")

    def _set(self, n: int) -> None:
        self._torch.set_num_threads(n)
        self.count = n
