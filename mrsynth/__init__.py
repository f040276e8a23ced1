"""mrsynth: T1w -> T2w MR synthesis; framework-free core shared by the JAX and PyTorch backends."""

__version__ = "0.1.0"
