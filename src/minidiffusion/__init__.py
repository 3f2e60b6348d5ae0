"""minidiffusion: small, fast, tested DDPM-family image diffusion in PyTorch."""

__version__ = "0.1.0"
