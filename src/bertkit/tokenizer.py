"""WordPiece tokenization on top of the `tokenizers` library (Rust, parallel over a batch).

bertkit adds what a user of an encoder needs around it: training a BERT-style vocabulary, loading
`vocab.txt` or `tokenizer.json`, and explicit handling of texts longer than the model's window.
Nothing is cut silently: `overflow="error"` refuses long texts, `"truncate"` cuts and counts them,
`"window"` splits them into overlapping windows and records which input each window came from.
Files are saved in the ecosystem's layout (tokenizer.json, vocab.txt, tokenizer_config.json), so
`transformers.AutoTokenizer` loads them too.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from .files import atomic_write, write_text
from .padding import right_pad

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Each special role, as BERT (WordPiece) and RoBERTa (byte-level BPE) vocabularies spell it.
ROLES = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<s>"),
         "sep": ("[SEP]", "</s>"), "mask": ("[MASK]", "<mask>")}
Overflow = Literal["error", "truncate", "window"]


@dataclass
class Encoded:
    """Token sequences of a batch of inputs, unpadded.

    With overflow="window" an input may give several rows; `origin[r]` is the input index of row r.
    """

    rows: list[tokenizers.Encoding]
    origin: np.ndarray  # (rows,) int64
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r.ids) for r in self.rows), dtype=np.int64, count=len(self.rows))

    def ids(self, row: int) -> list[int]:
        return self.rows[row].ids

    def word_ids(self, row: int) -> list[int | None]:
        return self.rows[row].word_ids

    def offsets(self, row: int) -> list[tuple[int, int]]:
        return self.rows[row].offsets

    def tensors(self, rows: Sequence[int] | None = None, pad_id: int = 0) -> dict[str, torch.Tensor]:
        """Right-padded `input_ids`, `attention_mask`, `token_type_ids`, each (B, T) int64."""
        picked = [self.rows[r] for r in (range(len(self.rows)) if rows is None else rows)]
        ids, types = right_pad([e.ids for e in picked], pad_id), right_pad([e.type_ids for e in picked], 0)
        mask = right_pad([[1] * len(e.ids) for e in picked], 0)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "token_type_ids": torch.from_numpy(types)}


class Tokenizer:
    def __init__(self, backend: tokenizers.Tokenizer):
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.special = {role: next((t for t in spellings if backend.token_to_id(t) is not None), None)
                        for role, spellings in ROLES.items()}
        missing = [role for role in ("pad", "cls", "sep") if self.special[role] is None]
        if missing:
            raise ValueError(f"tokenizer has no {' or '.join(t for r in missing for t in ROLES[r])} "
                             "token; bertkit needs BERT's (or RoBERTa's) special tokens")

    # ------------------------------------------------------------------------------ construction

    @staticmethod
    def _bert_pipeline(vocab: dict | None, lowercase: bool, strip_accents: bool | None) -> tokenizers.Tokenizer:
        """BERT's normalizer, pre-tokenizer and decoder around a WordPiece model of `vocab` (None: to be trained)."""
        tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=strip_accents, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return tok

    def _add_post_processor(self) -> Tokenizer:
        """Self with [CLS] A [SEP] (B [SEP]) templates; special tokens in the text are matched whole."""
        self.backend.add_special_tokens([t for t in SPECIAL_TOKENS if self.backend.token_to_id(t) is not None])
        cls, sep = self.backend.token_to_id("[CLS]"), self.backend.token_to_id("[SEP]")
        self.backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return self

    @classmethod
    def from_vocab(cls, vocab_file: str | Path, lowercase: bool = True, strip_accents: bool | None = None) -> Tokenizer:
        """A BERT tokenizer from a `vocab.txt` (one token per line, id = line number - 1).

        `strip_accents=None` follows `lowercase`, as BERT's uncased models do.
        """
        vocab_file = Path(vocab_file)
        if not vocab_file.exists():
            raise FileNotFoundError(f"{vocab_file}: no such vocabulary file")
        vocab = models.WordPiece.read_file(str(vocab_file))
        return cls(cls._bert_pipeline(vocab, lowercase, strip_accents))._add_post_processor()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        """Load `tokenizer.json` (preferred) or `vocab.txt` from a model directory, or either file."""
        path = Path(path)
        candidates = [path] if path.is_file() else [path / "tokenizer.json", path / "vocab.txt"]
        for file in candidates:
            if file.name.endswith(".json") and file.exists():
                try:
                    return cls(tokenizers.Tokenizer.from_file(str(file)))
                except Exception as e:  # the Rust library raises plain Exception
                    raise ValueError(f"{file}: not a valid tokenizer.json ({e})") from e
            if file.exists():
                return cls.from_vocab(file, lowercase=_lowercase_setting(file.parent))
        raise FileNotFoundError(f"{path}: no tokenizer.json or vocab.txt")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 30522, lowercase: bool = True,
              strip_accents: bool | None = None, min_frequency: int = 2, limit_alphabet: int = 1000,
              show_progress: bool = True, length: int | None = None) -> Tokenizer:
        """Train a WordPiece vocabulary of `vocab_size` tokens (special tokens included) on texts.

        Use `textfiles.read_texts(paths)` to train on files with line-numbered decoding errors.
        """
        backend = cls._bert_pipeline(None, lowercase, strip_accents)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), limit_alphabet=limit_alphabet,
                                            continuing_subword_prefix="##", show_progress=show_progress)
        backend.train_from_iterator(texts, trainer=trainer, length=length)
        return cls(backend)._add_post_processor()

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json, vocab.txt (WordPiece only) and tokenizer_config.json into `path`."""
        path = Path(path)
        with atomic_write(path / "tokenizer.json") as tmp:  # makes the folder
            self.backend.save(str(tmp))
        vocab = self.vocab()
        if isinstance(self.backend.model, models.WordPiece):
            write_text(path / "vocab.txt", "".join(t + "\n" for t in sorted(vocab, key=vocab.get)))  # in id order
        norm = self.backend.normalizer
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(getattr(norm, "lowercase", True)),
                  "strip_accents": getattr(norm, "strip_accents", None), "model_max_length": 512,
                  **{f"{t[1:-1].lower()}_token": t for t in SPECIAL_TOKENS}}
        write_text(path / "tokenizer_config.json", json.dumps(config, indent=2))

    # ------------------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def vocab(self) -> dict[str, int]:
        """{token: id} for the whole vocabulary, added special tokens included."""
        return self.backend.get_vocab()

    def id_to_token(self, i: int) -> str:
        return self.backend.id_to_token(i)

    def to_json(self) -> str:
        """The whole pipeline (normaliser, vocabulary, templates) as tokenizer.json holds it: equal
        texts tokenize alike, so data tokenized once can be reused."""
        return self.backend.to_str()

    def token_id(self, token: str) -> int:
        i = self.backend.token_to_id(token)
        if i is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return i

    def role_id(self, role: str) -> int:
        """Id of a special role: "pad", "unk", "cls", "sep" or "mask"."""
        if self.special.get(role) is None:
            raise KeyError(f"this vocabulary has no {role} token ({' or '.join(ROLES[role])})")
        return self.token_id(self.special[role])

    @property
    def pad_id(self) -> int:
        return self.role_id("pad")

    @property
    def mask_id(self) -> int:
        return self.role_id("mask")

    @property
    def special_ids(self) -> set[int]:
        return {self.token_id(t) for t in self.special.values() if t is not None}

    # ------------------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence[str] | Sequence[Sequence[str]], pairs: Sequence[str] | None = None, *,
               split_into_words: bool = False, max_length: int = 512, overflow: Overflow = "error",
               stride: int = 64) -> Encoded:
        """Encode a batch of texts (or text pairs, or pre-split word lists) in parallel.

        Args:
            texts: strings, or with `split_into_words=True` lists of words.
            pairs: second texts for sentence pairs ([CLS] A [SEP] B [SEP], segment ids 0 then 1).
            max_length: longest sequence in tokens, special tokens included.
            overflow: what to do with longer inputs: "error" (raise, naming the input), "truncate"
                (cut and count, with a warning), or "window" (overlapping windows of `max_length`
                sharing `stride` tokens; pairs window the second text, sharing half the room the
                first text leaves where that is no more than `stride`).
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts; wrap a single text in a list")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
        if overflow not in ("error", "truncate", "window"):
            raise ValueError(f"overflow must be 'error', 'truncate' or 'window', not {overflow!r}")
        batch = list(zip(texts, pairs)) if pairs is not None else list(texts)
        if overflow == "error":
            rows = self.backend.encode_batch(batch, is_pretokenized=split_into_words)
            too_long = [i for i, e in enumerate(rows) if len(e.ids) > max_length]
            if too_long:
                i = too_long[0]
                raise ValueError(f"input {i} has {len(rows[i].ids)} tokens, more than max_length="
                                 f"{max_length} ({len(too_long)} inputs are too long); pass "
                                 "overflow='truncate' to cut them or overflow='window' to split them")
            return Encoded(rows, np.arange(len(rows), dtype=np.int64))
        if overflow == "window" and not 0 <= stride < max_length - 3:
            raise ValueError(f"stride {stride} must be >= 0 and less than max_length - 3 "
                             f"({max_length - 3}): windows share `stride` tokens")
        if overflow == "window" and pairs is not None:
            rows = self._window_pairs(batch, max_length, stride, split_into_words)
        else:
            rows = self._truncated(batch, max_length, 0 if overflow == "truncate" else stride, "longest_first",
                                   split_into_words, overflow)
        cut = sum(1 for e in rows if e.overflowing)
        if overflow == "truncate":
            if cut:
                warnings.warn(f"truncated {cut} of {len(rows)} inputs to {max_length} tokens", stacklevel=2)
            return Encoded(rows, np.arange(len(rows), dtype=np.int64), num_truncated=cut)
        windows = [[e, *e.overflowing] for e in rows]
        return Encoded([w for ws in windows for w in ws],
                       np.repeat(np.arange(len(rows), dtype=np.int64), [len(ws) for ws in windows]))

    def _truncated(self, batch: list, max_length: int, stride: int, strategy: str, split: bool,
                   overflow: str) -> list[tokenizers.Encoding]:
        self.backend.enable_truncation(max_length, stride=stride, strategy=strategy)
        try:
            return self.backend.encode_batch(batch, is_pretokenized=split)
        except Exception as e:  # the Rust library raises plain Exception
            raise ValueError(f"cannot {overflow} these inputs to {max_length} tokens: {e}") from e
        finally:
            self.backend.no_truncation()

    def _window_pairs(self, batch: list, max_length: int, stride: int, split: bool) -> list[tokenizers.Encoding]:
        """Pairs with the second text in windows. Where the first text leaves the second `room` tokens
        or fewer than `stride`, its windows share room // 2 tokens (the Rust library would panic)."""
        firsts = self.backend.encode_batch([a for a, _ in batch], is_pretokenized=split, add_special_tokens=False)
        room = np.array([max_length - 3 - len(e.ids) for e in firsts])
        if (room <= 0).any():
            i = int(np.flatnonzero(room <= 0)[0])
            raise ValueError(f"cannot window these inputs to {max_length} tokens: the first text of input {i} has "
                             f"{len(firsts[i].ids)} tokens, which leaves no room for the second; raise max_length "
                             "or pass overflow='truncate'")
        strides = np.where(room <= stride, room // 2, stride)
        rows: list = [None] * len(batch)
        for s in np.unique(strides):
            picked = np.flatnonzero(strides == s)
            for i, e in zip(picked, self._truncated([batch[i] for i in picked], max_length, int(s), "only_second",
                                                    split, "window")):
                rows[i] = e
        return rows

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, encoded in parallel (corpus building)."""
        return [row.ids for row in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def pre_tokenize(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """The words the tokenizer splits `text` into (before WordPiece), with their character
        (start, end) in `text`."""
        return self.backend.pre_tokenizer.pre_tokenize_str(text)

    def tokens(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, special tokens included."""
        return self.backend.encode(text).tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True, cleanup: bool = True) -> str:
        """Text from ids. `cleanup=False` keeps a space around punctuation, as `normalize` does."""
        decoder = self.backend.decoder
        if cleanup or not isinstance(decoder, decoders.WordPiece):
            return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        tokens = [self.backend.id_to_token(i) for i in ids
                  if not (skip_special_tokens and i in self.special_ids)]
        return decoders.WordPiece(prefix=decoder.prefix, cleanup=False).decode(tokens)

    def normalize(self, text: str) -> str:
        """The text as the model sees it: normalised and split into words, joined by spaces."""
        if self.backend.normalizer is not None:
            text = self.backend.normalizer.normalize_str(text)
        if self.backend.pre_tokenizer is None:
            return text
        return " ".join(w for w, _ in self.backend.pre_tokenizer.pre_tokenize_str(text))


def basic_words(text: str, lowercase: bool = True) -> list[str]:
    """The words BERT's basic tokenizer makes of `text` before WordPiece: control characters
    removed, lower-cased and accents stripped (with `lowercase`), split at white space and around
    punctuation. The word units of a static (skip-gram) vocabulary."""
    normalizer, splitter = _basic_pipeline(lowercase)
    return [w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))]


@lru_cache(maxsize=2)
def _basic_pipeline(lowercase: bool) -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    return (normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                       lowercase=lowercase), pre_tokenizers.BertPreTokenizer())


def _lowercase_setting(folder: Path) -> bool:
    """`do_lower_case` from a tokenizer_config.json beside vocab.txt; BERT's default is True."""
    config = folder / "tokenizer_config.json"
    return bool(json.loads(config.read_text()).get("do_lower_case", True)) if config.exists() else True
