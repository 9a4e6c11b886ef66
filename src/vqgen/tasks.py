"""What each command does, as one library function: check, compute, write the files, say what was done.

The command line parses its flags, calls one of these and prints the
`Report` it returns: status lines on stderr, the path written (or JSON) on
stdout. Each function checks its cheap arguments before PyTorch is loaded.
Arguments have the names of the flags, so an error that names `steps`
becomes "--steps ..." on the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vqgen.api import MAX_SAMPLES, Model, check_sampling, check_steps, open_run
from vqgen.errors import UsageError
from vqgen.settings import at_least, check_arg, one_of, positive

Log = Callable[[str], None]
MAX_FPS = 50.0   # GIF frame times count in hundredths of a second: faster frames are not shown faster


def _quiet(_: str) -> None:
    pass


@dataclass
class Report:
    """What a command did: the path it wrote (printed on stdout), status lines, data for --json."""
    path: Path | None = None
    lines: list[str] = field(default_factory=list)
    data: dict | None = None


# --------------------------------------------------------------------------- reconstruct


def reconstruct(run: Path | None = None, input: Path | None = None, out: Path | None = None, n: int = 16,
                log: Log = _quiet) -> Report:
    """Originals above reconstructions as one grid, or one reconstruction per file of an input folder."""
    check_arg("n", n, at_least(1, MAX_SAMPLES))
    import torch

    from vqgen import data, generate, images
    from vqgen.metrics import psnr

    model = Model(open_run(run, "reconstruct", log))
    c, size, _ = model.image_shape
    report = Report()
    paths = None
    if input is None:
        model.data(log)
        x = model.held_out(n)
    elif Path(input).is_dir():
        x, paths, skipped = data.load_image_folder(input, size, c)
        if skipped:
            report.lines.append(f"Skipped {skipped} unreadable images")
    elif Path(input).exists():
        x = data.load_image_file(input, size, c)
    else:
        raise UsageError(f"`input` {input}: no such file or folder")
    recon = generate.reconstruct(model.module, x)
    mse = torch.mean((recon - x) ** 2).item()
    report.lines.append(f"MSE {mse:.5f}  PSNR {psnr(mse):.2f} dB over {len(x)} images")
    if paths is not None:
        folder = Path(out) if out is not None else Path("reconstructions")
        if folder.suffix.lower() == ".png":
            raise UsageError("`input` DIR writes one file per image: give `out` a folder, not a .png")
        folder.mkdir(parents=True, exist_ok=True)
        for p, img in zip(paths, recon):
            images.save_png(img, folder / f"{p.stem}.png")
        report.path = folder
        return report
    report.path = Path(out) if out is not None else model.run_dir / "reconstruction.png"
    nrow = min(len(x), 16)
    rows = []
    for i in range(0, len(x), nrow):
        rows += [x[i:i + nrow], recon[i:i + nrow]]
    images.save_grid(torch.cat(rows), report.path, nrow=nrow)
    return report


# --------------------------------------------------------------------------- morphs


def _morph(a: str, b: str, steps: int, run: Path | None, method: str, space: str | None, log: Log):
    check_steps(steps)
    check_arg("method", method, one_of("lerp", "slerp"))
    model = Model(open_run(run, "interpolate", log))
    return model, model.interpolate(a, b, steps, method=method, space=space, log=log)


def interpolate(a: str, b: str, steps: int = 12, run: Path | None = None, out: Path | None = None,
                frames: Path | None = None, method: str = "lerp", space: str | None = None,
                log: Log = _quiet) -> Report:
    """The morph of A into B as a PNG strip (and, with `frames`, one PNG per frame)."""
    from vqgen import generate, images

    model, seq = _morph(a, b, steps, run, method, space, log)
    report = Report(Path(out) if out is not None else
                    model.run_dir / f"interp_{generate.endpoint_name(a)}_to_{generate.endpoint_name(b)}.png")
    images.save_grid(seq, report.path, nrow=steps)
    if frames:
        images.save_frames(seq, frames)
        report.lines.append(f"Wrote {steps} frames to {frames}")
    return report


def gif(a: str | None = None, b: str | None = None, steps: int = 24, fps: float = 12.0, run: Path | None = None,
        out: Path | None = None, method: str = "lerp", space: str | None = None, training: Path | None = None,
        log: Log = _quiet) -> Report:
    """The A -> B morph as a GIF that loops there and back, or (`training`) a run's per-epoch pictures."""
    check_arg("fps", fps, positive(MAX_FPS))
    if training is not None:
        return training_gif(training, fps, out)
    if a is None or b is None:
        raise UsageError("give two endpoints (vqgen gif 4 9), or `training` RUN")
    from vqgen import generate, images

    model, seq = _morph(a, b, steps, run, method, space, log)
    path = Path(out) if out is not None else \
        model.run_dir / f"morph_{generate.endpoint_name(a)}_to_{generate.endpoint_name(b)}.gif"
    images.save_gif(seq, path, fps=fps)
    return Report(path)


def training_gif(run_dir: Path, fps: float = 4.0, out: Path | None = None) -> Report:
    """One frame per epoch: the run's per-epoch pictures."""
    import numpy as np
    import torch
    from PIL import Image

    from vqgen import images, runs

    pics = runs.epoch_pictures(run_dir)
    if not pics:
        raise UsageError(f"{run_dir}: no per-epoch pictures to animate; is it a run directory?")
    if len(pics) == 1:
        raise UsageError(f"{run_dir}: one epoch, so one picture ({pics[0].name}); a training GIF needs two or more: "
                         f"vqgen train --resume {run_dir} --epochs 2")
    frames = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)
                          for p in pics]).float().div(255)
    path = Path(out) if out is not None else Path(run_dir) / "training.gif"
    images.save_gif(frames, path, fps=min(fps, 4), bounce=False)
    return Report(path)


# --------------------------------------------------------------------------- sample


def sample(n: int = 64, run: Path | None = None, digit: int | None = None, class_name: str | None = None,
           sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
           guidance: float | None = None, seed: int = 0, out: Path | None = None, frames: Path | None = None,
           log: Log = _quiet) -> Report:
    """New images as a grid (and, with `frames`, one PNG each)."""
    check_sampling(n, temperature, top_k, guidance)
    from vqgen import images

    model = Model(open_run(run, "sample", log))
    pics = model.sample(n, digit=digit, class_name=class_name, temperature=temperature, top_k=top_k,
                        guidance=guidance, sampler=sampler, seed=seed, log=log)
    report = Report(Path(out) if out is not None else model.sampler_run / "samples.png")
    images.save_grid(pics, report.path, nrow=10 if n == 10 else max(1, round(math.sqrt(n))))
    if frames:
        images.save_frames(pics, frames, prefix="sample")
        report.lines.append(f"Wrote {n} samples to {frames}")
    return report


# --------------------------------------------------------------------------- eval / info


def _any_run(run: Path | None, log: Log) -> Path:
    from vqgen import models, runs

    if run is None:
        run = runs.find_latest_run([models.get(n) for n in models.names()])
        log(f"Using run {run}")
    run = Path(run)
    if not run.exists():
        raise UsageError(f"{run}: no such run directory or checkpoint file")
    return run


def metrics(run: Path | None = None, log: Log = _quiet) -> Report:
    """A run's metrics per finished epoch."""
    import json

    from vqgen import runs

    run = _any_run(run, log)
    run_dir = runs.run_dir_of(run)
    meta = runs.read_metadata(runs.weights_path(run))
    epoch = int(json.loads(meta.get("info", "{}")).get("epoch", 0))
    rows = runs.read_metrics(run_dir / runs.METRICS, upto_epoch=epoch)
    if not rows:
        raise UsageError(f"{run_dir}: no finished epoch yet; train the run first")
    return Report(run_dir, data={"run": str(run_dir), "model": meta["vqgen_model"], "epochs": rows,
                                 "final": rows[-1]})


def describe(run: Path | None = None, log: Log = _quiet) -> Report:
    """What a run or checkpoint is: model, data, settings, size, metrics."""
    from vqgen import runs

    ckpt = runs.load_checkpoint(_any_run(run, log))
    summary = {"path": str(ckpt.path), "model": ckpt.kind, "model_name": ckpt.spec.display_name,
               "vqgen_version": ckpt.version, "parameters": sum(p.numel() for p in ckpt.model.parameters()),
               "dataset": ckpt.config.train.dataset, "dataset_source": ckpt.info.get("dataset_source"),
               "epochs_done": ckpt.info.get("epoch"), "epochs": ckpt.config.train.epochs,
               "metrics": ckpt.info.get("metrics", {}), "config": ckpt.config.to_dict()}
    return Report(ckpt.path, data=summary)
