"""encode: all-MiniLM-L6-v2 sentence embeddings of the STS-B train+dev sentences.

bertkit.embed vs sentence-transformers `encode` vs plain transformers (unsorted batches), batch 32,
in one process, alternating, median of the repeats. Reports sentences/s, the ratios, the cosine
agreement with sentence-transformers fp32, and bertkit's model FLOP/s as a fraction of the fp32 and
bf16 matmul peaks measured in the same run.

    python benchmarks/bench_encode.py [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import DATA, DTYPE_NAMES, alternate, matmul_peak, median, minilm_dir, write_results  # noqa: E402

import bertkit  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402


def sts_sentences() -> list[str]:
    sentences = []
    for name in ("sts-train.csv", "sts-dev.csv"):
        for line in open(DATA / "stsb" / name, encoding="utf-8"):
            cols = line.rstrip("\n").split("\t")
            sentences += [cols[5], cols[6]]
    return sentences


def plain_transformers(model, tokenizer, sentences, batch_size=32):
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    sentences = sts_sentences()[: args.limit]
    path = minilm_dir()
    model, tokenizer = bertkit.load_pretrained(path), bertkit.Tokenizer.from_pretrained(path)
    st = SentenceTransformer(str(path), device="cpu")
    hf_model, hf_tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    outputs: dict[str, np.ndarray] = {}

    def run(name, fn, ctx=contextlib.nullcontext):
        def go():
            with ctx():
                outputs[name] = np.asarray(fn())
        return go

    runs = {
        "bertkit default": run("bertkit default", lambda: bertkit.embed(model, tokenizer, sentences, progress=False)),
        "bertkit fp32": run("bertkit fp32", lambda: bertkit.embed(model, tokenizer, sentences, precision="fp32", progress=False)),
        "bertkit bf16": run("bertkit bf16", lambda: bertkit.embed(model, tokenizer, sentences, precision="bf16", progress=False)),
        "sentence-transformers fp32": run("sentence-transformers fp32", lambda: st.encode(sentences, batch_size=32)),
        "sentence-transformers bf16": run("sentence-transformers bf16", lambda: st.encode(sentences, batch_size=32), bf16),
        "transformers fp32": run("transformers fp32", lambda: plain_transformers(hf_model, hf_tokenizer, sentences)),
    }
    for go in runs.values():  # warm-up
        go()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    times = alternate(runs, args.repeats)
    lengths = tokenizer.encode(sentences).lengths
    flops = forward_flops(model.config, lengths.tolist())
    reference = outputs["sentence-transformers fp32"]
    rows = {}
    for name, t in times.items():
        seconds = median(t)
        rows[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                      "min_cosine_vs_st_fp32": float(cosines(outputs[name], reference).min()),
                      "model_gflops_per_s": flops / seconds / 1e9}
    speed = {k: v["sentences_per_s"] for k, v in rows.items()}
    ratios = {
        "bertkit default / sentence-transformers default (fp32)": speed["bertkit default"] / speed["sentence-transformers fp32"],
        "bertkit fp32 / sentence-transformers fp32": speed["bertkit fp32"] / speed["sentence-transformers fp32"],
        "bertkit bf16 / sentence-transformers bf16": speed["bertkit bf16"] / speed["sentence-transformers bf16"],
        "bertkit fp32 / transformers fp32": speed["bertkit fp32"] / speed["transformers fp32"],
    }
    for name in ("bertkit default", "bertkit fp32", "bertkit bf16"):
        prec = DTYPE_NAMES[bertkit.precision.resolve("auto" if name == "bertkit default" else name.split()[-1])]
        rows[name]["fraction_of_matmul_peak"] = flops / rows[name]["seconds"] / peaks[prec]
        rows[name]["peak_used"] = prec
    table = [f"{len(sentences)} sentences, mean {lengths.mean():.1f} tokens, batch 32, median of {args.repeats}; "
             f"matmul peak measured now: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s.\n",
             "| run | sentences/s | model GFLOP/s | of matmul peak | min cosine vs ST fp32 |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        frac = f"{r['fraction_of_matmul_peak']:.0%} ({r['peak_used']})" if "fraction_of_matmul_peak" in r else ""
        table.append(f"| {name} | {r['sentences_per_s']:.0f} | {r['model_gflops_per_s']:.1f} | {frac} | {r['min_cosine_vs_st_fp32']:.6f} |")
    table += ["", "| ratio | value | target |", "|---|---:|---:|"]
    targets = [">= 2.0", ">= 1.2", ">= 1.2", ""]
    table += [f"| {k} | {v:.2f}x | {t} |" for (k, v), t in zip(ratios.items(), targets)]
    text = "\n".join(table)
    print(text)
    write_results("encode", "python benchmarks/bench_encode.py" + (f" --limit {args.limit}" if args.limit else ""),
                  {"sentences": len(sentences), "mean_tokens": float(lengths.mean()), "repeats": args.repeats,
                   "matmul_peak_flops": peaks, "runs": rows, "ratios": ratios, "times": times}, text)


if __name__ == "__main__":
    main()
