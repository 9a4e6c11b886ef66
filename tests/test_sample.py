"""`vqgen sample`: a VQ-VAE samples through its prior, by class or every class in turn, repeatable by seed, with
guidance; requests that do not fit the run are refused."""

import numpy as np
import pytest
from PIL import Image


def test_sample_from_the_vqvae_finds_its_prior(home, tmp_path, invoke, labelled_grid):
    r = invoke("sample", "--n", 16, "--run", "runs/vqvae-mnist", "--out", tmp_path / "s.png", "--frames", tmp_path / "f",
               cwd=home)
    assert r.exit_code == 0, r.output
    assert "Using prior runs/prior-mnist" in r.stderr
    # Every class in turn: one column per digit, labelled with it (16 samples fill 10 + 6 columns).
    labelled_grid(tmp_path / "s.png", 10, 2, 112, left=False, top=True)
    frames = sorted((tmp_path / "f").glob("sample_*.png"))
    assert len(frames) == 16 and Image.open(frames[0]).size == (28, 28)


def test_sample_grids_say_what_they_hold(records_home, tmp_path, invoke, labelled_grid):
    r = invoke("sample", "--n", 20, "--out", tmp_path / "all.png", cwd=records_home)
    assert r.exit_code == 0, r.output
    labelled_grid(tmp_path / "all.png", 10, 2, 112, left=False, top=True)    # digits above their columns
    r = invoke("sample", "--digit", 3, "--n", 4, "--out", tmp_path / "three.png", cwd=records_home)
    labelled_grid(tmp_path / "three.png", 2, 2, 112, left=False, top=True)   # "digit 3"


def test_sample_a_digit_is_repeatable_by_seed(home, tmp_path, invoke):
    for name in ("a", "b"):
        r = invoke("sample", "--digit", 7, "--n", 4, "--seed", 3, "--temperature", 0.8, "--top-k", 8,
                   "--out", tmp_path / f"{name}.png", "--run", home / "runs" / "prior-mnist", cwd=home)
        assert r.exit_code == 0, r.output
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("a", "b"))
    assert np.array_equal(a, b)


def test_guidance_on_the_command_line(home, tmp_path, invoke):
    r = invoke("sample", "--digit", 3, "--n", 4, "--guidance", 0, "--out", tmp_path / "g0.png", cwd=home)
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--digit", 3, "--n", 4, "--guidance", 3, "--out", tmp_path / "g3.png", cwd=home)
    assert r.exit_code == 0, r.output
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("g0", "g3"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    r = invoke("sample", "--guidance", "-1", cwd=home)
    assert r.exit_code == 2 and "--guidance must be 0 or more" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["sample", "--digit", "11"], "--digit 11: the dataset's classes are 0, 1, 2"),
    (["sample", "--temperature", "0"], "--temperature must be positive"),
    (["sample", "--digit", "3", "--class", "3"], "give --digit or --class, not both"),
])
def test_bad_sample_requests(home, args, message, invoke):
    r = invoke(*args, cwd=home)
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_vqvae_run_given_to_vae_only_options(home, invoke):
    r = invoke("sample", "--run", home / "runs" / "vqvae-mnist", "--sampler", "prior", cwd=home)
    assert r.exit_code == 2 and "--sampler is for VAE runs" in r.stderr
