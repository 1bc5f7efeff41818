"""WordNet gloss embeddings: building every sense's vector against `embed` on the same gloss sentences.

A sense's gloss embedding (LMMS) is the contextual vector of its lemma inside
"lemma - the synset's lemmas - gloss - examples": `SenseVectors` encodes each gloss once, keeps the
lemma's words, and caches the vectors on disk. The issue asks it to run at the encode speed of
`bertkit embed` (mean pooling of the same sentences, same batch size, same precision) and a second
run to take seconds (the cache). Same process, alternating is not possible for a cache that fills
once: `embed` runs first, then the first build, then the second.

    python benchmarks/bench_gloss_embeddings.py [--senses N]   # default: all 207,016 senses
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DTYPE_NAMES, matmul_peak, minilm_dir, write_results  # noqa: E402

import bertkit  # noqa: E402
from bertkit.analysis.wsd import SenseVectors, all_sense_keys, gloss_words, wordnet  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.precision import resolve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senses", type=int, help="the first N sense keys only (default: all)")
    parser.add_argument("--layers", default="-1", help="hidden states summed, as for bertkit analyze wsd")
    args = parser.parse_args()
    wn = wordnet(DATA / "wordnet3")
    keys = all_sense_keys(wn)[:args.senses]
    model, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    dtype = resolve("auto", torch.device("cpu"))  # bf16 where the CPU computes it natively
    precision = DTYPE_NAMES[dtype]
    texts = [" ".join(gloss_words(wn, k)[0]) for k in keys]
    peak = matmul_peak(dtype)
    flops = forward_flops(model.config, tokenizer.encode(texts).lengths.tolist())
    seconds = {}
    start = time.perf_counter()
    bertkit.embed(model, tokenizer, texts, batch_size=64, precision=precision)
    seconds["embed (mean pooling)"] = time.perf_counter() - start
    layers = [int(x) for x in args.layers.split(",")]
    with tempfile.TemporaryDirectory() as cache:
        for run in ("SenseVectors, first run (builds the cache)", "SenseVectors, second run (reads the cache)"):
            start = time.perf_counter()
            SenseVectors(model, tokenizer, wn, cache, layers, batch_size=64, precision=precision)(keys)
            seconds[run] = time.perf_counter() - start
    rows = ["| run | seconds | minutes | senses/s | of matmul peak |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {name} | {s:.1f} | {s / 60:.1f} | {len(keys) / s:.0f} | "
             f"{'-' if 'reads' in name else f'{flops / s / peak:.0%}'} |" for name, s in seconds.items()]
    first = seconds["SenseVectors, first run (builds the cache)"]
    ratio = seconds["embed (mean pooling)"] / first
    text = (f"all-MiniLM-L6-v2, {len(keys)} WordNet 3.0 senses (gloss sentences), layers {args.layers}, batch 64, "
            f"{precision}; "
            f"matmul peak measured now {peak / 1e9:.0f} GFLOP/s.\n\n" + "\n".join(rows) +
            f"\n\nbuilding / embed speed: **{ratio:.2f}x** (target: about 1x, the encode speed of embed)")
    print(text)
    write_results("gloss-embeddings", "python benchmarks/bench_gloss_embeddings.py" +
                  (f" --senses {args.senses}" if args.senses else ""),
                  {"senses": len(keys), "seconds": seconds, "ratio": ratio, "matmul_peak_flops": peak}, text)


if __name__ == "__main__":
    main()
