"""objectives: training throughput of the two-model objectives against plain MLM, same blocks, same precision.

- ELECTRA (a bert-mini discriminator, a generator 1/4 as wide) against MLM training of the same
  bert-mini (the roberta recipe's step): the paper's promise is that the generator costs little.
  Target: >= 0.75x MLM's tokens/s.
- DistilBERT's triple loss (`MLMDistiller`: a bert-mini teacher without autograd state, a student of
  its layers 0 and 2) against MLM training of that same 2-layer student alone.

Each side is the library's own optimizer step (`train.loop.train_step`) on Gutenberg packed into
128-token blocks, batch 32. One process, 2 threads, alternating rounds of `--steps` steps, median
over rounds. Precision `auto`: bf16 where the CPU computes it natively, else fp32.

    python benchmarks/bench_objectives.py [--steps 10] [--repeats 3] [--dtype auto|bf16|fp32]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DTYPE_NAMES, ROOT, alternate, matmul_peak, median, minilm_dir, throughput_table, write_results  # noqa: E402

from bertkit import Encoder, Tokenizer, add_pretraining_heads, precision, preset  # noqa: E402
from bertkit.config import TrainConfig  # noqa: E402
from bertkit.data.batches import BlockRows, EpochSampler, MaskedSteps  # noqa: E402
from bertkit.data.corpus import build_corpus  # noqa: E402
from bertkit.data.instances import pack_full_sentences  # noqa: E402
from bertkit.model import forward_flops  # noqa: E402
from bertkit.train.distill import MLMDistiller, WithTokenCounts, student_from_teacher  # noqa: E402
from bertkit.train.electra import Electra, generator_config  # noqa: E402
from bertkit.train.loop import make_optimizer, train_step  # noqa: E402
from bertkit.train.pretrain import Pretrainer, masking_for  # noqa: E402


def head_flops(config, rows: float) -> float:
    """Forward FLOPs of an MLM head (dense to the embedding width, then the tied decoder) on `rows` vectors."""
    E = config.embedding_width
    return 2 * rows * (config.hidden_size * E + E * config.vocab_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    dtype = precision.resolve(args.dtype, torch.device("cpu"))
    prec = DTYPE_NAMES[dtype]

    tokenizer = Tokenizer.from_pretrained(minilm_dir())
    corpus = build_corpus([DATA / "gutenberg_nltk"], tokenizer, ROOT / ".bertkit-cache", errors="replace", progress=False)
    blocks = pack_full_sentences(corpus, tokenizer.role_id("cls"), tokenizer.role_id("sep"), args.length)
    sampler = EpochSampler(len(blocks), args.batch, 0)
    masking = masking_for(tokenizer, "token", 0.15)
    mlm_data = MaskedSteps(BlockRows(blocks), sampler, masking)
    electra_data = MaskedSteps(BlockRows(blocks), sampler, masking_for(tokenizer, "token", 0.15, rtd=True))

    torch.manual_seed(0)
    mini = preset("mini", vocab_size=tokenizer.vocab_size, pooler=False)
    discriminator = add_pretraining_heads(Encoder(replace(mini, family="electra")), mlm=False, rtd=True)
    generator = Encoder(generator_config(discriminator.config, 0.25))
    teacher = add_pretraining_heads(Encoder(mini), mlm=True).eval()
    student = student_from_teacher(teacher, [0, 2])
    models = {
        "mlm bert-mini": (Pretrainer(add_pretraining_heads(Encoder(mini), mlm=True)), mlm_data),
        "electra bert-mini + 1/4 generator": (Electra(discriminator, generator), electra_data),
        "mlm 2-layer student": (Pretrainer(add_pretraining_heads(Encoder(student.config), mlm=True)), mlm_data),
        "distil 2-layer student from bert-mini": (MLMDistiller(student, teacher), WithTokenCounts(mlm_data)),
    }
    far = 10**6  # the schedule's length: the learning rate stays near its peak in every round
    steps = {name: 0 for name in models}

    def round_of(name):
        model, data = models[name]
        optimizer, scheduler = make_optimizer(model, TrainConfig(lr=1e-4, max_steps=far, warmup_steps=0))

        def go():
            for _ in range(args.steps):
                train_step(model, model, data.batches(steps[name], 0, 1), optimizer, scheduler, 1.0, dtype)
                steps[name] += 1
        return go

    runs = {name: round_of(name) for name in models}
    for go in runs.values():
        go()  # warm-up
    peak = matmul_peak(dtype)
    times = alternate(runs, args.repeats)
    rows_per_round = args.steps * args.batch
    tokens = rows_per_round * args.length
    chosen = 0.15 * tokens
    lengths = [args.length] * rows_per_round
    gen = generator.config
    # Necessary work (matrix products): 3 x (forward) for what trains, 1 x for what only runs forward.
    flops = {
        "mlm bert-mini": 3 * (forward_flops(mini, lengths) + head_flops(mini, chosen)),
        "electra bert-mini + 1/4 generator": 3 * (forward_flops(mini, lengths) + 2 * tokens * mini.hidden_size ** 2
                                                  + forward_flops(gen, lengths) + head_flops(gen, chosen))
        + 2 * chosen * gen.embedding_width * gen.vocab_size,  # the logits the samples are drawn from
        "mlm 2-layer student": 3 * (forward_flops(student.config, lengths) + head_flops(student.config, chosen)),
        "distil 2-layer student from bert-mini": forward_flops(mini, lengths) + head_flops(mini, chosen)
        + 3 * (forward_flops(student.config, lengths) + head_flops(student.config, chosen)),
    }
    rows = {name: {"tokens_per_s": tokens / median(t), "seconds_per_round": median(t),
                   "fraction_of_matmul_peak": flops[name] / median(t) / peak} for name, t in times.items()}
    ratios = {"electra / mlm (same discriminator)": rows["electra bert-mini + 1/4 generator"]["tokens_per_s"]
              / rows["mlm bert-mini"]["tokens_per_s"],
              "distillation / mlm (same student)": rows["distil 2-layer student from bert-mini"]["tokens_per_s"]
              / rows["mlm 2-layer student"]["tokens_per_s"]}
    targets = {"electra / mlm (same discriminator)": ">= 0.75", "distillation / mlm (same student)": "reported"}
    text = throughput_table(f"bertkit training steps, {prec}, sequence {args.length}, batch {args.batch}, vocab "
                            f"{mini.vocab_size}, {args.steps} steps per round, median of {args.repeats}; matmul peak "
                            f"now {peak / 1e9:.0f} GFLOP/s ({prec}).", rows, ratios, targets)
    print(text)
    write_results("objectives", "python benchmarks/bench_objectives.py " + " ".join(sys.argv[1:]),
                  {"precision": prec, "batch": args.batch, "length": args.length, "steps": args.steps,
                   "matmul_peak_flops": peak, "runs": rows, "ratios": ratios, "times": times}, text)


if __name__ == "__main__":
    main()
