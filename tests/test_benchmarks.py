"""The benchmark scripts' own parts: the reference quantisers behind vqgen's contract, the sharpness figure."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sharpness_falls_with_blur_and_rises_with_detail():
    faces = script("faces")
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1)
    flat = torch.full((4, 3, 32, 32), 0.5)
    assert faces.sharpness(flat) == 0.0
    assert faces.sharpness(images) > 5 * faces.sharpness(blurred) > 0
    # grey and colour images alike; a checkerboard's Laplacian is known: +-4 * 255 everywhere inside
    board = ((torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2).float().view(1, 1, 32, 32)
    assert faces.sharpness(board) == pytest.approx((4 * 255) ** 2, rel=0.01)


@pytest.fixture
def quantizers():
    """The benchmark script, its reference quantisers registered for the test only."""
    pytest.importorskip("vector_quantize_pytorch")
    from vqgen.models.quantizer import quantizer_names, unregister_quantizer

    before = set(quantizer_names())
    module = script("quantizers")
    module.register_reference()
    yield module
    for name in set(quantizer_names()) - before:
        unregister_quantizer(name)


@pytest.mark.parametrize("row", ["ref-vq", "ref-vq-rotation", "ref-fsq"])
def test_reference_quantizers_keep_the_contract_in_a_vqvae(row, quantizers):
    from vqgen import models

    settings = dict(quantizers.ROWS[row][1])
    cfg = models.get("vqvae").config({**settings, "hidden": 16, "res_hidden": 8})
    with torch.device("meta"):     # as vqgen's size check before training builds it
        models.get("vqvae").build(cfg)
    model = models.get("vqvae").build(cfg).train()
    x = torch.rand(8, 1, 28, 28)
    losses = model(x)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and model.encoder.net[0].weight.grad.abs().sum() > 0
    model.eval()
    codes = model.encode_indices(x)
    assert codes.shape == (8, 7, 7) and codes.max() < model.codebook_size
    assert model.codebook_size == (1000 if row == "ref-fsq" else 512)
    # lookup agrees with the quantised latents, and decoding codes gives the reconstruction
    assert torch.allclose(model.decode_indices(codes), model.reconstruct(x), atol=1e-5)
    model.reset_metrics()
    model(x)
    assert 0 < model.epoch_metrics()["usage"] <= 1
