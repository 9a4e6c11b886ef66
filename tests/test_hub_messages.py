"""What vqgen says around Hugging Face `datasets`: its own words for an offline failure, and none of datasets'
progress bars."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vqgen.data import sources


def test_offline_says_the_data_is_not_cached_and_the_hub_unreachable(tmp_path, monkeypatch, invoke,
                                                                    one_clean_line):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout=3.0: False)   # as with the network cut
    r = invoke("train", "--dataset", "someone/some-faces", "--out", tmp_path / "runs")
    one_clean_line(r, 1, "could not download someone/some-faces from the Hugging Face Hub: it is not in the "
                         "datasets cache and the Hub cannot be reached;")
    assert "OfflineMode" not in r.stderr and "HF_HUB_OFFLINE is set" not in r.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")   # the user's own switch is named
    r = invoke("train", "--dataset", "someone/some-faces", "--out", tmp_path / "runs")
    one_clean_line(r, 1, "the Hub cannot be reached (HF_HUB_OFFLINE is set); if offline, point --dataset")


def test_datasets_progress_bars_stay_out_of_the_output(tmp_path, monkeypatch, invoke, tiny_config):
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    folder = tmp_path / "faces-hub"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 8)):
        images = []
        for _ in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(buf, format="PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
        ds = datasets.Dataset.from_dict({"image": images, "label": list(range(n))},
                                        features=datasets.Features({"image": datasets.Image(),
                                                                    "label": datasets.Value("int64")}))
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    r = invoke("train", "--dataset", folder, "--config", tiny_config, "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    assert "Generating" not in r.output and "split" not in r.output.lower(), r.output
    assert "Training a VQ-VAE on" in r.output
    from datasets import utils

    assert not utils.are_progress_bars_disabled()   # as it was, for the rest of the process
