"""Settings: defaults, config files and flags resolved into a run's config as a pure step; every value checked
where it is declared and refused by name, from any value or file; the usage guide documents each."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vqgen import models
from vqgen.config import RunConfig, TrainConfig, choose_model, read_yaml, resolve_config
from vqgen.errors import UsageError
from vqgen.settings import field_names


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["1e-3", "euclidean", "cosine", "onecycle", "constant", "cpu", "3"]),
    st.lists(st.integers(-5, 600), max_size=4),
)


SHAPES = {"vqvae": models.ImageShape(28, 1), "vae": models.ImageShape(32, 3), "prior": models.CodeShape(16, 3, 4)}


def settings_for(model: str):
    keys = field_names(TrainConfig) + field_names(models.get(model).config_class)
    return st.dictionaries(st.sampled_from(keys), ANY_VALUE, max_size=4)


def test_resolve_config_is_pure_and_layers_defaults_file_and_flags():
    shape = models.ImageShape(32, 3)
    cfg = resolve_config("vae", shape, file_values={"epochs": 5, "latent_dim": 8, "lr": "1e-3"},
                         flags={"epochs": 7})
    assert cfg.train.epochs == 7                     # flag over file
    assert cfg.train.lr == 0.001                     # YAML 1.1 reads 1e-3 as a string: still a number
    assert cfg.train.augment is True                 # the VAE's preset for colour images
    assert cfg.model_config.latent_dim == 8 and cfg.model_config.image_size == 32
    assert cfg.model_config.hidden_dims == [32, 64, 128]   # depth chosen by the shape
    prior = resolve_config("prior", models.CodeShape(64, 7, 10), file_values={"codebook_size": 3, "dim": 32})
    assert (prior.model_config.codebook_size, prior.model_config.grid, prior.model_config.num_classes) == (64, 7, 10)


@pytest.mark.parametrize("values,message", [
    ({"lr_schedule": "bogus"}, "lr_schedule bogus: use onecycle or constant (in c.yaml)"),
    ({"distance": "manhattan"}, "distance manhattan: use euclidean or cosine (in c.yaml)"),
    ({"epochs": 0}, "epochs must be at least 1, not 0 (in c.yaml)"),
    ({"lr": float("inf")}, "lr must be a finite number, not inf (in c.yaml)"),
    ({"codebook_size": 3_000_000_000}, "codebook_size must be at most 65,536"),
    ({"ema": "yes please"}, "ema should be true or false"),
    ({"eval_batch_size": 0}, "eval_batch_size must be at least 1"),
])
def test_every_setting_is_checked_where_it_is_defined(values, message):
    with pytest.raises(UsageError) as e:
        resolve_config("vqvae", models.ImageShape(28, 1), file_values=values, file_name="c.yaml")
    assert message in str(e.value)


def test_flag_errors_name_the_parameter_and_the_cli_shows_the_flag(tmp_path, invoke):
    with pytest.raises(UsageError) as e:
        resolve_config("vqvae", models.ImageShape(28, 1), flags={"batch_size": 0})
    assert str(e.value) == "batch_size must be at least 1, not 0"
    r = invoke("train", "--batch-size", "0", cwd=tmp_path)
    assert r.exit_code == 2 and r.stderr.strip() == "Error: --batch-size must be at least 1, not 0"


def test_a_config_file_names_the_model_where_the_flag_does_not():
    assert choose_model(None, {}, "c.yaml") == models.DEFAULT_MODEL
    assert choose_model(None, {"model": "vae"}, "c.yaml") == "vae"
    assert choose_model("vae", {"model": "vae"}, "c.yaml") == "vae"
    assert choose_model("prior", {}, "c.yaml") == "prior"
    assert choose_model("vqvae", {"model": {"hidden": 8}}, "c.yaml") == "vqvae"   # a mapping: the model's settings
    assert choose_model(None, {"model": None}, "c.yaml") == models.DEFAULT_MODEL
    with pytest.raises(UsageError) as e:
        choose_model("vqvae", {"model": "vae"}, "c.yaml")
    assert str(e.value) == "model vqvae, but c.yaml says model: vae; drop one of them, or make them the same"
    for named in ("gan", 3, ["vae"]):
        with pytest.raises(UsageError) as e:
            choose_model(None, {"model": named}, "c.yaml")
        assert str(e.value).startswith(f"c.yaml says model: {named!r}, which is not one of 'vqvae', ")


def test_gpu_defaults_are_recorded_and_flags_win():
    from vqgen.config import resolve_config

    shape = models.ImageShape(28, 1)
    gpu = resolve_config("vqvae", shape, device_type="cuda")
    cpu = resolve_config("vqvae", shape, device_type="cpu")
    spec = models.get("vqvae")
    assert spec.gpu_defaults and gpu.train.batch_size == spec.gpu_defaults["batch_size"] != cpu.train.batch_size
    assert resolve_config("vqvae", shape, device_type="cuda", flags={"batch_size": 32}).train.batch_size == 32
    prior = resolve_config("prior", models.CodeShape(16, 7, 10), device_type="cuda")
    assert prior.train.batch_size == models.get("prior").gpu_defaults["batch_size"]


def test_run_config_round_trips():
    cfg = RunConfig("vqvae", TrainConfig(epochs=4), models.get("vqvae").config({"codebook_size": 32}),
                    source="/data/mnist", parent={})
    back = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg


def test_unknown_config_key_names_the_key(tmp_path, mnist_idx, invoke):
    (tmp_path / "c.yaml").write_text("epochs: 1\nlearning_rte: 0.1\n")
    r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "c.yaml", cwd=tmp_path)
    assert r.exit_code == 2 and "unknown setting 'learning_rte'" in r.stderr


@pytest.mark.parametrize("setting,message", [
    ("eval_batch_size: 0", "eval_batch_size must be at least 1, not 0 (in"),
    ("grid_images: 0", "grid_images must be at least 1"),
    ("codebook_size: 0", "codebook_size must be at least 2"),
    ("codebook_size: 3000000000", "codebook_size must be at most 65,536"),
    ("channels: 2", "channels 2: use 1 or 3"),
    ("lr_schedule: bogus", "lr_schedule bogus: use onecycle or constant"),
    ("image_size: 30", "image_size 30 is not divisible by 2**downsample = 4"),
    ("lr: .inf", "lr must be a finite number, not inf"),
    ("hidden: -4", "hidden must be at least 1"),
    ("decay: 2", "decay must be from 0 to 1, not 2"),
    ("epochs: [1, 2]", "epochs should be a whole number"),
    ("ema: maybe", "ema should be true or false"),
    ("learning_rate: 0.1", "unknown setting 'learning_rate'"),
    ("train: {epohcs: 3}", "unknown setting 'epohcs' in the config's train section"),
    ("!!python/object/apply:os.system ['touch pwned']", "not valid YAML"),
    ("[1, 2, 3]", "expected key: value pairs at the top level"),
    ("epochs: 1\n  bad indent: [", "not valid YAML (line"),
])
def test_impossible_settings_are_refused_before_a_run_starts(home, setting, message, invoke, one_clean_line, runs_in):
    (home / "bad.yaml").write_text(setting + "\n")
    before = runs_in(home)
    r = invoke("train", "--dataset", home / "mnist", "--config", home / "bad.yaml", cwd=home)
    one_clean_line(r, 2, message)
    assert runs_in(home) == before and not (home / "pwned").exists()


def test_binary_config_and_lr_written_as_yaml_reads_it(home, tmp_path, invoke, one_clean_line, tiny_yaml):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    one_clean_line(invoke("train", "--config", tmp_path / "bin.yaml", cwd=home), 2, "not a text file")
    (tmp_path / "ok.yaml").write_text(tiny_yaml.vqvae + "lr: 1e-3\n")      # YAML 1.1 reads 1e-3 as a string
    r = invoke("train", "--dataset", home / "mnist", "--config", tmp_path / "ok.yaml", "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("info", tmp_path / "runs" / "vqvae-mnist", "--json").stdout)["config"]["train"]["lr"] == 0.001


def test_the_usage_guide_documents_every_setting():
    from pathlib import Path

    from vqgen import models
    from vqgen.config import TrainConfig
    from vqgen.settings import field_names

    guide = (Path(__file__).parent.parent / "docs" / "usage.md").read_text()
    for cls in [TrainConfig] + [models.get(n).config_class for n in models.names()]:
        for name in field_names(cls):
            if name in ("image_size", "channels", "codebook_size", "grid", "num_classes"):
                continue   # set from the data or the parent run; documented in prose
            assert f"`{name}`" in guide, f"{cls.__name__}.{name} is missing from docs/usage.md"


@pytest.mark.parametrize("model", ["vqvae", "vae", "prior"])
@given(data=st.data())
def test_any_setting_values_give_a_valid_config_or_a_named_refusal(model, data):
    values = data.draw(settings_for(model))
    try:
        cfg = resolve_config(model, SHAPES[model], file_values=values, file_name="c.yaml")
    except UsageError as e:
        named = [k for k in values if k in str(e)]
        assert named or "unknown setting" in str(e) or "divisible" in str(e) or "multiple" in str(e), (values, e)
        return
    # Accepted: every number finite and in range, and the model builds.
    for v in list(vars(cfg.train).values()) + list(vars(cfg.model_config).values()):
        assert not (isinstance(v, float) and not math.isfinite(v))
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with torch.device("meta"):
        models.get(model).build(cfg.model_config)


@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_config_file_is_read_or_refused(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        values = read_yaml(p)
    except UsageError:
        return
    assert isinstance(values, dict)
    try:
        resolve_config("vqvae", SHAPES["vqvae"], file_values=values)
    except UsageError:
        pass
