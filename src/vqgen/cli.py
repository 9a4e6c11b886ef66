"""The `vqgen` command: each subcommand parses its flags, calls one library function and prints.

Status lines go to stderr, so stdout holds only what a script wants: the path
written, or JSON. Errors become one line on stderr (exit 2 for bad usage, 1 for
a failed run; VQGEN_DEBUG=1 shows the traceback). The library names its
parameters in errors; they are shown here as this command's flags. Ctrl-C,
SIGTERM and SIGHUP stop a command with one line and exit 128 + the signal's
number (130, 143, 129; interrupts.py); training saves its state first.

Nothing heavy is imported at start-up: checks of the flags answer before
PyTorch loads.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import os
import select
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from vqgen import __version__
from vqgen.errors import VQGenError, explain, size_text
from vqgen.files import shown_path

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
    """A status line: on stderr, so stdout stays clean for --json and paths; as written (no Rich markup, so
    `pip install "vqgen[score]"` keeps its brackets)."""
    err.print(text, highlight=False, markup=False)


def _silent(text: str) -> None:
    pass


def status_log(quiet: bool) -> Callable[[str], None]:
    """Where a command's status lines go: `say`, or nowhere with --quiet."""
    return _silent if quiet else say


class _BareFlag(typer.core.TyperOption):
    def display_type_rich(self, ctx):
        return None


class _PlainArgument(typer.core.TyperArgument):
    def _usage_display_name(self) -> str:
        return super()._usage_display_name().replace("{", "").replace("}", "")


class Command(typer.core.TyperCommand):
    """A vqgen command, whose help shows a boolean flag bare (`--json`, where Typer 0.29 writes `--json <bool>`
    as if it took a value) and a required argument as `A` in the usage line (Typer 0.29: `{A}`), as most
    command lines do. Typer has no setting for either; each command is given this class (`cls`), which
    shows its own parameters so, and leaves Typer's classes as they are."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if type(p) is typer.core.TyperOption and p.is_flag:
                p.__class__ = _BareFlag
            elif type(p) is typer.core.TyperArgument:
                p.__class__ = _PlainArgument
        return params


QUIET = typer.Option(False, "--quiet", "-q", help="Print only what was written (the path or JSON) and errors.")
RUN = typer.Option(None, "--run", "-r", show_default="the latest run that can, else the ready-trained one",
                   help="Run directory, .safetensors file, or ready:vqvae-mnist (shipped with vqgen).")
DEVICE = typer.Option(None, "--device", show_default="auto", help="auto (a GPU if there is one), cpu, cuda or mps.")
# How samples are drawn: `sample` draws them, `score` scores them.
SAMPLER = typer.Option(None, "--sampler", show_default="prior",
                       help="VAE: prior (z ~ N(0, I)) or mix (blends of training latents).")
TEMPERATURE = typer.Option(None, "--temperature", "-t", show_default="the model's own",
                           help="Below 1: safer samples; above 1: more varied.")
TOP_K = typer.Option(None, "--top-k", show_default="0: all", help="VQ-VAE prior: draw only from the k likeliest codes.")
GUIDANCE = typer.Option(None, "--guidance", "-g", show_default="the prior's own",
                        help="VQ-VAE prior: how strongly samples follow their class (1: none).")
A = typer.Argument(..., metavar="A", help="Start: a class name (MNIST: a digit), #INDEX into the held-out split, or an image file.")
B = typer.Argument(..., metavar="B", help="End: same forms as the start.")
SPACE = typer.Option(None, "--space", show_default="pre", help="VQ-VAE: interpolate before quantisation (pre) or after (post).")
METHOD = typer.Option("lerp", "--method", help="lerp or slerp.")


def flags_of(fn) -> dict[str, str]:
    """A command's flag for each of its parameters (`class_name` -> --class; arguments as A, B)."""
    flags = {}
    for name, param in inspect.signature(fn).parameters.items():
        decls = [d for d in getattr(param.default, "param_decls", ()) or () if d.startswith("--")]
        flags[name] = max(decls, key=len) if decls else name.upper()
    return flags


def memory_hint(flags: dict[str, str], given: dict) -> str:
    """The settings of a command that use less memory, as its flags name them (`given`: its arguments)."""
    if "batch_size" not in flags:
        return next((flags[key] for key in ("n", "steps") if key in flags), "the number of images asked for")
    if given.get("resume") is not None:   # a resumed run keeps its batch size
        return f"{flags['batch_size']} in a new run (a resumed run keeps its own)"
    return f"{flags['batch_size']}, or set data_in_memory: no in a {flags.get('config', '--config')} file"


def _pipe_closed(stream) -> bool:
    """Whether `stream` is a pipe whose reader has gone (`vqgen ... | head -1`)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def reader_gone() -> None:
    """Point stdout at /dev/null, so that nothing more (Python's last flush included) fails on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


_rich_broken_pipe = Console.on_broken_pipe


def _on_broken_pipe(console: Console) -> None:
    """Rich's answer to a closed pipe is exit 1; where stdout's reader has gone (tables, help), vqgen's is 0."""
    if _pipe_closed(sys.stdout):
        reader_gone()
        raise SystemExit(0)
    _rich_broken_pipe(console)


Console.on_broken_pipe = _on_broken_pipe


def handle_errors(fn):
    """Turn vqgen's errors (and any other) into one line and an exit code.

    Known causes are named (`errors.explain`): a full disk, a folder that cannot be written, exhausted memory
    (with the flag to lower). Output read by a pipe that closed early (`vqgen eval --json | head -1`) ends
    the command quietly with exit 0: the reader has what it wanted."""
    flags = flags_of(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vqgen import interrupts

        try:
            with interrupts.handled():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM, SIGHUP
            signum = interrupts.signal_of(e)
            if os.environ.get("RANK", "0") == "0":   # under torchrun, the first process speaks for all
                print(f"Interrupted{interrupts.by(signum)}", file=sys.stderr)
            raise typer.Exit(interrupts.exit_code(signum))
        except Exception as e:  # noqa: BLE001 - named, or a last resort: still one line
            if os.environ.get("VQGEN_DEBUG"):
                raise
            if isinstance(e, BrokenPipeError) and _pipe_closed(sys.stdout):
                reader_gone()
                raise typer.Exit(0) from None
            named = e if isinstance(e, VQGenError) else explain(e, lower=memory_hint(flags, kwargs))
            if named is not None:
                print(f"Error: {named.render(lambda name: flags.get(name, name))}", file=sys.stderr)
                raise typer.Exit(named.exit_code) from None
            print(f"Error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  "(set VQGEN_DEBUG=1 for the traceback)", file=sys.stderr)
            raise typer.Exit(1) from None
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


def finish(report, log: Callable[[str], None]) -> None:
    for line in report.lines:
        log(line)
    print(report.path)


def table(title: str | None = None, **kw) -> Table:
    return Table(title=title, title_justify="left", header_style="bold", pad_edge=False, box=None, **kw)


# --------------------------------------------------------------------------- train


class ListsQuantizers(Command):
    """A command whose help ends with the registered quantisers and their settings, read from the registry
    when the help is shown (the registry loads PyTorch; flag checks answer before it)."""

    def format_help(self, ctx, formatter) -> None:
        from vqgen.models.quantizer import quantizer_specs   # the models package registers each quantiser
        from vqgen.settings import field_names

        listed = [f"    {q.name} ({q.description}): {', '.join(field_names(q.config_class))}" for q in quantizer_specs()]
        self.epilog = (self.epilog.split("\n\n  Quantisers")[0] + "\n\n  Quantisers (--quantizer) and their settings "
                       "(in --config, or keywords of vqgen.train):\n\n" + "\n\n".join(listed))
        super().format_help(ctx, formatter)


@app.command(cls=ListsQuantizers,
             epilog="Examples:\n\n  vqgen train\n\n  vqgen train --model vae --dataset anime-faces --epochs 30"
             "\n\n  vqgen train --model vqgan --dataset anime-faces"
             "\n\n  vqgen train --model prior --run runs/vqvae-mnist\n\n  vqgen train --resume runs/vqvae-mnist --epochs 6"
             "\n\n  vqgen train --model vae --dataset anime-faces --device cuda --devices 4"
             "\n\n  vqgen train --quantizer fsq --name fsq-mnist")
@handle_errors
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", show_default="model: in --config, else vqvae",
                                        help="vqvae, vqgan (sharper colour images), vae, or prior (a sampler for a VQ-VAE run)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", show_default="mnist",
                                          help="mnist, anime-faces, a Hub id (owner/name), or a local folder."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of settings; flags override it."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", show_default="3 (colour: 50); vae 20; prior 1 (large grids: 8)",
                                         help="Epochs in total."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", show_default="64 (colour: 32); prior 16 (large grids: 32)",
                                             help="Images per batch."),
    lr: Optional[float] = typer.Option(None, "--lr", show_default="0.01; vae 0.001; prior 0.02 (large grids: 0.003)",
                                       help="Peak learning rate."),
    device: Optional[str] = DEVICE,
    seed: Optional[int] = typer.Option(None, "--seed", show_default="0",
                                       help="Random seed: same seed and --threads, same run on a CPU."),
    threads: Optional[int] = typer.Option(None, "--threads", show_default="the cores other programs leave free",
                                          help="CPU threads to train with."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="runs",
                                       help="Folder that holds the run directories."),
    name: Optional[str] = typer.Option(None, "--name", show_default="MODEL-DATASET, then -2, -3, ...",
                                       help="Run directory name."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory until --epochs are done."),
    run: Optional[Path] = typer.Option(None, "--run", show_default="the latest VQ-VAE run",
                                       help="For --model prior: the VQ-VAE (or vqgan) run to learn the codes of."),
    precision: Optional[str] = typer.Option(None, "--precision", show_default="auto: bf16/fp16 on a GPU, else fp32",
                                            help="auto, fp32, bf16 or fp16."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model: faster steps after a slow first one."),
    devices: Optional[int] = typer.Option(None, "--devices", show_default="1",
                                          help="Train on this many GPUs (CPU processes without one), through torchrun; "
                                               "--batch-size is the global batch."),
    quantizer: Optional[str] = typer.Option(None, "--quantizer", show_default="vq",
                                            help="VQ-VAE: vq (learned codebook), fsq (fixed levels), rvq (residual) "
                                                 "or another registered quantiser (listed below)."),
    rotation_trick: bool = typer.Option(False, "--rotation-trick",
                                        help="VQ-VAE with vq or rvq: gradients through the rotation trick."),
    quiet_flag: bool = QUIET,
    plan: Optional[Path] = typer.Option(None, "--plan", hidden=True,
                                        help="The settings of one of the processes --devices starts; no other flag."),
) -> None:
    """Train a model; writes a run directory with weights, metrics and pictures."""
    from vqgen import commands
    from vqgen.progress import TrainProgress

    if plan is not None:   # one of the processes --devices N starts: the process that started them reports
        report = commands.train_planned(plan)
    else:
        report = commands.train(model, dataset, config=config, epochs=epochs, batch_size=batch_size, lr=lr,
                                device=device, seed=seed, threads=threads, out=out, name=name, resume=resume, run=run,
                                precision=precision, compile=compile or None, devices=devices,
                                progress=TrainProgress(console=err, quiet=quiet_flag),
                                **({"quantizer": quantizer} if quantizer is not None else {}),
                                **({"rotation_trick": True} if rotation_trick else {}))
    if report.path is not None:   # under torchrun, the first process reports
        finish(report, status_log(quiet_flag))
    if report.interrupted and plan is None:   # a process --devices started: the one that started them reports
        from vqgen.interrupts import exit_code

        raise typer.Exit(exit_code(report.signal))


# --------------------------------------------------------------------------- reconstruct


@app.command(cls=Command, epilog="Examples:\n\n  vqgen reconstruct\n\n  vqgen reconstruct --input my_digits/ --out recon/")
@handle_errors
def reconstruct(
    run: Optional[Path] = RUN,
    input: Optional[Path] = typer.Option(None, "--input", "-i", show_default="the held-out split",
                                         help="An image file or a folder of images."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="RUN/reconstruction.png; reconstructions/",
                                       help="PNG grid to write; with --input DIR, the folder for the reconstructions."),
    n: int = typer.Option(16, "--n", help="How many held-out images to show."),
    quiet_flag: bool = QUIET,
) -> None:
    """Originals above reconstructions as one grid; prints MSE and PSNR."""
    from vqgen import commands

    say = status_log(quiet_flag)
    finish(commands.reconstruct(run, input, out, n, log=say), say)


# --------------------------------------------------------------------------- interpolate / gif


@app.command(cls=Command, epilog="Examples:\n\n  vqgen interpolate 4 9 --steps 12\n\n  vqgen interpolate '#3' '#10' --frames frames/"
             "\n\n  vqgen interpolate a.png b.png --run runs/vae-anime-faces --method slerp")
@handle_errors
def interpolate(
    a: str = A,
    b: str = B,
    steps: int = typer.Option(12, "--steps", "-s", help="Frames, start and end included (2 to 1,000)."),
    run: Optional[Path] = RUN,
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="RUN/interp_A_to_B.png", help="PNG strip to write."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write each frame as its own PNG into this folder."),
    method: str = METHOD,
    space: Optional[str] = SPACE,
    quiet_flag: bool = QUIET,
) -> None:
    """Morph A into B through the latent space; writes a PNG strip."""
    from vqgen import commands

    say = status_log(quiet_flag)
    finish(commands.interpolate(a, b, steps, run, out, frames, method, space, log=say), say)


@app.command(cls=Command, epilog="Examples:\n\n  vqgen gif 4 9\n\n  vqgen gif '#10' '#250' --run runs/vae-anime-faces --fps 12"
             "\n\n  vqgen gif --training runs/vqvae-mnist")
@handle_errors
def gif(
    a: Optional[str] = typer.Argument(None, metavar="[A]", help="Start: a class label, #INDEX or an image file."),
    b: Optional[str] = typer.Argument(None, metavar="[B]", help="End: same forms as the start."),
    steps: int = typer.Option(24, "--steps", "-s", help="Frames from A to B (played there and back; 2 to 1,000)."),
    fps: float = typer.Option(12, "--fps", help="Frames per second (at most 50)."),
    run: Optional[Path] = RUN,
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="RUN/morph_A_to_B.gif", help="GIF to write."),
    method: str = METHOD,
    space: Optional[str] = SPACE,
    training: Optional[Path] = typer.Option(None, "--training", help="Instead: animate this run's per-epoch picture grids."),
    quiet_flag: bool = QUIET,
) -> None:
    """The A -> B morph as a looping GIF (there and back), or a run's training progress."""
    from vqgen import commands

    say = status_log(quiet_flag)
    finish(commands.gif(a, b, steps, fps, run, out, method, space, training, log=say), say)


# --------------------------------------------------------------------------- sample


@app.command(cls=Command, epilog="Examples:\n\n  vqgen sample --n 64\n\n  vqgen sample --digit 7 --n 16 --temperature 0.8 --guidance 2"
             "\n\n  vqgen sample --run runs/vae-anime-faces --sampler mix")
@handle_errors
def sample(
    n: int = typer.Option(64, "--n", help="How many images (at most 10,000)."),
    run: Optional[Path] = typer.Option(None, "--run", "-r", show_default="the latest run that can",
                                       help="A VAE, VQ-VAE or prior run."),
    digit: Optional[int] = typer.Option(None, "--digit", show_default="every class in turn",
                                        help="Only this digit (class-conditional prior)."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Only this class, by name."),
    sampler: Optional[str] = SAMPLER,
    temperature: Optional[float] = TEMPERATURE,
    top_k: Optional[int] = TOP_K,
    guidance: Optional[float] = GUIDANCE,
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="RUN/samples_ARGS.png", help="PNG grid to write."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Also write each sample as its own PNG into this folder."),
    quiet_flag: bool = QUIET,
) -> None:
    """New images: from a VAE, or from a VQ-VAE through its learned prior."""
    from vqgen import commands

    say = status_log(quiet_flag)
    finish(commands.sample(n, run, digit, class_name, sampler, temperature, top_k, guidance, seed, out, frames, log=say), say)


# --------------------------------------------------------------------------- score


REAL = "real: the figure for real images (two sets of them for FID and KID)"   # at most 80 columns


def _print_scores(console: Console, rows: list[dict], title: str, with_run: bool = False) -> None:
    """Score rows (commands.score_rows) as a table: figure, value, real, network (and run); the title and
    what "real" means on lines of their own, so that a narrow table does not wrap them."""
    t = table()
    keys = (["run"] if with_run else []) + ["figure", "value", "real", "network"]
    for key in keys:
        t.add_column(key, justify="right" if key in ("value", "real") else "left", overflow="fold")
    for before, r in zip([None] + rows, rows):   # a run named on its first row only
        t.add_row(*[r[key] if key != "run" or before is None or before["run"] != r["run"] else ""
                    for key in keys])
    console.print(title, style="italic", highlight=False, markup=False)
    console.print(t)
    console.print(REAL, style="dim", highlight=False, markup=False)


@app.command(cls=Command, epilog="Examples:\n\n  vqgen score\n\n  vqgen score --run runs/prior-mnist --n 2000\n\n  vqgen score --run runs/prior-mnist --guidance 2\n\n  vqgen score --run runs/vae-faces --sampler mix"
             "\n\n  vqgen score --run runs/vqvae-anime-faces --again --json"
             "\n\nThe Inception network (FID, KID) comes with the score extra: pip install \"vqgen\\[score]\"; "
             "MNIST's digit reader needs none.")
@handle_errors
def score(
    run: Optional[Path] = RUN,
    n: int = typer.Option(1000, "--n", help="Reconstructions or samples to score, against as many real images "
                                            "(10 to 50,000); FIDs compare at the same n only."),
    again: bool = typer.Option(False, "--again", help="Score anew where scores.json has these settings already."),
    device: Optional[str] = DEVICE,
    sampler: Optional[str] = SAMPLER,
    temperature: Optional[float] = TEMPERATURE,
    top_k: Optional[int] = TOP_K,
    guidance: Optional[float] = GUIDANCE,
    network: Optional[str] = typer.Option(None, "--network", show_default="each that fits the data",
                                          help="inception or digits alone (digits: 28x28 digits only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    quiet_flag: bool = QUIET,
) -> None:
    """FID and KID of a run's samples, PSNR, SSIM and FID of its reconstructions; kept with the run."""
    from vqgen import commands
    from vqgen.progress import TrainProgress

    say = status_log(quiet_flag)
    report = commands.score(run, n, again, device, sampler, temperature, top_k, guidance, network, log=say,
                            progress=TrainProgress(console=err, quiet=quiet_flag))
    for line in report.lines:
        say(line)
    found = report.data
    if as_json:
        print(json.dumps(found, indent=2))
        return
    against = "held-out" if found["split"] == "test" else "training"
    title = f"{found['run']} ({found['model']}, epoch {found['epoch']}): {found['n']:,} images, {against} split"
    if report.scores:
        _print_scores(stdout, report.scores, title)
    else:
        say("Nothing was scored")


# --------------------------------------------------------------------------- eval / info


def _cell(key: str, v, figures: dict | None = None) -> str:
    """A table cell: `key` a figure's column (test_mse, train_usage), formatted as its models.Figure says."""
    from vqgen.progress import format_value

    name = key.split("_", 1)[1] if key.startswith(("test_", "train_")) else key
    return format_value(key, v, (figures or {}).get(name))


@app.command("eval", cls=Command, epilog="Examples:\n\n  vqgen eval\n\n  vqgen eval --run runs/vqvae-mnist-2 --json\n\n  vqgen eval --all")
@handle_errors
def eval_cmd(
    run: Optional[Path] = typer.Option(None, "--run", "-r", show_default="the latest run", help="Run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    show_all: bool = typer.Option(False, "--all", help="Every figure in metrics.csv, not only the main ones."),
) -> None:
    """A run's metrics per epoch, as a table or JSON."""
    from vqgen import commands

    done = commands.metrics(run, log=say)
    report, figures = done.data, {f.name: f for _, _, f in done.columns}
    if as_json:
        print(json.dumps(report, indent=2))
        return
    rows = report["epochs"]
    title = f"{report['run']} ({report['model_name']})"
    if show_all:   # every figure: one per line, the epochs across, in blocks that fit the terminal
        keys = [c for c in rows[-1] if c != "epoch"]
        per_block = max(1, (stdout.width - max(len(k) for k in keys) - 2) // 10)
        for start in range(0, len(rows), per_block):
            block = rows[start:start + per_block]
            t = table(title if start == 0 else None)
            t.add_column("epoch")
            for r in block:
                t.add_column(str(r["epoch"]), justify="right")
            for k in keys:
                t.add_row(k, *[_cell(k, r.get(k, ""), figures) for r in block])
            stdout.print(t)
        return
    cols = [("epoch", "epoch")] + [(key, header) for key, header, _ in done.columns if key in rows[-1]]
    held_out = [header for key, header in cols if key.startswith("test_")]
    training = [header for key, header in cols[1:] if not key.startswith("test_")]
    t = table(title)
    for _, header in cols:
        t.add_column(header, justify="right", overflow="fold")
    for r in rows:
        t.add_row(*[_cell(key, r.get(key, ""), figures) for key, _ in cols])
    stdout.print(t)
    if held_out:   # which figures are whose: the held-out images', then the training's speed
        stdout.print(f"{', '.join(held_out)}: on the held-out images"
                     + (f"; {', '.join(training)}: of training" if training else ""), highlight=False)
    if done.scores:   # what `vqgen score` kept
        _print_scores(stdout, done.scores, "scores")


@app.command(cls=Command, epilog="Examples:\n\n  vqgen info runs/vqvae-mnist\n\n  vqgen info model.safetensors"
             "\n\n  vqgen info ready:vqvae-mnist")
@handle_errors
def info(
    run: Optional[Path] = typer.Argument(None, help="Run directory, .safetensors file or ready:NAME "
                                         "(default: latest run, else the ready-trained VQ-VAE)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """What a run or checkpoint is: model, data, settings, size, metrics."""
    from vqgen import commands

    summary = commands.describe(run, log=say).data
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    t = Table(show_header=False, title=summary["ready"] or summary["path"])
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", summary["model_name"])
    t.add_row("trained on", summary["trained_on"])
    t.add_row("epochs", f"{summary['epochs_done']} of {summary['epochs']}")
    w = summary["weights"]   # which weights the commands use: a run's best epoch's
    t.add_row("weights used", w["note"] or (f"epoch {w['epoch']}, the latest" if w["epoch"] is not None else w["file"]))
    t.add_row("parameters", f"{summary['parameters']:,}")
    t.add_row("vqgen", summary["vqgen_version"])
    for k, v in summary["config"]["model_config"].items():
        t.add_row(k, str(v))
    if "codes" in summary:
        codes = summary["codes"]
        t.add_row("codes", f"{codes['codebook_size']:,} per position, on a {codes['grid']}x{codes['grid']} grid")
    if summary["config"].get("parent"):
        t.add_row("trained on the codes of", summary["config"]["parent"].get("run", ""))
    for k, v in summary["metrics"].items():
        if k.startswith("test_"):
            t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    stdout.print(t)
    if summary["card"]:   # a ready-trained model's card: data, settings, figures, how it was made
        from rich.markdown import Markdown

        stdout.print(Markdown(summary["card"]))


# --------------------------------------------------------------------------- runs / compare / map


@app.command("runs", cls=Command, epilog="Examples:\n\n  vqgen runs\n\n  vqgen runs --json\n\n  vqgen runs --clean --yes")
@handle_errors
def runs_cmd(
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that holds the run directories."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    clean: bool = typer.Option(False, "--clean", help="Remove runs that never finished an epoch (asks first); "
                               "runs being trained, or written to in the last 10 minutes, are kept."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --clean: do not ask."),
) -> None:
    """The runs in a folder: model, data, epochs, best held-out figure, size and status."""
    from vqgen import commands

    if clean:
        def confirm(names: list[str]) -> bool:
            return yes or typer.confirm(f"Remove {len(names)} runs that never finished an epoch "
                                        f"({', '.join(names)})?", default=False, err=True)

        report = commands.clean_runs(out, confirm)
        for line in report.lines:
            say(line)
        return
    found = commands.list_runs(out).data["runs"]
    if as_json:
        print(json.dumps(found, indent=2))
        return
    if not found:
        say(f"No runs in {out}/ yet: vqgen train makes one")
        return
    def listing(scored: bool) -> Table | None:
        # Names and paths are never folded mid-word: a run's name is kept whole, and a dataset's path is
        # shortened (~, relative, an ellipsis in the middle) to the room the other columns leave.
        heads = [("run", "left"), ("model", "left"), ("data", "left"), ("epochs", "right"),
                 ("best held out", "right"), *((("score", "right"),) if scored else ()), ("size", "right"),
                 ("status", "left")]
        rows = []
        for r in found:
            best = f"{r['best']['figure']} {_cell('best', r['best']['value'])}" if r["best"] else ""
            rows.append([r["run"], r["model"], r["data"], f"{r['epochs']}/{r['of'] if r['of'] is not None else '?'}",
                         best, *((r["score"]["text"] if r["score"] else "",) if scored else ()),
                         size_text(r["bytes"]), r["status"]])
        others = sum(max(len(head), *(len(row[i]) for row in rows)) + 2
                     for i, (head, _) in enumerate(heads) if head != "data")
        room = stdout.width - others
        if scored and room < min(16, max(len(row[2]) for row in rows)):
            return None   # the scores leave the data too little room
        room = max(8, room)
        t = table(f"runs in {shown_path(out, 60)}/")
        for head, justify in heads:
            whole = {"min_width": max(len(row[0]) for row in rows)} if head == "run" else {}
            t.add_column(head, justify=justify, overflow="ellipsis" if head == "data" else "fold",
                         no_wrap=head in ("run", "data"), **whole)
        for row in rows:
            row[2] = shown_path(row[2], room)
            t.add_row(*row)
        return t

    scored = any(r["score"] for r in found)
    t = listing(scored=True) if scored else None   # with a column of what `vqgen score` kept, where it fits
    if t is None:
        if scored:
            say("Scores left out to fit the terminal: vqgen runs --json or vqgen eval --run RUN show them")
        t = listing(scored=False)
    stdout.print(t)


@app.command(cls=Command, epilog="Examples:\n\n  vqgen compare runs/vqvae-mnist runs/vqvae-mnist-2")
@handle_errors
def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN", help="Run directories to compare."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="compare_A_vs_B.png", help="PNG to write."),
    as_json: bool = typer.Option(False, "--json", help="Print the final figures as JSON."),
    quiet_flag: bool = QUIET,
) -> None:
    """Runs side by side: their curves in one plot, and a table of their final figures."""
    from vqgen import commands

    report = commands.compare(runs, out, log=status_log(quiet_flag))
    if as_json:
        print(json.dumps(report.data, indent=2))
        return
    rows, figures = report.data["runs"], {f.name: f for _, _, f in report.columns}
    cols = [("epoch", "epoch")] + [(key, header) for key, header, _ in report.columns
                                   if any(key in r for r in rows) and key != "seconds"]
    t = table("final epoch")
    t.add_column("run", overflow="fold")
    for _, header in cols:
        t.add_column(header, justify="right", overflow="fold")
    for r in rows:
        t.add_row(r["run"], *[_cell(key, r.get(key, ""), figures) for key, _ in cols])
    if not quiet_flag:
        err.print(t)
        if report.scores:   # what `vqgen score` kept with each run
            _print_scores(err, report.scores, "scores", with_run=True)
    print(report.path)


@app.command("map", cls=Command, epilog="Examples:\n\n  vqgen map\n\n  vqgen map --run runs/vae-mnist --n 5000 --json > map.json")
@handle_errors
def map_cmd(
    run: Optional[Path] = RUN,
    n: int = typer.Option(2000, "--n", help="Held-out images to place (10 to 100,000)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", show_default="RUN/map.png", help="PNG to write."),
    as_json: bool = typer.Option(False, "--json", help="Also print the 2-D coordinates as JSON."),
    quiet_flag: bool = QUIET,
) -> None:
    """The held-out latents in 2-D (PCA), coloured by class; for a VQ-VAE also codebook use and code grids."""
    from vqgen import commands

    say = status_log(quiet_flag)
    report = commands.latent_map(run, n, out, log=say)
    if as_json:
        print(json.dumps(report.data))
        return
    finish(report, say)


@app.command(cls=Command, epilog="Examples:\n\n  vqgen demo\n\n  vqgen demo --run runs/vae-anime-faces --port 7861"
             "\n\nNeeds the demo extra: pip install \"vqgen\\[demo]\"")
@handle_errors
def demo(
    run: Optional[Path] = typer.Option(None, "--run", "-r", show_default="the latest run that can reconstruct",
                                       help="Run directory or .safetensors file to show first."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder of runs the page lists."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on; others than 127.0.0.1 are "
                             "reachable from other machines."),
    port: int = typer.Option(7860, "--port", "-p", help="Port to serve on."),
    share: bool = typer.Option(False, "--share", help="Also make a public link through Gradio's servers "
                               "(needs the internet)."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the page in a web browser."),
) -> None:
    """A local web page to play with trained models: draw, morph, sample, watch training."""
    from vqgen import demo as page

    page.launch(run, out, host, port, share, open_browser, log=say)


def main() -> None:
    try:
        app()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    try:
        sys.stdout.flush()   # what a pipe's reader gets last; a reader that left already is no error
    except BrokenPipeError:
        reader_gone()
    sys.exit(code)
