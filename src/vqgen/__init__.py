"""vqgen: train small VQ-VAEs and VAEs, then reconstruct, morph and sample images."""

__version__ = "0.2.0"
