"""Throughput of vqgen's models and data pipeline, in images per second.

Trains each model for a few steps on random data of its real shape (the
step is the trainer's: forward, loss, backward, clipped fused Adam) and times
the data pipeline against the usual per-sample PIL-transform DataLoader.

    python benchmarks/speed.py                 # everything, on the default device
    python benchmarks/speed.py --device cuda --only vqvae vae
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from vqgen.data import Batches
from vqgen.models import VAE, VQVAE, CodePrior, PriorConfig, VAEConfig, VQVAEConfig
from vqgen.training import resolve_device


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, batch_fn, device, steps, warmup=3) -> float:
    model.train()
    conv = not isinstance(model, CodePrior)
    if conv:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    n = 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
            n = 0
        batch = batch_fn()
        out = model(*batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        n += batch[0].shape[0]
    sync(device)
    return n / (time.perf_counter() - t0)


def bench_models(device, only, steps, batch_sizes):
    results = {}
    if "vqvae" in only:
        for bs in batch_sizes.get("vqvae", [64]):
            m = VQVAE(VQVAEConfig()).to(device)
            x = torch.rand(bs, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
            results[f"train vqvae 28x28 (batch {bs})"] = time_steps(m, lambda: (x,), device, steps)
    if "vae" in only:
        for bs in batch_sizes.get("vae", [64]):
            m = VAE(VAEConfig()).to(device)
            x = torch.rand(bs, 3, 96, 96, device=device).contiguous(memory_format=torch.channels_last)
            results[f"train vae 96x96 (batch {bs})"] = time_steps(m, lambda: (x,), device, max(3, steps // 4))
    if "prior" in only:
        for bs in batch_sizes.get("prior", [128]):
            p = CodePrior(PriorConfig(codebook_size=512, grid=7, num_classes=10)).to(device)
            c = torch.randint(0, 512, (bs, 7, 7), device=device)
            y = torch.randint(0, 10, (bs,), device=device)
            results[f"train prior 7x7 codes (batch {bs})"] = time_steps(p, lambda: (c, y), device, steps)
        p.eval()
        for guidance in (1.0, 1.5):
            sync(device)
            t0 = time.perf_counter()
            p.sample(64, torch.arange(64, device=device) % 10, guidance=guidance)
            sync(device)
            results[f"prior: seconds to sample 64 code grids (guidance {guidance})"] = time.perf_counter() - t0
    return results


class PILDataset(Dataset):
    """The slow baseline: PIL images transformed one at a time."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), 0


def bench_data(device, n_images, workers):
    results = {}
    rng = np.random.default_rng(0)
    for name, shape, augment in (("mnist 28x28", (28, 28), False), ("faces 96x96 + flip/rotate", (96, 96, 3), True)):
        arr = rng.integers(0, 255, (n_images, *shape), dtype=np.uint8)
        tf = [transforms.RandomHorizontalFlip(), transforms.RandomRotation(10)] if augment else []
        loader = DataLoader(PILDataset(arr, transforms.Compose([*tf, transforms.ToTensor()])),
                            batch_size=64, shuffle=True, num_workers=workers)
        t0 = time.perf_counter()
        for x, _ in loader:
            x = x.to(device)
        sync(device)
        results[f"data {name}: PIL DataLoader ({workers} workers)"] = n_images / (time.perf_counter() - t0)
        t = torch.from_numpy(arr)
        t = t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()
        batches = Batches(t, None, 64, augment=augment, device=device)
        t0 = time.perf_counter()
        for x, _ in batches:
            pass
        sync(device)
        results[f"data {name}: vqgen Batches on {device.type}"] = n_images / (time.perf_counter() - t0)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", nargs="+", default=["vqvae", "vae", "prior", "data"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--data-images", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batch-sizes", default="", help="e.g. vqvae=64,512;vae=64,256")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sizes = {}
    for part in filter(None, args.batch_sizes.split(";")):
        k, v = part.split("=")
        sizes[k] = [int(s) for s in v.split(",")]
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    results = bench_models(device, args.only, args.steps, sizes)
    if "data" in args.only:
        results.update(bench_data(device, args.data_images, args.workers))
    for k, v in results.items():
        print(f"{k:60s} {v:10.3f}" if "seconds" in k else f"{k:60s} {v:10.1f}")


if __name__ == "__main__":
    main()
