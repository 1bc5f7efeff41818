"""Fine-tuning end to end on a tiny model and real data slices: logs, best weights, freezing,
layer-wise learning rates, class weights, early stopping, metrics against seqeval, thresholds."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertkit import Tokenizer, load_pretrained
from bertkit.config import LOOP_DEFAULTS, FinetuneConfig, TrainConfig, load_sections
from bertkit.data.examples import TextExample
from bertkit.predict import predict_examples, task_metrics
from bertkit.tasks import encode_examples, read_examples
from bertkit.tasks.model import TaskModel, load_task_model
from bertkit.tasks.sequence import label_rate_logits
from bertkit.tasks import TaskSpec
from bertkit.train.checkpoint import read_tensors
from bertkit.train.finetune import balanced_weights, finetune, freeze, layer_scale, setup
from bertkit.train.loop import make_optimizer

from tiny_task_data import conll, lines_head, tiny, tiny_model_dir  # noqa: F401 (conll, tiny: fixtures)


def tag_config(tiny, conll, out, **changes) -> FinetuneConfig:
    return FinetuneConfig(**{"task": "tag", "model": str(tiny), "train": str(conll[0]), "dev": str(conll[1]),
                             "out": str(out), "epochs": 2, "batch_size": 16, "max_length": 128, "stride": 8,
                             **changes})


def quiet(**changes) -> TrainConfig:
    return TrainConfig(**{"lr": 1e-3, "log_every": 1, "checkpoint_every": 1000, **changes})


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_epochs(tiny, conll, tmp_path_factory):
    out = tmp_path_factory.mktemp("ner")
    return out, finetune(tag_config(tiny, conll, out), quiet())


def test_two_epochs_log_dev_metrics_and_save_a_loadable_model(two_epochs, conll):
    out, result = two_epochs
    evals = [r for r in records(out) if "eval_f1" in r]
    steps = [r["step"] for r in records(out) if "loss" in r]
    assert len(steps) == 8 and [r["step"] for r in evals] == [3, 7]  # 64 sentences / 16 = 4 steps an epoch
    assert all({"eval_precision", "eval_recall", "eval_f1"} <= set(r) for r in evals)
    assert (out / "best.safetensors").exists() and (out / "loss.png").exists()
    assert result["f1"] == pytest.approx(max(r["eval_f1"] for r in evals))  # the best epoch's weights are kept
    assert json.loads((out / "dev_metrics.json").read_text()) == json.loads(json.dumps(result))
    model, tokenizer = load_task_model(out), Tokenizer.from_pretrained(out)
    dev = read_examples(str(conll[1]), "tag", model.spec.reader)
    assert task_metrics(model.spec, dev, predict_examples(model, tokenizer, dev, precision="fp32")) == result


def test_grouped_batches_weigh_every_word_alike(tiny, conll, tmp_path):
    """A batch's loss sum is divided by the mean word count per training sentence times its rows,
    not by its own word count: a batch of short sentences does not weigh its words up."""
    s = setup(tag_config(tiny, conll, tmp_path, batching="grouped", loss_norm="dataset"), quiet())
    train = read_examples(str(conll[0]), "tag", {})
    per_row = sum(len(x.words) for x in train) / len(train)
    assert s.data.items_per_row == pytest.approx(per_row)
    short, long = (s.data.batches(step, 0, 1)[0] for step in (0, 1))
    for batch in (short, long):
        rows = len(batch["input_ids"])
        assert batch["counts"] == {"loss": pytest.approx(per_row * rows)}
    assert int(short["word_mask"].sum()) != int(long["word_mask"].sum())  # batches of different lengths


def test_random_batches_and_per_batch_loss_norm_are_the_defaults(tiny, conll, tmp_path):
    """batching=random draws rows at random (as the Trainer does), loss_norm=batch divides a batch's
    loss sum by its own word count (the Trainer's mean); AdamW's epsilon is the Trainer's 1e-8."""
    s = setup(tag_config(tiny, conll, tmp_path), quiet())
    assert s.train.eps == 1e-8 and setup(tag_config(tiny, conll, tmp_path), quiet(eps=1e-6)).train.eps == 1e-6
    lengths = s.data.grouped.lengths
    for step in range(s.data.grouped.steps_per_epoch):
        batch = s.data.batches(step, 0, 1)[0]
        assert batch["counts"] == {"loss": int(batch["word_mask"].sum())}
    rows = np.concatenate(s.data.grouped.epoch(0))
    assert sorted(rows) == list(range(len(lengths)))
    grouped = setup(tag_config(tiny, conll, tmp_path / "g", batching="grouped"), quiet()).data.grouped.epoch(0)
    spread = lambda batches: np.mean([np.ptp(lengths[b]) for b in batches])  # noqa: E731
    assert spread(s.data.grouped.epoch(0)) > 2 * spread(grouped)  # random batches mix lengths
    with pytest.raises(ValueError, match=r"batching must be one of \('grouped', 'random'\), not 'sorted'"):
        tag_config(tiny, conll, tmp_path, batching="sorted")


def test_tag_metrics_equal_seqeval(two_epochs, conll):
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2
    out, _ = two_epochs
    model, tokenizer = load_task_model(out), Tokenizer.from_pretrained(out)
    dev = read_examples(str(conll[1]), "tag", {})
    predictions = predict_examples(model, tokenizer, dev, precision="fp32")
    gold, pred = [list(ex.tags) for ex in dev], [p["tags"] for p in predictions]
    strict = task_metrics(model.spec, dev, predictions, mode="strict")["f1"]
    default = task_metrics(model.spec, dev, predictions, mode="default")["f1"]
    assert strict == pytest.approx(f1_score(gold, pred, mode="strict", scheme=IOB2), abs=1e-12)
    assert default == pytest.approx(f1_score(gold, pred), abs=1e-12)
    assert strict == pytest.approx(default, abs=1e-12)  # greedy tags are repaired to valid BIO, read alike



def encoder_state(path) -> dict[str, torch.Tensor]:
    return load_pretrained(path).state_dict()


@pytest.mark.parametrize("trainable_layers, changed", [(0, set()), (1, {"layers.1"})])
def test_frozen_layers_keep_their_weights(trainable_layers, changed, tiny, conll, tmp_path):
    config = tag_config(tiny, conll, tmp_path, dev=None, epochs=1, batch_size=32, trainable_layers=trainable_layers)
    finetune(config, quiet(lr=1e-2))
    before, after = encoder_state(tiny), encoder_state(tmp_path)
    moved = {".".join(k.split(".")[:2]) for k in before if not torch.equal(before[k], after[k])}
    assert moved == changed
    head = load_file(tmp_path / "task_head.safetensors")
    assert head["head.out.bias"].abs().min() > 0  # initialised to zeros, moved by training


def test_the_head_learning_rate_defaults_per_task_kind(tiny, conll, tmp_path):
    """A tagger's classifier learns at 30x the encoder's lr unless told otherwise; the other kinds at 1x
    (the Trainer's); the config holds the number, so a run's finetune_config.json records it."""
    assert tag_config(tiny, conll, tmp_path).head_lr_scale == 30.0
    assert tag_config(tiny, conll, tmp_path, head_lr_scale=2.0).head_lr_scale == 2.0
    assert FinetuneConfig(task="classify", model=str(tiny), train=str(conll[0])).head_lr_scale == 1.0
    with pytest.raises(ValueError, match="head_lr_scale must be positive"):
        tag_config(tiny, conll, tmp_path, head_lr_scale=0.0)


def test_layer_lr_decay_scales_each_layer(tiny):
    model = TaskModel(load_pretrained(tiny), TaskSpec("tag", ("B-X", "I-X", "O")))
    optimizer, _ = make_optimizer(model, TrainConfig(lr=1e-3), layer_scale(2, 0.5, head=10.0))
    names = {id(p): n for n, p in model.named_parameters()}

    def expected(name):  # layer l of L = 2 learns at lr * 0.5^(L - l), the embeddings at 0.5^L, the head at 10
        if name.startswith("encoder.layers."):
            return 0.5 ** (2 - (int(name.split(".")[2]) + 1))
        if name.startswith("encoder."):
            return 0.25 if name.startswith("encoder.embeddings.") else 1.0
        return 10.0

    seen = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(names.values())
    for group in optimizer.param_groups:
        assert all(group["initial_lr"] == pytest.approx(1e-3 * expected(names[id(p)])) for p in group["params"])
    assert {round(g["initial_lr"], 8) for g in optimizer.param_groups} == {2.5e-4, 5e-4, 1e-3, 1e-2}
    freeze(model, 1)  # frozen parameters are not handed to the optimizer at all
    optimizer, _ = make_optimizer(model, TrainConfig(lr=1e-3), layer_scale(2, 0.5))
    assert {names[id(p)].split(".")[1] for g in optimizer.param_groups for p in g["params"]} == {"layers", "out"}


def test_balanced_class_weights(minilm_dir):
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    examples = [TextExample(f"text {i}", label="a" if i < 6 else "b") for i in range(8)]
    spec = TaskSpec("classify", ("a", "b", "c"))  # "c" never occurs
    features = encode_examples(examples, tokenizer, replace(spec, max_length=32, stride=8))
    weights = balanced_weights(features, spec)  # n / (classes * count)
    assert weights.tolist() == pytest.approx([8 / (3 * 6), 8 / (3 * 2), 1.0])


def test_multilabel_head_starts_at_the_label_rates(minilm_dir):
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    examples = [TextExample(f"text {i}", label=["a", "b"] if i < 2 else ["a"]) for i in range(8)]
    features = encode_examples(examples, tokenizer, TaskSpec("multilabel", ("a", "b", "c"), max_length=32, stride=8))
    rates = torch.sigmoid(label_rate_logits(features))  # "a" in every row, "b" in 2 of 8, "c" in none
    assert rates.tolist() == pytest.approx([1 - 1 / 16, 2 / 8, 1 / 16], abs=1e-6)


def test_early_stopping_restores_the_best_weights(tiny, conll, tmp_path):
    config = tag_config(tiny, conll, tmp_path, epochs=6, batch_size=32)
    finetune(config, quiet(lr=1e-12, monitor="f1", patience=1))  # too small a step for the dev F1 to improve
    log = records(tmp_path)
    evals = [r for r in log if "eval_f1" in r]
    assert [r["step"] for r in evals] == [1, 3] and evals[0]["eval_f1"] == evals[1]["eval_f1"]
    assert max(r["step"] for r in log) == 3 < 6 * 2 - 1  # stopped after the second epoch of six
    best = read_tensors(tmp_path / "best.safetensors")
    head = load_file(tmp_path / "task_head.safetensors")
    assert all(torch.equal(best[k], v) for k, v in head.items())
    saved = encoder_state(tmp_path)
    assert all(torch.equal(best[f"encoder.{k}"], v) for k, v in saved.items())


@pytest.mark.filterwarnings("ignore:truncated", "ignore:.*do not occur in the training data")
def test_multilabel_thresholds_are_tuned_per_label(tiny, data_dir, tmp_path):
    train = lines_head(data_dir / "reuters21578" / "training.jsonl", tmp_path / "train.jsonl", 48)
    dev = lines_head(data_dir / "reuters21578" / "test.jsonl", tmp_path / "dev.jsonl", 32)
    reader = {"label_field": "labels"}
    config = FinetuneConfig(task="multilabel", model=str(tiny), train=str(train), dev=str(dev), out=str(tmp_path),
                            epochs=1, batch_size=16, max_length=32, overflow="truncate", reader=reader)
    result = finetune(config, quiet(lr=1e-2))
    model = load_task_model(tmp_path)
    spec, examples = model.spec, read_examples(str(dev), "multilabel", reader)
    tokenizer = Tokenizer.from_pretrained(tmp_path)
    predictions = predict_examples(model, tokenizer, examples, precision="fp32")  # as the run evaluated
    assert task_metrics(spec, examples, predictions) == pytest.approx(result)
    in_dev = {x for ex in examples for x in ex.label}
    assert len(spec.thresholds) == len(spec.labels) > 10
    grid = {round(0.05 * k, 2) for k in range(1, 20)}
    assert all(t in grid for t in spec.thresholds)
    assert all(t == 0.5 for x, t in zip(spec.labels, spec.thresholds) if x not in in_dev)
    assert any(t != 0.5 for t in spec.thresholds)


def test_pair_task_needs_a_second_text(tiny, data_dir, tmp_path):
    train = lines_head(data_dir / "sst2" / "train.tsv", tmp_path / "train.tsv", 9)
    config = FinetuneConfig(task="pair", model=str(tiny), train=str(train), out=str(tmp_path),
                            reader={"text_column": "sentence", "label_column": "label"})
    with pytest.raises(ValueError, match=r"train.tsv:2: no second text here, but the pair task needs one"):
        finetune(config, quiet())


def test_a_table_without_a_text_column_is_a_clear_error(tiny, data_dir, tmp_path):
    train = lines_head(data_dir / "sst2" / "train.tsv", tmp_path / "train.tsv", 9)
    config = FinetuneConfig(task="classify", model=str(tiny), train=str(train), out=str(tmp_path))
    with pytest.raises(ValueError, match=r"train.tsv: which column holds the text\? Pass --text-column"):
        finetune(config, quiet())


def test_dev_labels_unseen_in_training_are_warned_about(tiny, tmp_path):
    (tmp_path / "train.txt").write_text("Peter B-PER\nBlackburn I-PER\nspoke O\n\nJohn B-PER\nleft O\n")
    (tmp_path / "dev.txt").write_text("Anna B-PER\nvisited O\nParis B-LOC\n")
    config = FinetuneConfig(task="tag", model=str(tiny), train=str(tmp_path / "train.txt"),
                            dev=str(tmp_path / "dev.txt"), out=str(tmp_path / "out"), epochs=1)
    with pytest.warns(UserWarning, match=r"dev.txt: labels \['B-LOC', 'I-LOC'\] do not occur in the training"):
        result = finetune(config, quiet())
    assert not math.isnan(result["f1"])


def test_patience_alone_monitors_the_task_metric(tiny, conll, tmp_path):
    finetune(tag_config(tiny, conll, tmp_path, epochs=4, batch_size=32), quiet(lr=1e-12, patience=1))
    assert [r["step"] for r in records(tmp_path) if "eval_f1" in r] == [1, 3]  # f1, the tag task's metric


def test_an_explicit_checkpoint_interval_is_kept_even_where_it_equals_a_default(tiny, conll, tmp_path):
    sections = load_sections(None, {"finetune": FinetuneConfig, "train": TrainConfig},
                             ["--train.checkpoint_every=100"], {"finetune": {"model": str(tiny), "train": str(conll[0])}})
    assert sections["train"].checkpoint_every == 100 == LOOP_DEFAULTS["checkpoint_every"]
    config = tag_config(tiny, conll, tmp_path)
    given = setup(config, sections["train"])
    assert given.train.checkpoint_every == 100 != given.data.grouped.steps_per_epoch
    derived = setup(config, TrainConfig())
    assert derived.train.checkpoint_every == derived.data.grouped.steps_per_epoch  # None: once an epoch
    with pytest.raises(ValueError, match=r"fine-tuning derives \['max_steps'\] from finetune.epochs"):
        setup(config, TrainConfig(max_steps=LOOP_DEFAULTS["max_steps"]))


def test_a_max_length_beyond_the_models_positions_is_a_clear_error(minilm_dir, conll, tmp_path):
    # 64 positions: a causal LM keeps only those it was trained on
    short = tiny_model_dir(tmp_path / "short", minilm_dir, max_position_embeddings=64)
    with pytest.raises(ValueError, match=r"finetune.max_length is 128 but .*short has positions for 64 tokens: "
                                         r"pass --finetune.max_length=64"):
        finetune(tag_config(short, conll, tmp_path / "out"), quiet())
