"""distill-task: the SST-2 model fine-tuned from all-MiniLM-L6-v2 (6 layers) taught to a 3-layer student.

Teacher: `python benchmarks/finetune_runs.py sst2` (runs/finetune/sst2). Students start from the
teacher's layers (`--layers`; by default 0, 3, 5: half, first and last included) and its head and
train one epoch on SST-2 train with the recipe's batch size and learning rate:
- distilled: `bertkit distill --objective task` (soft targets at T = 2, weight 0.5, plus the labels),
  and with `--unlabelled` each step also a batch of unlabelled movie-review sentences (the 64,720
  lines of ../shared/data/movie_reviews, Pang & Lee 2004: IMDb reviews, not the Rotten Tomatoes
  snippets SST-2 comes from) that learn the teacher's scores alone;
- without the teacher: the same run with `--distill.soft_weight=0` (labels only; same start, data, steps).
Quality: SST-2 dev accuracy of each. Speed: `predict_examples` on the first N SST-2 train sentences
(batch 64), teacher and student alternating, median of the repeats, in fp32 and, where the CPU
computes bf16 natively, in bf16.

    python benchmarks/distill_task.py              # both students, then measure
    python benchmarks/distill_task.py --layers 0,2,4 --unlabelled
    python benchmarks/distill_task.py --measure    # measure the students already in --work
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, alternate, median, write_results  # noqa: E402

from bertkit import Tokenizer  # noqa: E402
from bertkit.precision import resolve  # noqa: E402
from bertkit.predict import predict_examples  # noqa: E402
from bertkit.tasks import read_examples  # noqa: E402
from bertkit.tasks.model import load_task_model  # noqa: E402

READER = {"text_column": "sentence", "label_column": "label"}


def review_sentences(work: Path) -> Path:
    """The movie_reviews corpus as one sentence per line (its texts come split that way), in `work`."""
    out = work / "movie_review_sentences.txt"
    if not out.exists():
        lines = [line.strip() for row in open(DATA / "movie_reviews" / "reviews.jsonl", encoding="utf-8")
                 for line in json.loads(row)["text"].splitlines()]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{line}\n" for line in lines if line), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=str(ROOT / "runs" / "finetune" / "sst2"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "distill"))
    parser.add_argument("--measure", action="store_true", help="only measure the students already trained")
    parser.add_argument("--sentences", type=int, default=4000, help="sentences timed per prediction run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", help="the teacher layers the students keep (default: the library's)")
    parser.add_argument("--unlabelled", action="store_true", help="the distilled student also learns the teacher's "
                        "scores on the movie_reviews sentences")
    args = parser.parse_args()
    torch.set_num_threads(2)
    teacher_dir, work = Path(args.teacher), Path(args.work)
    if not (teacher_dir / "task.json").exists():
        sys.exit(f"{teacher_dir}: no fine-tuned SST-2 teacher; run python benchmarks/finetune_runs.py sst2 first")
    tag = ("-" + args.layers.replace(",", "")) if args.layers else ""
    students = {"distilled (3 layers)": work / f"sst2-l3{tag}{'-unlabelled' if args.unlabelled else ''}",
                "without the teacher (3 layers)": work / f"sst2-l3{tag}-labels"}
    recipe = json.loads((teacher_dir / "finetune_config.json").read_text())
    if not args.measure:
        layers = ["--layers", args.layers] if args.layers else []
        unlabelled = ["--corpus", str(review_sentences(work))] if args.unlabelled else []
        for (name, out), extra in zip(students.items(), (["--distill.soft_weight=0.5", *unlabelled],
                                                          ["--distill.soft_weight=0"])):
            subprocess.run([sys.executable, "-m", "bertkit.cli", "distill", "--objective", "task", "--teacher",
                            str(teacher_dir), "--train", str(DATA / "sst2" / "train.tsv"), "--dev",
                            str(DATA / "sst2" / "dev.tsv"), "--out", str(out), "--overwrite", "--dtype", "auto",
                            *layers, *extra, "--distill.epochs=1",
                            f"--distill.batch_size={recipe['finetune']['batch_size']}",
                            f"--distill.warmup_ratio={recipe['finetune']['warmup_ratio']}",
                            f"--train.lr={recipe['train']['lr']}"], check=True)
    dirs = {"teacher (6 layers)": teacher_dir, **students}
    accuracy = {name: json.loads((d / "dev_metrics.json").read_text())["accuracy"] for name, d in dirs.items()}
    models = {name: load_task_model(d) for name, d in dirs.items()}
    tokenizer = Tokenizer.from_pretrained(teacher_dir)
    texts = read_examples(str(DATA / "sst2" / "train.tsv"), "classify", READER)[:args.sentences]
    precisions = ["fp32"] + (["bf16"] if resolve("auto") == torch.bfloat16 else [])
    timed = {(name, p): (lambda m=models[name], p=p: predict_examples(m, tokenizer, texts, 64, p))
             for name in ("teacher (6 layers)", "distilled (3 layers)") for p in precisions}
    times = alternate({f"{n} {p}": fn for (n, p), fn in timed.items()}, args.repeats)
    speed = {key: len(texts) / median(t) for key, t in times.items()}
    teacher_acc = accuracy["teacher (6 layers)"]
    table = [f"SST-2 dev accuracy (872 sentences); prediction speed on {len(texts)} SST-2 train sentences, batch "
             f"64, 2 threads, median of {args.repeats}.\n", "| model | dev accuracy | of the teacher's | "
             + " | ".join(f"sentences/s {p}" for p in precisions) + " |", "|---|---:|---:|" + "---:|" * len(precisions)]
    for name in dirs:
        cells = [f"{speed[f'{name} {p}']:.0f}" if f"{name} {p}" in speed else "" for p in precisions]
        table.append(f"| {name} | {accuracy[name]:.4f} | {accuracy[name] / teacher_acc:.1%} | " + " | ".join(cells) + " |")
    ratios = {p: speed[f"distilled (3 layers) {p}"] / speed[f"teacher (6 layers) {p}"] for p in precisions}
    table += ["", "student / teacher prediction speed: " + ", ".join(f"**{r:.2f}x** {p}" for p, r in ratios.items())
              + " (target >= 1.8x); accuracy kept: "
              f"{accuracy['distilled (3 layers)'] / teacher_acc:.1%} (target >= 97%); distilled - without the teacher: "
              f"{100 * (accuracy['distilled (3 layers)'] - accuracy['without the teacher (3 layers)']):+.1f} points (target > 0)"]
    text = "\n".join(table)
    print(text)
    command = " ".join(["python benchmarks/distill_task.py", *sys.argv[1:]])
    write_results("distill-task" + tag + ("-unlabelled" if args.unlabelled else ""), command,
                  {"accuracy": accuracy, "sentences_per_s": {f"{k}": v for k, v in speed.items()},
                   "speedup": ratios}, text)


if __name__ == "__main__":
    main()
