"""PASE / PASE+ self-supervised speech encoders."""

__version__ = "0.1.0"
