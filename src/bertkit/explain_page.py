"""Showing an explanation: words coloured by importance in the terminal, and one self-contained HTML
page with the attention of every layer and head, rollout and the attributions side by side."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import numpy as np
from .explain import AttentionView, WordImportance


def coloured_words(words: Sequence[str], scores: np.ndarray, colour: bool) -> str:
    """The words with a background from red (against the label) to green (for it), its strength the
    score's share of the largest magnitude; without colour, each word followed by its score."""
    if not colour:
        return " ".join(f"{w}[{s:+.3f}]" for w, s in zip(words, scores))
    scale = float(np.abs(scores).max(initial=0.0)) or 1.0
    fades = [round(255 * (1 - 0.75 * (abs(float(s)) / scale))) for s in scores]
    rgbs = [(f, 255, f) if s >= 0 else (255, f, f) for f, s in zip(fades, scores)]
    return " ".join(f"\x1b[48;2;{r};{g};{b}m\x1b[30m{word}\x1b[0m" for word, (r, g, b) in zip(words, rgbs))


def page(importance: WordImportance, view: AttentionView) -> str:
    """A self-contained HTML page (no outside resources): the words coloured by each attribution and
    by the attention the head reads, and a heat map of any layer's and head's attention (or rollout)."""
    data = {
        "words": importance.words, "label": importance.label, "output": importance.output,
        "rows": {name: np.round(v, 5).tolist() for name, v in {**importance.scores, **view.head_words}.items()},
        "tokens": list(view.input.tokens),
        "attention": [np.round(a[0].numpy(), 4).tolist() for a in view.attentions],  # per layer (heads, T, T)
        "rollout": np.round(view.rollout[0].numpy(), 4).tolist(),
    }
    title = html.escape(" ".join(importance.words)[:80])
    return PAGE.replace("__TITLE__", title).replace("__DATA__", json.dumps(data).replace("</", "<\\/"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bertkit explain: __TITLE__</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table.words td { padding: 0.2em 0.5em; vertical-align: top; }
table.words td.name { color: #555; white-space: nowrap; }
span.w { padding: 0.1em 0.2em; margin: 0 0.05em; border-radius: 3px; }
table.heat { border-collapse: collapse; font-size: 11px; }
table.heat td { width: 1.6em; height: 1.6em; padding: 0; }
table.heat th { font-weight: normal; padding: 0 0.3em; white-space: nowrap; }
table.heat thead th { writing-mode: vertical-rl; transform: rotate(180deg); height: 6em; text-align: left; }
.note { color: #555; font-size: 13px; }
</style></head><body>
<h1>Why <span id="label"></span>?</h1>
<p class="note">Green: pushes towards the label, red: against it; strength relative to the row's largest
value. Attention rows (non-negative) show where the head's input read from ([CLS]'s row, or the
tokens' mean for a mean-pooling model), not why the model decided.</p>
<table class="words" id="words"></table>
<h2>Attention</h2>
<p><label>layer <select id="layer"></select></label> <label>head <select id="head"></select></label>
<span class="note">row: the token that attends; column: the token attended to; darkest: the largest weight
shown (hover for values)</span></p>
<table class="heat" id="heat"></table>
<script>
const D = __DATA__;
const names = {integrated_gradients: "integrated gradients", gradient_x_input: "gradient x input",
  occlusion: "occlusion ([MASK])", attention: "attention the head reads, last layer",
  rollout: "rollout the head reads"};
document.getElementById("label").textContent = D.label === null
  ? "a score of " + D.output.toFixed(3) : D.label + " (" + D.output.toFixed(3) + ")";
function colour(v, scale) {
  const s = scale ? Math.min(1, Math.abs(v) / scale) : 0, fade = Math.round(255 * (1 - 0.75 * s));
  return v >= 0 ? `rgb(${fade},255,${fade})` : `rgb(255,${fade},${fade})`;
}
const words = document.getElementById("words");
for (const [name, values] of Object.entries(D.rows)) {
  const row = words.insertRow(), scale = values.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
  row.insertCell().outerHTML = `<td class="name">${names[name] || name}</td>`;
  const cell = row.insertCell();
  D.words.forEach((w, i) => {
    const span = document.createElement("span");
    span.className = "w"; span.textContent = w; span.title = values[i].toFixed(4);
    span.style.background = colour(values[i], scale);
    cell.append(span, " ");
  });
}
const layer = document.getElementById("layer"), head = document.getElementById("head");
D.attention.forEach((_, i) => layer.add(new Option(String(i + 1), String(i))));
layer.add(new Option("rollout", "rollout"));
head.add(new Option("mean", "mean"));
D.attention[0].forEach((_, h) => head.add(new Option(String(h + 1), String(h))));
function matrix() {
  if (layer.value === "rollout") return D.rollout;
  const heads = D.attention[Number(layer.value)];
  if (head.value !== "mean") return heads[Number(head.value)];
  return heads[0].map((r, i) => r.map((_, j) => heads.reduce((s, m) => s + m[i][j], 0) / heads.length));
}
function draw() {
  head.disabled = layer.value === "rollout";
  const m = matrix(), table = document.getElementById("heat");
  const top_value = m.reduce((a, r) => r.reduce((b, v) => Math.max(b, v), a), 0) || 1;
  table.innerHTML = "";
  const top = table.createTHead().insertRow();
  top.appendChild(document.createElement("th"));
  for (const t of D.tokens) { const th = document.createElement("th"); th.textContent = t; top.appendChild(th); }
  const body = table.createTBody();
  m.forEach((r, i) => {
    const row = body.insertRow(), th = document.createElement("th");
    th.textContent = D.tokens[i]; row.appendChild(th);
    r.forEach((v, j) => {
      const c = row.insertCell(), g = Math.round(255 * (1 - v / top_value));
      c.style.background = `rgb(${g},${g},255)`; c.title = `${D.tokens[i]} -> ${D.tokens[j]}: ${v.toFixed(3)}`;
    });
  });
}
layer.onchange = head.onchange = draw;
layer.value = String(D.attention.length - 1);
draw();
</script></body></html>
"""
