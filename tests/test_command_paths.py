"""One path per command: commands go through the Python API, inference over tensors reads no files, the
torchrun relaunch passes a plan and learns the run from a file, and --quiet is passed, not kept."""

import json
import subprocess
from pathlib import Path

import pytest

import vqgen


def test_the_relaunch_passes_a_plan_and_learns_the_run_without_its_stdout(tmp_path, mnist_idx, monkeypatch,
                                                                           tiny_config):
    """torchrun is replaced by its first process run here: it reads the plan file it is given and prints a
    misleading last line on stdout, which the parent must not take for the run directory."""
    from vqgen import api, distributed

    started = []

    class FirstProcess:
        def __init__(self, cmd, **kwargs):
            started.append(cmd)
            assert kwargs.get("stdout") != subprocess.PIPE   # nothing of the processes' output is read
            self.plan = Path(cmd[cmd.index("--plan") + 1])

        def wait(self):
            api.train_planned(self.plan)
            print(tmp_path / "not-the-run")
            return 0

    monkeypatch.setattr(distributed.subprocess, "Popen", FirstProcess)
    result = vqgen.train(dataset=str(mnist_idx), config=tiny_config, epochs=1, lr=0.005, codebook_size=8,
                         device="cpu", out=tmp_path / "runs", name="planned", devices=2)
    assert result.run_dir == tmp_path / "runs" / "planned" and not result.interrupted
    assert result.metrics["epoch"] == 1
    assert result.metrics["test_mse"] == pytest.approx(vqgen.load(result).metrics()[-1]["test_mse"], rel=1e-5)
    (cmd,) = started
    assert cmd[-4:-1] == ["vqgen", "train", "--plan"]    # the plan, not the settings as flags
    assert not any(a.startswith("--") and a != "--plan" for a in cmd[cmd.index("vqgen"):])
    config = vqgen.load(result).config
    assert (config.train.epochs, config.train.lr, config.model_config.codebook_size) == (1, 0.005, 8)


def test_a_failed_relaunch_is_one_error(tmp_path, monkeypatch, mnist_idx):
    from vqgen import distributed
    from vqgen.errors import RunError

    class Fails:
        def __init__(self, cmd, **kwargs):
            pass

        def wait(self):
            return 1

    monkeypatch.setattr(distributed.subprocess, "Popen", Fails)
    try:
        vqgen.train(dataset=str(mnist_idx), epochs=1, out=tmp_path / "runs", devices=2)
    except RunError as e:
        assert "training in 2 processes failed (exit code 1)" in str(e)
    else:
        raise AssertionError("a relaunch that failed returned a result")


def test_quiet_belongs_to_one_invocation(records_home, invoke, tmp_path):
    """A command with -q, then one without the option in the same process: the second still says which run."""
    quiet = invoke("map", "-q", "--n", 10, "--out", tmp_path / "quiet.png", cwd=records_home)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    loud = invoke("eval", cwd=records_home)
    assert loud.exit_code == 0 and "Using run" in loud.stderr
    again = invoke("map", "--n", 10, "--out", tmp_path / "loud.png", cwd=records_home)
    assert again.exit_code == 0 and "Using run" in again.stderr


def test_the_command_line_leaves_other_typer_apps_as_they_are(invoke):
    """vqgen's help shows flags bare through its own command class; another app in the process keeps Typer's."""
    from typing import Optional

    import typer
    from typer.testing import CliRunner

    other = typer.Typer()

    @other.command()
    def hello(name: str, shout: bool = typer.Option(False, "--shout"), x: Optional[int] = None) -> None:
        pass

    assert "<bool>" not in invoke("eval", "--help").stdout
    shown = CliRunner().invoke(other, ["--help"], env={"COLUMNS": "100"}).stdout
    assert "<bool>" in shown and "{name}" in shown


def test_the_plan_of_a_relaunch_is_json_of_the_parsed_settings(tmp_path, monkeypatch, mnist_idx):
    from vqgen import distributed

    seen = {}

    class Reads:
        def __init__(self, cmd, **kwargs):
            seen.update(json.loads(Path(cmd[-1]).read_text()))

        def wait(self):
            return 2

    monkeypatch.setattr(distributed.subprocess, "Popen", Reads)
    try:
        vqgen.train("vqvae", str(mnist_idx), epochs=2, compile=True, rotation_trick=True, out=tmp_path, devices=3)
    except vqgen.RunError:
        pass
    assert seen["train"]["model"] == "vqvae" and seen["train"]["dataset"] == str(mnist_idx)
    assert seen["train"]["out"] == str(tmp_path) and seen["train"]["resume"] is None
    assert {k: v for k, v in seen["train"]["flags"].items() if v is not None} == \
        {"epochs": 2, "compile": True, "rotation_trick": True}
    assert seen["quiet"] is False and seen["result"].endswith("result.json")
