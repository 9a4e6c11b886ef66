"""Colour images: the VQ-VAE's defaults by shape, and the prior over a larger code grid."""

import json

from conftest import TINY_VQVAE
from test_cli import invoke
from vqgen.config import resolve_config
from vqgen.models import CodeShape, ImageShape


def test_vqvae_defaults_follow_the_image_shape():
    faces = resolve_config("vqvae", ImageShape(96, 3))
    mc, tc = faces.model_config, faces.train
    assert (mc.image_size, mc.channels, mc.downsample, mc.loss) == (96, 3, 3, "l1")
    assert 96 // 2 ** mc.downsample == 12 and tc.augment and tc.epochs > 3
    digits = resolve_config("vqvae", ImageShape(28, 1, 10))
    assert (digits.model_config.downsample, digits.model_config.hidden, digits.model_config.loss) == (2, 32, "mse")
    assert (digits.train.epochs, digits.train.batch_size, digits.train.augment) == (3, 64, False)
    # flags still win over the shape's defaults
    mine = resolve_config("vqvae", ImageShape(96, 3), flags={"loss": "mse", "epochs": 2, "quantizer": "fsq"})
    assert (mine.model_config.loss, mine.train.epochs, mine.model_config.codebook_size) == ("mse", 2, 1000)


def test_prior_defaults_grow_with_the_code_grid():
    small = resolve_config("prior", CodeShape(512, 7, 10))
    assert (small.model_config.dim, small.model_config.layers, small.train.epochs) == (64, 2, 1)
    large = resolve_config("prior", CodeShape(512, 12, 0))
    mc = large.model_config
    assert (mc.grid, mc.num_classes) == (12, 0) and mc.dim > 64 and mc.layers > 2 and large.train.epochs > 1


def test_unconditional_prior_learns_mirrored_grids_of_an_augmented_parent(face_folder, tmp_path):
    (tmp_path / "vq.yaml").write_text(TINY_VQVAE + "image_size: 32\ndownsample: 2\n")
    r = invoke("train", "--dataset", face_folder, "--config", tmp_path / "vq.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    vq_run = r.stdout.strip().splitlines()[-1]
    cfg = json.loads(invoke("info", vq_run, "--json", cwd=tmp_path).stdout)["config"]
    assert cfg["train"]["augment"] is False      # tiny 32x32 images keep the plain defaults
    (tmp_path / "vq.yaml").write_text(TINY_VQVAE + "image_size: 32\ndownsample: 2\naugment: true\n")
    r = invoke("train", "--dataset", face_folder, "--config", tmp_path / "vq.yaml", "--name", "aug", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    (tmp_path / "prior.yaml").write_text("epochs: 1\nbatch_size: 8\ndim: 16\nlayers: 1\nheads: 2\n")
    for run, grids in ((vq_run, 23), ("runs/aug", 46)):   # 24 readable faces, 1 held out; mirrored: twice
        r = invoke("train", "--model", "prior", "--run", run, "--config", tmp_path / "prior.yaml", cwd=tmp_path)
        assert r.exit_code == 0, r.output
        assert f"{grids} training and 1 held-out code grids" in r.stderr, r.stderr
    r = invoke("sample", "--n", 4, "--out", tmp_path / "s.png", cwd=tmp_path)
    assert r.exit_code == 0, r.output
