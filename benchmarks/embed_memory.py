"""embed-memory: `bertkit embed` streams its input; its peak memory does not grow with the file.

Builds text files of 100k and 1M lines from the Gutenberg sentences (../shared/data/gutenberg_nltk,
split as pretraining splits them, cycled to the wanted count), embeds each with `bertkit embed` in
a fresh process and reports that process's peak resident memory (`/usr/bin/time -f %M`), its time
and lines/s. The model is given with --model: all-MiniLM-L6-v2 for the real speed, or a small random
encoder with its tokenizer (`--model tiny`, 2 layers, 128 wide) when a 1M-line MiniLM run is too
long for the machine: memory flatness is a property of the pipeline, not of the model's size.

    python benchmarks/embed_memory.py --model tiny --lines 100000 1000000
    python benchmarks/embed_memory.py --model minilm --lines 100000
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, minilm_dir, write_results  # noqa: E402

from bertkit import Encoder, Tokenizer, preset, save_pretrained  # noqa: E402
from bertkit.data.corpus import document_sentences  # noqa: E402


def gutenberg_sentences() -> list[str]:
    files = sorted((DATA / "gutenberg_nltk").glob("*.txt"))
    return [s for document in document_sentences(files, errors="replace", progress=False) for s in document if s.strip()]


def write_lines(path: Path, sentences: list[str], count: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for sentence in itertools.islice(itertools.cycle(sentences), count):
            f.write(sentence.replace("\n", " ") + "\n")


def tiny_model(out: Path) -> Path:
    tokenizer = Tokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    save_pretrained(Encoder(preset("tiny", vocab_size=tokenizer.vocab_size, hidden_size=128, num_heads=2,
                                   intermediate_size=512)), out)
    tokenizer.save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bertkit-embed-memory-"))
    model = minilm_dir() if args.model == "minilm" else tiny_model(work / "tiny")
    sentences = gutenberg_sentences()
    rows = {}
    for count in args.lines:
        lines, out = work / f"lines-{count}.txt", work / f"vectors-{count}.npy"
        write_lines(lines, sentences, count)
        command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "bertkit.cli", "embed", "--model", str(model),
                   "--input", str(lines), "--output", str(out), "--dtype", args.dtype, "--max-length", "128",
                   "--overflow", "truncate"]
        began = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - began
        peak_mib = int(result.stderr.strip().splitlines()[-1]) / 1024
        shape = np.load(out, mmap_mode="r").shape
        rows[count] = {"lines": count, "file_mib": lines.stat().st_size / 2**20, "output_shape": list(shape),
                       "peak_rss_mib": peak_mib, "seconds": seconds, "lines_per_s": count / seconds}
        print(f"{count} lines: peak RSS {peak_mib:.0f} MiB, {seconds:.0f} s", flush=True)
        out.unlink()
        lines.unlink()
    name = "all-MiniLM-L6-v2" if args.model == "minilm" else "a random 2-layer, 128-wide encoder (MiniLM's tokenizer)"
    table = [f"`bertkit embed` of Gutenberg sentences cycled to each count, {name}, --dtype {args.dtype}, default "
             "--chunk-lines 8192, --batch-size 32, --max-length 128 --overflow truncate; peak resident memory of the whole process (/usr/bin/time).\n",
             "| lines | input MiB | output | peak RSS MiB | seconds | lines/s |", "|---:|---:|---|---:|---:|---:|"]
    table += [f"| {r['lines']:,} | {r['file_mib']:.0f} | {r['output_shape'][0]:,} x {r['output_shape'][1]} | "
              f"{r['peak_rss_mib']:.0f} | {r['seconds']:.0f} | {r['lines_per_s']:.0f} |" for r in rows.values()]
    text = "\n".join(table)
    print(text)
    write_results(f"embed-memory-{args.model}", f"python benchmarks/embed_memory.py --model {args.model} --lines "
                  + " ".join(map(str, args.lines)) + (f" --dtype {args.dtype}" if args.dtype != "auto" else ""),
                  {"model": name, "runs": rows}, text)


if __name__ == "__main__":
    main()
