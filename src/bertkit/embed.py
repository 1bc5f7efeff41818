"""Sentence embeddings: encode texts, pool token vectors, return one vector per text.

Texts are tokenized in one parallel call, sorted by length so that each batch holds texts of
similar length (little padding, and the encoder drops what remains), and returned in input order.
Mean pooling averages every token of the text, [CLS] and [SEP] included, as sentence-transformers
does; texts split into windows (overflow="window") average their windows' pooled vectors weighted
by window length (max pooling takes the maximum over windows).

`embed_file` embeds a text file of any size: it reads the file in chunks of lines (never the whole
file), writes each chunk's vectors into a memory-mapped `.npy` beside the output and records the
chunks it completed, so that a killed run resumes without recomputing a finished chunk; under
torchrun each process embeds every world_size-th chunk into the same file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import precision as precision_
from .allocator import release_freed_memory
from .files import write_text
from .data.alignment import combine_windows
from .data.batches import in_length_order
from .heads import Pooling, pool
from .model import Encoder, fingerprint
from .postprocess import PostProcess, load_postprocess
from .textfiles import DecodeErrors, read_lines
from .tokenizer import Encoded, Overflow, Tokenizer

def vectors_key(model: Encoder, tokenizer: Tokenizer, precision: str, *extra) -> str:
    """A digest of what cached vectors depend on: the model (its config and every weight), the
    tokenizer, the precision they are computed in, and `extra` (JSON-serializable: the texts, the
    layers ...)."""
    dtype = str(precision_.resolve(precision, next(model.parameters()).device))
    return fingerprint(model, json.dumps([dataclasses.asdict(model.config), dtype, tokenizer.to_json(), *extra]))


@torch.no_grad()  # not inference_mode: under it, autocast re-casts every weight on every call
def embed(model: Encoder, tokenizer: Tokenizer, texts: Sequence[str], *, pooling: Pooling = "mean",
          layers: int | Sequence[int] = -1, normalize: bool = False, batch_size: int = 32,
          precision: str = "auto", max_length: int | None = None, overflow: Overflow = "error",
          stride: int = 64, postprocess: PostProcess | str | None = None, progress: bool = True) -> np.ndarray:
    """Embed texts with an encoder.

    Args:
        texts: the texts; an empty text embeds its [CLS] and [SEP] tokens.
        pooling: "mean" over tokens, the "cls" vector, or "max" over tokens.
        layers: hidden state to pool (-1 the last, 0 the embedding output), or several, averaged.
        normalize: scale each vector to unit length (cosine similarity becomes a dot product).
        precision: "auto" (bf16 where the CPU computes it natively), "fp32" or "bf16".
        max_length: window in tokens; default the model's maximum (512 for BERT).
        overflow: longer texts are an "error", cut ("truncate", counted), or split into
            overlapping "window"s whose vectors are combined.
        postprocess: standardization, all-but-the-top or whitening fitted on a corpus
            (`postprocess.fit_postprocess`, or the path of a saved one), applied before `normalize`.

    Returns:
        (len(texts), H) float32 array in the order of `texts`.
    """
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts; wrap a single text in a list")
    layer_list = [model.layer_index(i) for i in ([layers] if isinstance(layers, int) else layers)]
    max_length = max_length or model.config.max_length
    encoded = tokenizer.encode(list(texts), max_length=max_length, overflow=overflow, stride=stride)
    vectors = pooled_rows(model, encoded, tokenizer.pad_id, pooling=pooling, layers=layer_list, batch_size=batch_size,
                          precision=precision, progress=progress)
    vectors = combine_windows(vectors, encoded.origin, len(texts), encoded.lengths,
                              how="max" if pooling == "max" else "mean")
    if postprocess is not None:
        vectors = (load_postprocess(postprocess) if isinstance(postprocess, (str, Path)) else postprocess)(vectors)
    if normalize:
        vectors = F.normalize(torch.from_numpy(vectors), dim=-1).numpy()
    return vectors


@torch.no_grad()
def pooled_rows(model: Encoder, encoded: Encoded, pad_id: int, pooling: Pooling = "mean", layers: Sequence[int] = (-1,),
                batch_size: int = 32, precision: str = "auto", progress: bool = False) -> np.ndarray:
    """Pooled vectors of tokenized rows (`embed` without the tokenizing and the windows' combining).

    Args:
        encoded: the rows, each one sequence the model takes whole.
        pad_id: the tokenizer's padding id.
        pooling, precision: as `embed` takes them.
        layers: hidden states to pool, averaged (as `Encoder.layer_index` takes them).
        batch_size: rows run together, of similar length.

    Returns:
        (len(encoded), H) float32 array in the order of the rows.
    """
    vectors = np.empty((len(encoded), model.config.hidden_size), dtype=np.float32)
    with precision_.evaluating(model, precision) as device, tqdm(total=len(encoded), desc="embed", unit="seq",
                                                                 disable=not progress) as bar:
        for rows in in_length_order(encoded.lengths, batch_size):  # longest first: a memory error shows at once
            batch = {k: v.to(device) for k, v in encoded.tensors(rows, pad_id).items()}
            out = model(**batch, output_layers=layers)
            hidden = torch.stack([out.layers[model.layer_index(i)] for i in layers]).mean(0)
            vectors[rows] = pool(hidden.float(), batch["attention_mask"], pooling).cpu().numpy()
            bar.update(len(rows))
    return vectors


@dataclasses.dataclass(frozen=True)
class FileRun:
    """Where `embed_file` keeps a run's state: the vectors being written and one progress file per
    process (the chunks it completed)."""
    output: Path

    @property
    def partial(self) -> Path:
        return self.output.with_name(self.output.name + ".partial.npy")

    def progress(self, rank: int) -> Path:
        return self.output.with_name(f"{self.output.name}.progress-{rank}.json")

    def progress_files(self) -> list[Path]:
        return sorted(self.output.parent.glob(f"{self.output.name}.progress-*.json"))


def embed_file(model: Encoder, tokenizer: Tokenizer, input: str | Path, output: str | Path, *,
               resume: bool = False, chunk_lines: int = 8192, rank: int = 0, world_size: int = 1,
               barrier: Callable[[], None] = lambda: None, errors: DecodeErrors = "strict",
               progress: bool = True, **options) -> tuple[int, int, int]:
    """Embed every line of a UTF-8 file into `output`, a (lines, H) float32 .npy, in bounded memory.

    Args:
        resume: continue the interrupted run of the same input, model and options (its
            `OUTPUT.partial.npy` and progress files); without it such leftovers are an error.
        chunk_lines: lines embedded and recorded together: the work a kill can lose.
        rank, world_size, barrier: this process's share under torchrun (chunks rank, rank +
            world_size, ...) and a function that waits for every process.
        options: `embed`'s keyword options (pooling, layers, normalize, batch_size, precision, ...).

    Returns:
        (lines of the input, its empty lines (embedded as empty texts), lines this call embedded:
        in this process's share, less those an interrupted run had finished).
    """
    input, run = Path(input), FileRun(Path(output))
    lines, empty = check_lines(tokenizer, input, errors, chunk_lines, options.get("overflow", "error"),
                               options.get("max_length") or model.config.max_length)
    key = file_run_key(model, tokenizer, input, lines, chunk_lines, options)
    done = resumed_chunks(run, key, resume)
    barrier()  # every process has looked for leftovers before the first starts a new file
    if rank == 0 and not done:
        run.output.parent.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(run.partial, mode="w+", dtype=np.float32, shape=(lines, model.config.hidden_size))
    barrier()
    chunks = -(-lines // chunk_lines)
    mine = [c for c in range(rank, chunks, world_size) if c not in done]
    finished = sorted(c for c in done if c % world_size == rank)
    rows = sum(min(chunk_lines, lines - c * chunk_lines) for c in mine)
    with tqdm(total=rows, desc=f"embed {input.name}", unit="line", disable=not progress) as bar:
        for c, texts in chunks_of(input, errors, chunk_lines, set(mine)):
            vectors = embed(model, tokenizer, texts, progress=False, **options)
            # mapped for this chunk only: pages of the output stay mapped, and counted as the process's
            # memory, for as long as the map lives
            out = np.load(run.partial, mmap_mode="r+")
            out[c * chunk_lines:c * chunk_lines + len(texts)] = vectors
            out.flush()  # the rows are on disk before the progress file counts them
            del out, vectors
            release_freed_memory()
            finished.append(c)
            write_text(run.progress(rank), json.dumps({"key": key, "done": finished}))
            bar.update(len(texts))
    barrier()
    if rank == 0:
        os.replace(run.partial, run.output)
        for path in run.progress_files():
            path.unlink()
    return lines, empty, rows


def check_lines(tokenizer: Tokenizer, input: Path, errors: DecodeErrors, chunk_lines: int, overflow: str,
                max_length: int) -> tuple[int, int]:
    """(lines, empty lines) of the file, read chunk by chunk before any work: invalid UTF-8, an empty
    file and (with overflow="error") a line longer than `max_length` tokens are errors naming the line."""
    lines = empty = 0
    numbered = read_lines(input, errors)
    while chunk := list(itertools.islice(numbered, chunk_lines)):
        lines, empty = lines + len(chunk), empty + sum(not line.strip() for _, line in chunk)
        if overflow == "error":
            encoded = tokenizer.backend.encode_batch([line for _, line in chunk])
            too_long = [(n, len(e.ids)) for (n, _), e in zip(chunk, encoded) if len(e.ids) > max_length]
            if too_long:
                n, count = too_long[0]
                raise ValueError(f"{input}:{n}: {count} tokens, more than max_length={max_length}; pass "
                                 "--overflow truncate to cut such lines or --overflow window to split them "
                                 "(overflow= in Python)")
    if lines == 0:
        raise ValueError(f"{input}: the file is empty")
    return lines, empty


def file_run_key(model: Encoder, tokenizer: Tokenizer, input: Path, lines: int, chunk_lines: int, options: dict) -> str:
    """What an interrupted run must share with the one resuming it: the model, tokenizer and
    precision (`vectors_key`), the input file (size, modification time, lines) and the options."""
    stat = input.stat()
    about = json.dumps([str(input.resolve()), stat.st_size, stat.st_mtime_ns, lines, chunk_lines,
                        sorted((k, str(v)) for k, v in options.items())])
    return hashlib.sha256((vectors_key(model, tokenizer, options.get("precision", "auto")) + about).encode()).hexdigest()


def resumed_chunks(run: FileRun, key: str, resume: bool) -> set[int]:
    """The chunks an interrupted run completed (empty for a new run)."""
    leftovers = [p for p in (run.partial, *run.progress_files()) if p.exists()]
    if not resume:
        if leftovers:
            raise ValueError(f"{leftovers[0]} is left from an interrupted run: pass --resume (resume=True) to "
                             f"continue it, or delete {', '.join(map(str, leftovers))} to start again")
        return set()
    if not run.partial.exists():
        return set()  # nothing was started: a new run
    done: set[int] = set()
    for path in run.progress_files():
        record = json.loads(path.read_text())
        if record["key"] != key:
            raise ValueError(f"{path} belongs to a run with another input, model or options than this one; "
                             "resume with the same ones, or delete the leftovers to start again")
        done.update(record["done"])
    return done


def chunks_of(path: Path, errors: DecodeErrors, chunk_lines: int, wanted: set[int]) -> Iterator[tuple[int, list[str]]]:
    """(chunk index, its lines) for the wanted chunks of the file, reading one chunk at a time."""
    lines = (line for _, line in read_lines(path, errors))
    for c, texts in enumerate(iter(lambda: list(itertools.islice(lines, chunk_lines)), [])):  # until a chunk is empty
        if c in wanted:
            yield c, texts
