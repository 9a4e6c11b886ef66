"""Several processes through torch.distributed: one model trained (and resumed) as one process trains it, one
codebook across ranks, each rank its slice of the same global batches."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vqgen import data as D


def test_two_processes_train_one_model_like_one_process(tmp_path, mnist_idx, invoke, tiny, run_info):
    cfg = tiny(tmp_path)
    r = invoke("train", "--dataset", mnist_idx, "--config", cfg, "--epochs", 2, "--devices", 2, "--device", "cpu",
               "--out", tmp_path / "runs", "--name", "two")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "runs" / "two")
    two = run_info(tmp_path / "runs" / "two")
    assert two["epochs_done"] == 2
    weights = load_file(str(tmp_path / "runs" / "two" / "model.safetensors"))
    r = invoke("train", "--dataset", mnist_idx, "--config", cfg, "--epochs", 2, "--out", tmp_path / "runs",
               "--name", "one")
    assert r.exit_code == 0, r.output
    one = run_info(tmp_path / "runs" / "one")
    # The same global batches: the held-out error matches within noise.
    assert two["metrics"]["test_mse"] == pytest.approx(one["metrics"]["test_mse"], rel=0.15)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "runs" / "two" / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["info"])["processes"] == 2
    # Resume on two processes again.
    r = invoke("train", "--resume", tmp_path / "runs" / "two", "--epochs", 3, "--devices", 2)
    assert r.exit_code == 0, r.output
    assert run_info(tmp_path / "runs" / "two")["epochs_done"] == 3
    assert not torch.equal(load_file(str(tmp_path / "runs" / "two" / "model.safetensors"))["quantizer.embed"],
                           weights["quantizer.embed"])


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


def test_the_codebook_stays_one_across_ranks_and_a_difference_is_caught(tmp_path, free_port):
    mp.spawn(_codebook_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["agree"] and r1["agree"] and r0["disagree"] and r1["disagree"]
    assert not torch.equal(r0["embed"], r1["embed"])    # after the deliberate change only


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
