"""Shared by the run-folder, checkpoint and kill tests: a tiny `bertkit pretrain` command line.

A test module imports the fixture it uses (`from tiny_pretraining import pretraining`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertkit.cli import main


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory, data_dir, minilm_dir):
    """A function (out, steps, *extra flags) -> the `bertkit pretrain` arguments of a tiny run: bert-tiny,
    roberta recipe, 8 blocks of 32 tokens a step, a checkpoint every 5 steps, on 400 lines of Emma."""
    folder = tmp_path_factory.mktemp("corpus")
    corpus = folder / "emma.txt"
    with open(data_dir / "gutenberg_nltk" / "austen-emma.txt", encoding="utf-8") as f:
        corpus.write_text("".join(next(f) for _ in range(400)), encoding="utf-8")

    def args(out, steps: int, *extra) -> list[str]:
        return ["pretrain", "--corpus", str(corpus), "--tokenizer", str(minilm_dir), "--preset", "tiny",
                "--max-steps", str(steps), "--out", str(out), "--dtype", "fp32", "--pretrain.recipe=roberta",
                "--pretrain.max_length=32", "--pretrain.batch_size=8", f"--pretrain.cache={folder / 'cache'}",
                "--train.checkpoint_every=5", "--train.log_every=1", "--train.warmup_steps=2", "--train.lr=1e-3",
                *map(str, extra)]
    main(args(folder / "warm-up", 1))  # builds the corpus cache once
    return args


def run(capsys, *args) -> tuple[int, str]:
    """Exit code and standard error of `bertkit ARGS` run in this process."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def losses(out: Path) -> dict[int, float]:
    """step -> training loss, from a run's log.jsonl."""
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r}
