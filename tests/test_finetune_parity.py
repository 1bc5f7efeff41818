"""A bertkit fine-tuning step is the transformers Trainer's step: from the same weights, on the same
batches, with dropout off (the one random part) and the Trainer's weight decay of 0 (bertkit's default
is 0.01), the CoNLL-2003 tagger's losses, gradient norms and weights follow
`BertForTokenClassification` + AdamW + the linear schedule + clipping step by step, with the
classifier at the encoder's learning rate (head_lr_scale 1, the Trainer's) and at the tagger's
default 30x (the reference's AdamW given the classifier as a group of its own); with dropout on, the
loss over many draws has the same mean and spread."""

from __future__ import annotations

import pytest
import torch
import transformers
from tiny_task_data import conll_head

from bertkit.config import FinetuneConfig, TrainConfig
from bertkit.convert import save_pretrained
from bertkit.train.finetune import run_lr_scale, setup
from bertkit.train.loop import make_optimizer, train_step


def first_subword_labels(batch: dict) -> torch.Tensor:
    """(B, T) token labels as the run_ner recipe writes them: each word's label at its first
    subword, -100 everywhere else."""
    slots, words = batch["slots"], batch["labels"]
    labels = torch.full(slots.shape, -100, dtype=torch.long)
    for row in range(slots.shape[0]):
        previous = -1
        for t, slot in enumerate(slots[row].tolist()):
            if slot >= 0 and slot != previous:
                labels[row, t] = words[row, slot]
            previous = slot if slot >= 0 else previous
    return labels


def with_our_classifier(path, ours, **config) -> torch.nn.Module:
    """`BertForTokenClassification` of the encoder at `path` with the classifier of our tagger `ours`."""
    theirs = transformers.AutoModelForTokenClassification.from_pretrained(path, num_labels=len(ours.spec.labels), **config)
    with torch.no_grad():
        theirs.classifier.weight.copy_(ours.head.out.weight)
        theirs.classifier.bias.copy_(ours.head.out.bias)
    return theirs


@pytest.mark.parametrize("head_lr_scale", [1.0, None], ids=["trainers-head-lr", "default-head-lr"])
def test_a_tagging_step_equals_the_trainers(data_dir, minilm_dir, tmp_path, head_lr_scale):
    train = conll_head(data_dir / "conll2003" / "eng.train", tmp_path / "train.conll", 200)
    config = FinetuneConfig(task="tag", model=str(minilm_dir), train=str(train), out=str(tmp_path / "out"),
                            epochs=1, batch_size=16, head_lr_scale=head_lr_scale)  # the default batches, loss norm
    assert config.head_lr_scale == (head_lr_scale or 30.0)
    run = setup(config, TrainConfig(lr=5e-5, weight_decay=0.0, seed=0))  # eps: the default; decay: the Trainer's 0
    ours, data = run.model, run.data
    theirs = with_our_classifier(minilm_dir, ours, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    for module in ours.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.0
    ours.train(), theirs.train()
    optimizer, scheduler = make_optimizer(ours, run.train, run_lr_scale(ours, config))  # as the run's loop gets it
    head = [p for name, p in theirs.named_parameters() if name.startswith("classifier.")]
    body = [p for name, p in theirs.named_parameters() if not name.startswith("classifier.")]
    their_optimizer = torch.optim.AdamW([{"params": body}, {"params": head, "lr": 5e-5 * config.head_lr_scale}],
                                        lr=5e-5, eps=1e-8, weight_decay=0.0)
    their_scheduler = transformers.get_linear_schedule_with_warmup(their_optimizer, 0, run.train.max_steps)
    for step in range(4):
        batch = data.batches(step, 0, 1)[0]
        losses, norm = train_step(ours, ours, [batch], optimizer, scheduler, run.train.clip_norm, torch.float32)
        loss = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=first_subword_labels(batch)).loss
        loss.backward()
        their_norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        their_optimizer.step(), their_scheduler.step(), their_optimizer.zero_grad()
        assert abs(losses["loss"] - loss.item()) < 1e-5 and abs(norm - their_norm.item()) < 1e-4 * their_norm.item()
    ours_up = ours.encoder.layers[0].feed_forward.up.weight
    assert torch.allclose(ours_up, theirs.bert.encoder.layer[0].intermediate.dense.weight, atol=1e-6)
    assert torch.allclose(ours.head.out.weight, theirs.classifier.weight, atol=1e-6)


def test_dropout_is_where_the_trainers_model_has_it(data_dir, minilm_dir, tmp_path):
    """Dropout on (off above): over many draws on one batch, from weights trained a few steps, bertkit's
    loss has the mean and the spread of `BertForTokenClassification`'s with the same weights. Dropout
    raises the loss here by about 40 standard errors; without the attention dropout bertkit's mean fell
    6 of them below the Trainer's model (this test then fails). The head's dropout, before one linear
    layer, moves the mean too little to be seen this way."""
    train = conll_head(data_dir / "conll2003" / "eng.train", tmp_path / "train.conll", 200)
    config = FinetuneConfig(task="tag", model=str(minilm_dir), train=str(train), out=str(tmp_path / "out"),
                            epochs=1, batch_size=32)
    run = setup(config, TrainConfig(lr=1e-4, seed=0))
    ours, data = run.model, run.data
    optimizer, scheduler = make_optimizer(ours, run.train)
    for step in range(6):
        train_step(ours, ours, data.batches(step, 0, 1), optimizer, scheduler, 1.0, torch.float32)
    save_pretrained(ours.encoder, tmp_path / "encoder")
    theirs = with_our_classifier(tmp_path / "encoder", ours)
    batch = data.batches(0, 0, 1)[0]
    labels = first_subword_labels(batch)

    def our_loss() -> float:
        return (ours(batch)["loss"] / batch["counts"]["loss"]).item()

    def their_loss() -> float:
        return theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.item()

    torch.manual_seed(0)
    with torch.no_grad():
        ours.eval(), theirs.eval()
        assert abs(our_loss() - their_loss()) < 1e-4
        plain = our_loss()
        ours.train(), theirs.train()
        draws = torch.tensor([[our_loss(), their_loss()] for _ in range(60)])
    mean, sd = draws.mean(0), draws.std(0)
    se = (sd ** 2 / len(draws)).sum().sqrt()
    assert abs(mean[0] - mean[1]) < 4 * se, (mean, se)
    assert 0.7 < sd[0] / sd[1] < 1.4, sd
    assert mean[1] - plain > 10 * se  # the test can see a dropout's worth of difference
