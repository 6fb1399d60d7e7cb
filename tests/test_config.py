"""Configs that cannot work are refused with one line that says what to change."""

import pytest

from janus.config import PRESETS, ConfigError, ModelConfig, preset
from janus.model import JanusModel


@pytest.mark.parametrize(
    "overrides, tp, match",
    [
        (dict(d_model=100, n_heads=3), 1, "n_heads=3 does not divide d_model=100"),
        (dict(n_heads=4), 3, "tensor_parallel=3 does not divide n_heads=4"),
        (dict(n_heads=4, vocab_size=1001), 2, "does not divide vocab_size=1001"),
        (dict(n_heads=4, ffn_dim=130), 4, "does not divide ffn_dim=130"),
        (dict(activation="swish"), 1, "activation='swish'"),
        (dict(norm="sandwich"), 1, "norm='sandwich'"),
    ],
)
def test_unworkable_configs_are_refused(overrides, tp, match):
    cfg = preset("tiny", **overrides)
    with pytest.raises(ConfigError, match=match) as err:
        cfg.validate(tp)
    assert "\n" not in str(err.value)


def test_model_refuses_an_unworkable_config():
    with pytest.raises(ConfigError, match="n_heads"):
        JanusModel(preset("tiny", n_heads=5))


def test_unknown_preset_and_key():
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        preset("huge")
    with pytest.raises(ConfigError, match="unknown model config keys \\['d_modle'\\]"):
        ModelConfig.from_dict({"d_modle": 5})


def test_presets_are_valid_and_sized_as_the_paper():
    for name in PRESETS:
        preset(name).validate(1)
    base = preset("base")
    assert (base.d_model, base.ffn_dim, base.n_heads, base.encoder_layers, base.decoder_layers) == (512, 2048, 8, 6, 6)
    bart = preset("bart-base")
    assert (bart.d_model, bart.ffn_dim, bart.n_heads, bart.activation) == (768, 3072, 12, "gelu")


def test_learning_rate_schedules():
    from pretrain.lr_schedule import lr_at

    assert lr_at(0, 1e-3, 10) == pytest.approx(1e-4)  # warmup
    assert lr_at(9, 1e-3, 10) == pytest.approx(1e-3)
    assert lr_at(39, 1e-3, 10) == pytest.approx(1e-3 * (10 / 40) ** 0.5)  # inverse sqrt
    poly = [lr_at(s, 1e-3, 10, "polynomial", total=110, end=1e-5) for s in range(110)]
    assert poly[9] == pytest.approx(1e-3) and poly[-1] == pytest.approx(1e-5)
    assert poly[59] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # linear: halfway
    assert all(a >= b for a, b in zip(poly[9:], poly[10:]))
    with pytest.raises(ValueError, match="lr_schedule 'cosine'"):
        lr_at(20, 1e-3, 10, "cosine")
