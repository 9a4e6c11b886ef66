"""Model shapes, losses and the prior's causality, on tiny configs."""

import pytest
import torch

from vqgen.models import VAE, VQVAE, CodePrior, PriorConfig, VAEConfig, VQVAEConfig


@pytest.mark.parametrize("size,channels,downsample", [(28, 1, 2), (32, 3, 2), (32, 1, 3)])
def test_vqvae_shapes(size, channels, downsample):
    cfg = VQVAEConfig(image_size=size, channels=channels, downsample=downsample, hidden=16, res_hidden=8,
                      codebook_size=16, code_dim=4)
    m = VQVAE(cfg)
    x = torch.rand(3, channels, size, size)
    grid = size // 2 ** downsample
    assert m.encode(x).shape == (3, 4, grid, grid)
    out, idx = m.reconstruct(x), m.encode_indices(x)
    assert out.shape == x.shape and idx.shape == (3, grid, grid)
    assert m.decode_indices(idx).shape == x.shape
    r = m.reconstruct(x)
    assert r.min() >= 0 and r.max() <= 1
    losses = m(x)
    assert set(losses) == {"loss", "mse", "vq"}
    losses["loss"].backward()


def test_vqvae_rejects_sizes_the_encoder_cannot_halve():
    with pytest.raises(ValueError, match="divisible"):
        VQVAE(VQVAEConfig(image_size=30))


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


@pytest.mark.parametrize("num_classes", [0, 10])
def test_prior_is_causal(num_classes):
    torch.manual_seed(0)
    p = CodePrior(PriorConfig(codebook_size=16, grid=3, num_classes=num_classes, dim=32, layers=2, heads=2, dropout=0))
    p.eval()
    codes = torch.randint(0, 16, (2, 9))
    labels = torch.tensor([1, 2]) if num_classes else None
    base = p.logits(codes, labels)
    changed = codes.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 16
    after = p.logits(changed, labels)
    # Positions 0..5 predict codes 0..5 from what comes before: unchanged.
    assert torch.allclose(base[:, :6], after[:, :6], atol=1e-5)
    assert not torch.allclose(base[:, 6:], after[:, 6:], atol=1e-5)


def test_prior_class_changes_the_prediction_and_samples_have_grid_shape():
    torch.manual_seed(0)
    p = CodePrior(PriorConfig(codebook_size=16, grid=3, num_classes=4, dim=32, layers=2, heads=2, dropout=0))
    p.eval()
    codes = torch.randint(0, 16, (1, 9))
    a = p.logits(codes, torch.tensor([0]))
    b = p.logits(codes, torch.tensor([3]))
    assert not torch.allclose(a, b)
    s = p.sample(5, torch.tensor([0, 1, 2, 3, 0]), temperature=0.8, top_k=4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 3, 3) and s.min() >= 0 and s.max() < 16
    out = p(codes.view(1, 3, 3), torch.tensor([1]))
    assert out["bits_per_code"].item() == pytest.approx(out["loss"].item() / 0.6931471805599453, rel=1e-5)


def test_prior_top_k_one_is_greedy():
    torch.manual_seed(0)
    p = CodePrior(PriorConfig(codebook_size=16, grid=2, dim=32, layers=1, heads=2, dropout=0))
    p.eval()
    a = p.sample(3, top_k=1, generator=torch.Generator().manual_seed(1))
    b = p.sample(3, top_k=1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert (a == a[0]).all()


def sample_by_full_forward(p, n, labels=None, guidance=1.0, seed=0):
    """Sampling that recomputes the whole prefix at every step: the reference for the KV cache."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.zeros(n, p.length, dtype=torch.long)
    for i in range(p.length):
        logits = p.logits(codes[:, : i + 1], labels)[:, i]
        if guidance != 1.0:
            uncond = p.logits(codes[:, : i + 1], None)[:, i]
            logits = uncond + guidance * (logits - uncond)
        codes[:, i] = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)
    return codes.view(n, p.cfg.grid, p.cfg.grid)


@pytest.mark.parametrize("num_classes,guidance", [(0, 1.0), (4, 1.0), (4, 2.5), (4, 0.0)])
def test_prior_cached_sampling_matches_the_full_forward(num_classes, guidance):
    torch.manual_seed(0)
    p = CodePrior(PriorConfig(codebook_size=16, grid=3, num_classes=num_classes, dim=32, layers=2, heads=2))
    p.eval()
    labels = torch.tensor([0, 1, 2, 3]) if num_classes else None
    fast = p.sample(4, labels, guidance=guidance, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        slow = sample_by_full_forward(p, 4, labels, guidance)
    assert torch.equal(fast, slow)
    assert len(set(fast.flatten().tolist())) > 5


def test_prior_guidance_zero_is_the_classless_prior():
    torch.manual_seed(0)
    p = CodePrior(PriorConfig(codebook_size=16, grid=3, num_classes=4, dim=32, layers=2, heads=2)).eval()
    labels = torch.tensor([0, 1, 2, 3])

    def draw(labels, **kw):
        return p.sample(4, labels, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(draw(labels, guidance=0.0), draw(None))
    assert not torch.equal(draw(labels), draw(None))


def test_prior_class_dropout_hides_the_class_in_training_only():
    torch.manual_seed(0)
    p = CodePrior(PriorConfig(codebook_size=16, grid=3, num_classes=4, dim=32, layers=1, heads=2, class_dropout=1.0))
    codes = torch.randint(0, 16, (5, 3, 3))
    labels = torch.tensor([0, 1, 2, 3, 0])
    p.train()
    hidden = p(codes, labels)["loss"]
    p.eval()
    assert hidden.item() == pytest.approx(p(codes, None)["loss"].item(), rel=1e-6)
    assert p(codes, labels)["loss"].item() != pytest.approx(hidden.item(), rel=1e-6)


def test_prior_without_class_dropout_refuses_guidance_and_classless_samples():
    p = CodePrior(PriorConfig(codebook_size=16, grid=2, num_classes=4, dim=32, layers=1, heads=2, class_dropout=0.0))
    assert p.conditional and not p.guidable
    with pytest.raises(ValueError, match="class_dropout"):
        p.sample(2, torch.tensor([0, 1]), guidance=2.0)
    with pytest.raises(ValueError, match="give labels"):
        p.sample(2)
    u = CodePrior(PriorConfig(codebook_size=16, grid=2, dim=32, layers=1, heads=2))
    with pytest.raises(ValueError, match="takes no labels"):
        u.sample(2, torch.tensor([0, 1]))


def test_default_guidance_only_where_the_prior_learned_it():
    from vqgen.errors import UsageError
    from vqgen.models.prior import PRIOR_GUIDANCE

    guidable = CodePrior(PriorConfig(codebook_size=16, grid=2, num_classes=4, dim=32, layers=1, heads=2))
    plain = CodePrior(PriorConfig(codebook_size=16, grid=2, num_classes=4, dim=32, layers=1, heads=2, class_dropout=0.0))
    assert guidable.resolve_guidance(None) == PRIOR_GUIDANCE
    assert guidable.resolve_guidance(3.0) == 3.0
    assert plain.resolve_guidance(None) == 1.0
    assert plain.resolve_guidance(1.0) == 1.0
    with pytest.raises(UsageError, match="trained without class dropout"):
        plain.resolve_guidance(2.0)
