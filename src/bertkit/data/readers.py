"""Readers for the usual task file formats -> `data.examples`: tables (TSV/CSV with columns by name
or index), JSON Lines, the PASCAL RTE XML, CoNLL column files and span JSON Lines; `read_file`
picks the reader by the file's extension. Every bad line is an error naming the file and the line,
or, with `skip_bad=True`, skipped and counted in a warning; nothing is dropped silently.

Departures from common practice, on purpose:
- Tab-separated files are read without csv quoting (`quoting="auto"`): STS-B and MSRP hold texts
  with quote characters, and csv's quoting would silently merge the lines that follow into one text.
- CoNLL tags are converted to BIO on reading: an I-X that starts an entity (IOB1, as CoNLL-2003
  was distributed) becomes B-X. `scheme="bio"` refuses such a tag instead of guessing.
- RTE labels are normalised to "entailment" / "not_entailment" (RTE-1 spells them TRUE/FALSE,
  RTE-2 and 3 YES/NO), so the three files share one label set.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import re
import warnings
import xml.parsers.expat
from dataclasses import replace
from itertools import chain, islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from ..tags import continues, entity_spans, iob1_to_bio, is_bio_tag
from ..textfiles import DecodeErrors, check_text, read_lines
from .examples import Label, LabelKind, Span, TaskDataError, TextExample, WordExample

Scheme = Literal["auto", "iob1", "bio", "none"]


# ---------------------------------------------------------------------------------- shared parsing


def _keep_good(rows: Iterable[Any], make: Callable[[Any], Any], path: Path, skip_bad: bool) -> list[Any]:
    """`make(row)` for each row, dropping None (filtered out); with skip_bad, rows whose `make`
    raises TaskDataError are skipped, counted and reported in one warning."""
    out, bad = [], []
    for row in rows:
        try:
            example = make(row)
        except TaskDataError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
            continue
        if example is not None:
            out.append(example)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} bad lines (kept {len(out)}); first: {bad[0]}", stacklevel=3)
    return out


def _parse_label(raw: Any, kind: LabelKind, separator: str, source: str) -> Label:
    """A label from a table cell or JSON value, checked against `kind`."""
    if kind == "score":
        try:
            score = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise TaskDataError(f"{source}: label {raw!r} is not a finite number; expected a score "
                                "(label_kind='score')")
        return score
    if kind == "multi":
        parts = raw.split(separator) if isinstance(raw, str) else raw
        if not isinstance(parts, list) or not all(isinstance(p, (str, int)) for p in parts):
            raise TaskDataError(f"{source}: label {raw!r} is not a list of labels; expected a list "
                                f"or a string separated by {separator!r} (label_kind='multi')")
        return tuple(str(p).strip() for p in parts if str(p).strip())
    if kind != "single":
        raise ValueError(f"label_kind must be 'single', 'multi' or 'score', not {kind!r}")
    if isinstance(raw, list):
        raise TaskDataError(f"{source}: label {raw!r} is a list; pass label_kind='multi' for multi-label data")
    if not isinstance(raw, (str, int)) or not str(raw).strip():
        raise TaskDataError(f"{source}: label {raw!r} is empty or not a string; expected one label")
    return str(raw).strip()


def _text(raw: Any, name: str, source: str, strip: bool = True) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise TaskDataError(f"{source}: {name} {raw!r} is empty or not a string; expected a text")
    return raw.strip() if strip else raw


# ---------------------------------------------------------------------------------- tables


def read_table(path: str | Path, text_column: str | int, label_column: str | int | None = None,
               pair_column: str | int | None = None, *, delimiter: str | None = None, header: bool = True,
               quoting: Literal["auto", "none", "csv"] | None = "auto", label_kind: LabelKind = "single",
               multi_separator: str = ",", skip_bad: bool = False,
               encoding_errors: DecodeErrors = "strict") -> list[TextExample]:
    """Read a TSV/CSV file, one example a row; texts are stripped of surrounding spaces.

    Args:
        text_column, label_column, pair_column: column names (with `header=True`) or 0-based
            indices. Without a label column the examples are unlabelled (label None).
        delimiter: None picks a tab for .tsv/.txt files and for files whose first line holds a
            tab (STS-B's sts-*.csv are tab-separated), else a comma.
        header: the first non-blank row names the columns and is not an example.
        quoting: "csv" honours quotes (fields may span lines); "none" (or None) takes every
            character literally, one row a line. "auto" is "none" for tabs and "csv" for commas.
        label_kind: "single" (one label), "multi" (labels split on `multi_separator`), "score".
        skip_bad: skip rows that fail (too few columns, empty text, bad label) and warn with their
            count, instead of raising.
        encoding_errors: invalid UTF-8 is an error naming the line ("strict") or replaced and counted.

    Returns:
        One TextExample per data row, in file order, `source` = "path:line".

    Raises:
        TaskDataError: "path:line: ..." for the first bad row (unless skip_bad), or a missing column.
    """
    path = Path(path)
    delimiter = delimiter or _guess_delimiter(path, encoding_errors)
    if quoting not in ("auto", "none", "csv", None):
        raise ValueError(f"quoting must be 'auto', 'none' or 'csv', not {quoting!r}")
    quoted = quoting == "csv" or (quoting == "auto" and delimiter != "\t")
    rows = _table_rows(path, delimiter, quoted, encoding_errors)
    names = next(rows, (1, None))[1] if header else None
    if header and names is None:
        return []  # an empty file: no header, no examples
    columns = [_column_index(c, names, path) for c in (text_column, pair_column, label_column)]

    return _keep_good(rows, lambda row: _table_example(row[1], columns, label_kind, multi_separator,
                                                       f"{path}:{row[0]}"), path, skip_bad)


def _guess_delimiter(path: Path, errors: DecodeErrors) -> str:
    if path.suffix.lower() in (".tsv", ".txt"):
        return "\t"
    first = next((line for _, line in read_lines(path, errors) if line.strip()), "")
    return "\t" if "\t" in first else ","


def _table_rows(path: Path, delimiter: str, quoted: bool, errors: DecodeErrors) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank row; a leading byte-order mark is dropped."""
    csv.field_size_limit(2**31 - 1)  # csv's default refuses fields over 128 KiB: a long document is no error
    lines = ((line.lstrip("\ufeff") if n == 1 else line) + "\n" for n, line in read_lines(path, errors))
    reader = csv.reader(lines, delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as e:
        raise TaskDataError(f"{path}:{reader.line_num}: {e}; expected well-formed {delimiter!r}-separated "
                            "fields (pass quoting='none' if quotes are part of the text)") from None


def _column_index(column: str | int | None, names: list[str] | None, path: Path) -> int | None:
    if column is None or isinstance(column, int):
        return column
    if names is None:
        raise ValueError(f"{path}: column {column!r} is a name but header=False; give a 0-based index")
    stripped = [n.strip() for n in names]
    if column not in stripped:
        raise TaskDataError(f"{path}:1: no column {column!r}; the header has {stripped}")
    return stripped.index(column)


def _table_example(fields: list[str], columns: list[int | None], kind: LabelKind, separator: str,
                   source: str) -> TextExample:
    text_i, pair_i, label_i = columns
    need = max(i for i in columns if i is not None) + 1
    if len(fields) < need:
        raise TaskDataError(f"{source}: {len(fields)} columns; expected at least {need}")
    return TextExample(text=_text(fields[text_i], "text", source),
                       pair=None if pair_i is None else _text(fields[pair_i], "pair text", source),
                       label=None if label_i is None else _parse_label(fields[label_i], kind, separator, source),
                       source=source)


# ---------------------------------------------------------------------------------- JSON Lines


def _json_lines(path: Path, errors: DecodeErrors) -> Iterator[tuple[str, str]]:
    """("path:line", line) for each non-blank line."""
    return ((f"{path}:{n}", line) for n, line in read_lines(path, errors) if line.strip())


def _json_object(source: str, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{source}: not valid JSON ({e.msg} at column {e.colno}); expected one "
                            "JSON object a line") from None
    if not isinstance(record, dict):
        raise TaskDataError(f"{source}: a JSON {type(record).__name__}; expected an object")
    return record


def _field(record: dict, name: str, source: str) -> Any:
    if name not in record:
        raise TaskDataError(f"{source}: no field {name!r}; the record has {sorted(record)}")
    return record[name]


def _matches(record: dict, where: dict[str, Any] | None, source: str) -> bool:
    """Whether each field equals its value in `where` (or, for a callable, the callable says so)."""
    for name, wanted in (where or {}).items():
        value = _field(record, name, source)
        if not (wanted(value) if callable(wanted) else value == wanted):
            return False
    return True


def read_jsonl(path: str | Path, text_field: str = "text", label_field: str | None = "label",
               pair_field: str | None = None, *, label_kind: LabelKind = "single", multi_separator: str = ",",
               where: dict[str, Any | Callable[[Any], bool]] | None = None,
               skip_bad: bool = False, encoding_errors: DecodeErrors = "strict") -> list[TextExample]:
    """Read JSON Lines, one example an object.

    Args:
        label_field: None for unlabelled data. With label_kind="multi" the field holds a list
            (Reuters-21578's "labels") or a string split on `multi_separator`.
        where: keep only records whose fields equal these values, or for which these callables
            return True, e.g. {"split": "train"} or {"id": lambda i: i.startswith("neg/")}.

    Returns:
        One TextExample per kept record, in file order, `source` = "path:line".
    """
    path = Path(path)

    def make(row: tuple[str, str]) -> TextExample | None:
        source, record = row[0], _json_object(*row)
        if not _matches(record, where, source):
            return None
        label = (None if label_field is None
                 else _parse_label(_field(record, label_field, source), label_kind, multi_separator, source))
        pair = None if pair_field is None else _text(_field(record, pair_field, source), pair_field, source)
        return TextExample(_text(_field(record, text_field, source), text_field, source), pair, label, source)

    return _keep_good(_json_lines(path, encoding_errors), make, path, skip_bad)


# ---------------------------------------------------------------------------------- RTE XML

RTE_LABELS = {"TRUE": "entailment", "YES": "entailment", "FALSE": "not_entailment", "NO": "not_entailment"}


def read_rte_xml(path: str | Path) -> list[TextExample]:
    """PASCAL RTE pairs: text = <t>, pair = <h>, label from the `value` (RTE-1) or `entailment`
    (RTE-2/3) attribute, normalised to "entailment" / "not_entailment".

    Raises:
        TaskDataError: "path:line: ..." for malformed XML, a pair without <t> or <h>, or a label
            other than TRUE/FALSE/YES/NO.
    """
    path = Path(path)
    examples = []
    for line, attrs, parts in _rte_pairs(path):
        source = f"{path}:{line}"
        raw = attrs.get("value", attrs.get("entailment"))
        if raw is None or raw.upper() not in RTE_LABELS:
            raise TaskDataError(f"{source}: pair label {raw!r}; expected a value= or entailment= "
                                f"attribute in {sorted(RTE_LABELS)}")
        if "t" not in parts or "h" not in parts:
            raise TaskDataError(f"{source}: pair without <t> or <h>; expected both")
        examples.append(TextExample(_text(parts["t"], "<t>", source), _text(parts["h"], "<h>", source),
                                    RTE_LABELS[raw.upper()], source))
    return examples


def _rte_pairs(path: Path) -> list[tuple[int, dict, dict[str, str]]]:
    """(line of <pair>, its attributes, {"t": text, "h": text}) for each <pair>, via expat for line numbers."""
    parser = xml.parsers.expat.ParserCreate()
    pairs: list[tuple[int, dict, dict[str, str]]] = []
    inside: list[str | None] = [None]  # the <t>/<h> element being read

    def start(name: str, attrs: dict) -> None:
        if name == "pair":
            pairs.append((parser.CurrentLineNumber, attrs, {}))
        elif name in ("t", "h") and pairs:
            inside[0] = name
            pairs[-1][2][name] = ""

    def text(data: str) -> None:
        if inside[0]:
            pairs[-1][2][inside[0]] += data

    def end(name: str) -> None:
        if name in ("t", "h"):
            inside[0] = None

    parser.StartElementHandler, parser.CharacterDataHandler, parser.EndElementHandler = start, text, end
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except xml.parsers.expat.ExpatError as e:
            raise TaskDataError(f"{path}:{e.lineno}: malformed XML ({xml.parsers.expat.errors.messages[e.code]}); "
                                "expected an RTE entailment-corpus file") from None
    return pairs


# ---------------------------------------------------------------------------------- CoNLL columns


def read_conll(path: str | Path, word_column: int = 0, tag_column: int | None = -1, *,
               scheme: Scheme = "auto", docstart: bool = True, delimiter: str | None = None,
               encoding_errors: DecodeErrors = "strict") -> list[WordExample]:
    """Read a CoNLL-style column file: one word a line, blank lines between sentences.

    Args:
        word_column, tag_column: 0-based (negative from the end); tag_column=None for unlabelled words.
        scheme: "iob1" converts to BIO; "bio" checks the tags are BIO; "none" keeps plain tags
            (POS) and gives no spans; "auto" is "iob1" when every tag is O, B-X or I-X, else "none".
        docstart: treat "-DOCSTART-" lines as document separators and drop them.
        delimiter: None splits on any whitespace (CoNLL spaces, PTB tabs).

    Returns:
        One WordExample per sentence: BIO tags and entity spans in character offsets of the words
        joined by spaces, `source` = "path:line" of the sentence's first word.

    Raises:
        TaskDataError: "path:line: ..." for a line with a different number of columns than the
            first, or (scheme="bio") an I-X that does not continue an X entity.
    """
    if scheme not in ("auto", "iob1", "bio", "none"):
        raise ValueError(f"scheme must be 'auto', 'iob1', 'bio' or 'none', not {scheme!r}")
    path = Path(path)
    sentences = list(_conll_sentences(path, word_column, tag_column, docstart, delimiter, encoding_errors))
    if scheme == "auto":
        scheme = "iob1" if all(is_bio_tag(t) for _, _, tags in sentences for t in tags or ()) else "none"
    return [_word_example(words, tags, scheme, lines, path) for lines, words, tags in sentences]


def _conll_sentences(path: Path, word_column: int, tag_column: int | None, docstart: bool, delimiter: str | None,
                     errors: DecodeErrors) -> Iterator[tuple[list[int], list[str], list[str] | None]]:
    """(line numbers, words, tags or None) per sentence; every line must have the first line's columns."""
    lines: list[int] = []
    words: list[str] = []
    tags: list[str] = []
    width = None
    for n, line in chain(read_lines(path, errors), [(0, "")]):  # a blank line after the file ends its last sentence
        fields = line.split(delimiter) if delimiter else line.split()
        if not line.strip() or (docstart and fields[0] == "-DOCSTART-"):
            if lines:
                yield lines, words, tags if tag_column is not None else None
                lines, words, tags = [], [], []
            continue
        width = width or _check_columns(len(fields), word_column, tag_column, f"{path}:{n}")
        if len(fields) != width:
            raise TaskDataError(f"{path}:{n}: {len(fields)} columns; expected {width} like the file's first "
                                f"word line (word{' and tag' if tag_column is not None else ''} in every line)")
        lines.append(n)
        words.append(fields[word_column])
        tags.append(fields[tag_column] if tag_column is not None else "")


def _check_columns(width: int, word_column: int, tag_column: int | None, source: str) -> int:
    indices = {c % width if -width <= c < width else None for c in (word_column, tag_column) if c is not None}
    if None in indices or (tag_column is not None and len(indices) < 2):
        raise TaskDataError(f"{source}: {width} columns; expected a word column {word_column} and a "
                            f"distinct tag column {tag_column}")
    return width


def _word_example(words: list[str], tags: list[str] | None, scheme: str, lines: list[int], path: Path) -> WordExample:
    source = f"{path}:{lines[0]}"
    if tags is None or scheme == "none":
        return WordExample(tuple(words), None if tags is None else tuple(tags), source=source)
    for i, tag in enumerate(tags):
        if not is_bio_tag(tag):
            raise TaskDataError(f"{path}:{lines[i]}: tag {tag!r}; expected O, B-X or I-X (scheme={scheme!r}; "
                                "pass scheme='none' for plain tags such as POS)")
        if scheme == "bio" and tag[:2] == "I-" and not continues(tags[i - 1] if i else None, tag):
            raise TaskDataError(f"{path}:{lines[i]}: {tag} does not continue a {tag[2:]} entity, which BIO "
                                "requires; this looks like IOB1: pass scheme='iob1' or 'auto' to convert")
    bio = iob1_to_bio(tags)
    example = WordExample(tuple(words), tuple(bio), source=source)
    return replace(example, spans=_char_spans(example, entity_spans(bio)))


def _char_spans(example: WordExample, word_spans: Iterable[tuple[int, int, str]]) -> tuple[Span, ...]:
    """(first word, last word + 1, label) spans as character spans of the example's text."""
    return tuple(Span(example.word_offsets[s][0], example.word_offsets[e - 1][1], label) for s, e, label in word_spans)


# ---------------------------------------------------------------------------------- span JSON Lines


def read_span_jsonl(path: str | Path, text_field: str = "text", words_field: str = "tokens",
                    spans_field: str | None = None, label_field: str | None = None, *,
                    skip_bad: bool = False, strict_spans: bool = False,
                    encoding_errors: DecodeErrors = "strict") -> list[WordExample]:
    """Read entity spans from JSON Lines, one sentence an object, in one of two layouts.

    - Word offsets (GENIA): {"tokens": [...], "entity_mentions": [{"start", "end", "entity_type"}]}
      with start/end word indices, end exclusive.
    - Character offsets: {"text": "...", "spans": [{"start", "end", "label"}]}; words are the
      text's whitespace-separated pieces.

    A record with `words_field` is read as word offsets, else as character offsets. `spans_field`
    None picks "entity_mentions" or "spans"; `label_field` None picks "entity_type" or "label".
    A character span that does not start and end on word boundaries is widened to the words it
    overlaps (models label words), and such spans are counted in a warning; `strict_spans=True`
    refuses them instead.

    Returns:
        One WordExample per record with `spans` in character offsets (nested spans kept) and tags None
        (use `spans_to_bio(ex.words, word_spans(ex))` for BIO tags).

    Raises:
        TaskDataError: "path:line: ..." for a span outside the text or words, or with end <= start.
    """
    path = Path(path)
    widened: list = []

    def make(row: tuple[str, str]) -> WordExample:
        source, record = row[0], _json_object(*row)
        name = spans_field or next((f for f in ("entity_mentions", "spans") if f in record), "spans")
        raw = _field(record, name, source)
        if not isinstance(raw, list):
            raise TaskDataError(f"{source}: {name!r} is a {type(raw).__name__}; expected a list of spans")
        if words_field in record:
            return _word_offset_example(_field(record, words_field, source), raw, label_field, source)
        text = _text(_field(record, text_field, source), text_field, source, strip=False)  # offsets index it
        example = _char_offset_example(text, raw, label_field, source)
        cut = _cut_spans(example)
        if cut and strict_spans:
            span, word = cut[0]
            raise TaskDataError(f"{source}: span [{span.start}, {span.end}) {span.label!r} does not start and end on "
                                f"word boundaries (at {word!r}); expected whole words (strict_spans)")
        widened.extend(cut)
        return example

    examples = _keep_good(_json_lines(path, encoding_errors), make, path, skip_bad)
    if widened:
        warnings.warn(f"{path}: {len(widened)} spans do not start and end on word boundaries and are widened to "
                      f"whole words (first: {widened[0][0]} at {widened[0][1]!r}); --strict-spans refuses them",
                      stacklevel=2)
    return examples


def _cut_spans(example: WordExample) -> list[tuple[Span, str]]:
    """The spans that do not start at a word's start and end at a word's end, each with the word
    they cut (or their own text)."""
    starts = {s for s, _ in example.word_offsets}
    ends = {e for _, e in example.word_offsets}
    cut = []
    for span in example.spans:
        if span.start not in starts or span.end not in ends:
            inside = next((example.text[s:e] for s, e in example.word_offsets
                           if s < span.start < e or s < span.end < e), example.text[span.start:span.end])
            cut.append((span, inside))
    return cut


def _span_fields(span: Any, label_field: str | None, limit: int, unit: str, source: str) -> tuple[int, int, str]:
    """(start, end, label) of one raw span, checked to lie in 0..limit with start < end."""
    if not isinstance(span, dict):
        raise TaskDataError(f"{source}: span {span!r}; expected an object with start, end and a label")
    label_name = label_field or ("entity_type" if "entity_type" in span else "label")
    start, end, label = (_field(span, k, source) for k in ("start", "end", label_name))
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= limit):
        raise TaskDataError(f"{source}: span [{start}, {end}) {label!r} is empty or outside the {limit} "
                            f"{unit}; expected 0 <= start < end <= {limit} (end exclusive)")
    return start, end, str(label)


def _word_offset_example(words: Any, raw_spans: list, label_field: str | None, source: str) -> WordExample:
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise TaskDataError(f"{source}: words {words!r}; expected a non-empty list of non-empty strings")
    base = WordExample(tuple(words), source=source)
    spans = [_span_fields(raw, label_field, len(words), "words", source) for raw in raw_spans]
    return replace(base, spans=_char_spans(base, spans))


def _char_offset_example(text: str, raw_spans: list, label_field: str | None, source: str) -> WordExample:
    pieces = list(re.finditer(r"\S+", text))
    spans = tuple(Span(*_span_fields(raw, label_field, len(text), "characters", source)) for raw in raw_spans)
    return WordExample(tuple(m.group() for m in pieces), None, spans, text, tuple(m.span() for m in pieces), source)


# ---------------------------------------------------------------------------------- by extension

JSON_LINES = (".jsonl", ".jsonlines")
GENERAL_OPTIONS = ("encoding_errors", "strict_spans")  # about reading any text: dropped where they do not apply


def read_file(path: str | Path, *, words: bool, label_kind: LabelKind = "single", labelled: bool = True,
              **options: Any) -> list[TextExample] | list[WordExample]:
    """Read a task file with the reader its extension calls for; options go to that reader.

    Words (tagging, spans): .jsonl/.jsonlines -> read_span_jsonl, anything else -> read_conll.
    Texts: .xml -> read_rte_xml, .jsonl -> read_jsonl, anything else -> read_table (which needs
    `text_column`), with labels parsed as `label_kind`. `labelled=False` reads inputs to predict:
    no label column or field, no CoNLL tag column (an RTE file keeps its labels); options of the
    training file's reader that this file's reader does not take are then left out.

    Raises:
        TaskDataError: an option the reader does not take (labelled files), or no text column.
    """
    suffix = Path(path).suffix.lower()
    if words:
        reader = read_span_jsonl if suffix in JSON_LINES else read_conll
        options |= {} if labelled or reader is read_span_jsonl else {"tag_column": None}
    elif suffix == ".xml":
        reader = read_rte_xml
    else:
        reader = read_jsonl if suffix in JSON_LINES else read_table
        if not labelled:
            unlabelled = {k: None for k in ("label_column", "label_field") if k in options}
            options |= unlabelled or {"label_field" if reader is read_jsonl else "label_column": None}
        options.setdefault("label_kind", label_kind)
    accepted = set(inspect.signature(reader).parameters) - {"path"}
    unknown = sorted(set(options) - accepted - set(GENERAL_OPTIONS))
    if unknown and labelled:
        raise TaskDataError(f"{path}: {reader.__name__} takes no option {', '.join(unknown)}; its options are "
                            f"{', '.join(sorted(accepted))}")
    options = {k: v for k, v in options.items() if k in accepted}
    if reader is read_table:
        check_text(path)  # a binary file is not asked for its text column
        if "text_column" not in options:
            raise TaskDataError(f"{path}: which column holds the text? Pass --text-column and --label-column (names "
                                "from the header, or 0-based indices), or finetune.reader.text_column in a recipe")
    return reader(path, **options)


def looks_like_columns(path: str | Path, lines: int = 200) -> bool:
    """True for a CoNLL-style file: blank lines between sentences, and the same number (>= 2) of
    columns on every other line (of the first `lines`)."""
    widths = {len(line.split()) for _, line in islice(read_lines(path, "replace"), lines)}
    blank = 0 in widths  # a blank line has no columns
    widths.discard(0)
    return blank and len(widths) == 1 and min(widths) >= 2


def read_text_lines(path: str | Path, pair: bool = False, errors: DecodeErrors = "strict") -> list[TextExample]:
    """One unlabelled text a line; with `pair`, each line is text TAB second text."""
    examples = []
    for n, line in read_lines(path, errors):
        text, tab, second = line.partition("\t") if pair else (line, "", None)
        if pair and not tab:
            raise TaskDataError(f"{path}:{n}: this model reads text pairs: write each line as text TAB second text")
        examples.append(TextExample(text, second, source=f"{path}:{n}"))
    return examples


def read_word_lines(path: str | Path, split: Callable[[str], list[tuple[str, tuple[int, int]]]],
                    errors: DecodeErrors = "strict") -> list[WordExample]:
    """One text a line, split into words with their character offsets by `split` (a tokenizer's
    `pre_tokenize`), so predicted entities map back onto the text."""
    return [word_example(line, split, f"{path}:{n}") for n, line in read_lines(path, errors)]


def word_example(text: str, split: Callable[[str], list[tuple[str, tuple[int, int]]]], source: str = "") -> WordExample:
    """An unlabelled text as words with their character offsets, found by `split`."""
    pieces = split(text)
    return WordExample(tuple(w for w, _ in pieces), text=text, word_offsets=tuple(o for _, o in pieces), source=source)
