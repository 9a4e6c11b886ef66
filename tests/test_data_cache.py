"""The cache of decoded datasets: written once and read back (or memory-mapped) as the fresh decode gave it,
damage found and rebuilt, an unusable cache folder named."""

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from vqgen import data as D


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


def test_memory_mapped_data_trains_exactly_like_data_in_memory(tmp_path, mnist_idx, invoke, tiny):
    mapped = D.load_images(str(mnist_idx), 28, 1, in_memory=False)
    held = D.load_images(str(mnist_idx), 28, 1, in_memory=True)
    assert mapped.mapped and not held.mapped and torch.equal(mapped.train_images, held.train_images)
    for setting in ("yes", "no"):
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path, f"data_in_memory: {setting}\naugment: true\n"),
                   "--out", tmp_path / "runs", "--name", setting)
        assert r.exit_code == 0, r.output
    assert "memory-mapped cache" in r.stderr
    a, b = (load_file(str(tmp_path / "runs" / n / "model.safetensors")) for n in ("yes", "no"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, mnist_idx, monkeypatch):
    from vqgen import data as D

    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / "cache"))
    first = D.load_images(str(mnist_idx), 28, 1)
    entry = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    for damage in ("truncate", "flip"):
        f = entry / "images-train.u8"
        data = bytearray(f.read_bytes())
        if damage == "truncate":
            f.write_bytes(data[:1000])
        else:
            data[5000] ^= 0xFF
            f.write_bytes(bytes(data))
        logs = []
        again = D.load_images(str(mnist_idx), 28, 1, logs.append)
        assert any("is damaged" in ln and "decoding it again" in ln for ln in logs), logs
        assert torch.equal(first.train_images, again.train_images)


def test_an_unusable_cache_folder_is_named(tmp_path, mnist_idx, monkeypatch, invoke, one_clean_line):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / "cachefile"))
    one_clean_line(invoke("train", "--dataset", mnist_idx, "--out", tmp_path / "runs"), 2,
                   f"VQGEN_CACHE={tmp_path / 'cachefile'} is a file, not a folder")


@given(blob=st.binary(max_size=300), which=st.sampled_from(["info.json", "images-train.u8", "labels-train.i64"]))
def test_any_damage_to_a_cache_entry_is_found_and_rebuilt(tmp_path, blob, which, mnist_idx, monkeypatch):
    cache = tmp_path / f"cache{os.urandom(4).hex()}"
    monkeypatch.setenv("VQGEN_CACHE", str(cache))
    first = D.load_images(str(mnist_idx), 28, 1)
    entry = next(p for p in cache.iterdir() if p.is_dir())
    (entry / which).write_bytes(blob)
    again = D.load_images(str(mnist_idx), 28, 1)
    assert torch.equal(first.train_images, again.train_images)
    assert torch.equal(first.train_labels, again.train_labels)
