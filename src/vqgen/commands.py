"""The commands: what each does, as one library function that checks, computes, writes the files and says
what was done.

The command line parses its flags, calls one of these and prints the
`Report` it returns: status lines on stderr, the path written (or JSON) on
stdout. Each function checks its cheap arguments before PyTorch is loaded,
and computes through the Python API (`vqgen.train`, `Model`) only.
Arguments have the names of the flags, so an error that names `steps`
becomes "--steps ..." on the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vqgen import api
from vqgen.api import MAX_SAMPLES, SCORE_N, Model, check_map_size, check_sampling, check_scoring, check_steps, open_run
from vqgen.errors import UsageError, explain
from vqgen.files import check_output_dir, check_output_file, output_names, slug, unique_path
from vqgen.settings import at_least, check_arg, one_of, positive

Log = Callable[[str], None]
MAX_FPS = 50.0   # GIF frame times count in hundredths of a second: faster frames are not shown faster


def _quiet(_: str) -> None:
    pass


@dataclass
class Report:
    """What a command did: the path it wrote (printed on stdout), status lines, data for --json, and whether
    it was interrupted and by which signal (the command line exits with 128 + it: 130 for Ctrl-C)."""
    path: Path | None = None
    lines: list[str] = field(default_factory=list)
    data: dict | None = None
    interrupted: bool = False
    signal: int = 2
    columns: list[tuple[str, str, object]] = field(default_factory=list)   # a table's (key, header, Figure)
    scores: list[dict] = field(default_factory=list)   # score rows as a table shows them (`score_rows`)


def _out_dir(run_dir: Path) -> Path:
    """Where a command writes by default: beside the run, or runs/ready-trained/ for a ready-trained run
    (read-only, inside the package)."""
    from vqgen import runs

    return runs.output_dir(run_dir)


# --------------------------------------------------------------------------- train


def train(model: str | None = None, dataset: str | None = None, *, progress=None, **settings) -> Report:
    """Train a model, or resume a run (`vqgen.train`'s arguments): the run directory, and its held-out figures.

    Under torchrun, a process other than the first has no run directory to report (`path` None).
    """
    result = api.train(model, dataset, progress=progress, **settings)
    return Report(result.run_dir, [result.summary] if result.summary else [], interrupted=result.interrupted,
                  signal=result.signal or 2)


def train_planned(plan: Path) -> Report:
    """One of the processes `train` starts with `devices`, under torchrun: it trains as the plan file says and
    reports nothing (the process that started them does)."""
    return Report(interrupted=api.train_planned(plan).interrupted)


# --------------------------------------------------------------------------- reconstruct


def reconstruct(run: Path | None = None, input: Path | None = None, out: Path | None = None, n: int = 16,
                log: Log = _quiet) -> Report:
    """Originals above reconstructions as one grid, or one reconstruction per file of an input folder."""
    check_arg("n", n, at_least(1, MAX_SAMPLES))
    folder_in = input is not None and Path(input).is_dir()
    if input is not None and not Path(input).exists():
        raise UsageError(f"`input` {input}: no such file or folder")
    if out is not None:
        if folder_in:
            if Path(out).suffix.lower() == ".png":
                raise UsageError("`input` DIR writes one file per image: give `out` a folder, not a .png")
            check_output_dir(out, "out", inputs=[input])
        else:
            check_output_file(out, "out", inputs=[input] if input is not None else [])
    import torch

    from vqgen import data, images
    from vqgen.metrics import psnr

    model = Model(open_run(run, "reconstruct", log))
    c, size, _ = model.image_shape
    report = Report()
    if input is None:
        model.data(log)
        x = model.held_out(n)
    elif folder_in:   # the files' names too, for the reconstructions'
        x, paths, unreadable = data.load_image_folder(input, size, c)
        if unreadable:
            names = ", ".join(p.name for p in unreadable[:10]) + (", ..." if len(unreadable) > 10 else "")
            report.lines.append(f"Skipped {len(unreadable)} unreadable images: {names}")
    else:
        x = model.images(input)
    recon = model.reconstruct(x)
    mse = torch.mean((recon - x) ** 2).item()
    report.lines.append(f"MSE {mse:.5f}  PSNR {psnr(mse):.2f} dB over {len(x)} images")
    if folder_in:
        folder = Path(out) if out is not None else unique_path(Path("reconstructions"))
        names = output_names(paths)
        shared = [f"{p.name} -> {name}" for p, name in zip(paths, names) if name != f"{p.stem}.png"]
        if shared:
            report.lines.append(f"Inputs that share a name get the extension in theirs: {', '.join(shared)}")
        for name, img in zip(names, recon):
            images.save_png(img, folder / name)
        report.path = folder
        return report
    what = f"_{slug(Path(input).stem)}" if input is not None else (f"_n{n}" if n != 16 else "")
    report.path = Path(out) if out is not None else \
        unique_path(_out_dir(model.run_dir) / f"reconstruction{what}.png")
    nrow = min(len(x), 16)
    rows = []
    for i in range(0, len(x), nrow):
        rows += [x[i:i + nrow], recon[i:i + nrow]]
    images.save_grid(torch.cat(rows), report.path, nrow=nrow,
                     row_labels=["original", "reconstruction"] * (len(rows) // 2))
    return report


# --------------------------------------------------------------------------- morphs


def _endpoint_files(*specs) -> list[Path]:
    return [Path(x) for x in specs if x is not None and Path(x).is_file()]


def _morph(a: str, b: str, steps: int, run: Path | None, method: str, space: str | None, log: Log):
    check_steps(steps)
    check_arg("method", method, one_of("lerp", "slerp"))
    from vqgen import choosing

    named = api.class_endpoints(a, b)   # without `run`: the newest run that has these classes
    model = Model(open_run(run, "interpolate", log, need=choosing.with_classes(named) if named else None))
    return model, model.interpolate(a, b, steps, method=method, space=space, log=log)


def _endpoint_name(spec: str) -> str:
    """An endpoint as it reads in a file name (docs/usage.md#output-names): '4' for the class 4, 'test10' for
    the held-out image '#10', 'a' for 'a.png'."""
    p = Path(spec)
    if spec.startswith("#"):
        return "test" + slug(spec[1:])
    return slug(p.stem if p.suffix else spec)


def _morph_name(a: str, b: str, method: str, space: str | None) -> str:
    extra = (f"_{method}" if method != "lerp" else "") + (f"_{space}" if space else "")
    return f"{_endpoint_name(a)}_to_{_endpoint_name(b)}{extra}"


def interpolate(a: str, b: str, steps: int = 12, run: Path | None = None, out: Path | None = None,
                frames: Path | None = None, method: str = "lerp", space: str | None = None,
                log: Log = _quiet) -> Report:
    """The morph of A into B as a PNG strip (and, with `frames`, one PNG per frame)."""
    if out is not None:
        check_output_file(out, "out", inputs=_endpoint_files(a, b))
    if frames is not None:
        check_output_dir(frames, "frames")
    from vqgen import images

    model, seq = _morph(a, b, steps, run, method, space, log)
    report = Report(Path(out) if out is not None else
                    unique_path(_out_dir(model.run_dir) / f"interp_{_morph_name(a, b, method, space)}.png"))
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
    if out is not None:
        check_output_file(out, "out", (".gif",), inputs=_endpoint_files(a, b))
    if training is not None:
        return training_gif(training, fps, out)
    if a is None or b is None:
        raise UsageError("give two endpoints (vqgen gif 4 9), or `training` RUN")
    from vqgen import images

    model, seq = _morph(a, b, steps, run, method, space, log)
    path = Path(out) if out is not None else \
        unique_path(_out_dir(model.run_dir) / f"morph_{_morph_name(a, b, method, space)}.gif")
    images.save_gif(seq, path, fps=fps)
    return Report(path)


def training_gif(run_dir: Path, fps: float = 4.0, out: Path | None = None) -> Report:
    """One frame per epoch: the run's per-epoch pictures (unreadable ones left out and counted)."""
    import numpy as np
    import torch
    from PIL import Image

    from vqgen import images, runs
    from vqgen.decode import DECODE_ERRORS

    pics = runs.epoch_pictures(run_dir)
    if not pics:
        raise UsageError(f"{run_dir}: no per-epoch pictures to animate; is it a run directory?")
    if len(pics) == 1:
        raise UsageError(f"{run_dir}: one epoch, so one picture ({pics[0].name}); a training GIF needs two or more: "
                         f"vqgen train --resume {run_dir} --epochs 2")
    frames, left_out = [], []
    for p in pics:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB")).copy()
        except DECODE_ERRORS:
            left_out.append(p.name)
            continue
        if frames and arr.shape != frames[0].shape:
            left_out.append(p.name)
            continue
        frames.append(arr)
    if len(frames) < 2:
        raise UsageError(f"{run_dir}: fewer than two readable per-epoch pictures ({', '.join(left_out)} damaged)")
    path = Path(out) if out is not None else unique_path(Path(run_dir) / "training.gif")
    stacked = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in frames]).float().div(255)
    images.save_gif(stacked, path, fps=min(fps, 4), bounce=False)
    report = Report(path)
    if left_out:
        report.lines.append(f"Left out {len(left_out)} damaged pictures: {', '.join(left_out)}")
    return report


# --------------------------------------------------------------------------- sample


def _sample_name(n: int, digit, class_name, sampler, temperature, top_k, guidance, seed) -> str:
    """samples_digit-7.png, samples_n64.png, samples_digit-7_n16_t0.9.png: the arguments that were given
    (docs/usage.md#output-names)."""
    parts = [f"digit-{digit}"] if digit is not None else [f"class-{slug(class_name)}"] if class_name is not None else []
    if n != 64 or not parts:
        parts.append(f"n{n}")
    for key, value in (("", sampler), ("t", temperature), ("k", top_k), ("g", guidance)):
        if value is not None:
            parts.append(f"{key}{value:g}" if isinstance(value, (int, float)) else f"{key}{value}")
    if seed:
        parts.append(f"seed{seed}")
    return "samples_" + "_".join(parts) + ".png"


def sample(n: int = 64, run: Path | None = None, digit: int | None = None, class_name: str | None = None,
           sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
           guidance: float | None = None, seed: int = 0, out: Path | None = None, frames: Path | None = None,
           log: Log = _quiet) -> Report:
    """New images as a grid (and, with `frames`, one PNG each)."""
    check_sampling(n, temperature, top_k, guidance, seed)
    if out is not None:
        check_output_file(out, "out")
    if frames is not None:
        check_output_dir(frames, "frames")
    from vqgen import choosing, images

    asked = str(digit) if digit is not None else class_name   # without `run`: the newest that samples it
    model = Model(open_run(run, "sample", log, need=choosing.samples_class(asked) if asked is not None else None))
    pics = model.sample(n, digit=digit, class_name=class_name, temperature=temperature, top_k=top_k,
                        guidance=guidance, sampler=sampler, seed=seed, log=log)
    name = _sample_name(n, digit, class_name, sampler, temperature, top_k, guidance, seed)
    report = Report(Path(out) if out is not None else unique_path(_out_dir(model.sampler_run) / name))
    in_turn = model.sample_classes if digit is None and class_name is None else None
    if in_turn:   # every class in turn: one column per class, labelled
        images.save_grid(pics, report.path, nrow=min(n, len(in_turn)), col_labels=in_turn[:n])
    else:   # "digit 7" (MNIST), "class cat"; else what drew them
        asked = digit if digit is not None else class_name
        title = f"{model.sample_class_word} {asked}" if asked is not None else \
            f"{n} samples from {model.sampler_run.name}"
        images.save_grid(pics, report.path, nrow=10 if n == 10 else max(1, round(math.sqrt(n))), title=title)
    if frames:
        images.save_frames(pics, frames, prefix="sample")
        report.lines.append(f"Wrote {n} samples to {frames}")
    return report


# --------------------------------------------------------------------------- score


NETWORK_NAMES = {"inception": "Inception", "digits": "digit reader", "pixels": "pixels"}


def _score_figures() -> dict:
    """How each score reads: name, format, unit (models.Figure)."""
    from vqgen.models.registry import Figure

    return {f.name: f for f in (
        Figure("fid", "FID", fmt="{:.2f}"), Figure("kid", "KID", fmt="{:.4f}"),
        Figure("psnr", "PSNR", fmt="{:.2f}", unit="dB", lower_is_better=False),
        Figure("ssim", "SSIM", fmt="{:.3f}", lower_is_better=False),
        Figure("read_as_asked", "read as asked", fmt="{:.1%}", lower_is_better=False))}


def _score_label(what: str, name: str, figure) -> str:
    """rFID for reconstructions, gFID for samples; other figures by their label."""
    return ("r" if what == "reconstructions" else "g") + figure.label if name == "fid" else figure.label


def score_rows(entries: list[dict]) -> list[dict]:
    """Each figure of these score entries as a table row of text: {"of" (reconstructions or samples),
    "figure" (rFID, gFID, KID, PSNR, SSIM, read as asked), "value", "real" (the same figure for real images),
    "network", "n"}; the share read as asked is followed by one row per class."""
    figures, rows = _score_figures(), []
    for e in entries:
        values, real, what = e.get("figures") or {}, e.get("real") or {}, e.get("what", "")
        for name, v in values.items():
            f = figures.get(name)
            if f is None or not isinstance(v, (int, float)):
                continue
            std = values.get(f"{name}_std")
            row = {"of": what, "figure": _score_label(what, name, f),
                   "value": f.format(v) + (f" ± {f.format(std)}" if isinstance(std, (int, float)) else ""),
                   "real": f.format(real[name]) if isinstance(real.get(name), (int, float)) else "",
                   "network": NETWORK_NAMES.get(e.get("network"), str(e.get("network"))), "n": f"{e.get('n', 0):,}"}
            rows.append(row)
            if name == "read_as_asked":
                real_classes = e.get("real_per_class") or {}
                rows += [{**row, "figure": f"  asked {cls}", "value": f.format(share),
                          "real": f.format(real_classes[cls]) if cls in real_classes else ""}
                         for cls, share in (e.get("per_class") or {}).items()]
    return rows


def score_headline(entries: list[dict]) -> dict | None:
    """The one score that says most of a run: the FID of its samples, else of its reconstructions; by the
    Inception network where it has one, else the digit reader. {"figure", "value", "text", "network", "n"}."""
    figures = _score_figures()
    for what in ("samples", "reconstructions"):
        for network in ("inception", "digits"):
            e = next((e for e in entries if e.get("what") == what and e.get("network") == network), None)
            v = ((e or {}).get("figures") or {}).get("fid")
            if isinstance(v, (int, float)):
                label = _score_label(what, "fid", figures["fid"])
                text = f"{label} {figures['fid'].format(v)}" + (" (digits)" if network == "digits" else "")
                return {"figure": label, "value": v, "text": text, "network": network, "n": e.get("n")}
    return None


def score_summary(entries: list[dict]) -> str:
    """The scores in one line: 'rFID 12.31, PSNR 20.14 dB, SSIM 0.812 (n 1,000); gFID 23.40 (Inception) ...'."""
    parts = []
    for e in entries:
        shown = [f"{r['figure']} {r['value']}" for r in score_rows([e]) if not r["figure"].startswith(" ")]
        if shown:
            network = "" if e.get("network") == "pixels" else f"{NETWORK_NAMES.get(e.get('network'), e.get('network'))}, "
            parts.append(f"{', '.join(shown)} ({network}n {e.get('n', 0):,})")
    return "; ".join(parts)


def _kept_scores(run_dir: Path) -> list[dict]:
    """The newest scores kept with a run; none where its scores.json is damaged (a listing goes on)."""
    from vqgen import runs
    from vqgen.errors import RunError

    try:
        return api.newest_scores(runs.read_scores(run_dir))
    except (RunError, UsageError):
        return []


def score(run: Path | None = None, n: int = SCORE_N, again: bool = False, device: str | None = None,
          sampler: str | None = None, temperature: float | None = None, top_k: int | None = None,
          guidance: float | None = None, network: str | None = None, log: Log = _quiet, progress=None) -> Report:
    """A run's scores as its model declares them (`Model.score`): computed and kept in its scores.json, or
    read back from there for settings scored before (unless `again`); samples drawn with the options given."""
    check_scoring(n, device=device)
    check_sampling(1, temperature, top_k, guidance, 0)
    if network is not None:
        check_arg("network", network, one_of("inception", "digits"))
    from vqgen import runs

    model = Model(open_run(run, "score", log))
    found = model.score(n, again=again, device=device, sampler=sampler, temperature=temperature, top_k=top_k,
                        guidance=guidance, network=network, log=log, progress=progress)
    found = {"model": model.spec.display_name, "epoch": model.checkpoint.epoch, **found}
    report = Report(runs.scores_path(model.run_dir), data=found, scores=score_rows(found["scores"]))
    stored = [e for e in found["scores"] if e["stored"]]
    if stored and len(stored) == len(found["scores"]):
        report.lines.append(f"Scored before ({stored[-1].get('when', '?')}): read back; --again scores anew")
    else:
        kept = sorted({str(runs.scores_path(runs.resolve_run(e["run"]))) for e in found["scores"] if not e["stored"]})
        if kept:
            report.lines.append(f"Kept in {', '.join(kept)}")
    return report


# --------------------------------------------------------------------------- eval / info


def _any_run(run: Path | None, log: Log) -> Path:
    """`run`, or the run `eval` and `info` describe without one: the newest run trained on images (the model
    the user looks at; a prior trained since on its codes is named beside it), else the newest of any kind,
    else the ready-trained one."""
    from vqgen import choosing, models, runs

    if run is None:
        every = [models.get(n) for n in models.names()]
        try:
            run, line = choosing.choose_run([s for s in every if s.trains_on == "images"], ready=False,
                                            need=choosing.Need("trained on images"))
            newer = [s for s in runs.list_runs() if s.usable and s.mtime > runs.summarize(run).mtime]
            if newer:
                line = line[:-1] + f"; newer: {newer[-1].path})"
        except UsageError:
            run, line = choosing.choose_run(every)
        log(line)
    run = runs.resolve_run(run)
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
        why = "no finished epoch yet; train the run first" if epoch == 0 else f"no metrics in {runs.METRICS}"
        raise UsageError(f"{run_dir}: {why}")
    from vqgen import models

    spec = models.find(meta["vqgen_model"])
    scores = _kept_scores(run_dir)
    return Report(run_dir, data={"run": runs.run_label(run_dir), "model": meta["vqgen_model"],
                                 "model_name": spec.display_name if spec else meta["vqgen_model"],
                                 "epochs": rows, "final": rows[-1], "scores": scores},
                  columns=_columns([spec] if spec else []), scores=score_rows(scores))


def _trained_on(dataset: str, source: str | None) -> str:
    """A run's data in one phrase: the name it was given and where that led ("mnist (vqgen:mnist)"), or the
    folder once where the name was a path to it."""
    if not source or source == dataset:
        return dataset
    try:
        same = Path(dataset).expanduser().resolve() == Path(source)
    except (OSError, RuntimeError):
        same = False
    return source if same else f"{dataset} ({source})"


def describe(run: Path | None = None, log: Log = _quiet) -> Report:
    """What a run or checkpoint is: model, data, settings, size, metrics."""
    from vqgen import runs

    ckpt = runs.load_checkpoint(_any_run(run, log))   # the weights the commands use: a run's best epoch's
    summary = {"path": str(ckpt.path), "model": ckpt.kind, "model_name": ckpt.spec.display_name,
               "vqgen_version": ckpt.version, "parameters": sum(p.numel() for p in ckpt.model.parameters()),
               "dataset": ckpt.config.train.dataset, "dataset_source": ckpt.info.get("dataset_source"),
               "trained_on": _trained_on(ckpt.config.train.dataset, ckpt.info.get("dataset_source")),
               "epochs_done": ckpt.run_epoch if "epoch" in ckpt.info else None, "epochs": ckpt.config.train.epochs,
               "weights": {"file": ckpt.path.name, "epoch": ckpt.info.get("epoch"), "latest": not ckpt.is_earlier_best,
                           "note": runs.which_epoch(ckpt) if ckpt.is_earlier_best else ""},
               "metrics": ckpt.info.get("metrics", {}), "config": ckpt.config.to_dict()}
    if ckpt.spec.can("codes"):   # sizes that follow from the quantiser's settings (fsq: its levels)
        summary["codes"] = {"codebook_size": ckpt.model.codebook_size, "grid": ckpt.model.latent_grid}
    summary["ready"] = runs.ready_name(ckpt.path)       # ready:NAME for a model shipped with vqgen
    summary["card"] = runs.read_card(ckpt.path)         # its MODEL_CARD.md: data, settings, figures, how made
    return Report(ckpt.path, data=summary)


# --------------------------------------------------------------------------- runs / compare / map


def _columns(specs: list) -> list[tuple[str, str, object]]:
    """The per-epoch figures a table shows for runs of these models, as (key, header, models.Figure): the
    held-out figures each epoch shows, those with a plot panel of their own and what is drawn beside them;
    the loss where no model has a headline figure; then speed and time."""
    from vqgen import models
    from vqgen.models.registry import Figure

    figures = models.figures(specs)
    twins = {f.twin for f in figures if f.twin}
    wanted = [f for f in figures if f.shown or f.name in twins or f.panel not in ("", "loss", "learning rate")]
    if not any(spec.figures and spec.headline in spec.figures for spec in specs):
        wanted.insert(0, figures[0])   # the loss
    columns = [(f"test_{f.name}", (f.short or f.label) + (f" {f.unit}" if 0 < len(f.unit) <= 3 else ""), f)
               for f in wanted]
    return columns + [("img_per_s", "img/s", Figure("img_per_s", "img/s", fmt="{:,.0f}")),
                      ("seconds", "s", Figure("seconds", "s"))]


def _best(rows: list[dict], spec) -> tuple[str, float] | None:
    """The run's best held-out headline figure (its model's, else the loss): the lowest, or the highest where
    higher is better; the epoch whose weights the run keeps as its best (`runs.best_row`)."""
    from vqgen import runs

    found = runs.best_row(rows, spec)
    if found is None:
        return None
    figure, row = found
    return figure.short or figure.label, row[f"test_{figure.name}"]


def _size(path: Path) -> int:
    """The bytes of a run's files, a file linked twice (best.safetensors) counted once, its lock file not."""
    from vqgen import runs

    seen, total = set(), 0
    for p in Path(path).rglob("*"):
        if p.is_file() and not p.is_symlink() and p.name != runs.LOCK:
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def list_runs(runs_dir: Path = Path("runs")) -> Report:
    """Every run under `runs_dir`: model, data, epochs, best held-out figure, size and status ("training" while
    a process holds it)."""
    from vqgen import locks, models, runs

    out = []
    for s in runs.list_runs(runs_dir):
        rows = []
        try:
            rows = runs.read_metrics(s.path / runs.METRICS, upto_epoch=s.epoch)
        except UsageError:
            pass
        except Exception:  # noqa: BLE001 - a damaged metrics file only leaves the figure out of a listing
            rows = []
        spec = models.find(s.model) if s.model else None
        cfg = {}
        if s.meta is not None:
            import json

            cfg = json.loads(s.meta["config"])
        best = _best(rows, spec)
        status = "finished" if s.finished else ("interrupted" if s.usable else "no finished epoch")
        if locks.holder(s.path) is not None:
            status = "training"
        out.append({"run": s.path.name, "path": str(s.path), "model": spec.display_name if spec else (s.model or "?"),
                    "data": (cfg.get("train") or {}).get("dataset", ""), "epochs": s.epoch, "of": s.epochs,
                    "best": {"figure": best[0], "value": best[1]} if best else None,
                    "score": score_headline(_kept_scores(s.path)),
                    "bytes": _size(s.path), "status": status})
    return Report(Path(runs_dir), data={"runs": out})


def _record_written(run_dir: Path) -> float | None:
    """When a trainer last wrote the run's record (steps.csv, TensorBoard's events, a mid-epoch state), as a
    time stamp; None where it has none. A trainer writes them within a minute while it trains."""
    from vqgen import runs
    from vqgen.tracking import STEPS

    times = []
    for p in Path(run_dir).iterdir():
        if p.name in (STEPS, runs.INTERRUPTED) or p.name.startswith("events.out.tfevents."):
            try:
                times.append(p.stat().st_mtime)
            except OSError:
                pass
    return max(times) if times else None


def clean_runs(runs_dir: Path = Path("runs"), confirm: Callable[[list[str]], bool] = lambda names: True,
               now: float | None = None) -> Report:
    """Remove the runs that never finished an epoch (after `confirm(names)`), and stale temporary files.

    A run that a process holds (training it: its lock), or that was written to in the last
    `runs.RECENT_SECONDS` (it may be training on another machine), is kept, and one line says which and why.
    Each run removed is locked while it goes, so that no training starts in it meanwhile."""
    import shutil
    import time

    from vqgen import locks, runs
    from vqgen.files import remove_stale_temps
    from vqgen.locks import RunInUse

    now = time.time() if now is None else now
    report = Report(Path(runs_dir))
    temps = sum(remove_stale_temps(s.path) for s in runs.list_runs(runs_dir))
    if temps:
        report.lines.append(f"Removed {temps} temporary files left by killed runs")
    held, kept = [], []
    try:
        for s in runs.list_runs(runs_dir):
            if s.usable:
                continue
            try:
                lock = runs.lock_run(s.path, "vqgen runs --clean, removing it", action="remove")
            except RunInUse:
                holder = locks.holder(s.path)
                kept.append(f"{s.path.name} (held by {holder.describe() if holder else 'another process'})")
                continue
            written = _record_written(s.path)
            if written is not None and now - written < runs.RECENT_SECONDS:
                lock.release()
                kept.append(f"{s.path.name} (its record written {max(now - written, 0) / 60:.0f} min ago)")
                continue
            held.append((s.path, lock))
        if kept:
            report.lines.append(f"Kept {len(kept)} run{'s' if len(kept) > 1 else ''} in use or written to in the last "
                                f"{runs.RECENT_SECONDS // 60} minutes, perhaps training now: {', '.join(kept)}")
        if not held:
            if not kept:
                report.lines.append("No runs to clean: every run has at least one finished epoch")
            return report
        doomed = [p for p, _ in held]
        if not confirm([p.name for p in doomed]):
            report.lines.append("Nothing removed")
            return report
        for p in doomed:
            try:
                shutil.rmtree(p)
            except OSError as e:   # a read-only folder: named
                raise explain(e, p, action="remove") or e from None
        report.lines.append(f"Removed {len(doomed)} runs that never finished an epoch: "
                            f"{', '.join(p.name for p in doomed)}")
        report.data = {"removed": [str(p) for p in doomed]}
        return report
    finally:
        for _, lock in held:
            lock.release()


def compare(run_dirs: list[Path], out: Path | None = None, log: Log = _quiet) -> Report:
    """The runs' curves in one plot (one colour per run) and their final figures side by side."""
    if len(run_dirs) < 1:
        raise UsageError("give one or more runs to compare: vqgen compare runs/a runs/b")
    if out is not None:
        check_output_file(out, "out")
    from vqgen import models, plots, runs
    from vqgen.tracking import STEPS, read_steps

    curves, table, scored = [], [], []
    names, specs = [], []
    for run in run_dirs:
        summary = runs.summarize(runs.resolve_run(run))   # ready:NAME too
        if summary is None or not summary.usable:
            raise UsageError(f"{run}: not a run with a finished epoch")
        rows = runs.read_metrics(summary.path / runs.METRICS, upto_epoch=summary.epoch)
        name = runs.ready_name(summary.path) or summary.path.name
        name = name if name not in names else str(summary.path)
        names.append(name)
        curves.append((name, read_steps(summary.path / STEPS), rows))
        kept = _kept_scores(summary.path)
        table.append({"run": name, "model": summary.model, **(rows[-1] if rows else {}), "scores": kept})
        scored += [{"run": name, **row} for row in score_rows(kept)]
        specs += [spec for spec in (models.find(summary.model),) if spec is not None and spec not in specs]
    label = "_vs_".join(slug(Path(r).name) for r in run_dirs[:3])
    first = runs.resolve_run(run_dirs[0])   # by default, beside the runs: in the folder that holds the first
    beside = runs.output_dir(first) if runs.is_ready(first) else Path(first).parent
    path = Path(out) if out is not None else unique_path(beside / f"compare_{label}.png")
    plots.save(plots.curves_figure(curves, title="  vs  ".join(names), figures=models.figures(specs)), path)
    return Report(path, data={"runs": table}, columns=_columns(specs), scores=scored)


def latent_map(run: Path | None = None, n: int = 2000, out: Path | None = None, log: Log = _quiet) -> Report:
    """Held-out latents in 2-D (PCA), coloured by class; for a model with codes, codebook use and code grids."""
    check_map_size(n)
    if out is not None:
        check_output_file(out, "out")
    from vqgen import plots

    model = Model(open_run(run, "encode", log))
    found = model.latent_map(n, log)
    x, labels, coords = found.images, found.labels, found.coords.numpy()
    usage = found.usage.numpy() if found.usage is not None else None
    examples = None if found.codes is None else \
        [(x[i].permute(1, 2, 0).squeeze(-1).numpy(), found.codes[i].numpy()) for i in range(min(2, len(x)))]
    title = f"{model.spec.display_name} {model.run_dir.name}: {len(x):,} held-out images of {model.config.train.dataset}"
    fig = plots.latent_map_figure(coords, labels.numpy() if labels is not None else None, model.class_names,
                                  found.explained, title, usage, examples)
    path = Path(out) if out is not None else unique_path(_out_dir(model.run_dir) / "map.png")
    plots.save(fig, path)
    points = [{"x": float(a), "y": float(b), **({"label": int(labels[i])} if labels is not None else {})}
              for i, (a, b) in enumerate(coords)]
    data_out = {"run": str(model.run_dir), "png": str(path), "method": "pca",
                "explained_variance": list(found.explained), "class_names": model.class_names, "points": points}
    if usage is not None:
        data_out["codebook_usage"] = usage.tolist()
    return Report(path, data=data_out)
