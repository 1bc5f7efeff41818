"""Configuration as frozen dataclasses.

`EncoderConfig` describes one encoder of the BERT family. The three Hugging Face families that
bertkit reads and writes (BERT, RoBERTa, DistilBERT) are one architecture with small differences,
each a field here rather than a subclass:

- RoBERTa numbers positions from `pad_token_id + 1` (`position_offset`) and has one segment type;
- DistilBERT has no segment embeddings (`type_vocab_size = 0`) and no pooler.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

FAMILIES = ("bert", "roberta", "distilbert")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    position_offset: int = 0
    pooler: bool = True
    family: str = "bert"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EncoderConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads "
                             f"{self.num_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")
        if self.type_vocab_size < 0 or self.position_offset < 0:
            raise ValueError("type_vocab_size and position_offset must be >= 0")
        if self.family == "distilbert" and (self.type_vocab_size or self.pooler):
            raise ValueError("a DistilBERT model has no segment embeddings and no pooler: set "
                             "type_vocab_size=0 and pooler=False")
        if self.family == "roberta" and self.position_offset != self.pad_token_id + 1:
            raise ValueError("a RoBERTa model numbers positions from pad_token_id + 1: set "
                             f"position_offset={self.pad_token_id + 1}")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        """Longest input in tokens that the position embeddings cover."""
        return self.max_position_embeddings - self.position_offset

    def replace(self, **changes) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)


def _preset(layers: int, hidden: int, heads: int) -> EncoderConfig:
    return EncoderConfig(num_layers=layers, hidden_size=hidden, num_heads=heads,
                         intermediate_size=4 * hidden)


# Sizes of Turc et al. (2019) "Well-Read Students Learn Better" plus BERT-base and BERT-large.
PRESETS: dict[str, EncoderConfig] = {
    "tiny": _preset(2, 128, 2),
    "mini": _preset(4, 256, 4),
    "small": _preset(4, 512, 8),
    "medium": _preset(8, 512, 8),
    "base": _preset(12, 768, 12),
    "large": _preset(24, 1024, 16),
}


def preset(name: str, **changes) -> EncoderConfig:
    """The named preset, with any field changed (e.g. `preset("mini", vocab_size=8000)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes)
