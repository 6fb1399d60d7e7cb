"""JANUS: one encoder-decoder that decodes autoregressively, non-autoregressively and in between."""

__version__ = "0.1.0"


def load(directory, device=None):
    """Load an export (`janus export`) as a model with `generate(texts, mode=...)`."""
    from janus.generate import load as _load

    return _load(directory, device)
