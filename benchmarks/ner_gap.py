"""ner-gap: which part of bertkit makes its one-epoch CoNLL-2003 dev F1 trail the transformers Trainer's.

Every variant trains one epoch with bertkit's loop, batches and optimizer, on bench_finetune_ner's
recipe (eng.train, batch 32, lr 5e-5, the library's defaults otherwise, `--dtype auto`), and swaps
one part for what the Trainer's run has:

- `bertkit`: nothing swapped (bench_finetune_ner's bertkit greedy run);
- `transformers-model`: transformers' `BertForTokenClassification`, its classifier drawn as the
  Trainer's run draws it (`transformers.set_seed(seed)`, then `from_pretrained`), in place of bertkit's tagger;
- `trainer-head-init`: bertkit's tagger with its classifier set to that same draw;
- `torch-dropout`: bertkit's tagger with PyTorch's dropout, and attention through
  `scaled_dot_product_attention(dropout_p=...)`, in place of the fast dropout mask;
- `loop-reseeded`: bertkit's tagger, the loop's dropout stream seeded with seed + 1000 (`fit` seeds
  it with the run's seed, the one the setup drew the classifier with, so that its first masks replay
  the bits of the initialisation): another draw of the dropout masks alone.

Dev F1 is scored as bench_finetune_ner scores it: eng.testa, the tag of each word's first subword,
seqeval's default mode. Same seed, same batches in every variant.

    python benchmarks/ner_gap.py --variants bertkit transformers-model --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune_ner import hf_encode, word_tags_from_tokens  # noqa: E402
from common import DATA, minilm_dir, write_results  # noqa: E402

import bertkit.model  # noqa: E402
import bertkit.train.finetune as finetune_module  # noqa: E402
from bertkit import Tokenizer  # noqa: E402
from bertkit.config import FinetuneConfig, TrainConfig  # noqa: E402
from bertkit.heads import first_subwords  # noqa: E402
from bertkit.precision import resolve  # noqa: E402
from bertkit.predict import predict_examples  # noqa: E402
from bertkit.tasks import read_examples  # noqa: E402
from bertkit.tasks.model import TaskModel, load_task_model  # noqa: E402
from bertkit.train.loop import fit  # noqa: E402

VARIANTS = ("bertkit", "transformers-model", "trainer-head-init", "torch-dropout", "loop-reseeded")
PLAIN_ATTENTION = bertkit.model.attention  # bertkit's, before torch-dropout swaps it


def trainer_classifier(seed: int, num_labels: int):
    """The token classifier of `BertForTokenClassification` as the Trainer's run draws it for `seed`."""
    import transformers
    transformers.set_seed(seed)
    return transformers.AutoModelForTokenClassification.from_pretrained(minilm_dir(), num_labels=num_labels)


def first_subword_labels(batch: dict) -> torch.Tensor:
    """(B, T) labels at each word's first subword, -100 elsewhere (the run_ner recipe's)."""
    slots = first_subwords(batch["slots"])
    return torch.where(slots >= 0, batch["labels"].gather(1, slots.clamp(min=0)), torch.full_like(slots, -100))


class TransformersTagger(torch.nn.Module):
    """A transformers token classifier answering bertkit's loop: the batch's loss sum over labelled words."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return {"loss": F.cross_entropy(logits.float().flatten(0, 1), first_subword_labels(batch).flatten(),
                                        ignore_index=-100, reduction="sum")}


def transformers_dev_tags(model, dev_examples, labels, dtype: torch.dtype) -> list[list[str]]:
    """One tag per dev word (its first subword's) from a transformers token classifier."""
    import transformers
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    enc = hf_encode(hf_tok, dev_examples)
    model.eval()
    tags = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        for a in range(0, len(dev_examples), 64):
            rows = enc["input_ids"][a:a + 64]
            lengths = torch.tensor([len(r) for r in rows])
            ids = torch.tensor([r + [0] * (int(lengths.max()) - len(r)) for r in rows])
            mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            tags += [word_tags_from_tokens(logits[i].argmax(-1).numpy(), enc.word_ids(a + i),
                                           len(dev_examples[a + i].words), labels) for i in range(len(rows))]
    return tags


def swap_in(variant: str, seed: int) -> None:
    """Patch bertkit for `variant`, for the rest of the process (so main runs one such variant per call)."""
    if variant == "torch-dropout":
        bertkit.model.dropout = lambda x, p, training, rows=None: F.dropout(x, p, training)
        bertkit.model.attention = lambda q, k, v, key_mask, p, causal=False: (
            PLAIN_ATTENTION(q, k, v, key_mask, p, causal) if p == 0.0 or causal
            else F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p))
    if variant == "trainer-head-init":
        class TrainerHeadInit(TaskModel):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                theirs = trainer_classifier(seed, self.head.out.out_features).classifier
                with torch.no_grad():
                    self.head.out.weight.copy_(theirs.weight)
                    self.head.out.bias.copy_(theirs.bias)
        finetune_module.TaskModel = TrainerHeadInit
    if variant == "loop-reseeded":
        finetune_module.fit = lambda model, data, config, *args, **kwargs: fit(
            model, data, dataclasses.replace(config, seed=config.seed + 1000), *args, **kwargs)


def run(variant: str, seed: int, args, dev_examples) -> float:
    """Train one variant with one seed; its dev F1."""
    import seqeval.metrics
    out = Path(args.out) / f"{variant}-seed{seed}"
    config = FinetuneConfig(task="tag", model=str(minilm_dir()), train=str(DATA / "conll2003" / "eng.train"),
                            dev=None, out=str(out), epochs=1, batch_size=32, entity_mode="default")
    train = TrainConfig(lr=5e-5, precision=args.dtype, seed=seed, log_every=50, checkpoint_every=10**6)
    gold = [list(ex.tags) for ex in dev_examples]
    if variant == "transformers-model":
        run_setup = finetune_module.setup(config, train)
        labels = run_setup.model.spec.labels
        theirs = trainer_classifier(seed, len(labels))
        fit(TransformersTagger(theirs), run_setup.data, run_setup.train, out, progress=False)
        return seqeval.metrics.f1_score(gold, transformers_dev_tags(theirs, dev_examples, labels, resolve(args.dtype)))
    swap_in(variant, seed)
    finetune_module.finetune(config, train, overwrite=True)
    preds = predict_examples(load_task_model(out), Tokenizer.from_pretrained(str(out)), dev_examples, 64, args.dtype)
    return seqeval.metrics.f1_score(gold, [p["tags"] for p in preds])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["bertkit", "transformers-model"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--out", default="/tmp/bertkit-ner-gap")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    if len([v for v in args.variants if v not in ("bertkit", "transformers-model")]) > 1:
        parser.error("the swapping variants patch bertkit for the rest of the process: run one of them per call")
    dev_examples = read_examples(str(DATA / "conll2003" / "eng.testa"), "tag", {})
    results = {}
    for variant in sorted(args.variants, key=lambda v: v not in ("bertkit", "transformers-model")):
        began = time.perf_counter()
        results[variant] = [run(variant, seed, args, dev_examples) for seed in args.seeds]
        print(f"{variant}: dev F1 {', '.join(f'{f:.4f}' for f in results[variant])} "
              f"(mean {np.mean(results[variant]):.4f}; {time.perf_counter() - began:.0f} s)", flush=True)
    table = "\n".join(["| variant (bertkit's loop and batches) | dev F1 by seed | mean |", "|---|---|---:|"] +
                      [f"| {v} | {', '.join(f'{f:.4f}' for f in fs)} | {np.mean(fs):.4f} |" for v, fs in results.items()])
    command = "python benchmarks/ner_gap.py --variants " + " ".join(args.variants) + " --seeds " + " ".join(map(str, args.seeds))
    name = "ner-gap-" + "-".join(args.variants)
    write_results(name, command, {"seeds": args.seeds, "dtype": args.dtype, "dev_f1": results},
                  f"CoNLL-2003, one epoch, dev F1 (seqeval default mode), seeds {args.seeds}, {args.dtype}:\n\n{table}")


if __name__ == "__main__":
    main()
