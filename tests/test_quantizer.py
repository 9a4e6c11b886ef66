"""The vector quantiser, over its options, on random tensors."""

import pytest
import torch

from vqgen.models.quantizer import VectorQuantizer, kmeans


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
