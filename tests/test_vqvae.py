"""The VQ-VAE: shapes through encoder, quantiser and decoder, sizes it refuses, defaults that follow the image
shape."""

import pytest
import torch

from vqgen.config import resolve_config
from vqgen.models import VQVAE, ImageShape, VQVAEConfig


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
