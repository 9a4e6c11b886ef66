"""Train vqgen's digit reader on MNIST and write it into the package (src/vqgen/score/digit_reader.safetensors).

The reader (`vqgen.score.digits.DigitReader`) reads samples as digits for `vqgen score` and gives the
features of an MNIST FID. It trains on MNIST's training split, read through vqgen's own data loading,
with a light random affine jitter (rotation within 8 degrees, scale 0.9-1.1, shift within 2 px) so that
it also reads a model's slightly off-centre or blurred digits, and is evaluated on the test split. The
weights are stored in fp16 with the accuracy, epochs, seed and date in the file's metadata. One thread:
a few minutes on a CPU.

    python benchmarks/train_digit_reader.py                          # ../shared/datasets/mnist-idx
    python benchmarks/train_digit_reader.py --dataset mnist --out /tmp/reader.safetensors
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import vqgen
from vqgen import data as D
from vqgen.files import atomic_write
from vqgen.score import digits

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "mnist-idx"


def jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image rotated, scaled and shifted a little (one affine_grid / grid_sample per batch)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(8)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * 2 / x.shape[-1])   # 2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def evaluate(reader: digits.DigitReader, images: torch.Tensor, labels: torch.Tensor) -> float:
    reader.eval()
    with torch.no_grad():
        hits = sum((reader(x.float() / 255).argmax(1) == y).sum().item()
                   for x, y in zip(images.split(1000), labels.split(1000)))
    return hits / len(labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(DATASET), help="MNIST: a folder of IDX files, or a Hub name")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak of a one-cycle schedule")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=digits.WEIGHTS)
    ap.add_argument("--at-least", type=float, default=0.985, help="refuse to write a reader below this accuracy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    d = D.load_images(args.dataset, digits.SIZE, digits.CHANNELS, log=print)
    assert d.class_names == digits.CLASSES, d.class_names
    x, y = d.train_images, d.train_labels
    reader = digits.DigitReader()
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    opt = torch.optim.AdamW(reader.parameters(), args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        reader.train()
        for idx in torch.randperm(len(x), generator=gen).split(args.batch_size):
            loss = F.cross_entropy(reader(jitter(x[idx].float() / 255, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(reader, d.test_images, d.test_labels)
        print(f"epoch {epoch}/{args.epochs}: {acc:.2%} of the test split right "
              f"({time.perf_counter() - t0:.0f} s, {args.threads} thread(s))", flush=True)
    seconds = time.perf_counter() - t0
    if acc < args.at_least:
        raise SystemExit(f"the reader reads {acc:.2%} of the test split, below {args.at_least:.1%}: not written")
    state = {k: v.detach().half().contiguous() for k, v in reader.state_dict().items()}
    meta = {"test_accuracy": f"{acc:.4f}", "epochs": str(args.epochs), "seed": str(args.seed),
            "date": datetime.date.today().isoformat(), "dataset": "MNIST (train split; test split for accuracy)",
            "train_seconds": f"{seconds:.0f}", "vqgen": vqgen.__version__, "torch": torch.__version__,
            "weights": "fp16"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: save_file(state, str(tmp), metadata=meta))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB): {acc:.2%} on the test split, "
          f"{seconds:.0f} s of training")


if __name__ == "__main__":
    main()
