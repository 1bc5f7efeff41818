"""pretrain: MLM training throughput, bertkit vs transformers, same blocks, same precision.

bert-mini (4 layers, hidden 256, vocab 30,522) by default, sequence length 128, batch 32, on
Gutenberg packed into 128-token blocks. bertkit: `Pretrainer` (MLM head on the chosen positions
only) with bertkit's token masking; transformers: `BertForMaskedLM` fed by
`DataCollatorForLanguageModeling` (the run_mlm recipe). bertkit's side is the library's own
optimizer step (`train.loop.train_step`: loss normalisation, fused AdamW, clipping, schedule); the
transformers side steps as its Trainer does (AdamW, clipping to 1.0, linear schedule). One
process, 2 threads, alternating rounds of `--steps` steps, median over rounds, for bf16 autocast
and for fp32 (`--dtypes fp32` on a CPU that only emulates bf16).

    python benchmarks/bench_pretrain.py [--preset mini] [--batch 32] [--steps 10] [--repeats 3] [--dtypes fp32]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, alternate, matmul_peak, median, minilm_dir, throughput_table, write_results  # noqa: E402

from bertkit import Encoder, Tokenizer, add_pretraining_heads, preset  # noqa: E402
from bertkit.data.batches import BlockRows, EpochSampler, MaskedSteps  # noqa: E402
from bertkit.data.corpus import build_corpus  # noqa: E402
from bertkit.data.instances import pack_full_sentences  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.config import TrainConfig  # noqa: E402
from bertkit.train.loop import make_optimizer, train_step  # noqa: E402
from bertkit.train.pretrain import Pretrainer, masking_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    import transformers

    tokenizer = Tokenizer.from_pretrained(minilm_dir())
    corpus = build_corpus([DATA / "gutenberg_nltk"], tokenizer, ROOT / ".bertkit-cache", errors="replace", progress=False)
    blocks = pack_full_sentences(corpus, tokenizer.role_id("cls"), tokenizer.role_id("sep"), args.length)
    config = preset(args.preset, vocab_size=tokenizer.vocab_size, pooler=False)
    torch.manual_seed(0)
    ours = Pretrainer(add_pretraining_heads(Encoder(config), mlm=True))
    data = MaskedSteps(BlockRows(blocks), EpochSampler(len(blocks), args.batch, 0), masking_for(tokenizer, "token", 0.15))
    hf_config = transformers.BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                                        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
                                        intermediate_size=config.intermediate_size)
    theirs = transformers.BertForMaskedLM(hf_config)
    hf_tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir())
    collator = transformers.DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
    far = 10**6  # the schedule's length: the learning rate stays near its peak in every round
    opt_ours, sched_ours = make_optimizer(ours, TrainConfig(lr=1e-4, max_steps=far, warmup_steps=0))
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    sched_theirs = transformers.get_linear_schedule_with_warmup(opt_theirs, 0, far)
    state = {"ours": 0, "theirs": 0}
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}

    def bertkit_round(dtype):
        def go():
            for _ in range(args.steps):
                train_step(ours, ours, data.batches(state["ours"], 0, 1), opt_ours, sched_ours, 1.0, dtypes[dtype])
                state["ours"] += 1
        return go

    def hf_round(dtype):
        def go():
            theirs.train()
            for _ in range(args.steps):
                rows = EpochSampler(len(blocks), args.batch, 0).indices(state["theirs"])
                state["theirs"] += 1
                batch = collator([{"input_ids": blocks[i].tolist()} for i in np.sort(rows)])
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                    loss = theirs(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
                opt_theirs.step()
                sched_theirs.step()
                opt_theirs.zero_grad(set_to_none=True)
        return go

    runs = {f"{who} {dtype}": (bertkit_round if who == "bertkit" else hf_round)(dtype)
            for dtype in args.dtypes for who in ("bertkit", "transformers")}
    for go in runs.values():
        go()  # warm-up
    peaks = {dtype: matmul_peak(dtypes[dtype]) for dtype in ("bf16", "fp32")}
    times = alternate(runs, args.repeats)
    tokens = args.steps * args.batch * args.length
    # Necessary work: 3 x (encoder forward + MLM head on the 15% chosen tokens), fwd + bwd.
    chosen = 0.15 * tokens
    head = 2 * chosen * (config.hidden_size ** 2 + config.hidden_size * config.vocab_size)
    flops = 3 * (forward_flops(config, [args.length] * (args.steps * args.batch)) + head)
    rows = {}
    for name, t in times.items():
        seconds = median(t)
        prec = name.split()[-1]
        rows[name] = {"tokens_per_s": tokens / seconds, "seconds_per_round": seconds,
                      "fraction_of_matmul_peak": flops / seconds / peaks[prec]}
    ratios = {p: rows[f"bertkit {p}"]["tokens_per_s"] / rows[f"transformers {p}"]["tokens_per_s"] for p in args.dtypes}
    target = ">= 3.0" if args.preset == "mini" else ">= 1.3" if args.preset == "base" else ""
    caption = (f"bert-{args.preset} ({config.num_layers} layers, hidden {config.hidden_size}, vocab {config.vocab_size}), "
               f"sequence {args.length}, batch {args.batch}, {args.steps} steps per round, median of {args.repeats}; "
               f"matmul peak now: fp32 {peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s.")
    text = throughput_table(caption, rows, ratios, {p: target for p in ratios}, "ratio bertkit / transformers")
    print(text)
    name = "pretrain" if args.preset == "mini" else f"pretrain-{args.preset}"
    write_results(name, "python benchmarks/bench_pretrain.py " + " ".join(sys.argv[1:]),
                  {"preset": args.preset, "batch": args.batch, "length": args.length, "steps": args.steps,
                   "matmul_peak_flops": peaks, "runs": rows, "ratios": ratios, "times": times}, text)


if __name__ == "__main__":
    main()
