"""Markdown tables of the pretraining runs made by benchmarks/pretraining_runs.sh.

    python benchmarks/pretraining_report.py [RUNS_DIR]       (default runs/)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def last(records: list[dict], key: str):
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


def recipe_table(runs: Path) -> str:
    lines = ["| recipe | steps in 15 min | tokens/s | train loss (last) | held-out MLM loss | held-out MLM accuracy | held-out NSP accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for recipe in ("bert", "roberta", "spanbert", "mlm"):
        log = runs / f"{recipe}-mini" / "log.jsonl"
        if not log.exists():
            continue
        records = [json.loads(line) for line in log.read_text().splitlines()]
        if last(records, "eval_mlm_loss") is None:
            continue  # still running
        nsp = last(records, "eval_nsp_accuracy")
        lines.append(f"| {recipe} | {1 + max(r['step'] for r in records)} | {last(records, 'tokens_per_s'):.0f} | "
                     f"{last(records, 'loss'):.3f} | {last(records, 'eval_mlm_loss'):.3f} | "
                     f"{last(records, 'eval_mlm_accuracy'):.1%} | {'' if nsp is None else f'{nsp:.1%}'} |")
    return "\n".join(lines)


def language_table(runs: Path) -> str:
    tables = {a: json.loads((runs / f"udhr-alpha{a}" / "languages.json").read_text())
              for a in ("0.3", "1.0") if (runs / f"udhr-alpha{a}" / "languages.json").exists()}
    if not tables:
        return ""
    first = next(iter(tables.values()))
    lines = ["| language | blocks | corpus share p | " + " | ".join(f"q (alpha {a}) | drawn (alpha {a})" for a in tables) + " |",
             "|---|---:|---:|" + "---:|---:|" * len(tables)]
    for lang, row in first.items():
        cells = " | ".join(f"{t[lang]['q']:.3f} | {t[lang]['drawn_share']:.3f}" for t in tables.values())
        lines.append(f"| {lang} | {row['blocks']} | {row['p']:.3f} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    print(recipe_table(runs))
    print()
    print(language_table(runs))
