"""Plots of a run's figures, with matplotlib (its Agg canvas: no display and no global pyplot state).

One panel per kind of figure: the loss terms, the reconstruction error (MSE,
with PSNR on the right-hand axis), codebook use (usage and perplexity), the KL
term, bits per code, and the learning rate. Training figures logged every few
steps are lines; held-out figures after each epoch are points over them.
`vqgen compare` draws several runs in the same panels, one colour each.
"""

from __future__ import annotations

import math
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from vqgen.files import readable, write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return (np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)) if pts \
        else (np.zeros(0), np.zeros(0))


def panels(figures) -> list[tuple[str, tuple[str, ...], bool]]:
    """(panel label, figures drawn in it, log scale) from the models' declared figures, in their order."""
    out: dict[str, tuple[list[str], bool]] = {}
    for f in figures:
        if f.panel:
            out.setdefault(f.panel, ([], f.log))[0].append(f.name)
    return [(label, tuple(keys), log) for label, (keys, log) in out.items()]


def _panels(runs: list[tuple[str, list[dict], list[dict]]], figures) -> list[tuple[str, tuple[str, ...], bool]]:
    """The panels any of the runs has data for."""
    def has(key):
        return any(_series(steps, key)[0].size or _series(epochs, f"test_{key}")[0].size
                   or _series(epochs, f"train_{key}")[0].size for _, steps, epochs in runs)
    return [p for p in panels(figures) if any(has(k) for k in p[1])]


def _draw(ax, runs, keys: tuple[str, ...], log: bool, many: bool) -> None:
    lines = 0
    for r, (name, steps, epochs) in enumerate(runs):
        for k, key in enumerate(keys):
            colour = COLOURS[(r if many else k) % len(COLOURS)]
            who = f"{name}: " if many else ""
            x, y = _series(steps, key)
            if not x.size:   # no per-step log (a run of vqgen 0.2): the per-epoch training figure
                x, y = _series(epochs, f"train_{key}")
            if x.size:
                ax.plot(x, y, color=colour, lw=1.2, alpha=0.85, marker="" if len(x) > 3 else "o", ms=3,
                        label=f"{who}{key} (train)" if not many or k == 0 else None)
                lines += 1
            x, y = _series(epochs, f"test_{key}")
            if x.size:
                ax.plot(x, y, "o", color=colour, ms=6, mec="black", mew=0.6,
                        label=f"{who}{key} (held out, per epoch)" if not many or k == 0 else None)
                lines += 1
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    # A log scale only where the values span more than a decade: a narrow one has unreadable ticks.
    if log and values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    _plain_ticks(ax.yaxis)


def _plain_ticks(axis) -> None:
    """Tick labels as numbers people write (0.01, 20), none on minor ticks: a log scale would write 2x10^1."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def curves_figure(runs: list[tuple[str, list[dict], list[dict]]], title: str = "", figures=None) -> "Figure":
    """Panels of the runs' figures: (name, per-step rows of steps.csv, per-epoch rows of metrics.csv) each.

    `figures`: what the runs' models report (`models.figures(specs)`; default: every registered model's)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    if figures is None:
        from vqgen import models

        figures = models.figures()
    by_name = {f.name: f for f in figures}
    runs, title = [(readable(name), steps, epochs) for name, steps, epochs in runs], readable(title)
    panels = _panels(runs, figures) or [("loss", ("loss",), True)]
    many = len(runs) > 1
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (label, keys, log) in zip(axes, panels):
        _draw(ax, runs, keys[:1] if many else keys, log, many)   # compared: one colour per run, the main term
        ax.set_ylabel(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=max(_epochs(runs)) >= 2))
        main = by_name[keys[0]]
        if main.fmt.endswith("%}"):   # a share: 0-100%
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_ylim(0, 1.05)
        if main.twin:
            _twin_axis(ax, runs, by_name[main.twin], many)
        if keys == ("mse",):   # vqgen derives PSNR from MSE: the same points read in dB on the right
            psnr_axis = ax.secondary_yaxis("right", functions=(_psnr, _mse))
            psnr_axis.set_ylabel("PSNR (dB)")
            psnr_axis.yaxis.set_major_locator(MaxNLocator(nbins=6))   # evenly spaced dB, not the MSE's decades
            _plain_ticks(psnr_axis.yaxis)
        if ax.get_legend_handles_labels()[0] and not many:
            ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, fontsize=8, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if many:
        handles = [axes[0].plot([], [], color=COLOURS[i % len(COLOURS)], lw=2)[0] for i in range(len(runs))]
        fig.legend(handles, [name for name, _, _ in runs], loc="outside lower center", ncol=min(4, len(runs)),
                   fontsize=9, frameon=False, title="lines: training; dots: held out, per epoch")
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _epochs(runs) -> list[float]:
    return [max([r["epoch"] for r in epochs] or [1]) for _, _, epochs in runs] or [1]


def _psnr(mse):
    return -10 * np.log10(np.clip(mse, 1e-12, None))


def _mse(psnr):
    return 10 ** (-np.asarray(psnr) / 10)


def _twin_axis(ax, runs, figure, many: bool) -> None:
    right = ax.twinx()
    _draw(right, runs, (figure.name,), False, many)
    for line in right.get_lines():
        line.set_linestyle("--")
        if not many:
            line.set_color("#555555")
    right.set_ylabel(f"{figure.label} (dashed)")
    right.set_ylim(bottom=0)


def to_image(fig: "Figure") -> "Image.Image":
    """A figure as a PIL image (for a page). Figures here are made without pyplot: nothing to close."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def code_colours(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Code grids (..., h, w) of indices as (..., h, w, 3) uint8 colours, one colour per code."""
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    return (cmap(codes / max(codebook_size - 1, 1))[..., :3] * 255).round().astype(np.uint8)


def save(fig: "Figure", path: Path) -> Path:
    """A figure as a PNG (or the format of the file name's suffix), drawn in memory and written whole."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", facecolor="white")
    return write_bytes(path, buf.getvalue())


def latent_map_figure(coords: np.ndarray, labels: np.ndarray | None, class_names: list[str] | None,
                      explained: tuple[float, float], title: str, usage: np.ndarray | None = None,
                      examples: list[tuple[np.ndarray, np.ndarray]] | None = None) -> "Figure":
    """A scatter of 2-D latents coloured by class; for a model with codes, codebook use and example code grids."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    extra = usage is not None
    title, class_names = readable(title), [readable(str(c)) for c in class_names] if class_names else class_names
    fig = Figure(figsize=(14 if extra else 7, 7 if extra else 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3 if extra else 1, width_ratios=[1.6, 1, 1] if extra else [1],
                            height_ratios=[1, 1.2] if extra else [1, 1])
    ax = fig.add_subplot(grid[:, 0])
    if labels is not None and class_names:
        for k, name in enumerate(class_names):
            mask = labels == k
            if mask.any():
                ax.scatter(coords[mask, 0], coords[mask, 1], s=6, alpha=0.6, color=_class_colour(k),
                           label=str(name), rasterized=True)
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2.5,
                  frameon=False)
    else:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.5, color=COLOURS[0], rasterized=True)
    ax.set_xlabel(f"principal component 1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({explained[1]:.0%})")
    ax.set_title("held-out latents, 2-D (PCA)")
    ax.grid(alpha=0.3)
    if extra:
        side = math.ceil(math.sqrt(len(usage)))
        padded = np.full(side * side, np.nan)
        padded[: len(usage)] = usage
        hax = fig.add_subplot(grid[0, 1:])
        im = hax.imshow(padded.reshape(side, side), cmap="viridis", interpolation="nearest")
        hax.set_title(f"codebook use, held out: {(usage > 0).mean():.0%} of {len(usage)} codes", fontsize=10)
        hax.set_xticks([])
        hax.set_yticks([])
        fig.colorbar(im, ax=hax, label="times used", shrink=0.8)
        # The two test images and their code grids: four panels of one size, in one row of their own (a
        # panel per gridspec cell would take the colorbar's width from the first pair only).
        pairs = (examples or [])[:2]
        row = grid[1, 1:].subgridspec(1, 2 * max(1, len(pairs)), wspace=0.04)
        for i, (image, codes) in enumerate(pairs):
            iax, cax = fig.add_subplot(row[2 * i]), fig.add_subplot(row[2 * i + 1])
            iax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            cax.imshow(codes % 20, cmap="tab20", vmin=0, vmax=19, interpolation="nearest", alpha=0.55)
            if codes.shape[0] <= 8:   # the numbers where the cells are large enough to read them
                size = 9 if codes.max() < 100 else 7.5
                for (y, x), c in np.ndenumerate(codes):
                    cax.text(x, y, str(c), ha="center", va="center", fontsize=size)
            iax.set_title("test image", fontsize=9)
            cax.set_title("its codes", fontsize=9)
            for a in (iax, cax):
                a.set_xticks([])
                a.set_yticks([])
    fig.suptitle(title, fontsize=12)
    return fig


def _class_colour(k: int):
    from matplotlib import colormaps

    return colormaps["tab10" if k < 10 else "tab20"](k % 20)
