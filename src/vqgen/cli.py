"""The `vqgen` command: a thin map from subcommands to library functions.

Each command parses its options, calls into vqgen's modules, saves the
pictures and prints where they went. Errors become one line on stderr
(exit 2 for bad usage, 1 for a failed run); set VQGEN_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vqgen import __version__
from vqgen.errors import UsageError, VQGenError

app = typer.Typer(
    name="vqgen", no_args_is_help=True, add_completion=True, rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Train a VQ-VAE or a VAE on MNIST or anime faces, then reconstruct, morph and sample.\n\n"
         "Quick start: [bold]vqgen train[/bold], then [bold]vqgen interpolate 4 9[/bold] "
         "and [bold]vqgen gif 4 9[/bold].",
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # long paths stay on one line


class Model(str, Enum):
    vqvae = "vqvae"
    vae = "vae"
    prior = "prior"


def say(text: str) -> None:
    """Status lines go to stderr, so stdout stays clean for --json and paths."""
    err.print(text, highlight=False)


def fail(e: BaseException, code: int) -> None:
    if os.environ.get("VQGEN_DEBUG"):
        raise e
    msg = str(e) if isinstance(e, VQGenError) else f"{e.__class__.__name__}: {e}"
    print(f"Error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


def handle_errors(fn):
    """Turn vqgen's errors (and any other) into one line and an exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except VQGenError as e:
            fail(e, e.exit_code)
        except Exception as e:  # noqa: BLE001 - a last resort: still one line
            if os.environ.get("VQGEN_DEBUG"):
                raise
            print(f"Error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  "(set VQGEN_DEBUG=1 for the traceback)", file=sys.stderr)
            raise typer.Exit(1)
    return wrapper


def version_callback(value: bool) -> None:
    if value:
        print(f"vqgen {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Train a VQ-VAE or a VAE, then reconstruct, morph and sample."""


def open_run(run: Optional[Path], kinds: tuple[str, ...], runs_dir: Path = Path("runs")):
    """Load --run, or the newest matching run under ./runs, saying which."""
    from vqgen import runs

    if run is None:
        run = runs.find_latest_run(kinds, runs_dir)
        say(f"Using run {run}")
    return runs.load_checkpoint(run, expect=kinds)


# --------------------------------------------------------------------------- train


@app.command(epilog="Examples:\n\n  vqgen train\n\n  vqgen train --model vae --dataset anime-faces --epochs 30"
             "\n\n  vqgen train --model prior --run runs/vqvae-mnist\n\n  vqgen train --resume runs/vqvae-mnist --epochs 6")
@handle_errors
def train(
    model: Model = typer.Option(Model.vqvae, "--model", "-m", help="vqvae, vae, or prior (a sampler for a VQ-VAE run)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="mnist, anime-faces, a Hub id (owner/name), or a local folder. Default: mnist."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of settings; flags override it."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs in total (default: 3 for vqvae, 20 for vae, 1 for prior)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per batch."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: same seed, same run on a CPU."),
    out_dir: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that holds the run directories."),
    name: Optional[str] = typer.Option(None, "--name", help="Run directory name (default: MODEL-DATASET, then -2, -3, ...)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory until --epochs are done."),
    run: Optional[Path] = typer.Option(None, "--run", help="For --model prior: the VQ-VAE run to learn codes of (default: latest)."),
) -> None:
    """Train a model; writes a run directory with weights, metrics and pictures."""
    from vqgen.progress import TrainProgress
    from vqgen.train import train as train_run

    if resume is not None and (dataset or config or name):
        raise UsageError("--resume continues a run with its own settings; drop --dataset/--config/--name")
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device, "seed": seed}
    result = train_run(model.value, dataset, str(config) if config else None, overrides, out_dir, name,
                       resume, run, progress=TrainProgress(console=err))
    m = result.metrics
    if "test_psnr" in m:
        say(f"Test MSE {m['test_mse']:.5f}  PSNR {m['test_psnr']:.2f} dB"
            + (f"  codebook usage {m['test_usage']:.0%}" if "test_usage" in m else ""))
    elif "test_bits_per_code" in m:
        say(f"Test NLL {m['test_bits_per_code']:.3f} bits per code")
    print(result.run_dir)
    if result.interrupted:
        raise typer.Exit(130)


# --------------------------------------------------------------------------- reconstruct


@app.command(epilog="Examples:\n\n  vqgen reconstruct\n\n  vqgen reconstruct --input my_digits/ --out recon/")
@handle_errors
def reconstruct(
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory or .safetensors file (default: latest)."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="An image file or a folder of images (default: the held-out split)."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG grid to write; with --input DIR, the folder for the reconstructions."),
    n: int = typer.Option(16, "--n", help="How many held-out images to show."),
) -> None:
    """Originals above reconstructions as one grid; prints MSE and PSNR."""
    import torch

    from vqgen import data as D
    from vqgen import generate, images

    if n < 1:
        raise UsageError("--n must be at least 1")
    ckpt = open_run(run, ("vqvae", "vae"))
    size, channels = generate.image_shape(ckpt)
    names = None
    if input is None:
        data = generate.run_data(ckpt, say)
        x = data.test_images[:n].float().div(255)
    elif input.is_dir():
        files = sorted(p for p in input.iterdir() if p.suffix.lower() in D.IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"--input {input}: no image files in that folder")
        loaded, names, skipped = [], [], 0
        for p in files:
            try:
                loaded.append(D.load_image_file(p, size, channels))
                names.append(p.stem)
            except UsageError:
                skipped += 1
        if skipped:
            say(f"Skipped {skipped} unreadable images")
        if not loaded:
            raise UsageError(f"--input {input}: none of the images could be read")
        x = torch.cat(loaded)
    elif input.exists():
        x = D.load_image_file(input, size, channels)
    else:
        raise UsageError(f"--input {input}: no such file or folder")
    recon = generate.reconstruct(ckpt.model, x)
    mse, psnr = generate.mse_psnr(recon, x)
    if names is not None:
        folder = out_path or Path("reconstructions")
        if folder.suffix.lower() == ".png":
            raise UsageError("--input DIR writes one file per image: give --out a folder, not a .png")
        folder.mkdir(parents=True, exist_ok=True)
        for name, img in zip(names, recon):
            images.save_png(img, folder / f"{name}.png")
        say(f"MSE {mse:.5f}  PSNR {psnr:.2f} dB over {len(x)} images")
        print(folder)
        return
    target = out_path or ckpt.run_dir / "reconstruction.png"
    nrow = min(len(x), 16)
    rows = []
    for i in range(0, len(x), nrow):
        rows += [x[i:i + nrow], recon[i:i + nrow]]
    images.save_grid(torch.cat(rows), target, nrow=nrow)
    say(f"MSE {mse:.5f}  PSNR {psnr:.2f} dB over {len(x)} images")
    print(target)


# --------------------------------------------------------------------------- interpolate / gif


def _morph(a: str, b: str, steps: int, run: Optional[Path], method: str, space: str):
    from vqgen import generate

    ckpt = open_run(run, ("vqvae", "vae"))
    loader = functools.lru_cache(maxsize=1)(lambda: generate.run_data(ckpt, say))
    xa = generate.endpoint_image(a, ckpt, loader)
    xb = generate.endpoint_image(b, ckpt, loader)
    frames = generate.morph(ckpt.model, xa, xb, steps, method, space)
    return ckpt, frames


@app.command(epilog="Examples:\n\n  vqgen interpolate 4 9 --steps 12\n\n  vqgen interpolate '#3' '#10' --frames frames/"
             "\n\n  vqgen interpolate a.png b.png --run runs/vae-anime-faces --method slerp")
@handle_errors
def interpolate(
    a: str = typer.Argument(..., help="Start: a class label (a digit), #INDEX into the held-out split, or an image file."),
    b: str = typer.Argument(..., help="End: same forms as the start."),
    steps: int = typer.Option(12, "--steps", "-s", help="Frames, start and end included."),
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory or .safetensors file (default: latest)."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG strip to write (default: RUN/interp_A_to_B.png)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write each frame as its own PNG into this folder."),
    method: str = typer.Option("lerp", "--method", help="lerp or slerp."),
    space: str = typer.Option("pre", "--space", help="VQ-VAE: interpolate before quantisation (pre) or after (post)."),
) -> None:
    """Morph A into B through the latent space; writes a PNG strip."""
    from vqgen import generate, images

    generate.check_steps(steps)  # before loading anything
    ckpt, seq = _morph(a, b, steps, run, method, space)
    target = out_path or ckpt.run_dir / f"interp_{generate.endpoint_name(a)}_to_{generate.endpoint_name(b)}.png"
    images.save_grid(seq, target, nrow=steps)
    if frames:
        images.save_frames(seq, frames)
        say(f"Wrote {steps} frames to {frames}")
    print(target)


@app.command(epilog="Examples:\n\n  vqgen gif 4 9\n\n  vqgen gif '#10' '#250' --run runs/vae-anime-faces --fps 12"
             "\n\n  vqgen gif --training runs/vqvae-mnist")
@handle_errors
def gif(
    a: Optional[str] = typer.Argument(None, help="Start: a class label, #INDEX or an image file."),
    b: Optional[str] = typer.Argument(None, help="End: same forms as the start."),
    steps: int = typer.Option(24, "--steps", "-s", help="Frames from A to B (played there and back)."),
    fps: float = typer.Option(12, "--fps", help="Frames per second."),
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory or .safetensors file (default: latest)."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="GIF to write (default: RUN/morph_A_to_B.gif)."),
    method: str = typer.Option("lerp", "--method", help="lerp or slerp."),
    space: str = typer.Option("pre", "--space", help="VQ-VAE: interpolate before quantisation (pre) or after (post)."),
    training: Optional[Path] = typer.Option(None, "--training", help="Instead: animate this run's per-epoch picture grids."),
) -> None:
    """The A -> B morph as a looping GIF (there and back), or a run's training progress."""
    from vqgen import generate, images

    if fps <= 0:
        raise UsageError("--fps must be positive")
    if training is not None:
        _training_gif(training, fps, out_path)
        return
    if a is None or b is None:
        raise UsageError("give two endpoints (vqgen gif 4 9), or --training RUN")
    generate.check_steps(steps)  # before loading anything
    ckpt, seq = _morph(a, b, steps, run, method, space)
    target = out_path or ckpt.run_dir / f"morph_{generate.endpoint_name(a)}_to_{generate.endpoint_name(b)}.gif"
    images.save_gif(seq, target, fps=fps)
    print(target)


def _training_gif(run_dir: Path, fps: float, out_path: Optional[Path]) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from vqgen import images

    pics = sorted(run_dir.glob("recon_epoch_*.png")) or sorted(run_dir.glob("samples_epoch_*.png"))
    if not pics:
        raise UsageError(f"{run_dir}: no per-epoch pictures to animate; is it a run directory?")
    if len(pics) == 1:
        raise UsageError(f"{run_dir}: one epoch, so one picture ({pics[0].name}); a training GIF needs two or more: "
                         f"vqgen train --resume {run_dir} --epochs 2")
    frames = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
                          for p in pics]).float().div(255)
    target = out_path or run_dir / "training.gif"
    images.save_gif(frames, target, fps=min(fps, 4), bounce=False)
    print(target)


# --------------------------------------------------------------------------- sample


@app.command(epilog="Examples:\n\n  vqgen sample --n 64\n\n  vqgen sample --digit 7 --n 16 --temperature 0.8 --guidance 2"
             "\n\n  vqgen sample --run runs/vae-anime-faces --sampler mix")
@handle_errors
def sample(
    n: int = typer.Option(64, "--n", help="How many images."),
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="A VAE, VQ-VAE or prior run (default: latest)."),
    digit: Optional[int] = typer.Option(None, "--digit", help="Only this digit (class-conditional prior)."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Only this class, by name."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="VAE: prior (z ~ N(0, I)) or mix (blends of training latents)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", help="Below 1: safer samples; above 1: more varied (default: 1.0 for a VAE, 0.7 for a VQ-VAE's prior)."),
    top_k: int = typer.Option(0, "--top-k", help="VQ-VAE prior: draw only from the k likeliest codes (0: all)."),
    guidance: Optional[float] = typer.Option(
        None, "--guidance", "-g", help="VQ-VAE prior: how strongly samples follow their class (1: plain conditional; default 1.5)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG grid to write (default: RUN/samples.png)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write each sample as its own PNG into this folder."),
) -> None:
    """New images: from a VAE, or from a VQ-VAE through its learned prior."""
    import math

    import torch

    from vqgen import generate, images, runs

    if n < 1:
        raise UsageError("--n must be at least 1")
    if temperature is not None and temperature <= 0:
        raise UsageError("--temperature must be positive")
    gen = torch.Generator().manual_seed(seed)
    if run is None:
        run = runs.find_latest_run(("vae", "vqvae", "prior"))
        say(f"Using run {run}")
    ckpt = runs.load_checkpoint(run, expect=("vae", "vqvae", "prior"))
    if ckpt.kind == "vae":
        if digit is not None or class_name is not None or top_k or guidance is not None:
            raise UsageError("--digit/--class/--top-k/--guidance need a VQ-VAE with a prior; a VAE samples with --sampler")
        latents = None
        if sampler == "mix":
            from safetensors.torch import load_file
            lp = ckpt.run_dir / runs.LATENTS
            latents = load_file(str(lp))["mu"] if lp.is_file() else None
        pics = generate.sample_vae(ckpt.model, n, sampler or "prior", temperature or 1.0, latents, gen)
        target_dir = ckpt.run_dir
    else:
        if sampler is not None:
            raise UsageError("--sampler is for VAE runs; a VQ-VAE samples through its prior")
        prior_ckpt, vq = open_prior(ckpt)
        label = class_label(prior_ckpt, vq, digit, class_name)
        pics = generate.sample_vqvae(vq.model, prior_ckpt.model, n, label, temperature or generate.PRIOR_TEMPERATURE,
                                     top_k, gen, guidance)
        target_dir = prior_ckpt.run_dir
    target = out_path or target_dir / "samples.png"
    images.save_grid(pics, target, nrow=10 if n == 10 else max(1, round(math.sqrt(n))))
    if frames:
        images.save_frames(pics, frames, prefix="sample")
        say(f"Wrote {n} samples to {frames}")
    print(target)


def open_prior(ckpt):
    """(prior, vqvae) checkpoints for a VQ-VAE or a prior run."""
    from vqgen import runs
    from vqgen.train import check_prior_matches

    if ckpt.kind == "prior":
        vq_dir = Path(ckpt.config.extra["vqvae_run"])
        if not (vq_dir / runs.WEIGHTS).is_file():
            raise UsageError(f"the VQ-VAE run this prior belongs to ({vq_dir}) is gone; "
                             "train a VQ-VAE and a new prior for it")
        vq = runs.load_checkpoint(vq_dir, expect=("vqvae",))
        prior_ckpt = ckpt
    else:
        vq = ckpt
        want = str(vq.run_dir.resolve())
        try:
            prior_dir = runs.find_latest_run(("prior",), vq.run_dir.parent,
                                             where=lambda m: json.loads(m["config"]).get("extra", {}).get("vqvae_run") == want)
        except UsageError:
            raise UsageError(f"no prior for {vq.run_dir} yet: a VQ-VAE samples through a learned prior; "
                             f"train one with `vqgen train --model prior --run {vq.run_dir}`") from None
        say(f"Using prior {prior_dir}")
        prior_ckpt = runs.load_checkpoint(prior_dir, expect=("prior",))
    check_prior_matches(prior_ckpt.config, vq)
    device = next(vq.model.parameters()).device
    prior_ckpt.model.to(device)
    return prior_ckpt, vq


def class_label(prior_ckpt, vq, digit: Optional[int], class_name: Optional[str]) -> Optional[int]:
    if digit is None and class_name is None:
        return None
    if digit is not None and class_name is not None:
        raise UsageError("give --digit or --class, not both")
    names = vq.info.get("class_names") or []
    if not prior_ckpt.model.conditional:
        raise UsageError("this prior is unconditional (its dataset has no labels): drop --digit/--class")
    if digit is not None:
        if str(digit) not in names:
            raise UsageError(f"--digit {digit}: the dataset's classes are {', '.join(names)}")
        return names.index(str(digit))
    if class_name not in names:
        raise UsageError(f"--class {class_name}: the dataset's classes are {', '.join(names)}")
    return names.index(class_name)


# --------------------------------------------------------------------------- eval / info


@app.command("eval", epilog="Examples:\n\n  vqgen eval\n\n  vqgen eval --run runs/vqvae-mnist-2 --json")
@handle_errors
def eval_cmd(
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory (default: latest of any model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """A run's metrics per epoch, as a table or JSON."""
    from vqgen import runs

    if run is None:
        run = runs.find_latest_run(("vqvae", "vae", "prior"))
        say(f"Using run {run}")
    run_dir = run if run.is_dir() else run.parent
    ckpt_meta = runs.read_metadata(runs.weights_path(run_dir))
    rows = runs.read_metrics(run_dir / runs.METRICS)
    if not rows:
        raise UsageError(f"{run_dir}: no metrics.csv yet; train the run first")
    if as_json:
        print(json.dumps({"run": str(run_dir), "model": ckpt_meta["vqgen_model"], "epochs": rows,
                          "final": rows[-1]}, indent=2))
        return
    table = Table(title=f"{run_dir} ({ckpt_meta['vqgen_model']})")
    cols = [c for c in rows[-1] if c in ("epoch", "train_loss", "test_loss", "test_mse", "test_psnr", "train_usage",
                                         "train_perplexity", "test_bits_per_code", "test_kl", "img_per_s", "seconds")]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    out.print(table)


@app.command(epilog="Examples:\n\n  vqgen info runs/vqvae-mnist\n\n  vqgen info model.safetensors")
@handle_errors
def info(
    run: Optional[Path] = typer.Argument(None, help="Run directory or .safetensors file (default: latest run)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """What a run or checkpoint is: model, data, settings, size, metrics."""
    from vqgen import runs

    if run is None:
        run = runs.find_latest_run(("vqvae", "vae", "prior"))
        say(f"Using run {run}")
    ckpt = runs.load_checkpoint(run)
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    cfg = ckpt.config.to_dict()
    summary = {"path": str(ckpt.path), "model": ckpt.kind, "vqgen_version": ckpt.version,
               "parameters": n_params, "dataset": ckpt.config.train.dataset,
               "dataset_source": ckpt.info.get("dataset_source"), "epochs_done": ckpt.info.get("epoch"),
               "epochs": ckpt.config.train.epochs, "metrics": ckpt.info.get("metrics", {}), "config": cfg}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    t = Table(show_header=False, title=str(ckpt.path))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", runs.MODEL_NAMES[ckpt.kind])
    t.add_row("trained on", f"{summary['dataset']} ({summary['dataset_source']})")
    t.add_row("epochs", f"{summary['epochs_done']} of {summary['epochs']}")
    t.add_row("parameters", f"{n_params:,}")
    t.add_row("vqgen", ckpt.version)
    for k, v in cfg["model_config"].items():
        t.add_row(k, str(v))
    if ckpt.config.extra:
        t.add_row("VQ-VAE run", ckpt.config.extra.get("vqvae_run", ""))
    for k, v in summary["metrics"].items():
        if k.startswith("test_"):
            t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    out.print(t)


def main() -> None:
    app()
