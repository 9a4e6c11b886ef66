"""Each quantiser owns its settings: a dataclass in its own file, held by the VQ-VAE's config beside its name.

Old flat configs load to the same model; derived sizes are properties; a quantiser registered from here (one
definition, one registration) trains through the public API and shows in `vqgen train --help`.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from vqgen import models
from vqgen.config import RunConfig, resolve_config
from vqgen.errors import UsageError
from vqgen.models import VQVAEConfig
from vqgen.models.quantizer import (Quantizer, QuantizerSpec, from_rows, quantizer_specs, register_quantizer,
                                    straight_through, to_rows, unregister_quantizer)
from vqgen.settings import at_least, field_names, setting, validate

# A VQ-VAE's model_config as vqgen 0.3 wrote it into config.yaml and the weights: every quantiser's settings flat,
# FSQ's and RVQ's sizes written over codebook_size and code_dim.
OLD_FLAT = {"image_size": 28, "channels": 1, "hidden": 16, "res_blocks": 1, "res_hidden": 8, "downsample": 2,
            "quantizer": "vq", "codebook_size": 16, "code_dim": 4, "levels": [8, 5, 5, 5], "stages": 2,
            "stage_codes": 32, "rotation_trick": False, "loss": "mse", "distance": "euclidean", "ema": True,
            "decay": 0.95, "commitment_weight": 0.5, "kmeans_init": True, "dead_code_threshold": 0.5}
OLD = {"vq": OLD_FLAT,
       "fsq": {**OLD_FLAT, "quantizer": "fsq", "levels": [4, 3, 3], "codebook_size": 36, "code_dim": 3},
       "rvq": {**OLD_FLAT, "quantizer": "rvq", "stage_codes": 8, "codebook_size": 64, "rotation_trick": True}}
# The same models, as a 0.4 run lists them: the chosen quantiser's settings only.
NEW = {"vq": {"codebook_size": 16, "code_dim": 4, "distance": "euclidean", "ema": True, "decay": 0.95,
              "commitment_weight": 0.5, "kmeans_init": True, "dead_code_threshold": 0.5, "rotation_trick": False},
       "fsq": {"levels": [4, 3, 3]},
       "rvq": {"stages": 2, "stage_codes": 8, "code_dim": 4, "distance": "euclidean", "ema": True, "decay": 0.95,
               "commitment_weight": 0.5, "kmeans_init": True, "dead_code_threshold": 0.5, "rotation_trick": True}}
# The weights of each quantiser, by the names 0.3 saved them under (FSQ keeps none).
QUANTIZER_KEYS = {"vq": {"quantizer.embed", "quantizer.embed_sum", "quantizer.cluster_size", "quantizer.initted"},
                  "fsq": set(),
                  "rvq": {f"quantizer.stages.{i}.{k}" for i in (0, 1)
                          for k in ("embed", "embed_sum", "cluster_size", "initted")}}
SIZES = {"vq": (16, 4), "fsq": (36, 3), "rvq": (64, 4)}


@pytest.mark.parametrize("name", ["vq", "fsq", "rvq"])
def test_a_0_3_flat_config_loads_to_the_same_model_and_weights(name, tmp_path):
    from vqgen import runs

    own = {k: OLD[name][k] for k in field_names(VQVAEConfig) if k in OLD[name]}   # the VQ-VAE's own settings
    nested = VQVAEConfig(**own, quantizer_config=NEW[name])
    torch.manual_seed(0)
    model = models.get("vqvae").build(nested)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))   # trained weights, not the ones a seed gives
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert {k for k in weights if k.startswith("quantizer.")} == QUANTIZER_KEYS[name]
    old = {"model": "vqvae", "train": {"dataset": "./mnist", "epochs": 1}, "model_config": OLD[name]}
    save_file(weights, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt", "vqgen_model": "vqvae", "vqgen_version": "0.3.0",
                        "config": json.dumps(old), "info": json.dumps({"epoch": 1})})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))

    ckpt = runs.load_checkpoint(tmp_path)
    assert ckpt.config.model_config == nested == runs.read_run_config(tmp_path).model_config
    assert all(torch.equal(ckpt.model.state_dict()[k], v) for k, v in weights.items())
    assert (ckpt.model.codebook_size, ckpt.config.model_config.code_dim) == SIZES[name]
    # The same seed builds the same model from the old flat config as from the nested one.
    torch.manual_seed(0)
    fresh = models.get("vqvae").build(RunConfig.from_dict(old).model_config).state_dict()
    torch.manual_seed(0)
    assert all(torch.equal(fresh[k], v) for k, v in models.get("vqvae").build(nested).state_dict().items())
    # Written again, it lists its own quantiser's settings only, flat as before, and reads back the same.
    written = ckpt.config.to_dict()["model_config"]
    assert written == {**own, **NEW[name], "upsample": "transposed"}   # a setting added since: its default
    assert RunConfig.from_dict(json.loads(ckpt.config.to_json())) == ckpt.config


def test_fsq_codebook_follows_from_its_levels_without_rewriting_the_config():
    cfg = VQVAEConfig(quantizer="fsq", levels=[4, 3, 3], codebook_size=64, code_dim=9)   # 0.3 ignored these too
    assert dataclasses.asdict(cfg.quantizer_config) == {"levels": [4, 3, 3]}       # nothing written over
    assert (cfg.codebook_size, cfg.code_dim) == (36, 3)
    cfg.quantizer_config.levels = [8, 8]
    assert (cfg.codebook_size, cfg.code_dim) == (64, 2)                           # read, not stored
    model = models.get("vqvae").build(VQVAEConfig(quantizer="fsq", quantizer_config={"levels": [4, 3, 3]}))
    assert model.encoder(torch.rand(2, 1, 28, 28)).shape == (2, 3, 7, 7) and model.codebook_size == 36
    # Layers merge setting by setting: a file's nested levels over the colour preset's flat codebook sizes.
    run = resolve_config("vqvae", models.ImageShape(96, 3),
                         file_values={"model_config": {"quantizer_config": {"levels": [5, 5]}}},
                         flags={"quantizer": "fsq"})
    assert (run.model_config.codebook_size, run.model_config.code_dim) == (25, 2)
    assert "codebook_size" not in run.to_dict()["model_config"]
    with pytest.raises(UsageError, match=r"levels has a value that must be at least 2, not 1 \(in c.yaml\)"):
        resolve_config("vqvae", models.ImageShape(28, 1), file_values={"quantizer_config": {"levels": [1, 2]}},
                       file_name="c.yaml")


# --------------------------------------------------------------------------- a quantiser of one's own


@dataclass
class SignConfig:
    bits: int = setting(5, "channels of a code, each rounded to its sign", at_least(1, 16))

    def __post_init__(self):
        validate(self)

    @property
    def codebook_size(self) -> int:
        return 2 ** self.bits

    @property
    def code_dim(self) -> int:
        return self.bits


class SignQuantizer(Quantizer):
    """Each channel to -1 or +1 (as lookup-free quantisation does); the code is the bits read as a number."""

    def __init__(self, cfg: SignConfig):
        super().__init__(cfg.codebook_size)
        self.codebook_size, self.dim = cfg.codebook_size, cfg.code_dim
        self.register_buffer("basis", 2 ** torch.arange(cfg.bits), persistent=False)

    @property
    def codebook(self):
        return self._codes(torch.arange(self.codebook_size, device=self.basis.device))

    def _codes(self, indices):
        return (torch.div(indices.unsqueeze(-1), self.basis, rounding_mode="floor") % 2).float() * 2 - 1

    @torch.no_grad()
    def indices(self, z):
        b, _, h, w = z.shape
        return ((to_rows(z) > 0).long() * self.basis).sum(1).view(b, h, w)

    def forward(self, z):
        rows = to_rows(z)
        signs = torch.where(rows > 0, 1.0, -1.0)
        indices = ((signs > 0).long() * self.basis).sum(1)
        self._count(indices)
        loss = 0.1 * (rows - signs).pow(2).mean()
        return from_rows(straight_through(rows, signs), z.shape), indices.view(z.shape[0], *z.shape[2:]), loss

    def lookup(self, indices):
        return self._codes(indices).permute(0, 3, 1, 2).contiguous()


@pytest.fixture
def sign():
    """What a file `models/sign.py` would hold: its settings, its module and this one registration."""
    yield register_quantizer(QuantizerSpec(name="sign", config_class=SignConfig, build=SignQuantizer,
                                           description="each channel rounded to its sign"))
    unregister_quantizer("sign")


def test_a_quantizer_with_its_own_settings_is_one_registration(sign, mnist_idx, tmp_path, invoke):
    import vqgen

    result = vqgen.train(dataset=str(mnist_idx), quantizer="sign", bits=6, epochs=1, batch_size=16,
                         eval_batch_size=64, hidden=16, res_hidden=8, res_blocks=1, out=tmp_path / "runs",
                         name="sign")
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["model_config"]
    assert saved["quantizer"] == "sign" and saved["bits"] == 6
    assert not {"codebook_size", "code_dim", "levels", "stages", "distance"} & set(saved)
    assert 0 < result.metrics["test_usage"] <= 1
    model = vqgen.load(result.run_dir)
    assert isinstance(model.module.quantizer, SignQuantizer) and model.module.codebook_size == 64
    codes = model.codes(model.held_out(4))
    assert codes.shape == (4, 7, 7) and 0 <= codes.min() and codes.max() < 64
    # `vqgen info` lists its settings and no other quantiser's; a bad value is refused by name.
    described = json.loads(invoke("info", result.run_dir, "--json").stdout)
    info = described["config"]["model_config"]
    assert info["bits"] == 6 and "rotation_trick" not in info and "levels" not in info
    # The sizes that follow from its settings are shown all the same.
    assert described["codes"] == {"codebook_size": 64, "grid": 7}
    assert "64 per position, on a 7x7 grid" in invoke("info", result.run_dir).stdout
    with pytest.raises(UsageError, match="bits must be at most 16"):
        VQVAEConfig(quantizer="sign", bits=17)


def test_train_help_lists_each_quantizer_and_its_settings_from_the_registry(sign, invoke):
    text = " ".join(invoke("train", "--help").stdout.split())   # as one line, whatever the terminal's width
    for spec in quantizer_specs():
        listed = f"{spec.name} ({spec.description}): {', '.join(field_names(spec.config_class))}"
        assert listed in text, listed
    assert "sign (each channel rounded to its sign): bits" in text
    unregister_quantizer("sign")
    assert "sign (" not in " ".join(invoke("train", "--help").stdout.split())


def test_the_usage_guide_documents_every_quantizer_setting():
    guide = (Path(__file__).parent.parent / "docs" / "usage.md").read_text()
    for spec in quantizer_specs():
        assert f"`{spec.name}`" in guide, spec.name
        for name in field_names(spec.config_class):
            assert f"`{name}`" in guide, f"{spec.name}: {name} is missing from docs/usage.md"


def test_settings_of_the_other_quantizers_are_dropped_and_unknown_ones_refused():
    cfg = models.get("vqvae").config({**OLD_FLAT, "quantizer": "rvq"})
    assert cfg.quantizer_config == models.get("vqvae").config({"quantizer": "rvq", "code_dim": 4}).quantizer_config
    assert cfg.codebook_size == 32 ** 2
    with pytest.raises(UsageError, match="unknown setting 'bits'"):
        models.get("vqvae").config({"bits": 3})    # no quantiser registered has it
    with pytest.raises(UsageError, match="quantizer_config should be key: value pairs"):
        VQVAEConfig(quantizer_config=3)
