"""Runs written by vqgen 0.2 still load and generate, and say so plainly when their dataset is gone."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


FIXTURES = Path(__file__).parent / "fixtures" / "v0_2"


@pytest.fixture
def old_runs(tmp_path):
    """The runs vqgen 0.2.0 wrote (tiny, on synthetic digits), copied, the prior pointed at its VQ-VAE copy."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dest = tmp_path / "runs"
    shutil.copytree(FIXTURES, dest)
    prior = dest / "prior-mnist" / "model.safetensors"
    with safe_open(str(prior), "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    assert cfg["extra"]["vqvae_run"] == "/tmp/v02/runs/vqvae-mnist"    # as 0.2 wrote it
    cfg["extra"]["vqvae_run"] = str((dest / "vqvae-mnist").resolve())
    save_file(load_file(str(prior)), str(prior), metadata={**meta, "config": json.dumps(cfg)})
    vq = dest / "vqvae-mnist" / "model.safetensors"
    with safe_open(str(vq), "pt") as f:
        meta = f.metadata()
    info = json.loads(meta["info"])
    assert info["dataset_source"] == "/tmp/v02/mnist"                   # 0.2 kept the absolute source here
    info["dataset_source"] = str(tmp_path / "gone" / "mnist")
    save_file(load_file(str(vq)), str(vq), metadata={**meta, "info": json.dumps(info)})
    return dest


def test_runs_written_by_vqgen_0_2_load_and_generate(old_runs, tmp_path, invoke):
    from PIL import Image

    import vqgen

    for name in ("vqvae-mnist", "vae-mnist", "prior-mnist"):
        info = json.loads(invoke("info", old_runs / name, "--json").stdout)
        assert info["vqgen_version"] == "0.2.0" and info["epochs_done"] == 1
    digit = tmp_path / "d.png"
    Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(digit)
    r = invoke("interpolate", digit, digit, "--steps", 3, "--run", old_runs / "vqvae-mnist", "--out", tmp_path / "m.png")
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--digit", 7, "--n", 4, "--run", old_runs / "vqvae-mnist", "--out", tmp_path / "s.png",
               cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Using prior" in r.stderr
    mixes = vqgen.load(old_runs / "vae-mnist").sample(5, sampler="mix", seed=0)   # 0.2 stored its latents as "mu"
    assert mixes.shape == (5, 1, 28, 28)
    # Their dataset (a temporary folder of 0.2's) is gone: said plainly.
    r = invoke("interpolate", 4, 9, "--run", old_runs / "vqvae-mnist")
    assert r.exit_code == 2 and f"the dataset this run trained on, {tmp_path}/gone/mnist, is gone" in r.stderr
