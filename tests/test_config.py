import pytest

from bertkit import Encoder, EncoderConfig, preset
from bertkit.config import PRESETS


@pytest.mark.parametrize("name, expected", [("base", 110e6), ("large", 340e6)])
def test_parameter_counts_match_the_paper(name, expected):
    n = Encoder(preset(name)).num_parameters()
    assert abs(n - expected) / expected <= 0.02, f"{name}: {n:,} parameters"


def test_presets_have_the_published_shapes():
    shapes = {k: (c.num_layers, c.hidden_size) for k, c in PRESETS.items()}
    assert shapes == {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512),
                      "base": (12, 768), "large": (24, 1024)}
    assert all(c.intermediate_size == 4 * c.hidden_size for c in PRESETS.values())


def test_preset_overrides_and_unknown_name():
    assert preset("tiny", vocab_size=1000).vocab_size == 1000
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=100, num_heads=3), "not divisible"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(num_layers=0), "num_layers must be positive"),
    (dict(hidden_dropout=1.0), "hidden_dropout"),
    (dict(family="gpt"), "family"),
])
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**changes)


def test_config_is_frozen():
    with pytest.raises(Exception):
        preset("tiny").hidden_size = 3
