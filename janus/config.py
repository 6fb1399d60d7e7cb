"""Model configuration: one dataclass, named presets, and the checks that refuse unworkable configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


@dataclass
class ModelConfig:
    vocab_size: int = 8000
    d_model: int = 256
    n_heads: int = 4
    ffn_dim: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    max_positions: int = 256
    max_length_classes: int = 256  # length predictor classes; target length incl. BOS/EOS, clamped
    dropout: float = 0.1
    activation: str = "gelu"  # gelu | relu
    norm: str = "pre"  # pre | post
    # special token ids; the tokenizer is trained to put its specials exactly here
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    mask_id: int = 4

    def validate(self, tensor_parallel: int = 1) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"n_heads={self.n_heads} does not divide d_model={self.d_model}: "
                "choose n_heads among the divisors of d_model"
            )
        if tensor_parallel < 1:
            raise ConfigError(f"tensor_parallel={tensor_parallel} must be >= 1")
        if self.n_heads % tensor_parallel:
            raise ConfigError(
                f"tensor_parallel={tensor_parallel} does not divide n_heads={self.n_heads}: "
                "use a TP size that divides the number of heads"
            )
        if self.ffn_dim % tensor_parallel:
            raise ConfigError(
                f"tensor_parallel={tensor_parallel} does not divide ffn_dim={self.ffn_dim}: "
                "use a TP size that divides the FFN width"
            )
        if self.vocab_size % tensor_parallel:
            raise ConfigError(
                f"tensor_parallel={tensor_parallel} does not divide vocab_size={self.vocab_size}: "
                "pad the vocabulary to a multiple of the TP size"
            )
        if self.activation not in ("gelu", "relu"):
            raise ConfigError(f"activation={self.activation!r} is not one of 'gelu', 'relu'")
        if self.norm not in ("pre", "post"):
            raise ConfigError(f"norm={self.norm!r} is not one of 'pre', 'post'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")
        specials = [self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.mask_id]
        if len(set(specials)) != 5 or max(specials) >= self.vocab_size:
            raise ConfigError(f"special token ids {specials} must be distinct and < vocab_size")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**d)


PRESETS: dict[str, dict] = {
    # tests: a model that trains in seconds
    "tiny": dict(d_model=64, n_heads=4, ffn_dim=128, encoder_layers=2, decoder_layers=2, max_positions=128,
                 max_length_classes=128, dropout=0.0),
    # between: tried for the CPU demo, which trains `tiny` (more steps per minute won; README, recipe table)
    "mini": dict(d_model=128, n_heads=4, ffn_dim=512, encoder_layers=3, decoder_layers=3, max_positions=256),
    # a larger CPU model
    "small": dict(d_model=256, n_heads=4, ffn_dim=1024, encoder_layers=3, decoder_layers=3, max_positions=256),
    # the paper's sizes
    "base": dict(d_model=512, n_heads=8, ffn_dim=2048, encoder_layers=6, decoder_layers=6, activation="relu",
                 max_positions=512),
    "bart-base": dict(d_model=768, n_heads=12, ffn_dim=3072, encoder_layers=6, decoder_layers=6, max_positions=1024),
    "large": dict(d_model=1024, n_heads=16, ffn_dim=4096, encoder_layers=12, decoder_layers=12, max_positions=1024),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})
