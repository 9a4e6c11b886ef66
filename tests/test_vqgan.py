"""The adversarial VQ-VAE ("vqgan"): the VQ-VAE's parts under a patch discriminator, its augmentation, its
adaptive weight, its start, and a run of it end to end on a folder of colour images."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import vqgen
from vqgen import models, runs
from vqgen.models.vqgan import VQGAN, VQGANConfig, augmentations, diff_augment
from vqgen.models.vqvae import VQVAE, VQVAEConfig
from vqgen.trainer import Optimization, Trainer
from vqgen import data as D

TINY = {"image_size": 16, "channels": 3, "hidden": 8, "res_hidden": 4, "res_blocks": 1, "downsample": 2,
        "codebook_size": 16, "code_dim": 4, "disc_channels": 4, "disc_layers": 2}


def tiny(**settings) -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(**{**TINY, **settings}))


def images(n=8, seed=1):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_it_is_the_vq_vae_with_a_discriminator_in_its_own_group():
    spec = models.get("vqgan")
    assert spec.display_name == "VQGAN" and {"reconstruct", "codes"} <= spec.operations
    model = tiny()
    assert isinstance(model, VQVAE)   # the VQ-VAE's encoder, quantiser and decoder, not copies
    assert type(model.encoder) is type(VQVAE(VQVAEConfig(**{k: v for k, v in TINY.items()
                                                           if not k.startswith("disc")})).encoder)
    gen, disc = model.parameter_groups()
    assert disc.name == "discriminator" and disc.loss == "d_loss" and disc.lr == 2e-4 and disc.betas == (0.5, 0.9)
    assert disc.start_share == 0.5 and gen.loss == "loss"
    assert {id(p) for p in disc.params} == {id(p) for p in model.discriminator.parameters()}
    assert len(gen.params) + len(disc.params) == len(list(model.parameters()))


@pytest.mark.parametrize("quantizer", ["vq", "fsq", "rvq"])
def test_every_quantiser_trains_under_it(quantizer):
    settings = {"quantizer": quantizer} if quantizer != "fsq" else {"quantizer": "fsq", "levels": [4, 4]}
    if quantizer == "fsq":
        settings["code_dim"] = 2
    model = tiny(**settings)
    model.train()
    model.begin_step(10, 10)
    out = model(images())
    assert {"loss", "d_loss", "rec", "mse", "vq", "g", "d_real", "d_fake", "weight"} <= set(out)
    groups = model.parameter_groups()
    out["loss"].backward(inputs=groups[0].params, retain_graph=True)
    out["d_loss"].backward(inputs=groups[1].params)
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert model.decode_indices(model.encode_indices(images(2))).shape == (2, 3, 16, 16)


def test_before_its_start_the_discriminator_is_not_run_and_weighs_nothing(monkeypatch):
    model = tiny()
    model.train()
    calls = []
    judge = model.discriminator.features
    monkeypatch.setattr(model.discriminator, "features", lambda x: calls.append(tuple(x.shape)) or judge(x))
    model.begin_step(4, 10)   # 0.5 of 10 steps: from step 5 on
    out = model(images())
    assert calls == [] and out["g"].item() == 0 and out["weight"].item() == 0 and out["d_loss"].item() == 0
    assert out["loss"].item() == pytest.approx((out["rec"] + out["vq"]).item())
    model.begin_step(5, 10)
    model(images())
    assert calls == [(16, 3, 16, 16)]   # real and made images in one pass


def test_the_start_is_a_share_of_the_run_counted_alike_by_trainer_and_model():
    assert models.start_of(0.5, 10) == 5 and models.start_of(0.5, 11) == 6 and models.start_of(0.0, 7) == 0
    model = tiny(disc_start=0.25)
    x = (images(16) * 255).to(torch.uint8)
    batches = D.Batches(x, None, 4, generator=torch.Generator().manual_seed(0))   # 4 steps an epoch, 8 in all
    groups = model.parameter_groups()
    opts = [Optimization(torch.optim.Adam(g.params, lr=1e-3), g.loss, models.start_of(g.start_share, 8), name=g.name)
            for g in groups]
    seen = []
    trainer = Trainer(model, opts, batches, epochs=2,
                      before_step=lambda: seen.append([p.detach().clone() for p in groups[1].params]))
    weights = []
    trainer.add_callback("on_log", lambda tr: weights.append(tr.step_logs["weight"]))
    trainer.run()
    assert opts[1].start_step == 2
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[2]))         # steps 0 and 1: not trained
    assert not all(torch.equal(a, b) for a, b in zip(seen[2], seen[3]))     # step 2 on: trained


def test_the_adaptive_weight_is_taming_rule_capped():
    model = tiny(disc_weight=0.7, max_weight=1e4)
    x = images()
    made = model.decoder(model.quantizer(model.encode(x))[0])
    rec = F.l1_loss(made, x)
    g = -model.discriminator(made * 2 - 1).mean()
    w = model.adaptive_weight(rec, g).item()
    a, = torch.autograd.grad(rec, model.last_layer(), retain_graph=True)
    b, = torch.autograd.grad(g, model.last_layer())
    assert w == pytest.approx(0.7 * (a.norm() / (b.norm() + 1e-4)).item(), rel=1e-5) and w > 0
    # In training the forward pass uses it, capped; where not adaptive, disc_weight alone.
    capped = tiny(disc_weight=1e3, max_weight=0.05)
    capped.train()
    capped.begin_step(9, 10)
    out = capped(x)
    assert out["weight"].item() == pytest.approx(0.05)
    expected = out["rec"] + out["vq"] + 0.05 * out["g"] + capped.cfg.feature_matching * out["fm"]
    assert out["fm"].item() > 0 and out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    fixed = tiny(adaptive=False, disc_weight=0.03)
    fixed.train()
    fixed.begin_step(9, 10)
    assert fixed(x)["weight"].item() == pytest.approx(0.03)
    # Held out (no gradients), the last weight of training is shown.
    capped.eval()
    with torch.no_grad():
        assert capped(x)["weight"].item() == pytest.approx(0.05)


def test_diff_augment_translates_cuts_out_and_keeps_gradients():
    torch.manual_seed(3)
    x = torch.ones(64, 3, 32, 32, requires_grad=True)
    out = diff_augment(x, ("translation",))
    assert out.shape == x.shape
    # A shifted image of ones has zeros where it was padded, at most 1/8 of the side (4 px) on each side.
    zero_rows = (out[:, 0] == 0).all(dim=2).sum(dim=1)
    zero_cols = (out[:, 0] == 0).all(dim=1).sum(dim=1)
    assert zero_rows.max() <= 4 and zero_cols.max() <= 4 and (zero_rows + zero_cols).max() > 0
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out[:32], out[32:])   # the i-th made image shifted as the i-th real one
    assert not torch.equal(out[0], out[1]) or not torch.equal(out[1], out[2])   # a new draw for each pair
    out = diff_augment(x, ("cutout",))
    cut = (out[:, 0] == 0).sum(dim=(1, 2))
    assert cut.max() == 16 * 16 and cut.min() >= 8 * 8   # half the side, clipped at the edges
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)    # the same square in every channel
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0
    y = torch.rand(8, 3, 16, 16)
    assert torch.equal(diff_augment(y, ()), y)
    with pytest.raises(ValueError, match="pairs"):
        diff_augment(torch.rand(3, 3, 16, 16), ("cutout",))
    assert augmentations("cutout, colour") == ("colour", "cutout") and augmentations("none") == ()


def test_bad_settings_get_one_line_each():
    with pytest.raises(vqgen.UsageError, match="diffaugment.*must be none or some of colour, translation, cutout"):
        VQGANConfig(diffaugment="blur")
    with pytest.raises(vqgen.UsageError, match="disc_start"):
        VQGANConfig(disc_start=1.5)


def test_the_vq_vae_decoder_can_upsample_without_transposed_convolutions():
    cfg = VQVAEConfig(**{k: v for k, v in TINY.items() if not k.startswith("disc")}, upsample="nearest")
    model = VQVAE(cfg)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.decoder.modules())
    assert model.reconstruct(images(2)).shape == (2, 3, 16, 16)
    assert VQVAEConfig().upsample == "transposed"   # MNIST's default, and its figures, as they were


def test_a_run_on_colour_images_end_to_end(face_folder, tmp_path, invoke):
    cfg = tmp_path / "gan.yaml"
    cfg.write_text("epochs: 4\nbatch_size: 8\nimage_size: 32\nhidden: 16\nres_hidden: 8\ncodebook_size: 32\n"
                   "disc_channels: 4\n")
    r = invoke("train", "--model", "vqgan", "--dataset", face_folder, "--config", cfg, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "vqgan-faces"
    # Every term in the record; nothing adversarial in the first half, then the discriminator at work.
    rows = runs.read_metrics(run / "metrics.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    for key in ("train_rec", "train_g", "train_d_real", "train_d_fake", "train_weight", "test_mse", "test_usage"):
        assert key in rows[0], key
    assert rows[0]["train_weight"] == 0 and rows[0]["train_d_real"] == 0
    assert rows[3]["train_weight"] > 0 and rows[3]["train_d_real"] > 0
    assert " g " in r.stderr and " w " in r.stderr      # the live line shows them
    config = json.loads(invoke("info", run, "--json").stdout)["config"]
    assert config["model_config"]["diffaugment"] == "translation,cutout" and config["model_config"]["feature_matching"] == 5.0
    # Its latest epoch is its best: no best.safetensors kept from before the discriminator started.
    assert not (run / "best.safetensors").exists()
    # Its codes train a prior, which samples through it.
    r = invoke("train", "--model", "prior", "--run", run, "--epochs", 1, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    out = tmp_path / "s.png"
    r = invoke("sample", "--run", tmp_path / "runs" / "prior-vqgan-faces", "--n", 4, "--out", out)
    assert r.exit_code == 0, r.output
    assert out.is_file()
    curves = run / "loss_curve.png"
    assert curves.is_file()
    assert math.isfinite(rows[-1]["test_psnr"])


def test_a_prior_over_a_large_grid_samples_at_the_temperature_and_top_k_chosen_for_it(monkeypatch):
    from types import SimpleNamespace

    from vqgen import generate
    from vqgen.models.prior import LARGE_GRID_TEMPERATURE, LARGE_GRID_TOP_K

    spec = models.get("prior")
    small = spec.config(spec.defaults(models.CodeShape(512, 7))[1])
    large = spec.config(spec.defaults(models.CodeShape(16, 9))[1])
    assert (small.temperature, small.top_k) == (0.7, 0)   # MNIST's, as before
    assert (large.temperature, large.top_k) == (LARGE_GRID_TEMPERATURE, LARGE_GRID_TOP_K)
    assert spec.config({"codebook_size": 16, "grid": 9}).temperature == 0.7   # a run written before: as it was
    prior = spec.build(large)
    asked = []
    monkeypatch.setattr(type(prior), "sample", lambda self, n, **kw: asked.append(kw) or torch.zeros(n, 9, 9))
    source = SimpleNamespace(spec=spec, model=prior, decoder=None, latents=None)
    generate.sample(source, 2)
    generate.sample(source, 2, temperature=1.3, top_k=5)
    assert (asked[0]["temperature"], asked[0]["top_k"]) == (LARGE_GRID_TEMPERATURE, LARGE_GRID_TOP_K)
    assert (asked[1]["temperature"], asked[1]["top_k"]) == (1.3, 5)
