"""Careless and hostile input: one clear line, the right exit code, nothing lost or written where it should not be."""

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_VQVAE, make_mnist_idx, write_idx
from test_cli import invoke

LAST_RESORT = "set VQGEN_DEBUG=1 for the traceback"


def one_clean_line(r, code: int, message: str) -> None:
    """The contract for every refusal: exit code, one Error line that says what, no traceback."""
    assert r.exit_code == code, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, r.stderr
    assert message in errors[0], r.stderr
    assert "Traceback" not in r.output and LAST_RESORT not in r.output


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A folder with tiny trained runs of each model, shared by the tests that only read them."""
    home = tmp_path_factory.mktemp("home")
    os.environ["VQGEN_CACHE"] = str(home / "cache")
    make_mnist_idx(home / "mnist")
    (home / "vq.yaml").write_text(TINY_VQVAE)
    (home / "vae.yaml").write_text("epochs: 1\nbatch_size: 16\nhidden_dims: [8, 16]\nlatent_dim: 4\n")
    (home / "prior.yaml").write_text("epochs: 1\nbatch_size: 32\ndim: 16\nlayers: 1\n")
    for args in (["--dataset", "mnist", "--config", "vq.yaml"], ["--model", "prior", "--config", "prior.yaml"],
                 ["--model", "vae", "--dataset", "mnist", "--config", "vae.yaml"]):
        r = invoke("train", *[home / a if a.endswith((".yaml", "mnist")) else a for a in args], cwd=home)
        assert r.exit_code == 0, r.output
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(home / "blank.png")
    (home / "a_file").write_text("not a folder")
    (home / "a_folder").mkdir()
    return home


def runs_in(home: Path) -> set[str]:
    return {p.name for p in (home / "runs").iterdir()}


# --------------------------------------------------------------------------- flags and settings


@pytest.mark.parametrize("args,message", [
    (["train", "--dataset", ""], "--dataset is empty"),
    (["train", "--name", "../escaped"], "--name '../escaped': a run name is one folder name"),
    (["train", "--name", ".."], "--name '..': a run name is one folder name"),
    (["train", "--lr", "inf"], "--lr must be a finite number, not inf"),
    (["train", "--lr", "nan"], "--lr must be a finite number, not nan"),
    (["train", "--lr", "-1"], "--lr must be positive"),
    (["train", "--seed", str(2**70)], "--seed must be at most"),
    (["train", "--seed", "-1"], "--seed must be at least 0"),
    (["train", "--batch-size", "100000"], "--batch-size must be at most 65,536"),
    (["train", "--epochs", "1000000"], "--epochs must be at most 100,000"),
    (["train", "--device", "gpu"], "--device gpu: use auto, cpu, cuda or mps"),
    (["train", "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    (["train", "--model", "gan"], "--model 'gan' is not one of 'vqvae', 'vae', 'prior'"),
    (["train", "--config", "a_folder"], "--config a_folder: is a folder"),
    (["train", "--config", "no.yaml"], "--config no.yaml: no such file"),
    (["train", "--out", "a_file", "--dataset", "mnist"], "--out a_file: is a file; give a folder"),
    (["interpolate", "4", "9", "--steps", "100000"], "--steps 100000: at most 1,000 frames"),
    (["interpolate", "4", "9", "--method", "cubic"], "--method cubic: use lerp or slerp"),
    (["interpolate", "4", "9", "--run", "runs/vqvae-mnist", "--space", "bogus"], "--space bogus: this model's latents are pre or post"),
    (["interpolate", "4", "9", "--out", "a_folder"], "--out a_folder: is a folder"),
    (["interpolate", "4", "9", "--out", "strip"], "--out strip: give a file name ending in .png"),
    (["interpolate", "4", "9", "--out", "a_file/x.png"], "a_file is a file, not a folder"),
    (["interpolate", "4", "9", "--frames", "a_file"], "--frames a_file: is a file; give a folder"),
    (["interpolate", "blank.png", "9", "--out", "blank.png"], "--out blank.png: is one of the inputs"),
    (["gif", "4", "9", "--fps", "nan"], "--fps must be a finite number, not nan"),
    (["gif", "4", "9", "--fps", "inf"], "--fps must be a finite number, not inf"),
    (["gif", "4", "9", "--fps", "1000"], "--fps must be at most 50"),
    (["gif", "4", "9", "--fps", "0"], "--fps must be positive"),
    (["gif", "4", "9", "--out", "m.png"], "--out m.png: give a file name ending in .gif"),
    (["reconstruct", "--input", "blank.png", "--out", "blank.png"], "--out blank.png: is one of the inputs"),
    (["reconstruct", "--n", "0"], "--n must be at least 1"),
    (["sample", "--n", "100000"], "--n must be at most 10,000"),
    (["sample", "--top-k", "-1"], "--top-k must be at least 0"),
    (["sample", "--guidance", "nan"], "--guidance must be 0 or more"),
    (["sample", "--temperature", "nan"], "--temperature must be a finite number, not nan"),
    (["sample", "--seed", str(2**70)], "--seed must be at most"),
    (["sample", "--run", "runs/vae-mnist", "--temperature", "nan"], "--temperature must be a finite number"),
    (["sample", "--run", "runs/vae-mnist", "--sampler", "bogus"], "--sampler bogus: use prior or mix"),
    (["sample", "--frames", "a_file"], "--frames a_file: is a file; give a folder"),
    (["interpolate", "4", "9", "--run", "runs/vae-mnist", "--space", "pre"], "--space pre: this model's latents are mean"),
    (["train", "--resume", "runs/vae-mnist", "--model", "vqvae"], "--resume continues a run with its own settings; drop --model"),
    (["eval", "--run", "runs/nope"], "runs/nope: no such run directory"),
])
def test_bad_flags(home, args, message):
    before = runs_in(home)
    r = invoke(*args, cwd=home)
    one_clean_line(r, 2, message)
    assert runs_in(home) == before          # no run directory made, none changed
    assert not (home.parent / "escaped").exists()


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
def test_impossible_settings_are_refused_before_a_run_starts(home, setting, message):
    (home / "bad.yaml").write_text(setting + "\n")
    before = runs_in(home)
    r = invoke("train", "--dataset", home / "mnist", "--config", home / "bad.yaml", cwd=home)
    one_clean_line(r, 2, message)
    assert runs_in(home) == before and not (home / "pwned").exists()


def test_binary_config_and_lr_written_as_yaml_reads_it(home, tmp_path):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    one_clean_line(invoke("train", "--config", tmp_path / "bin.yaml", cwd=home), 2, "not a text file")
    (tmp_path / "ok.yaml").write_text(TINY_VQVAE + "lr: 1e-3\n")      # YAML 1.1 reads 1e-3 as a string
    r = invoke("train", "--dataset", home / "mnist", "--config", tmp_path / "ok.yaml", "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("info", tmp_path / "runs" / "vqvae-mnist", "--json").stdout)["config"]["train"]["lr"] == 0.001


# --------------------------------------------------------------------------- files vqgen reads back


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
def test_edited_weights_metadata(home, tmp_path, changes, message):
    bad = tmp_path / "run"
    shutil.copytree(home / "runs" / "vqvae-mnist", bad)
    edit_metadata(bad / "model.safetensors", **changes)
    for cmd in (["info", bad], ["interpolate", "4", "9", "--run", bad], ["train", "--resume", bad, "--epochs", 3]):
        one_clean_line(invoke(*cmd, cwd=home), 1, message)


def test_damaged_files_beside_the_weights(home, tmp_path):
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


def test_a_pickle_that_runs_code_is_never_loaded(home, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    vq = tmp_path / "vq"
    shutil.copytree(home / "runs" / "vqvae-mnist", vq)
    torch.save({"epoch": 1, "payload": Evil()}, vq / "resume.pt", pickle_module=pickle)
    one_clean_line(invoke("train", "--resume", vq, "--epochs", 3), 1, "unreadable resume state")
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- datasets


def test_unreadable_first_file_dangling_link_and_bomb_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    (folder / "000_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))   # first in sorted order
    os.symlink(tmp_path / "nowhere.png", folder / "001_dangling.png")
    Image.new("1", (10_000, 9_000)).save(folder / "002_bomb.png")                # 90M pixels: over Pillow's limit
    r = invoke("train", "--dataset", folder, "--config", write(tmp_path, "c.yaml", TINY_VQVAE), "--out",
               tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "Skipped 3 unreadable images" in r.stderr
    info = json.loads(invoke("info", tmp_path / "runs" / "vqvae-imgs", "--json").stdout)
    assert info["config"]["model_config"]["channels"] == 3   # probed from the first readable image, not the bomb


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from vqgen import data as D

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    x = D.load_image_file(tmp_path / "g16.png", 64, 1)
    assert abs(x.mean().item() - 0.5) < 0.01 and x.min() == 0 and x.max() == 1
    lab = Image.new("RGB", (8, 8), (200, 30, 30)).convert("RGB")
    arr = D.image_to_array(lab, 8, 3)
    assert arr[0].mean() > 150 and arr[1].mean() < 80


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated or padded IDX file"),
    ("garbage", "not a readable IDX file"),
    ("header", "not an IDX file of 3-d unsigned bytes"),
    ("labels", "labels for the 320 images"),
])
def test_damaged_idx_files_are_named(tmp_path, damage, message):
    folder = make_mnist_idx(tmp_path / "mnist")
    images = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if damage == "truncate":
        images.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    elif damage == "garbage":
        images.write_bytes(os.urandom(1000))
    elif damage == "header":
        images.write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    else:
        write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(100) % 10)
    r = invoke("train", "--dataset", folder, "--out", tmp_path / "runs")
    one_clean_line(r, 2, message)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def hub_folder(tmp_path: Path, column) -> Path:
    import datasets

    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_dict({"image": column})
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


@pytest.mark.parametrize("column,message", [
    (["cat.png", "dog.png"], "its column 'image' holds string, not images"),
    ([], "its files hold no rows"),
])
def test_hub_layout_errors_are_named(tmp_path, column, message):
    folder = hub_folder(tmp_path, column)
    one_clean_line(invoke("train", "--dataset", folder, "--out", tmp_path / "runs"), 2, message)


def test_a_dataset_of_one_image_states_the_minimum(tmp_path):
    (tmp_path / "one").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "one" / "x.png")
    one_clean_line(invoke("train", "--dataset", tmp_path / "one", "--out", tmp_path / "runs"), 2,
                   "1 image(s); vqgen needs at least 2")


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, mnist_idx, monkeypatch):
    from vqgen import data as D

    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / "cache"))
    first = D.load_images(str(mnist_idx), 28, 1)
    entry = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    for damage in ("truncate", "flip"):
        f = entry / "images-train.u8"
        data = bytearray(f.read_bytes())
        if damage == "truncate":
            f.write_bytes(data[:1000])
        else:
            data[5000] ^= 0xFF
            f.write_bytes(bytes(data))
        logs = []
        again = D.load_images(str(mnist_idx), 28, 1, logs.append)
        assert any("is damaged" in ln and "decoding it again" in ln for ln in logs), logs
        assert torch.equal(first.train_images, again.train_images)


def test_an_unusable_cache_folder_is_named(tmp_path, mnist_idx, monkeypatch):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / "cachefile"))
    one_clean_line(invoke("train", "--dataset", mnist_idx, "--out", tmp_path / "runs"), 2,
                   f"VQGEN_CACHE={tmp_path / 'cachefile'} is a file, not a folder")


def test_runs_being_a_file_is_named(tmp_path):
    (tmp_path / "runs").write_text("oops")
    one_clean_line(invoke("interpolate", "4", "9", cwd=tmp_path), 2, "runs is a file, not a folder of runs")
    one_clean_line(invoke("train", cwd=tmp_path), 2, "--out runs: is a file; give a folder")
    assert (tmp_path / "runs").read_text() == "oops"


# --------------------------------------------------------------------------- nothing lost


def test_reconstruct_never_overwrites_inputs_or_its_own_outputs(home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("same.png", "same.jpg", "other.png"):
        Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(folder / name)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    one_clean_line(invoke("reconstruct", "--input", folder, "--out", folder, cwd=home), 2, "is the input folder")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    r = invoke("reconstruct", "--input", folder, "--out", tmp_path / "out", cwd=home)
    assert r.exit_code == 0, r.output
    assert "over 3 images" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other.png", "same-jpg.png", "same-png.png"]
    # Default outputs get -2 rather than overwrite the last ones.
    paths = [invoke("reconstruct", "--n", 3, cwd=home).stdout.strip() for _ in range(2)]
    assert paths[0].endswith("reconstruction_n3.png") and paths[1].endswith("reconstruction_n3-2.png")


def test_a_nan_in_the_first_epoch_promises_nothing_and_leaves_nothing(tmp_path, mnist_idx, monkeypatch):
    from vqgen.models import VQVAE

    real = VQVAE.forward
    monkeypatch.setattr(VQVAE, "forward", lambda self, x, y=None: {**real(self, x, y), "loss": real(self, x, y)["loss"] * float("nan")})
    r = invoke("train", "--dataset", mnist_idx, "--out", tmp_path / "runs", "--config",
               write(tmp_path, "c.yaml", TINY_VQVAE))
    one_clean_line(r, 1, "no epoch had finished, so nothing was saved")
    assert "last good checkpoint" not in r.stderr and not any((tmp_path / "runs").iterdir())


def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path, mnist_idx):
    cfg = write(tmp_path, "big.yaml", "image_size: 512\nchannels: 3\nhidden_dims: [4096, 4096]\nlatent_dim: 8192\n")
    one_clean_line(invoke("train", "--model", "vae", "--dataset", mnist_idx, "--config", cfg, "--out",
                          tmp_path / "runs"), 2, "more than the")


# --------------------------------------------------------------------------- faults


def test_kill_during_training_leaves_a_run_whose_info_and_resume_agree(tmp_path, mnist_idx):
    """kill -9 at moments spread over training: every time, info and --resume agree, and a resume cleans up."""
    from vqgen import runs

    cfg = write(tmp_path, "c.yaml", TINY_VQVAE + "epochs: 200\n")
    env = {**os.environ, "VQGEN_CACHE": str(tmp_path / "cache")}
    vqgen = [sys.executable, "-m", "vqgen", "train"]
    fresh = vqgen + ["--dataset", str(mnist_idx), "--config", str(cfg), "--out", str(tmp_path / "runs"), "--name", "r"]
    subprocess.run(fresh[:-1] + ["warm", "--epochs", "1"], env=env, capture_output=True, check=True)   # the cache
    run = tmp_path / "runs" / "r"
    checked, delay = 0, 5.0
    while checked < 2 and delay < 20:
        if not (run / "model.safetensors").exists():
            shutil.rmtree(run, ignore_errors=True)
        p = subprocess.Popen(vqgen + ["--resume", str(run)] if run.exists() else fresh, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        delay += 1.3
        if not (run / "model.safetensors").exists():
            continue
        done = json.loads(invoke("info", run, "--json").stdout)["epochs_done"]
        assert runs.load_resume(run, done)["epoch"] == done
        assert [r["epoch"] for r in runs.read_metrics(run / "metrics.csv", upto_epoch=done)] == list(range(1, done + 1))
        checked += 1
    assert checked == 2, "no kill landed after an epoch was committed"
    done = json.loads(invoke("info", run, "--json").stdout)["epochs_done"]
    r = subprocess.run(vqgen + ["--resume", str(run), "--epochs", str(done + 1)], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(invoke("info", run, "--json").stdout)["epochs_done"] == done + 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == "resume.next.pt"]
