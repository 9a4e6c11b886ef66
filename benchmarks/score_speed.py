"""How fast `vqgen score` computes features on this machine: the Inception features of 1,000 faces and the
digit reader's of 10,000 digits, and one FID of 500 against 500 Inception features.

    python benchmarks/score_speed.py --faces ../shared/datasets/anime-faces-hub
"""

import argparse
import time

from vqgen import data as D
from vqgen import score as S


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", required=True, help="a dataset of colour faces (at least 1,000 images)")
    args = parser.parse_args()
    x = D.load_images(args.faces, 96, 3).train_images[:1000]
    S.inception_features(x[:2])   # the network loaded once, before timing
    t = time.perf_counter()
    f = S.inception_features(x)
    a = time.perf_counter() - t
    print(f"Inception, {len(x):,} faces 96x96: {a:.1f} s ({len(x) / a:.1f} images/s)")
    y = D.load_images("mnist", 28, 1).train_images[:10000]
    S.digit_features(y[:10])
    t = time.perf_counter()
    S.digit_features(y)
    b = time.perf_counter() - t
    print(f"digit reader, {len(y):,} digits: {b:.2f} s ({len(y) / b:,.0f} images/s)")
    t = time.perf_counter()
    S.fid(f[:500], f[500:])
    print(f"FID of 500 against 500 Inception features: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
