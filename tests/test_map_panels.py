"""map.png: the two test images and their code grids are drawn at one size, their code numbers readable."""

from __future__ import annotations

import numpy as np


def test_the_example_panels_are_one_size_with_readable_numbers():
    from vqgen import plots

    rng = np.random.default_rng(0)
    examples = [(rng.random((28, 28)), rng.integers(0, 512, (7, 7))) for _ in range(2)]
    fig = plots.latent_map_figure(rng.normal(size=(50, 2)), rng.integers(0, 10, 50), [str(i) for i in range(10)],
                                  (0.2, 0.1), "title", rng.integers(0, 9, 512).astype(float), examples)
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_title() in ("test image", "its codes")]
    assert len(panels) == 4
    sizes = {tuple(np.round(ax.get_window_extent().size).astype(int)) for ax in panels}
    assert len(sizes) == 1, sizes
    width = sizes.pop()[0]
    assert width >= 150   # 7 cells of 20 px or more: room for a three-digit code
    numbers = [t for ax in panels for t in ax.texts]
    assert len(numbers) == 2 * 49 and min(t.get_fontsize() for t in numbers) >= 7
