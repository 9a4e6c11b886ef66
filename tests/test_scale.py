"""Scale: several processes through torch.distributed, memory-mapped data, mixed precision, GPU defaults."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from conftest import TINY_VQVAE
from test_cli import invoke
from vqgen import data as D
from vqgen import models


def tiny(tmp_path, extra: str = "") -> str:
    (tmp_path / "tiny.yaml").write_text(TINY_VQVAE + extra)
    return str(tmp_path / "tiny.yaml")


def info(run) -> dict:
    return json.loads(invoke("info", run, "--json").stdout)


# --------------------------------------------------------------------------- several processes


def test_two_processes_train_one_model_like_one_process(tmp_path, mnist_idx):
    cfg = tiny(tmp_path)
    r = invoke("train", "--dataset", mnist_idx, "--config", cfg, "--epochs", 2, "--devices", 2, "--device", "cpu",
               "--out", tmp_path / "runs", "--name", "two")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "runs" / "two")
    two = info(tmp_path / "runs" / "two")
    assert two["epochs_done"] == 2
    weights = load_file(str(tmp_path / "runs" / "two" / "model.safetensors"))
    r = invoke("train", "--dataset", mnist_idx, "--config", cfg, "--epochs", 2, "--out", tmp_path / "runs",
               "--name", "one")
    assert r.exit_code == 0, r.output
    one = info(tmp_path / "runs" / "one")
    # The same global batches: the held-out error matches within noise.
    assert two["metrics"]["test_mse"] == pytest.approx(one["metrics"]["test_mse"], rel=0.15)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "runs" / "two" / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["info"])["processes"] == 2
    # Resume on two processes again.
    r = invoke("train", "--resume", tmp_path / "runs" / "two", "--epochs", 3, "--devices", 2)
    assert r.exit_code == 0, r.output
    assert info(tmp_path / "runs" / "two")["epochs_done"] == 3
    assert not torch.equal(load_file(str(tmp_path / "runs" / "two" / "model.safetensors"))["quantizer.embed"],
                           weights["quantizer.embed"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _codebook_worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from vqgen import distributed
        from vqgen.models.quantizer import VectorQuantizer

        torch.manual_seed(0)   # the same start on every rank, as torchrun's processes have
        vq = VectorQuantizer(codebook_size=16, dim=2, kmeans_init=True, dead_code_threshold=1.0).train()
        data = torch.Generator().manual_seed(100 + rank)   # each rank sees other data
        for _ in range(20):
            vq(torch.randn(4, 2, 5, 5, generator=data) * (1 + rank))
        agree = distributed.ranks_agree(vq, distributed.Ranks(rank, world))
        if rank == 1:
            vq.embed.data[0, 0] += 1.0
        disagree = not distributed.ranks_agree(vq, distributed.Ranks(rank, world))
        torch.save({"agree": agree, "disagree": disagree, "embed": vq.embed.clone()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_the_codebook_stays_one_across_ranks_and_a_difference_is_caught(tmp_path):
    mp.spawn(_codebook_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["agree"] and r1["agree"] and r0["disagree"] and r1["disagree"]
    assert not torch.equal(r0["embed"], r1["embed"])    # after the deliberate change only


@pytest.mark.parametrize("counted", [True, False])
def test_dead_codes_restart_at_batch_rows_and_live_codes_stay(counted, monkeypatch):
    """Both ways of restarting (counted on the CPU, masked as on a GPU) move only the dead codes, onto rows
    of the batch."""
    from vqgen.models.quantizer import VectorQuantizer

    monkeypatch.setattr(VectorQuantizer, "count_dead_on_cpu", counted)
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=8, dim=2, kmeans_init=False, dead_code_threshold=1.0).train()
    vq.cluster_size.copy_(torch.tensor([5.0, 0.1, 5.0, 0.2, 5.0, 5.0, 5.0, 0.3]))
    dead = vq.cluster_size < 1.0
    before = vq.embed.clone()
    flat = torch.randn(50, 2)
    vq._restart_dead_codes(flat)
    assert torch.equal(vq.embed[~dead], before[~dead])
    for code in vq.embed[dead]:
        assert (flat == code).all(1).any()                  # each restarted code is a row of the batch
    assert (vq.cluster_size[dead] == 1.0).all()
    assert torch.allclose(vq.embed_sum[dead], vq.embed[dead])   # threshold 1: sum = code x 1


def test_each_rank_takes_its_slice_of_the_same_global_batches():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 4, 4).contiguous()
    labels = torch.arange(40)

    def batches(rank, world):
        b = D.Batches(images, labels, 8, augment=True, generator=torch.Generator().manual_seed(3), rank=rank,
                      world=world)
        return list(b)
    single = batches(0, 1)
    shards = [batches(r, 2) for r in (0, 1)]
    assert len(single) == len(shards[0]) == len(shards[1]) == 5
    for whole, a, b in zip(single, *shards):
        assert sorted(a[1].tolist() + b[1].tolist()) == sorted(whole[1].tolist())
        merged = torch.empty_like(whole[0])
        merged[0::2], merged[1::2] = a[0], b[0]
        assert torch.allclose(merged, whole[0])   # the same images, flipped and turned the same way


# --------------------------------------------------------------------------- data larger than memory


def test_memory_mapped_data_trains_exactly_like_data_in_memory(tmp_path, mnist_idx):
    mapped = D.load_images(str(mnist_idx), 28, 1, in_memory=False)
    held = D.load_images(str(mnist_idx), 28, 1, in_memory=True)
    assert mapped.mapped and not held.mapped and torch.equal(mapped.train_images, held.train_images)
    for setting in ("yes", "no"):
        r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path, f"data_in_memory: {setting}\naugment: true\n"),
                   "--out", tmp_path / "runs", "--name", setting)
        assert r.exit_code == 0, r.output
    assert "memory-mapped cache" in r.stderr
    a, b = (load_file(str(tmp_path / "runs" / n / "model.safetensors")) for n in ("yes", "no"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("chunk", [256, 2])
def test_parallel_decoding_gives_the_same_images(tmp_path, face_folder, monkeypatch, chunk):
    # chunk 2: 13 chunks through 4 shared slots and one reused buffer, each slot and the buffer reused
    monkeypatch.setattr(D, "CHUNK", chunk)
    serial = D.load_images(str(face_folder), 32, 3, use_cache=False, workers=0)
    parallel = D.load_images(str(face_folder), 32, 3, use_cache=False, workers=2)
    for split in ("train_images", "test_images"):
        assert torch.equal(getattr(serial, split), getattr(parallel, split))
    assert parallel.skipped == serial.skipped == 1 and parallel.converted == serial.converted == 3
    one_by_one = torch.cat([D.load_image_file(p, 32, 3) for p in sorted(face_folder.glob("face_*.png"))])
    together = torch.cat([serial.train_images, serial.test_images]).float().div(255)
    assert sorted(map(tuple, together.flatten(1).tolist())) == sorted(map(tuple, one_by_one.flatten(1).tolist()))
    seen = []
    D.load_images(str(face_folder), 32, 3, use_cache=False, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (25, 25)


# --------------------------------------------------------------------------- precision and GPU defaults


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, mnist_idx, precision):
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--precision", precision,
               "--out", tmp_path / "runs", "--name", precision)
    assert r.exit_code == 0, r.output
    assert f"in {precision}" in r.stderr
    meta = info(tmp_path / "runs" / precision)
    assert 0 < meta["metrics"]["test_mse"] < 0.2 and meta["config"]["train"]["precision"] == precision
    weights = load_file(str(tmp_path / "runs" / precision / "model.safetensors"))
    assert weights["quantizer.embed"].dtype == torch.float32    # the codebook stays in fp32


def test_gpu_defaults_are_recorded_and_flags_win():
    from vqgen.config import resolve_config

    shape = models.ImageShape(28, 1)
    gpu = resolve_config("vqvae", shape, device_type="cuda")
    cpu = resolve_config("vqvae", shape, device_type="cpu")
    spec = models.get("vqvae")
    assert spec.gpu_defaults and gpu.train.batch_size == spec.gpu_defaults["batch_size"] != cpu.train.batch_size
    assert resolve_config("vqvae", shape, device_type="cuda", flags={"batch_size": 32}).train.batch_size == 32
    prior = resolve_config("prior", models.CodeShape(16, 7, 10), device_type="cuda")
    assert prior.train.batch_size == models.get("prior").gpu_defaults["batch_size"]


def test_compile_is_refused_clearly_when_it_cannot_work(tmp_path, mnist_idx, monkeypatch):
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
def test_compile_trains_for_real(tmp_path, mnist_idx):
    r = invoke("train", "--dataset", mnist_idx, "--config", tiny(tmp_path), "--compile", "--out", tmp_path / "runs",
               "--name", "c")
    assert r.exit_code == 0, r.output
    assert info(tmp_path / "runs" / "c")["config"]["train"]["compile"] is True
