"""Word sense disambiguation with all-MiniLM-L6-v2 gloss embeddings: every variant on SemEval-2007
(the dev set that picks the layers and the prior's weight) and Senseval-2, against WordNet's first
sense (66.8 / 55.2). Sense embeddings are cached under runs/wsd-cache.

    python benchmarks/wsd_variants.py [--layers -1 -3,-2,-1 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, machine, minilm_dir  # noqa: E402

import bertkit  # noqa: E402
from bertkit.analysis.wsd import (SenseVectors, disambiguate, instance_vectors, read_instances, read_key,  # noqa: E402
                                  score, sense_counts, wordnet)

FRAMEWORK = DATA / "wsd_raganato" / "Evaluation_Datasets"
PRIORS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["-1", "-3,-2,-1", "3"], help="hidden states summed, per variant")
    args = parser.parse_args()
    wn, counts = wordnet(DATA / "wordnet3"), sense_counts(DATA / "wordnet3")
    encoder, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    sets = {name: (read_instances(FRAMEWORK / name / f"{name}.data.xml"),
                   read_key(FRAMEWORK / name / f"{name}.gold.key.txt")) for name in ("semeval2007", "senseval2")}
    results = {}
    for spec in args.layers:
        layers = [int(x) for x in spec.split(",")]
        senses = SenseVectors(encoder, tokenizer, wn, ROOT / "runs" / "wsd-cache", layers, precision="fp32")
        for name, (instances, gold) in sets.items():
            vectors = instance_vectors(encoder, tokenizer, instances, layers, precision="fp32")
            for prior in PRIORS:
                for ospd in (False, True):
                    answers, _ = disambiguate(wn, instances, vectors, senses, counts, prior, ospd)
                    results[f"{spec}|{prior}|{ospd}|{name}"] = score(answers, gold)["f1"]
    best = max(((spec, prior, ospd) for spec in args.layers for prior in PRIORS for ospd in (False, True)),
               key=lambda v: results[f"{v[0]}|{v[1]}|{v[2]}|semeval2007"])
    payload = {"machine": machine(), "f1": results, "picked_on_semeval2007": best,
               "senseval2_f1_of_picked": results[f"{best[0]}|{best[1]}|{best[2]}|senseval2"]}
    (ROOT / "benchmarks" / "results" / "wsd-variants.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: payload[k] for k in ("picked_on_semeval2007", "senseval2_f1_of_picked")}))


if __name__ == "__main__":
    main()
