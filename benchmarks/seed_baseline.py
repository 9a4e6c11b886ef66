"""The seed project's VQ-VAE training, rebuilt as a baseline to time on this machine.

Same setup as the first seed's public code: torchvision's MNIST through a
per-sample `ToTensor` DataLoader (batch 128, shuffled, no workers), a VQ-VAE
with 64 hidden channels, 64 codes of dimension 16 on a 7x7 grid, a codebook
loss with commitment 0.25 and a sigmoid output, Adam at 1e-3. It reports the
seconds per epoch and, after the epochs asked for, the test MSE.

    python benchmarks/seed_baseline.py --idx ../shared/datasets/mnist-idx --epochs 1
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class SeedQuantizer(nn.Module):
    def __init__(self, codes=64, dim=16, beta=0.25):
        super().__init__()
        self.embedding = nn.Embedding(codes, dim)
        self.embedding.weight.data.uniform_(-1 / codes, 1 / codes)
        self.dim, self.beta = dim, beta

    def forward(self, z):
        zb = z.permute(0, 2, 3, 1).contiguous()
        flat = zb.view(-1, self.dim)
        w = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * flat @ w.t()
        idx = d.argmin(1)
        onehot = F.one_hot(idx, w.shape[0]).float()
        q = (onehot @ w).view_as(zb)
        loss = F.mse_loss(q, zb.detach()) + self.beta * F.mse_loss(q.detach(), zb)
        q = zb + (q - zb).detach()
        return loss, q.permute(0, 3, 1, 2).contiguous()


def seed_model(h=64, dim=16):
    enc = nn.Sequential(nn.Conv2d(1, h // 2, 4, 2, 1), nn.ReLU(), nn.Conv2d(h // 2, h, 4, 2, 1), nn.ReLU(),
                        nn.Conv2d(h, dim, 3, 1, 1))
    dec = nn.Sequential(nn.Conv2d(dim, h, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(h, h // 2, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(h // 2, 1, 4, 2, 1), nn.Sigmoid())
    return enc, SeedQuantizer(dim=dim), dec


def torchvision_mnist(idx_dir: Path, root: Path, train: bool):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in idx_dir.glob("*-ubyte.gz"):
        target = raw / gz.name[:-3]
        if not target.exists():
            with gzip.open(gz) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return datasets.MNIST(str(root), train=train, download=False, transform=transforms.ToTensor())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idx", type=Path, required=True, help="folder with the four MNIST IDX .gz files")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        train = torchvision_mnist(args.idx, Path(tmp), True)
        test = torchvision_mnist(args.idx, Path(tmp), False)
        loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=0)
        enc, vq, dec = seed_model()
        params = [*enc.parameters(), *vq.parameters(), *dec.parameters()]
        opt = torch.optim.Adam(params, lr=1e-3)
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            for x, _ in loader:
                vq_loss, q = vq(enc(x))
                loss = F.mse_loss(dec(q), x) + vq_loss
                opt.zero_grad()
                loss.backward()
                opt.step()
            print(f"epoch {epoch + 1}: {time.perf_counter() - t0:.1f} s", flush=True)
        with torch.no_grad():
            total = 0.0
            for x, _ in DataLoader(test, batch_size=1000):
                total += F.mse_loss(dec(vq(enc(x))[1]), x, reduction="sum").item()
        print(f"test MSE after {args.epochs} epochs: {total / (len(test) * 784):.5f}")


if __name__ == "__main__":
    main()
