"""galnb: companion package to the galaxy-posterior book (CFM and VAE-NF papers)."""

__version__ = "0.1.0"
