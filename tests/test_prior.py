"""The prior, a causal transformer over a VQ-VAE's code grid: causality, sampling (KV cache, top-k, guidance,
class dropout), its defaults, and runs trained on a parent run's codes, conditional or not."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vqgen.config import resolve_config
from vqgen.models import CodePrior, CodeShape, PriorConfig


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


def test_prior_defaults_grow_with_the_code_grid():
    small = resolve_config("prior", CodeShape(512, 7, 10))
    assert (small.model_config.dim, small.model_config.layers, small.train.epochs) == (64, 2, 1)
    large = resolve_config("prior", CodeShape(512, 12, 0))
    mc = large.model_config
    assert (mc.grid, mc.num_classes) == (12, 0) and mc.dim > 64 and mc.layers > 2 and large.train.epochs > 1


def test_prior_run_records_its_vqvae(home, invoke, labelled_grid):
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


def test_prior_of_a_retrained_vqvae_is_refused(home, tmp_path, invoke):
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


def test_unconditional_prior_on_unlabelled_images(tmp_path, invoke, digit_image, labelled_grid, tiny_yaml):
    rng = np.random.default_rng(0)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(120):
        Image.fromarray(digit_image(i % 10, rng)).save(folder / f"d{i:03d}.png")
    (tmp_path / "vqvae.yaml").write_text(tiny_yaml.vqvae)
    (tmp_path / "prior.yaml").write_text(tiny_yaml.prior)
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
    labelled_grid(tmp_path / "s.png", 2, 2, 112, left=False, top=True)   # titled "4 samples from prior-digits"
    r = invoke("sample", "--digit", 3, "--run", run, cwd=tmp_path)
    assert r.exit_code == 2 and "this prior is unconditional" in r.stderr
    r = invoke("sample", "--digit", 3, "--n", 2, cwd=tmp_path)   # without --run: a run that can
    assert r.exit_code == 0 and "ready:vqvae-mnist: no run in runs/ that samples class 3" in r.stderr
    r = invoke("sample", "--guidance", 2, cwd=tmp_path)
    assert r.exit_code == 2 and "--guidance needs a class-conditional prior; this one is unconditional" in r.stderr


def test_unconditional_prior_learns_mirrored_grids_of_an_augmented_parent(face_folder, tmp_path, invoke, tiny_yaml):
    (tmp_path / "vq.yaml").write_text(tiny_yaml.vqvae + "image_size: 32\ndownsample: 2\n")
    r = invoke("train", "--dataset", face_folder, "--config", tmp_path / "vq.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    vq_run = r.stdout.strip().splitlines()[-1]
    cfg = json.loads(invoke("info", vq_run, "--json", cwd=tmp_path).stdout)["config"]
    assert cfg["train"]["augment"] is False      # tiny 32x32 images keep the plain defaults
    (tmp_path / "vq.yaml").write_text(tiny_yaml.vqvae + "image_size: 32\ndownsample: 2\naugment: true\n")
    r = invoke("train", "--dataset", face_folder, "--config", tmp_path / "vq.yaml", "--name", "aug", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    (tmp_path / "prior.yaml").write_text("epochs: 1\nbatch_size: 8\ndim: 16\nlayers: 1\nheads: 2\n")
    for run, grids in ((vq_run, 23), ("runs/aug", 46)):   # 24 readable faces, 1 held out; mirrored: twice
        r = invoke("train", "--model", "prior", "--run", run, "--config", tmp_path / "prior.yaml", cwd=tmp_path)
        assert r.exit_code == 0, r.output
        assert f"{grids} training and 1 held-out code grids" in r.stderr, r.stderr
    r = invoke("sample", "--n", 4, "--out", tmp_path / "s.png", cwd=tmp_path)
    assert r.exit_code == 0, r.output
