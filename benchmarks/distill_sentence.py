"""distill-sentence: all-MiniLM-L6-v2 (6 layers) distilled into a 3-layer student on unlabelled text,
then STS-B dev Spearman and encode speed of teacher and student side by side.

Unlabelled text available here, none of it STS-B dev: STS-B train sentences (both sides), SST-2 train
sentences, and the Gutenberg books split into sentences as pretraining splits them, each distinct
sentence once (`bertkit distill` drops repeats), written to one file under --work. Training runs in
precision auto (bf16 where the CPU computes it natively). The student
starts from the teacher's layers 0, 3, 5 (half, the first and last included) and regresses its
mean-pooled vectors.

Quality: STS-B dev Spearman of the cosine of mean-pooled vectors (the teacher's own recipe).
Speed: `embed` over the STS-B dev sentences (batch 32, sorted by length), teacher and student
alternating, median of the repeats; sentences/s and the fraction of the fp32 matmul peak.

    python benchmarks/distill_sentence.py --minutes 20            # distil, then measure
    python benchmarks/distill_sentence.py --student runs/distill/minilm-l3   # measure an existing student
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, alternate, matmul_peak, median, minilm_dir, write_results  # noqa: E402

from bertkit import Tokenizer, embed, load_pretrained  # noqa: E402
from bertkit.analysis.sts import read_sts, sts_correlations  # noqa: E402
from bertkit.data.corpus import document_sentences  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402


def corpus_file(path: Path) -> int:
    """Write the unlabelled sentences (one a line) to `path`; returns how many lines."""
    first, second, _ = read_sts(DATA / "stsb" / "sts-train.csv")
    with open(DATA / "sst2" / "train.tsv", encoding="utf-8") as f:
        sst = [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]
    books = sorted((DATA / "gutenberg_nltk").glob("*.txt"))
    gutenberg = [s for doc in document_sentences(books, errors="replace", progress=False) for s in doc]
    lines = [" ".join(s.split()) for s in [*first, *second, *sst, *gutenberg]]
    lines = [s for s in lines if s]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="distillation budget (wall clock)")
    parser.add_argument("--student", help="measure this student instead of distilling one")
    parser.add_argument("--work", default=str(ROOT / "runs" / "distill"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work)
    if args.student:
        student_dir = Path(args.student)
    else:
        lines = corpus_file(work / "sentences.txt")
        print(f"{lines} unlabelled sentences in {work / 'sentences.txt'}", file=sys.stderr)
        student_dir = work / "minilm-l3"
        subprocess.run([sys.executable, "-m", "bertkit.cli", "distill", "--config", str(ROOT / "configs" / "distill.yaml"),
                        "--teacher", str(minilm_dir()), "--corpus", str(work / "sentences.txt"), "--out", str(student_dir),
                        "--max-minutes", str(args.minutes), "--dtype", "auto", "--overwrite"], check=True)

    models = {"teacher all-MiniLM-L6-v2": load_pretrained(minilm_dir()), "student (3 layers)": load_pretrained(student_dir)}
    tokenizer = Tokenizer.from_pretrained(minilm_dir())
    first, second, gold = read_sts(DATA / "stsb" / "sts-dev.csv")
    quality = {}
    for name, model in models.items():
        a = embed(model, tokenizer, first, precision="fp32", progress=False)
        b = embed(model, tokenizer, second, precision="fp32", progress=False)
        quality[name] = sts_correlations(a, b, gold)
    sentences = [*first, *second]
    lengths = tokenizer.encode(sentences).lengths
    peak = matmul_peak(torch.float32)
    times = alternate({name: (lambda m=model: embed(m, tokenizer, sentences, precision="fp32", progress=False))
                       for name, model in models.items()}, args.repeats)
    rows = {}
    for name, model in models.items():
        seconds = median(times[name])
        rows[name] = {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                      "fraction_of_matmul_peak": forward_flops(model.config, lengths) / seconds / peak,
                      "layers": model.config.num_layers, **quality[name]}
    teacher, student = rows["teacher all-MiniLM-L6-v2"], rows["student (3 layers)"]
    speedup = teacher["seconds"] / student["seconds"]
    command = "python benchmarks/distill_sentence.py" + (f" --student {args.student}" if args.student
                                                         else f" --minutes {args.minutes:g}")
    table = [f"STS-B dev Spearman (cosine of mean-pooled vectors) and encode speed over {len(sentences)} STS-B "
             f"dev sentences, fp32, 2 threads, median of {args.repeats}; matmul peak {peak / 1e9:.0f} GFLOP/s.\n",
             "| model | layers | STS-B dev Spearman | sentences/s | of fp32 matmul peak |", "|---|---:|---:|---:|---:|"]
    table += [f"| {n} | {r['layers']} | {r['spearman']:.4f} | {r['sentences_per_s']:.0f} | {r['fraction_of_matmul_peak']:.0%} |"
              for n, r in rows.items()]
    table += ["", f"student / teacher encode speed: **{speedup:.2f}x** (target >= 1.8x); student Spearman "
              f"{student['spearman']:.4f} (target >= 0.85)"]
    text = "\n".join(table)
    print(text)
    write_results("distill-sentence", command, {"runs": rows, "speedup": speedup, "student": str(student_dir)}, text)


if __name__ == "__main__":
    main()
