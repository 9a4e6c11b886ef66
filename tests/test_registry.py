"""The model registry: a model registered from outside vqgen trains, saves, loads and morphs through the CLI."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vqgen import models
from vqgen.models.base import Autoencoder, reconstruction_picture
from vqgen.settings import at_least, one_of, setting, validate


@dataclass
class ToyConfig:
    image_size: int = setting(28, "height = width", at_least(4, 64))
    channels: int = setting(1, "1 or 3", one_of(1, 3))
    latent_dim: int = setting(8, "size of the code", at_least(1, 256))

    def __post_init__(self):
        validate(self)


class ToyAutoencoder(Autoencoder):
    """One linear layer each way: the smallest model the contract allows."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        pixels = cfg.channels * cfg.image_size ** 2
        self.enc, self.dec = nn.Linear(pixels, cfg.latent_dim), nn.Linear(cfg.latent_dim, pixels)

    def forward(self, x, y=None):
        out = self.decode(self.encode(x))
        mse = F.mse_loss(out, x)
        return {"loss": mse, "mse": mse.detach()}

    def encode(self, x, space=None):
        self.space(space)
        return self.enc(x.flatten(1))

    def decode(self, z, space=None):
        self.space(space)
        c, s = self.cfg.channels, self.cfg.image_size
        return torch.sigmoid(self.dec(z)).view(-1, c, s, s)


def toy_defaults(shape):
    return {"epochs": 2, "lr": 0.01, "batch_size": 32}, {"image_size": shape.size, "channels": shape.channels}


@pytest.fixture
def toy():
    spec = models.register(models.ModelSpec(
        name="toy", display_name="toy autoencoder", model_class=ToyAutoencoder, config_class=ToyConfig,
        defaults=toy_defaults, pictures=reconstruction_picture,
        operations=frozenset({"reconstruct", "interpolate", "encode"})))
    yield spec
    models.unregister("toy")


def test_a_registered_model_works_through_the_cli(toy, tmp_path, invoke, make_mnist_idx, labelled_grid):
    data = make_mnist_idx(tmp_path / "mnist", n_train=160, n_test=40)
    r = invoke("train", "--model", "toy", "--dataset", data, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Training a toy autoencoder on" in r.stderr
    run = tmp_path / "runs" / "toy-mnist"
    assert (run / "model.safetensors").is_file() and (run / "recon_epoch_002.png").is_file()
    info = invoke("info", run, "--json", cwd=tmp_path)
    assert '"model": "toy"' in info.stdout and '"epochs_done": 2' in info.stdout
    r = invoke("reconstruct", "--n", 4, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Using run runs/toy-mnist" in r.stderr and "PSNR" in r.stderr
    grid = labelled_grid(run / "reconstruction_n4.png", 4, 2, 112, left=True, top=False)
    assert grid.std() > 5
    r = invoke("interpolate", "4", "9", "--steps", 5, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert Image.open(run / "interp_4_to_9.png").size == (5 * 114 + 2, 116)
    # Its weights load alone, through the Python API too.
    import vqgen

    model = vqgen.load(run / "model.safetensors")
    assert model.kind == "toy" and model.encode(torch.rand(3, 1, 28, 28)).shape == (3, 8)
    # What it cannot do is refused by name.
    r = invoke("sample", "--run", run, cwd=tmp_path)
    assert r.exit_code == 2 and "holds a toy autoencoder, but this needs a VAE, prior, VQ-VAE or VQGAN run" in r.stderr


def test_unknown_and_unregistered_models_are_refused(tmp_path, invoke):
    r = invoke("train", "--model", "toy", cwd=tmp_path)
    assert r.exit_code == 2 and "--model 'toy' is not one of 'vqvae', 'vae', 'vqgan', 'prior'" in r.stderr


def test_weights_naming_an_unregistered_model_say_so(toy, tmp_path):
    from vqgen import runs
    from vqgen.config import RunConfig, TrainConfig
    from vqgen.errors import CheckpointError

    cfg = RunConfig("toy", TrainConfig(), ToyConfig())
    runs.save_weights(tmp_path / "toy.safetensors", ToyAutoencoder(cfg.model_config), cfg, {"epoch": 1})
    models.unregister("toy")
    with pytest.raises(CheckpointError, match="its metadata names an unknown model 'toy'"):
        runs.load_checkpoint(tmp_path / "toy.safetensors")


def test_every_model_honours_the_contract():
    """Each registered model: the loss through __call__, per-epoch figures, latents that decode."""
    for name in models.names():
        spec = models.get(name)
        shape = (models.CodeShape(16, 3, 4) if spec.trains_on == "codes" else models.ImageShape(28, 1))
        cfg = spec.config({**spec.defaults(shape)[1], **({"dim": 16, "heads": 2} if spec.trains_on == "codes"
                                                          else {})})
        m = spec.build(cfg).train()
        batch = (torch.randint(0, 16, (4, 3, 3)), torch.tensor([0, 1, 2, 3])) if spec.trains_on == "codes" \
            else (torch.rand(4, 1, 28, 28), None)
        m.reset_metrics()
        out = m(*batch)
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), name
        out["loss"].backward()
        assert isinstance(m.epoch_metrics(), dict)
        if spec.can("encode"):
            m.eval()
            for space in m.latent_spaces:
                z = m.encode(batch[0], space)
                x = m.decode(z, space)
                assert x.shape == batch[0].shape and 0 <= x.min() and x.max() <= 1, (name, space)
            with pytest.raises(ValueError, match="`space` bogus|space bogus"):
                m.encode(batch[0], "bogus")
