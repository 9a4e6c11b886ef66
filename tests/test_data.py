"""Datasets: names and folders resolved; images decoded and converted once (in parallel too), unreadable ones
skipped and counted, damaged files named; batches and augmentation."""

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from vqgen import data as D
from vqgen.errors import UsageError, VQGenError


def test_short_names_and_hub_ids_resolve():
    assert (D.resolve_dataset("mnist").kind, D.resolve_dataset("mnist").source) == ("packaged", "vqgen:mnist")
    assert (D.resolve_dataset("ylecun/mnist").kind, D.resolve_dataset("ylecun/mnist").known) == ("hub", "mnist")
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


def test_offline_hub_download_says_how_to_use_a_local_copy(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    r = invoke("train", "--dataset", "ylecun/mnist", "--out", tmp_path / "runs")
    assert r.exit_code == 1
    assert "could not download ylecun/mnist from the Hugging Face Hub" in r.stderr
    assert "point --dataset at a local copy" in r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_offline_error_names_the_local_layouts(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    r = invoke("train", "--dataset", "anime-faces", "--out", tmp_path / "runs", cwd=tmp_path)
    assert r.exit_code == 1
    for layout in ("laid out like the Hub dataset", "MNIST IDX files", "a folder of images"):
        assert layout in r.stderr


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


@pytest.mark.parametrize("chunk", [256, 2])
def test_parallel_decoding_gives_the_same_images(tmp_path, face_folder, monkeypatch, chunk):
    # chunk 2: 13 chunks through 4 shared slots and one reused buffer, each slot and the buffer reused
    monkeypatch.setattr(D.decoding, "CHUNK", chunk)
    serial = D.load_images(str(face_folder), 32, 3, use_cache=False, workers=0)
    parallel = D.load_images(str(face_folder), 32, 3, use_cache=False, workers=2)
    for split in ("train_images", "test_images"):
        assert torch.equal(getattr(serial, split), getattr(parallel, split))
    assert parallel.skipped == serial.skipped == 1 and parallel.converted == serial.converted == 3
    one_by_one = torch.cat([D.load_image_file(p, 32, 3) for p in sorted(face_folder.glob("face_*.png"))])
    together = torch.cat([serial.train_images, serial.test_images]).float().div(255)
    assert sorted(map(tuple, together.flatten(1).tolist())) == sorted(map(tuple, one_by_one.flatten(1).tolist()))
    seen = []
    D.load_images(str(face_folder), 32, 3, use_cache=False, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (25, 25)


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


def test_unreadable_first_file_dangling_link_and_bomb_are_skipped_and_counted(tmp_path, invoke, write, tiny_yaml):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    (folder / "000_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))   # first in sorted order
    os.symlink(tmp_path / "nowhere.png", folder / "001_dangling.png")
    Image.new("1", (10_000, 9_000)).save(folder / "002_bomb.png")                # 90M pixels: over Pillow's limit
    r = invoke("train", "--dataset", folder, "--config", write(tmp_path, "c.yaml", tiny_yaml.vqvae), "--out",
               tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "Skipped 3 unreadable images" in r.stderr
    info = json.loads(invoke("info", tmp_path / "runs" / "vqvae-imgs", "--json").stdout)
    assert info["config"]["model_config"]["channels"] == 3   # probed from the first readable image, not the bomb


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated or padded IDX file"),
    ("garbage", "not a readable IDX file"),
    ("header", "not an IDX file of 3-d unsigned bytes"),
    ("labels", "labels for the 320 images"),
])
def test_damaged_idx_files_are_named(tmp_path, damage, message, invoke, one_clean_line, write_idx, make_mnist_idx):
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


@given(blob=st.binary(max_size=400), gz=st.booleans())
def test_any_idx_bytes_are_read_or_refused(tmp_path, blob, gz):
    folder = tmp_path / f"idx{os.urandom(4).hex()}"
    folder.mkdir()
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (folder / name).write_bytes(gzip.compress(blob) if gz else blob)
    try:
        D.load_images(str(folder), 28, 1, use_cache=False)
    except VQGenError:
        pass


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
def test_hub_layout_errors_are_named(tmp_path, column, message, invoke, one_clean_line):
    folder = hub_folder(tmp_path, column)
    one_clean_line(invoke("train", "--dataset", folder, "--out", tmp_path / "runs"), 2, message)


def test_a_dataset_of_one_image_states_the_minimum(tmp_path, invoke, one_clean_line):
    (tmp_path / "one").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "one" / "x.png")
    one_clean_line(invoke("train", "--dataset", tmp_path / "one", "--out", tmp_path / "runs"), 2,
                   "1 image(s); vqgen needs at least 2")


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
