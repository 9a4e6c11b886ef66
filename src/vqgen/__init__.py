"""vqgen: train small VQ-VAEs and VAEs, then reconstruct, morph and sample images.

    import vqgen
    run = vqgen.train(model="vqvae", dataset="mnist", epochs=3)
    model = vqgen.load(run)
    vqgen.show(model.interpolate("4", "9", steps=12))

Importing vqgen is cheap: PyTorch loads on first use. See docs/api.md.
"""

__version__ = "0.3.0"

from vqgen.api import Model, load, show, train  # noqa: E402
from vqgen.errors import RunError, UsageError, VQGenError  # noqa: E402

__all__ = ["train", "load", "show", "Model", "VQGenError", "UsageError", "RunError", "__version__"]
