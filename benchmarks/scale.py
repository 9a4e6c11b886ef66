"""Data at scale on this machine: decoding on one core and on all, the cache, anonymous memory, first batch, epochs.

Each measurement runs in a child process, whose process tree (decoding
workers included) this script samples five times a second for its resident
anonymous memory (RssAnon: memory the process owns, not pages of files it
maps, such as a memory-mapped cache).

    python benchmarks/build_faces.py --count 63565 --out /tmp/faces-63565
    python benchmarks/scale.py decode --folder /tmp/faces-63565            # 1 process, then every core
    python benchmarks/scale.py first-batch --folder /tmp/faces-63565       # from the cache: in memory, mapped
    python benchmarks/scale.py train --folder /tmp/faces-200000 --in-memory no --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TINY_FACES = {"epochs": 1, "batch_size": 64, "hidden": 32, "res_hidden": 16, "res_blocks": 1, "downsample": 3,
              "codebook_size": 256, "code_dim": 4, "eval_batch_size": 500}


def rss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    parents: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def measured(cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; return it, its wall time and the peak RssAnon (GB) of its process tree."""
    peak = [0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], sum(rss_anon_kb(p) for p in tree(proc.pid)))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, peak[0] / 1024 / 1024


def decode(folder: Path) -> None:
    code = ("import json, sys, time; from vqgen import data as D; t = time.perf_counter(); "
            "d = D.load_images(sys.argv[1], 96, 3, workers=None if sys.argv[2] == 'all' else int(sys.argv[2])); "
            "print(json.dumps({'seconds': time.perf_counter() - t, 'images': len(d.train_images) + len(d.test_images),"
            " 'skipped': d.skipped}))")
    cores = len(os.sched_getaffinity(0))
    # Read every file once, so that both runs find them in the OS's cache, not only the second.
    t0 = time.perf_counter()
    size = sum(len(p.read_bytes()) for p in folder.rglob("*") if p.is_file())
    print(f"read {size / 1e6:,.0f} MB of files in {time.perf_counter() - t0:.1f} s first", flush=True)
    for workers in ("0", "all"):
        cache = tempfile.mkdtemp(prefix="vqgen-cache-")
        try:
            done, wall, peak = measured([sys.executable, "-c", code, str(folder), workers],
                                        env={**os.environ, "VQGEN_CACHE": cache})
            if done.returncode:
                sys.exit(done.stderr)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            size = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file())
            label = "1 process" if workers == "0" else f"all {cores} cores"
            print(f"decode {folder.name}, {label}: {r['images']:,} images in {r['seconds']:.1f} s = "
                  f"{r['images'] / r['seconds']:,.0f} images/s; whole command {wall:.1f} s; cache {size / 1e9:.2f} GB; "
                  f"peak RssAnon {peak:.2f} GB", flush=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)


def first_batch(folder: Path) -> None:
    code = ("import sys, time; t0 = time.perf_counter(); import torch; from vqgen import data as D; "
            "t1 = time.perf_counter(); d = D.load_images(sys.argv[1], 96, 3, in_memory=sys.argv[2] == 'yes'); "
            "x, _ = next(iter(D.Batches(d.train_images, None, 64, on_host=d.mapped))); t2 = time.perf_counter(); "
            "print(f'imports {t1 - t0:.2f} s, cache to first batch {t2 - t1:.2f} s, mapped {d.mapped}')")
    for in_memory in ("yes", "no"):
        done, wall, peak = measured([sys.executable, "-c", code, str(folder), in_memory])
        print(f"first batch of {folder.name} from the cache, in memory: {in_memory}: {done.stdout.strip()}; "
              f"peak RssAnon {peak:.2f} GB {done.stderr.strip()[-200:] if done.returncode else ''}", flush=True)


def train(folder: Path, in_memory: str, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        cfg = Path(out) / "tiny-faces.yaml"
        cfg.write_text("".join(f"{k}: {v}\n" for k, v in {**TINY_FACES, "epochs": epochs,
                                                            "data_in_memory": in_memory}.items()))
        cmd = [sys.executable, "-m", "vqgen", "train", "--dataset", str(folder), "--config", str(cfg), "--out", out]
        done, wall, peak = measured(cmd)
        if done.returncode:
            sys.exit(done.stderr[-2000:])
        run = Path(done.stdout.strip().splitlines()[-1])
        import csv

        rows = list(csv.DictReader(open(run / "metrics.csv")))
        print(f"train a small VQ-VAE on {folder.name} (data_in_memory: {in_memory}): whole command {wall:.0f} s, "
              f"epochs {[round(float(r['seconds'])) for r in rows]} s at "
              f"{[round(float(r['img_per_s'])) for r in rows]} images/s; peak RssAnon {peak:.2f} GB; "
              f"test MSE {float(rows[-1]['test_mse']):.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["decode", "first-batch", "train"])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--in-memory", default="auto", choices=["auto", "yes", "no"])
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    print(f"# {os.cpu_count()} cores; {args.what} on {args.folder}", flush=True)
    if args.what == "decode":
        decode(args.folder)
    elif args.what == "first-batch":
        first_batch(args.folder)
    else:
        train(args.folder, args.in_memory, args.epochs)


if __name__ == "__main__":
    main()
