"""Word sense disambiguation in the unified framework of Raganato et al. (2017): its data and key
files, its scorer, and the WordNet first-sense baseline.

WordNet 3.0 is read with NLTK's reader, which only opens folders on its data path: `wordnet()`
copies the database once into bertkit's cache (~/.cache/bertkit/nltk_data/corpora/wordnet), as
`nltk_corpus` does for any NLTK corpus (the lexical-sample files too).
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..embed import vectors_key
from ..files import atomic_write, write_text
from ..model import Encoder
from ..postprocess import fit_postprocess
from ..static import StaticVectors
from ..textfiles import read_fields, read_lines
from ..tokenizer import Tokenizer
from .vectors import unit_rows, word_vectors

UPOS_TO_WORDNET = {"NOUN": "n", "VERB": "v", "ADJ": "a", "ADV": "r"}
CACHE = Path.home() / ".cache" / "bertkit" / "nltk_data"


def nltk_corpus(folder: str | Path, name: str, files: Sequence[str] | None = None) -> Path:
    """`files` of `folder` (default: all), copied once into bertkit's cache as NLTK corpus `name`
    (one copy per source folder), where NLTK's readers agree to open them; a file whose size or
    modification time changed is copied again. Returns the copy's folder."""
    import nltk

    folder = Path(folder).resolve()
    sources = [folder / f for f in files] if files is not None else [f for f in folder.iterdir() if f.is_file()]
    missing = [f for f in sources if not f.is_file()]
    if missing or not sources:
        raise FileNotFoundError(f"{missing[0] if missing else folder}: no such file")
    target = CACHE / "corpora" / name / hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    for f in sources:  # each file atomically: a copy cut short is never read as whole
        copy = target / f.name
        if not copy.exists() or (copy.stat().st_size, copy.stat().st_mtime) != (f.stat().st_size, f.stat().st_mtime):
            with atomic_write(copy) as tmp:
                shutil.copy2(f, tmp)
    if str(CACHE) not in nltk.data.path:
        nltk.data.path.append(str(CACHE))
    return target


def wordnet(folder: str | Path):
    """NLTK's WordNet reader over the WordNet 3.0 database files in `folder` (index.*, data.*,
    *.exc, lexnames, ...)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if not (Path(folder) / "index.noun").is_file():
        raise FileNotFoundError(f"{folder}: no index.noun; expected the WordNet 3.0 database files")
    class WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            """No mapping: NLTK >= 3.9 maps its own "wordnet" corpus (looked up on nltk.data.path, absent
            here) onto the loaded one when opening it, for multilingual data that bertkit does not use."""
            return None

    target = nltk_corpus(folder, "wordnet")
    with warnings.catch_warnings():  # "multilingual functions are not available": bertkit uses none
        warnings.simplefilter("ignore")
        return WordNet30(str(target), None)


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
    for number, line, fields in read_fields(path):
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


def score_by_pos(predictions: dict[str, str], gold: dict[str, set[str]],
                 instances: Sequence[Instance]) -> dict[str, dict[str, float]]:
    """`score` over each part of speech's instances apart."""
    ids: dict[str, set[str]] = {}
    for instance in instances:
        ids.setdefault(instance.pos, set()).add(instance.id)
    return {pos: score({i: k for i, k in predictions.items() if i in part}, {i: gold[i] for i in part})
            for pos, part in sorted(ids.items())}


def candidates(wn, lemma: str, pos: str) -> list[str]:
    """The sense keys of `lemma` with the universal POS `pos`, in WordNet's order (most frequent first)."""
    wn_pos = UPOS_TO_WORDNET.get(pos)
    if wn_pos is None:
        return []
    return [l.key() for l in wn.lemmas(lemma.replace(" ", "_").lower(), wn_pos)]


def first_sense(wn, instances: Sequence[Instance]) -> tuple[dict[str, str], list[str]]:
    """WordNet's first sense of each instance's lemma and POS; and the ids of instances whose lemma
    WordNet does not know (no answer)."""
    keys = {instance.id: candidates(wn, instance.lemma, instance.pos) for instance in instances}
    return {i: k[0] for i, k in keys.items() if k}, [i for i, k in keys.items() if not k]


def write_key(path: str | Path, predictions: dict[str, str]) -> None:
    """Predictions in the framework's key format, one `instance_id sense_key` a line."""
    write_text(path, "".join(f"{i} {key}\n" for i, key in predictions.items()))


# ------------------------------------------------------------ sense embeddings from glosses and examples


def sense_counts(folder: str | Path) -> dict[str, int]:
    """SemCor tag counts per sense key, from WordNet's cntlist.rev (`key sense_number count`)."""
    counts = {}
    for number, line in read_lines(Path(folder) / "cntlist.rev"):
        fields = line.split()
        if len(fields) != 3 or not fields[2].isdigit():
            raise ValueError(f"{Path(folder) / 'cntlist.rev'}:{number}: expected `sense_key sense_number count`")
        counts[fields[0]] = int(fields[2])
    return counts


def gloss_words(wn, key: str) -> tuple[list[str], int]:
    """LMMS's gloss sentence of a sense, as words: "lemma - the synset's lemmas - gloss - examples",
    and how many words the lemma takes at its start."""
    lemma = wn.lemma_from_key(key)
    synset = lemma.synset()
    head = lemma.name().replace("_", " ").split()
    text = " - ".join([", ".join(n.replace("_", " ") for n in synset.lemma_names()), synset.definition(),
                       *synset.examples()])
    return [*head, "-", *text.split()], len(head)


def example_words(wn, key: str, pre_tokenize) -> list[tuple[list[str], list[int]]]:
    """WordNet's examples of the sense's synset in which one of the synset's lemmas occurs (its words
    inflected as WordNet's morphology allows; the first lemma found counts): each example as its
    words (`pre_tokenize`: text -> [(word, span)]) and the positions of that lemma's words.
    Sense-tagged contexts for free: "he sat on the bank of the river and watched the currents"
    shows bank.n.01 in use."""
    synset = wn.lemma_from_key(key).synset()
    names = [[w.lower() for w, _ in pre_tokenize(lemma.name().replace("_", " "))] for lemma in synset.lemmas()]
    found = []
    for example in synset.examples():
        words = [w for w, _ in pre_tokenize(example)]
        at = next((span for name in names if (span := _lemma_at(wn, words, name, synset.pos()))), None)
        if at:
            found.append((words, at))
    return found


def _lemma_at(wn, words: list[str], name: list[str], pos: str) -> list[int]:
    """The positions of the lemma `name` (lower-cased words) in `words`, each word as it is or
    inflected ("ice creams", "took off"); [] when the lemma does not occur."""
    # every base form of each word: NLTK's public morphy() gives only the first ("relations" is a
    # noun of its own, so morphy("relations") is "relations", never "relation")
    forms = [{w, *wn._morphy(w, pos)} for w in (w.lower() for w in words)]
    for j in range(len(words) - len(name) + 1):
        if all(n in f for n, f in zip(name, forms[j:j + len(name)])):
            return list(range(j, j + len(name)))
    return []


def gloss_texts(wn, keys: Sequence[str], pre_tokenize) -> list[list[tuple[list[str], list[int]]]]:
    """Per sense key, its one gloss sentence (`gloss_words`) and the positions of the lemma at its start."""
    return [[(words, list(range(n)))] for words, n in (gloss_words(wn, k) for k in keys)]


def example_texts(wn, keys: Sequence[str], pre_tokenize) -> list[list[tuple[list[str], list[int]]]]:
    """Per sense key, its synset's examples that use one of its lemmas (`example_words`; none for many)."""
    return [example_words(wn, k, pre_tokenize) for k in keys]


# Where sense embeddings come from: per source, its texts, and what the source adds to the cache key
# (the gloss embeddings keep the key they had before there were two sources; "v2" names the rules
# by which example_words finds a lemma, so that new rules never read old vectors).
SOURCES = {"gloss": (gloss_texts, ()), "examples": (example_texts, ("examples-v2",))}


def all_sense_keys(wn) -> list[str]:
    """Every sense key of WordNet (206,941 in WordNet 3.0, as index.sense lists), synset by synset
    in NLTK's order (by part of speech, then offset)."""
    return [lemma.key() for synset in wn.all_synsets() for lemma in synset.lemmas()]


class SenseVectors:
    """Sense embeddings from WordNet, built as they are first asked for and kept on disk. `source`
    (`SOURCES`): "gloss", the lemma's vector in its gloss sentence; "examples", the mean vector of
    the synset's lemma in the synset's examples that use it (a zero vector where none does). One
    folder per source, model, tokenizer, precision and layers, holding parts (`part-N.npy`, the
    vectors as summed over the layers, memory-mapped when read, and `part-N.txt`, their sense
    keys), one part per `chunk` new senses.
    A second run over the same senses embeds nothing; a run killed mid-build keeps its finished parts."""

    def __init__(self, model: Encoder, tokenizer: Tokenizer, wn, folder: str | Path, layers: Sequence[int],
                 batch_size: int = 64, precision: str = "auto", chunk: int = 4096, source: str = "gloss"):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(map(repr, SOURCES))}, not {source!r}")
        self.model, self.tokenizer, self.wn, self.layers = model, tokenizer, wn, list(layers)
        self.batch_size, self.precision, self.chunk, self.source = batch_size, precision, chunk, source
        texts, key = SOURCES[source]
        self.texts = texts
        self.folder = Path(folder) / vectors_key(model, tokenizer, precision, self.layers, "raw", *key)
        self.parts: list[np.ndarray] = []
        self.row: dict[str, tuple[int, int]] = {}  # sense key -> (part, row)
        for keys_file in sorted(self.folder.glob("part-*.txt")):  # a part's keys are written after its rows
            vectors = np.load(keys_file.with_suffix(".npy"), mmap_mode="r")
            keys = keys_file.read_text(encoding="utf-8").split()
            if len(keys) != len(vectors):
                raise ValueError(f"{keys_file}: {len(keys)} sense keys for {len(vectors)} vectors; delete "
                                 f"{self.folder} to rebuild the cache")
            self._index(keys, vectors)

    def _index(self, keys: list[str], vectors: np.ndarray) -> None:
        self.row.update({k: (len(self.parts), i) for i, k in enumerate(keys)})
        self.parts.append(vectors)

    def __call__(self, keys: Sequence[str], unit: bool = True) -> np.ndarray:
        """(len(keys), D) sense embeddings, unit length (or as built, `unit=False`)."""
        missing = [k for k in dict.fromkeys(keys) if k not in self.row]
        if missing:
            self._add(missing)
        if not keys:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        vectors = np.stack([self.parts[part][row] for part, row in (self.row[k] for k in keys)])
        return unit_rows(vectors) if unit else vectors

    def _add(self, keys: list[str]) -> None:
        with tqdm(total=len(keys), desc=f"{self.source} embeddings", unit="sense", disable=len(keys) <= 200) as bar:
            for start in range(0, len(keys), self.chunk):  # a chunk's word vectors at a time, saved as it ends
                chunk = keys[start:start + self.chunk]
                vectors = self._embed(chunk)
                name = self.folder / f"part-{len(self.parts):05d}"
                with atomic_write(name.with_suffix(".npy")) as tmp, open(tmp, "wb") as f:
                    np.save(f, vectors)
                write_text(name.with_suffix(".txt"), "\n".join(chunk) + "\n")
                self._index(chunk, vectors)
                bar.update(len(chunk))

    def _embed(self, keys: list[str]) -> np.ndarray:
        """(len(keys), D): per key, the mean over its texts of the lemma's vector (its words' mean,
        the layers summed); zeros for a key without texts."""
        texts = self.texts(self.wn, keys, self.tokenizer.pre_tokenize)
        flat = [words for per_key in texts for words, _ in per_key]
        vectors = np.zeros((len(keys), self.model.config.hidden_size), np.float32)
        if not flat:
            return vectors
        found = word_vectors(self.model, self.tokenizer, flat, layers=self.layers, combine="sum",
                             split_into_words=True, batch_size=self.batch_size, precision=self.precision,
                             progress=False)
        start = 0
        for row, per_key in enumerate(texts):
            means = []
            for (_, at), f in zip(per_key, found[start:start + len(per_key)]):
                mine = [f.positions.index(j) for j in at if j in f.positions]
                if mine:  # a lemma of no subword: that text adds nothing
                    means.append(f.vectors[mine].mean(0))
            start += len(per_key)
            if means:
                vectors[row] = np.mean(means, axis=0)
        return vectors


def instance_vectors(model: Encoder, tokenizer: Tokenizer, instances: Sequence[Instance], layers: Sequence[int],
                     precision: str = "auto") -> dict[str, np.ndarray]:
    """Each instance's contextual vector in its sentence (the layers summed, not normalized); an
    instance whose word has no subword is left out."""
    sentences = list(dict.fromkeys(i.words for i in instances))
    found = dict(zip(sentences, word_vectors(model, tokenizer, [list(s) for s in sentences], layers=layers,
                                             combine="sum", split_into_words=True, precision=precision)))
    out = {}
    for instance in instances:
        sentence = found[instance.words]
        if instance.index in sentence.positions:
            out[instance.id] = sentence.vectors[sentence.positions.index(instance.index)]
    return out


class StaticSenseVectors:
    """Gloss embeddings from static word vectors: each sense's gloss sentence (as `gloss_words` makes
    it) averaged with SIF weights, its common component fitted on the senses asked for together. A
    static model has no vector of the lemma *in* its gloss, so every word of the gloss counts."""

    def __init__(self, static: StaticVectors, wn, weighting: str = "sif"):
        self.static, self.wn, self.weighting = static, wn, weighting

    def __call__(self, keys: Sequence[str], unit: bool = True) -> np.ndarray:
        texts = [" ".join(gloss_words(self.wn, k)[0]) for k in keys]
        vectors = self.static.sentence_vectors(texts, self.weighting)[0] if texts else np.zeros((0, self.static.dim))
        return unit_rows(vectors) if unit else vectors


def static_instance_vectors(static: StaticVectors, instances: Sequence[Instance]) -> dict[str, np.ndarray]:
    """Each instance's static vector: its word form's, or its lemma's when the form is not in the
    vocabulary; an instance with neither is left out (it backs off to the first sense). The same
    vector for every context of a word: a static model picks by the gloss alone."""
    out = {}
    for instance in instances:
        v = static.word_vector(instance.words[instance.index])
        v = static.word_vector(instance.lemma) if v is None else v
        if v is not None:
            out[instance.id] = v
    return out


def disambiguate(wn, instances: Sequence[Instance], vectors: dict[str, np.ndarray],
                 senses: SenseVectors | StaticSenseVectors,
                 counts: dict[str, int] | None = None, prior: float = 0.0, one_sense_per_discourse: bool = False,
                 standardize: bool = False, examples: SenseVectors | None = None,
                 example_weight: float = 1.0) -> tuple[dict[str, str], dict[str, int]]:
    """Each instance's sense: argmax over its lemma's candidates of cosine(instance, sense embedding)
    + `prior` x the sense's share of its lemma's SemCor counts (add-one). The sense embedding is the
    unit gloss embedding, plus `example_weight` x the unit embedding of WordNet's `examples` where the
    sense's synset has one. With `standardize`, the instance vectors and the candidates' gloss
    embeddings are z-scored first, each kind with its own statistics (fitted on these instances and
    on all their candidates); example embeddings, words in running text as the instances are, take
    the instances' statistics. With one sense per discourse, every instance of one lemma and POS in
    a document takes the sense with the highest summed score. Instances without a vector back off to
    WordNet's first sense. Returns the answers and the counts of back-offs and unanswered instances."""
    scored: dict[str, dict[str, float]] = {}
    answers, tally = {}, {"first_sense_backoff": 0, "unanswered": 0}
    wanted = list(dict.fromkeys(k for i in instances if i.id in vectors for k in candidates(wn, i.lemma, i.pos)))
    word, sense = unit_rows, {}
    if wanted:
        glosses = senses(wanted, unit=False)  # every candidate embedded in one go, not a lemma at a time
        found = examples(wanted, unit=False) if examples is not None else np.zeros_like(glosses)
        has_example = np.linalg.norm(found, axis=1) > 0
        if standardize:
            if len(vectors) < 2:
                raise ValueError("standardize fits z-scores on the instances: it needs at least 2 of them")
            word_z = fit_postprocess(np.stack(list(vectors.values())), "standardize")
            glosses, found = fit_postprocess(glosses, "standardize")(glosses), word_z(found)
            word = lambda v: unit_rows(word_z(v[None])[0])  # noqa: E731
        combined = unit_rows(glosses) + example_weight * has_example[:, None] * unit_rows(found)
        sense = dict(zip(wanted, unit_rows(combined)))  # unit-length sense embedding per candidate
    for instance in instances:
        keys = candidates(wn, instance.lemma, instance.pos)
        if not keys:
            tally["unanswered"] += 1
            continue
        if instance.id not in vectors:
            answers[instance.id] = keys[0]
            tally["first_sense_backoff"] += 1
            continue
        score_ = np.stack([sense[k] for k in keys]) @ word(vectors[instance.id])
        if prior:
            c = np.array([(counts or {}).get(k, 0) + 1.0 for k in keys])
            score_ = score_ + prior * c / c.sum()
        scored[instance.id] = dict(zip(keys, score_.tolist()))
    if one_sense_per_discourse:
        groups: dict[tuple, list[str]] = {}
        for instance in instances:
            if instance.id in scored:
                groups.setdefault((instance.document, instance.lemma, instance.pos), []).append(instance.id)
        for ids in groups.values():
            total: Counter = Counter()
            for i in ids:
                total.update(scored[i])  # the summed score of each candidate
            answers.update(dict.fromkeys(ids, max(total, key=total.get)))
    else:
        answers.update({i: max(s, key=s.get) for i, s in scored.items()})
    return answers, tally
