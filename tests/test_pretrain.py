"""Pretraining objectives against transformers, and a two-step run of every recipe."""

import json
import sys
from pathlib import Path

import pytest
import torch

from bertkit import Encoder, add_pretraining_heads, load_pretrained, preset
from bertkit.cli import main
from bertkit.config import PretrainConfig, TrainConfig, load_sections
from bertkit.heads import IGNORE_INDEX
from bertkit.train.pretrain import Pretrainer

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent


def masked_pair_batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([16, 9, 12])
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (3, 16), generator=g) * mask
    labels = torch.where((torch.rand(3, 16, generator=g) < 0.3) & mask.bool(), ids, torch.tensor(IGNORE_INDEX))
    corrupted = torch.where(labels != IGNORE_INDEX, torch.tensor(4), ids)
    types = (torch.arange(16)[None, :] >= 6).long() * mask
    return {"input_ids": corrupted, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "next_sentence_label": torch.tensor([0, 1, 1])}


def test_mlm_and_nsp_losses_equal_transformers(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=100)
    reference = transformers.BertForPreTraining(config).eval()
    reference.save_pretrained(tmp_path)
    pretrainer = Pretrainer(load_pretrained(tmp_path)).eval()
    batch = masked_pair_batch(300)
    with torch.no_grad():
        ours = pretrainer(batch)
        out = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])
    expected_mlm = torch.nn.functional.cross_entropy(out.prediction_logits.reshape(-1, 300), batch["labels"].reshape(-1))
    expected_nsp = torch.nn.functional.cross_entropy(out.seq_relationship_logits, batch["next_sentence_label"])
    chosen = int((batch["labels"] != IGNORE_INDEX).sum())
    assert float(ours["mlm"]) / chosen == pytest.approx(float(expected_mlm), abs=1e-5)
    assert float(ours["nsp"]) / 3 == pytest.approx(float(expected_nsp), abs=1e-5)


def test_only_chosen_positions_reach_the_vocabulary():
    pretrainer = Pretrainer(add_pretraining_heads(Encoder(preset("tiny", vocab_size=300)), mlm=True, nsp=True))
    rows = []
    pretrainer.encoder.mlm_head.dense.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    batch = masked_pair_batch(300)
    pretrainer(batch)
    assert rows == [int((batch["labels"] != IGNORE_INDEX).sum())]


def test_span_boundary_objective_trains_its_head():
    pretrainer = Pretrainer(add_pretraining_heads(Encoder(preset("tiny", vocab_size=300, pooler=False)), mlm=True),
                            sbo=True)
    batch = masked_pair_batch(300)
    del batch["next_sentence_label"]
    starts = torch.full((3, 16), -1)
    ends = torch.full((3, 16), -1)
    batch["labels"] = torch.full((3, 16), IGNORE_INDEX)
    batch["labels"][0, 3:6] = batch["input_ids"][0, 3:6]
    starts[0, 3:6], ends[0, 3:6] = 3, 5
    batch.update(span_starts=starts, span_ends=ends)
    parts = pretrainer(batch)
    assert set(parts) == {"mlm", "sbo"} and torch.isfinite(parts["sbo"])
    parts["sbo"].backward()
    assert pretrainer.sbo.position.weight.grad[:3].abs().sum() > 0
    assert pretrainer.sbo.position.weight.grad[3:].abs().sum() == 0


def test_nsp_needs_two_documents(data_dir, minilm_dir, tmp_path, capsys):
    code = main(["pretrain", "--config", str(ROOT / "configs" / "bert.yaml"), "--corpus",
                 str(data_dir / "gutenberg_nltk" / "carroll-alice.txt"), "--tokenizer", str(minilm_dir),
                 "--preset", "tiny", "--max-steps", "1", "--out", str(tmp_path), f"--pretrain.cache={tmp_path}"])
    assert code == 2 and "needs at least 2 documents" in capsys.readouterr().err


def test_yaml_precedence(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("pretrain: {recipe: roberta, preset: mini, corpus: [a.txt]}\ntrain: {max_steps: 5}\n"
                    "by_preset: {tiny: {train: {lr: 0.2, warmup_steps: 7}}}\n")
    sections = {"pretrain": PretrainConfig, "train": TrainConfig}
    got = load_sections(path, sections, ["--train.max_steps=9"], {"pretrain": {"preset": "tiny"}})
    assert got["pretrain"].preset == "tiny" and got["pretrain"].corpus == (str(tmp_path / "a.txt"),)  # beside the recipe
    assert (got["train"].lr, got["train"].warmup_steps, got["train"].max_steps) == (0.2, 7, 9)
    with pytest.raises(ValueError, match="train has no field.*'lr_max'"):
        load_sections(path, sections, ["--train.lr_max=1"])
    with pytest.raises(ValueError, match="unknown recipe 'gpt'"):
        load_sections(path, sections, ["--pretrain.recipe=gpt"])


def test_exponent_floats_without_a_decimal_point(tmp_path):
    """YAML 1.1 reads 1e-8 as a string; a float field takes it as the number it means."""
    path = tmp_path / "r.yaml"
    path.write_text("train: {lr: 5e-5}\n")
    got = load_sections(path, {"train": TrainConfig}, ["--train.eps=1e-8"])["train"]
    assert (got.lr, got.eps) == (5e-5, 1e-8)
    with pytest.raises(ValueError, match="train.eps: expected a number or null, got 'small'"):
        load_sections(None, {"train": TrainConfig}, ["--train.eps=small"])


@pytest.mark.parametrize("recipe", ["bert", "roberta", "spanbert", "mlm", "arlm", "plm"])
def test_every_recipe_runs_two_steps_and_saves_a_transformers_model(recipe, data_dir, minilm_dir, tmp_path, capsys):
    out = tmp_path / recipe
    books = [data_dir / "gutenberg_nltk" / name for name in ("carroll-alice.txt", "blake-poems.txt")]
    code = main(["pretrain", "--config", str(ROOT / "configs" / f"{recipe}.yaml"), "--corpus", str(books[0]),
                 "--corpus", str(books[1]), "--tokenizer", str(minilm_dir),
                 "--preset", "tiny", "--max-steps", "2", "--out", str(out), "--pretrain.batch_size=4",
                 f"--pretrain.cache={tmp_path / 'cache'}", "--pretrain.eval_blocks=8", "--train.log_every=1",
                 f"--pretrain.eval_corpus={data_dir / 'wikitext2' / 'raw' / 'wiki.valid.raw'}"])
    assert code == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [0, 1]
    objective = {"arlm": "lm", "plm": "plm"}.get(recipe, "mlm")
    assert f"eval_{objective}_accuracy" in log[-1] and objective in log[0]
    assert (recipe == "bert") == ("nsp" in log[0]) and (recipe == "spanbert") == ("sbo" in log[0])
    assert (out / "loss.png").exists() and (out / "vocab.txt").exists()
    auto = {"bert": transformers.AutoModelForPreTraining, "arlm": transformers.AutoModelForCausalLM}.get(
        recipe, transformers.AutoModelForMaskedLM)
    assert type(auto.from_pretrained(out)).__name__ == {"bert": "BertForPreTraining", "arlm": "BertLMHeadModel"}.get(
        recipe, "BertForMaskedLM")


# ------------------------------------------------------------------ continued pretraining (--init)


@pytest.mark.parametrize("recipe", ["roberta", "bert"])
def test_continued_pretraining_starts_at_the_checkpoint(recipe, minilm_dir):
    """all-MiniLM-L6-v2 has no pretraining heads: the run starts from its exact weights, with a new MLM
    head tied to its word embeddings (and a new NSP head over its pooler for BERT's recipe)."""
    from bertkit.tokenizer import Tokenizer
    from bertkit.train.pretrain import _initial_encoder

    config = PretrainConfig(recipe=recipe, corpus=("unused.txt",), init=str(minilm_dir))
    encoder = _initial_encoder(config, Tokenizer.from_pretrained(minilm_dir))
    original = load_pretrained(minilm_dir).state_dict()
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("mlm_head.", "nsp_head."))}
    assert state.keys() == original.keys()
    assert all(torch.equal(state[k], original[k]) for k in original)
    assert encoder.mlm_head.decoder.weight is encoder.embeddings.word.weight
    assert (encoder.nsp_head is not None) == (recipe == "bert")


def _continue_minilm(minilm_dir, data_dir, tmp_path, *extra):
    books = data_dir / "gutenberg_nltk"
    return main(["pretrain", "--config", str(ROOT / "configs" / "adapt.yaml"), "--init", str(minilm_dir),
                 "--corpus", str(books / "carroll-alice.txt"), "--out", str(tmp_path / "run"),
                 f"--pretrain.cache={tmp_path / 'cache'}", f"--pretrain.eval_corpus={books / 'blake-poems.txt'}",
                 "--pretrain.batch_size=8", "--pretrain.max_length=64", "--pretrain.eval_blocks=16",
                 "--train.log_every=1", *extra])


def test_continued_pretraining_lowers_the_held_out_mlm_loss(minilm_dir, data_dir, tmp_path, capsys):
    code = _continue_minilm(minilm_dir, data_dir, tmp_path, "--max-steps", "12", "--train.eval_every=2",
                            "--train.warmup_steps=2", "--train.lr=5e-4")
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "run"
    evals = [r["eval_mlm_loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
             if "eval_mlm_loss" in r]
    assert len(evals) == 6 and evals[-1] < evals[0] - 1.0, evals
    saved = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert saved.config.num_hidden_layers == 6 and saved.config.hidden_size == 384  # the checkpoint's size


def test_continued_pretraining_refuses_a_disagreeing_tokenizer(minilm_dir, data_dir, tmp_path, capsys):
    from bertkit.tokenizer import Tokenizer

    vocab = Tokenizer.from_pretrained(minilm_dir).vocab()
    swapped = sorted(vocab, key=vocab.get)
    swapped[2000], swapped[2001] = swapped[2001], swapped[2000]  # same size, two ids exchanged
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("\n".join(swapped) + "\n")
    assert _continue_minilm(minilm_dir, data_dir, tmp_path, "--tokenizer", str(tmp_path / "tok"),
                            "--max-steps", "1") == 2
    err = capsys.readouterr().err
    assert "disagrees with the vocabulary" in err and "2 tokens differ" in err and "id 2000" in err
    (tmp_path / "tok" / "vocab.txt").write_text("\n".join(swapped[:1000]) + "\n")
    assert _continue_minilm(minilm_dir, data_dir, tmp_path, "--tokenizer", str(tmp_path / "tok"),
                            "--max-steps", "1", "--overwrite") == 2
    assert "has 1000 tokens but the model" in capsys.readouterr().err
    assert _continue_minilm(minilm_dir, data_dir, tmp_path, "--preset", "tiny", "--max-steps", "1",
                            "--overwrite") == 2
    assert "give --init or --preset, not both" in capsys.readouterr().err


def test_continuing_a_model_with_an_nsp_head_without_nsp_keeps_that_head(minilm_dir, data_dir, tmp_path, capsys):
    """A BERT checkpoint with both pretraining heads, continued with RoBERTa's objective (no NSP):
    the run saves, and the NSP head and pooler it did not train are saved as they were."""
    from bertkit import save_pretrained
    from bertkit.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    bert = add_pretraining_heads(Encoder(preset("tiny", vocab_size=tokenizer.vocab_size, pooler=True)), mlm=True, nsp=True)
    save_pretrained(bert, tmp_path / "bert")
    tokenizer.save(tmp_path / "bert")
    books = data_dir / "gutenberg_nltk"
    code = main(["pretrain", "--config", str(ROOT / "configs" / "adapt.yaml"), "--init", str(tmp_path / "bert"),
                 "--corpus", str(books / "carroll-alice.txt"), "--out", str(tmp_path / "run"), "--max-steps", "2",
                 f"--pretrain.cache={tmp_path / 'cache'}", "--pretrain.eval_corpus=", "--pretrain.batch_size=4",
                 "--pretrain.max_length=64"])
    assert code == 0, capsys.readouterr().err
    saved = load_pretrained(tmp_path / "run")
    for name in ("nsp_head", "pooler"):
        before, after = getattr(bert, name).state_dict(), getattr(saved, name).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
