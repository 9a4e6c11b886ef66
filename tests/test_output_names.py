"""Default output names follow one scheme (docs/usage.md#output-names), and pictures of runs go beside the
runs, never into the current folder."""

from __future__ import annotations

from pathlib import Path


def test_names_say_what_the_pictures_hold(home, writable, invoke):
    home = writable(home)
    for args, name in (
        (("sample", "--digit", 7, "--n", 16), "runs/prior-mnist/samples_digit-7_n16.png"),
        (("sample", "--digit", 7, "--n", 16), "runs/prior-mnist/samples_digit-7_n16-2.png"),
        (("sample", "--n", 8, "--temperature", 0.9, "--run", "runs/prior-mnist"),
         "runs/prior-mnist/samples_n8_t0.9.png"),
        (("interpolate", "4", "9", "--run", "runs/vqvae-mnist"), "runs/vqvae-mnist/interp_4_to_9.png"),
        (("interpolate", "#3", "#10", "--run", "runs/vqvae-mnist"), "runs/vqvae-mnist/interp_test3_to_test10.png"),
        (("gif", "#3", "4", "--steps", 4, "--run", "runs/vae-mnist", "--method", "slerp"),
         "runs/vae-mnist/morph_test3_to_4_slerp.gif"),
    ):
        r = invoke(*args, cwd=home)
        assert r.exit_code == 0, r.output
        assert r.stdout.strip() == name and (home / name).is_file(), (args, r.stdout)


def test_compare_writes_beside_the_runs(records_home, writable, invoke, tmp_path):
    home = writable(records_home)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = invoke("compare", home / "runs" / "vqvae-mnist", home / "runs" / "vqvae-mnist-2", cwd=elsewhere)
    assert r.exit_code == 0, r.output
    written = Path(r.stdout.strip().splitlines()[-1])
    assert written == home / "runs" / "compare_vqvae-mnist_vs_vqvae-mnist-2.png" and written.is_file()
    assert not list(elsewhere.iterdir())
    r = invoke("compare", "runs/vqvae-mnist", "runs/vqvae-mnist-2", cwd=home)   # beside them, said relatively
    assert r.stdout.strip().splitlines()[-1] == "runs/compare_vqvae-mnist_vs_vqvae-mnist-2-2.png"
    assert "compare_vqvae-mnist_vs_vqvae-mnist-2" not in invoke("runs", cwd=home).stdout   # not taken for a run
    r = invoke("compare", "ready:vqvae-mnist", cwd=elsewhere)
    assert r.stdout.strip().splitlines()[-1] == "runs/ready-trained/compare_ready-vqvae-mnist.png", r.output
