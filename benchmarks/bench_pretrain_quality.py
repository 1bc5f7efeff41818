"""pretrain-quality: the same wall-clock budget, from the same seed, then held-out MLM loss.

bert-mini, sequence 128, batch 32, bf16 autocast, AdamW (lr 5e-4, 100 warm-up steps, then flat:
the linear decay is set far beyond the budget so both see the same schedule), Gutenberg packed into
128-token blocks. bertkit trains with its loop (`fit`, MLM recipe); transformers trains
`BertForMaskedLM` fed by `DataCollatorForLanguageModeling`. Both are then scored on the same
held-out WikiText-2 valid blocks with the same masks: mean cross-entropy over the masked tokens.

    python benchmarks/bench_pretrain_quality.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, minilm_dir, write_results  # noqa: E402

from bertkit import Encoder, Tokenizer, add_pretraining_heads, preset  # noqa: E402
from bertkit.data.batches import BlockRows, EpochSampler, MaskedSteps  # noqa: E402
from bertkit.data.corpus import build_corpus  # noqa: E402
from bertkit.data.instances import pack_full_sentences  # noqa: E402
from bertkit.config import TrainConfig  # noqa: E402
from bertkit.heads import IGNORE_INDEX  # noqa: E402
from bertkit.train.loop import fit  # noqa: E402
from bertkit.train.pretrain import Pretrainer, evaluate, masking_for  # noqa: E402

LR, WARMUP, FAR = 5e-4, 100, 10**6


def blocks_of(paths, tokenizer, documents="file"):
    corpus = build_corpus(paths, tokenizer, ROOT / ".bertkit-cache", documents=documents, errors="replace",
                          progress=False)
    return pack_full_sentences(corpus, tokenizer.role_id("cls"), tokenizer.role_id("sep"), 128)


class MaskedLMOutputs(torch.nn.Module):
    """A transformers BertForMaskedLM seen as bertkit's evaluation sees a Pretrainer: `outputs(batch)`
    gives the logits at the chosen positions and their labels, so `pretrain.evaluate` scores both."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def outputs(self, batch: dict) -> dict:
        chosen = batch["labels"] != IGNORE_INDEX
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return {"mlm": logits[chosen], "mlm_labels": batch["labels"][chosen]}


def train_transformers(config, blocks, tokenizer_dir, minutes):
    import transformers
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size))
    collator = transformers.DataCollatorForLanguageModeling(transformers.BertTokenizerFast.from_pretrained(tokenizer_dir),
                                                            mlm_probability=0.15)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR, eps=1e-6)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, FAR)
    sampler, step, start = EpochSampler(len(blocks), 32, 0), 0, time.perf_counter()
    model.train()
    while time.perf_counter() - start < 60 * minutes:
        batch = collator([{"input_ids": blocks[i].tolist()} for i in np.sort(sampler.indices(step))])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
    return model.eval(), step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    tokenizer = Tokenizer.from_pretrained(minilm_dir())
    train_blocks = blocks_of([DATA / "gutenberg_nltk"], tokenizer)
    eval_blocks = blocks_of([DATA / "wikitext2" / "raw" / "wiki.valid.raw"], tokenizer, documents="blank_line")
    masking = masking_for(tokenizer, "token", 0.15)
    held_out = [b for s in range(8) for b in MaskedSteps(BlockRows(eval_blocks), EpochSampler(len(eval_blocks), 32, 7),
                                                          masking).batches(s, 0, 1)]
    config = preset("mini", vocab_size=tokenizer.vocab_size, pooler=False)

    torch.manual_seed(0)
    ours = Pretrainer(add_pretraining_heads(Encoder(config), mlm=True))
    data = MaskedSteps(BlockRows(train_blocks), EpochSampler(len(train_blocks), 32, 0), masking)
    with tempfile.TemporaryDirectory() as out:
        records = fit(ours, data, TrainConfig(max_steps=FAR, max_minutes=args.minutes, lr=LR, warmup_steps=WARMUP,
                                              precision="bf16", checkpoint_every=FAR, log_every=100), out)
    ours.eval()
    our_steps = 1 + max(r["step"] for r in records)
    our_loss = evaluate(ours, held_out, torch.bfloat16)["mlm_loss"]

    theirs, their_steps = train_transformers(config, train_blocks, minilm_dir(), args.minutes)
    their_loss = evaluate(MaskedLMOutputs(theirs), held_out, torch.bfloat16)["mlm_loss"]
    rows = {"bertkit": {"steps": our_steps, "held_out_mlm_loss": our_loss},
            "transformers": {"steps": their_steps, "held_out_mlm_loss": their_loss}}
    text = "\n".join([
        f"bert-mini, {args.minutes:g} minutes of training each (bf16 autocast, batch 32 x 128 tokens, Gutenberg), "
        f"held-out MLM loss on {sum(len(b['labels']) for b in held_out)} WikiText-2 valid blocks with the same masks.\n",
        "| run | steps in budget | held-out MLM loss | perplexity |", "|---|---:|---:|---:|",
        *[f"| {n} | {r['steps']} | {r['held_out_mlm_loss']:.3f} | {np.exp(r['held_out_mlm_loss']):.0f} |"
          for n, r in rows.items()],
        "", f"bertkit lower: {'yes' if our_loss < their_loss else 'NO'} (target: lower)"])
    print(text)
    write_results("pretrain-quality", "python benchmarks/bench_pretrain_quality.py " + " ".join(sys.argv[1:]),
                  {"minutes": args.minutes, "runs": rows}, text)


if __name__ == "__main__":
    main()
