"""word vectors: 10,000 WikiText-2 valid sentences, bertkit vs the plain transformers way.

bertkit's `word_vectors` (length-sorted batches, unpadded encoder, one scatter-add per batch for
the subword means) against what most code does: `AutoModel(..., output_hidden_states=True)` on
batches in input order, then a Python loop over each sentence's `word_ids()` averaging the subwords
of each word. Same model (all-MiniLM-L6-v2), same layer (the last), fp32, one process, alternating,
median of the repeats; the vectors must agree.

    python benchmarks/bench_word_vectors.py [--sentences 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pseudo_perplexity import wikitext_sentences  # noqa: E402
from common import alternate, matmul_peak, median, minilm_dir, speed_table, write_results  # noqa: E402

import bertkit  # noqa: E402
from bertkit.analysis.vectors import word_vectors  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402


def transformers_way(model, tokenizer, sentences: list[str], batch_size: int = 32) -> list[np.ndarray]:
    out = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[start:start + batch_size], padding=True, return_tensors="pt")
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
            for b in range(hidden.shape[0]):
                words: dict[int, list[torch.Tensor]] = {}
                for t, w in enumerate(batch.word_ids(b)):
                    if w is not None:
                        words.setdefault(w, []).append(hidden[b, t])
                out.append(torch.stack([torch.stack(v).mean(0) for _, v in sorted(words.items())]).numpy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    from transformers import AutoModel, AutoTokenizer

    sentences = wikitext_sentences(args.sentences)
    path = minilm_dir()
    model, tokenizer = bertkit.load_pretrained(path), bertkit.Tokenizer.from_pretrained(path)
    peer, peer_tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    results = {}

    def ours(texts=sentences):
        results["bertkit"] = [f.vectors for f in word_vectors(model, tokenizer, texts, precision="fp32",
                                                              progress=False)]

    def plain(texts=sentences):
        results["transformers"] = transformers_way(peer, peer_tokenizer, texts)

    runs = {"bertkit": ours, "transformers": plain}
    for run in runs.values():
        run(sentences[:200])
    peak = matmul_peak(torch.float32)
    times = alternate(runs, args.repeats)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(results["bertkit"], results["transformers"]))
    lengths = tokenizer.encode(sentences).lengths.tolist()
    flops = forward_flops(model.config, lengths)
    words = sum(len(v) for v in results["bertkit"])
    rows = {name: {"seconds": median(t), "words_per_s": words / median(t), "max_abs_difference": worst,
                   "fraction_of_matmul_peak": flops / median(t) / peak} for name, t in times.items()}
    text, ratio = speed_table(
        f"all-MiniLM-L6-v2, last layer, subword means, {len(sentences)} WikiText-2 valid sentences ({words} words), "
        f"fp32, median of {args.repeats}; fp32 matmul peak measured now {peak / 1e9:.0f} GFLOP/s.",
        rows, "words_per_s", "max_abs_difference", "bertkit", "transformers", 2)
    print(text)
    write_results("word-vectors", f"python benchmarks/bench_word_vectors.py --sentences {args.sentences} "
                  f"--repeats {args.repeats}", {"sentences": len(sentences), "words": words, "matmul_peak_flops": peak,
                                                 "runs": rows, "ratio": ratio, "times": times}, text)


if __name__ == "__main__":
    main()
