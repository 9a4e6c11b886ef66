"""Reading runs back: `vqgen eval`, `info`, `runs` (and its --clean) and `compare`; their tables fit 80 columns."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image


def test_eval_json_reports_every_epoch(trained, invoke):
    home, _, run = trained
    r = invoke("eval", "--json", cwd=home)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["model"] == "vqvae" and [e["epoch"] for e in report["epochs"]] == [1, 2]
    final = report["final"]
    assert 0 < final["test_mse"] < 0.2
    assert final["test_psnr"] == pytest.approx(10 * np.log10(1 / final["test_mse"]), rel=1e-3)
    assert 0 < final["train_usage"] <= 1
    assert "Using run runs/vqvae-mnist" in r.stderr


def test_eval_of_a_missing_run_names_it(tmp_path, invoke):
    r = invoke("eval", "--run", tmp_path / "runs" / "nope")
    assert r.exit_code == 2 and f"{tmp_path / 'runs' / 'nope'}: no such run directory" in r.stderr


def test_eval_and_runs_tables_fit_80_columns(records_home, monkeypatch, invoke):
    monkeypatch.setenv("COLUMNS", "80")
    for args in (["eval", "--run", "runs/vqvae-mnist"], ["eval", "--run", "runs/prior-mnist"], ["runs"]):
        r = invoke(*args, cwd=records_home)
        assert r.exit_code == 0, r.output
        assert "…" not in r.stdout and max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    r = invoke("eval", "--run", "runs/vqvae-mnist", cwd=records_home)
    assert "usage" in r.stdout and "100%" in r.stdout and "PSNR dB" in r.stdout
    wide = invoke("eval", "--run", "runs/vqvae-mnist", "--all", cwd=records_home)
    assert "train_vq" in wide.stdout


def test_info_describes_a_lone_weights_file(trained, tmp_path, invoke):
    home, _, run = trained
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run / "model.safetensors").read_bytes())
    r = invoke("info", lone, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["model"] == "vqvae" and info["epochs_done"] == 2 and info["parameters"] > 1000


def test_runs_lists_every_run_with_its_status(records_home, tmp_path, invoke):
    work = tmp_path / "w"
    shutil.copytree(records_home / "runs", work / "runs")
    (work / "runs" / "stopped").mkdir()
    shutil.copy(records_home / "runs" / "vqvae-mnist" / "config.yaml", work / "runs" / "stopped" / "config.yaml")
    r = invoke("runs", "--json", cwd=work)
    assert r.exit_code == 0, r.output
    rows = {row["run"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"vqvae-mnist", "vqvae-mnist-2", "prior-mnist", "stopped"}
    assert rows["vqvae-mnist"]["status"] == "finished" and rows["vqvae-mnist"]["epochs"] == 3
    assert rows["vqvae-mnist"]["best"]["figure"] == "MSE" and 0 < rows["vqvae-mnist"]["best"]["value"] < 0.1
    assert rows["prior-mnist"]["best"]["figure"] == "bits/code"
    assert rows["stopped"]["status"] == "no finished epoch" and rows["stopped"]["model"] == "VQ-VAE"
    r = invoke("runs", "--clean", "--yes", cwd=work)
    assert r.exit_code == 0 and "Removed 1 runs that never finished an epoch: stopped" in r.stderr
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["prior-mnist", "vqvae-mnist", "vqvae-mnist-2"]


def test_runs_clean_asks_first(records_home, tmp_path):
    from typer.testing import CliRunner

    from vqgen.cli import app

    (tmp_path / "runs" / "stopped").mkdir(parents=True)
    shutil.copy(records_home / "runs" / "vqvae-mnist" / "config.yaml", tmp_path / "runs" / "stopped")
    r = CliRunner().invoke(app, ["runs", "--clean", "--out", str(tmp_path / "runs")], input="n\n")
    assert "Remove 1 runs that never finished an epoch (stopped)?" in r.output and "Nothing removed" in r.output
    assert (tmp_path / "runs" / "stopped").exists()


def test_compare_draws_runs_together(records_home, tmp_path, invoke):
    r = invoke("compare", records_home / "runs" / "vqvae-mnist", records_home / "runs" / "vqvae-mnist-2", "--out",
               tmp_path / "c.png", "--json", cwd=records_home)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [row["run"] for row in report["runs"]] == ["vqvae-mnist", "vqvae-mnist-2"]
    assert report["runs"][0]["epoch"] == 3 and report["runs"][1]["epoch"] == 2
    assert Image.open(tmp_path / "c.png").size[0] >= 1000
    r = invoke("compare", records_home / "runs" / "nope", cwd=records_home)
    assert r.exit_code == 2 and "not a run with a finished epoch" in r.stderr
