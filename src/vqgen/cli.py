"""The `vqgen` command: each subcommand parses its flags, calls one library function and prints.

Status lines go to stderr, so stdout holds only what a script wants: the path
written, or JSON. Errors become one line on stderr (exit 2 for bad usage, 1 for
a failed run; VQGEN_DEBUG=1 shows the traceback). The library names its
parameters in errors; they are shown here as this command's flags.

Nothing heavy is imported at start-up: checks of the flags answer before
PyTorch loads.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vqgen import __version__
from vqgen.errors import VQGenError

app = typer.Typer(
    name="vqgen", no_args_is_help=True, add_completion=True, rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Train a VQ-VAE or a VAE on MNIST or anime faces, then reconstruct, morph and sample.\n\n"
         "Quick start: [bold]vqgen train[/bold], then [bold]vqgen interpolate 4 9[/bold] "
         "and [bold]vqgen gif 4 9[/bold].",
)
stdout = Console()
err = Console(stderr=True, soft_wrap=True)  # long paths stay on one line


def say(text: str) -> None:
    """Status lines go to stderr, so stdout stays clean for --json and paths."""
    err.print(text, highlight=False)


def flags_of(fn) -> dict[str, str]:
    """A command's flag for each of its parameters (`class_name` -> --class; arguments as A, B)."""
    flags = {}
    for name, param in inspect.signature(fn).parameters.items():
        decls = [d for d in getattr(param.default, "param_decls", ()) or () if d.startswith("--")]
        flags[name] = max(decls, key=len) if decls else name.upper()
    return flags


def handle_errors(fn):
    """Turn vqgen's errors (and any other) into one line and an exit code."""
    flags = flags_of(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            print("Interrupted", file=sys.stderr)
            raise typer.Exit(130)
        except VQGenError as e:
            if os.environ.get("VQGEN_DEBUG"):
                raise
            print(f"Error: {e.render(lambda name: flags.get(name, name))}", file=sys.stderr)
            raise typer.Exit(e.exit_code)
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


def finish(report) -> None:
    for line in report.lines:
        say(line)
    print(report.path)


# --------------------------------------------------------------------------- train


@app.command(epilog="Examples:\n\n  vqgen train\n\n  vqgen train --model vae --dataset anime-faces --epochs 30"
             "\n\n  vqgen train --model prior --run runs/vqvae-mnist\n\n  vqgen train --resume runs/vqvae-mnist --epochs 6")
@handle_errors
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="vqvae (default), vae, or prior (a sampler for a VQ-VAE run)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="mnist, anime-faces, a Hub id (owner/name), or a local folder. Default: mnist."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of settings; flags override it."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs in total (default: 3 for vqvae, 20 for vae, 1 for prior)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per batch."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: same seed, same run on a CPU."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder that holds the run directories (default: runs)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run directory name (default: MODEL-DATASET, then -2, -3, ...)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory until --epochs are done."),
    run: Optional[Path] = typer.Option(None, "--run", help="For --model prior: the VQ-VAE run to learn codes of (default: latest)."),
) -> None:
    """Train a model; writes a run directory with weights, metrics and pictures."""
    from vqgen import api
    from vqgen.progress import TrainProgress

    result = api.train(model, dataset, config=config, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                       seed=seed, out=out, name=name, resume=resume, run=run, progress=TrainProgress(console=err))
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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG grid to write; with --input DIR, the folder for the reconstructions."),
    n: int = typer.Option(16, "--n", help="How many held-out images to show."),
) -> None:
    """Originals above reconstructions as one grid; prints MSE and PSNR."""
    from vqgen import tasks

    finish(tasks.reconstruct(run, input, out, n, log=say))


# --------------------------------------------------------------------------- interpolate / gif


@app.command(epilog="Examples:\n\n  vqgen interpolate 4 9 --steps 12\n\n  vqgen interpolate '#3' '#10' --frames frames/"
             "\n\n  vqgen interpolate a.png b.png --run runs/vae-anime-faces --method slerp")
@handle_errors
def interpolate(
    a: str = typer.Argument(..., help="Start: a class label (a digit), #INDEX into the held-out split, or an image file."),
    b: str = typer.Argument(..., help="End: same forms as the start."),
    steps: int = typer.Option(12, "--steps", "-s", help="Frames, start and end included."),
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory or .safetensors file (default: latest)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG strip to write (default: RUN/interp_A_to_B.png)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write each frame as its own PNG into this folder."),
    method: str = typer.Option("lerp", "--method", help="lerp or slerp."),
    space: Optional[str] = typer.Option(None, "--space", help="VQ-VAE: interpolate before quantisation (pre, the default) or after (post)."),
) -> None:
    """Morph A into B through the latent space; writes a PNG strip."""
    from vqgen import tasks

    finish(tasks.interpolate(a, b, steps, run, out, frames, method, space, log=say))


@app.command(epilog="Examples:\n\n  vqgen gif 4 9\n\n  vqgen gif '#10' '#250' --run runs/vae-anime-faces --fps 12"
             "\n\n  vqgen gif --training runs/vqvae-mnist")
@handle_errors
def gif(
    a: Optional[str] = typer.Argument(None, help="Start: a class label, #INDEX or an image file."),
    b: Optional[str] = typer.Argument(None, help="End: same forms as the start."),
    steps: int = typer.Option(24, "--steps", "-s", help="Frames from A to B (played there and back)."),
    fps: float = typer.Option(12, "--fps", help="Frames per second."),
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory or .safetensors file (default: latest)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="GIF to write (default: RUN/morph_A_to_B.gif)."),
    method: str = typer.Option("lerp", "--method", help="lerp or slerp."),
    space: Optional[str] = typer.Option(None, "--space", help="VQ-VAE: interpolate before quantisation (pre, the default) or after (post)."),
    training: Optional[Path] = typer.Option(None, "--training", help="Instead: animate this run's per-epoch picture grids."),
) -> None:
    """The A -> B morph as a looping GIF (there and back), or a run's training progress."""
    from vqgen import tasks

    finish(tasks.gif(a, b, steps, fps, run, out, method, space, training, log=say))


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
    top_k: Optional[int] = typer.Option(None, "--top-k", help="VQ-VAE prior: draw only from the k likeliest codes (0: all)."),
    guidance: Optional[float] = typer.Option(
        None, "--guidance", "-g", help="VQ-VAE prior: how strongly samples follow their class (1: plain conditional; default 1.5)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG grid to write (default: RUN/samples.png)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write each sample as its own PNG into this folder."),
) -> None:
    """New images: from a VAE, or from a VQ-VAE through its learned prior."""
    from vqgen import tasks

    finish(tasks.sample(n, run, digit, class_name, sampler, temperature, top_k, guidance, seed, out, frames, log=say))


# --------------------------------------------------------------------------- eval / info


@app.command("eval", epilog="Examples:\n\n  vqgen eval\n\n  vqgen eval --run runs/vqvae-mnist-2 --json")
@handle_errors
def eval_cmd(
    run: Optional[Path] = typer.Option(None, "--run", "-r", help="Run directory (default: latest of any model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """A run's metrics per epoch, as a table or JSON."""
    from vqgen import tasks

    report = tasks.metrics(run, log=say).data
    if as_json:
        print(json.dumps(report, indent=2))
        return
    rows = report["epochs"]
    table = Table(title=f"{report['run']} ({report['model']})")
    cols = [c for c in rows[-1] if c in ("epoch", "train_loss", "test_loss", "test_mse", "test_psnr", "train_usage",
                                         "train_perplexity", "test_bits_per_code", "test_kl", "img_per_s", "seconds")]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    stdout.print(table)


@app.command(epilog="Examples:\n\n  vqgen info runs/vqvae-mnist\n\n  vqgen info model.safetensors")
@handle_errors
def info(
    run: Optional[Path] = typer.Argument(None, help="Run directory or .safetensors file (default: latest run)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """What a run or checkpoint is: model, data, settings, size, metrics."""
    from vqgen import tasks

    summary = tasks.describe(run, log=say).data
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    t = Table(show_header=False, title=summary["path"])
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", summary["model_name"])
    t.add_row("trained on", f"{summary['dataset']} ({summary['dataset_source']})")
    t.add_row("epochs", f"{summary['epochs_done']} of {summary['epochs']}")
    t.add_row("parameters", f"{summary['parameters']:,}")
    t.add_row("vqgen", summary["vqgen_version"])
    for k, v in summary["config"]["model_config"].items():
        t.add_row(k, str(v))
    if summary["config"].get("parent"):
        t.add_row("trained on the codes of", summary["config"]["parent"].get("run", ""))
    for k, v in summary["metrics"].items():
        if k.startswith("test_"):
            t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    stdout.print(t)


def main() -> None:
    app()
