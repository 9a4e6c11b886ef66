"""`vqgen demo`: a local web page to play with trained models, over Gradio (the `demo` extra).

Everything the page shows comes from the library API (`vqgen.load(...)` and
its `reconstruct`, `codes`, `interpolate` and `sample`) and from the run's own
files (its pictures and records); the page holds no model logic. Its
handlers are plain methods of `Page`, which the tests call directly: each
returns what the page shows, and bad input comes back as a message on the
page (`Page.message`), never a stack trace.

The page makes no network calls of its own: while it is built and served,
Gradio's analytics and the Hub client's telemetry are off and `datasets` and
the Hub client are offline (a run's images come from vqgen's cache), and all is
back as it was after; its fonts are the system's, and a public link is made only when
`share` is asked for, with a warning. It binds to 127.0.0.1 unless told
otherwise.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import numpy as np

from vqgen.api import Model, check_sampling, check_steps, load
from vqgen.errors import UsageError, VQGenError

# While the page is built and served: no analytics or version check from Gradio, no telemetry from the Hub client.
PRIVATE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}

DEFAULT_PORT = 7860
LOCALHOST = "127.0.0.1"
SLIDER_FRAMES = 21          # the morph slider's frames: t = 0, 0.05, ..., 1
CANVAS = 280                # the sketch pad's pixels (ten to one over MNIST's 28)
VIEW = 196                  # reconstructions and code maps are shown this many pixels across
WATCH_SECONDS = 5.0         # how often the train-watch tab looks at the run's files
SAVE = ["download", "fullscreen"]   # no "share" button on pictures: it would post to Hugging Face
# The brush is picked when the page opens, so the first thing a visitor does (draw) just works.
PICK_BRUSH = "() => { setTimeout(() => document.querySelector('#sketch button[aria-label=Brush]')?.click(), 300); }"
INSTALL_HINT = 'the demo needs Gradio: pip install "vqgen[demo]"'


@contextmanager
def private():
    """PRIVATE's settings for the block, where the user has not chosen otherwise; the environment as it
    was after it."""
    added = [k for k in PRIVATE if k not in os.environ]
    os.environ.update({k: PRIVATE[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def require_gradio():
    try:
        with private():   # Gradio reads some of its settings when it is imported
            import gradio
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return gradio


@dataclass
class Shown:
    """What a handler returns for the page: images (uint8 arrays or None) and a message."""
    images: tuple
    message: str = ""


def _uint8(images) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8 RGB (grey repeated), for the browser."""
    from vqgen import images as I

    arr = I.to_uint8(images)
    return np.repeat(arr[..., None], 3, axis=-1) if arr.ndim == 3 else arr


def _enlarge(arr: np.ndarray, size: int = VIEW) -> np.ndarray:
    """An (H, W, 3) uint8 image scaled up by a whole factor (sharp pixels) to about `size`."""
    k = max(1, size // arr.shape[0])
    return arr.repeat(k, axis=0).repeat(k, axis=1)


def _grid(images, nrow: int) -> np.ndarray:
    from vqgen import images as I

    return np.asarray(I.to_pil(I.grid_image(images, nrow)).convert("RGB"))


def fit_drawing(ink: np.ndarray, size: int) -> np.ndarray:
    """A drawing (H, W) in [0, 1] as the model's size, the way MNIST digits are: the strokes' box scaled
    to fit 20/28 of the image and centred by its centre of mass."""
    from PIL import Image

    rows, cols = np.nonzero(ink > 0.05)
    box = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    inner = max(1, round(size * 20 / 28))
    scale = inner / max(box.shape)
    h, w = max(1, round(box.shape[0] * scale)), max(1, round(box.shape[1] * scale))
    small = np.asarray(Image.fromarray((box * 255).astype(np.uint8)).resize((w, h), Image.LANCZOS),
                       dtype=np.float32) / 255
    out = np.zeros((size, size), np.float32)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = ((ys * small).sum() / total, (xs * small).sum() / total) if total > 0 else (h / 2, w / 2)
    top = int(np.clip(round(size / 2 - cy), 0, size - h))
    left = int(np.clip(round(size / 2 - cx), 0, size - w))
    out[top:top + h, left:left + w] = small
    return out


class Page:
    """The page's state and handlers: a folder of runs, and each run's model loaded once."""

    def __init__(self, runs_dir: Path | str = "runs", run: Path | str | None = None):
        self.runs_dir = Path(runs_dir)
        self.first_run = Path(run) if run is not None else None
        self._models: dict[tuple[str, float], Model] = {}
        self._lock = threading.Lock()
        self.gifs = Path(tempfile.mkdtemp(prefix="vqgen-demo-"))

    # ------------------------------------------------------------------ runs

    def run_choices(self) -> list[tuple[str, str]]:
        """(label, path) of every run with a finished epoch under the runs folder, newest first, and the one
        asked for on the command line."""
        from vqgen import runs

        found = [s for s in runs.list_runs(self.runs_dir) if s.usable and s.model is not None]
        choices = [(f"{s.path.name}  ({s.model}, {s.epoch} epochs{'' if s.finished else ', training'})",
                    str(s.path)) for s in reversed(found)]
        choices += [(f"{runs.READY_PREFIX}{s.path.name}  (ready-trained {s.model})", str(s.path))
                    for s in runs.list_runs(runs.READY_DIR) if s.usable and s.model is not None]
        if self.first_run is not None and str(self.first_run) not in {p for _, p in choices}:
            choices.insert(0, (self.first_run.name, str(self.first_run)))
        return choices

    def default_run(self) -> str | None:
        """The run asked for, else the newest run that can reconstruct (else the newest), else the ready-trained
        VQ-VAE shipped with vqgen."""
        if self.first_run is not None:
            return str(self.first_run)
        from vqgen import choosing, models, runs

        try:
            return str(choosing.find_latest_run(models.with_operation("reconstruct"), self.runs_dir,
                                                ready=not runs.list_runs(self.runs_dir)))
        except UsageError:
            choices = self.run_choices()
            return choices[0][1] if choices else None

    def model(self, run: str | None) -> Model:
        """The run's model, loaded once (again when its weights change)."""
        if not run:
            raise UsageError(f"no run chosen: train one with `vqgen train` (runs are looked for in "
                             f"{self.runs_dir}/)")
        from vqgen import runs

        weights = runs.weights_path(Path(run))
        key = (str(weights.resolve()), weights.stat().st_mtime)
        with self._lock:
            if key not in self._models:
                self._models = {k: m for k, m in self._models.items() if k[0] != key[0]}
                self._models[key] = load(run)
            return self._models[key]

    def warm(self, run: str | None) -> None:
        """Make the first stroke and morph fast: load the run's data and run the model once, in the background."""
        def work() -> None:
            try:
                m = self.model(run)
                if m.spec.can("reconstruct"):
                    import torch

                    from vqgen import plots  # noqa: F401 - imported once here, not on the first stroke

                    c, size, _ = m.image_shape
                    m.reconstruct(torch.zeros(1, c, size, size))
                    m.data()
            except Exception:   # noqa: BLE001 - a failure shows when the user asks for that thing
                pass

        threading.Thread(target=work, daemon=True, name="vqgen-warm").start()

    def describe(self, run: str | None) -> str:
        """A line about the run: its model, epochs, data, images and last held-out figures."""
        m = self.model(run)
        c, h, w = m.image_shape
        rows = m.metrics()
        ckpt = m.checkpoint   # the run's best epoch, which may come before its latest
        last = next((r for r in rows if r.get("epoch") == ckpt.epoch), rows[-1] if rows else {})
        figures = ", ".join(f"{f.label} {f.format(last[f'test_{f.name}'])}" for f in m.spec.figures
                            if f.shown and isinstance(last.get(f"test_{f.name}"), (int, float)))
        can = ", ".join(sorted(m.spec.operations)) or "sample"
        from vqgen.commands import score_summary

        try:
            scores = score_summary(m.scores())   # what `vqgen score` kept with the run
        except VQGenError:   # a damaged scores.json leaves them out of the line
            scores = ""
        epochs = f"epoch {ckpt.epoch} of {ckpt.latest_epoch} (its best)" if ckpt.is_earlier_best else \
            f"{ckpt.epoch} epochs"
        return (f"**{m.spec.display_name}**, {epochs} on `{Path(str(m.config.train.dataset)).name}`; "
                f"{w}x{h} {'grey' if c == 1 else 'colour'} images. Held out: {figures or 'none yet'}. "
                + (f"Scores: {scores}. " if scores else "") + f"Can: {can}.")

    def abilities(self, run: str | None) -> dict[str, Any]:
        """What the page offers for this run: which tabs work, the classes, and the sampling options."""
        m = self.model(run)
        out = {"reconstruct": m.spec.can("reconstruct"), "codes": m.spec.can("codes"),
               "interpolate": m.spec.can("interpolate"), "sample": False, "classes": m.class_names or [],
               "sample_classes": [], "sample_options": (), "sample_defaults": {}, "why_not_sample": ""}
        try:
            options = m.sample_options
            out.update(sample=True, sample_options=options, sample_classes=m.sample_classes or [],
                       sample_defaults=m.sample_defaults)
        except VQGenError as e:
            out["why_not_sample"] = str(e)
        return out

    # ------------------------------------------------------------------ draw

    def draw(self, run: str | None, sketch: dict | np.ndarray | None) -> Shown:
        """The reconstruction of a drawing (and, for a model with codes, its code grid as colours)."""
        m = self.model(run)
        m._require("reconstruct")
        ink = _ink(sketch)
        if ink is None or ink.max() <= 0.05:
            return Shown((None, None), "Draw something in the box: white strokes on black, like MNIST's digits.")
        c, size, _ = m.image_shape
        x = fit_drawing(ink, size)
        image = np.repeat(x[None], c, axis=0)[None]
        import torch

        t = torch.from_numpy(image)
        recon = _enlarge(_uint8(m.reconstruct(t))[0])
        codes = None
        if m.spec.can("codes"):
            from vqgen import plots

            grid = m.codes(t)[0].numpy()
            codes = _enlarge(plots.code_colours(grid, m.module.codebook_size), VIEW)
        return Shown((_enlarge(_uint8(t)[0]), recon, codes), "")

    # ------------------------------------------------------------------ morph

    @staticmethod
    def endpoint(spec: str | None, upload) -> Any:
        if upload is not None:
            return upload
        spec = (spec or "").strip()
        if not spec:
            raise UsageError("choose A and B: a class, #INDEX of a held-out image, or an uploaded image")
        return spec

    def morph(self, run: str | None, a: str | None, b: str | None, upload_a=None, upload_b=None,
              steps: int = 12) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """The slider's frames (SLIDER_FRAMES, H, W, 3), the strip of `steps` frames, and a message."""
        m = self.model(run)
        check_steps(int(steps))
        ea, eb = self.endpoint(a, upload_a), self.endpoint(b, upload_b)
        frames = _uint8(m.interpolate(ea, eb, steps=SLIDER_FRAMES))
        strip = _uint8(m.interpolate(ea, eb, steps=int(steps)))
        return frames, _grid_uint8(strip, int(steps)), ""

    @staticmethod
    def frame_at(frames: np.ndarray | None, t: float) -> np.ndarray | None:
        """The slider's frame nearest to t in [0, 1], enlarged."""
        if frames is None or len(frames) == 0:
            return None
        i = int(round(min(max(float(t), 0.0), 1.0) * (len(frames) - 1)))
        return _enlarge(frames[i])

    def gif(self, frames: np.ndarray | None, fps: float = 12.0) -> str:
        """The slider's frames as a GIF file (there and back), for the page to offer as a download."""
        if frames is None or len(frames) == 0:
            raise UsageError("morph first: choose A and B")
        from vqgen import images as I

        x = _floats(frames)
        path = self.gifs / f"morph-{time.strftime('%H%M%S')}-{threading.get_ident() % 1000}.gif"
        return str(I.save_gif(x, path, fps=fps))

    # ------------------------------------------------------------------ sample

    def sample(self, run: str | None, n: int = 16, class_name: str | None = None, temperature: float | None = None,
               guidance: float | None = None, top_k: int | None = None, seed: int | None = None,
               sampler: str | None = None) -> Iterator[tuple[np.ndarray | None, str]]:
        """Sample grids as they are drawn: partial grids while slow sampling goes on, then the finished one."""
        m = self.model(run)
        n = int(n)
        seed = None if seed in (None, "", -1) else int(seed)
        top_k = None if not top_k else int(top_k)
        check_sampling(n, temperature, top_k, guidance, seed)
        options = m.sample_options
        kwargs = {"temperature": temperature, "seed": seed}
        if "guidance" in options and class_name:
            kwargs["guidance"] = guidance
        if "top_k" in options:
            kwargs["top_k"] = top_k
        if "sampler" in options and sampler:
            kwargs["sampler"] = sampler
        if class_name:
            kwargs["class_name"] = class_name
        nrow = max(1, int(np.ceil(np.sqrt(n))))
        updates: queue.Queue = queue.Queue()
        result: dict[str, Any] = {}

        def preview(images, done: float) -> None:
            updates.put((_grid(images, nrow), f"Drawing codes... {done:.0%}"))

        def work() -> None:
            try:
                result["images"] = m.sample(n, preview=preview, **kwargs)
            except BaseException as e:   # shown on the page by the caller
                result["error"] = e
            updates.put(None)

        started = time.monotonic()
        threading.Thread(target=work, daemon=True, name="vqgen-sample").start()
        while (item := updates.get()) is not None:
            yield item
        if "error" in result:
            raise result["error"]
        yield _grid(result["images"], nrow), f"{n} samples in {time.monotonic() - started:.2f} s"

    # ------------------------------------------------------------------ train watch

    def watch(self, run: str | None) -> tuple[Any, Any, str]:
        """The run's newest epoch picture, its curves, and how far it has got."""
        from vqgen import plots, runs
        from vqgen.tracking import STEPS, read_steps

        if not run:
            return None, None, "No run chosen."
        summary = runs.summarize(Path(run))
        if summary is None:
            return None, None, f"{run} is not a run directory."
        pictures = runs.epoch_pictures(summary.path)
        rows = runs.read_metrics(summary.path / runs.METRICS) if (summary.path / runs.METRICS).is_file() else []
        steps = read_steps(summary.path / STEPS) if (summary.path / STEPS).is_file() else []
        curves = plots.to_image(plots.curves_figure([(summary.path.name, steps, rows)])) if rows or steps else None
        state = ("finished" if summary.finished else "interrupted" if (summary.path / runs.INTERRUPTED).is_file()
                 else "training")
        seen = time.strftime("%H:%M:%S")
        return (str(pictures[-1]) if pictures else None, curves,
                f"{summary.path.name}: epoch {summary.epoch} of {summary.epochs or '?'}, {state} "
                f"(looked at {seen})")

    @staticmethod
    def message(error: BaseException) -> str:
        """What the page says when a handler fails: the error's own line, never a stack trace."""
        if isinstance(error, (VQGenError, ValueError)):
            return f"⚠️ {error}"
        return f"⚠️ Something went wrong ({type(error).__name__}: {error})"


def _floats(frames: np.ndarray):
    """(N, H, W, 3) uint8 frames, as the page keeps them, back to (N, 3, H, W) floats in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255)


def _grid_uint8(frames: np.ndarray, nrow: int) -> np.ndarray:
    """A strip of (N, H, W, 3) uint8 frames, scaled up and padded as the CLI's grids are."""
    return _grid(_floats(frames), nrow)


def _ink(sketch) -> np.ndarray | None:
    """A sketch pad's value as ink (H, W) in [0, 1]: the strokes' opacity over its transparent canvas."""
    if sketch is None:
        return None
    image = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if image is None:
        return None
    arr = np.asarray(image).astype(np.float32)
    arr = arr / 255 if arr.max() > 1 else arr
    if arr.ndim == 3:   # over black: what is transparent is background
        grey = arr[..., :3].mean(-1)
        arr = grey * arr[..., 3] if arr.shape[-1] == 4 else grey
    return 1 - arr if arr.mean() > 0.5 else arr   # dark strokes on a light canvas


# --------------------------------------------------------------------------- the page


def guarded(fn: Callable, outputs: int) -> Callable:
    """A handler that shows its failure as the last output (a message) and blanks the others."""
    import functools
    import inspect

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args):
            try:
                yield from fn(*args)
            except Exception as e:   # noqa: BLE001 - the page says what went wrong, in one line
                yield (*([None] * (outputs - 1)), Page.message(e))
        return stream

    @functools.wraps(fn)
    def call(*args):
        try:
            return fn(*args)
        except Exception as e:   # noqa: BLE001
            return (*([None] * (outputs - 1)), Page.message(e))
    return call


def build(page: Page):
    """The Gradio Blocks of the page: the run chooser, a tab per thing to do, and their wiring."""
    gr = require_gradio()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="vqgen demo", analytics_enabled=False) as blocks:
        gr.Markdown("# vqgen demo\nDraw a digit, morph one image into another, or sample new ones. "
                    "Choose a trained run first.")
        with gr.Row():
            run = gr.Dropdown(choices=page.run_choices(), value=page.default_run(), label="run", scale=3,
                              allow_custom_value=True)
            refresh = gr.Button("↻ runs", scale=0, min_width=80)
        ui = SimpleNamespace(run=run, refresh=refresh, about=gr.Markdown())
        _draw_tab(gr, ui)
        _morph_tab(gr, ui)
        _sample_tab(gr, ui)
        _watch_tab(gr, ui)
        _wire(gr, page, blocks, ui)
    blocks.vqgen_theme = theme
    blocks.vqgen_timer = ui.timer
    return blocks


def _draw_tab(gr, ui: SimpleNamespace) -> None:
    with gr.Tab("Draw") as ui.draw_tab:
        gr.Markdown("Draw in the black box; the model's reconstruction appears after each stroke.")
        with gr.Row():
            black = np.zeros((CANVAS, CANVAS, 3), np.uint8)
            ui.sketch = gr.Sketchpad(value={"background": black, "layers": [], "composite": black},
                                     label="draw here", canvas_size=(CANVAS, CANVAS), fixed_canvas=True,
                                     image_mode="RGBA", type="numpy", layers=False, transforms=(), format="png",
                                     brush=gr.Brush(default_size=22, colors=["#ffffff"], color_mode="fixed"),
                                     elem_id="sketch", height=CANVAS + 120, width=CANVAS + 40)
            ui.seen = gr.Image(label="as the model sees it", elem_id="seen", interactive=False, height=VIEW + 40,
                               buttons=SAVE)
            ui.recon = gr.Image(label="reconstruction", elem_id="recon", interactive=False, height=VIEW + 40,
                                buttons=SAVE)
            ui.codes = gr.Image(label="code grid (one colour per code)", elem_id="codes", interactive=False,
                                height=VIEW + 40, buttons=SAVE)
        ui.draw_note = gr.Markdown(elem_id="draw-note")


def _morph_tab(gr, ui: SimpleNamespace) -> None:
    with gr.Tab("Morph") as ui.morph_tab:
        with gr.Row():
            ui.a = gr.Dropdown(label="A: a class or #INDEX of a held-out image", allow_custom_value=True,
                               elem_id="morph-a")
            ui.b = gr.Dropdown(label="B", allow_custom_value=True, elem_id="morph-b")
            ui.steps = gr.Slider(2, 24, value=12, step=1, label="frames in the strip")
        with gr.Accordion("or upload A and B", open=False):
            with gr.Row():
                ui.up_a = gr.Image(label="A", type="pil", sources=["upload"], height=160)
                ui.up_b = gr.Image(label="B", type="pil", sources=["upload"], height=160)
        ui.go = gr.Button("Morph", variant="primary", elem_id="morph-go")
        with gr.Row():
            ui.t = gr.Slider(0, 1, value=0.5, step=1 / (SLIDER_FRAMES - 1), label="from A (0) to B (1)",
                             elem_id="morph-t")
            ui.frame = gr.Image(label="frame", elem_id="morph-frame", interactive=False, height=VIEW + 40,
                                buttons=SAVE)
        ui.strip = gr.Image(label="strip", elem_id="morph-strip", interactive=False, buttons=SAVE)
        with gr.Row():
            ui.make_gif = gr.Button("Make a GIF")
            ui.gif_file = gr.File(label="GIF", elem_id="morph-gif")
        ui.morph_note = gr.Markdown(elem_id="morph-note")
        ui.frames = gr.State(None)


def _sample_tab(gr, ui: SimpleNamespace) -> None:
    with gr.Tab("Sample") as ui.sample_tab:
        with gr.Row():
            ui.n = gr.Slider(1, 64, value=16, step=1, label="images")
            ui.klass = gr.Dropdown(label="class (none: every class in turn)", elem_id="sample-class")
            ui.sampler = gr.Radio(["prior", "mix"], value="prior", label="sampler: N(0, I) or mixes of training "
                                  "latents", visible=False)
        with gr.Row():
            # Where each slider starts is the chosen run's sampler's own default (set when a run is chosen).
            ui.temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="temperature")
            ui.guidance = gr.Slider(1.0, 4.0, value=1.0, step=0.1, label="guidance (with a class)")
            ui.top_k = gr.Number(0, label="top-k (0: all codes)", precision=0, minimum=0)
            ui.seed = gr.Number(0, label="seed (-1: new each time)", precision=0, minimum=-1)
        ui.draw_samples = gr.Button("Sample", variant="primary", elem_id="sample-go")
        ui.samples = gr.Image(label="samples", elem_id="samples", interactive=False, buttons=SAVE)
        ui.sample_note = gr.Markdown(elem_id="sample-note")


def _watch_tab(gr, ui: SimpleNamespace) -> None:
    with gr.Tab("Train watch") as ui.watch_tab:
        gr.Markdown(f"The run's newest epoch picture and its curves, looked at every {WATCH_SECONDS:.0f} s "
                    "while this tab is open.")
        ui.watch_note = gr.Markdown(elem_id="watch-note")
        with gr.Row():
            ui.picture = gr.Image(label="newest epoch picture", interactive=False, buttons=SAVE)
            ui.curves = gr.Image(label="curves", interactive=False, buttons=SAVE)
        ui.timer = gr.Timer(WATCH_SECONDS, active=False)


def _wire(gr, page: Page, blocks, ui: SimpleNamespace) -> None:
    """What each control does: every handler is a method of `page`, guarded so that errors show as text."""
    def choose(path):
        try:
            can = page.abilities(path)
            text = page.describe(path)
            page.warm(path)
        except Exception as e:   # noqa: BLE001
            return (Page.message(e), *[gr.update()] * 9)
        classes, options, starts = can["classes"], can["sample_options"], can["sample_defaults"]
        note = "" if can["sample"] else f"Sampling: {can['why_not_sample']}"
        return (text,
                gr.update(choices=classes + ["#0", "#1", "#2"], value=classes[4 % len(classes)] if classes
                          else "#0"),
                gr.update(choices=classes + ["#0", "#1", "#2"], value=classes[9 % len(classes)] if classes
                          else "#1"),
                gr.update(choices=[""] + can["sample_classes"], value=""),
                gr.update(visible="sampler" in options),
                gr.update(**({"value": starts["temperature"]} if "temperature" in starts else {})),
                gr.update(visible="guidance" in options,
                          **({"value": starts["guidance"]} if "guidance" in starts else {})),
                gr.update(visible="top_k" in options),
                gr.update(visible=can["codes"]),
                note)

    chosen = [ui.about, ui.a, ui.b, ui.klass, ui.sampler, ui.temperature, ui.guidance, ui.top_k, ui.codes,
              ui.sample_note]
    ui.run.change(choose, ui.run, chosen)
    blocks.load(choose, ui.run, chosen)
    ui.refresh.click(lambda cur: gr.update(choices=page.run_choices(), value=cur), ui.run, ui.run)

    def on_draw(path, value):
        shown = page.draw(path, value)
        return (*((shown.images + (None, None, None))[:3]), shown.message)

    # `input`: each stroke the user makes (`change` also fires when the page sets the value).
    ui.sketch.input(guarded(on_draw, 4), [ui.run, ui.sketch], [ui.seen, ui.recon, ui.codes, ui.draw_note],
                    trigger_mode="always_last", show_progress="hidden", queue=False)

    def on_morph(path, a_, b_, ua, ub, k, t_):
        fr, st, msg = page.morph(path, a_, b_, ua, ub, k)
        return fr, st, page.frame_at(fr, t_), msg

    ui.go.click(guarded(on_morph, 4), [ui.run, ui.a, ui.b, ui.up_a, ui.up_b, ui.steps, ui.t],
                [ui.frames, ui.strip, ui.frame, ui.morph_note], concurrency_id="quick")
    ui.t.change(lambda fr, t_: page.frame_at(fr, t_), [ui.frames, ui.t], ui.frame, trigger_mode="always_last",
                show_progress="hidden", queue=False)
    ui.make_gif.click(guarded(lambda fr: (page.gif(fr), ""), 2), ui.frames, [ui.gif_file, ui.morph_note])

    ui.draw_samples.click(guarded(page.sample, 2),
                          [ui.run, ui.n, ui.klass, ui.temperature, ui.guidance, ui.top_k, ui.seed, ui.sampler],
                          [ui.samples, ui.sample_note], concurrency_id="sample", concurrency_limit=1)

    watch = [ui.picture, ui.curves, ui.watch_note]
    ui.timer.tick(guarded(page.watch, 3), ui.run, watch, show_progress="hidden")
    ui.watch_tab.select(guarded(page.watch, 3), ui.run, watch).then(lambda: gr.Timer(active=True), None, ui.timer)
    for tab in (ui.draw_tab, ui.morph_tab, ui.sample_tab):
        tab.select(lambda: gr.Timer(active=False), None, ui.timer)


def launch(run: Path | str | None = None, runs_dir: Path | str = "runs", host: str = LOCALHOST,
           port: int = DEFAULT_PORT, share: bool = False, open_browser: bool = False,
           log: Callable[[str], None] = print) -> None:
    """Serve the page until interrupted (Ctrl-C)."""
    if not 1 <= int(port) <= 65535:
        raise UsageError(f"`port` {port}: a port is 1 to 65535")
    require_gradio()
    if run is not None:
        from vqgen import runs

        run = runs.resolve_run(run)   # ready:NAME, a ready-trained run shipped with vqgen
        if not run.exists():
            raise UsageError(f"`run` {run}: no such run directory or weights file")
    page = Page(runs_dir, run)
    first = page.default_run()
    if first is None:
        raise UsageError(f"no trained run under {runs_dir}/ to show: train one with `vqgen train`, or pass `run`")
    if run is None:
        from vqgen import runs

        if runs.is_ready(first):
            log(runs.using(Path(first)))
    if run is not None:
        page.model(str(run))   # a run that does not load fails here, in one line, before the page opens
    if host not in (LOCALHOST, "localhost"):
        log(f"Warning: serving on {host}: anyone who can reach this machine can use the page")
    if share:
        log("Warning: --share makes a public link through Gradio's servers: anyone with it can use the page")
    from vqgen.data.sources import hub_offline

    with private(), hub_offline():   # a run's data comes from the cache, never from the Hub
        serve(build(page), host, port, share, open_browser, log)


def serve(blocks, host: str, port: int, share: bool, open_browser: bool, log: Callable[[str], None]) -> None:
    """Serve the built page until Ctrl-C."""
    try:
        blocks.queue(default_concurrency_limit=2).launch(
            server_name=host, server_port=int(port), share=share, inbrowser=open_browser, quiet=True,
            show_error=False, theme=blocks.vqgen_theme, js=PICK_BRUSH, footer_links=[], mcp_server=False, ssr_mode=False,
            pwa=False, enable_monitoring=False, prevent_thread_lock=True)
    except OSError as e:
        raise UsageError(f"`port` {port}: cannot listen there ({e}); pass another `port`") from None
    log(f"vqgen demo on http://{'127.0.0.1' if host == LOCALHOST else host}:{port} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        blocks.close()
