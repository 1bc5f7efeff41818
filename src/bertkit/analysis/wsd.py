"""Word sense disambiguation in the unified framework of Raganato et al. (2017): its data and key
files, its scorer, and the WordNet first-sense baseline.

WordNet 3.0 is read with NLTK's reader, which only opens folders on its data path: `wordnet()`
copies the database once into bertkit's cache (~/.cache/bertkit/nltk_data/corpora/wordnet).
"""

from __future__ import annotations

import shutil
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write
from ..textfiles import read_lines

UPOS_TO_WORDNET = {"NOUN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}
CACHE = Path.home() / ".cache" / "bertkit" / "nltk_data"


def wordnet(folder: str | Path):
    """NLTK's WordNet reader over the WordNet 3.0 database files in `folder` (index.*, data.*,
    *.exc, lexnames, ...), copied once into bertkit's cache, where NLTK agrees to read them."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    folder = Path(folder)
    if not (folder / "index.noun").exists():
        raise FileNotFoundError(f"{folder}: no index.noun; expected the WordNet 3.0 database files")
    target = CACHE / "corpora" / "wordnet"
    files = [f for f in folder.iterdir() if f.is_file()]
    if any(not (target / f.name).exists() or (target / f.name).stat().st_size != f.stat().st_size for f in files):
        target.mkdir(parents=True, exist_ok=True)
        for f in files:  # each file atomically: a copy cut short is never read as whole
            with atomic_write(target / f.name) as tmp:
                shutil.copyfile(f, tmp)
    if str(CACHE) not in nltk.data.path:
        nltk.data.path.append(str(CACHE))
    with warnings.catch_warnings():  # "multilingual functions are not available": bertkit uses none
        warnings.simplefilter("ignore")
        return WordNetCorpusReader(str(target), None)


@dataclass(frozen=True)
class Instance:
    """A word to disambiguate: its id, lemma, universal POS, and its sentence's words."""

    id: str
    lemma: str
    pos: str
    words: tuple[str, ...]
    index: int  # the word's position in `words`
    document: str


def read_instances(path: str | Path) -> list[Instance]:
    """The instances of a framework `*.data.xml` file, in file order."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        line, column = e.position
        raise ValueError(f"{path}:{line}: malformed XML at column {column} ({e})") from e
    instances = []
    for text in root.iter("text"):
        for sentence in text.iter("sentence"):
            tokens = list(sentence)
            words = tuple((t.text or "").strip() for t in tokens)
            for i, t in enumerate(tokens):
                if t.tag == "instance":
                    instances.append(Instance(t.get("id"), t.get("lemma"), t.get("pos"), words, i, text.get("id")))
    return instances


def read_key(path: str | Path) -> dict[str, set[str]]:
    """A key file: `instance_id sense_key [sense_key ...]` per line -> {id: keys}."""
    keys: dict[str, set[str]] = {}
    for number, line in read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected an instance id and at least one sense key, got {line!r}")
        if fields[0] in keys:
            raise ValueError(f"{path}:{number}: instance {fields[0]} is keyed twice")
        keys[fields[0]] = set(fields[1:])
    return keys


def score(predictions: dict[str, str], gold: dict[str, set[str]]) -> dict[str, float]:
    """The framework scorer: an answer is right when it is any of the instance's gold keys;
    precision over the answered instances, recall over all, F1; every answered id must be in gold."""
    unknown = sorted(set(predictions) - set(gold))
    if unknown:
        raise ValueError(f"instance {unknown[0]} is not in the gold key ({len(unknown)} such answers)")
    correct = sum(key in gold[i] for i, key in predictions.items())
    precision = correct / len(predictions) if predictions else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "answered": len(predictions), "instances": len(gold)}


def candidates(wn, lemma: str, pos: str) -> list[str]:
    """The sense keys of `lemma` with the universal POS `pos`, in WordNet's order (most frequent first)."""
    wn_pos = UPOS_TO_WORDNET.get(pos)
    if wn_pos is None:
        return []
    name = lemma.replace(" ", "_").lower()
    return [l.key() for l in wn.lemmas(name, wn_pos)]


def first_sense(wn, instances: Sequence[Instance]) -> tuple[dict[str, str], list[str]]:
    """WordNet's first sense of each instance's lemma and POS; and the ids of instances whose lemma
    WordNet does not know (no answer)."""
    answers, unknown = {}, []
    for instance in instances:
        keys = candidates(wn, instance.lemma, instance.pos)
        if keys:
            answers[instance.id] = keys[0]
        else:
            unknown.append(instance.id)
    return answers, unknown


def write_key(path: str | Path, predictions: dict[str, str]) -> None:
    """Predictions in the framework's key format, one `instance_id sense_key` a line."""
    with atomic_write(path) as tmp:
        tmp.write_text("".join(f"{i} {key}\n" for i, key in predictions.items()), encoding="utf-8")
