"""pseudo-perplexity: PLL of WikiText-2 valid sentences, bertkit vs the plain transformers loop.

bertkit's `pseudo_log_likelihoods` (masked copies batched, the MLM head only at the scored position)
against the loop most code uses: `AutoModelForMaskedLM`, one forward pass per masked copy, the
whole vocabulary at every position. Same model directory (a bertkit-pretrained encoder with its MLM
head), same sentences, fp32, one process, alternating, median of the repeats; the two PLLs must agree.

With --figures, also the corpus pseudo-perplexity of each model given, both variants, for the README.

    python benchmarks/bench_pseudo_perplexity.py --model runs/bert-mini [--sentences 500] [--repeats 3]
    python benchmarks/bench_pseudo_perplexity.py --model runs/*-mini --figures 1000 --repeats 0
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, alternate, matmul_peak, median, speed_table, write_results  # noqa: E402

import bertkit  # noqa: E402
from bertkit.data.corpus import paragraphs, train_sentence_splitter  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.pseudo_perplexity import corpus_pseudo_perplexity, masked_copies, pseudo_log_likelihoods  # noqa: E402

VALID = DATA / "wikitext2" / "raw" / "wiki.valid.raw"


def wikitext_sentences(count: int) -> list[str]:
    """The first `count` sentences of WikiText-2 valid's paragraphs (headings left out), split by
    the Punkt splitter bertkit's pretraining uses."""
    splitter = train_sentence_splitter([VALID], "strict")
    sentences = []
    for _, paragraph in paragraphs(VALID, "strict"):
        if not paragraph.startswith("="):
            sentences += splitter.tokenize(paragraph)
        if len(sentences) >= count:
            return sentences[:count]
    return sentences


def transformers_loop(model, tokenizer, sentences: list[str]) -> float:
    """Summed PLL, one masked copy per forward pass."""
    total = 0.0
    with torch.inference_mode():
        for sentence in sentences:
            encoded = tokenizer(sentence, return_tensors="pt")
            ids = encoded["input_ids"]
            for t in range(1, ids.size(1) - 1):
                masked = ids.clone()
                masked[0, t] = tokenizer.mask_token_id
                logits = model(input_ids=masked, attention_mask=encoded["attention_mask"]).logits
                total += logits[0, t].log_softmax(-1)[ids[0, t]].item()
    return total


def figures(models: list[Path], sentences: list[str]) -> str:
    rows = ["| model | pseudo-perplexity (original) | pseudo-perplexity (word-l2r) | scored tokens |",
            "|---|---:|---:|---:|"]
    for path in models:
        model, tokenizer = bertkit.load_pretrained(path), bertkit.Tokenizer.from_pretrained(path)
        scores = {v: pseudo_log_likelihoods(model, tokenizer, sentences, variant=v, precision="fp32")
                  for v in ("original", "word-l2r")}
        rows.append(f"| {path.name} | {corpus_pseudo_perplexity(scores['original']):.2f} | "
                    f"{corpus_pseudo_perplexity(scores['word-l2r']):.2f} | "
                    f"{sum(s.tokens for s in scores['original'])} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, nargs="+", required=True, help="encoder directories with an MLM head")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--figures", type=int, default=0, help="pseudo-perplexity of every model on N sentences")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    if args.figures:
        print(figures(args.model, wikitext_sentences(args.figures)))
    if not args.repeats:
        return
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = args.model[0]
    sentences = wikitext_sentences(args.sentences)
    model, tokenizer = bertkit.load_pretrained(path), bertkit.Tokenizer.from_pretrained(path)
    peer, peer_tokenizer = AutoModelForMaskedLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    totals = {}

    def ours(texts=sentences):
        totals["bertkit"] = sum(s.pll for s in pseudo_log_likelihoods(model, tokenizer, texts, precision="fp32",
                                                                      progress=False))

    def loop(texts=sentences):
        totals["transformers loop"] = transformers_loop(peer, peer_tokenizer, texts)

    runs = {"bertkit": ours, "transformers loop": loop}
    for run in runs.values():  # warm-up, on a few sentences: the loop takes minutes on all of them
        run(sentences[:20])
    peak = matmul_peak(torch.float32)
    times = alternate(runs, args.repeats)
    encoded = tokenizer.encode(sentences)
    copy_lengths = [len(encoded.ids(r)) for r in range(len(encoded))
                    for _ in masked_copies(encoded.ids(r), encoded.word_ids(r), "original")]
    flops = forward_flops(model.config, copy_lengths)  # the encoder over every copy; heads not counted
    rows = {name: {"seconds": median(t), "copies_per_s": len(copy_lengths) / median(t), "summed_pll": totals[name],
                   "fraction_of_matmul_peak": flops / median(t) / peak} for name, t in times.items()}
    config = model.config
    text, ratio = speed_table(
        f"{path.name} ({config.num_layers} layers, hidden {config.hidden_size}, vocabulary {config.vocab_size}), "
        f"{len(sentences)} WikiText-2 valid sentences, {len(copy_lengths)} masked copies, fp32, median of "
        f"{args.repeats}; fp32 matmul peak measured now {peak / 1e9:.0f} GFLOP/s (encoder FLOPs only).",
        rows, "copies_per_s", "summed_pll", "bertkit", "transformers loop", 5)
    print(text)
    write_results("pseudo-perplexity", f"python benchmarks/bench_pseudo_perplexity.py --model {path} "
                  f"--sentences {args.sentences} --repeats {args.repeats}",
                  {"model": str(path), "sentences": len(sentences), "copies": len(copy_lengths),
                   "matmul_peak_flops": peak, "runs": rows, "ratio": ratio, "times": times}, text)


if __name__ == "__main__":
    main()
