"""A run's record step by step: steps.csv and TensorBoard events hold the figures."""

import pytest


def test_steps_csv_and_tensorboard_events_hold_the_figures(records_home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vqgen.tracking import read_steps

    run = records_home / "runs" / "vqvae-mnist"
    steps = read_steps(run / "steps.csv")
    assert len(steps) >= 3 and steps[-1]["epoch"] == pytest.approx(3.0)
    assert {"loss", "mse", "vq", "usage", "perplexity", "lr", "img_per_s"} <= set(steps[0])
    assert all(a["step"] < b["step"] for a, b in zip(steps, steps[1:]))
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/mse", "train/usage", "train/perplexity", "train/lr", "train/img_per_s",
                "test/mse", "test/psnr", "test/usage"):
        assert tag in tags["scalars"], tag
    assert len(events.Scalars("test/mse")) == 3
    assert [e.step for e in events.Scalars("test/mse")] == [20, 40, 60]    # 20 batches an epoch
    recon = events.Images("pictures/recon")
    assert len(recon) == 3 and recon[0].width > 8 * 114   # the labelled grid itself
