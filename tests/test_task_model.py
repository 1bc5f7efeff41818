"""TaskModel: word pooling, subword labels, spec checks, and its directory (save, load, transformers)."""

import json

import pytest
import torch

from bertkit import Encoder, Tokenizer, preset, save_pretrained
from bertkit.data.examples import WordExample
from bertkit.data.readers import read_conll, read_table
from bertkit.heads import IGNORE_INDEX, pool_words
from bertkit.predict import predict_examples
from bertkit.tags import continuation_ids
from bertkit.tasks import check_spec, collate, encode_examples
from bertkit.tasks.model import TaskModel, load_task_model, save_task_model
from bertkit.tasks import TaskSpec
from bertkit.tasks.tag import token_labels

IG = IGNORE_INDEX


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return Tokenizer.from_pretrained(minilm_dir)


def tiny_encoder(tokenizer) -> Encoder:
    torch.manual_seed(0)
    return Encoder(preset("tiny", hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2,
                          vocab_size=tokenizer.vocab_size))


def test_pool_words_first_and_mean_by_hand():
    values = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [9.0, 9.0]]])  # (1, 5, 2)
    mean = pool_words(values, torch.tensor([[-1, 0, 0, 1, -1]]), num_words=3)
    first = pool_words(values, torch.tensor([[-1, 0, -1, 1, -1]]), num_words=3)
    assert mean.tolist() == [[[2.0, 3.0], [5.0, 6.0], [0.0, 0.0]]]  # a third, absent word pools to zeros
    assert first.tolist() == [[[1.0, 2.0], [5.0, 6.0], [0.0, 0.0]]]


def test_word_vectors_from_real_subwords(tokenizer):
    example = WordExample(("unaffable", "cats", "purr"), ("O", "O", "O"))
    tokens = tokenizer.encode([list(example.words)], split_into_words=True).rows[0]
    positions = [[t for t, w in enumerate(tokens.word_ids) if w == i] for i in range(3)]
    assert len(positions[0]) > 1  # the test needs a word of several subwords
    values = torch.arange(len(tokens.ids), dtype=torch.float32)[None, :, None]  # token t has value t
    for alignment, expected in (("first", [p[0] for p in positions]),
                                ("mean", [sum(p) / len(p) for p in positions])):
        spec = TaskSpec("tag", ("O",), max_length=64, stride=8, alignment=alignment)
        batch = collate(encode_examples([example], tokenizer, spec), [0], spec, tokenizer.pad_id)
        assert pool_words(values, batch["slots"], 3).flatten().tolist() == pytest.approx(expected)


def test_later_subwords_of_a_b_word_learn_i(tokenizer):
    spec = TaskSpec("tag", ("B-PER", "I-PER", "O"), alignment="every")
    continuation = torch.tensor(continuation_ids(spec.labels))
    slots = torch.tensor([[-1, 0, 0, 0, 1, 1, 2, -1]])
    words = torch.tensor([[0, 1, IG]])  # B-PER, I-PER, an unknown label
    assert token_labels(words, slots, continuation).tolist() == [[IG, 0, 1, 1, 1, 1, IG, IG]]
    assert token_labels(torch.tensor([[2, 0]]), torch.tensor([[-1, 0, 0, 1, -1, -1]]),
                        continuation).tolist() == [[IG, 2, 2, 0, IG, IG]]


@pytest.mark.parametrize("changes, message", [
    ({"task": "tag", "decoder": "crf", "alignment": "every"}, "CRF runs over words"),
    ({"task": "span", "decoder": "crf"}, "use it with the tag task"),
    ({"task": "tag", "alignment": "last"}, "alignment must be one of"),
    ({"task": "tagging"}, "task must be one of"),
    ({"task": "classify", "labels": ()}, "needs labels"),
    ({"task": "multilabel", "threshold": 1.0}, "threshold must be in"),
    ({"task": "pair", "labels": ("entailment", "neutral", "contradiction")}, "labels must be sorted and unique"),
])
def test_task_spec_refuses_what_cannot_work(changes, message):
    with pytest.raises(ValueError, match=message):
        check_spec(TaskSpec(**{"labels": ("B-X", "I-X", "O"), **changes}))


def randomise(model: TaskModel) -> TaskModel:
    """Heads far from their near-zero initialisation, so predictions differ between inputs."""
    torch.manual_seed(1)
    for p in model.head.parameters():  # a tag head's CRF too
        torch.nn.init.normal_(p, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def sentences(data_dir):
    return read_conll(data_dir / "conll2003" / "eng.testa")[:24]


@pytest.mark.parametrize("spec", [TaskSpec("classify", ("0", "1"), max_length=32, stride=8),
                                  TaskSpec("tag", ("B-LOC", "B-PER", "I-LOC", "I-PER", "O"), decoder="crf",
                                           max_length=16, stride=4),
                                  TaskSpec("span", ("LOC", "PER"), max_span_width=3, threshold=0.3,
                                           span_summary="attention", max_length=16, stride=4)],
                         ids=lambda s: s.task)
def test_saved_model_predicts_the_same(spec, tokenizer, sentences, data_dir, tmp_path):
    examples = (read_table(data_dir / "sst2" / "dev.tsv", "sentence", "label")[:24] if spec.task == "classify"
                else sentences)
    model = randomise(TaskModel(tiny_encoder(tokenizer), spec))
    before = predict_examples(model, tokenizer, examples, batch_size=8, precision="fp32")
    save_task_model(model, tokenizer, tmp_path)
    loaded = load_task_model(tmp_path)
    after = predict_examples(loaded, Tokenizer.from_pretrained(tmp_path), examples, batch_size=8, precision="fp32")
    assert loaded.spec == spec and after == before
    if spec.task == "classify":
        assert len({p["probabilities"]["1"] for p in before}) == len(examples)
    else:
        assert sum(len(p["entities"]) for p in before) > 0


def test_loading_a_plain_encoder_directory_says_what_is_missing(tokenizer, tmp_path):
    save_pretrained(tiny_encoder(tokenizer), tmp_path)
    with pytest.raises(FileNotFoundError, match="no task.json; this is not a fine-tuned"):
        load_task_model(tmp_path)


def test_a_task_json_with_a_bad_field_is_refused_naming_the_file(tokenizer, tmp_path):
    save_task_model(TaskModel(tiny_encoder(tokenizer), TaskSpec("classify", ("a", "b"))), tokenizer, tmp_path)
    task_json = tmp_path / "task.json"
    raw = json.loads(task_json.read_text())
    task_json.write_text(json.dumps({**raw, "labels": ["b", "a"]}))  # the head's outputs would swap meaning
    with pytest.raises(ValueError, match=r"task\.json: ValueError: labels must be sorted and unique"):
        load_task_model(tmp_path)
    task_json.write_text(json.dumps({**raw, "poolng": "mean"}))
    with pytest.raises(ValueError, match=r"task\.json: TypeError: .*'poolng'"):
        load_task_model(tmp_path)


def test_transformers_loads_the_saved_encoder(tokenizer, sentences, tmp_path):
    from transformers import AutoModel
    model = randomise(TaskModel(tiny_encoder(tokenizer), TaskSpec("tag", ("B-PER", "I-PER", "O"))))
    save_task_model(model, tokenizer, tmp_path)
    reference = AutoModel.from_pretrained(tmp_path).eval()
    spec = TaskSpec("tag", ("B-PER", "I-PER", "O"), max_length=64, stride=8)
    batch = collate(encode_examples(sentences[:8], tokenizer, spec), list(range(8)), spec, tokenizer.pad_id)
    with torch.no_grad():
        ours = model.encoder(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        theirs = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max() < 1e-5


def test_crf_loss_of_a_window_that_starts_inside_an_entity_is_ordinary(tokenizer, sentences):
    spec = TaskSpec("tag", ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O"),
                    decoder="crf", max_length=12, stride=4)
    features = encode_examples(sentences, tokenizer, spec)
    starts_inside = [r for r, t in enumerate(features.targets) if len(t) and spec.labels[t[0]].startswith("I-")]
    assert starts_inside, "the windows of these sentences should cut through an entity"
    batch = collate(features, starts_inside, spec, tokenizer.pad_id)
    assert batch["cut_start"].all()
    loss = TaskModel(tiny_encoder(tokenizer), spec)(batch)["loss"] / batch["counts"]["loss"]
    assert loss < 5  # per word; a sentence's start may not be I-X, costing 1e4 each


def test_a_crf_model_saved_by_bertkit_0_1_loads(tokenizer, sentences, tmp_path):
    from safetensors.torch import load_file, save_file
    spec = TaskSpec("tag", ("B-LOC", "B-PER", "I-LOC", "I-PER", "O"), decoder="crf", max_length=32, stride=8)
    model = randomise(TaskModel(tiny_encoder(tokenizer), spec))
    save_task_model(model, tokenizer, tmp_path)
    state = load_file(tmp_path / "task_head.safetensors")  # 0.1 kept the CRF beside the head: "crf.*"
    save_file({k.replace("head.crf.", "crf."): v for k, v in state.items()}, tmp_path / "task_head.safetensors")
    loaded = load_task_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.head.crf.parameters(), model.head.crf.parameters()))
    assert predict_examples(loaded, tokenizer, sentences, precision="fp32") == \
        predict_examples(model, tokenizer, sentences, precision="fp32")
