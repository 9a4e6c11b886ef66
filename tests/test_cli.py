"""The vqgen command end to end on a tiny synthetic MNIST, as a user runs it."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from conftest import TINY_VQVAE, labelled_grid, make_mnist_idx
from vqgen.cli import app

runner = CliRunner()


def invoke(*args, cwd=None):
    """Run the CLI as a user would. Every call in the suite also checks that no traceback and no
    last-resort error ("set VQGEN_DEBUG=1 ...") reached the user: each failure must be a named one."""
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        r = runner.invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    if not os.environ.get("VQGEN_DEBUG"):
        assert "Traceback" not in r.output and "set VQGEN_DEBUG=1" not in r.output, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny VQ-VAE run, shared by the tests that only read it."""
    home = tmp_path_factory.mktemp("home")
    os.environ["VQGEN_CACHE"] = str(home / "cache")
    data = make_mnist_idx(home / "mnist")
    (home / "tiny.yaml").write_text(TINY_VQVAE)
    r = invoke("train", "--dataset", data, "--config", home / "tiny.yaml", "--epochs", 2, cwd=home)
    assert r.exit_code == 0, r.output
    return home, data, home / "runs" / "vqvae-mnist"


def test_train_writes_a_complete_run(trained):
    home, _, run = trained
    for name in ("config.yaml", "model.safetensors", "resume.pt", "metrics.csv",
                 "recon_epoch_001.png", "recon_epoch_002.png", "loss_curve.png"):
        assert (run / name).is_file(), name
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["vqgen_model"] == "vqvae"
    config = json.loads(meta["config"])
    assert config["model_config"]["codebook_size"] == 16 and config["train"]["epochs"] == 2
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and "test_mse" in lines[0] and "train_usage" in lines[0]
    # 8 originals over 8 reconstructions, each 28px scaled x4 with 2px padding; rows labelled, epoch on top.
    labelled_grid(run / "recon_epoch_002.png", 8, 2, 112, left=True, top=True)


def test_eval_json_reports_every_epoch(trained):
    home, _, run = trained
    r = invoke("eval", "--json", cwd=home)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["model"] == "vqvae" and [e["epoch"] for e in report["epochs"]] == [1, 2]
    final = report["final"]
    assert 0 < final["test_mse"] < 0.2
    assert final["test_psnr"] == pytest.approx(10 * np.log10(1 / final["test_mse"]), rel=1e-3)
    assert 0 < final["train_usage"] <= 1
    assert "Using run runs/vqvae-mnist" in r.stderr


def test_info_describes_a_lone_weights_file(trained, tmp_path):
    home, _, run = trained
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run / "model.safetensors").read_bytes())
    r = invoke("info", lone, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["model"] == "vqvae" and info["epochs_done"] == 2 and info["parameters"] > 1000


def test_interpolate_writes_strip_and_frames(trained, tmp_path):
    home, _, run = trained
    r = invoke("interpolate", 4, 9, "--steps", 12, "--frames", tmp_path / "frames", cwd=home)
    assert r.exit_code == 0, r.output
    strip = Image.open(run / "interp_4_to_9.png")
    assert strip.size == (12 * 114 + 2, 114 + 2)
    frames = sorted((tmp_path / "frames").glob("frame_*.png"))
    assert [f.name for f in frames][:2] == ["frame_00.png", "frame_01.png"] and len(frames) == 12
    first = np.asarray(Image.open(frames[0]))
    assert first.shape == (28, 28)
    # The morph moves: the first and last frames differ.
    last = np.asarray(Image.open(frames[-1])).astype(float)
    assert np.abs(first.astype(float) - last).mean() > 2  # a model that learned nothing gives ~0


def test_interpolate_by_index_and_image_file(trained, tmp_path):
    home, _, run = trained
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "m.png"
    r = invoke("interpolate", "#3", tmp_path / "blank.png", "--steps", 3, "--out", out, "--run", run, cwd=home)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (3 * 114 + 2, 116)


def test_gif_loops_there_and_back(trained):
    home, _, run = trained
    r = invoke("gif", 4, 9, "--steps", 6, "--fps", 10, cwd=home)
    assert r.exit_code == 0, r.output
    gif = Image.open(run / "morph_4_to_9.gif")
    assert gif.info.get("loop") == 0
    assert gif.size == (112, 112)
    # 6 frames out, 4 back; the two ends show three times as long.
    assert gif.n_frames == 6 + 4
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations[0] == durations[5] == 3 * durations[1] == 300
    gif.seek(0)
    a = np.asarray(gif.convert("L")).astype(float)
    gif.seek(5)
    b = np.asarray(gif.convert("L")).astype(float)
    assert np.abs(a - b).mean() > 1


def test_training_progress_gif(trained):
    home, _, run = trained
    r = invoke("gif", "--training", run, cwd=home)
    assert r.exit_code == 0, r.output
    assert Image.open(run / "training.gif").n_frames == 2


def test_a_single_frame_still_makes_a_gif(tmp_path):
    from vqgen import images

    frame = torch.zeros(1, 1, 28, 28)
    frame[..., 10:18, 10:18] = 1
    path = images.save_gif(frame, tmp_path / "one.gif")
    gif = Image.open(path)
    assert gif.n_frames == 1 and gif.size == (112, 112)
    assert np.asarray(gif.convert("L"))[56, 56] == 255 and np.asarray(gif.convert("L"))[5, 5] == 0


def test_reconstruct_grid_and_folder(trained, tmp_path):
    home, data, run = trained
    r = invoke("reconstruct", "--n", 4, cwd=home)
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.stderr
    labelled_grid(run / "reconstruction_n4.png", 4, 2, 112, left=True, top=False)   # rows say which is which
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((50, 50, 3), 40 * i, dtype=np.uint8)).save(folder / f"img{i}.jpg")
    (folder / "bad.png").write_bytes(b"nope")
    r = invoke("reconstruct", "--input", folder, "--out", tmp_path / "out", cwd=home)
    assert r.exit_code == 0, r.output
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["img0.png", "img1.png", "img2.png"]
    assert Image.open(tmp_path / "out" / "img1.png").size == (28, 28)
    assert "Skipped 1 unreadable" in r.stderr


def test_resume_continues_to_more_epochs(trained, tmp_path):
    home, data, run = trained
    copy = tmp_path / "runs" / "copy"
    copy.mkdir(parents=True)
    for p in run.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    r = invoke("train", "--resume", copy, "--epochs", 3, cwd=home)
    assert r.exit_code == 0, r.output
    assert (copy / "recon_epoch_003.png").is_file()
    lines = (copy / "metrics.csv").read_text().strip().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    r = invoke("train", "--resume", copy, "--epochs", 3, cwd=home)
    assert r.exit_code == 2 and "already trained 3 of 3 epochs" in r.stderr


def test_same_seed_same_weights(tmp_path, mnist_idx, tiny_config):
    for name in ("a", "b"):
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--name", name, "--seed", 7,
                   "--out", tmp_path)
        assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_new_runs_never_overwrite(tmp_path, mnist_idx, tiny_config):
    for _ in range(2):
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--out", tmp_path / "runs")
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["vqvae-tiny-mnist0", "vqvae-tiny-mnist0-2"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, mnist_idx, tiny_config, monkeypatch):
    from vqgen.models import VQVAE

    r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--out", tmp_path, "--name", "r")
    assert r.exit_code == 0
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    real_forward = VQVAE.forward

    def nan_loss(self, x, y=None):
        out = real_forward(self, x, y)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VQVAE, "forward", nan_loss)
    r = invoke("train", "--resume", tmp_path / "r", "--epochs", 2)
    assert r.exit_code == 1
    assert "the loss became nan" in r.stderr and "last good checkpoint is kept" in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) < 300
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, mnist_idx, tiny_config, monkeypatch):
    from vqgen.trainer import Trainer

    calls = {"n": 0}
    real = Trainer.run_epoch

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--epochs", 3, "--out", tmp_path,
               "--name", "r")
    assert r.exit_code == 130
    assert f"vqgen train --resume {tmp_path / 'r'}" in r.stderr
    state = torch.load(tmp_path / "r" / "resume.pt", weights_only=True)
    assert state["epoch"] == 1


@pytest.mark.parametrize("args,code,message", [
    (["train", "--model", "gan"], 2, "'gan' is not one of"),
    (["train", "--dataset", "nonsense"], 2, "--dataset nonsense: no such folder"),
    (["train", "--dataset", "./no/such/dir"], 2, "no such folder"),
    (["train", "--config", "missing.yaml"], 2, "--config missing.yaml: no such file"),
    (["train", "--epochs", "0"], 2, "--epochs must be at least 1"),
    (["train", "--device", "tpu"], 2, "--device tpu: use auto, cpu, cuda or mps"),
    (["interpolate", "4", "9"], 2, "no trained VQ-VAE or VAE run under runs/"),
    (["info", "nowhere"], 2, "nowhere: no such run directory"),
])
def test_bad_usage_gets_one_line_and_exit_2(tmp_path, args, code, message, mnist_idx):
    if args[:2] == ["train", "--epochs"] or args[:2] == ["train", "--device"]:
        args = args + ["--dataset", str(mnist_idx)]
    r = invoke(*args, cwd=tmp_path)
    assert r.exit_code == code, r.output
    assert message in r.output
    if "is not one of" not in message:  # typer's own usage box aside
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("Error: ")


def test_unknown_config_key_names_the_key(tmp_path, mnist_idx):
    (tmp_path / "c.yaml").write_text("epochs: 1\nlearning_rte: 0.1\n")
    r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "c.yaml", cwd=tmp_path)
    assert r.exit_code == 2 and "unknown setting 'learning_rte'" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["interpolate", "4", "12"], "'12': the dataset has no such class (classes: 0-9)"),
    (["interpolate", "4", "9", "--steps", "1"], "--steps 1: a morph needs at least 2 steps"),
    (["interpolate", "#5", "#99999"], "#99999: index out of range"),
    (["interpolate", "4", "missing.png"], "missing.png: no such image file"),
    (["sample"], "no prior for runs/vqvae-mnist yet"),
    (["sample", "--sampler", "mix"], "--sampler is for VAE runs"),
])
def test_bad_requests_on_a_trained_run(trained, args, message):
    home, _, _ = trained
    r = invoke(*args, cwd=home)
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and sum(ln.startswith("Error") for ln in lines) == 1


def test_corrupt_checkpoint_is_a_runtime_error(trained, tmp_path):
    _, _, run = trained
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((run / "model.safetensors").read_bytes()[:100])
    r = invoke("info", bad)
    assert r.exit_code == 1 and "corrupt or truncated weights file" in r.stderr


def test_run_without_checkpoint(tmp_path):
    (tmp_path / "empty-run").mkdir()
    r = invoke("interpolate", "4", "9", "--run", tmp_path / "empty-run")
    assert r.exit_code == 2 and "no model.safetensors in this run directory" in r.stderr


def test_debug_switch_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("VQGEN_DEBUG", "1")
    r = invoke("info", tmp_path / "nowhere")
    assert r.exit_code != 0 and r.exception is not None


def test_python_dash_m_and_version():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vqgen", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("vqgen ")
    r = invoke("--help")
    assert r.exit_code == 0 and "interpolate" in r.stdout and "sample" in r.stdout


def test_offline_hub_download_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    r = invoke("train", "--dataset", "mnist", "--out", tmp_path / "runs")
    assert r.exit_code == 1
    assert "could not download ylecun/mnist from the Hugging Face Hub" in r.stderr
    assert "point --dataset at a local copy" in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
