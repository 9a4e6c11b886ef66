"""Shared fixtures: tiny synthetic datasets on disk, tiny trained runs (trained once a session), a private cache
per test, and the helpers every test module uses, each as a fixture."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from vqgen.cli import app

# Results on a CPU differ in the last bits between thread counts, and a training's own choice of threads follows
# how busy the machine is: the suite fixes the count (the machine's default), so runs repeat bit for bit.
import torch  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))

REAL_DATA = os.environ.get("VQGEN_TEST_DATA")

TINY_VQVAE = """\
epochs: 1
batch_size: 16
lr: 0.01
eval_batch_size: 64
hidden: 16
res_hidden: 8
res_blocks: 1
codebook_size: 16
code_dim: 4
"""
TINY_VAE = "epochs: 2\nbatch_size: 16\nlr: 0.003\nhidden_dims: [8, 16]\nlatent_dim: 4\n"
TINY_PRIOR = "epochs: 1\nbatch_size: 32\ndim: 16\nlayers: 1\nheads: 2\n"
TINY_API = dict(batch_size=16, eval_batch_size=64, hidden=16, res_hidden=8, res_blocks=1, codebook_size=16)
LAST_RESORT = "set VQGEN_DEBUG=1 for the traceback"

# Property-based tests: enough examples to find the odd value, no deadline on a shared 2-core machine.
settings.register_profile("vqgen", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("vqgen")

runner = CliRunner()


# --------------------------------------------------------------------------- helpers (each also a fixture)


def invoke(*args, cwd=None):
    """Run the CLI as a user would. Every call in the suite also checks that no traceback and no
    last-resort error ("set VQGEN_DEBUG=1 ...") reached the user: each failure must be a named one."""
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        r = runner.invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    if not os.environ.get("VQGEN_DEBUG"):
        assert "Traceback" not in r.output and "set VQGEN_DEBUG=1" not in r.output, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def one_clean_line(r, code: int, message: str) -> None:
    """The contract for every refusal: exit code, one Error line that says what, no traceback."""
    assert r.exit_code == code, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, r.stderr
    assert message in errors[0], r.stderr
    assert "Traceback" not in r.output and LAST_RESORT not in r.output


def digit_image(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A crude handwritten-looking digit: the label drawn with PIL's font, jittered."""
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    x, y = rng.integers(6, 12), rng.integers(4, 10)
    d.text((int(x), int(y)), str(label), fill=255, font_size=int(rng.integers(14, 18)))
    return np.asarray(im, dtype=np.uint8)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_mnist_idx(folder: Path, n_train: int = 320, n_test: int = 80, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.stack([digit_image(int(lbl), rng) for lbl in labels])
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


def real_data(sub: str) -> Path:
    """A folder of ../shared/datasets, or skip the test when it is not there."""
    if not REAL_DATA:
        pytest.skip("set VQGEN_TEST_DATA to the shared datasets folder to run real-data tests")
    path = Path(REAL_DATA) / sub
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def labelled_grid(path, cols: int, rows: int, tile: int, *, left: bool, top: bool):
    """Check a labelled picture: `rows` x `cols` tiles of `tile` px (2 px apart), a left margin of row
    labels and a top band (title or column labels) exactly where asked, each holding text. Returns the
    pixels of the tiles alone."""
    img = np.asarray(Image.open(path).convert("L")).astype(int)
    h, w = img.shape
    tiles_w, tiles_h = cols * (tile + 2) + 2, rows * (tile + 2) + 2
    margin_left, margin_top = w - tiles_w, h - tiles_h
    assert (margin_left > 0) == left and (margin_top > 0) == top, (w, h, tiles_w, tiles_h)
    if left:
        assert (img[margin_top:, :margin_left - 4] < 128).sum() > 20, "the left margin holds no text"
    if top:
        assert (img[:margin_top - 2, :] < 128).sum() > 10, "the top band holds no text"
    tiles = img[margin_top:, margin_left:]
    assert (tiles[:, :2] == 255).all() and (tiles[:2, :] == 255).all(), "tiles are not where they should be"
    return tiles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the helpers, as fixtures


@pytest.fixture(name="invoke", scope="session")
def _invoke():
    return invoke


@pytest.fixture(name="one_clean_line", scope="session")
def _one_clean_line():
    return one_clean_line


@pytest.fixture(name="digit_image", scope="session")
def _digit_image():
    return digit_image


@pytest.fixture(name="write_idx", scope="session")
def _write_idx():
    return write_idx


@pytest.fixture(name="make_mnist_idx", scope="session")
def _make_mnist_idx():
    return make_mnist_idx


@pytest.fixture(name="write", scope="session")
def _write():
    return write


@pytest.fixture(name="real_data", scope="session")
def _real_data():
    return real_data


@pytest.fixture(name="labelled_grid", scope="session")
def _labelled_grid():
    return labelled_grid


@pytest.fixture(scope="session")
def interrupt_at():
    """`interrupt_at(monkeypatch, epoch, step, signum=None)`: Ctrl-C arrives during training epoch `epoch`
    (1-based) just before batch `step`; or, with `signum`, that signal is sent to this process there."""
    from vqgen import data as D

    def arrange(monkeypatch, epoch: int, step: int, signum: int | None = None) -> None:
        real = D.Batches.iterate
        seen = {"epochs": 0}

        def iterate(self, start=0):
            if self.shuffle:
                seen["epochs"] += 1
            for i, batch in enumerate(real(self, start), start=start):
                if self.shuffle and seen["epochs"] == epoch and i == step:
                    if signum is None:
                        raise KeyboardInterrupt
                    os.kill(os.getpid(), signum)
                yield batch

        monkeypatch.setattr(D.Batches, "iterate", iterate)

    return arrange


@pytest.fixture(name="free_port", scope="session")
def _free_port():
    return free_port


@dataclass(frozen=True)
class TinySettings:
    """The settings of tiny runs, as the text of their config files."""

    vqvae: str = TINY_VQVAE
    vae: str = TINY_VAE
    prior: str = TINY_PRIOR


@pytest.fixture(scope="session")
def tiny_yaml() -> TinySettings:
    return TinySettings()


@pytest.fixture(scope="session")
def tiny():
    """`tiny(folder, extra)`: writes the tiny VQ-VAE's settings (and `extra` lines) to folder/tiny.yaml."""
    return lambda folder, extra="": str(write(folder, "tiny.yaml", TINY_VQVAE + extra))


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    return write(tmp_path, "tiny.yaml", TINY_VQVAE)


@pytest.fixture(scope="session")
def run_info():
    """`run_info(run)`: what `vqgen info --json` says of a run."""
    return lambda run: json.loads(invoke("info", run, "--json").stdout)


@pytest.fixture(scope="session")
def runs_in():
    """`runs_in(home)`: the names of the run directories under home/runs."""
    return lambda home: {p.name for p in (home / "runs").iterdir()}


# --------------------------------------------------------------------------- data and environment


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test its own vqgen cache, and no VQGEN_DEBUG from the shell."""
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("VQGEN_DEBUG", raising=False)


@pytest.fixture(scope="session")
def mnist_idx(tmp_path_factory) -> Path:
    return make_mnist_idx(tmp_path_factory.mktemp("tiny-mnist"))


@pytest.fixture
def face_folder(tmp_path) -> Path:
    """A folder of small RGB 'faces' in mixed sizes and modes, plus one broken file."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(24):
        size = int(rng.integers(40, 70))
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        if i == 0:
            im = im.convert("L")
        elif i == 1:
            im = im.convert("RGBA")
        elif i == 2:
            im = im.convert("P")
        im.save(folder / f"face_{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    return folder


# --------------------------------------------------------------------------- tiny trained runs


class TinyRuns:
    """Folders of tiny runs on synthetic digits, each folder trained on first use and then shared by every
    module of the session. Tests only read them; a test that writes into one takes a copy (`writable`)."""

    def __init__(self, root: Path):
        self.root = root

    def _home(self, name: str, configs: dict[str, str]) -> Path:
        home = self.root / name
        make_mnist_idx(home / "mnist")
        for file, text in configs.items():
            write(home, file, text)
        return home

    def _train(self, home: Path, *args) -> None:
        with pytest.MonkeyPatch.context() as m:
            m.setenv("VQGEN_CACHE", str(self.root / "cache"))
            r = invoke("train", *args, cwd=home)
        assert r.exit_code == 0, r.output

    @cached_property
    def models(self) -> Path:
        """A VAE, a VQ-VAE and its prior, trained in that order, beside a blank digit, a file and a folder."""
        home = self._home("models", {"vqvae.yaml": TINY_VQVAE, "vae.yaml": TINY_VAE, "prior.yaml": TINY_PRIOR})
        self._train(home, "--model", "vae", "--dataset", home / "mnist", "--config", home / "vae.yaml")
        self._train(home, "--dataset", home / "mnist", "--config", home / "vqvae.yaml")
        self._train(home, "--model", "prior", "--config", home / "prior.yaml")
        Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(home / "blank.png")
        (home / "a_file").write_text("not a folder")
        (home / "a_folder").mkdir()
        return home

    @cached_property
    def records(self) -> Path:
        """VQ-VAE runs of three epochs (vqvae-mnist) and two (vqvae-mnist-2), and a prior of the first."""
        home = self._home("records", {"vq.yaml": TINY_VQVAE, "prior.yaml": TINY_PRIOR})
        self._train(home, "--dataset", home / "mnist", "--config", home / "vq.yaml", "--epochs", 3)
        self._train(home, "--dataset", home / "mnist", "--config", home / "vq.yaml", "--epochs", 2)
        self._train(home, "--model", "prior", "--config", home / "prior.yaml", "--run", "runs/vqvae-mnist")
        return home

    @cached_property
    def notebook(self):
        """A VQ-VAE and its prior, trained through the Python API in a fresh folder as a notebook would:
        (home, run, prior)."""
        import vqgen

        home = self.root / "notebook"
        data = make_mnist_idx(home / "mnist")
        with pytest.MonkeyPatch.context() as m:
            m.setenv("VQGEN_CACHE", str(self.root / "cache"))
            m.chdir(home)
            run = vqgen.train(model="vqvae", dataset=str(data), epochs=2, **TINY_API)
            prior = vqgen.train("prior", run=run, dim=16, layers=1, batch_size=32)
        return home, run, prior


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> TinyRuns:
    return TinyRuns(tmp_path_factory.mktemp("tiny-runs"))


@pytest.fixture(scope="session")
def home(tiny_runs) -> Path:
    """A folder whose runs/ holds a tiny vae-mnist, vqvae-mnist and its prior-mnist, with their mnist/ and configs."""
    return tiny_runs.models


@pytest.fixture(scope="session")
def records_home(tiny_runs) -> Path:
    """A folder whose runs/ holds vqvae-mnist (3 epochs), vqvae-mnist-2 (2 epochs) and prior-mnist."""
    return tiny_runs.records


@pytest.fixture(scope="session")
def notebook(tiny_runs):
    return tiny_runs.notebook


@pytest.fixture
def trained(tiny_runs, tmp_path):
    """A lone two-epoch VQ-VAE run in a folder of the test's own: (home, data, home/runs/vqvae-mnist)."""
    home = tmp_path / "home"
    run = Path(shutil.copytree(tiny_runs.records / "runs" / "vqvae-mnist-2", home / "runs" / "vqvae-mnist"))
    return home, tiny_runs.records / "mnist", run


@pytest.fixture
def writable(tmp_path):
    """`writable(folder)`: a copy of a shared folder of runs in the test's tmp_path, for a test that writes
    into it (file times kept, so the newest run stays the newest)."""
    return lambda folder: Path(shutil.copytree(folder, tmp_path / "writable" / folder.name))
