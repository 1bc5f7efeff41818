"""The README's static-vs-contextual table: skip-gram against all-MiniLM-L6-v2 and bertkit's own
pretrained bert-mini, each through the same `bertkit analyze` commands:

- WiC dev: accuracy of "same sense when the target word's two vectors have a cosine above a
  threshold fitted on WiC train" (last layer, and the best layer on dev, z-scored or not);
- STS-B dev: Spearman of sentence-vector cosines (encoders: mean pooling of the last layer;
  skip-gram: averaged word vectors, and SIF with its common component fitted on the dev sentences
  as Arora et al. do and on the train sentences);
- Senseval-2: WSD F1 of the nearest gloss embedding, no sense prior (model selection for the
  static model's SIF glosses was done on SemEval-2007, the framework's dev set);
- WikiText-2 valid: the anisotropy baseline (expected cosine of two random words' vectors), last layer.

The skip-gram model is trained first (`bertkit train-static`, 300 dimensions, window 5, 5 epochs) on
Gutenberg + WikiText-2 valid and test (train is not in ../shared), unless OUT/sg300 exists. bert-mini
is runs/bert-mini, as `make pretraining-runs` writes it (BERT recipe, 15 minutes on Gutenberg).
Writes benchmarks/results/static-vs-contextual.json and prints the table. About 15 minutes on 2 cores.

    python benchmarks/static_vs_contextual.py [--out runs/static] [--bert-mini runs/bert-mini]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, RESULTS, ROOT, machine, minilm_dir  # noqa: E402

BIN = Path(sys.executable).parent / "bertkit"
WIC, WSD = DATA / "wic", DATA / "wsd_raganato" / "Evaluation_Datasets" / "senseval2"
STS_DEV, STS_TRAIN = DATA / "stsb" / "sts-dev.csv", DATA / "stsb" / "sts-train.csv"


def bertkit(*args: str) -> str:
    """Run a bertkit command, return its standard output (its progress goes to the terminal)."""
    print("$ bertkit " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run([str(BIN), *args], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout


def wikitext_sentences() -> Path:
    path = ROOT / "runs" / "data" / "wikitext2-valid-sentences.txt"
    if not path.exists():
        subprocess.run([sys.executable, "benchmarks/embedding_geometry.py", "anisotropy"], cwd=ROOT, check=True)
    return path


def figures(model: Path, out: Path, static: bool) -> dict:
    """WiC, STS-B, Senseval-2 and anisotropy figures of one model."""
    out.mkdir(parents=True, exist_ok=True)
    bertkit("analyze", "wic", "--model", str(model), "--train", str(WIC / "train" / "train.data.txt"),
            "--dev", str(WIC / "dev" / "dev.data.txt"), "--output", str(out / "wic.json"), "--dtype", "fp32")
    wic = json.loads((out / "wic.json").read_text())
    layers = {int(k): v for k, v in wic["layers"].items()}
    last = layers[max(layers)]
    best = max(((layer, z) for layer in layers for z in ("", "zscored_")),
               key=lambda lz: layers[lz[0]][f"{lz[1]}dev_accuracy"])
    row = {"wic_last": last["dev_accuracy"], "wic_last_zscored": last["zscored_dev_accuracy"],
           "wic_best": layers[best[0]][f"{best[1]}dev_accuracy"], "wic_best_layer": best[0],
           "wic_best_zscored": bool(best[1]), "wic_same_share": wic["same_share"]["dev"],
           "wic_no_vector": wic["no_vector"]}
    sts = ["analyze", "sts", "--model", str(model), "--data", str(STS_DEV)]
    if static:
        row["stsb_mean"] = json.loads(bertkit(*sts, "--weighting", "mean"))["spearman"]
        row["stsb_sif"] = json.loads(bertkit(*sts, "--weighting", "sif"))["spearman"]
        row["stsb_sif_fit_train"] = json.loads(bertkit(*sts, "--weighting", "sif", "--fit-on", str(STS_TRAIN)))["spearman"]
    else:
        row["stsb_mean"] = json.loads(bertkit(*sts, "--dtype", "fp32"))["spearman"]
    wsd = json.loads(bertkit("analyze", "wsd", "--method", "gloss", "--model", str(model), "--data",
                             str(WSD / "senseval2.data.xml"), "--gold", str(WSD / "senseval2.gold.key.txt"),
                             "--wordnet", str(DATA / "wordnet3"), "--dtype", "fp32"))
    row.update(senseval2_f1=wsd["f1"], senseval2_first_sense_backoff=wsd["first_sense_backoff"],
               senseval2_f1_own_answers=wsd.get("f1_own_answers", wsd["f1"]))
    bertkit("analyze", "anisotropy", "--model", str(model), "--input", str(wikitext_sentences()),
            "--output", str(out / "anisotropy.json"), "--dtype", "fp32")
    geometry = json.loads((out / "anisotropy.json").read_text())["layers"]
    row["anisotropy_last"] = geometry[str(max(int(k) for k in geometry))]["anisotropy"]
    return row


def table(rows: dict[str, dict], first_sense: float) -> str:
    lines = ["| model | WiC dev, last layer (z-scored) | WiC dev, best layer | STS-B dev Spearman | "
             "Senseval-2 F1, glosses only | anisotropy (expected cosine) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        sts = f"{r['stsb_mean']:.3f}" + (f" mean, {r['stsb_sif']:.3f} SIF ({r['stsb_sif_fit_train']:.3f} fitted "
                                         f"on train)" if "stsb_sif" in r else "")
        best = f"{r['wic_best']:.3f} (layer {r['wic_best_layer']}{', z' if r['wic_best_zscored'] else ''})"
        lines.append(f"| {name} | {r['wic_last']:.3f} ({r['wic_last_zscored']:.3f}) | {best} | {sts} | "
                     f"{100 * r['senseval2_f1']:.1f}" + (f" ({r['senseval2_first_sense_backoff']} backed off to the first "
                     f"sense; {100 * r['senseval2_f1_own_answers']:.1f} on the rest)"
                     if r["senseval2_first_sense_backoff"] else "") + " | "
                     f"{r['anisotropy_last']:.3f} |")
    share = next(iter(rows.values()))["wic_same_share"]
    lines.append(f"| answering \"same\" every time / WordNet's first sense | {share:.3f} | | | "
                 f"{100 * first_sense:.1f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "runs" / "static"))
    parser.add_argument("--bert-mini", default=str(ROOT / "runs" / "bert-mini"))
    args = parser.parse_args()
    out, sg = Path(args.out), Path(args.out) / "sg300"
    if not (sg / "static.json").exists():
        bertkit("train-static", "--corpus", str(DATA / "gutenberg_nltk"), "--corpus",
                str(DATA / "wikitext2" / "raw" / "wiki.valid.raw"), "--corpus",
                str(DATA / "wikitext2" / "raw" / "wiki.test.raw"), "--out", str(sg), "--encoding-errors", "replace")
    if not (Path(args.bert_mini) / "config.json").exists():
        sys.exit(f"{args.bert_mini}: no pretrained bert-mini; run `make pretraining-runs` (or give --bert-mini)")
    models = {"skip-gram (300 d, Gutenberg + WikiText-2)": (sg, True),
              "bert-mini (bertkit, 15 min on Gutenberg)": (Path(args.bert_mini), False),
              "all-MiniLM-L6-v2": (minilm_dir(), False)}
    rows = {name: figures(path, out / f"analysis-{i}", static) for i, (name, (path, static)) in enumerate(models.items())}
    first = json.loads(bertkit("analyze", "wsd", "--data", str(WSD / "senseval2.data.xml"), "--gold",
                               str(WSD / "senseval2.gold.key.txt"), "--wordnet", str(DATA / "wordnet3")))["f1"]
    text = table(rows, first)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "static-vs-contextual.json").write_text(json.dumps(
        {"machine": machine(), "precision": "fp32", "skip_gram": json.loads((sg / "static.json").read_text()),
         "models": {name: {"path": str(path), **rows[name]} for name, (path, _) in models.items()},
         "senseval2_first_sense": first}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
