"""Configuration as frozen dataclasses.

`EncoderConfig` describes one encoder of the BERT family. The three Hugging Face families that
bertkit reads and writes (BERT, RoBERTa, DistilBERT) are one architecture with small differences,
each a field here rather than a subclass:

- RoBERTa numbers positions from `pad_token_id + 1` (`position_offset`) and has one segment type;
- DistilBERT has no segment embeddings (`type_vocab_size = 0`) and no pooler.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


def _coerce(value, hint, where: str):
    """A YAML value as the dataclass field's type (tuples from lists, floats from ints and from
    strings such as 1e-8)."""
    text = str(hint)
    if text.startswith("tuple"):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if "float" in text and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if "float" in text and "str" not in text and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-8 (no decimal point) as a string
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if text in ("int", "<class 'int'>") and not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    return value


def _parse_overrides(overrides: Sequence[str], sections: dict[str, type]) -> dict[str, dict]:
    import yaml
    parsed: dict[str, dict] = {name: {} for name in sections}
    for item in overrides:
        key, sep, text = item.lstrip("-").partition("=")
        section, _, field = key.partition(".")
        if not sep or section not in sections or not field:
            raise ValueError(f"override {item!r} is not --section.field=value with a section in {sorted(sections)}")
        parsed[section][field] = yaml.safe_load(text)
    return parsed


def load_sections(path: str | None, sections: dict[str, type], overrides: Sequence[str] = (),
                  direct: dict[str, dict] | None = None) -> dict:
    """Build one frozen dataclass per section from YAML, a preset block, flags and overrides.

    Precedence, lowest first: the dataclass defaults; the YAML file's sections
    (`{section: {field: value}}`); its `by_preset: {PRESET: {section: {...}}}` block for the chosen
    `pretrain.preset`; `direct` values from dedicated command-line flags (None = not given); and
    `overrides`, each "section.field=value" with the value parsed as YAML.
    """
    import yaml
    raw = (yaml.safe_load(Path(path).read_text()) if path else None) or {}
    unknown = set(raw) - set(sections) - {"by_preset"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected {sorted(sections)}")
    layers = [{name: dict(raw.get(name) or {}) for name in sections}]
    flags = {name: {k: v for k, v in (direct or {}).get(name, {}).items() if v is not None} for name in sections}
    parsed = _parse_overrides(overrides, sections)
    preset_name = next((layer.get("pretrain", {}).get("preset") for layer in (parsed, flags, layers[0])
                        if layer.get("pretrain", {}).get("preset")), None)
    by_preset = (raw.get("by_preset") or {}).get(preset_name, {})
    layers += [{name: dict(by_preset.get(name) or {}) for name in sections}, flags, parsed]
    out = {}
    for name, cls in sections.items():
        values = {k: v for layer in layers for k, v in layer[name].items()}
        hints = typing.get_type_hints(cls)
        bad = set(values) - set(hints)
        if bad:
            raise ValueError(f"{path or 'overrides'}: {name} has no field(s) {sorted(bad)}; fields: {sorted(hints)}")
        out[name] = cls(**{k: _coerce(v, hints[k], f"{name}.{k}") for k, v in values.items()})
    return out
