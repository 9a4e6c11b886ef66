"""The VAE: the seed's architecture, its loss terms (in fp32 under mixed precision), and runs on digits and on a
folder of colour images that sample and morph."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqgen.models import VAE, VAEConfig


def test_vae_default_is_the_seed_architecture():
    m = VAE(VAEConfig())
    convs = [mod for mod in m.encoder.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 32, (2, 2)), (32, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (2, 2))]
    assert all(isinstance(b[1], torch.nn.BatchNorm2d) and isinstance(b[2], torch.nn.LeakyReLU) for b in m.encoder)
    assert m.fc_mu.in_features == 4608 and m.fc_mu.out_features == 256
    assert m.fc_logvar.in_features == 4608 and m.fc_decode.out_features == 4608
    deconvs = [mod for mod in m.decoder.modules() if isinstance(mod, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [
        (512, 256), (256, 128), (128, 64), (64, 32), (32, 3)]
    x = torch.rand(2, 3, 96, 96)
    h = m.encoder(x)
    assert h.shape == (2, 512, 3, 3)
    mu, logvar = m.posterior(x)
    logits = m.decode_logits(mu)
    assert logits.shape == x.shape and mu.shape == (2, 256) and logvar.shape == (2, 256)


def test_vae_loss_terms_are_summed_per_image_and_averaged():
    torch.manual_seed(0)
    m = VAE(VAEConfig(image_size=28, channels=1, hidden_dims=[8, 16], latent_dim=4, kl_weight=0.5))
    m.eval()  # z = mu, so the loss is deterministic
    x = torch.rand(5, 1, 28, 28)
    out = m(x)
    mu, logvar = m.posterior(x)
    logits = m.decode_logits(mu)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3)).mean()
    kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)).mean()
    assert out["recon"].item() == pytest.approx(bce.item(), rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(bce.item() + 0.5 * kl.item(), rel=1e-5)


def test_vae_loss_terms_are_fp32_under_mixed_precision():
    torch.manual_seed(0)
    m = VAE(VAEConfig(image_size=28, channels=1, hidden_dims=[8, 16], latent_dim=4)).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        mu, logvar = m.posterior(x)
    assert mu.dtype == torch.bfloat16                       # the network runs in bf16 ...
    assert all(out[k].dtype == torch.float32 for k in ("loss", "recon", "kl"))   # ... its loss is summed in fp32
    mu, logvar = mu.float(), logvar.float()
    kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)).mean()
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-5)


def test_vae_small_config_for_mnist():
    m = VAE(VAEConfig(image_size=28, channels=1, hidden_dims=[32, 64], latent_dim=16))
    x = torch.rand(2, 1, 28, 28)
    assert m.reconstruct(x).shape == x.shape
    assert m.decode(torch.randn(3, 16)).shape == (3, 1, 28, 28)


def test_vae_on_mnist_samples_and_morphs(home, tmp_path, invoke, labelled_grid):
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
        labelled_grid(out, 3, 3, 112, left=False, top=True)   # titled "9 samples from vae-mnist"
    r = invoke("interpolate", 4, 9, "--run", run, "--method", "slerp", "--steps", 5, "--out", tmp_path / "m.png",
               cwd=home)
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--run", run, "--digit", 3)
    assert r.exit_code == 2 and "a VAE samples with --sampler" in r.stderr
    (run / "latents.safetensors").unlink()
    r = invoke("sample", "--run", run, "--sampler", "mix")
    assert r.exit_code == 2 and "--sampler mix needs the training latents" in r.stderr


def test_vae_on_an_image_folder_with_augmentation(face_folder, tmp_path, invoke):
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
