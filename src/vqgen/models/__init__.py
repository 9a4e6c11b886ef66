"""The models, and the registry that makes them known to the rest of vqgen.

Each model is one file that registers a `ModelSpec`; importing it here is the
one line that adds it (as vector-quantize-pytorch's `__init__.py` is a list of
imports). Each knows tensors only, not files, progress bars or the CLI.
"""

from vqgen.models.base import Autoencoder, CodeModel, Model, ParameterGroup, start_of
from vqgen.models.registry import (CodeShape, Figure, ImageShape, ModelSpec, ParentData, Picture, PictureContext,
                                   display_names, figures, find, get, names, register, unregister, with_operation)

DEFAULT_MODEL = "vqvae"   # what `vqgen train` trains when no model is named

# One line per model: importing the file registers it.
from vqgen.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from vqgen.models.vae import VAE, VAEConfig  # noqa: E402
from vqgen.models.vqgan import VQGAN, VQGANConfig  # noqa: E402
from vqgen.models.prior import CodePrior, PriorConfig  # noqa: E402
# The quantisers, one file each, register themselves the same way.
from vqgen.models.quantizer import Quantizer, VectorQuantizer, quantizer_names  # noqa: E402
from vqgen.models.fsq import FSQ  # noqa: E402
from vqgen.models.rvq import ResidualVQ  # noqa: E402

__all__ = ["DEFAULT_MODEL", "Autoencoder", "CodeModel", "Model", "ParameterGroup", "start_of", "ModelSpec", "ImageShape", "CodeShape",
           "Figure", "ParentData", "Picture", "PictureContext",
           "register", "unregister", "get", "find", "names", "with_operation", "display_names", "figures",
           "VQVAE", "VQVAEConfig", "VQGAN", "VQGANConfig", "VAE", "VAEConfig", "CodePrior", "PriorConfig", "Quantizer", "VectorQuantizer", "FSQ", "ResidualVQ",
           "quantizer_names"]
