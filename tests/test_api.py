"""The Python API as a notebook uses it: train, load, reconstruct, encode, interpolate, sample, show."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqgen
from vqgen.errors import UsageError

def test_train_returns_the_run_and_its_metrics(notebook):
    home, run, prior = notebook
    assert run.run_dir == Path("runs/vqvae-mnist") and (home / run.run_dir / "model.safetensors").is_file()
    assert 0 < run.metrics["test_mse"] < 0.2 and run.metrics["epoch"] == 2
    assert not run.interrupted
    assert prior.run_dir == Path("runs/prior-mnist") and prior.metrics["test_bits_per_code"] > 0


def test_load_then_interpolate_reconstruct_encode(notebook):
    home, run, _ = notebook
    model = vqgen.load(home / run.run_dir)
    assert model.kind == "vqvae" and model.image_shape == (1, 28, 28) and model.class_names[4] == "4"
    assert "VQ-VAE" in repr(model)
    frames = model.interpolate("4", "9", steps=12)
    assert frames.shape == (12, 1, 28, 28) and frames.min() >= 0 and frames.max() <= 1
    assert (frames[0] - frames[-1]).abs().mean() > 0.01     # it moves from a 4 to a 9
    assert torch.equal(model.interpolate(4, 9, steps=12), frames)   # a label as an int works too
    images = model.held_out(6)
    recon = model.reconstruct(images)
    assert recon.shape == images.shape and ((recon - images) ** 2).mean() < 0.2
    z = model.encode(images)
    assert z.shape == (6, 4, 7, 7)
    assert torch.allclose(model.decode(z), recon, atol=1e-5)
    post = model.encode(images, space="post")
    assert torch.allclose(model.decode(post, space="post"), recon, atol=1e-5)
    codes = model.codes(images)
    assert codes.shape == (6, 7, 7) and codes.max() < 16


def test_images_in_every_usual_form(notebook, tmp_path):
    home, run, _ = notebook
    model = vqgen.load(home / run.run_dir)
    x = model.held_out(1)
    u8 = (x[0, 0] * 255).round().byte()
    path = tmp_path / "digit.png"
    Image.fromarray(u8.numpy()).convert("RGB").resize((56, 56)).save(path)
    for form in (x, x[0], u8, u8.numpy(), Image.open(path), str(path), path, [path, path]):
        out = model.reconstruct(form)
        assert out.shape[1:] == (1, 28, 28)
    with pytest.raises(UsageError, match="expected a tensor of shape"):
        model.reconstruct(torch.rand(2, 5, 28, 28))
    with pytest.raises(UsageError, match="NaN"):
        model.reconstruct(torch.full((1, 1, 28, 28), float("nan")))


def test_sample_through_the_prior_is_repeatable(notebook):
    home, run, _ = notebook
    model = vqgen.load(home / run.run_dir)
    a = model.sample(8, digit=7, seed=3)
    assert a.shape == (8, 1, 28, 28) and torch.equal(a, model.sample(8, digit=7, seed=3))
    assert not torch.equal(a, model.sample(8, digit=7, seed=4))
    assert model.sampler_run.resolve() == (home / "runs" / "prior-mnist").resolve()
    with pytest.raises(UsageError, match="sampler is for VAE runs"):
        model.sample(4, sampler="mix")
    with pytest.raises(UsageError, match="digit 12: the dataset's classes are 0, 1"):
        model.sample(4, digit=12)


def test_show_makes_a_grid(notebook):
    frames = torch.rand(12, 1, 28, 28)
    pic = vqgen.show(frames)
    assert isinstance(pic, Image.Image) and pic.size == (4 * 114 + 2, 3 * 114 + 2)   # 12 as 4 x 3
    assert vqgen.show(torch.rand(16, 1, 28, 28)).size == (4 * 114 + 2, 4 * 114 + 2)
    assert vqgen.show(frames, nrow=12).size == (12 * 114 + 2, 114 + 2)
    assert vqgen.show(torch.rand(25, 3, 96, 96)).size == (5 * 98 + 2, 5 * 98 + 2)
    assert np.asarray(vqgen.show(torch.zeros(1, 1, 28, 28)))[50, 50].max() == 0


def test_bad_arguments_name_the_argument(notebook, tmp_path):
    home, run, _ = notebook
    model = vqgen.load(home / run.run_dir)
    with pytest.raises(UsageError, match="^epochs must be at least 1, not 0$"):
        vqgen.train(dataset="mnist", epochs=0)
    with pytest.raises(UsageError, match="steps 1: a morph needs at least 2 steps"):
        model.interpolate("4", "9", steps=1)
    with pytest.raises(UsageError, match="space sideways: this model's latents are pre or post"):
        model.encode(model.held_out(1), space="sideways")
    with pytest.raises(UsageError, match="unknown setting 'codebok_size'"):
        vqgen.train(dataset=str(home / "mnist"), codebok_size=8, out=tmp_path)
    with pytest.raises(UsageError, match="no such run directory"):
        vqgen.load(tmp_path / "nowhere")


def test_training_leaves_the_float_mode_of_the_process_as_it_was(notebook):
    # Training flushes denormal floats for speed; a notebook's own arithmetic afterwards must not be affected.
    assert (torch.tensor([1e-310], dtype=torch.float64) * 1.0).item() == 1e-310
