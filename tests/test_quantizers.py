"""The quantisers: the vector quantiser's options, usage counts and dead codes; the contract every registered
quantiser keeps (in fp32 under autocast too); FSQ, residual VQ and the rotation trick; their settings and flags."""

import json

import pytest
import torch

from vqgen import models
from vqgen.errors import UsageError
from vqgen.models.fsq import FSQ
from vqgen.models.quantizer import VectorQuantizer, build_quantizer, kmeans, quantizer_names, straight_through
from vqgen.models.rvq import ResidualVQ


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("ema", [True, False])
@pytest.mark.parametrize("kmeans_init", [True, False])
def test_forward_shapes_and_nearest_codes(distance, ema, kmeans_init):
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=32, dim=8, distance=distance, ema=ema, kmeans_init=kmeans_init)
    z = torch.randn(4, 8, 5, 5, requires_grad=True)
    vq.train()
    q, idx, loss = vq(z)
    assert q.shape == z.shape and idx.shape == (4, 5, 5)
    assert idx.min() >= 0 and idx.max() < 32
    assert loss.ndim == 0 and loss.item() >= 0
    # Each output vector is exactly the code its index names.
    vq.eval()
    q, idx, _ = vq(z)
    flat_q = q.permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.allclose(flat_q, vq.codebook[idx.flatten()], atol=1e-5)
    # ... and that code is the nearest one.
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    if distance == "cosine":
        best = (torch.nn.functional.normalize(flat, dim=1) @ vq.codebook.t()).argmax(1)
    else:
        best = torch.cdist(flat, vq.codebook).argmin(1)
    assert torch.equal(best, idx.flatten())
    # `indices` finds the same codes and leaves the usage counts alone.
    counts = vq.counts.clone()
    assert torch.equal(vq.indices(z), idx)
    assert torch.equal(vq.counts, counts)


def test_straight_through_gradient_reaches_the_input():
    vq = VectorQuantizer(codebook_size=16, dim=4, kmeans_init=False)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    q, _, _ = vq(z)
    q.sum().backward()
    assert z.grad is not None
    assert torch.allclose(z.grad, torch.ones_like(z))


def test_codebook_loss_trains_the_codebook_without_ema():
    vq = VectorQuantizer(codebook_size=8, dim=4, ema=False, kmeans_init=False)
    z = torch.randn(2, 4, 3, 3)
    _, _, loss = vq(z)
    loss.backward()
    assert vq.embed.grad is not None and vq.embed.grad.abs().sum() > 0


def test_ema_moves_codes_towards_their_vectors():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=4, dim=2, kmeans_init=False, decay=0.5, dead_code_threshold=0)
    target = torch.tensor([3.0, -2.0])
    z = target.view(1, 2, 1, 1).expand(1, 2, 4, 4).contiguous()
    _, idx, _ = vq(z)
    code = idx.flatten()[0]
    before = (vq.codebook[code] - target).norm().item()
    for _ in range(10):
        vq(z)
    after = (vq.codebook[code] - target).norm().item()
    assert after < before * 0.1


def test_kmeans_init_places_codes_on_the_data():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    data = centres.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2)
    z = data.t().reshape(1, 2, 10, 20)
    vq = VectorQuantizer(codebook_size=4, dim=2, kmeans_init=True, dead_code_threshold=0, decay=1.0)
    vq(z)
    assert bool(vq.initted)
    for c in centres:
        assert (vq.codebook - c).norm(dim=1).min() < 0.5


def test_kmeans_function_finds_clusters():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(100, 3) + 10, torch.randn(100, 3) - 10])
    c = kmeans(x, 2, iters=5)
    assert sorted(c[:, 0].round().tolist()) == pytest.approx([-10, 10], abs=1)


def test_dead_codes_restart_on_data():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, dim=2, kmeans_init=False, dead_code_threshold=1.0)
    # All inputs sit at one point far from the random codes: one code gets used,
    # the other seven are dead and must be moved onto the data.
    z = torch.full((1, 2, 4, 4), 20.0)
    _, idx, _ = vq(z)
    used = int(idx.flatten()[0])
    on_data = (vq.codebook - 20.0).abs().max(dim=1).values < 1e-4
    assert on_data.sum() == 7 and not on_data[used]


def test_dead_codes_restart_at_batch_rows_and_live_codes_stay():
    """Restarting moves only the dead codes, onto rows of the batch (one way on every device)."""
    from vqgen.models.quantizer import VectorQuantizer

    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, dim=2, kmeans_init=False, dead_code_threshold=1.0).train()
    vq.cluster_size.copy_(torch.tensor([5.0, 0.1, 5.0, 0.2, 5.0, 5.0, 5.0, 0.3]))
    dead = vq.cluster_size < 1.0
    before = vq.embed.clone()
    flat = torch.randn(50, 2)
    vq._restart_dead_codes(flat)
    assert torch.equal(vq.embed[~dead], before[~dead])
    for code in vq.embed[dead]:
        assert (flat == code).all(1).any()                  # each restarted code is a row of the batch
    assert (vq.cluster_size[dead] == 1.0).all()
    assert torch.allclose(vq.embed_sum[dead], vq.embed[dead])   # threshold 1: sum = code x 1


def test_usage_and_perplexity_count_over_calls_and_reset():
    vq = VectorQuantizer(codebook_size=4, dim=1, kmeans_init=False, dead_code_threshold=0)
    vq.eval()
    vq.embed.data = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    vq(torch.tensor([0.0, 10.0]).view(1, 1, 1, 2))
    vq(torch.tensor([0.0, 10.0]).view(1, 1, 1, 2))
    stats = vq.usage()
    assert stats["usage"] == 0.5
    assert stats["perplexity"] == pytest.approx(2.0)
    assert vq.usage() == stats          # reading does not reset ...
    vq.reset_usage()                    # ... an explicit reset does
    assert vq.usage() == {"usage": 0.0, "perplexity": 0.0}


def test_perplexity_of_uniform_use_equals_codebook_size():
    vq = VectorQuantizer(codebook_size=4, dim=1, kmeans_init=False, dead_code_threshold=0)
    vq.eval()
    vq.embed.data = torch.tensor([[0.0], [10.0], [20.0], [30.0]])
    vq(torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 1, 4))
    assert vq.usage()["perplexity"] == pytest.approx(4.0)


SETTINGS = {"vq": {}, "vq-rotation": {"rotation_trick": True}, "fsq": {"levels": [4, 3, 3]},
            "rvq": {"stage_codes": 8, "stages": 3}}


def config(case: str):
    name = case.split("-")[0]
    return models.get("vqvae").config({"quantizer": name, "hidden": 16, "res_hidden": 8, **SETTINGS[case]})


def test_registry_lists_each_quantizer():
    assert quantizer_names()[:3] == ["vq", "fsq", "rvq"]


@pytest.mark.parametrize("case", list(SETTINGS))
def test_every_quantizer_keeps_the_contract(case):
    torch.manual_seed(0)
    cfg = config(case)
    q = build_quantizer(cfg.quantizer, cfg.quantizer_config).train()
    z = (torch.randn(4, q.dim, 5, 6) * 2).requires_grad_(True)
    quantized, indices, loss = q(z)
    assert quantized.shape == z.shape and indices.shape == (4, 5, 6) and indices.dtype == torch.long
    assert loss.shape == () and torch.isfinite(loss)
    assert 0 <= indices.min() and indices.max() < q.codebook_size
    # lookup turns the indices back into the quantised map's values
    assert torch.allclose(q.lookup(indices), quantized.detach(), atol=1e-5)
    # the gradient reaches the input through the quantiser
    (quantized * torch.randn_like(quantized)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # indices() agrees with forward in eval mode and counts nothing
    q.eval()
    q.reset_usage()
    assert torch.equal(q.indices(z.detach()), q(z.detach())[1])
    used = q.usage()
    assert 0 < used["usage"] <= 1 and 1 <= used["perplexity"] <= q.codebook_size
    q.reset_usage()
    q.indices(z.detach())
    assert q.usage() == {"usage": 0.0, "perplexity": 0.0}
    # the codebook tensor is what the fingerprint of a run hashes: finite and non-empty
    assert q.codebook.numel() > 0 and torch.isfinite(q.codebook).all()


@pytest.mark.parametrize("case", list(SETTINGS))
def test_quantizers_work_in_full_precision_under_mixed_precision(case):
    """Distances, rounding and codebook updates stay in fp32 when the model around them runs in bf16."""
    torch.manual_seed(0)
    cfg = config(case)
    q = build_quantizer(cfg.quantizer, cfg.quantizer_config).train()
    z = torch.randn(16, q.dim, 7, 7) * 3
    q(z)   # k-means and a first update, in fp32
    state = {k: v.clone() for k, v in q.state_dict().items()}
    expected, updated = q(z), q.codebook.clone()
    q.load_state_dict(state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = q(z)
    assert torch.equal(got[1], expected[1])                 # the same codes as in fp32
    assert got[0].dtype == torch.float32 and torch.equal(got[0], expected[0])
    assert torch.equal(q.codebook, updated)                 # the same codebook update
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(q.eval().indices(z), q.indices(z))


def test_any_quantizer_runs_with_autocast_off():
    from vqgen.models.quantizer import Quantizer

    seen = []

    class Probe(Quantizer):   # a quantiser of someone else's: the contract applies to it too
        def indices(self, z):
            seen.append(torch.is_autocast_enabled("cpu"))
            return z.argmax(1)

        def forward(self, z):
            seen.append(torch.is_autocast_enabled("cpu"))
            return z, self.indices(z), z.sum()

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        Probe(4)(torch.randn(1, 4, 2, 2))
        assert torch.is_autocast_enabled("cpu")   # and back on after
    assert seen == [False, False]


def test_fsq_rounds_each_channel_to_its_levels_with_no_loss():
    fsq = FSQ([8, 5, 3])
    assert (fsq.codebook_size, fsq.dim) == (120, 3)
    codes = fsq.codebook
    assert codes.shape == (120, 3) and torch.unique(codes, dim=0).shape[0] == 120
    for d, levels in enumerate([8, 5, 3]):
        assert len(torch.unique(codes[:, d])) == levels
    assert codes.min() == -1 and codes.max() == 1
    z = torch.randn(64, 3, 8, 8) * 3
    quantized, indices, loss = fsq(z)
    assert loss.item() == 0.0
    # every value is one of its channel's levels
    for d in range(3):
        assert set(torch.unique(quantized[:, d]).tolist()) <= set(torch.unique(codes[:, d]).tolist())
    assert len(torch.unique(indices)) > 100          # wide inputs reach most of the 120 codes
    # straight through: the gradient skips the rounding and is the bound's (tanh), scaled to [-1, 1]
    z.requires_grad_(True)
    fsq(z)[0].sum().backward()
    shift = torch.atanh(torch.tensor([0.5, 0.0, 0.0]) / fsq.half_range).view(1, 3, 1, 1)
    bound_grad = (1 - torch.tanh(z.detach() + shift) ** 2) * (fsq.half_range / fsq.half_width).view(1, 3, 1, 1)
    assert torch.allclose(z.grad, bound_grad, atol=1e-6)


def test_rotation_trick_keeps_the_code_and_rotates_the_gradient():
    torch.manual_seed(0)
    src = torch.randn(16, 4, requires_grad=True)
    tgt = torch.randn(16, 4)
    out = straight_through(src, tgt, rotation_trick=True)
    assert torch.allclose(out, tgt, atol=1e-5)
    g = torch.randn(16, 4)
    out.backward(g)
    # a rotation keeps the gradient's length, scaled by |code| / |input| ...
    scale = tgt.norm(dim=1) / src.detach().norm(dim=1)
    assert torch.allclose(src.grad.norm(dim=1), g.norm(dim=1) * scale, rtol=1e-4)
    # ... and turns it: unlike straight through, which passes g unchanged
    assert not torch.allclose(src.grad, g, atol=1e-3)
    plain = src.detach().clone().requires_grad_(True)
    straight_through(plain, tgt).backward(g)
    assert torch.equal(plain.grad, g)
    # an input already on its code passes its gradient unchanged
    same = tgt.clone().requires_grad_(True)
    straight_through(same, tgt, rotation_trick=True).backward(g)
    assert torch.allclose(same.grad, g, atol=1e-5)


def test_residual_stages_pack_into_one_index_and_shrink_the_error():
    torch.manual_seed(0)
    rvq = ResidualVQ(3, codebook_size=8, dim=4, dead_code_threshold=0).train()
    z = torch.randn(8, 4, 6, 6)
    for _ in range(3):
        rvq(z)
    quantized, indices, _ = rvq.eval()(z)
    assert rvq.codebook_size == 512 and indices.max() < 512
    # the packed index names each stage's code: stage s is digit s in base 8
    digits = [torch.div(indices, 8 ** s, rounding_mode="floor") % 8 for s in range(3)]
    parts = [stage.lookup(d) for stage, d in zip(rvq.stages, digits)]
    assert torch.allclose(sum(parts), quantized, atol=1e-5)
    errors = [(z - sum(parts[:k + 1])).pow(2).mean().item() for k in range(3)]
    assert errors[0] > errors[1] > errors[2]
    usage = rvq.usage()
    assert usage["usage"] == pytest.approx(sum((s.counts > 0).float().mean().item() for s in rvq.stages) / 3)


def test_vq_checkpoints_keep_their_weight_names():
    cfg = config("vq")
    names = set(models.get("vqvae").build(cfg).state_dict())
    assert {"quantizer.embed", "quantizer.embed_sum", "quantizer.cluster_size"} <= names
    assert isinstance(build_quantizer("vq", cfg.quantizer_config), VectorQuantizer)


@pytest.mark.parametrize("values, message", [
    ({"quantizer": "lfq"}, "quantizer must be one of vq, fsq, rvq, not 'lfq'"),
    ({"quantizer": "rvq", "stage_codes": 512, "stages": 2}, "makes 262,144 codes for the prior; at most 65,536"),
    ({"quantizer": "rvq", "distance": "cosine"}, "distance cosine does not suit rvq"),
    ({"quantizer": "fsq", "levels": [256, 256, 2]}, "make 131,072 codes; at most 65,536"),
    ({"quantizer": "fsq", "levels": [1, 5]}, "levels has a value that must be at least 2, not 1"),
])
def test_bad_quantizer_settings_are_refused_by_name(values, message):
    with pytest.raises(UsageError, match=None) as e:
        models.get("vqvae").config(values)
    assert message in str(e.value)


def test_fsq_and_rvq_settings_decide_the_number_of_codes():
    cfg = models.get("vqvae").config({"quantizer": "fsq", "levels": [8, 5, 5, 5], "codebook_size": 64})
    assert (cfg.codebook_size, cfg.code_dim) == (1000, 4)
    cfg = models.get("vqvae").config({"quantizer": "rvq"})
    assert (cfg.codebook_size, cfg.quantizer_config.stage_codes, cfg.quantizer_config.stages) == (1024, 32, 2)


@pytest.mark.parametrize("flags, size", [(["--quantizer", "fsq"], 1000), (["--quantizer", "rvq"], 256),
                                         (["--rotation-trick"], 16)])
def test_each_quantizer_trains_and_its_prior_samples(flags, size, mnist_idx, tiny_config, tmp_path, invoke):
    tiny_config.write_text(tiny_config.read_text() + "stage_codes: 16\n")   # rvq: 16 codes per stage, 256 in all
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, *flags, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    run = r.stdout.strip().splitlines()[-1]
    cfg = json.loads(invoke("info", run, "--json", cwd=tmp_path).stdout)["config"]["model_config"]
    assert cfg["quantizer"] == (flags[1] if flags[0] == "--quantizer" else "vq")
    assert cfg.get("rotation_trick", False) == (flags == ["--rotation-trick"])   # fsq has no such setting
    (tmp_path / "prior.yaml").write_text("epochs: 1\nbatch_size: 32\ndim: 16\nlayers: 1\nheads: 2\n")
    r = invoke("train", "--model", "prior", "--config", tmp_path / "prior.yaml", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    prior = json.loads(invoke("info", r.stdout.strip().splitlines()[-1], "--json", cwd=tmp_path).stdout)
    assert prior["config"]["model_config"]["codebook_size"] == size
    r = invoke("sample", "--digit", 3, "--n", 4, "--out", tmp_path / "s.png", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.png").stat().st_size > 0


def test_quantizer_flags_are_refused_where_they_do_not_apply(mnist_idx, tmp_path, invoke):
    r = invoke("train", "--dataset", mnist_idx, "--quantizer", "lfq", cwd=tmp_path)
    assert r.exit_code == 2 and "--quantizer must be one of vq, fsq, rvq, not 'lfq'" in r.stderr
    r = invoke("train", "--model", "vae", "--dataset", mnist_idx, "--quantizer", "fsq", cwd=tmp_path)
    assert r.exit_code == 2 and "'quantizer'" in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
