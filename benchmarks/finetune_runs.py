"""The fine-tuning figures of the README: one recipe (configs/finetune/*.yaml) per data set, run with
`bertkit finetune` on all-MiniLM-L6-v2, each run's dev metrics collected into
benchmarks/results/finetune-runs.json and a table.

Data sets without a ready split are split here, into runs/data/ (never into the project):
- RTE: only dev sets are distributed: train on RTE-1 + RTE-3 dev, evaluate on RTE-2 dev; run once from
  all-MiniLM-L6-v2 and once from the SICK run's fine-tuned encoder (a new head: intermediate-task training);
- PTB POS sample: sentences in file order, the first 90% train, the last 10% held out;
- movie reviews: Pang & Lee's ten folds by review number: folds 1-8 train (1,600), 9-10 test (400);
- GENIA (dev file only): by document, in file order, the first 80% of documents train, the rest test;
- WiC: the pairs as TSV, the target word between square brackets in both sentences;
- Reuters-21578 (ModApte train and test): the last 10% of the training articles, in file order, are the
  dev set that picks the checkpoint and tunes the per-label thresholds; the test set is scored once,
  afterwards, with `bertkit evaluate`.

    python benchmarks/finetune_runs.py [NAME ...]   # all runs by default (about an hour on 2 cores)
    python benchmarks/finetune_runs.py --table      # the README's table from benchmarks/results/
    python benchmarks/finetune_runs.py --prepare    # only the splits in runs/data/
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, minilm_dir  # noqa: E402
from bertkit.analysis.wic import read_wic, write_pair_file  # noqa: E402
from splits import first_documents, pang_lee_fold, sample_lines, split_blocks, split_lines  # noqa: E402

RUNS = ROOT / "runs" / "finetune"
SPLITS = ROOT / "runs" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "finetune-runs.json"


def prepare() -> None:
    SPLITS.mkdir(parents=True, exist_ok=True)
    split_blocks(DATA / "ptb_sample_pos" / "wsj_sample.pos.conll", SPLITS / "ptb-train.conll",
                 SPLITS / "ptb-heldout.conll", 0.9)
    split_lines(DATA / "movie_reviews" / "reviews.jsonl", SPLITS / "movies-train.jsonl", SPLITS / "movies-test.jsonl",
                lambda r: pang_lee_fold(r["id"]) <= 8)
    genia = DATA / "genia_nested" / "dev.jsonlines"
    train_docs = first_documents([json.loads(x) for x in genia.read_text().splitlines()], 0.8)
    split_lines(genia, SPLITS / "genia-train.jsonl", SPLITS / "genia-test.jsonl", lambda r: r["doc_id"] in train_docs)
    sample_lines(DATA / "stsb" / "sts-train.csv", SPLITS / "stsb-train-1000.csv", 1000)
    reuters = DATA / "reuters21578" / "training.jsonl"
    ids = [json.loads(x)["id"] for x in reuters.read_text(encoding="utf-8").splitlines()]
    reuters_train = set(ids[:round(0.9 * len(ids))])
    split_lines(reuters, SPLITS / "reuters-train.jsonl", SPLITS / "reuters-dev.jsonl",
                lambda r: r["id"] in reuters_train)
    for name in ("train", "dev"):  # WiC, the target word marked in both sentences
        folder = DATA / "wic" / name
        write_pair_file(read_wic(folder / f"{name}.data.txt", folder / f"{name}.gold.txt"), SPLITS / f"wic-{name}.tsv")


@dataclass(frozen=True)
class Run:
    """One README row: how the run is made and how the table describes it."""
    data: str  # the table's "data set" column
    task: str  # `bertkit finetune TASK`
    recipe: str  # configs/finetune/RECIPE.yaml
    train: Path | str  # str: several files, comma-separated
    dev: Path
    evaluated_on: str
    main: str  # the main metric, in bold
    extra: tuple[str, ...] = ()  # more command-line arguments
    test: Path | None = None  # scored once after training, and reported instead of dev
    start: str | None = None  # another run whose fine-tuned encoder this one starts from
    init: Path | None = None  # or a pretrained model other than all-MiniLM-L6-v2 (a domain-adapted one)

    def model(self) -> Path:
        """The model directory the run starts from."""
        return RUNS / self.start if self.start else self.init or minilm_dir()


D = DATA
RTE_TRAIN = f"{D / 'nltk_rte/rte1_dev.xml'},{D / 'nltk_rte/rte3_dev.xml'}"
RUNS_BY_NAME = {  # in the README's order; a run that starts from another comes after it
    "sst2": Run("SST-2", "classify", "sst2", D / "sst2/train.tsv", D / "sst2/dev.tsv", "dev", "accuracy"),
    "sst2-frozen": Run("SST-2, frozen encoder (head only)", "classify", "sst2-frozen", D / "sst2/train.tsv",
                       D / "sst2/dev.tsv", "dev", "accuracy"),
    "sick": Run("SICK 3-way NLI", "pair", "sick", D / "sick2014/SICK_train.txt", D / "sick2014/SICK_trial.txt",
                "trial", "accuracy"),
    "rte": Run("RTE (train RTE-1 + RTE-3 dev)", "pair", "rte", RTE_TRAIN, D / "nltk_rte/rte2_dev.xml", "RTE-2 dev",
               "accuracy"),
    "rte-from-sick": Run("RTE, starting from the SICK model", "pair", "rte", RTE_TRAIN, D / "nltk_rte/rte2_dev.xml",
                         "RTE-2 dev", "accuracy", start="sick"),
    "mrpc": Run("MRPC", "pair", "mrpc", D / "msrp/msr-para-train.tsv", D / "msrp/msr-para-val.tsv", "val", "accuracy"),
    "wic": Run("WiC, target word marked", "pair", "wic", SPLITS / "wic-train.tsv", SPLITS / "wic-dev.tsv", "dev",
               "accuracy"),
    "stsb": Run("STS-B", "regress", "stsb", D / "stsb/sts-train.csv", D / "stsb/sts-dev.csv", "dev", "spearman"),
    "reuters": Run("Reuters-21578, 90 topics", "classify", "reuters", SPLITS / "reuters-train.jsonl",
                   SPLITS / "reuters-dev.jsonl", "test", "micro_f1", ("--multi-label",),
                   test=D / "reuters21578/test.jsonl"),
    "ptb-pos": Run("PTB POS sample", "tag", "ptb-pos", SPLITS / "ptb-train.conll", SPLITS / "ptb-heldout.conll",
                   "last 10%", "accuracy"),
    "conll2000": Run("CoNLL-2000 chunking", "tag", "conll2000", D / "nltk_conll2000/train.txt",
                     D / "nltk_conll2000/test.txt", "test", "f1"),
    "movies-windows": Run("movie reviews, 512-token windows", "classify", "movie-reviews",
                          SPLITS / "movies-train.jsonl", SPLITS / "movies-test.jsonl", "folds 9-10", "accuracy"),
    "movies-truncate-128": Run("movie reviews, first 128 tokens", "classify", "movie-reviews",
                               SPLITS / "movies-train.jsonl", SPLITS / "movies-test.jsonl", "folds 9-10", "accuracy",
                               ("--finetune.overflow=truncate", "--finetune.max_length=128", "--finetune.epochs=3")),
    "stsb-1000": Run("STS-B, 1,000 training pairs", "regress", "stsb", SPLITS / "stsb-train-1000.csv",
                     D / "stsb/sts-dev.csv", "dev", "spearman"),
    # The learned metric's synthetic pre-training (benchmarks/learned_metric.py pairs writes its data).
    "synthetic": Run("synthetic pairs (BLEU + BERTScore labels)", "regress", "stsb", SPLITS / "synthetic-train.tsv",
                     SPLITS / "synthetic-dev.tsv", "STS-B dev", "spearman", ("--finetune.epochs=1",),
                     test=D / "stsb/sts-dev.csv"),
    "stsb-synthetic": Run("STS-B, after synthetic pre-training", "regress", "stsb", D / "stsb/sts-train.csv",
                          D / "stsb/sts-dev.csv", "dev", "spearman", start="synthetic"),
    "stsb-1000-synthetic": Run("STS-B, 1,000 pairs, after synthetic pre-training", "regress", "stsb",
                               SPLITS / "stsb-train-1000.csv", D / "stsb/sts-dev.csv", "dev", "spearman",
                               start="synthetic"),
    "genia-span": Run("GENIA nested, span classifier", "span", "genia-span", SPLITS / "genia-train.jsonl",
                      SPLITS / "genia-test.jsonl", "last 20% of documents", "f1"),
    "genia-span-adapted": Run("GENIA nested, span classifier, after 20 minutes of continued pretraining on the "
                              "GENIA training sentences", "span", "genia-span", SPLITS / "genia-train.jsonl",
                              SPLITS / "genia-test.jsonl", "last 20% of documents", "f1",
                              init=ROOT / "runs" / "adapt" / "genia"),
    "genia-tag": Run("GENIA nested, BIO tagger", "tag", "genia-tag", SPLITS / "genia-train.jsonl",
                     SPLITS / "genia-test.jsonl", "last 20% of documents", "f1"),
}


def run(name: str) -> dict:
    spec, out = RUNS_BY_NAME[name], RUNS / name
    command = [sys.executable, "-m", "bertkit.cli", "finetune", spec.task,
               "--config", f"configs/finetune/{spec.recipe}.yaml", "--model", str(spec.model()),
               "--train", str(spec.train), "--dev", str(spec.dev), "--out", str(out), "--overwrite", *spec.extra]
    print(f"== {name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        return {"error": f"exit code {done.returncode}", "seconds": seconds}
    metrics = json.loads((out / "dev_metrics.json").read_text())
    result = {"metrics": _summary(metrics), "seconds": seconds,
              "command": "bertkit " + " ".join(command[3:]).replace(str(minilm_dir()), "MINILM")}
    if spec.test:
        scored = subprocess.run([sys.executable, "-m", "bertkit.cli", "evaluate", "--model", str(out),
                                 "--data", str(spec.test)], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        result.update(dev_metrics=result["metrics"], metrics=_summary(json.loads(scored.stdout)),
                      evaluate=f"bertkit evaluate --model {out.relative_to(ROOT)} --data {spec.test}")
    return result


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "per_type"}


def table(results: dict) -> str:
    """The README's table: one row per run, its main metric and the others."""
    rows = ["| data set | task | evaluated on | main metric | other metrics | minutes |", "|---|---|---|---|---|---:|"]
    for name, spec in RUNS_BY_NAME.items():
        if "metrics" not in results.get(name, {}):
            continue
        m, main = results[name]["metrics"], spec.main
        task = " ".join([spec.task, *(x for x in spec.extra if not x.startswith("--finetune."))])
        others = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if k != main and isinstance(v, float))
        rows.append(f"| {spec.data} | {task} | {spec.evaluated_on} | {main} **{m[main]:.3f}** | {others} "
                    f"| {results[name]['seconds'] / 60:.1f} |")
    return "\n".join(rows)


def main() -> None:
    if sys.argv[1:] == ["--table"]:
        print(table(json.loads(RESULTS.read_text())))
        return
    if sys.argv[1:] == ["--prepare"]:  # only write the splits (runs/data/), e.g. for a multi-task recipe
        prepare()
        return
    names = sys.argv[1:] or list(RUNS_BY_NAME)
    unknown = [x for x in names if x not in RUNS_BY_NAME]
    if unknown:
        raise SystemExit(f"no run named {', '.join(unknown)}; the runs: {', '.join(RUNS_BY_NAME)}")
    for i, name in enumerate(names):
        start = RUNS_BY_NAME[name].start
        if start and start not in names[:i] and not (RUNS / start / "model.safetensors").exists():
            raise SystemExit(f"{name} starts from the {start} run's model: run {start} first (or with it)")
        init = RUNS_BY_NAME[name].init
        if init and not (init / "model.safetensors").exists():
            raise SystemExit(f"{name} starts from {init}: `python benchmarks/domain_adaptation.py adapt genia` first")
    prepare()
    missing = [RUNS_BY_NAME[x].train for x in names if not Path(str(RUNS_BY_NAME[x].train).split(",")[0]).exists()]
    if missing:
        raise SystemExit(f"no training file {missing[0]}; the synthetic pairs come from "
                         "`python benchmarks/learned_metric.py pairs --mlm MODEL`")
    for name in names:
        result = run(name)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # another runner may have written
        results[name] = result
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: {json.dumps(result.get('metrics', result))}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
