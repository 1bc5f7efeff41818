"""Shared by the fine-tuning tests: a tiny model directory and small slices of real task files.

A test module imports the fixtures it uses (`from tiny_task_data import conll, tiny`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bertkit import Encoder, Tokenizer, preset, save_pretrained


def tiny_model_dir(out: Path, minilm_dir: Path, **changes) -> Path:
    """A randomly initialised 2-layer, hidden-32 encoder with MiniLM's tokenizer, saved as a model directory;
    `changes` are further EncoderConfig fields."""
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    config = preset("tiny", hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2,
                    vocab_size=tokenizer.vocab_size, **changes)
    save_pretrained(Encoder(config), out)
    tokenizer.save(out)
    return out


def conll_head(source: Path, out: Path, sentences: int) -> Path:
    """The first `sentences` sentences of a CoNLL file (a -DOCSTART- block counts as one)."""
    kept, blanks = [], 0
    for line in source.read_text(encoding="utf-8").splitlines():
        kept.append(line)
        blanks += not line.strip()
        if blanks == sentences:
            break
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return out


def lines_head(source: Path, out: Path, lines: int) -> Path:
    """The first `lines` lines of a text file (a table's header included)."""
    with open(source, encoding="utf-8") as f:
        out.write_text("".join(next(f) for _ in range(lines)), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"), minilm_dir)


@pytest.fixture(scope="module")
def conll(tmp_path_factory, data_dir) -> tuple[Path, Path]:
    """64 CoNLL-2003 training sentences and 32 dev sentences."""
    folder = tmp_path_factory.mktemp("conll")
    return (conll_head(data_dir / "conll2003" / "eng.train", folder / "train.conll", 64),
            conll_head(data_dir / "conll2003" / "eng.testa", folder / "dev.conll", 32))
