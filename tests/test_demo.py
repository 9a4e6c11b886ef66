"""`vqgen demo`: the page's handlers called directly, the command's errors, and the page in a real browser.

The browser test needs Chromium (Debian's `chromium` package, or VQGEN_CHROMIUM
pointing at a Chromium binary) and Playwright for Python; it is skipped, saying
which is missing, when they are not there. VQGEN_DEMO_RUN points it at a real
run instead of the tiny one, VQGEN_DEMO_SCREENSHOT saves the page as a PNG
there, and VQGEN_DEMO_REPORT writes its timings as JSON.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def page(home):
    pytest.importorskip("gradio", reason='the demo extra is not installed: pip install "vqgen[demo]"')
    from vqgen.demo import Page

    return Page(home / "runs")


def run_of(home, kind: str) -> str:
    return str(home / "runs" / f"{kind}-mnist")


def stroke(size: int = 280) -> dict:
    """A sketch pad's value: a white vertical stroke (a "1") over its black background."""
    canvas = np.zeros((size, size, 4), np.uint8)
    canvas[..., 3] = 255
    canvas[60:220, 130:150, :3] = 255
    return {"background": None, "layers": [], "composite": canvas}


# --------------------------------------------------------------------------- the handlers


def test_page_lists_the_runs_and_opens_on_the_newest_autoencoder(page, home):
    choices = [c for c in page.run_choices() if not c[0].startswith("ready:")]   # the ready-trained ones after
    paths = [p for _, p in choices]
    assert sorted(Path(p).name for p in paths) == ["prior-mnist", "vae-mnist", "vqvae-mnist"]
    assert all(re.search(r"\((vqvae|vae|prior), \d epochs\)", label) for label, _ in choices)
    assert Path(page.default_run()).name == "vqvae-mnist"   # the newest that can reconstruct
    text = page.describe(run_of(home, "vqvae"))
    assert text.startswith("**VQ-VAE**, 1 epochs on `mnist`; 28x28 grey images. Held out: MSE 0.")
    assert re.search(r"Held out: MSE 0\.\d{5}, PSNR \d+\.\d\d dB, codebook usage \d+%\. Can: ", text), text


def test_draw_shows_what_the_model_sees_its_reconstruction_and_codes(page, home):
    import torch

    import vqgen

    shown = page.draw(run_of(home, "vqvae"), stroke())
    seen, recon, codes = shown.images
    assert shown.message == ""
    assert seen.shape == recon.shape == (196, 196, 3) and codes.shape == (196, 196, 3)
    assert seen.dtype == np.uint8 and recon.std() > 0
    # what the page shows is the library's reconstruction of the fitted drawing
    model = vqgen.load(run_of(home, "vqvae"))
    x = torch.from_numpy(seen[::7, ::7, :1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    expected = model.reconstruct(x)[0, 0].mul(255).round().numpy()
    assert np.abs(recon[::7, ::7, 0].astype(float) - expected).max() <= 1
    # the code map has one colour per code of the grid (7x7 cells of 28 pixels)
    grid = model.codes(x)[0].numpy()
    cells = codes[::28, ::28]
    assert cells.shape[:2] == grid.shape
    same = grid[:, :, None] == grid.reshape(-1)[None, None]
    colours_same = (cells[:, :, None] == cells.reshape(-1, 3)[None, None]).all(-1)
    assert (same == colours_same).all()


def test_a_vae_run_draws_without_codes(page, home):
    shown = page.draw(run_of(home, "vae"), stroke())
    assert shown.images[1].shape == (196, 196, 3) and shown.images[2] is None


def test_an_empty_drawing_asks_for_a_stroke(page, home):
    blank = {"background": None, "layers": [], "composite": np.zeros((280, 280, 4), np.uint8)}
    for value in (blank, None):
        shown = page.draw(run_of(home, "vqvae"), value)
        assert shown.images == (None, None) and shown.message.startswith("Draw something in the box")


def test_drawings_are_fitted_like_mnist_digits():
    from vqgen.demo import fit_drawing

    ink = np.zeros((280, 280), np.float32)
    ink[10:60, 200:270] = 1.0     # a blob in a corner, wider than tall
    out = fit_drawing(ink, 28)
    rows, cols = np.nonzero(out > 0.5)
    assert cols.max() - cols.min() + 1 in (19, 20, 21)     # the longer side scaled to 20 of 28
    ys, xs = np.indices(out.shape)
    assert abs((ys * out).sum() / out.sum() - 14) < 1 and abs((xs * out).sum() / out.sum() - 14) < 1


def test_morph_frames_come_from_the_api_and_change_with_the_slider(page, home):
    import vqgen
    from vqgen.demo import SLIDER_FRAMES

    frames, strip, message = page.morph(run_of(home, "vqvae"), "4", "9", None, None, 6)
    assert message == "" and frames.shape == (SLIDER_FRAMES, 28, 28, 3)
    expected = vqgen.load(run_of(home, "vqvae")).interpolate("4", "9", steps=SLIDER_FRAMES)
    assert np.abs(frames[..., 0].astype(float) - expected[:, 0].mul(255).round().numpy()).max() <= 1
    assert strip.shape[1] > 5 * strip.shape[0]       # six tiles in a row
    first, middle, last = (page.frame_at(frames, t) for t in (0.0, 0.5, 1.0))
    assert first.shape == (196, 196, 3)
    assert (first == np.repeat(np.repeat(frames[0], 7, 0), 7, 1)).all()
    assert (last == np.repeat(np.repeat(frames[-1], 7, 0), 7, 1)).all()
    assert not (first == middle).all() and not (middle == last).all()
    assert page.frame_at(None, 0.5) is None


def test_morph_takes_held_out_indices_and_uploaded_images_of_any_size(page, home):
    frames, _, _ = page.morph(run_of(home, "vqvae"), "#0", "#1", None, None, 4)
    assert frames.shape[0] == 21
    colour = Image.new("RGB", (100, 60), (200, 30, 30))
    frames2, _, _ = page.morph(run_of(home, "vqvae"), "#0", None, None, colour, 4)
    assert frames2.shape == frames.shape and not (frames2[-1] == frames[-1]).all()


def test_the_gif_button_writes_a_gif_of_the_frames(page, home):
    import imageio.v3 as iio

    frames, _, _ = page.morph(run_of(home, "vqvae"), "4", "9", None, None, 6)
    path = Path(page.gif(frames))
    assert path.suffix == ".gif" and path.is_file()
    gif = iio.imread(path, index=None)
    assert gif.shape[1:3] == (112, 112) and gif.shape[0] >= 2   # scaled x4 (Pillow merges equal frames)


def test_sample_by_class_and_without(page, home):
    for run in (run_of(home, "vqvae"), run_of(home, "prior")):
        out = list(page.sample(run, 10, "7", 0.7, 1.5, 0, 3, None))
        grid, message = out[-1]
        assert grid.ndim == 3 and grid.shape[2] == 3 and grid.std() > 0
        assert message.startswith("10 samples in ")
    a = list(page.sample(run_of(home, "vqvae"), 4, "", 1.0, 1.5, 5, 3, None))[-1][0]
    b = list(page.sample(run_of(home, "vqvae"), 4, "", 1.0, 1.5, 5, 3, None))[-1][0]
    assert (a == b).all()          # a seed repeats the draw


def test_sampling_controls_start_at_the_samplers_own_defaults(page, home):
    from vqgen import models

    prior = models.get("prior")
    can = page.abilities(run_of(home, "vqvae"))   # samples through its prior
    assert can["sample_defaults"]["temperature"] == 0.7 and can["sample_defaults"]["top_k"] == 0
    assert can["sample_defaults"]["guidance"] == prior.sample_starts["guidance"] == 1.5
    assert page.abilities(run_of(home, "vae"))["sample_defaults"] == {"temperature": 1.0, "sampler": "prior"}


def test_vae_samples_from_n01_or_mixes(page, home):
    can = page.abilities(run_of(home, "vae"))
    assert can["sample"] and "sampler" in can["sample_options"] and not can["codes"]
    prior = list(page.sample(run_of(home, "vae"), 4, "", 1.0, None, None, 1, "prior"))[-1][0]
    mix = list(page.sample(run_of(home, "vae"), 4, "", 1.0, None, None, 1, "mix"))[-1][0]
    assert prior.shape == mix.shape and not (prior == mix).all()


def test_sampling_slowly_shows_the_grid_as_codes_are_drawn(home):
    import torch

    from vqgen import generate
    from vqgen.api import open_run, open_sampler

    _, sampler = open_sampler(open_run(run_of(home, "vqvae"), "sample"))
    seen = []
    out = generate.sample(sampler, 3, label=None, generator=torch.Generator().manual_seed(0),
                          preview=lambda images, done: seen.append((images.clone(), done)), preview_every=0.0)
    assert len(seen) == 48 and [d for _, d in seen] == [k / 49 for k in range(1, 49)]   # all but the last code
    images, done = seen[6]           # 7 codes drawn: the first row, then grey below it
    assert images.shape == out.shape and (images[..., 4:, :] == 0.5).all()
    assert not (images[..., :4, :] == 0.5).all()
    again = generate.sample(sampler, 3, label=None, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)   # previews change nothing in the draw


def test_bad_input_on_the_page_is_a_message_not_a_trace(page, home):
    from vqgen.demo import guarded

    cases = [
        (guarded(page.morph, 3), (run_of(home, "vqvae"), "", "9"), "choose A and B"),
        (guarded(page.morph, 3), (run_of(home, "vqvae"), "4", "x"), "'x': the dataset has no such class"),
        (guarded(page.morph, 3), (run_of(home, "prior"), "4", "9"), "cannot interpolate"),
        (guarded(page.sample, 2), (run_of(home, "vqvae"), 4, "11"), "classes are 0, 1"),
        (guarded(lambda r, v: page.draw(r, v).images, 4), (run_of(home, "prior"), stroke()), "cannot reconstruct"),
        (guarded(page.morph, 3), (str(home / "runs" / "nope"), "4", "9"), "nope"),
        (guarded(page.morph, 3), (None, "4", "9"), "no run chosen"),
        (guarded(lambda fr: page.gif(fr), 1), (None,), "morph first"),
    ]
    for fn, args, text in cases:
        result = fn(*args)
        result = list(result)[-1] if not isinstance(result, tuple) else result
        message = result[-1]
        assert message.startswith("⚠️ ") and text in message, (args, message)
        assert "Traceback" not in message and all(r is None for r in result[:-1])


def test_train_watch_shows_the_newest_picture_curves_and_progress(page, home):
    picture, curves, text = page.watch(run_of(home, "vae"))
    assert Path(picture).name == "recon_epoch_002.png"
    assert curves.size[0] > 300 and np.asarray(curves).std() > 0
    assert text.startswith("vae-mnist: epoch 2 of 2, finished")
    assert page.watch(str(home))[2].endswith("is not a run directory.")


def test_models_are_loaded_once_per_run(page, home):
    a = page.model(run_of(home, "vqvae"))
    assert page.model(run_of(home, "vqvae")) is a and page.model(run_of(home, "vae")) is not a


# --------------------------------------------------------------------------- the command


def test_demo_without_gradio_says_how_to_install(home, monkeypatch, invoke):
    monkeypatch.setitem(sys.modules, "gradio", None)     # import gradio now fails
    r = invoke("demo", "--run", run_of(home, "vqvae"), "--no-open", cwd=home)
    assert r.exit_code == 2 and 'pip install "vqgen[demo]"' in r.output


def test_demo_refuses_a_bad_port_a_missing_run_and_an_empty_folder(home, tmp_path, invoke, monkeypatch):
    pytest.importorskip("gradio")
    r = invoke("demo", "--port", "70000", "--no-open", cwd=home)
    assert r.exit_code == 2 and "--port 70000" in r.output
    r = invoke("demo", "--run", home / "nope", "--no-open", cwd=home)
    assert r.exit_code == 2 and "--run" in r.output and "nope" in r.output
    from vqgen import runs

    monkeypatch.setattr(runs, "READY_DIR", tmp_path / "none-shipped")   # no ready-trained runs to open on
    r = invoke("demo", "--no-open", cwd=tmp_path)
    assert r.exit_code == 2 and "no trained run under runs/" in r.output


def test_demo_on_a_port_in_use_is_one_line(home, invoke):
    pytest.importorskip("gradio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = invoke("demo", "--port", port, "--no-open", cwd=home)
    assert r.exit_code == 2 and f"--port {port}: cannot listen there" in r.output


# --------------------------------------------------------------------------- in a real browser


def chromium() -> str | None:
    for candidate in (os.environ.get("VQGEN_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def image_at(page, selector: str, old: str | None = None, timeout: float = 30.0) -> tuple[Image.Image, str]:
    """The image an <img> under `selector` shows (waiting until its address differs from `old`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        img = page.locator(f"{selector} img")
        src = img.first.get_attribute("src") if img.count() else None
        if src and src != old:
            return Image.open(io.BytesIO(page.request.get(src).body())), src
        time.sleep(0.02)
    raise AssertionError(f"no new image in {selector} after {timeout} s")


def test_the_page_in_a_real_browser(home, tmp_path, free_port):
    pytest.importorskip("gradio", reason='the demo extra is not installed: pip install "vqgen[demo]"')
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install "
                                     "playwright)")
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no Chromium here: apt-get install chromium (or set VQGEN_CHROMIUM to a Chromium binary)")
    run = str(Path(os.environ["VQGEN_DEMO_RUN"]).resolve()) if os.environ.get("VQGEN_DEMO_RUN") else run_of(home, "vqvae")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vqgen", "demo", "--run", run, "--port", str(port), "--no-open"],
                              cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        line = ""
        while "vqgen demo on" not in line:
            line = server.stdout.readline()
            assert line or server.poll() is None, "the demo stopped before it served"
            assert time.monotonic() - started < 120, "the demo did not start in 2 minutes"
        timings["server start (s)"] = time.monotonic() - started
        url = f"http://127.0.0.1:{port}/"
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            elsewhere = []
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:"))
                    else elsewhere.append(r.url))
            t = time.monotonic()
            page.goto(url)
            page.wait_for_selector("#sketch canvas")
            page.wait_for_function("document.querySelector('#sketch button[aria-label=Brush]') !== null")
            timings["first page load (s)"] = time.monotonic() - t

            # Draw: one stroke down the middle of the pad (the brush is picked when the page opens).
            time.sleep(0.5)
            box = page.locator("#sketch canvas").last.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 10, cy - 60)
            page.mouse.down()
            for i in range(16):
                page.mouse.move(cx - 10 + i, cy - 60 + 8 * i, steps=2)
            t = time.monotonic()
            page.mouse.up()
            recon, _ = image_at(page, "#recon")
            timings["draw: stroke to reconstruction (s)"] = time.monotonic() - t
            arr = np.asarray(recon.convert("L"))
            assert recon.size == (196, 196) and arr.std() > 3, "the reconstruction is blank"
            seen, seen_src = image_at(page, "#seen")
            assert np.asarray(seen.convert("L")).max() > 200       # the stroke reached the model
            _, recon_src = image_at(page, "#recon")
            page.mouse.move(cx - 40, cy - 60)                     # a second stroke: a bar across the top
            page.mouse.down()
            page.mouse.move(cx + 20, cy - 60, steps=8)
            t = time.monotonic()
            page.mouse.up()
            second, _ = image_at(page, "#recon", old=recon_src)
            timings["draw: later stroke to reconstruction (s)"] = time.monotonic() - t
            assert not (np.asarray(second.convert("L")) == arr).all()
            if os.environ.get("VQGEN_DEMO_SCREENSHOT"):
                page.screenshot(path=os.environ["VQGEN_DEMO_SCREENSHOT"])

            # Morph: A and B are a class each by default; the slider picks frames.
            page.get_by_role("tab", name="Morph").click()
            page.locator("#morph-go").click()
            t = time.monotonic()
            middle, src = image_at(page, "#morph-frame")
            timings["morph: button to first frame (s)"] = time.monotonic() - t
            assert middle.size == (196, 196)
            slider = page.locator("#morph-t input[type=range]")
            frames = [np.asarray(middle.convert("L"))]
            steps = []
            for value in ("0", "0.25", "0.75", "1"):
                slider.fill(value)
                t = time.monotonic()
                shown, src = image_at(page, "#morph-frame", old=src)
                steps.append(time.monotonic() - t)
                frames.append(np.asarray(shown.convert("L")))
            timings["morph: slider step to frame (s, median)"] = sorted(steps)[len(steps) // 2]
            timings["morph: slider step to frame (s, worst)"] = max(steps)
            assert all(f.shape == (196, 196) and f.std() > 3 for f in frames)
            assert not (frames[1] == frames[4]).all() and not (frames[0] == frames[1]).all()

            # Sample: the default is every class in turn.
            page.get_by_role("tab", name="Sample").click()
            t = time.monotonic()
            page.locator("#sample-go").click()
            grid, _ = image_at(page, "#samples")
            page.wait_for_function("document.querySelector('#sample-note').innerText.includes('samples in')")
            timings["sample: 16 images (s)"] = time.monotonic() - t
            assert grid.size[0] > 300 and np.asarray(grid.convert("L")).std() > 3
            assert "samples in" in page.locator("#sample-note").inner_text()
            browser.close()
        assert elsewhere == [], f"the page reached beyond this machine: {elsewhere}"
    finally:
        server.terminate()
        server.wait(timeout=30)
    print("\n" + "\n".join(f"{k}: {v:.3f}" for k, v in timings.items()))
    if os.environ.get("VQGEN_DEMO_REPORT"):
        Path(os.environ["VQGEN_DEMO_REPORT"]).write_text(json.dumps(timings, indent=2))
