"""JANUS: one encoder-decoder that decodes autoregressively, non-autoregressively and in between."""

__version__ = "0.1.0"
