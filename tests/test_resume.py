"""Resuming a run: what --resume applies or refuses, from any folder, after Ctrl-C (at an epoch's end or in its
middle), kill -9 or a stop in the first epoch; the record continues; resume state is never unpickled."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vqgen import runs


@pytest.fixture
def run(home, tmp_path):
    """A copy of the shared one-epoch VQ-VAE run, as runs/r in the test's folder."""
    return Path(shutil.copytree(home / "runs" / "vqvae-mnist", tmp_path / "runs" / "r"))


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
def test_resume_refuses_what_it_cannot_apply(run, tmp_path, args, message, invoke):
    r = invoke("train", "--resume", run, "--epochs", 2, *args, cwd=tmp_path)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_resume_applies_epochs_and_device_and_accepts_unchanged_values(run, tmp_path, invoke):
    r = invoke("train", "--resume", run, "--epochs", 2, "--device", "cpu", "--lr", "0.01", "--model", "vqvae",
               cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("info", run, "--json").stdout)["epochs_done"] == 2


def test_resume_uses_the_stored_absolute_dataset_from_any_folder(run, tmp_path, home, invoke):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = json.loads(invoke("info", run, "--json").stdout)["config"]
    assert cfg["source"] == str((home / "mnist").resolve())
    r = invoke("train", "--resume", run, "--epochs", 2, cwd=elsewhere)
    assert r.exit_code == 0, r.output


def test_resume_continues_to_more_epochs(trained, tmp_path, invoke):
    home, data, run = trained
    copy = tmp_path / "runs" / "copy"
    copy.mkdir(parents=True)
    for p in run.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    r = invoke("train", "--resume", copy, "--epochs", 3, cwd=home)
    assert r.exit_code == 0, r.output
    assert (copy / "recon_epoch_003.png").is_file()
    lines = (copy / "metrics.csv").read_text().strip().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    r = invoke("train", "--resume", copy, "--epochs", 3, cwd=home)
    assert r.exit_code == 2 and "already trained 3 of 3 epochs" in r.stderr


def test_resumed_runs_continue_their_record_without_repeats(records_home, tmp_path, invoke):
    from vqgen.tracking import read_steps

    run = tmp_path / "r"
    shutil.copytree(records_home / "runs" / "vqvae-mnist-2", run)
    before = read_steps(run / "steps.csv")
    r = invoke("train", "--resume", run, "--epochs", 3, cwd=records_home)
    assert r.exit_code == 0, r.output
    after = read_steps(run / "steps.csv")
    assert after[: len(before)] == before and after[-1]["epoch"] == pytest.approx(3.0)
    assert all(a["step"] < b["step"] for a, b in zip(after, after[1:]))


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, mnist_idx, tiny_config, monkeypatch, invoke):
    from vqgen.trainer import Trainer

    calls = {"n": 0}
    real = Trainer.run_epoch

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(Trainer, "run_epoch", interrupted)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--epochs", 3, "--out", tmp_path,
               "--name", "r")
    assert r.exit_code == 130
    assert f"vqgen train --resume {tmp_path / 'r'}" in r.stderr
    state = torch.load(tmp_path / "r" / "resume.pt", weights_only=True)
    assert state["epoch"] == 1


def test_ctrl_c_mid_epoch_keeps_the_checkpoint_and_resumes_at_the_same_step(tmp_path, mnist_idx, monkeypatch, invoke,
                                                                            tiny_yaml, interrupt_at):
    (tmp_path / "tiny.yaml").write_text(tiny_yaml.vqvae + "augment: true\n")
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


def test_a_run_stopped_in_its_first_epoch_is_never_the_latest(tmp_path, mnist_idx, monkeypatch, invoke, tiny_yaml,
                                                               interrupt_at):
    (tmp_path / "tiny.yaml").write_text(tiny_yaml.vqvae)
    r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "tiny.yaml", cwd=tmp_path)
    assert r.exit_code == 0
    with monkeypatch.context() as m:
        interrupt_at(m, epoch=1, step=3)
        r = invoke("train", "--dataset", mnist_idx, "--config", tmp_path / "tiny.yaml", cwd=tmp_path)
    assert r.exit_code == 130 and "no epoch had finished" in r.stderr
    fresh = tmp_path / "runs" / "vqvae-tiny-mnist0-2"
    assert not (fresh / "model.safetensors").exists() and (fresh / "interrupted.pt").is_file()
    r = invoke("interpolate", 4, 9, "--steps", 3, cwd=tmp_path)
    assert r.exit_code == 0 and "Using run runs/vqvae-tiny-mnist0 (newest with the classes 4 and 9)\n" in r.stderr
    listed = {s.path.name: s for s in runs.list_runs(tmp_path / "runs")}
    assert listed["vqvae-tiny-mnist0-2"].interrupted and not listed["vqvae-tiny-mnist0-2"].usable
    assert listed["vqvae-tiny-mnist0"].finished
    r = invoke("train", "--resume", fresh, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "in epoch 1 of 1 at step 3" in r.stderr


def test_kill_during_training_leaves_a_run_whose_info_and_resume_agree(tmp_path, mnist_idx, invoke, write, tiny_yaml):
    """kill -9 at moments spread over training: every time, info and --resume agree, and a resume cleans up."""
    from vqgen import runs

    cfg = write(tmp_path, "c.yaml", tiny_yaml.vqvae + "epochs: 200\n")
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


def test_a_pickle_that_runs_code_is_never_loaded(home, tmp_path, invoke, one_clean_line):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    vq = tmp_path / "vq"
    shutil.copytree(home / "runs" / "vqvae-mnist", vq)
    torch.save({"epoch": 1, "payload": Evil()}, vq / "resume.pt", pickle_module=pickle)
    one_clean_line(invoke("train", "--resume", vq, "--epochs", 3), 1, "unreadable resume state")
    assert not (tmp_path / "pwned").exists()
