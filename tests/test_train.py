"""Training end to end: a complete run on disk, the same seed giving the same weights, runs never overwritten,
a NaN stopping cleanly, memory checked first, mixed precision, torch.compile."""

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file


def test_train_writes_a_complete_run(trained, labelled_grid):
    home, _, run = trained
    for name in ("config.yaml", "model.safetensors", "resume.pt", "metrics.csv",
                 "recon_epoch_001.png", "recon_epoch_002.png", "loss_curve.png"):
        assert (run / name).is_file(), name
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["vqgen_model"] == "vqvae"
    config = json.loads(meta["config"])
    assert config["model_config"]["codebook_size"] == 16 and config["train"]["epochs"] == 2
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and "test_mse" in lines[0] and "train_usage" in lines[0]
    # 8 originals over 8 reconstructions, each 28px scaled x4 with 2px padding; rows labelled, epoch on top.
    labelled_grid(run / "recon_epoch_002.png", 8, 2, 112, left=True, top=True)


def test_same_seed_same_weights(tmp_path, mnist_idx, tiny_config, invoke):
    for name in ("a", "b"):
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--name", name, "--seed", 7,
                   "--out", tmp_path)
        assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_new_runs_never_overwrite(tmp_path, mnist_idx, tiny_config, invoke):
    for _ in range(2):
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--out", tmp_path / "runs")
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["vqvae-tiny-mnist0", "vqvae-tiny-mnist0-2"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, mnist_idx, tiny_config, monkeypatch, invoke):
    from vqgen.models import VQVAE

    r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--out", tmp_path, "--name", "r")
    assert r.exit_code == 0
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    real_forward = VQVAE.forward

    def nan_loss(self, x, y=None):
        out = real_forward(self, x, y)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VQVAE, "forward", nan_loss)
    r = invoke("train", "--resume", tmp_path / "r", "--epochs", 2)
    assert r.exit_code == 1
    assert "the loss became nan" in r.stderr and "last good checkpoint is kept" in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) < 300
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before


def test_a_nan_in_the_first_epoch_promises_nothing_and_leaves_nothing(tmp_path, mnist_idx, monkeypatch, invoke,
                                                                      one_clean_line, write, tiny_yaml):
    from vqgen.models import VQVAE

    real = VQVAE.forward
    monkeypatch.setattr(VQVAE, "forward", lambda self, x, y=None: {**real(self, x, y), "loss": real(self, x, y)["loss"] * float("nan")})
    r = invoke("train", "--dataset", mnist_idx, "--out", tmp_path / "runs", "--config",
               write(tmp_path, "c.yaml", tiny_yaml.vqvae))
    one_clean_line(r, 1, "no epoch had finished, so nothing was saved")
    assert "last good checkpoint" not in r.stderr and not any((tmp_path / "runs").iterdir())


def test_a_model_too_big_for_memory_is_refused_before_allocating(tmp_path, mnist_idx, invoke, one_clean_line, write):
    cfg = write(tmp_path, "big.yaml", "image_size: 512\nchannels: 3\nhidden_dims: [4096, 4096]\nlatent_dim: 8192\n")
    one_clean_line(invoke("train", "--model", "vae", "--dataset", mnist_idx, "--config", cfg, "--out",
                          tmp_path / "runs"), 2, "more than the")


def test_a_config_files_model_trains_and_a_model_flag_naming_another_is_refused(tmp_path, mnist_idx, invoke, write,
                                                                                   tiny_yaml, run_info, one_clean_line):
    cfg = write(tmp_path, "vae.yaml", "model: vae\n" + tiny_yaml.vae)
    out = tmp_path / "runs"
    r = invoke("train", "--dataset", mnist_idx, "--config", cfg, "--epochs", 1, "--out", out, "--name", "v")
    assert r.exit_code == 0, r.output
    assert run_info(out / "v")["model"] == "vae"
    one_clean_line(invoke("train", "--model", "vqvae", "--dataset", mnist_idx, "--config", cfg, "--out", out), 2,
                   f"Error: --model vqvae, but {cfg} says model: vae; drop one of them, or make them the same")
    one_clean_line(invoke("train", "--dataset", mnist_idx, "--out", out, "--config",
                          write(tmp_path, "gan.yaml", "model: gan\n" + tiny_yaml.vqvae)), 2,
                   f"Error: {tmp_path / 'gan.yaml'} says model: 'gan', which is not one of 'vqvae', ")
    assert sorted(p.name for p in out.iterdir()) == ["v"]   # the refusals wrote nothing


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, mnist_idx, precision, invoke, tiny, run_info):
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--precision", precision,
               "--out", tmp_path / "runs", "--name", precision)
    assert r.exit_code == 0, r.output
    assert f"in {precision}" in r.stderr
    meta = run_info(tmp_path / "runs" / precision)
    assert 0 < meta["metrics"]["test_mse"] < 0.2 and meta["config"]["train"]["precision"] == precision
    weights = load_file(str(tmp_path / "runs" / precision / "model.safetensors"))
    assert weights["quantizer.embed"].dtype == torch.float32    # the codebook stays in fp32


def test_compile_is_refused_clearly_when_it_cannot_work(tmp_path, mnist_idx, monkeypatch, invoke, tiny):
    import torch._dynamo

    def broken(*a, **k):
        raise torch._dynamo.exc.TorchDynamoException("no C++ compiler here")

    class Compiled(torch.nn.Module):   # what torch.compile returns: the model inside, as _orig_mod
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m
        forward = broken

    monkeypatch.setattr(torch, "compile", Compiled)
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--compile", "--out", tmp_path / "runs")
    assert r.exit_code == 1 and "torch.compile failed" in r.stderr and "train without --compile" in r.stderr


@pytest.mark.skipif(not os.environ.get("VQGEN_TEST_COMPILE"),
                    reason="a real torch.compile takes about 100 s on a 2-core CPU: set VQGEN_TEST_COMPILE=1")
def test_compile_trains_for_real(tmp_path, mnist_idx, invoke, tiny, run_info):
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--compile", "--out", tmp_path / "runs",
               "--name", "c")
    assert r.exit_code == 0, r.output
    assert run_info(tmp_path / "runs" / "c")["config"]["train"]["compile"] is True
