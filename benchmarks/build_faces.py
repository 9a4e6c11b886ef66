"""Build a large folder of synthetic 96x96 faces from the 2,000 of ../shared/datasets/anime-faces-96, for the scale benchmarks.

Each image is one of the source faces, flipped or not, cropped by a random
margin and scaled back to 96x96, and shifted in brightness, contrast and
colour balance, saved as JPEG. The folder goes under /tmp (the faces are
copyrighted: never commit them or anything made from them).

    python benchmarks/build_faces.py --count 63565 --out /tmp/faces-63565
    python benchmarks/build_faces.py --count 200000 --out /tmp/faces-200000
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

SOURCE = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "anime-faces-96"


def make(args: tuple[list[Path], int, int, str]) -> int:
    sources, start, count, out = args
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        with Image.open(sources[rng.integers(len(sources))]) as im:
            im = im.convert("RGB")
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = im.size
        m = int(rng.integers(0, 14))
        left, top = int(rng.integers(0, m + 1)), int(rng.integers(0, m + 1))
        im = im.crop((left, top, w - (m - left), h - (m - top))).resize((96, 96), Image.Resampling.BICUBIC)
        im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.8, 1.2)))
        im = ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.8, 1.2)))
        arr = np.asarray(im).astype(np.float32) * rng.uniform(0.9, 1.1, size=3)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(Path(out) / f"face_{i:06d}.jpg", quality=90)
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=SOURCE)
    args = ap.parse_args()
    if not str(args.out.resolve()).startswith("/tmp/"):
        ap.error("build it under /tmp: the faces are copyrighted and must not end up in the repository")
    sources = sorted(args.source.glob("*.jpg"))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chunk = 2000
    jobs = [(sources, s, min(chunk, args.count - s), str(args.out)) for s in range(0, args.count, chunk)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        done = sum(pool.map(make, jobs))
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{done:,} faces in {args.out} ({size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
