"""Configuration as a pure step, resume that applies or refuses every flag, interrupts, start-up, old runs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_VQVAE
from test_cli import invoke
from vqgen import data as D
from vqgen import models, runs
from vqgen.config import RunConfig, TrainConfig, resolve_config
from vqgen.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "v0_2"


# --------------------------------------------------------------------------- config


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


def test_flag_errors_name_the_parameter_and_the_cli_shows_the_flag(tmp_path):
    with pytest.raises(UsageError) as e:
        resolve_config("vqvae", models.ImageShape(28, 1), flags={"batch_size": 0})
    assert str(e.value) == "batch_size must be at least 1, not 0"
    r = invoke("train", "--batch-size", "0", cwd=tmp_path)
    assert r.exit_code == 2 and r.stderr.strip() == "Error: --batch-size must be at least 1, not 0"


def test_bad_flags_answer_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom vqgen.cli import app\n"
            "try:\n    app(['train', '--epochs', '0'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "exit 2" in out.stdout and "torch not loaded" in out.stdout
    assert "--epochs must be at least 1" in out.stderr


def test_importing_vqgen_is_cheap():
    out = subprocess.run([sys.executable, "-c", "import sys, vqgen; print(sorted(m for m in ('torch', 'datasets', "
                          "'torchvision', 'numpy') if m in sys.modules))"], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- resume


@pytest.fixture
def run(tmp_path, mnist_idx):
    (tmp_path / "tiny.yaml").write_text(TINY_VQVAE)
    r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "tiny.yaml", "--out", tmp_path / "runs",
               "--name", "r", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    return tmp_path / "runs" / "r"


@pytest.mark.parametrize("args,message", [
    (["--lr", "0.5"], "--lr 0.5: a resumed run keeps its own lr (0.01)"),
    (["--batch-size", "8"], "--batch-size 8: a resumed run keeps its own batch_size (16)"),
    (["--seed", "3"], "--seed 3: a resumed run keeps its own seed (0)"),
    (["--model", "vae"], "--resume continues a run with its own settings; drop --model"),
    (["--dataset", "mnist"], "drop --dataset"),
    (["--name", "x"], "drop --name"),
    (["--out", "elsewhere"], "drop --out"),
    (["--run", "runs/r"], "drop --run"),
])
def test_resume_refuses_what_it_cannot_apply(run, tmp_path, args, message):
    r = invoke("train", "--resume", run, "--epochs", 2, *args, cwd=tmp_path)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_resume_applies_epochs_and_device_and_accepts_unchanged_values(run, tmp_path):
    r = invoke("train", "--resume", run, "--epochs", 2, "--device", "cpu", "--lr", "0.01", "--model", "vqvae",
               cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("info", run, "--json").stdout)["epochs_done"] == 2


def test_resume_uses_the_stored_absolute_dataset_from_any_folder(run, tmp_path, mnist_idx):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = json.loads(invoke("info", run, "--json").stdout)["config"]
    assert cfg["source"] == str(Path(mnist_idx).resolve())
    r = invoke("train", "--resume", run, "--epochs", 2, cwd=elsewhere)
    assert r.exit_code == 0, r.output


def interrupt_at(monkeypatch, epoch: int, step: int):
    """Make Ctrl-C arrive during training epoch `epoch` (1-based) just before batch `step`."""
    real = D.Batches.iterate
    seen = {"epochs": 0}

    def iterate(self, start=0):
        if self.shuffle:
            seen["epochs"] += 1
        for i, batch in enumerate(real(self, start), start=start):
            if self.shuffle and seen["epochs"] == epoch and i == step:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(D.Batches, "iterate", iterate)


def test_ctrl_c_mid_epoch_keeps_the_checkpoint_and_resumes_at_the_same_step(tmp_path, mnist_idx, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(TINY_VQVAE + "augment: true\n")
    common = ["--dataset", mnist_idx, "--config", tmp_path / "tiny.yaml", "--epochs", 3, "--out", tmp_path / "runs"]
    r = invoke("train", *common, "--name", "straight", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    with monkeypatch.context() as m:
        interrupt_at(m, epoch=2, step=7)
        r = invoke("train", *common, "--name", "cut", cwd=tmp_path)
    cut = tmp_path / "runs" / "cut"
    assert r.exit_code == 130
    assert "Interrupted in epoch 2 of 3 at step 7 of 20" in r.stderr and "the checkpoint of epoch 1 is kept" in r.stderr
    # The end-of-epoch checkpoint is the one of epoch 1, untouched; the mid-epoch state is beside it.
    assert json.loads(invoke("info", cut, "--json").stdout)["epochs_done"] == 1
    assert torch.load(cut / "resume.pt", weights_only=True)["epoch"] == 1
    assert torch.load(cut / "interrupted.pt", weights_only=True)["step"] == 7
    r = invoke("train", "--resume", cut, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "in epoch 2 of 3 at step 7" in r.stderr
    assert not (cut / "interrupted.pt").exists()
    a = load_file(str(tmp_path / "runs" / "straight" / "model.safetensors"))
    b = load_file(str(cut / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)       # as if it had never stopped
    rows = runs.read_metrics(cut / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_a_run_stopped_in_its_first_epoch_is_never_the_latest(tmp_path, mnist_idx, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(TINY_VQVAE)
    r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "tiny.yaml", cwd=tmp_path)
    assert r.exit_code == 0
    with monkeypatch.context() as m:
        interrupt_at(m, epoch=1, step=3)
        r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "tiny.yaml", cwd=tmp_path)
    assert r.exit_code == 130 and "no epoch had finished" in r.stderr
    fresh = tmp_path / "runs" / "vqvae-tiny-mnist0-2"
    assert not (fresh / "model.safetensors").exists() and (fresh / "interrupted.pt").is_file()
    r = invoke("interpolate", 4, 9, "--steps", 3, cwd=tmp_path)
    assert r.exit_code == 0 and "Using run runs/vqvae-tiny-mnist0\n" in r.stderr
    listed = {s.path.name: s for s in runs.list_runs(tmp_path / "runs")}
    assert listed["vqvae-tiny-mnist0-2"].interrupted and not listed["vqvae-tiny-mnist0-2"].usable
    assert listed["vqvae-tiny-mnist0"].finished
    r = invoke("train", "--resume", fresh, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "in epoch 1 of 1 at step 3" in r.stderr


def test_eval_of_a_missing_run_names_it(tmp_path):
    r = invoke("eval", "--run", tmp_path / "runs" / "nope")
    assert r.exit_code == 2 and f"{tmp_path / 'runs' / 'nope'}: no such run directory" in r.stderr


# --------------------------------------------------------------------------- vqgen 0.2 runs


@pytest.fixture
def old_runs(tmp_path):
    """The runs vqgen 0.2.0 wrote (tiny, on synthetic digits), copied, the prior pointed at its VQ-VAE copy."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dest = tmp_path / "runs"
    shutil.copytree(FIXTURES, dest)
    prior = dest / "prior-mnist" / "model.safetensors"
    with safe_open(str(prior), "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    assert cfg["extra"]["vqvae_run"] == "/tmp/v02/runs/vqvae-mnist"    # as 0.2 wrote it
    cfg["extra"]["vqvae_run"] = str((dest / "vqvae-mnist").resolve())
    save_file(load_file(str(prior)), str(prior), metadata={**meta, "config": json.dumps(cfg)})
    vq = dest / "vqvae-mnist" / "model.safetensors"
    with safe_open(str(vq), "pt") as f:
        meta = f.metadata()
    info = json.loads(meta["info"])
    assert info["dataset_source"] == "/tmp/v02/mnist"                   # 0.2 kept the absolute source here
    info["dataset_source"] = str(tmp_path / "gone" / "mnist")
    save_file(load_file(str(vq)), str(vq), metadata={**meta, "info": json.dumps(info)})
    return dest


def test_runs_written_by_vqgen_0_2_load_and_generate(old_runs, tmp_path):
    from PIL import Image

    import vqgen

    for name in ("vqvae-mnist", "vae-mnist", "prior-mnist"):
        info = json.loads(invoke("info", old_runs / name, "--json").stdout)
        assert info["vqgen_version"] == "0.2.0" and info["epochs_done"] == 1
    digit = tmp_path / "d.png"
    Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(digit)
    r = invoke("interpolate", digit, digit, "--steps", 3, "--run", old_runs / "vqvae-mnist", "--out", tmp_path / "m.png")
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--digit", 7, "--n", 4, "--run", old_runs / "vqvae-mnist", "--out", tmp_path / "s.png",
               cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Using prior" in r.stderr
    mixes = vqgen.load(old_runs / "vae-mnist").sample(5, sampler="mix", seed=0)   # 0.2 stored its latents as "mu"
    assert mixes.shape == (5, 1, 28, 28)
    # Their dataset (a temporary folder of 0.2's) is gone: said plainly.
    r = invoke("interpolate", 4, 9, "--run", old_runs / "vqvae-mnist")
    assert r.exit_code == 2 and f"the dataset this run trained on, {tmp_path}/gone/mnist, is gone" in r.stderr


def test_run_config_round_trips():
    cfg = RunConfig("vqvae", TrainConfig(epochs=4), models.get("vqvae").config({"codebook_size": 32}),
                    source="/data/mnist", parent={})
    back = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
