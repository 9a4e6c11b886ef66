"""Make the copy of MNIST that ships inside vqgen (src/vqgen/resources/mnist/) from the original IDX files.

Each of the four gzipped IDX files is decompressed and compressed again with xz (LZMA2, preset 9e: the
densest of the forms tried, 9.2 MB against the .gz files' 11.4 MB; LZMA2's lc/lp/pb settings and a delta
filter gained under 0.3% or lost), then decompressed again and compared byte for byte with the original.

    python benchmarks/pack_mnist.py ../shared/datasets/mnist-idx     # about 100 s on one core
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import lzma
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "vqgen" / "resources" / "mnist"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("idx", type=Path, help="folder of the four original .gz IDX files")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    before = after = 0
    for name in FILES:
        gz = args.idx / f"{name}.gz"
        raw = gzip.decompress(gz.read_bytes())
        packed = lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
        assert lzma.decompress(packed) == raw, name
        (args.out / f"{name}.xz").write_bytes(packed)
        before, after = before + gz.stat().st_size, after + len(packed)
        print(f"{name}: {gz.stat().st_size:,} -> {len(packed):,} bytes; sha256 of the IDX bytes "
              f"{hashlib.sha256(raw).hexdigest()}")
    print(f"all four: {before:,} bytes gzipped, {after:,} with xz ({after / before:.0%})")


if __name__ == "__main__":
    main()
