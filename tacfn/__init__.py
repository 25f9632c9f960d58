"""TACFN: Transformer-based Adaptive Cross-modal Fusion Network, and the platform that searches it."""

__version__ = "0.1.0"
