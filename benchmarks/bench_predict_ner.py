"""predict-ner: NER prediction on the CoNLL-2003 dev sentences, bertkit vs transformers `pipeline`.

The same weights on both sides: a bertkit tag model (greedy decoder, first-subword words; `--model`,
e.g. the greedy model bench_finetune_ner.py leaves in /tmp/bertkit-bench-finetune-ner/greedy, or
else fine-tuned here for `--steps` steps) is copied into `AutoModelForTokenClassification` (the
encoder from the model directory, the classifier from bertkit's head). Batch 32, the same precision
(`--dtype auto`: bf16 autocast where the CPU computes it natively, else fp32), one process, 2 threads, alternating, median of the repeats.

Runs, all from the dev sentences (eng.testa, words joined by spaces) to entities with character
offsets:
- "bertkit text": `read_inputs` of a .txt file (words found by the tokenizer's pre-tokenizer),
  `predict_examples`, `prediction_record` (what `bertkit predict` does);
- "bertkit words": the CoNLL words as given, `predict_examples`, `prediction_record`;
- "transformers pipeline": `pipeline("token-classification", aggregation_strategy="first")` called
  on the list of sentences with batch_size 32.

Reports sentences/s, the ratios, model FLOPs (`forward_flops` of the real tokens) as a fraction of
the matmul peak, and, as a check that both did the same work, the entity F1 of each against the
gold entities (exact character spans) and how many sentences' entity sets agree with bertkit text.

    python benchmarks/bench_predict_ner.py [--repeats 3] [--model DIR] [--dtype auto|bf16|fp32] [--limit N]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, alternate, matmul_peak, median, minilm_dir, write_results  # noqa: E402

from bertkit import Tokenizer  # noqa: E402
from bertkit.config import FinetuneConfig, TrainConfig  # noqa: E402
from bertkit.metrics import span_scores  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.precision import resolve  # noqa: E402
from bertkit.predict import predict_examples, prediction_record, read_inputs  # noqa: E402
from bertkit.tags import entity_spans  # noqa: E402
from bertkit.tasks import read_examples  # noqa: E402
from bertkit.tasks.model import load_task_model  # noqa: E402
from bertkit.train.finetune import finetune  # noqa: E402

BATCH = 32


def train_briefly(steps: int, dtype: str, out: Path) -> Path:
    """A greedy tag model after `steps` steps on eng.train (speed does not depend on the weights;
    trained ones just give realistic entity counts)."""
    epochs = steps / -(-14041 // BATCH)
    finetune(FinetuneConfig(task="tag", model=str(minilm_dir()), train=str(DATA / "conll2003" / "eng.train"),
                            out=str(out), epochs=epochs, batch_size=BATCH, decoder="greedy"),
             TrainConfig(lr=5e-5, precision=dtype, seed=0, log_every=50, checkpoint_every=steps + 1))
    return out


def hf_copy(model, path: Path):
    """AutoModelForTokenClassification with bertkit's encoder (from the directory) and head weights."""
    import transformers
    labels = model.spec.labels
    hf = transformers.AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    with torch.no_grad():
        hf.classifier.weight.copy_(model.head.out.weight)
        hf.classifier.bias.copy_(model.head.out.bias)
    return hf.eval()


def gold_spans(example) -> set:
    return {(example.word_offsets[s][0], example.word_offsets[e - 1][1], label) for s, e, label in entity_spans(example.tags)}


def span_f1(gold: list[set], pred: list[set]) -> dict:
    scores = span_scores(gold, pred)  # spans in character offsets: (start, end, label)
    return {k: scores[k] for k in ("precision", "recall", "f1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="a bertkit tag model directory (greedy decoder)")
    parser.add_argument("--steps", type=int, default=200, help="without --model: fine-tune this many steps first")
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 where the CPU computes it natively, else fp32 (emulated bf16 is many times slower)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N dev sentences (a quick check, not recorded)")
    args = parser.parse_args()
    args.asked_dtype, args.dtype = args.dtype, "bf16" if resolve(args.dtype) == torch.bfloat16 else "fp32"
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import transformers

    path = Path(args.model) if args.model else train_briefly(args.steps, args.dtype, Path(tempfile.mkdtemp()) / "model")
    model, tokenizer = load_task_model(path), Tokenizer.from_pretrained(path)
    if model.spec.decoder != "greedy" or model.spec.alignment != "first":
        raise SystemExit(f"{path}: the pipeline comparison needs a greedy, first-subword tag model")
    examples = read_examples(str(DATA / "conll2003" / "eng.testa"), "tag", {})[: args.limit]
    sentences = [ex.text for ex in examples]
    txt = Path(tempfile.mkdtemp()) / "sentences.txt"
    txt.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    pipe = transformers.pipeline("token-classification", model=hf_copy(model, path), tokenizer=hf_tok,
                                 aggregation_strategy="first", device="cpu")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.dtype == "bf16" else contextlib.nullcontext
    outputs: dict[str, list[set]] = {}

    def bertkit_text():
        inputs, pre_split = read_inputs(str(txt), model.spec, tokenizer)
        preds = predict_examples(model, tokenizer, inputs, BATCH, args.dtype)
        records = [prediction_record(ex, p, pre_split) for ex, p in zip(inputs, preds)]
        outputs["bertkit text"] = [{(e["start"], e["end"], e["label"]) for e in r["entities"]} for r in records]

    def bertkit_words():
        preds = predict_examples(model, tokenizer, examples, BATCH, args.dtype)
        records = [prediction_record(ex, p, True) for ex, p in zip(examples, preds)]
        outputs["bertkit words"] = [{(e["start"], e["end"], e["label"]) for e in r["entities"]} for r in records]

    def pipeline():
        with autocast():
            found = pipe(sentences, batch_size=BATCH)
        outputs["transformers pipeline"] = [{(e["start"], e["end"], e["entity_group"]) for e in s} for s in found]

    cpu: dict[str, list[float]] = {}

    def cpu_timed(name, fn):
        def go():
            start = time.process_time()
            fn()
            cpu.setdefault(name, []).append(time.process_time() - start)
        return go

    runs = {name: cpu_timed(name, fn) for name, fn in
            {"transformers pipeline": pipeline, "bertkit text": bertkit_text, "bertkit words": bertkit_words}.items()}
    with autocast():  # warm-up on a few batches
        pipe(sentences[:200], batch_size=BATCH)
    predict_examples(model, tokenizer, examples[:200], BATCH, args.dtype)
    peak = matmul_peak(torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    times = alternate(runs, args.repeats)
    lengths = tokenizer.encode([list(ex.words) for ex in examples], split_into_words=True).lengths
    flops = forward_flops(load_task_model(path).encoder.config, lengths.tolist())
    gold = [gold_spans(ex) for ex in examples]
    rows = {}
    for name, t in times.items():
        seconds = median(t)
        rows[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                      "model_gflops_per_s": flops / seconds / 1e9, "fraction_of_matmul_peak": flops / seconds / peak,
                      "entity_f1_vs_gold": span_f1(gold, outputs[name])["f1"],
                      "sentences_agreeing_with_bertkit_text": sum(a == b for a, b in zip(outputs[name], outputs["bertkit text"])) / len(sentences),
                      "cpu_seconds": median(cpu[name]), "seconds_each": t}
    speed = {k: v["sentences_per_s"] for k, v in rows.items()}
    ratios = {"bertkit text / transformers pipeline": speed["bertkit text"] / speed["transformers pipeline"],
              "bertkit words / transformers pipeline": speed["bertkit words"] / speed["transformers pipeline"],
              "bertkit text / transformers pipeline (process CPU time)":
                  rows["transformers pipeline"]["cpu_seconds"] / rows["bertkit text"]["cpu_seconds"]}
    command = ("python benchmarks/bench_predict_ner.py" + f" --repeats {args.repeats}"
               + (f" --model {args.model}" if args.model else f" --steps {args.steps}")
               + (f" --dtype {args.asked_dtype}" if args.asked_dtype != "auto" else ""))
    table = [f"CoNLL-2003 eng.testa, {len(sentences)} sentences, mean {lengths.mean():.1f} tokens, all-MiniLM-L6-v2 tag model "
             f"({'from ' + args.model if args.model else f'fine-tuned {args.steps} steps'}), batch {BATCH}, {args.dtype}, "
             f"median of {args.repeats}; matmul peak measured now: {args.dtype} {peak / 1e9:.0f} GFLOP/s. Entity F1: exact "
             "character spans against the gold entities.\n",
             "| run | sentences/s | CPU s | model GFLOP/s | of matmul peak | entity F1 | sentences agreeing with bertkit text |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        table.append(f"| {name} | {r['sentences_per_s']:.0f} | {r['cpu_seconds']:.1f} | {r['model_gflops_per_s']:.1f} | "
                     f"{r['fraction_of_matmul_peak']:.0%} | {r['entity_f1_vs_gold']:.4f} | "
                     f"{r['sentences_agreeing_with_bertkit_text']:.1%} |")
    table += ["", "| ratio | value | target |", "|---|---:|---:|"]
    table += [f"| {k} | {v:.2f}x | {'' if 'CPU' in k else '>= 2.0'} |" for k, v in ratios.items()]
    text = "\n".join(table)
    print(text)
    if args.limit:  # a quick check: printed, not recorded
        return
    write_results("predict-ner", command, {"sentences": len(sentences), "mean_tokens": float(lengths.mean()),
                                           "dtype": args.dtype, "repeats": args.repeats, "matmul_peak_flops": peak,
                                           "runs": rows, "ratios": ratios, "times": times}, text)


if __name__ == "__main__":
    main()
