"""The live progress bars: 80 columns, with the codebook's figures."""

import os


def rendered(renderable, width=80) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_live_bars_fit_80_columns_and_show_codebook_figures():
    from rich.console import Console

    from vqgen import models
    from vqgen.progress import TrainProgress

    p = TrainProgress(console=Console(width=80, force_terminal=True, file=open(os.devnull, "w")), live=True)
    p.describe(models.figures([models.get("vqvae")]))   # as training does: the model's figures, as it reads them
    p.start(epochs=3, start_epoch=0, batches=938)
    p.start_epoch(2)
    p.batch(412, {"loss": 0.0104, "mse": 0.00948, "vq": 0.000408, "usage": 1.0, "perplexity": 431.2,
                  "lr": 0.004, "img_per_s": 2310.0})
    text = rendered(p.progress.get_renderables().__next__())
    p.stop()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for field in ("epoch 2/3", "412/938", "0:00:", "usage 100%", "ppl 431", "mse 0.00948", "2,310 img/s"):
        assert field in text, (field, text)
