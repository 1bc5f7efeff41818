"""A small pretraining run for the loop's tests: python tests/pretrain_job.py OUT STEPS [--resume] [--micro N]."""

import sys

import numpy as np
import torch

from bertkit import Encoder, add_pretraining_heads, preset
from bertkit.config import TrainConfig
from bertkit.train.loop import fit
from bertkit.data.batches import BlockRows, EpochSampler, MaskedSteps, MaskingSpec
from bertkit.train.electra import Electra, generator_config
from bertkit.train.plm import PermutationLM
from bertkit.train.pretrain import Pretrainer

VOCAB = 120


def build(micro_batches: int = 1, dropout: float = 0.1, seed: int = 0, objective: str = "mlm"):
    """A tiny encoder trained with `objective`: "mlm", "electra" (with a generator) or "plm"."""
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=VOCAB, num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                    hidden_dropout=dropout, attention_dropout=dropout, pooler=False,
                    family="electra" if objective == "electra" else "bert")
    if objective == "electra":
        discriminator = add_pretraining_heads(Encoder(config), mlm=False, rtd=True)
        pretrainer = Electra(discriminator, Encoder(generator_config(config, 0.5)))
    else:
        encoder = add_pretraining_heads(Encoder(config), mlm=True)
        pretrainer = PermutationLM(encoder) if objective == "plm" else Pretrainer(encoder)
    blocks = np.random.default_rng(seed).integers(5, VOCAB, size=(64, 24))
    blocks[:, 0], blocks[:, -1] = 2, 3
    masking = MaskingSpec(kind="permutation" if objective == "plm" else "token", mask_id=4,
                          random_ids=torch.arange(5, VOCAB), special_ids=torch.tensor([0, 1, 2, 3, 4]),
                          rtd=objective == "electra")
    return pretrainer, MaskedSteps(BlockRows(blocks), EpochSampler(len(blocks), 8, seed), masking, micro_batches, seed)


def run(out, steps: int, resume: bool = False, micro_batches: int = 1, dropout: float = 0.1, objective: str = "mlm",
        **changes):
    pretrainer, data = build(micro_batches, dropout, objective=objective)
    config = TrainConfig(max_steps=steps, lr=1e-3, warmup_steps=2, log_every=1, checkpoint_every=1,
                         keep_checkpoints=2, **changes)
    return fit(pretrainer, data, config, out, resume=resume, progress=False), pretrainer


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), resume="--resume" in sys.argv)
