"""The fine-tuning figures of the README: one recipe (configs/finetune/*.yaml) per data set, run with
`bertkit finetune` on all-MiniLM-L6-v2, each run's dev metrics collected into
benchmarks/results/finetune-runs.json and a table.

Data sets without a ready split are split here, into runs/data/ (never into the project):
- RTE: only dev sets are distributed: train on RTE-1 + RTE-3 dev, evaluate on RTE-2 dev;
- PTB POS sample: sentences in file order, the first 90% train, the last 10% held out;
- movie reviews: Pang & Lee's ten folds by review number: folds 1-8 train (1,600), 9-10 test (400);
- GENIA (dev file only): by document, in file order, the first 80% of documents train, the rest test;
- Reuters-21578 (ModApte train and test): the last 10% of the training articles, in file order, are the
  dev set that picks the checkpoint and tunes the per-label thresholds; the test set is scored once,
  afterwards, with `bertkit evaluate`.

    python benchmarks/finetune_runs.py [NAME ...]   # all runs by default (about an hour on 2 cores)
    python benchmarks/finetune_runs.py --table      # the README's table from benchmarks/results/
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, minilm_dir  # noqa: E402

RUNS = ROOT / "runs" / "finetune"
SPLITS = ROOT / "runs" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "finetune-runs.json"


def split_blocks(path: Path, train: Path, test: Path, fraction: float) -> None:
    """Blank-line separated sentences: the first `fraction` to `train`, the rest to `test`."""
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    cut = round(fraction * len(blocks))
    train.write_text("\n\n".join(blocks[:cut]) + "\n\n", encoding="utf-8")
    test.write_text("\n\n".join(blocks[cut:]) + "\n\n", encoding="utf-8")


def split_lines(path: Path, train: Path, test: Path, is_train) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(x for x in lines if is_train(json.loads(x))), encoding="utf-8")
    test.write_text("".join(x for x in lines if not is_train(json.loads(x))), encoding="utf-8")


def prepare() -> None:
    from bertkit.data.tasks import pang_lee_fold
    SPLITS.mkdir(parents=True, exist_ok=True)
    split_blocks(DATA / "ptb_sample_pos" / "wsj_sample.pos.conll", SPLITS / "ptb-train.conll",
                 SPLITS / "ptb-heldout.conll", 0.9)
    split_lines(DATA / "movie_reviews" / "reviews.jsonl", SPLITS / "movies-train.jsonl", SPLITS / "movies-test.jsonl",
                lambda r: pang_lee_fold(r["id"]) <= 8)
    genia = DATA / "genia_nested" / "dev.jsonlines"
    docs = list(dict.fromkeys(json.loads(x)["doc_id"] for x in genia.read_text().splitlines()))
    train_docs = set(docs[:round(0.8 * len(docs))])
    split_lines(genia, SPLITS / "genia-train.jsonl", SPLITS / "genia-test.jsonl", lambda r: r["doc_id"] in train_docs)
    reuters = DATA / "reuters21578" / "training.jsonl"
    ids = [json.loads(x)["id"] for x in reuters.read_text(encoding="utf-8").splitlines()]
    reuters_train = set(ids[:round(0.9 * len(ids))])
    split_lines(reuters, SPLITS / "reuters-train.jsonl", SPLITS / "reuters-dev.jsonl", lambda r: r["id"] in reuters_train)


D = DATA
# name: (task, recipe, train, dev, extra arguments[, test: scored after training, the figure reported])
RECIPES = {
    "sick": ("pair", "sick", D / "sick2014/SICK_train.txt", D / "sick2014/SICK_trial.txt", []),
    "mrpc": ("pair", "mrpc", D / "msrp/msr-para-train.tsv", D / "msrp/msr-para-val.tsv", []),
    "stsb": ("regress", "stsb", D / "stsb/sts-train.csv", D / "stsb/sts-dev.csv", []),
    "rte": ("pair", "rte", f"{D / 'nltk_rte/rte1_dev.xml'},{D / 'nltk_rte/rte3_dev.xml'}", D / "nltk_rte/rte2_dev.xml", []),
    "genia-span": ("span", "genia-span", SPLITS / "genia-train.jsonl", SPLITS / "genia-test.jsonl", []),
    "genia-tag": ("tag", "genia-tag", SPLITS / "genia-train.jsonl", SPLITS / "genia-test.jsonl", []),
    "ptb-pos": ("tag", "ptb-pos", SPLITS / "ptb-train.conll", SPLITS / "ptb-heldout.conll", []),
    "conll2000": ("tag", "conll2000", D / "nltk_conll2000/train.txt", D / "nltk_conll2000/test.txt", []),
    "sst2-frozen": ("classify", "sst2-frozen", D / "sst2/train.tsv", D / "sst2/dev.tsv", []),
    "sst2": ("classify", "sst2", D / "sst2/train.tsv", D / "sst2/dev.tsv", []),
    "movies-truncate-128": ("classify", "movie-reviews", SPLITS / "movies-train.jsonl", SPLITS / "movies-test.jsonl",
                            ["--finetune.overflow=truncate", "--finetune.max_length=128", "--finetune.epochs=3"]),
    "movies-windows": ("classify", "movie-reviews", SPLITS / "movies-train.jsonl", SPLITS / "movies-test.jsonl", []),
    "reuters": ("classify", "reuters", SPLITS / "reuters-train.jsonl", SPLITS / "reuters-dev.jsonl",
                ["--multi-label"], D / "reuters21578/test.jsonl"),
}


def run(name: str) -> dict:
    task, recipe, train, dev, extra, *test = RECIPES[name]
    out = RUNS / name
    command = [sys.executable, "-m", "bertkit.cli", "finetune", task, "--config", f"configs/finetune/{recipe}.yaml",
               "--model", str(minilm_dir()), "--train", str(train), "--dev", str(dev), "--out", str(out), *extra]
    print(f"== {name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        return {"error": f"exit code {done.returncode}", "seconds": seconds}
    metrics = json.loads((out / "dev_metrics.json").read_text())
    result = {"metrics": _summary(metrics), "seconds": seconds,
              "command": "bertkit " + " ".join(command[3:]).replace(str(minilm_dir()), "MINILM")}
    if test:
        scored = subprocess.run([sys.executable, "-m", "bertkit.cli", "evaluate", "--model", str(out),
                                 "--data", str(test[0])], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        result.update(dev_metrics=result["metrics"], metrics=_summary(json.loads(scored.stdout)),
                      evaluate=f"bertkit evaluate --model {out.relative_to(ROOT)} --data {test[0]}")
    return result


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "per_type"}


DESCRIPTIONS = {  # name: (data set, task, split evaluated, main metric)
    "sst2": ("SST-2", "classify", "dev", "accuracy"),
    "sst2-frozen": ("SST-2, frozen encoder (head only)", "classify", "dev", "accuracy"),
    "sick": ("SICK 3-way NLI", "pair", "trial", "accuracy"),
    "rte": ("RTE (train RTE-1 + RTE-3 dev)", "pair", "RTE-2 dev", "accuracy"),
    "mrpc": ("MRPC", "pair", "val", "accuracy"),
    "stsb": ("STS-B", "regress", "dev", "spearman"),
    "reuters": ("Reuters-21578, 90 topics", "classify --multi-label", "test", "micro_f1"),
    "ptb-pos": ("PTB POS sample", "tag", "last 10%", "accuracy"),
    "conll2000": ("CoNLL-2000 chunking", "tag", "test", "f1"),
    "movies-windows": ("movie reviews, 512-token windows", "classify", "folds 9-10", "accuracy"),
    "movies-truncate-128": ("movie reviews, first 128 tokens", "classify", "folds 9-10", "accuracy"),
    "genia-span": ("GENIA nested, span classifier", "span", "last 20% of documents", "f1"),
    "genia-tag": ("GENIA nested, BIO tagger", "tag", "last 20% of documents", "f1"),
}


def table(results: dict) -> str:
    """The README's table: one row per run, its main metric and the others."""
    rows = ["| data set | task | evaluated on | main metric | other metrics | minutes |", "|---|---|---|---|---|---:|"]
    for name, (data, task, split, main) in DESCRIPTIONS.items():
        if "metrics" not in results.get(name, {}):
            continue
        m = results[name]["metrics"]
        others = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k != main and isinstance(v, float))
        rows.append(f"| {data} | {task} | {split} | {main} **{m[main]:.3f}** | {others} | "
                    f"{results[name]['seconds'] / 60:.1f} |")
    return "\n".join(rows)


def main() -> None:
    if sys.argv[1:] == ["--table"]:
        print(table(json.loads(RESULTS.read_text())))
        return
    prepare()
    for name in sys.argv[1:] or list(RECIPES):
        result = run(name)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # another runner may have written
        results[name] = result
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: {json.dumps(result.get('metrics', result))}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
