"""The table of dataset source kinds; a source resolved once per command; the Hub's offline switch put back."""

import io
import os

import numpy as np
import pytest
from PIL import Image

import vqgen
from vqgen import data as D
from vqgen.data import sources
from vqgen.errors import DownloadError
from vqgen.progress import TrainProgress


def hub_dataset(n: int = 6):
    """A DatasetDict of n colour PNGs, as `datasets.load_dataset` gives."""
    import datasets

    images = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.full((30, 30, 3), 40 * i, dtype=np.uint8)).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image()})
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": images}, features=features)})


def test_every_kind_in_the_table_resolves_and_has_its_shape(mnist_idx, face_folder, tmp_path):
    hub_folder = tmp_path / "hub"
    (hub_folder / "data").mkdir(parents=True)
    hub_dataset()["train"].to_parquet(str(hub_folder / "data" / "train.parquet"))
    (hub_folder / "README.md").write_text("Our copy of ylecun/mnist.\n")
    resolved = {
        "hub": D.resolve_dataset("someone/some-data"),
        "idx": D.resolve_dataset(str(mnist_idx)),
        "hub-folder": D.resolve_dataset(str(hub_folder)),
        "images": D.resolve_dataset(str(face_folder)),
        "packaged": D.resolve_dataset("mnist"),   # the copy inside vqgen
    }
    assert set(resolved) == set(D.KINDS)
    for kind, src in resolved.items():
        assert src.kind == kind
    # its card names MNIST, but its images are not MNIST's: named after its folder
    assert resolved["hub-folder"].known is None and resolved["hub-folder"].label == "hub"
    assert resolved["idx"].known is None and resolved["idx"].label != "mnist"   # 320 images, not MNIST's 60,000
    assert D.probe_shape(resolved["idx"]) == (28, 1)
    assert D.probe_shape(resolved["hub-folder"]) == D.NATIVE_SHAPE["anime-faces"]   # colour
    assert D.probe_shape(resolved["images"]) == (28, 1)   # its first readable image is grayscale
    assert resolved["packaged"].label == "mnist" and D.probe_shape(resolved["packaged"]) == (28, 1)
    assert D.probe_shape(D.resolve_dataset("anime-faces")) == (96, 3)


def test_a_folder_with_tables_and_images_is_the_earlier_kind_in_the_table(face_folder):
    hub_dataset()["train"].to_parquet(str(face_folder / "extra.parquet"))
    assert D.resolve_dataset(str(face_folder)).kind == "hub-folder"


def test_a_new_kind_is_one_entry_in_the_table(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "digits.npy", rng.integers(0, 255, (40, 28, 28), dtype=np.uint8))

    def listing(src):
        arr = np.load(next(p for p in src.files if p.suffix == ".npy"))
        return sources.Listing({"train": sources.Split(len(arr), array=arr)})

    monkeypatch.setitem(D.KINDS, "npy", sources.SourceKind(
        "npy", listing, lambda src: (28, 1), detect=lambda files: any(p.suffix == ".npy" for p in files)))
    src = D.resolve_dataset(str(tmp_path / "npy"))
    assert src.kind == "npy" and D.probe_shape(src) == (28, 1)
    data = D.load_images(str(tmp_path / "npy"), 14, 1)
    assert data.train_images.shape == (38, 1, 14, 14) and data.test_images.shape == (2, 1, 14, 14)


def _count_listings(monkeypatch) -> list:
    listed = []
    real = sources._list_files
    monkeypatch.setattr(sources, "_list_files", lambda path: listed.append(path) or real(path))
    return listed


def _count_stats(monkeypatch, folder) -> dict:
    stats: dict[str, int] = {}
    real = os.stat

    def stat(path, *args, **kwargs):
        p = os.fsdecode(path) if not isinstance(path, int) else ""
        if p.startswith(str(folder)) and p.endswith(".png"):
            stats[p] = stats.get(p, 0) + 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    return stats


def test_training_resolves_its_folder_once(face_folder, tiny_config, tmp_path, monkeypatch):
    listed = _count_listings(monkeypatch)
    vqgen.train("vqvae", str(face_folder), config=str(tiny_config), image_size=16, out=str(tmp_path / "runs"),
                progress=TrainProgress(quiet=True))
    assert listed == [face_folder.resolve()]


def test_a_cache_hit_lists_the_folder_once_and_stats_each_file_once(face_folder, tiny_config, tmp_path, monkeypatch):
    def train(*args, **kwargs):
        return vqgen.train(*args, out=str(tmp_path / "runs"), progress=TrainProgress(quiet=True), **kwargs)

    train("vqvae", str(face_folder), config=str(tiny_config), image_size=16)   # decodes and fills the cache
    monkeypatch.setattr(D, "decode_listing", lambda *a: pytest.fail("a cache hit decoded the dataset again"))
    listed, stats = _count_listings(monkeypatch), _count_stats(monkeypatch, face_folder)
    run = train("vqvae", str(face_folder), config=str(tiny_config), image_size=16)
    assert len(listed) == 1
    files = sorted(str(p) for p in face_folder.iterdir())
    assert sorted(stats) == files and set(stats.values()) == {1}   # the cache key's one stat per file
    listed.clear()
    stats.clear()
    train("prior", run=run.run_dir, epochs=1, batch_size=16, dim=16, layers=1, heads=2)   # the same images' codes
    assert len(listed) == 1 and set(stats.values()) == {1}


def _offline_switches():
    import datasets
    import huggingface_hub.constants as hf_constants

    return datasets.config.HF_HUB_OFFLINE, hf_constants.HF_HUB_OFFLINE


@pytest.mark.parametrize("fails", [False, True])
def test_the_offline_switch_holds_for_the_download_alone(monkeypatch, fails):
    import datasets

    before = _offline_switches()
    seen = []

    def load_dataset(name, *args, **kwargs):
        seen.append((name, _offline_switches()))
        if fails:
            raise ConnectionError("no network")
        return hub_dataset()

    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    src = D.resolve_dataset("someone/some-data")
    if fails:
        with pytest.raises(DownloadError, match="if offline, point dataset at a local copy"):
            D.probe_shape(src)
    else:
        assert D.probe_shape(src) == (96, 3)
        data = D.load_images(src.source, 16, 3, source=src)
        assert data.train_images.shape[0] + data.test_images.shape[0] == 6
    # Loaded once for the probe and the listing, offline while loading, and back as it was after.
    assert seen == [("someone/some-data", (True, True))]
    assert _offline_switches() == before
