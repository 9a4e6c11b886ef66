"""Two trainings at once on one machine: CPU threads fixed at a thread per core against vqgen's choice.

Times one epoch of the default MNIST VQ-VAE (`vqgen train --epochs 1`), each training a process of its own:

    alone      one training with the given threads
    two        two trainings started together: the time until both have finished

for `--threads N` fixed (PyTorch's default on the machine: a thread per core) and for vqgen's own choice
(the cores other programs leave free, looked at again as it trains). Run it on a quiet machine:

    python benchmarks/share_machine.py                  # both settings, alone and two at once
    python benchmarks/share_machine.py --epochs 1 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start(out: Path, name: str, threads: str | None, epochs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vqgen", "train", "--epochs", str(epochs), "--out", str(out), "--name", name]
    if threads is not None:
        cmd += ["--threads", threads]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(out: Path, count: int, threads: str | None, epochs: int) -> tuple[float, list[str]]:
    """Seconds until `count` trainings started together have all finished, and what each said of threads."""
    t0 = time.perf_counter()
    procs = [start(out, f"run{i}-{time.monotonic_ns()}", threads, epochs) for i in range(count)]
    said = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a training failed:\n{err}")
        said += [ln for ln in err.splitlines() if ln.startswith("CPU threads")]
    return time.perf_counter() - t0, said


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fixed = str(torch.get_num_threads())
    print(f"{platform.processor() or platform.machine()}, {cores} cores; torch {torch.__version__}; "
          f"one epoch of the default MNIST VQ-VAE per training")
    out = Path(tempfile.mkdtemp(prefix="vqgen-share-"))
    try:
        timed(out, 1, fixed, args.epochs)   # MNIST decoded into the cache once, outside the timings
        print(f"{'threads':<24} {'alone':>8} {'two at once':>12}  said")
        for label, threads in ((f"--threads {fixed} (before)", fixed), ("vqgen's choice (after)", None)):
            for _ in range(args.repeat):
                alone, _ = timed(out, 1, threads, args.epochs)
                two, said = timed(out, 2, threads, args.epochs)
                print(f"{label:<24} {alone:>7.1f}s {two:>11.1f}s  {' | '.join(said)}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
