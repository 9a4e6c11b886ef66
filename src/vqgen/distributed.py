"""Training on several GPUs (or CPU processes) with torch.distributed.

`torchrun --nproc-per-node N -m vqgen train ...` starts N processes; each
finds its rank in the environment torchrun sets, joins the process group
(NCCL on GPUs, gloo on CPUs) and trains its share of each batch inside
DistributedDataParallel. `vqgen train --devices N` starts torchrun itself,
handing each process a plan file of the parsed settings (`launch`).

What stays one across ranks: the weights (DDP averages the gradients), the
codebook (the quantiser sums its statistics over ranks, see
models/quantizer.py), the data order and augmentation (every rank draws the
same random numbers and takes its slice of each batch). Only rank 0 writes
the run directory, shows progress and saves checkpoints. After each epoch,
every rank's weights and buffers are compared, and a difference is an error.

A model trained in several parameter groups (a generator and a discriminator)
takes one backward pass per group, which DistributedDataParallel cannot serve;
there the trainer averages each group's gradients itself (`average_gradients`)
and rank 0's buffers are broadcast before each step, as DDP would.

A stop signal (Ctrl-C, SIGTERM, SIGHUP) stops every rank at the same step: a
rank holds the signal back (interrupts.polled) and the ranks agree before each
step whether any received one (`agree_to_stop`, over gloo on the CPU); then
each stops there and rank 0 saves the state of that step. A rank stopped alone
in the middle of a step would leave the others waiting in its collectives.
`vqgen train --devices N` starts torchrun in a session of its own, so that a
stop reaches the launcher alone, which passes it on to each rank once.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from vqgen import interrupts
from vqgen.errors import RunError, UsageError

_control = None   # the gloo group that stop decisions travel over where the training's group is NCCL's


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1


def launched_world() -> int:
    """The number of processes torchrun started this one among (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank among those torchrun started (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def join(device_type: str) -> Ranks:
    """Join the process group torchrun set up, if any."""
    world = launched_world()
    if world == 1:
        return Ranks()
    if not dist.is_available():
        raise RunError("this PyTorch has no torch.distributed; train on one device")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(f"`devices` {world}: this machine has {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(local)
    global _control
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    _control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Ranks(dist.get_rank(), dist.get_world_size(), local)


def leave() -> None:
    global _control
    _control = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.many:
        dist.barrier()


def agree_to_stop(ranks: Ranks, signum: int) -> int:
    """The stop signal that any rank received (`signum` here; 0: none), the same answer on every rank.

    A collective: every rank calls it at the same point (before each step, after the data is loaded)."""
    if not ranks.many:
        return signum
    flag = torch.tensor([signum], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_control)
    return int(flag.item())


def fingerprint(module: torch.nn.Module) -> str:
    """A hash of every weight and buffer, to compare ranks."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ranks_agree(module: torch.nn.Module, ranks: Ranks) -> bool:
    """Whether every rank holds the same weights and buffers."""
    if not ranks.many:
        return True
    prints = [None] * ranks.world
    dist.all_gather_object(prints, fingerprint(module))
    return len(set(prints)) == 1


def broadcast_state(module: torch.nn.Module) -> None:
    """Rank 0's weights and buffers on every rank (what DistributedDataParallel does when it wraps a model)."""
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, 0)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers on every rank, before each forward pass as DistributedDataParallel does."""
    for t in module.buffers():
        dist.broadcast(t.data, 0)


def average_gradients(params: list[torch.nn.Parameter], ranks: Ranks) -> None:
    """Each gradient averaged over the ranks (DistributedDataParallel's reduction, for a model trained in
    several parameter groups, whose terms each take a backward pass of their own)."""
    for p in params:   # a parameter its term did not reach this step counts as a zero gradient, as in DDP:
        if p.grad is None:   # every rank then reduces tensors of the same size
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ranks.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def announce(folder: Path) -> None:
    """A training process that `launch` started says where it is (its stop signals come from the launcher)."""
    (Path(folder) / f"rank-{launched_rank()}.pid").write_text(str(os.getpid()))


def _announced(folder: Path) -> set[int]:
    pids = set()
    for p in Path(folder).glob("rank-*.pid"):
        try:
            pids.add(int(p.read_text()))
        except (OSError, ValueError):   # being written
            pass
    return pids


def _tell(folder: Path, signum: int, told: set[int]) -> set[int]:
    """Pass `signum` on to each training process that has announced itself and was not told yet; those told."""
    for pid in _announced(folder) - told:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
        told = told | {pid}
    return told


def launch(devices: int, plan: Path) -> tuple[int, int]:
    """Start `devices` processes through torchrun, each training as the plan file says (`vqgen train --plan`,
    which `vqgen.api.train_planned` serves); their exit code, and the stop signal passed on to them (0: none).

    Their stdout goes to stderr: the starting process's stdout holds only what it prints itself. torchrun runs
    in a session of its own, so that Ctrl-C at the terminal (or SIGHUP when it closes) reaches this process
    alone; it passes each stop signal on to every training process once, as each announces itself (`announce`).
    On Linux torchrun gets SIGTERM if this process ends first, and stops them.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", "vqgen", "train", "--plan", str(plan)]
    # Each process gets its share of the cores (torchrun would give each one thread, with a banner saying so).
    threads = str(max(1, (os.cpu_count() or 1) // devices))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    folder = Path(plan).parent
    with_parent = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
    proc = subprocess.Popen(cmd, stdout=2, env=env, start_new_session=True,
                            # torchrun gets SIGTERM when this process ends (Linux)
                            preexec_fn=interrupts.die_with_parent(signal.SIGTERM) if with_parent else None)
    stopped, told = 0, set()
    with interrupts.handled(), interrupts.on_exit_now(lambda signum: _tell(folder, signum, set())):
        while True:
            try:
                return (proc.wait(timeout=0.2) if stopped else proc.wait()), stopped   # then: watch for ranks
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM, SIGHUP: every rank stops, rank 0 saves
                stopped = interrupts.signal_of(e)
            told = _tell(folder, stopped, told)

