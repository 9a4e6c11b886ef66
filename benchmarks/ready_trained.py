"""Make the ready-trained MNIST models that ship inside vqgen (src/vqgen/resources/ready/), from scratch.

It runs vqgen's own commands, as a user would, on the MNIST inside the package (no network):

    vqgen train --out OUT                                                # the default VQ-VAE: runs/vqvae-mnist
    vqgen train --model prior --run OUT/vqvae-mnist --out OUT --name prior-vqvae-mnist

then checks the figures: the VQ-VAE's test MSE is at most 0.0020, and the digit reader (vqgen.score, shipped
in the package; else the classifier of benchmarks/prior_quality.py) reads at least 90% of the prior's samples
(100 per digit, its default temperature and guidance, seed = digit) as the digit asked. It writes each run's
model card (MODEL_CARD.md: data, settings, figures, how it was made, which `vqgen info` shows) and copies
only what a run needs to load, sample and show its figures into the package: model.safetensors,
config.yaml, metrics.csv and the card (no resume state, TensorBoard events or pictures). The prior
records its parent as `ready:vqvae-mnist`, so it finds it wherever vqgen is installed.

    python benchmarks/ready_trained.py                  # trains both (about 3-4 minutes on a 2-core CPU)
    python benchmarks/ready_trained.py --check-only     # the figures of the runs shipped now, trains nothing
    python benchmarks/ready_trained.py --runs DIR       # package DIR/vqvae-mnist and DIR/prior-vqvae-mnist

Training is seeded (`--seed 0`, the default), so on a CPU the same vqgen gives the same weights.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vqgen
from vqgen import runs

MAX_MSE = 0.0020
MIN_READ = 0.90          # share of the prior's samples read as the digit asked
PER_DIGIT = 100
VQ, PRIOR = "vqvae-mnist", "prior-vqvae-mnist"
SHIPPED = ("model.safetensors", "config.yaml", "metrics.csv")


def vqgen_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vqgen", *args]


def timed(cmd: list[str]) -> float:
    print("$ vqgen " + " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def reader():
    """How samples are read: vqgen's digit reader where it is shipped, else the benchmark's classifier."""
    try:
        from vqgen.score import read_digits

        return "vqgen's digit reader (vqgen.score.read_digits)", lambda pics: read_digits(pics)
    except ImportError:
        sys.path.insert(0, str(Path(__file__).parent))
        import prior_quality

        judge = prior_quality.judge_for("mnist")
        return "the classifier of benchmarks/prior_quality.py", lambda pics: prior_quality.predict(judge, pics)


def figures(vq_dir: Path, prior_dir: Path) -> dict:
    """The figures the cards state and the checks read."""
    vq_rows = runs.read_metrics(vq_dir / runs.METRICS)
    prior_rows = runs.read_metrics(prior_dir / runs.METRICS)
    how, read = reader()
    prior = vqgen.load(prior_dir)
    t0 = time.perf_counter()
    by_digit = []
    for digit in range(10):
        pics = prior.sample(PER_DIGIT, digit=digit, seed=digit)
        by_digit.append((read(pics) == digit).float().mean().item())
    vq = vqgen.load(vq_dir)
    held = vq.data()
    recon = vq.reconstruct(held.test_images)
    recon_read = (read(recon) == held.test_labels).float().mean().item()
    return {"vq": vq_rows[-1], "prior": prior_rows[-1], "reader": how, "read_by_digit": by_digit,
            "read": sum(by_digit) / 10, "recon_read": recon_read, "sampling_s": time.perf_counter() - t0,
            "vq_epoch_s": sum(r["seconds"] for r in vq_rows), "prior_epoch_s": sum(r["seconds"] for r in prior_rows)}


def check(f: dict) -> list[str]:
    wrong = []
    if f["vq"]["test_mse"] > MAX_MSE:
        wrong.append(f"VQ-VAE test MSE {f['vq']['test_mse']:.5f} > {MAX_MSE}")
    if f["read"] < MIN_READ:
        wrong.append(f"prior samples read as asked {f['read']:.1%} < {MIN_READ:.0%}")
    return wrong


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores of {cpu}, torch {torch.__version__}, Python {platform.python_version()}"


def card(kind: str, run_dir: Path, f: dict, made: dict) -> str:
    cfg = yaml.safe_load((run_dir / runs.CONFIG).read_text())
    train = {k: cfg["train"][k] for k in ("epochs", "batch_size", "lr", "lr_schedule", "seed", "precision")}
    settings = ", ".join(f"{k} {v}" for k, v in {**train, **cfg["model_config"]}.items())
    rebuild = ("python benchmarks/ready_trained.py   # in a clone of the repository; trains both models, checks "
               "the figures, writes these cards and copies the runs into src/vqgen/resources/ready/")
    if kind == VQ:
        v = f["vq"]
        head = (f"# ready:{VQ}, the ready-trained MNIST VQ-VAE\n\n"
                "vqgen's default VQ-VAE (`vqgen train` with no options), trained on the MNIST shipped inside vqgen. "
                "The commands use it when there is no VQ-VAE run of your own under ./runs; `--run "
                f"ready:{VQ}` names it.\n\n"
                "## Figures (the 10,000 MNIST test digits, after the last epoch)\n\n"
                f"- test MSE {v['test_mse']:.5f} (PSNR {v['test_psnr']:.2f} dB); the check: at most {MAX_MSE}\n"
                f"- codebook: {v['test_usage']:.0%} of 512 codes used, perplexity {v['test_perplexity']:.0f}\n"
                f"- {f['reader']} reads {f['recon_read']:.1%} of its reconstructions as their label\n"
                f"- {made['vq_s']:.0f} s for the whole `vqgen train` command ({f['vq_epoch_s']:.0f} s in its "
                "training epochs)\n")
        command = "vqgen train --out OUT"
    else:
        p = f["prior"]
        head = (f"# ready:{PRIOR}, the ready-trained prior of ready:{VQ}\n\n"
                f"vqgen's default prior (`vqgen train --model prior`) over the 7x7 code grids of ready:{VQ}, "
                "conditioned on the digit. `vqgen sample` with the ready-trained VQ-VAE draws through it.\n\n"
                "## Figures\n\n"
                f"- test NLL {p['test_bits_per_code']:.2f} bits per code (the 10,000 test digits' codes)\n"
                f"- {f['read']:.1%} of {PER_DIGIT} samples per digit (temperature and guidance at their defaults, "
                f"seed = the digit) read as the digit asked by {f['reader']}; the check: at least "
                f"{MIN_READ:.0%}. By digit: " + " ".join(f"{d}:{r:.0%}" for d, r in enumerate(f["read_by_digit"]))
                + "\n"
                f"- {made['prior_s']:.0f} s for the whole `vqgen train --model prior` command "
                f"({f['prior_epoch_s']:.0f} s in its training epochs)\n")
        command = f"vqgen train --model prior --run OUT/{VQ} --out OUT --name {PRIOR}"
    return (head + "\n## Data\n\n"
            "MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges; CC BY-SA 3.0): the 60,000 training "
            "digits, tested on the 10,000 test digits; the copy inside vqgen (`--dataset mnist`, the same "
            "bytes as `ylecun/mnist`). These weights are trained on that data.\n\n"
            "## How it was made\n\n"
            f"    {command}\n\n"
            f"by vqgen {vqgen.__version__} on {made['when']}, on {made['machine']}. To make it again:\n\n"
            f"    {rebuild}\n\n"
            "## Settings\n\n" + f"vqgen's defaults ({settings}); every setting is in config.yaml beside "
            "the weights.\n")


def with_parent(weights: Path, out: Path, parent: str) -> None:
    """The prior's weights with its parent recorded as `parent` (a ready:NAME), tensors unchanged."""
    with safe_open(str(weights), "pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    config["parent"]["run"] = parent
    meta["config"] = json.dumps(config)
    save_file(load_file(str(weights)), str(out), metadata=meta)


def package(run_dir: Path, name: str, card_text: str, parent: str | None) -> int:
    dest = runs.READY_DIR / name
    if dest.exists():
        for p in dest.iterdir():
            p.chmod(0o644)
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for file in SHIPPED:
        if file == runs.WEIGHTS and parent is not None:
            with_parent(run_dir / file, dest / file, parent)
        elif file == runs.CONFIG and parent is not None:
            cfg = yaml.safe_load((run_dir / file).read_text())
            cfg["parent"]["run"] = parent
            (dest / file).write_text(yaml.safe_dump(cfg, sort_keys=False))
        else:
            shutil.copyfile(run_dir / file, dest / file)
    (dest / runs.MODEL_CARD).write_text(card_text)
    for p in dest.iterdir():
        p.chmod(0o644)
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"{dest}: {', '.join(f'{p.name} {p.stat().st_size:,}' for p in sorted(dest.iterdir()))}; {size:,} bytes")
    return size


def report(f: dict) -> None:
    print(f"VQ-VAE: test MSE {f['vq']['test_mse']:.5f}, PSNR {f['vq']['test_psnr']:.2f} dB, "
          f"{f['vq_epoch_s']:.0f} s in its epochs; reconstructions read as their label {f['recon_read']:.1%}")
    print(f"prior: test NLL {f['prior']['test_bits_per_code']:.2f} bits per code, {f['prior_epoch_s']:.0f} s in its "
          f"epochs; samples read as asked {f['read']:.1%} ({f['reader']}): "
          + " ".join(f"{d}:{r:.0%}" for d, r in enumerate(f["read_by_digit"])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help=f"package {VQ} and {PRIOR} from this folder instead of training")
    ap.add_argument("--out", type=Path, help="train into this folder (default: a temporary one)")
    ap.add_argument("--check-only", action="store_true", help="check the runs shipped now; change nothing")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    if args.check_only:
        f = figures(runs.READY_DIR / VQ, runs.READY_DIR / PRIOR)
        report(f)
        wrong = check(f)
        print("checks: " + ("; ".join(wrong) if wrong else "passed"))
        sys.exit(1 if wrong else 0)
    with tempfile.TemporaryDirectory() as tmp:
        made = {"when": datetime.date.today().isoformat(), "machine": machine(), "vq_s": float("nan"),
                "prior_s": float("nan")}
        if args.runs is None:
            out = args.out or Path(tmp)
            made["vq_s"] = timed(vqgen_cmd("train", "--out", str(out)))
            made["prior_s"] = timed(vqgen_cmd("train", "--model", "prior", "--run", str(out / VQ), "--out", str(out),
                                              "--name", PRIOR))
        else:
            out = args.runs
        f = figures(out / VQ, out / PRIOR)
        report(f)
        wrong = check(f)
        if wrong:
            sys.exit("not packaged: " + "; ".join(wrong))
        total = package(out / VQ, VQ, card(VQ, out / VQ, f, made), None)
        total += package(out / PRIOR, PRIOR, card(PRIOR, out / PRIOR, f, made), runs.READY_PREFIX + VQ)
        print(f"packaged {total:,} bytes into {runs.READY_DIR}")


if __name__ == "__main__":
    main()
