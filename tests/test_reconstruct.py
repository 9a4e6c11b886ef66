"""`vqgen reconstruct`: a labelled grid of held-out images or a folder of files, never overwriting the inputs or
its own earlier outputs."""

import numpy as np
from PIL import Image


def test_reconstruct_grid_and_folder(trained, tmp_path, invoke, labelled_grid):
    home, data, run = trained
    r = invoke("reconstruct", "--n", 4, cwd=home)
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.stderr
    labelled_grid(run / "reconstruction_n4.png", 4, 2, 112, left=True, top=False)   # rows say which is which
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((50, 50, 3), 40 * i, dtype=np.uint8)).save(folder / f"img{i}.jpg")
    (folder / "bad.png").write_bytes(b"nope")
    r = invoke("reconstruct", "--input", folder, "--out", tmp_path / "out", cwd=home)
    assert r.exit_code == 0, r.output
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["img0.png", "img1.png", "img2.png"]
    assert Image.open(tmp_path / "out" / "img1.png").size == (28, 28)
    assert "Skipped 1 unreadable" in r.stderr


def test_reconstruct_never_overwrites_inputs_or_its_own_outputs(home, tmp_path, invoke, one_clean_line, writable):
    home = writable(home)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("same.png", "same.jpg", "other.png"):
        Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(folder / name)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    one_clean_line(invoke("reconstruct", "--input", folder, "--out", folder, cwd=home), 2, "is the input folder")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    r = invoke("reconstruct", "--input", folder, "--out", tmp_path / "out", cwd=home)
    assert r.exit_code == 0, r.output
    assert "over 3 images" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other.png", "same-jpg.png", "same-png.png"]
    # Default outputs get -2 rather than overwrite the last ones.
    paths = [invoke("reconstruct", "--n", 3, cwd=home).stdout.strip() for _ in range(2)]
    assert paths[0].endswith("reconstruction_n3.png") and paths[1].endswith("reconstruction_n3-2.png")
