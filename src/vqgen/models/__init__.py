"""The models: each knows tensors only, not files, progress bars or the CLI."""

from vqgen.models.prior import CodePrior, PriorConfig
from vqgen.models.quantizer import VectorQuantizer
from vqgen.models.vae import VAE, VAEConfig
from vqgen.models.vqvae import VQVAE, VQVAEConfig

MODELS = {"vqvae": VQVAE, "vae": VAE, "prior": CodePrior}
MODEL_CONFIGS = {"vqvae": VQVAEConfig, "vae": VAEConfig, "prior": PriorConfig}


def build_model(kind: str, cfg):
    return MODELS[kind](cfg)


__all__ = ["CodePrior", "PriorConfig", "VectorQuantizer", "VAE", "VAEConfig", "VQVAE", "VQVAEConfig",
           "MODELS", "MODEL_CONFIGS", "build_model"]
