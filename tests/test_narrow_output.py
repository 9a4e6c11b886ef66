"""Every command's output fits 80 columns, with long paths and long run names; paths are shortened, not cut
mid-word; the per-epoch lines too."""

from __future__ import annotations

import shutil

import pytest

from vqgen.files import shown_path

LONG = "a-folder-with-a-rather-long-name-" * 3


def wide_lines(r) -> list[str]:
    return [ln for ln in (r.stdout + r.stderr).splitlines() if len(ln) > 80]


@pytest.fixture
def long_home(home, tmp_path, monkeypatch):
    """The tiny runs (a VAE, a VQ-VAE, its prior) in a folder whose path is over 100 characters long, with a
    run whose name is long, trained on data given by its absolute path, at COLUMNS=80."""
    monkeypatch.setenv("COLUMNS", "80")
    folder = shutil.copytree(home, tmp_path / LONG / "home")
    assert len(str(folder / "mnist")) > 100
    return folder


def test_each_command_fits_80_columns(long_home, invoke):
    """Run by relative paths inside a long folder, data and runs by absolute ones where the command prints no
    output path: the path a command prints last, on stdout alone, is the one it was given, whole, for scripts."""
    name = "a-run-with-a-long-name-of-forty-letters"
    commands = [
        ("train", "--dataset", long_home / "mnist", "--config", long_home / "vqvae.yaml", "--epochs", 2,
         "--name", name),
        ("train", "--model", "prior", "--config", long_home / "prior.yaml", "--run", f"runs/{name}"),
        ("reconstruct", "--run", f"runs/{name}"),
        ("interpolate", "4", "9", "--run", f"runs/{name}"),
        ("interpolate", "#3", "#10", "--run", "runs/vae-mnist"),
        ("gif", "4", "9", "--run", "runs/vqvae-mnist"),
        ("gif", "--training", f"runs/{name}"),
        ("sample", "--digit", 7, "--n", 4, "--run", f"runs/{name}"),
        ("sample", "--n", 4, "--run", "runs/vae-mnist"),
        ("eval", "--run", long_home / "runs" / name),
        ("eval", "--all", "--run", f"runs/{name}"),
        ("info", long_home / "runs" / name),
        ("info", "runs/prior-mnist"),
        ("runs",),
        ("runs", "--out", long_home / "runs"),
        ("compare", f"runs/{name}", "runs/vqvae-mnist"),
        ("map", "--n", 64, "--run", f"runs/{name}"),
        ("--help",),
        ("train", "--help"),
    ]
    for args in commands:
        r = invoke(*args, cwd=long_home)
        assert r.exit_code == 0, (args, r.output)
        assert not wide_lines(r), (args, wide_lines(r))
    listing = invoke("runs", cwd=long_home).stdout
    assert name in listing and "mnist" in listing, listing   # the name whole, the data's folder named


def test_paths_are_shortened_in_the_middle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deep = tmp_path.parent / LONG / "data" / "mnist"
    shown = shown_path(deep, 30)
    assert len(shown) == 30 and shown.endswith("/data/mnist") and "…" in shown
    assert shown_path(tmp_path / "runs" / "vqvae-mnist") == "runs/vqvae-mnist"
    assert shown_path("ylecun/mnist") == "ylecun/mnist" and shown_path("mnist") == "mnist"
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    assert shown_path(tmp_path.parent / "data" / "mnist") == "~/data/mnist"


def test_an_epoch_takes_two_lines_where_one_is_too_wide():
    import io

    from rich.console import Console

    from vqgen import models
    from vqgen.progress import TrainProgress

    logs = {"loss": 0.0254, "mse": 0.0253, "vq": 8.91e-06, "usage": 0.76, "perplexity": 196.0,
            "test_loss": 0.0242, "test_mse": 0.0242, "test_vq": 1e-5, "test_psnr": 16.2, "test_usage": 0.63,
            "test_perplexity": 155.0}
    for width, lines in ((80, 2), (200, 1)):
        out = io.StringIO()
        p = TrainProgress(console=Console(file=out, width=width), live=False)
        p.describe(models.figures([models.get("vqvae")]))
        p.start(epochs=10, start_epoch=0, batches=5)
        p.end_epoch(5, logs)
        text = out.getvalue().splitlines()
        assert len(text) == lines and all(len(ln) <= width for ln in text), text
        assert text[0].startswith("epoch 5/10  loss 0.0254") and "held out: loss 0.0242" in text[-1], text
        assert "PSNR 16.2" in text[-1] and "ppl 196" in text[0]


def test_eval_says_which_figures_are_held_out(home, invoke):
    r = invoke("eval", "--run", "runs/vqvae-mnist", cwd=home)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == "MSE, PSNR dB, usage, ppl: on the held-out images; img/s, s: of training"
