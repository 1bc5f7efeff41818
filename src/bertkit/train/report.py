"""Loss curves from a run's log.jsonl, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import figure


def plot_curves(log_path: str | Path, png_path: str | Path) -> None:
    """One panel per logged loss part (train and eval_*), against the step."""
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    names = sorted({k for r in records for k in r
                    if k in ("loss", "mlm", "nsp", "sbo") or (k.startswith("eval_") and "loss" in k)})
    if not names:
        return
    with figure(png_path, dpi=100, ncols=len(names), figsize=(4 * len(names), 3), squeeze=False) as (_, axes):
        for ax, name in zip(axes[0], names):
            points = [(r["step"], r[name]) for r in records if name in r]
            ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
            ax.set_title(name)
            ax.set_xlabel("step")
