"""The ready-trained MNIST models shipped inside the package: normal runs with a card, used when there is no
run of your own (saying so in one line), named `ready:NAME`, never written into."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import vqgen
from vqgen import runs
from vqgen.errors import UsageError

VQ, PRIOR = "vqvae-mnist", "prior-vqvae-mnist"
SHIPPED = {"model.safetensors", "config.yaml", "metrics.csv", "MODEL_CARD.md"}
USING = "Using the ready-trained VQ-VAE ready:vqvae-mnist; train your own: vqgen train"


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    """One vqgen cache for the module: the packaged MNIST is decoded once, not once per test."""
    return tmp_path_factory.mktemp("mnist-cache")


@pytest.fixture
def ready(tmp_path, monkeypatch, mnist_cache):
    """A read-only copy of the shipped runs in place of the package's (and its file listing, to compare: root
    may write into a read-only folder, so the test also checks that nothing there changed)."""
    monkeypatch.setenv("VQGEN_CACHE", str(mnist_cache))
    copy = Path(shutil.copytree(runs.READY_DIR, tmp_path / "site-packages" / "ready"))
    for p in [copy, *copy.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    monkeypatch.setattr(runs, "READY_DIR", copy)
    before = snapshot(copy)
    yield copy
    assert snapshot(copy) == before, "a command wrote into the ready-trained runs"
    for p in [copy, *copy.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_the_shipped_runs_are_normal_runs_with_a_card_and_their_figures():
    for name in (VQ, PRIOR):
        folder = runs.READY_DIR / name
        files = {p.name for p in folder.iterdir()}
        assert SHIPPED <= files <= SHIPPED | {"scores.json"}, name   # no resume state, events or pictures
        summary = runs.summarize(folder)
        assert summary.finished and summary.usable
        card = (folder / "MODEL_CARD.md").read_text()
        for part in ("## Figures", "## Data", "CC BY-SA 3.0", "## How it was made", "benchmarks/ready_trained.py",
                     "## Settings"):
            assert part in card, (name, part)
    vq, prior = vqgen.load(f"ready:{VQ}"), vqgen.load(f"ready:{PRIOR}")
    assert (vq.config.train.dataset, vq.config.source) == ("mnist", "vqgen:mnist")   # the copy in the package
    assert vq.metrics()[-1]["test_mse"] <= 0.0020
    assert prior.config.parent["run"] == f"ready:{VQ}"                 # found wherever vqgen is installed
    assert runs.load_parent(prior.config).run_dir == runs.READY_DIR / VQ   # and its codes are the VQ-VAE's
    assert sum(p.stat().st_size for p in runs.READY_DIR.rglob("*") if p.is_file()) < 1_500_000


def test_every_command_uses_the_ready_trained_model_when_there_is_none_and_writes_elsewhere(ready, tmp_path,
                                                                                          invoke):
    work = tmp_path / "empty"
    work.mkdir()
    made = {
        ("gif", "4", "9", "--steps", 6): "runs/ready-trained/morph_4_to_9.gif",
        ("interpolate", "4", "9", "--steps", 5): "runs/ready-trained/interp_4_to_9.png",
        ("reconstruct", "--n", 4): "runs/ready-trained/reconstruction_n4.png",
        ("sample", "--digit", 7, "--n", 4): "runs/ready-trained/samples_digit-7_n4.png",
        ("map", "--n", 100): "runs/ready-trained/map.png",
    }
    for args, path in made.items():
        r = invoke(*args, cwd=work)
        assert r.exit_code == 0, (args, r.output)
        assert r.stdout.strip() == path and (work / path).is_file(), args
        assert r.stderr.count("ready-trained") == 1 and USING in r.stderr.splitlines(), (args, r.stderr)
    gif = Image.open(work / made[("gif", "4", "9", "--steps", 6)])
    assert gif.n_frames >= 6
    r = invoke("eval", cwd=work)
    assert r.exit_code == 0 and USING in r.stderr and "ready:vqvae-mnist (VQ-VAE)" in r.stdout
    r = invoke("info", cwd=work)
    assert r.exit_code == 0 and USING in r.stderr and "ready:vqvae-mnist" in r.stdout
    assert "How it was made" in r.stdout and "mnist (vqgen:mnist)" in r.stdout      # the card, and the data
    r = invoke("info", "ready:prior-vqvae-mnist", cwd=work)
    assert r.exit_code == 0 and "trained on the codes of" in r.stdout and "ready:vqvae-mnist" in r.stdout
    assert {p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()} == set(made.values())


def test_the_ready_trained_morph_is_clean(ready):
    model = vqgen.load(f"ready:{VQ}")
    frames = model.interpolate("4", "9", steps=8)
    four, nine = model.reconstruct(torch.cat([model.endpoint("4"), model.endpoint("9")]))

    def dist(a, b):
        return float(((a - b) ** 2).mean())

    assert dist(frames[0], four) < 1e-4 and dist(frames[-1], nine) < 1e-4     # from the 4 to the 9
    to_nine = [dist(f, nine) for f in frames]
    assert to_nine[0] > to_nine[3] > to_nine[6] > to_nine[7]                    # nearer the 9 step by step
    assert all(0 <= float(f.min()) and float(f.max()) <= 1 for f in frames)


def test_a_run_of_your_own_wins_and_ready_names_the_shipped_one(ready, home, writable, invoke):
    mine = writable(home)
    r = invoke("interpolate", "4", "9", "--steps", 3, cwd=mine)
    assert r.exit_code == 0, r.output
    assert "Using run runs/" in r.stderr and "ready" not in r.output
    assert Path(r.stdout.strip()).parent.parent == Path("runs")               # beside the run of your own
    r = invoke("gif", "4", "9", "--steps", 3, "--run", f"ready:{VQ}", cwd=mine)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "runs/ready-trained/morph_4_to_9.gif" and "Using" not in r.stderr
    r = invoke("gif", "4", "9", "--run", "ready:vqvae", cwd=mine)
    assert r.exit_code == 2
    assert "ready:vqvae: no such ready-trained run (vqgen ships: ready:prior-vqvae-mnist, ready:vqvae-mnist)" \
        in r.stderr


def test_the_python_api_loads_the_ready_trained_models_the_same_way(ready, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    said = []
    model = vqgen.load(log=said.append)
    assert model.run_dir == ready / VQ and said == [USING]
    assert "from ready:vqvae-mnist" in repr(model)
    assert model.sampler_run == ready / PRIOR
    assert tuple(vqgen.load(f"ready:{PRIOR}").sample(4, digit=7, seed=0).shape) == (4, 1, 28, 28)
    with pytest.raises(UsageError, match="no such ready-trained run"):
        vqgen.load("ready:nope")


def test_the_demo_opens_on_the_ready_trained_model_only_when_runs_is_empty(ready, home, tmp_path):
    from vqgen.demo import Page

    empty = Page(tmp_path / "runs")
    assert empty.default_run() == str(ready / VQ)
    assert (f"ready:{VQ}  (ready-trained vqvae)", str(ready / VQ)) in empty.run_choices()
    assert "VQ-VAE" in empty.describe(empty.default_run())
    own = Page(home / "runs")
    assert Path(own.default_run()).parent == home / "runs"
    assert own.run_choices()[-1][0].startswith("ready:")        # offered after your own runs


def test_a_prior_trains_on_the_ready_trained_vq_vae_when_there_is_none(ready, tmp_path):
    from vqgen import planning

    said = []
    plan = planning.plan_new("prior", None, None, {}, None, tmp_path / "runs", said.append)
    assert plan.parent.run_dir == ready / VQ and plan.config.parent["run"] == f"ready:{VQ}"
    assert said == ["Prior for the VQ-VAE run ready:vqvae-mnist"]
