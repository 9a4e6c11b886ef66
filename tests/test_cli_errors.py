"""Bad requests at the command line: one Error line that says what, the right exit code, nothing written."""

import pytest


@pytest.mark.parametrize("args,code,message", [
    (["train", "--model", "gan"], 2, "'gan' is not one of"),
    (["train", "--dataset", "nonsense"], 2, "--dataset nonsense: no such folder"),
    (["train", "--dataset", "./no/such/dir"], 2, "no such folder"),
    (["train", "--config", "missing.yaml"], 2, "--config missing.yaml: no such file"),
    (["train", "--epochs", "0"], 2, "--epochs must be at least 1"),
    (["train", "--device", "tpu"], 2, "--device tpu: use auto, cpu, cuda or mps"),
    (["interpolate", "4", "9"], 2, "no trained VQ-VAE, VAE or VQGAN run under runs/"),
    (["info", "nowhere"], 2, "nowhere: no such run directory"),
])
def test_bad_usage_gets_one_line_and_exit_2(tmp_path, args, code, message, mnist_idx, invoke, monkeypatch):
    from vqgen import runs

    monkeypatch.setattr(runs, "READY_DIR", tmp_path / "none-shipped")   # no ready-trained runs to fall back on
    if args[:2] == ["train", "--epochs"] or args[:2] == ["train", "--device"]:
        args = args + ["--dataset", str(mnist_idx)]
    r = invoke(*args, cwd=tmp_path)
    assert r.exit_code == code, r.output
    assert message in r.output
    if "is not one of" not in message:  # typer's own usage box aside
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("Error: ")


@pytest.mark.parametrize("args,message", [
    (["train", "--dataset", ""], "--dataset is empty"),
    (["train", "--name", "../escaped"], "--name '../escaped': a run name is one folder name"),
    (["train", "--name", ".."], "--name '..': a run name is one folder name"),
    (["train", "--lr", "inf"], "--lr must be a finite number, not inf"),
    (["train", "--lr", "nan"], "--lr must be a finite number, not nan"),
    (["train", "--lr", "-1"], "--lr must be positive"),
    (["train", "--seed", str(2**70)], "--seed must be at most"),
    (["train", "--seed", "-1"], "--seed must be at least 0"),
    (["train", "--batch-size", "100000"], "--batch-size must be at most 65,536"),
    (["train", "--epochs", "1000000"], "--epochs must be at most 100,000"),
    (["train", "--device", "gpu"], "--device gpu: use auto, cpu, cuda or mps"),
    (["train", "--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
    (["train", "--model", "gan"], "--model 'gan' is not one of 'vqvae', 'vae', 'vqgan', 'prior'"),
    (["train", "--config", "a_folder"], "--config a_folder: is a folder"),
    (["train", "--config", "no.yaml"], "--config no.yaml: no such file"),
    (["train", "--out", "a_file", "--dataset", "mnist"], "--out a_file: is a file; give a folder"),
    (["interpolate", "4", "9", "--steps", "100000"], "--steps 100000: at most 1,000 frames"),
    (["interpolate", "4", "9", "--method", "cubic"], "--method cubic: use lerp or slerp"),
    (["interpolate", "4", "9", "--run", "runs/vqvae-mnist", "--space", "bogus"], "--space bogus: this model's latents are pre or post"),
    (["interpolate", "4", "9", "--out", "a_folder"], "--out a_folder: is a folder"),
    (["interpolate", "4", "9", "--out", "strip"], "--out strip: give a file name ending in .png"),
    (["interpolate", "4", "9", "--out", "a_file/x.png"], "a_file is a file, not a folder"),
    (["interpolate", "4", "9", "--frames", "a_file"], "--frames a_file: is a file; give a folder"),
    (["interpolate", "blank.png", "9", "--out", "blank.png"], "--out blank.png: is one of the inputs"),
    (["gif", "4", "9", "--fps", "nan"], "--fps must be a finite number, not nan"),
    (["gif", "4", "9", "--fps", "inf"], "--fps must be a finite number, not inf"),
    (["gif", "4", "9", "--fps", "1000"], "--fps must be at most 50"),
    (["gif", "4", "9", "--fps", "0"], "--fps must be positive"),
    (["gif", "4", "9", "--out", "m.png"], "--out m.png: give a file name ending in .gif"),
    (["reconstruct", "--input", "blank.png", "--out", "blank.png"], "--out blank.png: is one of the inputs"),
    (["reconstruct", "--n", "0"], "--n must be at least 1"),
    (["sample", "--n", "100000"], "--n must be at most 10,000"),
    (["sample", "--top-k", "-1"], "--top-k must be at least 0"),
    (["sample", "--guidance", "nan"], "--guidance must be 0 or more"),
    (["sample", "--temperature", "nan"], "--temperature must be a finite number, not nan"),
    (["sample", "--seed", str(2**70)], "--seed must be at most"),
    (["sample", "--run", "runs/vae-mnist", "--temperature", "nan"], "--temperature must be a finite number"),
    (["sample", "--run", "runs/vae-mnist", "--sampler", "bogus"], "--sampler bogus: use prior or mix"),
    (["sample", "--frames", "a_file"], "--frames a_file: is a file; give a folder"),
    (["interpolate", "4", "9", "--run", "runs/vae-mnist", "--space", "pre"], "--space pre: this model's latents are mean"),
    (["train", "--resume", "runs/vae-mnist", "--model", "vqvae"], "--resume continues a run with its own settings; drop --model"),
    (["eval", "--run", "runs/nope"], "runs/nope: no such run directory"),
])
def test_bad_flags(home, args, message, invoke, one_clean_line, runs_in):
    before = runs_in(home)
    r = invoke(*args, cwd=home)
    one_clean_line(r, 2, message)
    assert runs_in(home) == before          # no run directory made, none changed
    assert not (home.parent / "escaped").exists()


@pytest.mark.parametrize("args,message", [
    (["interpolate", "4", "12"], "'12': the dataset has no such class (classes: 0-9)"),
    (["interpolate", "4", "9", "--steps", "1"], "--steps 1: a morph needs at least 2 steps"),
    (["interpolate", "#5", "#99999"], "#99999: index out of range"),
    (["interpolate", "4", "missing.png"], "missing.png: no such image file"),
    (["sample"], "no prior for runs/vqvae-mnist yet"),
    (["sample", "--sampler", "mix"], "--sampler is for VAE runs"),
])
def test_bad_requests_on_a_trained_run(trained, args, message, invoke):
    home, _, _ = trained
    r = invoke(*args, cwd=home)
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and sum(ln.startswith("Error") for ln in lines) == 1


def test_runs_being_a_file_is_named(tmp_path, invoke, one_clean_line):
    (tmp_path / "runs").write_text("oops")
    one_clean_line(invoke("interpolate", "4", "9", cwd=tmp_path), 2, "runs is a file, not a folder of runs")
    one_clean_line(invoke("train", cwd=tmp_path), 2, "--out runs: is a file; give a folder")
    assert (tmp_path / "runs").read_text() == "oops"
