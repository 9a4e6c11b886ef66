"""`vqgen interpolate`: a strip and frames from one class to another, from held-out indices or image files."""

import numpy as np
from PIL import Image


def test_interpolate_writes_strip_and_frames(trained, tmp_path, invoke):
    home, _, run = trained
    r = invoke("interpolate", 4, 9, "--steps", 12, "--frames", tmp_path / "frames", cwd=home)
    assert r.exit_code == 0, r.output
    strip = Image.open(run / "interp_4_to_9.png")
    assert strip.size == (12 * 114 + 2, 114 + 2)
    frames = sorted((tmp_path / "frames").glob("frame_*.png"))
    assert [f.name for f in frames][:2] == ["frame_00.png", "frame_01.png"] and len(frames) == 12
    first = np.asarray(Image.open(frames[0]))
    assert first.shape == (28, 28)
    # The morph moves: the first and last frames differ.
    last = np.asarray(Image.open(frames[-1])).astype(float)
    assert np.abs(first.astype(float) - last).mean() > 2  # a model that learned nothing gives ~0


def test_interpolate_by_index_and_image_file(trained, tmp_path, invoke):
    home, _, run = trained
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "blank.png")
    out = tmp_path / "m.png"
    r = invoke("interpolate", "#3", tmp_path / "blank.png", "--steps", 3, "--out", out, "--run", run, cwd=home)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (3 * 114 + 2, 116)
