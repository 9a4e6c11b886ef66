"""Plots: a run's curves, one panel per kind of figure, with axes that read as numbers people write."""

import re

import numpy as np
from PIL import Image


def test_curves_have_one_panel_per_kind_and_a_one_epoch_run_is_a_curve():
    from vqgen import plots

    steps = [{"step": s, "epoch": s / 50, "loss": 2e4 - 10 * s, "recon": 1.9e4 - 10 * s, "kl": 30 + s / 10,
              "mse": 0.05 - s / 2000, "lr": 1e-3} for s in range(1, 51)]
    epochs = [{"epoch": 1, "test_loss": 1.8e4, "test_mse": 0.025, "test_kl": 34.0}]
    fig = plots.curves_figure([("vae", steps, epochs)])
    panels = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_visible() and ax.get_ylabel()}
    assert {"loss", "reconstruction MSE", "KL divergence", "learning rate"} <= set(panels)
    # The loss (about 2e4) and the MSE (about 0.03) never share an axis.
    loss_values = [v for line in panels["loss"].get_lines() for v in line.get_ydata()]
    mse_values = [v for line in panels["reconstruction MSE"].get_lines() for v in line.get_ydata()]
    assert min(loss_values) > 1000 and max(mse_values) < 1
    # One epoch: a line of 50 logged steps across it, the held-out point at its end, inside the frame.
    line = panels["reconstruction MSE"].get_lines()[0]
    assert len(line.get_xdata()) == 50
    lo, hi = panels["reconstruction MSE"].get_xlim()
    assert lo < 0.02 and hi > 1.0
    # Ticks read as numbers people write.
    fig.canvas.draw()
    labels = [t.get_text() for t in panels["reconstruction MSE"].get_yticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"[0-9.e\-]+", t) and len(t) <= 6 for t in labels), labels


def test_the_psnr_axis_reads_in_plain_decibels():
    from vqgen import plots

    steps = [{"step": s, "epoch": s / 100, "loss": 0.1 / s, "mse": 0.1 / s ** 0.8} for s in range(1, 301)]
    fig = plots.curves_figure([("vqvae", steps, [{"epoch": 3, "test_mse": 0.0019}])])
    mse = next(ax for ax in fig.axes if ax.get_ylabel() == "reconstruction MSE")
    psnr = next(ax for ax in mse.child_axes if ax.get_ylabel() == "PSNR (dB)")
    fig.canvas.draw()
    labels = [t.get_text() for t in psnr.get_yticklabels() + psnr.get_yticklabels(minor=True) if t.get_text()]
    assert len(labels) >= 3 and all(re.fullmatch(r"[0-9]+(\.[0-9]+)?", t) for t in labels), labels


def test_a_run_writes_its_curves(records_home):
    img = Image.open(records_home / "runs" / "vqvae-mnist" / "loss_curve.png")
    assert img.size[0] >= 1000 and np.asarray(img.convert("L")).std() > 10
