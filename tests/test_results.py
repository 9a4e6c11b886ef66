"""Results people can see: plots, per-step records, TensorBoard, labelled pictures, runs, terminal output."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_VQVAE, labelled_grid, make_mnist_idx
from test_cli import invoke


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("results")
    os.environ["VQGEN_CACHE"] = str(home / "cache")
    make_mnist_idx(home / "mnist")
    (home / "vq.yaml").write_text(TINY_VQVAE)
    (home / "prior.yaml").write_text("epochs: 1\nbatch_size: 32\ndim: 16\nlayers: 1\n")
    for args in (["--dataset", home / "mnist", "--config", home / "vq.yaml", "--epochs", 3],
                 ["--dataset", home / "mnist", "--config", home / "vq.yaml", "--epochs", 2, "--lr", "0.003"],
                 ["--model", "prior", "--config", home / "prior.yaml", "--run", "runs/vqvae-mnist"]):
        r = invoke("train", *args, cwd=home)
        assert r.exit_code == 0, r.output
    return home


# --------------------------------------------------------------------------- records and plots


def test_steps_csv_and_tensorboard_events_hold_the_figures(home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vqgen.tracking import read_steps

    run = home / "runs" / "vqvae-mnist"
    steps = read_steps(run / "steps.csv")
    assert len(steps) >= 3 and steps[-1]["epoch"] == pytest.approx(3.0)
    assert {"loss", "mse", "vq", "usage", "perplexity", "lr", "img_per_s"} <= set(steps[0])
    assert all(a["step"] < b["step"] for a, b in zip(steps, steps[1:]))
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/mse", "train/usage", "train/perplexity", "train/lr", "train/img_per_s",
                "test/mse", "test/psnr", "test/usage"):
        assert tag in tags["scalars"], tag
    assert len(events.Scalars("test/mse")) == 3
    assert [e.step for e in events.Scalars("test/mse")] == [20, 40, 60]    # 20 batches an epoch
    recon = events.Images("pictures/recon")
    assert len(recon) == 3 and recon[0].width > 8 * 114   # the labelled grid itself


def test_resumed_runs_continue_their_record_without_repeats(home, tmp_path):
    from vqgen.tracking import read_steps

    run = tmp_path / "r"
    shutil.copytree(home / "runs" / "vqvae-mnist-2", run)
    before = read_steps(run / "steps.csv")
    r = invoke("train", "--resume", run, "--epochs", 3, cwd=home)
    assert r.exit_code == 0, r.output
    after = read_steps(run / "steps.csv")
    assert after[: len(before)] == before and after[-1]["epoch"] == pytest.approx(3.0)
    assert all(a["step"] < b["step"] for a, b in zip(after, after[1:]))


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


def test_a_run_writes_its_curves(home):
    img = Image.open(home / "runs" / "vqvae-mnist" / "loss_curve.png")
    assert img.size[0] >= 1000 and np.asarray(img.convert("L")).std() > 10


# --------------------------------------------------------------------------- pictures


def test_training_gif_frames_carry_their_epoch(home):
    r = invoke("gif", "--training", home / "runs" / "vqvae-mnist", cwd=home)
    assert r.exit_code == 0, r.output
    gif = Image.open(r.stdout.strip())
    assert gif.n_frames == 3
    tops = []
    for i in range(3):
        gif.seek(i)
        frame = np.asarray(gif.convert("L"))
        tops.append(frame[:20, :200].astype(int))
        assert (frame[:20, :200] < 128).sum() > 20     # "epoch N" written above the tiles
    assert np.abs(tops[0] - tops[1]).sum() > 0 and np.abs(tops[1] - tops[2]).sum() > 0


def test_sample_grids_say_what_they_hold(home, tmp_path):
    r = invoke("sample", "--n", 20, "--out", tmp_path / "all.png", cwd=home)
    assert r.exit_code == 0, r.output
    labelled_grid(tmp_path / "all.png", 10, 2, 112, left=False, top=True)    # digits above their columns
    r = invoke("sample", "--digit", 3, "--n", 4, "--out", tmp_path / "three.png", cwd=home)
    labelled_grid(tmp_path / "three.png", 2, 2, 112, left=False, top=True)   # "digit 3"


# --------------------------------------------------------------------------- runs, compare, map


def test_runs_lists_every_run_with_its_status(home, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(home / "runs", work / "runs")
    (work / "runs" / "stopped").mkdir()
    shutil.copy(home / "runs" / "vqvae-mnist" / "config.yaml", work / "runs" / "stopped" / "config.yaml")
    r = invoke("runs", "--json", cwd=work)
    assert r.exit_code == 0, r.output
    rows = {row["run"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"vqvae-mnist", "vqvae-mnist-2", "prior-mnist", "stopped"}
    assert rows["vqvae-mnist"]["status"] == "finished" and rows["vqvae-mnist"]["epochs"] == 3
    assert rows["vqvae-mnist"]["best"]["figure"] == "MSE" and 0 < rows["vqvae-mnist"]["best"]["value"] < 0.1
    assert rows["prior-mnist"]["best"]["figure"] == "bits/code"
    assert rows["stopped"]["status"] == "no finished epoch" and rows["stopped"]["model"] == "VQ-VAE"
    r = invoke("runs", "--clean", "--yes", cwd=work)
    assert r.exit_code == 0 and "Removed 1 runs that never finished an epoch: stopped" in r.stderr
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["prior-mnist", "vqvae-mnist", "vqvae-mnist-2"]


def test_runs_clean_asks_first(home, tmp_path):
    from typer.testing import CliRunner

    from vqgen.cli import app

    (tmp_path / "runs" / "stopped").mkdir(parents=True)
    shutil.copy(home / "runs" / "vqvae-mnist" / "config.yaml", tmp_path / "runs" / "stopped")
    r = CliRunner().invoke(app, ["runs", "--clean", "--out", str(tmp_path / "runs")], input="n\n")
    assert "Remove 1 runs that never finished an epoch (stopped)?" in r.output and "Nothing removed" in r.output
    assert (tmp_path / "runs" / "stopped").exists()


def test_compare_draws_runs_together(home, tmp_path):
    r = invoke("compare", home / "runs" / "vqvae-mnist", home / "runs" / "vqvae-mnist-2", "--out",
               tmp_path / "c.png", "--json", cwd=home)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [row["run"] for row in report["runs"]] == ["vqvae-mnist", "vqvae-mnist-2"]
    assert report["runs"][0]["epoch"] == 3 and report["runs"][1]["epoch"] == 2
    assert Image.open(tmp_path / "c.png").size[0] >= 1000
    r = invoke("compare", home / "runs" / "nope", cwd=home)
    assert r.exit_code == 2 and "not a run with a finished epoch" in r.stderr


def test_map_places_held_out_latents_by_class(home):
    r = invoke("map", "--run", home / "runs" / "vqvae-mnist", "--json", cwd=home)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["method"] == "pca" and len(m["points"]) == 80 and set(m["points"][0]) == {"x", "y", "label"}
    assert 0 < m["explained_variance"][1] <= m["explained_variance"][0] < 1
    assert len(m["codebook_usage"]) == 16 and sum(m["codebook_usage"]) == 80 * 49
    img = Image.open(m["png"])
    assert img.size[0] >= 1000
    xs = np.array([p["x"] for p in m["points"]])
    assert abs(xs.mean()) < 1e-3 * (np.abs(xs).max() + 1)          # PCA coordinates are centred


# --------------------------------------------------------------------------- the terminal


def rendered(renderable, width=80) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_live_bars_fit_80_columns_and_show_codebook_figures():
    from rich.console import Console

    from vqgen.progress import TrainProgress

    p = TrainProgress(console=Console(width=80, force_terminal=True, file=open(os.devnull, "w")), live=True)
    p.start(epochs=3, start_epoch=0, batches=938)
    p.start_epoch(2)
    p.batch(412, {"loss": 0.0104, "mse": 0.00948, "vq": 0.000408, "usage": 1.0, "perplexity": 431.2,
                  "lr": 0.004, "img_per_s": 2310.0})
    text = rendered(p.progress.get_renderables().__next__())
    p.stop()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for field in ("epoch 2/3", "412/938", "0:00:", "usage 100%", "ppl 431", "mse 0.00948", "2,310 img/s"):
        assert field in text, (field, text)


def test_eval_and_runs_tables_fit_80_columns(home, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    for args in (["eval", "--run", "runs/vqvae-mnist"], ["eval", "--run", "runs/prior-mnist"], ["runs"]):
        r = invoke(*args, cwd=home)
        assert r.exit_code == 0, r.output
        assert "…" not in r.stdout and max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    r = invoke("eval", "--run", "runs/vqvae-mnist", cwd=home)
    assert "usage" in r.stdout and "100%" in r.stdout and "PSNR dB" in r.stdout
    wide = invoke("eval", "--run", "runs/vqvae-mnist", "--all", cwd=home)
    assert "train_vq" in wide.stdout


def test_quiet_prints_only_the_run_directory(home, tmp_path):
    r = invoke("train", "--dataset", home / "mnist", "--config", home / "vq.yaml", "--out", tmp_path, "-q", cwd=home)
    assert r.exit_code == 0 and r.stderr == "" and r.stdout.strip() == str(tmp_path / "vqvae-mnist")


def test_help_shows_flags_as_flags_and_every_default():
    from vqgen import models

    for command in ("train", "reconstruct", "interpolate", "gif", "sample", "eval", "info", "runs", "compare", "map"):
        r = invoke(command, "--help")
        assert r.exit_code == 0 and "<bool>" not in r.stdout and "{" not in r.stdout.splitlines()[1], command
    text = " ".join(invoke("train", "--help").stdout.replace("│", " ").split())   # wrapped lines joined
    # The defaults the help promises are the registry's.
    assert "64 (colour: 32); prior 16 (large grids: 32)" in text
    assert models.get("prior").defaults(models.CodeShape(8, 2))[0]["batch_size"] == 16
    faces, face_prior = models.get("vqvae").defaults(models.ImageShape(96, 3))[0], \
        models.get("prior").defaults(models.CodeShape(1024, 12))[0]
    assert f"3 (colour: {faces['epochs']})" in text and f"(colour: {faces['batch_size']})" in text
    assert f"prior 1 (large grids: {face_prior['epochs']})" in text and f"(large grids: {face_prior['lr']:g})" in text
    vae = models.get("vae").defaults(models.ImageShape(96, 3))[0]
    assert f"vae {vae['epochs']}" in text and f"vae {vae['lr']:g}" in text
    assert "Usage: vqgen interpolate [OPTIONS] A B" in " ".join(invoke("interpolate", "--help").stdout.split())


# --------------------------------------------------------------------------- first run


def test_a_local_copy_of_a_known_dataset_is_named_after_it(tmp_path):
    import datasets

    from vqgen import data as D

    folder = tmp_path / "my-copy"
    (folder / "mnist").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: mnist\n---\nA copy of ylecun/mnist.\n")
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b"x", "path": None}]},
                                    features=datasets.Features({"image": datasets.Image()}))
    ds.to_parquet(str(folder / "mnist" / "train-00000-of-00001.parquet"))
    src = D.resolve_dataset(str(folder))
    assert (src.known, src.label, src.native_shape) == ("mnist", "mnist", (28, 1))
    assert D.resolve_dataset(str(make_mnist_idx(tmp_path / "idx"))).label == "idx"   # 320 images: not MNIST


def test_offline_error_names_the_local_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    r = invoke("train", "--dataset", "anime-faces", "--out", tmp_path / "runs", cwd=tmp_path)
    assert r.exit_code == 1
    for layout in ("laid out like the Hub dataset", "MNIST IDX files", "a folder of images"):
        assert layout in r.stderr


def test_the_usage_guide_documents_every_setting():
    from pathlib import Path

    from vqgen import models
    from vqgen.config import TrainConfig
    from vqgen.settings import field_names

    guide = (Path(__file__).parent.parent / "docs" / "usage.md").read_text()
    for cls in [TrainConfig] + [models.get(n).config_class for n in models.names()]:
        for name in field_names(cls):
            if name in ("image_size", "channels", "codebook_size", "grid", "num_classes"):
                continue   # set from the data or the parent run; documented in prose
            assert f"`{name}`" in guide, f"{cls.__name__}.{name} is missing from docs/usage.md"
