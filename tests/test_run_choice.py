"""Without --run, a command takes the newest run that can do what was asked, and says which and why; a folder
of runs is listed; a file that is not a vqgen model is told from a damaged one."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def face_run(tmp_path_factory, invoke, tiny_yaml):
    """A tiny VAE on unlabelled colour images: a run that has no classes and samples by none."""
    import numpy as np

    home = tmp_path_factory.mktemp("faces-home")
    faces = home / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    (home / "vae.yaml").write_text(tiny_yaml.vae + "image_size: 32\n")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VQGEN_CACHE", str(home / "cache"))
        r = invoke("train", "--model", "vae", "--dataset", faces, "--config", home / "vae.yaml", cwd=home)
    assert r.exit_code == 0, r.output
    return home / "runs" / "vae-faces"


def _add_newest(run: Path, home: Path) -> Path:
    """A copy of `run` in home/runs, made the newest there."""
    copy = Path(shutil.copytree(run, home / "runs" / run.name))
    later = time.time() + 60
    os.utime(copy / "model.safetensors", (later, later))
    return copy


def test_a_morph_of_classes_takes_the_newest_run_that_has_them(trained, face_run, invoke):
    home, _, run = trained
    _add_newest(face_run, home)
    r = invoke("interpolate", 4, 9, "--steps", 3, cwd=home)
    assert r.exit_code == 0, r.output
    assert "Using run runs/vqvae-mnist (newest with the classes 4 and 9)" in r.stderr
    assert (run / "interp_4_to_9.png").is_file()
    r = invoke("interpolate", "#0", "#1", "--steps", 3, cwd=home)   # held-out images: any run that morphs
    assert r.exit_code == 0 and "Using run runs/vae-faces (newest that can interpolate)" in r.stderr


def test_where_none_of_yours_can_the_ready_trained_one_does(tmp_path, face_run, invoke, one_clean_line):
    _add_newest(face_run, tmp_path)
    r = invoke("interpolate", 4, 9, "--steps", 3, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "Using the ready-trained VQ-VAE ready:vqvae-mnist: no run in runs/ with the classes 4 and 9" in r.stderr
    r = invoke("interpolate", "cat", "dog", cwd=tmp_path)
    one_clean_line(r, 2, "no run in runs/ with the classes cat and dog (newest: vae-faces), nor a ready-trained "
                         "one; train one on labelled data that has them")


def test_a_sample_of_a_class_takes_the_newest_run_that_samples_it(home, face_run, writable, invoke):
    mine = writable(home)
    _add_newest(face_run, mine)
    r = invoke("sample", "--digit", 7, "--n", 2, cwd=mine)
    assert r.exit_code == 0, r.output
    assert "Using run runs/prior-mnist (newest that samples class 7)" in r.stderr
    assert (mine / "runs" / "prior-mnist" / "samples_digit-7_n2.png").is_file()
    r = invoke("sample", "--n", 2, cwd=mine)   # no class asked: the newest run that samples at all
    assert r.exit_code == 0 and "Using run runs/vae-faces (newest that can sample)" in r.stderr


def test_reconstruct_takes_the_newest_autoencoder(records_home, writable, invoke):
    mine = writable(records_home)
    r = invoke("reconstruct", "--n", 2, cwd=mine)
    assert r.exit_code == 0, r.output
    assert "Using run runs/vqvae-mnist-2 (newest that can reconstruct)" in r.stderr


def test_eval_and_info_describe_the_model_of_images_not_its_newer_prior(records_home, invoke):
    r = invoke("eval", "--json", cwd=records_home)
    assert r.exit_code == 0, r.output
    assert "Using run runs/vqvae-mnist-2 (newest trained on images; newer: runs/prior-mnist)" in r.stderr
    assert json.loads(r.stdout)["run"] == "runs/vqvae-mnist-2"
    r = invoke("info", "--json", cwd=records_home)
    assert r.exit_code == 0 and json.loads(r.stdout)["model"] == "vqvae"
    assert json.loads(r.stdout)["path"] == "runs/vqvae-mnist-2/model.safetensors"


def test_a_folder_of_runs_is_listed(records_home, invoke, one_clean_line):
    listed = "runs/prior-mnist, runs/vqvae-mnist-2, runs/vqvae-mnist"
    r = invoke("reconstruct", "--run", "runs", cwd=records_home)
    one_clean_line(r, 2, f"runs is a folder of 3 runs, not a run; pass one of them with --run (newest first): {listed}")
    r = invoke("info", "runs/", cwd=records_home)
    one_clean_line(r, 2, "runs is a folder of 3 runs, not a run")


@pytest.mark.parametrize("name,make,what", [
    ("README.md", lambda run, p: p.write_text("# My notes\n\nvqgen train\n"), "a text file"),
    ("resume.pt", lambda run, p: shutil.copy(run / "resume.pt", p), "a PyTorch file (torch.save)"),
    ("config.yaml", lambda run, p: shutil.copy(run / "config.yaml", p), "a YAML file"),
    ("picture.png", lambda run, p: shutil.copy(run / "recon_epoch_001.png", p), "a PNG image"),
    ("empty", lambda run, p: p.write_bytes(b""), "an empty file"),
])
def test_a_file_that_is_not_a_model_is_named_as_what_it_is(trained, tmp_path, invoke, one_clean_line, name, make,
                                                           what):
    _, _, run = trained
    make(run, tmp_path / name)
    r = invoke("info", tmp_path / name)
    one_clean_line(r, 2, f"{name} is {what}, not a vqgen model; pass a run folder or its model.safetensors")
    r = invoke("reconstruct", "--run", tmp_path / name)
    one_clean_line(r, 2, f"{name} is {what}, not a vqgen model")


@pytest.mark.parametrize("damage", ["truncated", "header length flipped", "header byte flipped", "emptied"])
def test_a_damaged_model_is_still_called_damaged(trained, invoke, one_clean_line, damage):
    _, _, run = trained
    weights = run / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    if damage == "truncated":
        blob = blob[:len(blob) // 2]
    elif damage == "header length flipped":
        blob[5] ^= 0xFF
    elif damage == "header byte flipped":
        blob[9] ^= 0x40          # the header's first quote: no longer JSON
    else:
        blob = bytearray()
    weights.write_bytes(bytes(blob))
    r = invoke("info", run)
    one_clean_line(r, 1, "corrupt or truncated weights file")


def test_a_class_asked_of_a_model_that_samples_by_none_is_one_clear_line(home, invoke, one_clean_line, tmp_path):
    r = invoke("sample", "--run", home / "runs" / "vae-mnist", "--digit", 7, "--out", tmp_path / "x.png")
    one_clean_line(r, 2, "--digit needs a model that samples by class; a VAE samples with")


def test_info_on_a_plain_vq_run_lists_only_its_own_quantiser_settings(records_home, invoke):
    r = invoke("info", records_home / "runs" / "vqvae-mnist")
    assert r.exit_code == 0, r.output
    assert "quantizer" in r.stdout and "codebook_size" in r.stdout
    assert not any(name in r.stdout for name in ("levels", "stages", "stage_codes"))   # FSQ's and RVQ's
