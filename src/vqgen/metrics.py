"""The figures vqgen reports, computed in one place: PSNR, and weighted means of loss terms."""

from __future__ import annotations

import math


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] with this mean squared error."""
    return 10 * math.log10(1 / max(float(mse), 1e-12))


class RunningMean:
    """The mean of each term over batches of different sizes, weighted by batch size.

    Values may be floats or 0-d tensors; tensors are summed where they live (no
    copy to the CPU per batch, which would stall a GPU) and read out by `mean`.
    """

    def __init__(self, sums: dict | None = None, count: int = 0):
        self.sums: dict = dict(sums or {})
        self.count = count

    def add(self, values: dict, n: int) -> None:
        for k, v in values.items():
            v = v.detach() if hasattr(v, "detach") else v
            self.sums[k] = self.sums[k] + v * n if k in self.sums else v * n
        self.count += n

    def mean(self) -> dict[str, float]:
        return {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}

    def state(self) -> dict:
        """Plain numbers, to save with a mid-epoch checkpoint."""
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count}
