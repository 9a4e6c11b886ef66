"""Faults of the places people run vqgen, injected: a full disk, read-only folders, exhausted memory, a pipe
closed by its reader, other locales. Each keeps what was there (an earlier file byte for byte), leaves no
temporary or half-written file, and says what happened in one line with the right exit code.

A full disk is the kernel's own: the temporary name a write goes to is made a link to /dev/full, so Python,
Pillow, imageio and PyTorch meet a real ENOSPC (safetensors writes through a temporary file of its own, so its
failure is injected with its own message). Where this machine lets a test mount file systems (root, as in
CI), a small tmpfs fills up for real and a read-only bind mount refuses even root; elsewhere those tests skip
or inject the error."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqgen import files, runs
from vqgen.errors import DiskFull, NotWritable, size_text

VQGEN = [sys.executable, "-m", "vqgen"]
EARLIER = b"the user's earlier file, kept byte for byte"


def full_disk_at(target: Path) -> None:
    """The next whole write of `target` by this process meets a full disk: its temporary name links to
    /dev/full, where every write fails with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    tmp = files.temp_path(target)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.symlink_to("/dev/full")


def leftovers(folder: Path) -> list[str]:
    """Temporary files (or links) left anywhere under `folder`."""
    return [str(p) for p in folder.rglob("*") if files.TEMP_PATTERN.match(p.name)]


def run_copy(home: Path, tmp_path: Path, name: str = "vqvae-mnist") -> Path:
    return Path(shutil.copytree(home / "runs" / name, tmp_path / "runs" / "r"))


def contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def mount(*args) -> bool:
    return shutil.which("mount") is not None and subprocess.run(["mount", *map(str, args)],
                                                                capture_output=True).returncode == 0


# --------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("args,target", [
    (["reconstruct", "--n", 4, "--out", "{out}/pic.png"], "pic.png"),
    (["gif", "4", "9", "--steps", 4, "--out", "{out}/morph.gif"], "morph.gif"),
    (["sample", "--run", "runs/vae-mnist", "--n", 4, "--out", "{out}/samples.png"], "samples.png"),
    (["map", "--n", 20, "--out", "{out}/map.png"], "map.png"),
    (["compare", "runs/vqvae-mnist", "--out", "{out}/compare.png"], "compare.png"),
])
def test_a_full_disk_keeps_the_earlier_picture_whole(home, tmp_path, invoke, one_clean_line, args, target):
    out = tmp_path / "out"
    out.mkdir()
    (out / target).write_bytes(EARLIER)
    full_disk_at(out / target)
    r = invoke(*[str(a).format(out=out) for a in args], cwd=home)
    one_clean_line(r, 1, f"no space left on the disk for {out / target} (it needs about ")
    assert (out / target).read_bytes() == EARLIER
    assert sorted(p.name for p in out.iterdir()) == [target] and leftovers(out) == []


def test_a_full_disk_leaves_no_file_where_there_was_none(home, tmp_path, invoke, one_clean_line):
    full_disk_at(tmp_path / "morph.gif")
    r = invoke("gif", "4", "9", "--steps", 4, "--out", tmp_path / "morph.gif", cwd=home)
    one_clean_line(r, 1, f"no space left on the disk for {tmp_path / 'morph.gif'}")
    assert list(tmp_path.iterdir()) == []       # no 0-byte GIF, no temporary file
    assert "imageio" not in r.output


def test_a_full_disk_in_the_middle_of_the_frames(home, tmp_path, invoke, one_clean_line):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "frame_02.png").write_bytes(EARLIER)
    full_disk_at(frames / "frame_02.png")
    r = invoke("interpolate", "4", "9", "--steps", 4, "--out", tmp_path / "strip.png", "--frames", frames, cwd=home)
    one_clean_line(r, 1, f"no space left on the disk for {frames / 'frame_02.png'}")
    assert sorted(p.name for p in frames.iterdir()) == ["frame_00.png", "frame_01.png", "frame_02.png"]
    for name in ("frame_00.png", "frame_01.png"):   # the frames before it, whole
        assert Image.open(frames / name).size == (28, 28)
    assert (frames / "frame_02.png").read_bytes() == EARLIER and leftovers(tmp_path) == []
    assert Image.open(tmp_path / "strip.png").width > 4 * 28    # written before the frames


@pytest.mark.parametrize("fault,file", [
    ("metrics", runs.METRICS),            # a CSV, through Python's csv module
    ("resume state", runs.RESUME_STAGED),  # torch.save: "[enforce fail at inline_container.cc] unexpected pos"
    ("weights", runs.WEIGHTS),            # safetensors: "SafetensorError ... os error 28"
])
def test_a_full_disk_while_an_epoch_is_committed(home, tmp_path, invoke, one_clean_line, monkeypatch, fault, file):
    run = run_copy(home, tmp_path)
    before = contents(run)
    if fault == "weights":
        from safetensors import SafetensorError

        def save_file(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\0" * 100)   # safetensors got this far
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        monkeypatch.setattr(runs, "save_file", save_file)
    else:
        full_disk_at(run / file)
    r = invoke("train", "--resume", run, "--epochs", 2, cwd=tmp_path)
    one_clean_line(r, 1, f"no space left on the disk for {run / file} (it needs about ")
    after = contents(run)
    for name in (runs.WEIGHTS, runs.RESUME, runs.CONFIG) + ((runs.METRICS,) if fault != "weights" else ()):
        assert after[name] == before[name], name
    assert leftovers(run) == [] and not (run / runs.RESUME_STAGED).exists()   # nothing staged for no epoch
    assert runs.summarize(run).epoch == 1   # the run is as it was, and resumes from its last epoch
    assert runs.load_resume(run, 1)["epoch"] == 1


def test_sizes_read_one_way_in_every_message():
    sizes = [0, 312, 45_234, 99_950, 770_400, 999_999, 1_234_567, 55_000_000, 1_234_567_890]
    assert [size_text(n) for n in sizes] == ["0 bytes", "312 bytes", "45.2 kB", "100 kB", "770 kB", "1.0 MB",
                                             "1.2 MB", "55.0 MB", "1.2 GB"]


def test_a_row_of_steps_csv_is_appended_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "steps.csv"
    path.write_bytes(b"step,epoch,loss\r\n1,0.1,0.5\r\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    real = os.write

    def write(f, data):
        if f != fd:
            return real(f, data)
        real(f, bytes(data[:4]))   # part of the row, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)
    try:
        with pytest.raises(DiskFull, match=f"no space left on the disk for {path}"):
            files.append_whole(fd, b"2,0.2,0.4\r\n", path)
    finally:
        monkeypatch.undo()
        os.close(fd)
    assert path.read_bytes() == b"step,epoch,loss\r\n1,0.1,0.5\r\n"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs, filled up but for the few bytes it has left; skips where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", disk):
        pytest.skip("this machine does not let a test mount a small file system (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_disk_that_fills_up_for_real(home, small_disk):
    (small_disk / "morph.gif").write_bytes(EARLIER)
    with open(small_disk / "filler", "wb", buffering=0) as f:   # every block taken
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    r = subprocess.run([*VQGEN, "gif", "4", "9", "-q", "--out", small_disk / "morph.gif"], cwd=home,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: no space left on the disk for ")
    assert "it needs about" in r.stderr and "Traceback" not in r.stderr
    assert (small_disk / "morph.gif").read_bytes() == EARLIER
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "morph.gif"]


def test_a_full_hf_home_is_a_full_disk_not_an_unreadable_dataset(tmp_path, invoke, one_clean_line, monkeypatch):
    import datasets
    from datasets.exceptions import DatasetGenerationError

    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    cache = tmp_path / "hf-home" / "datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)

    def load_dataset(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise DatasetGenerationError("An error occurred while generating the dataset") from e

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    one_clean_line(invoke("train", "--dataset", folder, cwd=tmp_path), 1, f"no space left on the disk for {cache}")


# --------------------------------------------------------------------------- read-only folders


@pytest.fixture
def read_only(monkeypatch):
    """`read_only(folder)`: a read-only bind mount of `folder` over itself where this machine allows one (a
    chmod does not stop root); elsewhere EROFS injected into the writes and removals vqgen makes in it."""
    mounted = []

    def make(folder: Path) -> None:
        folder = Path(folder)
        if mount("--bind", folder, folder):
            mounted.append(folder)
            if mount("-o", "remount,bind,ro", folder):
                return
        inside = folder.resolve()

        def refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        touch, rmtree, write_bytes = Path.touch, shutil.rmtree, Path.write_bytes
        monkeypatch.setattr(Path, "touch", lambda self, *a, **k: refused(self) if inside in self.resolve().parents
                            else touch(self, *a, **k))
        monkeypatch.setattr(Path, "write_bytes", lambda self, data: refused(self) if inside in self.resolve().parents
                            else write_bytes(self, data))
        monkeypatch.setattr(shutil, "rmtree", lambda p, *a, **k: refused(Path(p) / runs.CONFIG)
                            if inside in Path(p).resolve().parents and not k.get("ignore_errors")
                            else rmtree(p, *a, **k))

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_resuming_a_read_only_run_is_refused_before_training(home, tmp_path, invoke, one_clean_line, read_only):
    run = run_copy(home, tmp_path)
    before = contents(run)
    read_only(run)
    r = invoke("train", "--resume", run, "--epochs", 2, cwd=tmp_path)
    one_clean_line(r, 1, f"cannot write in {run}: the file system is read-only; a resumed run writes into its folder")
    assert "Training" not in r.stderr
    assert contents(run) == before


def test_cleaning_a_read_only_folder_of_runs(home, tmp_path, invoke, one_clean_line, read_only):
    run = run_copy(home, tmp_path)
    (run / runs.WEIGHTS).unlink()          # a run that never finished an epoch: --clean removes it
    read_only(tmp_path / "runs")
    r = invoke("runs", "--clean", "--yes", cwd=tmp_path)
    one_clean_line(r, 1, "cannot remove runs/r: the file system is read-only")
    assert (run / runs.CONFIG).is_file()


def test_an_output_in_a_read_only_folder(home, tmp_path, invoke, one_clean_line, read_only):
    out = tmp_path / "out"
    out.mkdir()
    (out / "morph.gif").write_bytes(EARLIER)
    read_only(out)
    r = invoke("gif", "4", "9", "--steps", 4, "--out", out / "morph.gif", cwd=home)
    one_clean_line(r, 1, f"cannot write {out / 'morph.gif'}: the file system is read-only")
    assert (out / "morph.gif").read_bytes() == EARLIER and sorted(p.name for p in out.iterdir()) == ["morph.gif"]


def test_the_run_folder_removed_while_training_records(tmp_path, capfd):
    from vqgen.tracking import RunLog

    run = tmp_path / "r"
    run.mkdir()
    log = RunLog(run)
    log.step(1, 0.1, {"loss": 1.0})
    shutil.rmtree(run)
    with pytest.raises(NotWritable, match=f"its folder {run} is gone"):
        log.step(2, 0.2, {"loss": 0.9})
        log.epoch(2, {"mse": 0.1}, {})   # TensorBoard's writer thread fails, and hands it over
    log.close()
    assert "Traceback" not in capfd.readouterr().err   # and its thread prints nothing


# --------------------------------------------------------------------------- memory


CPU_OOM = ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234567890 bytes. "
           "Error code 12 (Cannot allocate memory)")


def test_exhausted_memory_while_training_says_which_setting_to_lower(mnist_idx, tmp_path, invoke, one_clean_line,
                                                                    tiny, monkeypatch):
    from vqgen import data as D

    def iterate(self, start=0):
        raise RuntimeError(CPU_OOM)
        yield

    monkeypatch.setattr(D.Batches, "iterate", iterate)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), cwd=tmp_path)
    one_clean_line(r, 1, "out of memory (asked for 1.2 GB more); lower --batch-size, or set data_in_memory: no "
                         "in a --config file")


def test_exhausted_gpu_memory_while_sampling_says_which_setting_to_lower(home, tmp_path, invoke, one_clean_line,
                                                                         monkeypatch):
    import torch

    from vqgen import api

    def sample(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                          "capacity of 79.11 GiB of which 1.02 GiB is free.")

    monkeypatch.setattr(api.Model, "sample", sample)
    r = invoke("sample", "--run", "runs/vae-mnist", "--out", tmp_path / "s.png", cwd=home)
    one_clean_line(r, 1, "out of GPU memory (asked for 2.00 GiB more); lower --n")
    assert not (tmp_path / "s.png").exists()


# --------------------------------------------------------------------------- a pipe closed by its reader


def closed_pipe(args, cwd, **kw) -> subprocess.CompletedProcess:
    """vqgen with its stdout a pipe whose reader has already gone (`vqgen ... | head -c0`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([*VQGEN, *map(str, args)], stdout=write, stderr=subprocess.PIPE, cwd=cwd, text=True,
                              timeout=300, **kw)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [
    ["eval", "--json"],
    ["runs"],
    ["info", "runs/vqvae-mnist"],
    ["gif", "4", "9", "--steps", 4, "-q", "--out", "{tmp}/m.gif"],
])
def test_a_reader_that_closed_the_pipe_is_no_error(home, tmp_path, args):
    r = closed_pipe([str(a).format(tmp=tmp_path) for a in args], cwd=home)
    assert r.returncode == 0, r.stderr
    assert "Exception ignored" not in r.stderr and "Traceback" not in r.stderr and "Error" not in r.stderr


def test_train_quiet_into_a_closed_pipe(mnist_idx, tmp_path, tiny):
    r = closed_pipe(["train", "-q", "--dataset", mnist_idx, "--config", tiny(tmp_path)], cwd=tmp_path,
                    env={**os.environ, "VQGEN_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert [runs.summarize(p).finished for p in (tmp_path / "runs").iterdir()] == [True]


# --------------------------------------------------------------------------- locales


def locale_env(tmp_path, name: str) -> dict:
    """The environment of a vqgen under the locale `name`, with Python's UTF-8 mode and C-locale coercion off,
    as on a machine configured so; skips where this Python does not then take the locale's encoding."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    env.update(LC_ALL=name, PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", VQGEN_CACHE=str(tmp_path / "cache"))
    found = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"], env=env,
                           capture_output=True, text=True).stdout.strip()
    want = {"C": "ascii", "en_US.ISO-8859-1": "iso8859-1"}[name]
    if found != want:
        pytest.skip(f"no {name} locale here (file names read as {found}; see `locale -a`, or make it with "
                    "`localedef -i en_US -f ISO-8859-1 en_US.ISO-8859-1`)")
    return env


def trains_under(env, cwd: Path, *args) -> Path:
    """Train a tiny run under `env`; the run folder it made, as bytes."""
    r = subprocess.run([*VQGEN, "train", *args], cwd=cwd, env=env, capture_output=True, timeout=600)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, err
    assert "Traceback" not in err and "Error" not in err
    made = [os.path.join(b"runs", n) for n in os.listdir(os.fsencode(cwd / "runs"))]
    assert len(made) == 1
    return os.path.join(os.fsencode(cwd), made[0])


def test_a_dataset_folder_and_run_name_outside_ascii_under_an_ascii_locale(mnist_idx, tmp_path, tiny):
    env = locale_env(tmp_path, "C")
    data = Path(shutil.copytree(mnist_idx, tmp_path / "données"))   # UTF-8 bytes the locale cannot decode
    run = trains_under(env, tmp_path, "--dataset", data, "--config", tiny(tmp_path), "--name", "café")
    assert os.path.basename(run) == "café".encode()
    made = set(os.listdir(run))
    assert {b"model.safetensors", b"loss_curve.png", b"steps.csv"} <= made
    assert any(n.startswith(b"events.out.tfevents") for n in made)   # TensorBoard wrote into the run itself
    info = json.loads(subprocess.run([*VQGEN, "info", run, "--json"], cwd=tmp_path, env=env,
                                     capture_output=True, check=True).stdout)
    assert os.fsencode(str(data)) in info["dataset_source"].encode("ascii", "surrogateescape")


def test_a_run_name_outside_ascii_under_a_latin1_locale(mnist_idx, tmp_path, tiny):
    env = locale_env(tmp_path, "en_US.ISO-8859-1")
    run = trains_under(env, tmp_path, "--dataset", mnist_idx, "--config", tiny(tmp_path), "--name", b"caf\xe9")
    assert os.path.basename(run) == b"caf\xe9"      # the Latin-1 name, not its UTF-8 bytes
    assert any(n.startswith(b"events.out.tfevents") for n in os.listdir(run))
    assert os.listdir(os.path.join(os.fsencode(tmp_path), b"runs")) == [b"caf\xe9"]


def test_a_path_the_locale_cannot_write_is_refused_in_one_line(tmp_path):
    env = locale_env(tmp_path, "C")
    (tmp_path / "c.yaml").write_text("dataset: ./données\nepochs: 1\n", encoding="utf-8")
    r = subprocess.run([*VQGEN, "train", "--config", "c.yaml"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, errors="replace", timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: --dataset ")
    assert "cannot be part of a file name under this locale (its file names are ascii)" in r.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- answers that were unclear


@pytest.mark.parametrize("name,text", [
    ("data/train-00000-of-00001.parquet", None),   # a parquet file of no rows
    ("data/train.csv", ""),
    ("train.jsonl", ""),
    ("data/train.csv", "image,label\n"),
])
def test_a_hub_layout_folder_with_no_rows(tmp_path, invoke, one_clean_line, name, text):
    folder = tmp_path / "hub"
    (folder / name).parent.mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    if text is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        pq.write_table(pa.table({"image": pa.array([], image), "label": pa.array([], pa.int64())}), folder / name)
    else:
        (folder / name).write_text(text)
    r = invoke("train", "--dataset", folder, cwd=tmp_path)
    one_clean_line(r, 2, f"no images in --dataset {folder}: its files hold no rows")
    assert "An error occurred" not in r.output and not (tmp_path / "runs").exists()


def test_reconstruct_input_counts_every_unreadable_image(home, tmp_path, invoke):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((28, 28), 100 * i, dtype=np.uint8)).save(folder / f"good{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "half.png").write_bytes((folder / "good1.png").read_bytes()[:40])
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "a-folder.png").mkdir()             # not a file: not an image
    (folder / "notes.txt").write_text("not an image either")
    r = invoke("reconstruct", "--input", folder, "--out", tmp_path / "out", cwd=home)
    assert r.exit_code == 0, r.output
    assert "Skipped 4 unreadable images: broken.png, dangling.png, empty.jpg, half.png" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good0.png", "good1.png"]
