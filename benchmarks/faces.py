"""Face quality without downloaded weights: the VAE, the VQ-VAE and the adversarial VQ-VAE, with their priors.

For each autoencoder, on the whole held-out split: PSNR and SSIM (torchmetrics'
SSIM, 11x11 Gaussian window, data range 1) of its reconstructions. For new
images: sharpness, the variance of the Laplacian of the grey image (mean over
images), against the same figure for the real held-out faces; and the seconds
to draw 16 faces on this machine.

    pip install -e ".[bench]"     # torchmetrics, for this script only
    python benchmarks/faces.py --vae runs/vae-anime-faces --vqvae runs/vqvae-anime-faces \
        --vqgan runs/vqgan-anime-faces --grids /tmp/faces-grids

`--grids` writes the sample grids there to look at: keep them out of the
repository (the faces are copyrighted, and so is what a model makes of them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vqgen

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def sharpness(images: torch.Tensor, scale: int = 1) -> float:
    """Mean over images of the variance of the Laplacian of the grey image (pixels in [0, 255]); `scale` 2
    measures it on the image at half size (edges of shapes rather than of single pixels)."""
    grey = F.avg_pool2d(images.float(), scale) if scale > 1 else images.float()
    if grey.shape[1] == 3:
        grey = (grey * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return F.conv2d(grey * 255, LAPLACIAN).flatten(1).var(dim=1).mean().item()


def reconstruction_scores(model: vqgen.Model, images: torch.Tensor) -> dict[str, float]:
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    recon = torch.cat([model.reconstruct(images[i:i + 200]) for i in range(0, len(images), 200)])
    return {"psnr": peak_signal_noise_ratio(recon, images, data_range=1.0).item(),
            "ssim": structural_similarity_index_measure(recon, images, data_range=1.0).item(),
            "recon_sharpness": sharpness(recon)}


def timed_sample(model: vqgen.Model, n: int, seed: int, **options) -> tuple[torch.Tensor, float]:
    model.sample(2, seed=seed, **options)   # load the sampler and warm up
    t0 = time.perf_counter()
    images = model.sample(n, seed=seed, **options)
    return images, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", type=Path, help="a VAE run on the faces")
    ap.add_argument("--vqvae", type=Path, help="a VQ-VAE run on the faces, with a prior trained on it")
    ap.add_argument("--vqgan", type=Path, action="append", default=[],
                    help="a VQGAN run on the faces, with a prior trained on it (repeat for several)")
    ap.add_argument("--temperature", type=float, help="the priors' sampling temperature (default: their own)")
    ap.add_argument("--top-k", type=int, help="the priors' top-k (default: their own)")
    ap.add_argument("--n", type=int, default=64, help="samples per sampler for the sharpness figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grids", type=Path, help="write sample grids here (never into the repository)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    vae = vqgen.load(args.vae) if args.vae else None
    vq = vqgen.load(args.vqvae) if args.vqvae else None
    gans = [(f"VQGAN {path.name}", vqgen.load(path)) for path in args.vqgan]
    autoencoders = [*((("VAE", vae),) if vae else ()), *((("VQ-VAE", vq),) if vq else ()), *gans]
    if not autoencoders:
        ap.error("give at least one run: --vae, --vqvae or --vqgan")
    prior = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k)) if v is not None}
    real = autoencoders[0][1].data().test_images.float().div(255)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(real)} held-out faces", flush=True)

    print("\n| model | held-out PSNR (dB) | SSIM | reconstruction sharpness |")
    print("|---|---|---|---|")
    for name, model in autoencoders:
        s = reconstruction_scores(model, real)
        print(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['recon_sharpness']:.0f} |", flush=True)

    real_sharp, real_half = sharpness(real), sharpness(real, 2)
    rows = [("real held-out faces", real[:args.n], None)]
    samplers = [*((("VAE, z ~ N(0, I)", vae, {"sampler": "prior"}), ("VAE, mix", vae, {"sampler": "mix"})) if vae else ()),
                *((("VQ-VAE + prior", vq, prior),) if vq else ()), *((f"{n} + prior", m, prior) for n, m in gans)]
    for name, model, options in samplers:
        images, _ = timed_sample(model, args.n, args.seed, **options)
        _, seconds = timed_sample(model, 16, args.seed + 1, **options)
        rows.append((name, images, seconds))
    print("\n| images | sharpness (variance of the Laplacian) | vs real | at half size | vs real | seconds for 16 |")
    print("|---|---|---|---|---|---|")
    for name, images, seconds in rows:
        s, h = sharpness(images), sharpness(images, 2)
        print(f"| {name} | {s:.0f} | {s / real_sharp:.0%} | {h:.0f} | {h / real_half:.0%} | "
              f"{'' if seconds is None else f'{seconds:.2f}'} |")
        if args.grids is not None:
            args.grids.mkdir(parents=True, exist_ok=True)
            stem = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
            vqgen.show(images, nrow=8).save(args.grids / f"{stem}.png")


if __name__ == "__main__":
    main()
