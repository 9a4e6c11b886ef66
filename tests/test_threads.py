"""CPU threads for training: the cores other programs leave free, read from (fake) /proc files, looked at
again as training goes; a fixed count from --threads or OMP_NUM_THREADS."""

from __future__ import annotations

import pytest
import torch
import yaml

from vqgen import threads as T

HZ_PER_LOOK = 100    # ticks of one core between two looks in these fakes


class FakeProc:
    """A /proc with two CPUs whose busy ticks the test advances: `others` cores busy with other programs and
    `own` cores busy with this process, per look."""

    def __init__(self, root):
        self.root, self.ticks, self.own_ticks = root, [0, 0], 0
        (root / "self").mkdir(parents=True)
        self.write()

    def advance(self, others: float, own: float = 0.0) -> None:
        busy = (others + own) * HZ_PER_LOOK
        self.ticks = [self.ticks[0] + busy / 2, self.ticks[1] + busy / 2]
        self.idle = getattr(self, "idle", 0) + 2 * HZ_PER_LOOK - busy
        self.own_ticks += own * HZ_PER_LOOK
        self.write()

    def write(self) -> None:
        idle = int(getattr(self, "idle", 0) / 2)
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} {int(t)} 0 0 {idle} 0 0 0 0 0 0"
                                                for i, t in enumerate(self.ticks)]
        (self.root / "stat").write_text("\n".join(lines) + "\nintr 0\n")
        own = int(self.own_ticks)
        (self.root / "self" / "stat").write_text(f"4242 (python (a) b) R 1 1 1 0 -1 0 0 0 0 0 {own} 0 0 0 20 0\n")


@pytest.fixture
def proc(tmp_path, monkeypatch):
    fake = FakeProc(tmp_path / "proc")
    monkeypatch.setattr(T, "PROC", fake.root)
    monkeypatch.setenv("VQGEN_CGROUP_ROOT", str(tmp_path / "no-cgroup"))
    monkeypatch.setattr(T, "affinity", lambda: [0, 1])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield fake
    torch.set_num_threads(before)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def choose(proc, others: float, setting: int = 0):
    said, clock = [], Clock()
    th = T.Threads(setting, said.append, clock=clock, sleep=lambda s: proc.advance(others))
    th.start()
    return th, said, clock


def test_alone_takes_every_core(proc):
    th, said, _ = choose(proc, others=0.0)
    assert th.count == 2 and torch.get_num_threads() == 2 and th.adaptive
    assert said == ["CPU threads: 2 (all 2 cores free; --threads N to choose)"]


def test_a_busy_core_is_left_to_the_other_program(proc):
    th, said, _ = choose(proc, others=1.9)
    assert th.count == 1 and torch.get_num_threads() == 1
    assert said == ["CPU threads: 1 (1.9 of 2 cores busy elsewhere; --threads N to choose)"]


def test_own_time_is_not_counted_as_another_programs(proc):
    said, clock = [], Clock()
    th = T.Threads(0, said.append, clock=clock, sleep=lambda s: proc.advance(others=0.1, own=1.8))
    th.start()
    assert th.count == 2


def test_revisit_gives_a_core_back_and_takes_it_again(proc):
    th, said, clock = choose(proc, others=0.0)
    proc.advance(others=1.0, own=1.0)          # a second training starts
    clock.now += 1.0
    th.revisit()                               # too soon after the last look: nothing read
    assert th.count == 2
    clock.now += T.EVERY_S
    th.revisit()                               # one look asks for 1: not yet
    assert th.count == 2
    proc.advance(others=1.0, own=1.0)
    clock.now += T.EVERY_S
    th.revisit()                               # the second look in a row agrees
    assert th.count == 1 and torch.get_num_threads() == 1
    assert said[-1] == "CPU threads: 1 (was 2: other programs use the CPU)"
    for _ in range(T.AGREE):                   # the other training ends
        proc.advance(others=0.0, own=1.0)
        clock.now += T.EVERY_S
        th.revisit()
    assert th.count == 2 and said[-1] == "CPU threads: 2 (was 1: the CPU is free again)"


def test_a_passing_burst_changes_nothing(proc):
    th, said, clock = choose(proc, others=0.0)
    for others in (1.5, 0.0, 1.5, 0.0):
        proc.advance(others=others, own=2.0 - others)
        clock.now += T.EVERY_S
        th.revisit()
    assert th.count == 2 and len(said) == 1


def test_a_fixed_count_is_kept(proc, monkeypatch):
    th, said, clock = choose(proc, others=1.9, setting=2)
    assert th.count == 2 and not th.adaptive and said == ["CPU threads: 2 (--threads)"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    th, said, clock = choose(proc, others=0.0)
    assert th.count == 1 and said == ["CPU threads: 1 (OMP_NUM_THREADS)"]


def test_no_proc_leaves_pytorchs_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "PROC", tmp_path / "nothing")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    said = []
    th = T.Threads(0, said.append, sleep=lambda s: None)
    assert th.start() == torch.get_num_threads() and said == [] and not th.adaptive


@pytest.mark.parametrize("files, cores", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n", "job/cpu.max": "300000 100000\n", "job/step/cpu.max": "max 100000\n"}, 3.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),
])
def test_a_containers_cpu_quota(tmp_path, monkeypatch, files, cores):
    """Read in this process's cgroup and each one above it (a SLURM step under its job), v2 or v1."""
    from vqgen import memory

    root = tmp_path / "cg"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "self-cgroup").write_text("0::/job/step\n")
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "self-cgroup")
    monkeypatch.setenv("VQGEN_CGROUP_ROOT", str(root))
    assert T.cpu_quota() == cores


def test_quota_caps_the_threads(proc, tmp_path, monkeypatch):
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "cpu.max").write_text("100000 100000\n")
    monkeypatch.setenv("VQGEN_CGROUP_ROOT", str(tmp_path / "cg"))
    th, said, _ = choose(proc, others=0.0)
    assert th.count == 1 and said == ["CPU threads: 1 (the core free; --threads N to choose)"]


def test_threads_flag_trains_and_is_recorded(tmp_path, mnist_idx, tiny_config, invoke, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--threads", 1,
                   "--out", tmp_path / "runs")
    finally:
        torch.set_num_threads(before)
    assert r.exit_code == 0, r.output
    assert "CPU threads: 1 (--threads)" in r.stderr
    [config] = (tmp_path / "runs").glob("*/config.yaml")
    cfg = yaml.safe_load(config.read_text())
    assert cfg["train"]["threads"] == 1


def test_bad_threads_is_one_line(tmp_path, mnist_idx, tiny_config, invoke, one_clean_line):
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny_config, "--threads", -1, "--out", tmp_path)
    one_clean_line(r, 2, "threads")
