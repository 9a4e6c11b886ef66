"""Throughput of vqgen's models and data pipeline, in images per second.

Trains each model for a few steps on random data of its real shape (the
step is the trainer's: forward, loss, backward, clipped fused Adam) and times
the data pipeline against the usual per-sample PIL-transform DataLoader.

    python benchmarks/speed.py                 # everything, on the default device
    python benchmarks/speed.py --device cuda --only vqvae vae
    python benchmarks/speed.py --device cuda --batch-sizes "vqvae=256,1024;vae=512"
    python benchmarks/speed.py --device cuda --only vqvae vae --compile     # torch.compile'd steps
    python benchmarks/speed.py --device cuda --only vqvae --profile          # where a step's time goes
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

from vqgen import models
from vqgen.data import Batches
from vqgen.trainer import autocast
from vqgen.training import resolve_device, resolve_precision


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, batch_fn, device, steps, precision="fp32", warmup=3, profile=False) -> float:
    """Images (or code grids) per second of the trainer's step: forward, loss, backward, clipped fused Adam."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    n = 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
            n = 0
        batch = batch_fn()
        with autocast(device.type, precision):
            out = model(*batch)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(out["loss"]).backward()
            scaler.unscale_(opt)
        else:
            out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()
        n += batch[0].shape[0]
    sync(device)
    rate = n / (time.perf_counter() - t0)
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            time_steps(model, batch_fn, device, 10, precision, warmup=0)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))
    return rate


SHAPES = {"vqvae": models.ImageShape(28, 1), "vae": models.ImageShape(96, 3), "prior": models.CodeShape(512, 7, 10)}


def model_and_batch(name: str, batch_size: int, device):
    """The model as `vqgen train` builds it for its data, and a random batch of that data's shape."""
    spec = models.get(name)
    shape = SHAPES[name]
    model = spec.build(spec.config(spec.defaults(shape)[1])).to(device)
    if spec.trains_on == "codes":
        batch = (torch.randint(0, shape.codebook_size, (batch_size, shape.grid, shape.grid), device=device),
                 torch.randint(0, shape.num_classes, (batch_size,), device=device))
    else:
        model = model.to(memory_format=torch.channels_last)
        batch = (torch.rand(batch_size, shape.channels, shape.size, shape.size, device=device)
                 .contiguous(memory_format=torch.channels_last),)
    return model, batch


def bench_models(device, only, steps, batch_sizes, compile_=False, profile=False):
    """Each model at fp32 and batch 64, and at the automatic GPU settings (its gpu_defaults batch, and bf16 or
    fp16 on a GPU); extra batch sizes (--batch-sizes) at both precisions."""
    results = {}
    auto = resolve_precision("auto", device)
    for name in ("vqvae", "vae", "prior"):
        if name not in only:
            continue
        spec = models.get(name)
        gpu_batch = spec.gpu_defaults.get("batch_size", 64)
        settings = [(64, "fp32")] + [(b, p) for b in batch_sizes.get(name, []) for p in ("fp32", auto)]
        settings.append((gpu_batch, auto))
        seen = set()
        for bs, precision in settings:
            if (bs, precision) in seen:
                continue
            seen.add((bs, precision))
            model, batch = model_and_batch(name, bs, device)
            if compile_:
                model = torch.compile(model)
            n = steps if name != "vae" else max(3, steps // 4)
            label = f"train {name} (batch {bs}, {precision}{', compiled' if compile_ else ''})"
            results[label] = time_steps(model, lambda: batch, device, n, precision, warmup=10 if compile_ else 3,
                                        profile=profile and (bs, precision) == (gpu_batch, auto))
            print(f"{label:60s} {results[label]:10.1f}", flush=True)
        if name == "prior":
            p = model_and_batch("prior", 64, device)[0].eval()
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
    ap.add_argument("--batch-sizes", default="", help="more batch sizes, e.g. vqvae=256,1024;vae=128")
    ap.add_argument("--compile", action="store_true", help="torch.compile each model first")
    ap.add_argument("--profile", action="store_true", help="print the costliest operations at the GPU defaults")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.set_flush_denormal(True)   # as training does
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sizes = {}
    for part in filter(None, args.batch_sizes.split(";")):
        k, v = part.split("=")
        sizes[k] = [int(s) for s in v.split(",")]
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    results = bench_models(device, args.only, args.steps, sizes, args.compile, args.profile)
    if "data" in args.only:
        results.update(bench_data(device, args.data_images, args.workers))
    for k, v in results.items():
        print(f"{k:60s} {v:10.3f}" if "seconds" in k else f"{k:60s} {v:10.1f}")


if __name__ == "__main__":
    main()
