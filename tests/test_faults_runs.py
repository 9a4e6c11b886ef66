"""Faults of the places people train, around a run and its data: two trainers on one run, `runs --clean` beside
a run being trained, a damaged memory-mapped cache, a container's memory limit, a resumed run whose resume.pt
asks for an absurd learning rate, a run that diverges, and who may read the weights. Each test says what is
kept and what is said."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vqgen import memory, runs
from vqgen.locks import LOCK_NAME, FolderLock, RunInUse, holder
from vqgen.tracking import read_steps


@pytest.fixture
def run(home, tmp_path):
    """A copy of the shared one-epoch VQ-VAE run, as runs/r in the test's folder."""
    return Path(shutil.copytree(home / "runs" / "vqvae-mnist", tmp_path / "runs" / "r"))


@pytest.fixture
def umask():
    """`umask(mask)`: the process's umask for the test, given back after."""
    was = os.umask(0o022)
    os.umask(was)
    yield os.umask
    os.umask(was)


def subprocess_env() -> dict:
    """The environment of a vqgen started as a process of its own: this test's (its cache), and this vqgen."""
    src = str(Path(runs.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def wait_for_holder(folder: Path, pid: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = holder(folder)
        if found is not None and found.pid == pid:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never took the lock of {folder}")


# --------------------------------------------------------------------------- one process per run


def test_a_second_trainer_is_refused_naming_the_holder_and_a_killed_ones_lock_is_ignored(run, tmp_path, invoke,
                                                                                          one_clean_line):
    # A real trainer resumes the run in a process of its own, for longer than the test needs.
    trainer = subprocess.Popen([sys.executable, "-m", "vqgen", "train", "--resume", str(run), "--epochs", "500",
                                "-q"], cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for_holder(run, trainer.pid)
        r = invoke("train", "--resume", run, "--epochs", 600, cwd=tmp_path)
        one_clean_line(r, 1, f"{run} is in use by process {trainer.pid} (training it, since ")
        assert "one process at a time writes a run" in r.stderr
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    # kill -9: the kernel let go of its lock; the file it left names a process that no longer runs, and the
    # next trainer takes the run all the same, and leaves no lock file when it ends.
    left = json.loads((run / LOCK_NAME).read_text())
    assert left["pid"] == trainer.pid
    done = json.loads(invoke("info", run, "--json").stdout)["epochs_done"]
    r = invoke("train", "--resume", run, "--epochs", done + 1, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads(invoke("info", run, "--json").stdout)["epochs_done"] == done + 1
    assert not (run / LOCK_NAME).exists()
    assert [row["epoch"] for row in runs.read_metrics(run / "metrics.csv")] == list(range(1, done + 2))


def test_a_lock_held_in_this_process_refuses_a_resume_and_changes_nothing(run, tmp_path, invoke, one_clean_line):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with FolderLock(run, "training it"):
        one_clean_line(invoke("train", "--resume", run, "--epochs", 2, cwd=tmp_path), 1,
                       f"is in use by process {os.getpid()} (training it, since ")
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_NAME} == before
    assert not (run / LOCK_NAME).exists()


def test_a_stale_lock_file_is_no_temporary_file_and_is_taken_over(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": "here", "since": 1.0, "doing": "x"}))
    from vqgen.files import remove_stale_temps

    assert remove_stale_temps(folder) == 0 and (folder / LOCK_NAME).is_file()
    assert holder(folder) is None   # a file, but no process holds it
    with FolderLock(folder, "training it") as lock:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        found = holder(folder)
        assert found is not None and found.pid == os.getpid() and found.doing == "training it"
        with pytest.raises(RunInUse, match=f"in use by process {os.getpid()}"):
            FolderLock(folder, "training it").acquire()
        assert lock.fd is not None
    assert not (folder / LOCK_NAME).exists() and holder(folder) is None


def test_runs_clean_keeps_a_run_being_trained_and_one_written_to_lately(home, tmp_path, invoke):
    runs_dir = tmp_path / "runs"
    long_ago = time.time() - 3600
    for name in ("held", "recent", "old"):
        (runs_dir / name).mkdir(parents=True)
        shutil.copy(home / "runs" / "vqvae-mnist" / "config.yaml", runs_dir / name)
        (runs_dir / name / "steps.csv").write_text("step,epoch,loss\n1,0.05,0.1\n")
        if name != "recent":
            os.utime(runs_dir / name / "steps.csv", (long_ago, long_ago))
    with FolderLock(runs_dir / "held", "training it"):
        listed = {row["run"]: row for row in json.loads(invoke("runs", "--json", cwd=tmp_path).stdout)}
        assert listed["held"]["status"] == "training" and listed["old"]["status"] == "no finished epoch"
        assert listed["held"]["bytes"] == listed["old"]["bytes"]   # the lock file is not counted
        r = invoke("runs", "--clean", "--yes", cwd=tmp_path)
        assert r.exit_code == 0, r.output
        kept = [ln for ln in r.stderr.splitlines() if ln.startswith("Kept")]
        assert len(kept) == 1, r.stderr
        assert f"held (held by process {os.getpid()} (training it, since " in kept[0]
        assert "recent (its record written 0 min ago)" in kept[0]
        assert "Removed 1 runs that never finished an epoch: old" in r.stderr
        assert sorted(p.name for p in runs_dir.iterdir()) == ["held", "recent"]
        assert (runs_dir / "held" / LOCK_NAME).is_file()


# --------------------------------------------------------------------------- a damaged memory-mapped cache


def test_a_damaged_memory_mapped_cache_is_found_said_and_rebuilt(tmp_path, mnist_idx, invoke, tiny, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("VQGEN_CACHE", str(cache))
    config = tiny(tmp_path, "data_in_memory: no\n")
    r = invoke("train", "--dataset", mnist_idx, "--config", config, "--out", tmp_path / "runs", "--name", "first")
    assert r.exit_code == 0, r.output
    entry = next(p for p in cache.iterdir() if p.is_dir())
    good = (entry / "images-train.u8").read_bytes()
    damaged = bytearray(good)
    for i in range(5000, 5064):   # flipped bytes, the size unchanged
        damaged[i] ^= 0xFF
    (entry / "images-train.u8").write_bytes(bytes(damaged))
    r = invoke("train", "--dataset", mnist_idx, "--config", config, "--out", tmp_path / "runs", "--name", "second")
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.stderr.splitlines() if "is damaged" in ln]
    assert len(said) == 1 and "images-train.u8 does not match its checksum); decoding it again" in said[0], r.stderr
    assert "Batches are read from the memory-mapped cache" in r.stderr
    assert (entry / "images-train.u8").read_bytes() == good
    a, b = (load_file(str(tmp_path / "runs" / n / "model.safetensors")) for n in ("first", "second"))
    assert all(torch.equal(a[k], b[k]) for k in a)   # trained on the right images


# --------------------------------------------------------------------------- memory as a container sees it


@pytest.fixture
def cgroup(tmp_path, monkeypatch):
    """Fake cgroup files: (root, write) where write(path, text) writes a file under the root, and
    /proc/self/cgroup is what `proc` says."""
    root = tmp_path / "cgroup"
    root.mkdir()
    proc = tmp_path / "proc-self-cgroup"
    monkeypatch.setenv("VQGEN_CGROUP_ROOT", str(root))
    monkeypatch.setattr(memory, "PROC_CGROUP", proc)

    def write(path: str, text: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text + "\n")

    return root, proc, write


def test_the_cgroup_limit_is_read_from_v2_and_v1_files(cgroup):
    root, proc, write = cgroup
    host = memory.host_memory()
    assert memory.cgroup_limit() is None and memory.physical_memory() == host   # no files at all
    proc.write_text("0::/user.slice/job\n")
    write("user.slice/job/memory.max", "max")
    assert memory.cgroup_limit() is None and not memory.limited_by_cgroup()
    write("user.slice/job/memory.max", str(4 << 30))
    assert memory.cgroup_limit() == 4 << 30
    write("user.slice/memory.max", str(2 << 30))   # a parent's lower limit holds for its children
    assert memory.cgroup_limit() == 2 << 30 and memory.physical_memory() == min(host, 2 << 30)
    shutil.rmtree(root / "user.slice")
    proc.write_text("12:memory:/docker/abc\n0::/\n")
    write("memory/docker/abc/memory.limit_in_bytes", "9223372036854771712")   # v1's "no limit"
    assert memory.cgroup_limit() is None
    write("memory/docker/abc/memory.limit_in_bytes", str(3 << 30))
    assert memory.cgroup_limit() == 3 << 30
    shutil.rmtree(root / "memory" / "docker")   # a container that sees its own cgroup at the root
    write("memory/memory.limit_in_bytes", str(1 << 30))
    assert memory.cgroup_limit() == 1 << 30 and memory.limited_by_cgroup()
    write("memory/memory.limit_in_bytes", "garbage")
    assert memory.cgroup_limit() is None


def test_a_cgroup_limit_decides_what_is_held_in_memory_and_the_decode_workers(cgroup, tmp_path, mnist_idx, invoke,
                                                                              tiny, monkeypatch, one_clean_line):
    from vqgen.data import decoding, fits_in_memory

    root, proc, write = cgroup
    proc.write_text("0::/\n")
    write("memory.max", "max")
    nbytes = 400 * 28 * 28   # the tiny MNIST's images
    assert fits_in_memory(nbytes)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--out", tmp_path / "runs", "--name", "a")
    assert r.exit_code == 0 and "memory-mapped" not in r.stderr, r.output
    write("memory.max", "1000000")   # 1 MB: a quarter of it is less than the data
    assert not fits_in_memory(nbytes)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--out", tmp_path / "runs", "--name", "b")
    assert r.exit_code == 0, r.output
    assert "larger than a quarter of the memory limit of this container (its cgroup): batches are read from the " \
           "memory-mapped cache" in r.stderr
    monkeypatch.delenv("VQGEN_DECODE_WORKERS", raising=False)
    write("memory.max", str(1 << 30))
    assert decoding.decode_workers(100_000) == min(2, len(os.sched_getaffinity(0)))
    write("memory.max", "100000")   # less than the tiny model and its optimizer state
    one_clean_line(invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--out", tmp_path / "runs"), 2,
                   "more than the 100 kB of memory this container may use (its cgroup's limit)")


# --------------------------------------------------------------------------- the best checkpoint is never lost


def test_a_learning_rate_raised_in_resume_pt_is_not_trained_with(run, tmp_path, invoke):
    raised = Path(shutil.copytree(run, tmp_path / "runs" / "raised"))
    state = torch.load(raised / "resume.pt", weights_only=True)
    for group in state["optimizer"]["param_groups"]:   # and the other settings a file might carry
        group["lr"] = group["initial_lr"] = 1000.0
        group["weight_decay"], group["betas"] = 1.0, (0.5, 0.5)
    torch.save(state, raised / "resume.pt")
    for r in (run, raised):
        assert invoke("train", "--resume", r, "--epochs", 2, cwd=tmp_path).exit_code == 0
    rates = [row["lr"] for row in read_steps(raised / "steps.csv") if row["epoch"] > 1 and "lr" in row]
    assert rates and max(rates) <= 0.01   # the config's lr, on its schedule
    a, b = (load_file(str(p / "model.safetensors")) for p in (run, raised))
    assert all(torch.equal(a[k], b[k]) for k in a)   # as if the file had not been touched


def test_a_diverging_run_keeps_its_best_weights_says_so_and_commands_use_them(tmp_path, mnist_idx, tiny, invoke,
                                                                              monkeypatch, umask):
    from vqgen.trainer import Trainer

    umask(0o022)
    real = Trainer.run_epoch

    def collapsing(self):   # from epoch 2 on, the decoder collapses (as an absurd learning rate does): all white
        real(self)
        if self.epoch >= 1:
            with torch.no_grad():
                decoder = [p for name, p in self.core.named_parameters() if name.startswith("decoder.")]
                for p in decoder:
                    p.zero_()
                decoder[-1].fill_(1.0)   # the output layer's bias

    monkeypatch.setattr(Trainer, "run_epoch", collapsing)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--epochs", 3, "--out", tmp_path / "runs",
               "--name", "d")
    assert r.exit_code == 0, r.output   # a warning: training goes on
    run = tmp_path / "runs" / "d"
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning")]
    assert len(warned) == 1, r.stderr
    assert re.search(r"held-out MSE [\d.]+ in epoch 3 is much worse than the run's best, [\d.]+ in epoch 1, "
                     r"for 2 epochs", warned[0]), warned[0]
    rows = runs.read_metrics(run / "metrics.csv")
    best = rows[0]
    assert rows[2]["test_mse"] > 1.5 * best["test_mse"]
    # The latest weights are the collapsed ones; the best epoch's are kept beside them, readable by all.
    assert runs.load_checkpoint(run, weights="latest").epoch == 3
    assert runs.load_checkpoint(run).epoch == 1
    for name in ("model.safetensors", "best.safetensors", "config.yaml", "metrics.csv"):
        assert (run / name).stat().st_mode & 0o777 == 0o644, name
    # Commands use the best epoch and say so; info tells both.
    monkeypatch.undo()
    info = json.loads(invoke("info", run, "--json").stdout)
    assert info["epochs_done"] == 3 and info["weights"]["epoch"] == 1
    assert "its best epoch, 1 of 3" in info["weights"]["note"]
    r = invoke("reconstruct", "--run", run, "--out", tmp_path / "rec.png", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "its best epoch, 1 of 3 (held-out MSE" in r.stderr
    mse = float(re.search(r"MSE ([\d.]+)  PSNR", r.stderr).group(1))
    assert mse < 1.5 * best["test_mse"] < rows[2]["test_mse"]
    listed = json.loads(invoke("runs", "--json", cwd=tmp_path).stdout)
    assert listed[0]["best"]["value"] == pytest.approx(best["test_mse"])
    # Resumed, the run goes on from its latest epoch; the best stays until an epoch beats it.
    r = invoke("train", "--resume", run, "--epochs", 4, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert runs.load_checkpoint(run, weights="latest").epoch == 4
    rows = runs.read_metrics(run / "metrics.csv")
    best_now = runs.best_row(rows, runs.load_checkpoint(run).spec)[1]["epoch"]
    assert runs.load_checkpoint(run).epoch == best_now
    assert (run / "best.safetensors").exists() == (best_now != 4)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_weights_are_written_with_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    from vqgen.config import RunConfig, TrainConfig
    from vqgen.models.vqvae import VQVAE, VQVAEConfig

    cfg = RunConfig("vqvae", TrainConfig(), VQVAEConfig(hidden=16, res_hidden=8, codebook_size=16, code_dim=4))
    model = VQVAE(cfg.model_config)
    umask(mask)
    runs.save_weights(tmp_path / "model.safetensors", model, cfg, {"epoch": 1})
    runs.save_latents(tmp_path, torch.zeros(4, 2))
    for name in ("model.safetensors", "latents.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
