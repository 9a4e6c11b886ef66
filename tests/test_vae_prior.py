"""The VAE and the VQ-VAE's prior through the same commands, on tiny data."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_VQVAE, digit_image, labelled_grid, make_mnist_idx
from test_cli import invoke

TINY_VAE = "epochs: 2\nbatch_size: 16\nlr: 0.003\nhidden_dims: [8, 16]\nlatent_dim: 4\n"
TINY_PRIOR = "epochs: 1\nbatch_size: 32\ndim: 16\nlayers: 1\nheads: 2\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    os.environ["VQGEN_CACHE"] = str(home / "cache")
    make_mnist_idx(home / "mnist")
    (home / "vqvae.yaml").write_text(TINY_VQVAE)
    (home / "vae.yaml").write_text(TINY_VAE)
    (home / "prior.yaml").write_text(TINY_PRIOR)
    r = invoke("train", "--dataset", home / "mnist", "--config", home / "vqvae.yaml", cwd=home)
    assert r.exit_code == 0, r.output
    r = invoke("train", "--model", "prior", "--config", home / "prior.yaml", cwd=home)
    assert r.exit_code == 0, r.output
    return home


def test_prior_run_records_its_vqvae(home):
    run = home / "runs" / "prior-mnist"
    assert (run / "model.safetensors").is_file() and (run / "samples_epoch_001.png").is_file()
    info = json.loads(invoke("info", run, "--json").stdout)
    assert info["model"] == "prior"
    parent = info["config"]["parent"]
    assert parent["run"] == str((home / "runs" / "vqvae-mnist").resolve())
    assert info["config"]["model_config"]["num_classes"] == 10
    assert info["config"]["model_config"]["grid"] == 7
    assert info["metrics"]["test_bits_per_code"] > 0
    # Ten rows of ten samples, one row per digit, each row labelled with its digit.
    labelled_grid(run / "samples_epoch_001.png", 10, 10, 112, left=True, top=True)


def test_sample_from_the_vqvae_finds_its_prior(home, tmp_path):
    r = invoke("sample", "--n", 16, "--run", "runs/vqvae-mnist", "--out", tmp_path / "s.png", "--frames", tmp_path / "f",
               cwd=home)
    assert r.exit_code == 0, r.output
    assert "Using prior runs/prior-mnist" in r.stderr
    # Every class in turn: one column per digit, labelled with it (16 samples fill 10 + 6 columns).
    labelled_grid(tmp_path / "s.png", 10, 2, 112, left=False, top=True)
    frames = sorted((tmp_path / "f").glob("sample_*.png"))
    assert len(frames) == 16 and Image.open(frames[0]).size == (28, 28)


def test_sample_a_digit_is_repeatable_by_seed(home, tmp_path):
    for name in ("a", "b"):
        r = invoke("sample", "--digit", 7, "--n", 4, "--seed", 3, "--temperature", 0.8, "--top-k", 8,
                   "--out", tmp_path / f"{name}.png", "--run", home / "runs" / "prior-mnist", cwd=home)
        assert r.exit_code == 0, r.output
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("a", "b"))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("args,message", [
    (["sample", "--digit", "11"], "--digit 11: the dataset's classes are 0, 1, 2"),
    (["sample", "--temperature", "0"], "--temperature must be positive"),
    (["sample", "--digit", "3", "--class", "3"], "give --digit or --class, not both"),
])
def test_bad_sample_requests(home, args, message):
    r = invoke(*args, cwd=home)
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_prior_of_a_retrained_vqvae_is_refused(home, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(home / "runs", work / "runs")
    vq_dir = work / "runs" / "vqvae-mnist"
    prior_dir = work / "runs" / "prior-mnist"
    cfg = json.loads(invoke("info", prior_dir, "--json").stdout)["config"]
    # Point the copied prior at the copied VQ-VAE, then "retrain" that VQ-VAE.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(prior_dir / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    cfg["parent"]["run"] = str(vq_dir.resolve())
    meta["config"] = json.dumps(cfg)
    save_file(load_file(str(prior_dir / "model.safetensors")), str(prior_dir / "model.safetensors"), metadata=meta)
    r = invoke("sample", "--n", 2, "--run", prior_dir, cwd=work)
    assert r.exit_code == 0, r.output
    weights = load_file(str(vq_dir / "model.safetensors"))
    with safe_open(str(vq_dir / "model.safetensors"), "pt") as f:
        vmeta = f.metadata()
    weights["quantizer.embed"] = weights["quantizer.embed"] + 1.0
    save_file(weights, str(vq_dir / "model.safetensors"), metadata=vmeta)
    r = invoke("sample", "--n", 2, "--run", prior_dir, cwd=work)
    assert r.exit_code == 1 and "has changed since this prior was trained" in r.stderr
    shutil.rmtree(vq_dir)
    r = invoke("sample", "--n", 2, "--run", prior_dir, cwd=work)
    assert r.exit_code == 2 and "is gone" in r.stderr


def test_vae_on_mnist_samples_and_morphs(home, tmp_path):
    r = invoke("train", "--model", "vae", "--dataset", home / "mnist", "--config", home / "vae.yaml",
               "--out", tmp_path / "runs", cwd=home)
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "vae-mnist"
    for name in ("latents.safetensors", "samples_epoch_002.png", "recon_epoch_002.png"):
        assert (run / name).is_file(), name
    from safetensors.torch import load_file

    assert load_file(str(run / "latents.safetensors"))["latents"].shape == (320, 4)
    for sampler in ("prior", "mix"):
        out = tmp_path / f"{sampler}.png"
        r = invoke("sample", "--run", run, "--n", 9, "--sampler", sampler, "--out", out)
        assert r.exit_code == 0, r.output
        assert Image.open(out).size == (3 * 114 + 2, 3 * 114 + 2)
    r = invoke("interpolate", 4, 9, "--run", run, "--method", "slerp", "--steps", 5, "--out", tmp_path / "m.png",
               cwd=home)
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--run", run, "--digit", 3)
    assert r.exit_code == 2 and "a VAE samples with --sampler" in r.stderr
    (run / "latents.safetensors").unlink()
    r = invoke("sample", "--run", run, "--sampler", "mix")
    assert r.exit_code == 2 and "--sampler mix needs the training latents" in r.stderr


def test_vae_on_an_image_folder_with_augmentation(face_folder, tmp_path):
    cfg = tmp_path / "faces.yaml"
    cfg.write_text("epochs: 1\nbatch_size: 8\nimage_size: 32\nchannels: 3\nhidden_dims: [8, 16, 32]\nlatent_dim: 8\n")
    r = invoke("train", "--model", "vae", "--dataset", face_folder, "--config", cfg, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "Skipped 1 unreadable images" in r.stderr and "Converted 3 images to RGB" in r.stderr
    run = tmp_path / "runs" / "vae-faces"
    info = json.loads(invoke("info", run, "--json").stdout)
    assert info["config"]["train"]["augment"] is True
    # Endpoints by index (no labels) and by file of another size and mode.
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((50, 70), 128, dtype=np.uint8)).save(gray)
    r = invoke("gif", "#0", gray, "--run", run, "--steps", 4, "--out", tmp_path / "m.gif")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "m.gif").size == (96, 96)
    r = invoke("interpolate", "4", "9", "--run", run)
    assert r.exit_code == 2 and "this dataset has no class labels" in r.stderr


def test_vqvae_run_given_to_vae_only_options(home):
    r = invoke("sample", "--run", home / "runs" / "vqvae-mnist", "--sampler", "prior", cwd=home)
    assert r.exit_code == 2 and "--sampler is for VAE runs" in r.stderr


def test_guidance_on_the_command_line(home, tmp_path):
    r = invoke("sample", "--digit", 3, "--n", 4, "--guidance", 0, "--out", tmp_path / "g0.png", cwd=home)
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--digit", 3, "--n", 4, "--guidance", 3, "--out", tmp_path / "g3.png", cwd=home)
    assert r.exit_code == 0, r.output
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("g0", "g3"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    r = invoke("sample", "--guidance", "-1", cwd=home)
    assert r.exit_code == 2 and "--guidance must be 0 or more" in r.stderr


def test_unconditional_prior_on_unlabelled_images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(120):
        Image.fromarray(digit_image(i % 10, rng)).save(folder / f"d{i:03d}.png")
    (tmp_path / "vqvae.yaml").write_text(TINY_VQVAE)
    (tmp_path / "prior.yaml").write_text(TINY_PRIOR)
    r = invoke("train", "--dataset", folder, "--config", tmp_path / "vqvae.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    r = invoke("train", "--model", "prior", "--config", tmp_path / "prior.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "prior-digits"
    info = json.loads(invoke("info", run, "--json").stdout)
    assert info["config"]["model_config"]["num_classes"] == 0
    # An unconditional prior's picture is an 8x8 grid, with no class to label its rows.
    labelled_grid(run / "samples_epoch_001.png", 8, 8, 112, left=False, top=True)
    r = invoke("sample", "--n", 4, "--out", tmp_path / "s.png", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "s.png").size == (2 * 114 + 2, 2 * 114 + 2)
    r = invoke("sample", "--digit", 3, cwd=tmp_path)
    assert r.exit_code == 2 and "this prior is unconditional" in r.stderr
    r = invoke("sample", "--guidance", 2, cwd=tmp_path)
    assert r.exit_code == 2 and "--guidance needs a class-conditional prior; this one is unconditional" in r.stderr


def test_training_gif_of_a_one_epoch_run_says_why_not(home):
    r = invoke("gif", "--training", home / "runs" / "prior-mnist", cwd=home)
    assert r.exit_code == 2
    assert "one epoch, so one picture (samples_epoch_001.png); a training GIF needs two or more" in r.stderr
    assert not (home / "runs" / "prior-mnist" / "training.gif").exists()
