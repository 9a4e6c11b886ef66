"""The command line itself: start-up cost, help, version, `python -m vqgen`, quiet mode, the debug switch."""

import subprocess
import sys


def test_bad_flags_answer_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom vqgen.cli import app\n"
            "try:\n    app(['train', '--epochs', '0'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "exit 2" in out.stdout and "torch not loaded" in out.stdout
    assert "--epochs must be at least 1" in out.stderr


def test_importing_vqgen_is_cheap():
    out = subprocess.run([sys.executable, "-c", "import sys, vqgen; print(sorted(m for m in ('torch', 'datasets', "
                          "'torchvision', 'numpy') if m in sys.modules))"], capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_and_version(invoke):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vqgen", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("vqgen ")
    r = invoke("--help")
    assert r.exit_code == 0 and "interpolate" in r.stdout and "sample" in r.stdout


def test_help_shows_flags_as_flags_and_every_default(invoke):
    from vqgen import models

    for command in ("train", "reconstruct", "interpolate", "gif", "sample", "eval", "info", "runs", "compare", "map"):
        r = invoke(command, "--help")
        assert r.exit_code == 0 and "<bool>" not in r.stdout and "{" not in r.stdout.splitlines()[1], command
    text = " ".join(invoke("train", "--help").stdout.replace("│", " ").split())   # wrapped lines joined
    # The defaults the help promises are the registry's.
    assert "64 (colour: 32); prior 16 (large grids: 32)" in text
    assert models.get("prior").defaults(models.CodeShape(8, 2))[0]["batch_size"] == 16
    faces, face_prior = models.get("vqvae").defaults(models.ImageShape(96, 3))[0], \
        models.get("prior").defaults(models.CodeShape(1024, 12))[0]
    assert f"3 (colour: {faces['epochs']})" in text and f"(colour: {faces['batch_size']})" in text
    assert f"prior 1 (large grids: {face_prior['epochs']})" in text and f"(large grids: {face_prior['lr']:g})" in text
    vae = models.get("vae").defaults(models.ImageShape(96, 3))[0]
    assert f"vae {vae['epochs']}" in text and f"vae {vae['lr']:g}" in text
    assert "Usage: vqgen interpolate [OPTIONS] A B" in " ".join(invoke("interpolate", "--help").stdout.split())


def test_quiet_prints_only_the_run_directory(records_home, tmp_path, invoke):
    r = invoke("train", "--dataset", records_home / "mnist", "--config", records_home / "vq.yaml", "--out", tmp_path,
               "-q", cwd=records_home)
    assert r.exit_code == 0 and r.stderr == "" and r.stdout.strip() == str(tmp_path / "vqvae-mnist")


def test_debug_switch_shows_the_traceback(tmp_path, monkeypatch, invoke):
    monkeypatch.setenv("VQGEN_DEBUG", "1")
    r = invoke("info", tmp_path / "nowhere")
    assert r.exit_code != 0 and r.exception is not None
