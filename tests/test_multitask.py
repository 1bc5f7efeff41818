"""Multi-task fine-tuning: a task weighted 0 leaves the other trained exactly as alone; the saved
directory predicts every head; schedules; exact resume; bad recipes fail before training."""

import json
import shutil

import numpy as np
import pytest
import torch

from bertkit import Tokenizer
from bertkit.cli import main
from bertkit.config import MultitaskConfig
from bertkit.predict import predict_examples, task_metrics
from bertkit.tasks import read_examples
from bertkit.tasks.model import load_task_model
from bertkit.train.finetune import finetune
from bertkit.train.multitask import head_scales, multitask, schedule, task_configs

from test_finetune import quiet, records, tag_config
from tiny_task_data import conll, tiny  # noqa: F401 (fixtures)

POS = {"reader": {"tag_column": 1, "scheme": "none"}}


def tasks(conll, **pos) -> dict:
    files = {"task": "tag", "train": str(conll[0]), "dev": str(conll[1]), "stride": 8}
    return {"ner": dict(files), "pos": {**files, **POS, **pos}}


def config(tiny, conll, out, **changes) -> MultitaskConfig:
    return MultitaskConfig(**{"model": str(tiny), "out": str(out), "epochs": 2, "batch_size": 16, "max_length": 128,
                              "tasks": tasks(conll), **changes})


def test_a_task_weighted_zero_leaves_the_other_trained_as_alone(tiny, conll, tmp_path):
    alone = finetune(tag_config(tiny, conll, tmp_path / "alone"), quiet())
    both = multitask(config(tiny, conll, tmp_path / "both", tasks=tasks(conll, weight=0)), quiet())
    single = [r["loss"] for r in records(tmp_path / "alone") if "loss" in r]
    multi = [r["loss"] for r in records(tmp_path / "both") if "loss" in r]
    assert len(single) == len(multi) == 8
    np.testing.assert_allclose(multi, single, rtol=0, atol=1e-6)
    assert both["ner"]["f1"] == pytest.approx(alone["f1"], abs=1e-9)
    assert "accuracy" in both["pos"]  # scored, though never trained


def test_each_head_learns_at_its_task_kinds_rate(tiny, conll, tmp_path):
    """A tagging head at a tagger's 30x the encoder's lr, a classifier at 1x, as each would alone;
    multitask.head_lr_scale sets one rate for every head."""
    mixed = {"ner": tasks(conll)["ner"], "topic": {"task": "classify", "train": str(conll[0])}}
    scale = head_scales(lambda name: 0.5, task_configs(config(tiny, conll, tmp_path, tasks=mixed)))
    names = ("heads.ner.out.weight", "heads.topic.out.bias", "encoder.layers.0.x")
    assert [scale(n) for n in names] == [30.0, 1.0, 0.5]
    one = head_scales(lambda name: 0.5, task_configs(config(tiny, conll, tmp_path, tasks=mixed, head_lr_scale=2.0)))
    assert one("heads.ner.out.weight") == one("heads.topic.out.weight") == 2.0


@pytest.fixture(scope="module")
def trained(tiny, conll, tmp_path_factory):
    out = tmp_path_factory.mktemp("multitask")
    result = multitask(config(tiny, conll, out, schedule="round_robin"), quiet(keep_checkpoints=20))
    return out, result


def test_the_saved_directory_predicts_every_head(trained, conll):
    out, result = trained
    assert json.loads((out / "tasks.json").read_text())["heads"] == ["ner", "pos"]
    assert json.loads((out / "dev_metrics.json").read_text()) == json.loads(json.dumps(result))
    tokenizer = Tokenizer.from_pretrained(out)
    for head in ("ner", "pos"):
        model = load_task_model(out, head)
        dev = read_examples(str(conll[1]), "tag", model.spec.reader)
        assert task_metrics(model.spec, dev, predict_examples(model, tokenizer, dev, precision="fp32")) == result[head]
    assert [r["step"] for r in records(out) if "loss" in r] == list(range(16))  # round robin: 8 steps each
    with pytest.raises(ValueError, match=r"is a multi-task model: name one of its heads \(ner, pos\) with --head"):
        load_task_model(out)
    with pytest.raises(ValueError, match="has no head 'chunk'; its heads: ner, pos"):
        load_task_model(out, "chunk")


def test_predict_and_evaluate_take_a_head(trained, conll, tmp_path, capsys):
    out, result = trained
    text = tmp_path / "in.txt"
    text.write_text("EU rejects German call to boycott British lamb .\n")
    assert main(["predict", "--model", str(out), "--head", "pos", "--input", str(text), "--output",
                 str(tmp_path / "pos.jsonl")]) == 0
    tags = json.loads((tmp_path / "pos.jsonl").read_text())["tags"]
    assert len(tags) == 9 and not any(t.startswith(("B-", "I-")) for t in tags)  # POS tags, not entities
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--head", "ner", "--data", str(conll[1]), "--dtype", "fp32"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(result["ner"]["f1"])


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tiny, conll, tmp_path):
    out = tmp_path / "run"
    run = config(tiny, conll, out, schedule="round_robin")
    multitask(run, quiet(keep_checkpoints=20))
    first = [(r["step"], r["loss"]) for r in records(out) if "loss" in r]
    ended = {name: load_task_model(out, name).state_dict() for name in ("ner", "pos")}
    for later in sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[1:]:
        shutil.rmtree(later)  # as if killed after the first checkpoint
    multitask(run, quiet(keep_checkpoints=20), resume=True)
    again = [(r["step"], r["loss"]) for r in records(out) if "loss" in r]
    assert [s for s, _ in again] == [s for s, _ in first]
    np.testing.assert_allclose([v for _, v in again], [v for _, v in first], rtol=0, atol=1e-6)
    for name, state in ended.items():
        resumed = load_task_model(out, name).state_dict()
        assert all(torch.allclose(state[k], resumed[k], atol=1e-6) for k in state)


def test_schedules():
    proportional = schedule([30, 10, 0], "proportional", 0.5, 40_000, seed=0)
    assert np.bincount(proportional, minlength=3) / 40_000 == pytest.approx([0.75, 0.25, 0.0], abs=0.01)
    tempered = schedule([30, 10, 0], "temperature", 0.5, 40_000, seed=0)
    share = 30 ** 0.5 / (30 ** 0.5 + 10 ** 0.5)  # 0.634: the small task drawn more often than its size says
    assert np.bincount(tempered, minlength=3)[0] / 40_000 == pytest.approx(share, abs=0.01)
    assert schedule([30, 0, 10], "round_robin", 0.5, 5, seed=0).tolist() == [0, 2, 0, 2, 0]


def recipe(tmp_path, conll, **task) -> str:
    path = tmp_path / "r.yaml"
    ner = {"task": "tag", "train": str(conll[0]), "dev": str(conll[1])}
    path.write_text(json.dumps({"multitask": {"epochs": 1, "tasks": {"ner": ner, "pos": {**ner, **task}}},
                                "train": {"lr": 1e-3}}))  # JSON is YAML
    return str(path)


@pytest.mark.parametrize("task, message", [
    ({"train": "missing.conll"}, "multitask.tasks.pos.train: no such file "),  # beside the recipe
    ({"task": "translate"}, "multitask.tasks.pos.task: unknown task kind 'translate'"),
    ({"weight": -1}, "multitask.tasks.pos.weight must be a number >= 0"),
    ({"layer_lr_decay": 0.9}, "multitask.tasks.pos.layer_lr_decay: set for every task"),
    ({"colour": "red"}, "multitask.tasks.pos.colour: not a fine-tuning field"),
])
def test_a_bad_recipe_fails_before_training_and_names_the_task(task, message, tiny, conll, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["multitask", "--config", recipe(tmp_path, conll, **task), "--model", str(tiny), "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "log.jsonl").exists()
