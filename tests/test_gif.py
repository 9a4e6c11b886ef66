"""GIFs: a morph there and back, a single frame, a run's training progress with each frame's epoch."""

import numpy as np
import torch
from PIL import Image


def test_gif_loops_there_and_back(trained, invoke):
    home, _, run = trained
    r = invoke("gif", 4, 9, "--steps", 6, "--fps", 10, cwd=home)
    assert r.exit_code == 0, r.output
    gif = Image.open(run / "morph_4_to_9.gif")
    assert gif.info.get("loop") == 0
    assert gif.size == (112, 112)
    # 6 frames out, 4 back; the two ends show three times as long.
    assert gif.n_frames == 6 + 4
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations[0] == durations[5] == 3 * durations[1] == 300
    gif.seek(0)
    a = np.asarray(gif.convert("L")).astype(float)
    gif.seek(5)
    b = np.asarray(gif.convert("L")).astype(float)
    assert np.abs(a - b).mean() > 1


def test_a_single_frame_still_makes_a_gif(tmp_path):
    from vqgen import images

    frame = torch.zeros(1, 1, 28, 28)
    frame[..., 10:18, 10:18] = 1
    path = images.save_gif(frame, tmp_path / "one.gif")
    gif = Image.open(path)
    assert gif.n_frames == 1 and gif.size == (112, 112)
    assert np.asarray(gif.convert("L"))[56, 56] == 255 and np.asarray(gif.convert("L"))[5, 5] == 0


def test_training_progress_gif(trained, invoke):
    home, _, run = trained
    r = invoke("gif", "--training", run, cwd=home)
    assert r.exit_code == 0, r.output
    assert Image.open(run / "training.gif").n_frames == 2


def test_training_gif_frames_carry_their_epoch(records_home, invoke, writable):
    home = writable(records_home)
    r = invoke("gif", "--training", home / "runs" / "vqvae-mnist", cwd=home)
    assert r.exit_code == 0, r.output
    gif = Image.open(r.stdout.strip())
    assert gif.n_frames == 3
    tops = []
    for i in range(3):
        gif.seek(i)
        frame = np.asarray(gif.convert("L"))
        tops.append(frame[:20, :200].astype(int))
        assert (frame[:20, :200] < 128).sum() > 20     # "epoch N" written above the tiles
    assert np.abs(tops[0] - tops[1]).sum() > 0 and np.abs(tops[1] - tops[2]).sum() > 0


def test_training_gif_of_a_one_epoch_run_says_why_not(home, invoke):
    r = invoke("gif", "--training", home / "runs" / "prior-mnist", cwd=home)
    assert r.exit_code == 2
    assert "one epoch, so one picture (samples_epoch_001.png); a training GIF needs two or more" in r.stderr
    assert not (home / "runs" / "prior-mnist" / "training.gif").exists()
