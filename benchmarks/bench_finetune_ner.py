"""finetune-ner: CoNLL-2003 NER fine-tuning of all-MiniLM-L6-v2, bertkit vs the transformers run_ner recipe.

Both train on the same sentences (eng.train, read once by bertkit's CoNLL reader), batch 32, lr 5e-5
with linear decay, the same precision (`--dtype auto`: bf16 autocast where the CPU computes it natively, else fp32), one process,
2 threads, alternating runs (Trainer, bertkit greedy[, bertkit crf]), median over the repeats.
Repeat r trains every side with seed first_seed + r (both initialise the classifier and order the
batches from it), so the repeats also show how much dev F1 moves from seed to seed; the models of
seed s go to OUT/greedy, OUT/crf for seed 0 and OUT/greedy-seed<s>, OUT/crf-seed<s> otherwise.
`--first-seed 3 --repeats 3` adds seeds 3, 4, 5 to the recorded 0, 1, 2 (recorded apart, as
finetune-ner-seeds3-5).

- bertkit: `finetune(FinetuneConfig(task="tag", ...), TrainConfig(...))`, the library's own defaults
  otherwise (random batches, first-subword words, the classifier at 30x the encoder's lr, AdamW
  fused). No dev file is given, so neither side evaluates or selects weights during training;
  bertkit's periodic resume checkpoints are set to the end only, as the Trainer runs with
  save_strategy="no".
- transformers: `Trainer` + `AutoModelForTokenClassification` + `DataCollatorForTokenClassification`,
  tokenized with is_split_into_words, truncation to 512, only the first subword labelled (-100
  elsewhere), TrainingArguments defaults otherwise (the run_ner recipe).

Speed: real (non-padding) tokens per second of the training loop (bertkit: its log's tokens/s;
transformers: tokens its collator handed out / train_runtime), the end-to-end time of each call
(tokenizing, loading, training, saving) with the process CPU time it took (less sensitive than
wall time to other jobs on a shared machine), and the model FLOPs (3x the forward matrix products of
the real tokens, `forward_flops`) as a fraction of the matmul peak measured in the same run.

Quality: entity F1 on dev (eng.testa) of the final weights of each, scored the same way: one tag
per CoNLL word (the tag of its first subword; a word without tokens is O), seqeval's default mode
(as run_ner reports it), the median over the repeats' seeds (each seed's F1 is recorded).
bertkit's own `task_metrics(entity_mode="default")` is recorded beside.

    python benchmarks/bench_finetune_ner.py --epochs 1 --repeats 1          # speed, one epoch each
    python benchmarks/bench_finetune_ner.py --epochs 3 --decoders greedy crf --repeats 3  # + F1, 3 seeds
    python benchmarks/bench_finetune_ner.py --max-steps 20                   # quick check (not recorded)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DTYPE_NAMES, alternate, matmul_peak, median, minilm_dir, write_results  # noqa: E402

from bertkit import Tokenizer, load_pretrained  # noqa: E402
from bertkit.config import FinetuneConfig, TrainConfig  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.precision import resolve  # noqa: E402
from bertkit.predict import predict_examples, task_metrics  # noqa: E402
from bertkit.tasks import read_examples  # noqa: E402
from bertkit.tasks.model import load_task_model  # noqa: E402
from bertkit.train.finetune import finetune, task_data, task_spec  # noqa: E402

BATCH, LR = 32, 5e-5
# Batching and loss-normalisation choices bertkit can train with (issue: no accuracy given up for speed):
# FinetuneConfig fields, plus "eps" for AdamW's epsilon (TrainConfig). "default" is the library's: random
# batches, each batch's loss over its own items, eps 1e-8 (the Trainer's three choices), the classifier at
# 30x the encoder's lr ("head-lr-1" is the Trainer's single lr); "grouped" was the default until
# 2026-12-02 (the runs named "random-eps1e-8" in older results).
VARIANTS = {
    "default": {},
    "grouped": {"batching": "grouped", "loss_norm": "dataset", "eps": 1e-6},
    "grouped-batchnorm": {"batching": "grouped", "loss_norm": "batch"},
    "random-datasetnorm": {"loss_norm": "dataset"},
    "random-eps1e-6": {"eps": 1e-6},
    "tokens": {"batching": "grouped", "batch_by": "tokens", "loss_norm": "dataset"},
    "head-lr-1": {"head_lr_scale": 1.0},  # the randomly initialised classifier learns at 1x the encoder's lr
    "head-lr-10": {"head_lr_scale": 10.0},
    "head-lr-30": {"head_lr_scale": 30.0},  # the default
}


def hf_encode(hf_tok, examples):
    """The run_ner tokenization of word examples: split into words, truncated to 512 tokens."""
    return hf_tok([list(ex.words) for ex in examples], is_split_into_words=True, truncation=True, max_length=512)


def hf_features(hf_tok, examples, label_ids: dict[str, int]) -> list[dict]:
    """The run_ner preprocessing: words -> subwords, the first subword of each word labelled."""
    enc = hf_encode(hf_tok, examples)
    rows = []
    for i, ex in enumerate(examples):
        labels, previous = [], None
        for w in enc.word_ids(i):
            labels.append(-100 if w is None or w == previous else label_ids[ex.tags[w]])
            previous = w
        rows.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                     "token_type_ids": enc["token_type_ids"][i], "labels": labels})
    return rows


class CountingCollator:
    """DataCollatorForTokenClassification that records the real length of every row it batches."""

    def __init__(self, collator):
        self.collator, self.lengths = collator, []

    def __call__(self, rows):
        self.lengths += [len(r["input_ids"]) for r in rows]
        return self.collator(rows)


def run_trainer(state: dict, args, train_examples, labels: tuple[str, ...], out: Path, seed: int) -> dict:
    """Tokenize, load, train with the Trainer; returns the run's figures and keeps the trainer in
    `state["trainers"][seed]`."""
    import transformers
    began = time.perf_counter()
    path = minilm_dir()
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    rows = hf_features(hf_tok, train_examples, {x: i for i, x in enumerate(labels)})
    transformers.set_seed(seed)
    model = transformers.AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    collator = CountingCollator(transformers.DataCollatorForTokenClassification(hf_tok))
    work = {"max_steps": args.max_steps} if args.max_steps else {"num_train_epochs": args.epochs}
    training_args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, per_device_eval_batch_size=64, learning_rate=LR,
        bf16=args.dtype == "bf16", use_cpu=True, eval_strategy="no", save_strategy="no", report_to=[],
        dataloader_num_workers=0, seed=seed, logging_steps=50, disable_tqdm=True, **work)
    trainer = transformers.Trainer(model=model, args=training_args, train_dataset=rows, data_collator=collator)
    loop = trainer.train().metrics["train_runtime"]
    state.setdefault("trainers", {})[seed] = trainer
    state["hf_tok"] = hf_tok
    return {"loop_seconds": loop, "seconds": time.perf_counter() - began, "lengths": collator.lengths,
            "steps": trainer.state.global_step}


def bertkit_configs(decoder: str, variant: str, args, out: Path, seed: int) -> tuple[FinetuneConfig, TrainConfig]:
    """The run's two configs: the library's defaults but for the benchmark's recipe and the variant."""
    steps_per_epoch = -(-args.train_sentences // BATCH)
    epochs = args.max_steps / steps_per_epoch if args.max_steps else args.epochs
    choices = dict(VARIANTS[variant])
    eps = {"eps": choices.pop("eps")} if "eps" in choices else {}
    config = FinetuneConfig(task="tag", model=str(minilm_dir()), train=str(args.train), dev=None, out=str(out),
                            epochs=epochs, batch_size=BATCH, decoder=decoder, entity_mode="default", **choices)
    steps = max(1, round(epochs * steps_per_epoch))
    return config, TrainConfig(lr=LR, precision=args.dtype, seed=seed, log_every=50, checkpoint_every=steps + 1, **eps)


def run_bertkit(decoder: str, variant: str, args, out: Path, seed: int) -> dict:
    """One `finetune` call; returns the run's figures (loop tokens/s from its log.jsonl)."""
    began = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    finetune(*bertkit_configs(decoder, variant, args, out, seed))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    last = [r for r in records if "tokens_per_s" in r][-1]
    return {"tokens_per_s_log": last["tokens_per_s"], "seconds": time.perf_counter() - began, "steps": last["step"] + 1}


def bertkit_lengths(tokenizer, decoder: str, variant: str, args, steps: int, seed: int) -> list[int]:
    """The real lengths of the rows bertkit's first `steps` steps train on (its batches are a pure
    function of seed and step), drawn by the library's own `task_data`."""
    data = task_data(bertkit_configs(decoder, variant, args, Path(args.out), seed)[0], tokenizer, seed)
    grouped, lengths = data.steps.grouped, data.features.lengths
    per_epoch = grouped.steps_per_epoch
    rows = [r for s in range(steps) for r in grouped.epoch(s // per_epoch)[s % per_epoch]]
    return lengths[rows].tolist()


def word_tags_from_tokens(pred_ids: np.ndarray, word_ids: list, num_words: int, labels) -> list[str]:
    tags, previous = ["O"] * num_words, None
    for t, w in enumerate(word_ids):
        if w is not None and w != previous:
            tags[w] = labels[int(pred_ids[t])]
        previous = w
    return tags


def trainer_dev_tags(state: dict, seed: int, dev_examples, labels) -> list[list[str]]:
    """Dev predictions of the Trainer model trained with `seed`, one tag per word (first subword's)."""
    trainer, hf_tok = state["trainers"][seed], state["hf_tok"]
    rows = hf_features(hf_tok, dev_examples, {x: i for i, x in enumerate(labels)})
    trainer.data_collator = trainer.data_collator.collator
    logits = trainer.predict(rows).predictions  # (N, T_max, L), padded with -100
    enc = hf_encode(hf_tok, dev_examples)
    return [word_tags_from_tokens(logits[i].argmax(-1), enc.word_ids(i), len(ex.words), labels)
            for i, ex in enumerate(dev_examples)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=None, help="train this many steps instead of --epochs")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0, help="repeat r trains with seed first-seed + r")
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 where the CPU computes it natively, else fp32 (emulated bf16 is many times slower)")
    parser.add_argument("--decoders", nargs="+", choices=("greedy", "crf"), default=["greedy"])
    parser.add_argument("--out", default="/tmp/bertkit-bench-finetune-ner", help="where the trained models go")
    parser.add_argument("--no-f1", action="store_true", help="skip the dev evaluation")
    parser.add_argument("--record", action="store_true", help="record a --max-steps run as the finetune-ner result")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default"],
                        help="bertkit's batching / loss-normalisation choices to run (each with every decoder)")
    parser.add_argument("--skip-trainer", action="store_true", help="bertkit only (exploration; not recorded)")
    args = parser.parse_args()
    args.asked_dtype, args.dtype = args.dtype, DTYPE_NAMES[resolve(args.dtype)]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import seqeval.metrics

    args.train = DATA / "conll2003" / "eng.train"
    dev_path = DATA / "conll2003" / "eng.testa"
    train_examples = read_examples(str(args.train), "tag", {})
    dev_examples = read_examples(str(dev_path), "tag", {})
    args.train_sentences = len(train_examples)
    seeds = list(range(args.first_seed, args.first_seed + args.repeats))
    tokenizer = Tokenizer.from_pretrained(minilm_dir())
    spec = task_spec(FinetuneConfig(task="tag", model=str(minilm_dir()), train=str(args.train)), train_examples, [])
    labels = spec.labels
    out = Path(args.out)
    state: dict = {}
    figures: dict[str, list[dict]] = {}

    def keep(name, fn):
        def go():  # repeat r runs with seeds[r]
            seed, cpu = seeds[len(figures.setdefault(name, []))], time.process_time()
            figures[name].append({**fn(seed), "seed": seed})
            figures[name][-1]["cpu_seconds"] = time.process_time() - cpu
        return go

    def model_dir(decoder: str, variant: str, seed: int) -> Path:
        name = decoder if variant == "default" else f"{decoder}-{variant}"
        return out / (name if seed == 0 else f"{name}-seed{seed}")

    def run_name(decoder: str, variant: str) -> str:
        return f"bertkit {decoder}" + ("" if variant == "default" else f" [{variant}]")

    runs = {} if args.skip_trainer else {"transformers Trainer": keep("transformers Trainer", lambda seed: run_trainer(
        state, args, train_examples, labels, out / "trainer", seed))}
    ours = {run_name(d, v): (d, v) for d in args.decoders for v in args.variants}
    for name, (d, v) in ours.items():
        runs[name] = keep(name, lambda seed, d=d, v=v: run_bertkit(d, v, args, model_dir(d, v, seed), seed))
    peak = matmul_peak(resolve(args.dtype))
    times = alternate(runs, args.repeats)
    peak = max(peak, matmul_peak(resolve(args.dtype)))

    config = load_pretrained(minilm_dir()).config
    rows = {}
    for name, runs_of in figures.items():
        if name.startswith("bertkit"):
            steps = runs_of[0]["steps"]
            ours_lengths = {r["seed"]: bertkit_lengths(tokenizer, *ours[name], args, steps, r["seed"]) for r in runs_of}
            lengths = ours_lengths[args.first_seed]  # whole epochs: the same rows for every seed
            loop = [sum(ours_lengths[r["seed"]]) / r["tokens_per_s_log"] for r in runs_of]
        else:
            lengths = runs_of[0]["lengths"]
            loop = [r["loop_seconds"] for r in runs_of]
        flops = 3 * forward_flops(config, lengths)
        seconds = median(loop)
        rows[name] = {"steps": runs_of[0]["steps"], "real_tokens": int(sum(lengths)), "loop_seconds": seconds,
                      "tokens_per_s": sum(lengths) / seconds, "end_to_end_seconds": median(times[name]),
                      "end_to_end_cpu_seconds": median([r["cpu_seconds"] for r in runs_of]),
                      "model_gflops_per_s": flops / seconds / 1e9, "fraction_of_matmul_peak": flops / seconds / peak,
                      "loop_seconds_each": loop}

    if not args.no_f1:
        gold = [list(ex.tags) for ex in dev_examples]
        for name in rows:
            each = []
            for seed in seeds:
                scores = {}
                if name.startswith("bertkit"):
                    model = load_task_model(model_dir(*ours[name], seed))
                    preds = predict_examples(model, tokenizer, dev_examples, 64, args.dtype)
                    tags = [p["tags"] for p in preds]
                    scores["f1_bertkit_metric"] = task_metrics(model.spec, dev_examples, preds, "default")["f1"]
                else:
                    tags = trainer_dev_tags(state, seed, dev_examples, labels)
                scores |= {"seed": seed, "f1": seqeval.metrics.f1_score(gold, tags),
                           "precision": seqeval.metrics.precision_score(gold, tags),
                           "recall": seqeval.metrics.recall_score(gold, tags)}
                each.append(scores)
            rows[name]["dev_f1"] = median([x["f1"] for x in each])
            rows[name]["dev_f1_mean"] = float(np.mean([x["f1"] for x in each]))
            rows[name]["dev_each_seed"] = each

    peer = rows.get("transformers Trainer")
    ours_rows = {n: r for n, r in rows.items() if n.startswith("bertkit") and peer}
    ratios = {f"{n} / transformers Trainer (loop tokens/s)": r["tokens_per_s"] / peer["tokens_per_s"]
              for n, r in ours_rows.items()}
    ratios |= {f"{n} / transformers Trainer (end to end)": peer["end_to_end_seconds"] / r["end_to_end_seconds"]
               for n, r in ours_rows.items()}
    ratios |= {f"{n} / transformers Trainer (end-to-end process CPU time)":
               peer["end_to_end_cpu_seconds"] / r["end_to_end_cpu_seconds"] for n, r in ours_rows.items()}
    work = f"--max-steps {args.max_steps}" if args.max_steps else f"--epochs {args.epochs:g}"
    command = (f"python benchmarks/bench_finetune_ner.py {work} --repeats {args.repeats}" + (" --record" if args.record else "")
               + (f" --first-seed {args.first_seed}" if args.first_seed else "")
               + (" --no-f1" if args.no_f1 else "")
               + (f" --dtype {args.asked_dtype}" if args.asked_dtype != "auto" else "")
               + (f" --decoders {' '.join(args.decoders)}" if args.decoders != ["greedy"] else "")
               + (f" --variants {' '.join(args.variants)}" if args.variants != ["default"] else "")
               + (" --skip-trainer" if args.skip_trainer else ""))
    table = [f"CoNLL-2003 eng.train, {len(train_examples)} sentences, all-MiniLM-L6-v2, batch {BATCH}, lr {LR:g}, "
             f"{args.dtype}, {work}, median of {args.repeats} (seeds {', '.join(map(str, seeds))}); matmul peak measured now: {args.dtype} "
             f"{peak / 1e9:.0f} GFLOP/s. Dev F1: eng.testa, final weights, one tag per word, seqeval default mode; "
             "median and mean over the seeds, then each seed's.\n",
             "| run | steps | real tokens | loop s | real tokens/s | end-to-end s | end-to-end CPU s | model GFLOP/s | of matmul peak | dev F1 | dev F1 mean | dev F1 by seed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        f1 = f"{r['dev_f1']:.4f} | {r['dev_f1_mean']:.4f}" if "dev_f1" in r else " | "
        by_seed = ", ".join(f"{x['f1']:.4f}" for x in r.get("dev_each_seed", []))
        table.append(f"| {name} | {r['steps']} | {r['real_tokens']} | {r['loop_seconds']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['end_to_end_seconds']:.1f} | {r['end_to_end_cpu_seconds']:.1f} | {r['model_gflops_per_s']:.1f} | "
                     f"{r['fraction_of_matmul_peak']:.0%} | {f1} | {by_seed} |")
    table += ["", "| ratio | value | target |", "|---|---:|---:|"]
    table += [f"| {k} | {v:.2f}x | {'>= 2.0' if 'loop' in k else ''} |" for k, v in ratios.items()]
    if not args.no_f1:
        table += ["", "| mean dev F1 difference | points | target |", "|---|---:|---:|"]
        table += [f"| {n} - transformers Trainer | {100 * (r['dev_f1_mean'] - peer['dev_f1_mean']):+.2f} | >= -0.2 |"
                  for n, r in ours_rows.items()]
    text = "\n".join(table)
    print(text)
    if args.max_steps and not args.record:  # a quick check: printed, not recorded
        return
    name = "finetune-ner" if args.max_steps or args.epochs == 1 else f"finetune-ner-{args.epochs:g}-epochs"
    if args.first_seed:
        name += f"-seeds{seeds[0]}-{seeds[-1]}"
    if args.skip_trainer or args.variants != ["default"]:
        name += "-variants"
    write_results(name, command, {"train_sentences": len(train_examples), "dev_sentences": len(dev_examples),
                                  "dtype": args.dtype, "epochs": None if args.max_steps else args.epochs,
                                  "max_steps": args.max_steps, "repeats": args.repeats, "matmul_peak_flops": peak,
                                  "runs": rows, "ratios": ratios, "end_to_end_times": times}, text)


if __name__ == "__main__":
    main()
