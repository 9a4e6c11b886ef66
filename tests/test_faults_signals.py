"""Faults injected: Ctrl-C, SIGTERM and SIGHUP at the moments that matter (decoding, the middle of an epoch, a
checkpoint being committed, the save after a first signal), each placed by patching the step it should
interrupt so that it sends the signal to its own process first. Each test checks the exit code, the one line
said, what is kept, that no temporary file is left and no worker process runs on.

The cases that end the process (a second signal, decoding with worker processes) run `vqgen` in a process of
their own, through a small driver that patches vqgen first (`run_vqgen`); the others run in this one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from vqgen import files, interrupts, runs

SIGTERM, SIGHUP, SIGINT = signal.SIGTERM, signal.SIGHUP, signal.SIGINT

DRIVER = """\
import os, signal, sys, time
from pathlib import Path
from vqgen import interrupts
interrupts.REPEAT_SECONDS = 0.0   # a second signal, however soon, ends the process at once
{setup}
from vqgen.cli import main
sys.argv = ["vqgen", *sys.argv[1:]]
main()
"""

# Sends `signum` to this process just before batch `step` of training epoch `epoch` (interrupt_at's pattern).
SIGNAL_AT_STEP = """\
from vqgen import data as D
real_iterate, seen = D.Batches.iterate, {{"epochs": 0}}
def iterate(self, start=0):
    if self.shuffle:
        seen["epochs"] += 1
    for i, batch in enumerate(real_iterate(self, start), start=start):
        if self.shuffle and seen["epochs"] == {epoch} and i == {step}:
            os.kill(os.getpid(), {signum})
        yield batch
D.Batches.iterate = iterate
"""


def run_vqgen(setup: str, *args, cwd: Path, env: dict | None = None, timeout: float = 180):
    """`vqgen ARGS` in a process of its own, after the driver ran `setup` (patches); (result, seconds)."""
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", DRIVER.format(setup=setup), *map(str, args)], cwd=cwd,
                       env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - started


def no_temps(folder: Path) -> list[str]:
    """What a run or cache folder holds that is a temporary file (vqgen's, or a library's) or staged state."""
    return [p.name for p in Path(folder).iterdir()
            if files.TEMP_PATTERN.match(p.name) or files.LIBRARY_TEMP_PATTERN.match(p.name)
            or p.name == runs.RESUME_STAGED]


def gone(pid: int) -> bool:
    """No such process, or one that has ended and waits to be reaped (a zombie runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def image_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


# --------------------------------------------------------------------------- training


def test_sigterm_mid_epoch_keeps_the_state_says_how_to_resume_and_resume_continues(
        tmp_path, mnist_idx, tiny, invoke, interrupt_at, monkeypatch):
    run = tmp_path / "runs" / "r"
    with monkeypatch.context() as m:
        interrupt_at(m, epoch=2, step=7, signum=SIGTERM)
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--epochs", 2, "--quiet",
                   "--out", tmp_path / "runs", "--name", "r", cwd=tmp_path)
    assert r.exit_code == 143, r.output
    assert r.stderr.strip().splitlines() == [   # the one line, also with --quiet
        f"Interrupted by SIGTERM in epoch 2 of 2 at step 7 of 20: saved that state (the checkpoint of epoch 1 is "
        f"kept). Continue with: vqgen train --resume {run}"]
    assert r.stdout.strip() == str(run)
    assert torch.load(run / runs.INTERRUPTED, weights_only=True)["step"] == 7
    assert torch.load(run / runs.RESUME, weights_only=True)["epoch"] == 1
    assert no_temps(run) == []
    r = invoke("train", "--resume", run, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "in epoch 2 of 2 at step 7, where it was stopped" in r.stderr
    assert not (run / runs.INTERRUPTED).exists()
    assert [row["epoch"] for row in runs.read_metrics(run / runs.METRICS)] == [1, 2]


@pytest.mark.parametrize("signum,code,said", [(SIGTERM, 143, "Interrupted by SIGTERM"), (SIGINT, 130, "Interrupted")])
def test_a_signal_during_a_commit_waits_until_the_checkpoint_is_whole(tmp_path, mnist_idx, tiny, invoke, monkeypatch,
                                                                      signum, code, said):
    real = runs.save_weights

    def save_weights(*args, **kwargs):   # the commit's staged state and metrics are written; its weights next
        os.kill(os.getpid(), signum)
        real(*args, **kwargs)

    monkeypatch.setattr(runs, "save_weights", save_weights)
    run = tmp_path / "runs" / "r"
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--epochs", 3, "--out", tmp_path / "runs",
               "--name", "r", cwd=tmp_path)
    assert r.exit_code == code, r.output
    assert r.stderr.strip().splitlines()[-1] == (f"{said} after epoch 1 of 3: {run} is saved. "
                                                 f"Continue with: vqgen train --resume {run}")
    assert json.loads(runs.read_metadata(run / runs.WEIGHTS)["info"])["epoch"] == 1
    assert torch.load(run / runs.RESUME, weights_only=True)["epoch"] == 1
    assert [row["epoch"] for row in runs.read_metrics(run / runs.METRICS)] == [1]
    assert no_temps(run) == [] and not (run / runs.INTERRUPTED).exists()


def test_a_second_signal_ends_at_once_without_a_half_written_file(tmp_path, mnist_idx, tiny):
    """The first SIGTERM in epoch 2; the second while its state is being saved, after half the file."""
    setup = SIGNAL_AT_STEP.format(epoch=2, step=5, signum=int(SIGTERM)) + """
import torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if Path(f).name.startswith(".interrupted.pt"):
        Path(f).write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
"""
    run = tmp_path / "runs" / "r"
    r, seconds = run_vqgen(setup, "train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--epochs", 2,
                           "--out", tmp_path / "runs", "--name", "r", cwd=tmp_path)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Interrupted again by SIGTERM: stopped at once"
    assert "Traceback" not in r.stderr and seconds < 60
    assert not (run / runs.INTERRUPTED).exists() and no_temps(run) == []
    assert json.loads(runs.read_metadata(run / runs.WEIGHTS)["info"])["epoch"] == 1   # the last commit, whole
    assert runs.load_resume(run, 1)["epoch"] == 1


def test_a_new_run_stopped_before_its_first_step_is_removed(tmp_path, mnist_idx, tiny, invoke, interrupt_at,
                                                            monkeypatch):
    with monkeypatch.context() as m:
        interrupt_at(m, epoch=1, step=0, signum=SIGHUP)
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--out", tmp_path / "runs",
                   "--name", "r", cwd=tmp_path)
    assert r.exit_code == 129, r.output
    assert r.stderr.strip().splitlines()[-1] == ("Interrupted by SIGHUP before the first step: nothing to keep "
                                                 "(the run directory is removed)")
    assert r.stdout == "" and not (tmp_path / "runs" / "r").exists()


# --------------------------------------------------------------------------- decoding


def test_sigterm_while_decoding_stops_every_worker_and_leaves_no_partial_cache(tmp_path, tiny):
    """Worker processes decode the folder; SIGTERM reaches the main process alone (as `docker stop` sends it)."""
    data, pids, cache = image_folder(tmp_path / "digits", 400), tmp_path / "pids", tmp_path / "cache"
    pids.mkdir()
    setup = f"""
from vqgen.data import cache, decoding
decoding.CHUNK = 16
real_start, real_add, added = decoding._use_slots, cache.EntryWriter.add, []
def start(*args):
    Path({str(pids)!r}, str(os.getpid())).touch()
    real_start(*args)
def add(self, *args, **kwargs):
    added.append(1)
    if len(added) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return real_add(self, *args, **kwargs)
decoding._use_slots, cache.EntryWriter.add = start, add
"""
    r, _ = run_vqgen(setup, "train", "--dataset", data, "--config", tiny(tmp_path), "--out", tmp_path / "runs",
                     cwd=tmp_path, env={"VQGEN_DECODE_WORKERS": "2", "VQGEN_CACHE": str(cache)})
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Interrupted by SIGTERM" and "Traceback" not in r.stderr
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2
    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in workers), "decoding workers run on"
    assert not cache.exists() or no_temps(cache) == []
    assert not (tmp_path / "runs").exists()


# Ctrl-C in a fork hook, sent to the process (this thread has it blocked then), or taken by another thread
# (as torch's threads may take a signal sent to the process): its handler then runs in this thread at once,
# inside the hook, unless the stop is held back.
TO_THE_PROCESS = "os.kill(os.getpid(), signal.SIGINT)"
BY_ANOTHER_THREAD = "signal.pthread_kill(other.ident, signal.SIGINT); time.sleep(0.3)"


@pytest.mark.parametrize("send", [TO_THE_PROCESS, BY_ANOTHER_THREAD], ids=["to-the-process", "by-another-thread"])
def test_ctrl_c_as_the_decoding_workers_start_is_not_lost(tmp_path, tiny, send):
    """Ctrl-C while the workers are forked: Python ignores an exception raised in its fork hooks, so the
    interruption was swallowed and training went on (exit 0). Held back until they are started, it stops."""
    data = image_folder(tmp_path / "digits", 64)
    setup = f"""
import threading
other = threading.Thread(target=threading.Event().wait, daemon=True)
other.start()
fired = []
def hook():
    if not fired:
        fired.append(1)
        {send}
os.register_at_fork(after_in_parent=hook)
"""
    r, _ = run_vqgen(setup, "train", "--dataset", data, "--config", tiny(tmp_path), "--out", tmp_path / "runs",
                     cwd=tmp_path, env={"VQGEN_DECODE_WORKERS": "2"})
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Interrupted"
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- other commands


@pytest.mark.parametrize("signum,code,said", [(SIGTERM, 143, "Interrupted by SIGTERM"),
                                              (SIGHUP, 129, "Interrupted by SIGHUP")])
def test_a_command_stopped_by_a_signal_says_one_line(tmp_path, invoke, monkeypatch, signum, code, said):
    from vqgen import images

    monkeypatch.setattr(images, "save_grid", lambda *args, **kwargs: os.kill(os.getpid(), signum))
    r = invoke("sample", "--run", "ready:prior-vqvae-mnist", "--n", 4, cwd=tmp_path)
    assert (r.exit_code, r.stderr.strip().splitlines()[-1], r.stdout) == (code, said, "")
    assert not list(tmp_path.rglob("*.png"))
    from vqgen import commands

    monkeypatch.setattr(commands, "metrics", lambda *args, **kwargs: os.kill(os.getpid(), signum))
    r = invoke("eval", "--run", "ready:vqvae-mnist", cwd=tmp_path)
    assert (r.exit_code, r.stderr.strip(), r.stdout) == (code, said, "")


# --------------------------------------------------------------------------- the mechanism


def test_the_same_stop_delivered_twice_counts_once_and_nohup_is_kept():
    """A scheduler's SIGTERM and the one a launcher passes on: one stop, raised where the deferred block ends."""
    with interrupts.handled():
        with pytest.raises(interrupts.Interrupted) as stopped:
            with interrupts.deferred():
                os.kill(os.getpid(), SIGTERM)
                os.kill(os.getpid(), SIGTERM)
                assert interrupts.received() == SIGTERM
        assert stopped.value.signum == SIGTERM
    before, term = signal.signal(SIGHUP, signal.SIG_IGN), signal.getsignal(SIGTERM)   # as nohup starts a process
    try:
        with interrupts.handled():
            assert signal.getsignal(SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, term)
        assert signal.getsignal(SIGTERM) == term   # as it was
    finally:
        signal.signal(SIGHUP, before)


def test_stale_temporary_files_are_removed_only_where_their_writer_is_gone(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    names = {f".model.safetensors.{ended.pid}.tmp": False,    # vqgen's, its process gone
             f".resume.pt.{os.getpid()}.tmp": True,          # vqgen's, this process's
             ".tmpA1b2C3": False,                             # safetensors', open nowhere
             ".tmpZ9y8X7": True,                              # safetensors', open here: being written
             ".tmpnotours": True, "model.safetensors": True}  # not temporary files
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    with open(tmp_path / ".tmpZ9y8X7", "ab"):
        assert files.remove_stale_temps(tmp_path) == 2
    assert {p.name for p in tmp_path.iterdir()} == {name for name, kept in names.items() if kept}


def test_the_temporary_file_of_a_safetensors_writer_killed_midway_is_removed(tmp_path):
    """safetensors writes `.tmpXXXXXX` beside its target and renames it; a writer killed before leaves it."""
    code = ("import numpy as np; from safetensors.numpy import save_file; "
            "save_file({'a': np.zeros(2**26, dtype=np.float32)}, 'w.safetensors')")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        if any(files.LIBRARY_TEMP_PATTERN.match(name) for name in os.listdir(tmp_path)):
            writer.kill()
            break
        time.sleep(0.001)
    writer.wait()
    left = [name for name in os.listdir(tmp_path) if name != "w.safetensors"]
    if not left:
        pytest.skip("this safetensors writes its file in place (or the writer finished first): nothing to clean")
    assert all(files.LIBRARY_TEMP_PATTERN.match(name) for name in left), left
    assert files.remove_stale_temps(tmp_path) == len(left)
    assert not [name for name in os.listdir(tmp_path) if name != "w.safetensors"]


# --------------------------------------------------------------------------- several processes


def _rank(rank: int, world: int, port: int, data: str, config: str, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from vqgen import data as D
    from vqgen import training
    from vqgen.progress import TrainProgress

    if rank == 1:   # this rank alone gets SIGTERM, before its batch 3 of epoch 1
        real = D.Batches.iterate

        def iterate(self, start=0):
            for i, batch in enumerate(real(self, start), start=start):
                if self.shuffle and i == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

        D.Batches.iterate = iterate
    result = training.train(dataset=data, config_file=config, flags={"epochs": 2}, out=Path(out), name="r",
                            progress=TrainProgress(quiet=True))
    Path(out, f"rank{rank}.json").write_text(json.dumps({"interrupted": result.interrupted, "signal": result.signal}))


def test_under_torchrun_every_rank_stops_at_the_same_step_and_rank_0_saves(tmp_path, mnist_idx, tiny, free_port):
    mp.spawn(_rank, args=(2, free_port(), str(mnist_idx), tiny(tmp_path), str(tmp_path / "runs")), nprocs=2,
             join=True)
    for rank in (0, 1):
        assert json.loads((tmp_path / "runs" / f"rank{rank}.json").read_text()) == {"interrupted": True,
                                                                                     "signal": SIGTERM}
    run = tmp_path / "runs" / "r"
    assert torch.load(run / runs.INTERRUPTED, weights_only=True)["step"] == 3
    assert no_temps(run) == []
