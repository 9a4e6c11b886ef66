"""Training in several parameter groups: a generator and a discriminator, each with its own optimizer and loss.

A toy adversarial autoencoder, registered from here, trains end to end through vqgen's own trainer:
each group's loss moves, a group does not move before its start step, a run stopped mid-epoch and
resumed ends bit-exact with one that never stopped, and two gloo processes agree.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
import vqgen
from vqgen import data as D
from vqgen import runs
from vqgen.models.base import Autoencoder, ParameterGroup
from vqgen.models.registry import ModelSpec, register, unregister
from vqgen.settings import at_least, between, setting, validate
from vqgen.trainer import Optimization, Trainer


@dataclass
class DuelConfig:
    image_size: int = setting(28, "height = width", at_least(4, 256))
    channels: int = setting(1, "1 or 3", at_least(1, 3))
    disc_start: int = setting(0, "step from which the discriminator trains and weighs in", at_least(0, 10**9))
    disc_lr: float = setting(0.002, "the discriminator's learning rate", between(0.0, 1.0))

    def __post_init__(self):
        validate(self)


class Duel(Autoencoder):
    """A tiny autoencoder and a tiny patch discriminator, trained against each other (hinge loss)."""

    def __init__(self, cfg: DuelConfig):
        super().__init__()
        self.cfg = cfg
        self.enc = nn.Conv2d(cfg.channels, 4, 4, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(4, cfg.channels, 4, stride=2, padding=1)
        self.disc = nn.Sequential(nn.Conv2d(cfg.channels, 4, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(4, 1, 3, padding=1))
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=False)

    def parameter_groups(self):
        gen = [*self.enc.parameters(), *self.dec.parameters()]
        return [ParameterGroup("generator", gen, loss="loss"),
                ParameterGroup("discriminator", list(self.disc.parameters()), loss="d_loss", lr=self.cfg.disc_lr,
                               betas=(0.5, 0.9), start_step=self.cfg.disc_start)]

    def begin_step(self, step: int, total_steps: int) -> None:
        self.step.fill_(step)

    def forward(self, x, y=None):
        rec = self.decode(self.encode(x))
        mse = F.mse_loss(rec, x)
        on = (self.step >= self.cfg.disc_start).float()
        g_adv = -self.disc(rec).mean()
        d_loss = F.relu(1 - self.disc(x)).mean() + F.relu(1 + self.disc(rec.detach())).mean()
        return {"loss": mse + 0.1 * on * g_adv, "d_loss": d_loss, "mse": mse.detach(), "g_adv": g_adv.detach()}

    def encode(self, x, space=None):
        return self.enc(x)

    def decode(self, z, space=None):
        return torch.sigmoid(self.dec(z))


def _register():
    register(ModelSpec(name="duel", display_name="duel", model_class=Duel, config_class=DuelConfig,
                       defaults=lambda shape: ({"epochs": 2, "batch_size": 16, "lr": 0.01},
                                               {"image_size": shape.size, "channels": shape.channels}),
                       pictures=lambda model, ctx: [], operations=frozenset({"reconstruct"})))


@pytest.fixture
def duel():
    _register()
    yield "duel"
    unregister("duel")


def _batches(n=64, batch=16, seed=0):
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)).mul(255).to(torch.uint8)
    return D.Batches(x, None, batch, generator=torch.Generator().manual_seed(seed))


def test_each_group_trains_on_its_own_loss_into_its_own_parameters_from_its_start_step():
    torch.manual_seed(0)
    model = Duel(DuelConfig(disc_start=3))
    groups = model.parameter_groups()
    opts = [Optimization(torch.optim.Adam(g.params, lr=g.lr or 0.01, betas=g.betas), g.loss, g.start_step,
                         name=g.name) for g in groups]
    batches = _batches()
    seen = []
    trainer = Trainer(model, opts, batches, epochs=2,
                      before_step=lambda: seen.append(([p.detach().clone() for p in groups[0].params],
                                                       [p.detach().clone() for p in groups[1].params])))
    trainer.run()
    assert len(seen) == 2 * len(batches) == 8
    # The discriminator did not move in steps 0-2 (its start step is 3), and moved from step 3 on.
    for i in (1, 2, 3):
        assert all(torch.equal(a, b) for a, b in zip(seen[0][1], seen[i][1])), i
    assert not all(torch.equal(a, b) for a, b in zip(seen[3][1], seen[4][1]))
    # The generator moved from the first step.
    assert not all(torch.equal(a, b) for a, b in zip(seen[0][0], seen[1][0]))
    # Its own settings: the discriminator's optimizer has its lr and betas.
    assert opts[1].optimizer.param_groups[0]["lr"] == 0.002 and opts[1].optimizer.param_groups[0]["betas"] == (0.5, 0.9)


def test_a_group_loss_reaches_only_its_own_parameters():
    """The generator's adversarial term flows through the discriminator, but must not move it, and the
    discriminator's loss must not reach the generator: each group's gradient is that of its own loss alone."""
    torch.manual_seed(0)
    model = Duel(DuelConfig())
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    gen, disc = (g.params for g in model.parameter_groups())
    out = model(x)
    g_only = torch.autograd.grad(out["loss"], gen, retain_graph=True)
    d_only = torch.autograd.grad(out["d_loss"], disc)
    opts = [Optimization(torch.optim.SGD(g.params, lr=0.0), g.loss, name=g.name) for g in model.parameter_groups()]
    Trainer(model, opts, _batches(n=16), epochs=1).optimize(model(x))
    assert all(torch.equal(p.grad, g) for p, g in zip(gen, g_only))
    assert all(torch.equal(p.grad, g) for p, g in zip(disc, d_only))


def test_a_two_group_model_trains_end_to_end_and_resumes_mid_epoch_bit_exact(duel, tmp_path, mnist_idx, monkeypatch,
                                                                              invoke, interrupt_at):
    common = ["--model", duel, "--dataset", mnist_idx, "--epochs", 3, "--out", tmp_path / "runs"]
    r = invoke("train", *common, "--name", "straight", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    straight = tmp_path / "runs" / "straight"
    rows = runs.read_metrics(straight / "metrics.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    # Each group's loss moves from epoch to epoch, and both show in the record and the live figures.
    assert rows[0]["train_loss"] != rows[-1]["train_loss"] and rows[0]["train_d_loss"] != rows[-1]["train_d_loss"]
    assert "test_d_loss" in rows[-1]
    state = torch.load(straight / "resume.pt", weights_only=True)
    assert set(state["optimizers"]) == {"generator", "discriminator"} and "optimizer" not in state

    with monkeypatch.context() as m:
        interrupt_at(m, epoch=2, step=7)
        r = invoke("train", *common, "--name", "cut", cwd=tmp_path)
    assert r.exit_code == 130, r.output
    cut = tmp_path / "runs" / "cut"
    saved = torch.load(cut / "interrupted.pt", weights_only=True)
    assert saved["step"] == 7 and set(saved["optimizers"]) == {"generator", "discriminator"}
    r = invoke("train", "--resume", cut, cwd=tmp_path)
    assert r.exit_code == 0, r.output
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # as if it had never stopped


def test_a_one_group_run_keeps_the_resume_format_of_0_3(tmp_path, mnist_idx, tiny_config):
    result = vqgen.train(dataset=str(mnist_idx), config=tiny_config, out=tmp_path / "runs")
    state = torch.load(result.run_dir / "resume.pt", weights_only=True)
    assert "optimizer" in state and "optimizers" not in state and "state" in state["optimizer"]


def test_groups_that_share_or_leave_out_parameters_are_refused(duel, tmp_path, mnist_idx, monkeypatch, invoke):
    monkeypatch.setattr(Duel, "parameter_groups", lambda self: [ParameterGroup("generator", list(self.enc.parameters()))])
    r = invoke("train", "--model", duel, "--dataset", mnist_idx, "--epochs", 1, "--out", tmp_path / "runs", cwd=tmp_path)
    assert r.exit_code == 1 and "leave 6 parameters out" in r.output, r.output


def _duel_worker(rank: int, world: int, port: int, dataset: str, out: str, cache: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), VQGEN_CACHE=cache, OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    _register()
    from vqgen import training
    from vqgen.progress import TrainProgress

    result = training.train("duel", dataset, flags={"epochs": 2, "device": "cpu"}, out=out, name="two",
                            progress=TrainProgress(quiet=True))
    torch.save({"run_dir": str(result.run_dir)}, f"{out}/rank{rank}.pt")


def test_two_gloo_processes_train_a_two_group_model_and_agree(duel, tmp_path, mnist_idx, invoke, free_port):
    out = tmp_path / "runs"
    out.mkdir()
    # The trainer compares every rank's weights and buffers after each epoch and fails on a difference.
    mp.spawn(_duel_worker, args=(2, free_port(), str(mnist_idx), str(out), str(tmp_path / "cache")), nprocs=2,
             join=True)
    assert torch.load(out / "rank0.pt", weights_only=True)["run_dir"] == str(out / "two")
    assert (out / "rank1.pt").is_file()   # rank 1 finished too, its weights equal to rank 0's after each epoch
    rows = runs.read_metrics(out / "two" / "metrics.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    info = json.loads(invoke("info", out / "two", "--json", cwd=tmp_path).stdout)
    assert info["epochs_done"] == 2
    state = torch.load(out / "two" / "resume.pt", weights_only=True)
    assert set(state["optimizers"]) == {"generator", "discriminator"}


def test_training_sets_cudnn_benchmark_for_its_own_call_only():
    from vqgen.training import cudnn_benchmark

    torch.backends.cudnn.benchmark = False
    with cudnn_benchmark(True):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False
    with cudnn_benchmark(False):
        assert torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = True   # a user's own choice is kept
    with cudnn_benchmark(False):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is True
    torch.backends.cudnn.benchmark = False
