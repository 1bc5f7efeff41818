"""Hugging Face checkpoints <-> bertkit, both ways, on small unusual configs."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from bertkit import CheckpointError, Encoder, add_pretraining_heads, load_pretrained, preset, save_pretrained

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=1234, hidden_size=96, num_attention_heads=3, intermediate_size=200,
             num_hidden_layers=2, max_position_embeddings=64)


def hf_model(family: str):
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(**SMALL, type_vocab_size=3, hidden_act="gelu_new")
        return transformers.BertForPreTraining(config).eval()
    if family == "roberta":
        config = transformers.RobertaConfig(**SMALL, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
        return transformers.RobertaForMaskedLM(config).eval()
    config = transformers.DistilBertConfig(vocab_size=1234, dim=96, n_heads=3, hidden_dim=200, n_layers=2,
                                           max_position_embeddings=64, activation="gelu")
    return transformers.DistilBertForMaskedLM(config).eval()


def batch_for(family: str, pad_id: int):
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([20, 7, 13])
    mask = (torch.arange(20)[None, :] < lengths[:, None]).long()
    ids = torch.where(mask.bool(), torch.randint(5, 1234, (3, 20), generator=g), torch.tensor(pad_id))
    batch = {"input_ids": ids, "attention_mask": mask}
    if family == "bert":
        batch["token_type_ids"] = (torch.arange(20)[None, :] >= 5).long() * 2 * mask
    return batch


def hf_outputs(model, batch):
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
    nsp = getattr(out, "seq_relationship_logits", None)
    return out.hidden_states[-1], logits, nsp


def bertkit_outputs(model: Encoder, batch):
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        nsp = model.nsp_head(model.pooler(hidden)) if model.nsp_head is not None else None
        return hidden, model.mlm_head(hidden), nsp


def assert_same(ours, theirs, mask):
    real = mask.bool()
    for a, b in zip(ours[:2], theirs[:2]):
        assert (a[real] - b[real]).abs().max() <= 1e-5
    if theirs[2] is not None:
        assert (ours[2] - theirs[2]).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_round_trip_with_transformers(family, tmp_path):
    reference = hf_model(family)
    reference.save_pretrained(tmp_path / "hf")
    model = load_pretrained(tmp_path / "hf")
    assert model.config.family == family and model.mlm_head is not None
    assert (model.nsp_head is not None) == (family == "bert")
    batch = batch_for(family, reference.config.pad_token_id)
    expected = hf_outputs(reference, batch)
    assert_same(bertkit_outputs(model, batch), expected, batch["attention_mask"])

    save_pretrained(model, tmp_path / "ours")
    auto = transformers.AutoModelForPreTraining if family == "bert" else transformers.AutoModelForMaskedLM
    reloaded = auto.from_pretrained(tmp_path / "ours").eval()
    assert_same(hf_outputs(reloaded, batch), expected, batch["attention_mask"])
    encoder_only = transformers.AutoModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        hidden = encoder_only(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (hidden[real] - expected[0][real]).abs().max() <= 1e-5


def test_bertkit_model_saves_and_loads_itself(tmp_path):
    model = add_pretraining_heads(Encoder(preset("tiny", vocab_size=300)), mlm=True, nsp=True).eval()
    save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    again = load_pretrained(tmp_path)
    batch = batch_for("bert", 0)
    batch["input_ids"] %= 300
    batch["token_type_ids"] = batch["token_type_ids"].clamp(max=1)
    assert_same(bertkit_outputs(again, batch), bertkit_outputs(model, batch), batch["attention_mask"])


def test_pytorch_model_bin_loads(tmp_path):
    reference = hf_model("bert")
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    reference.config.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    batch = batch_for("bert", 0)
    assert_same(bertkit_outputs(model, batch), hf_outputs(reference, batch), batch["attention_mask"])


@pytest.fixture
def saved(tmp_path):
    model = Encoder(preset("tiny", vocab_size=300))
    save_pretrained(model, tmp_path)
    return tmp_path


def test_truncated_safetensors_names_the_file(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt or truncated"):
        load_pretrained(saved)


def test_missing_tensor_is_named(saved):
    tensors = load_file(saved / "model.safetensors")
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="'encoder.layer.1.output.dense.weight' is missing"):
        load_pretrained(saved)


def test_shape_mismatch_is_named(saved):
    config = json.loads((saved / "config.json").read_text())
    config["vocab_size"] = 301
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"embeddings.word.weight.*\(300, 128\).*\(301, 128\)"):
        load_pretrained(saved)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_pretrained(tmp_path)


def test_unsupported_family_is_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["model_type"] = "gpt2"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'gpt2' is not a BERT"):
        load_pretrained(saved)


def test_unused_tensors_are_reported(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["classifier.weight"] = torch.zeros(2, 128)
    save_file(tensors, saved / "model.safetensors")
    with pytest.warns(UserWarning, match="1 tensors not used.*classifier.weight"):
        load_pretrained(saved)


def test_untied_decoder_is_refused(tmp_path):
    reference = hf_model("bert")
    reference.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"] + 1
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="decoder.weight differs from the word embeddings"):
        load_pretrained(tmp_path)


def test_tensorflow_names_and_sharded_checkpoints_load(tmp_path):
    reference = hf_model("bert")
    reference.config.save_pretrained(tmp_path)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in reference.state_dict().items()}
    names = sorted(state)
    half = len(names) // 2
    for i, part in enumerate((names[:half], names[half:])):
        save_file({k: state[k].clone().contiguous() for k in part}, tmp_path / f"model-0000{i + 1}-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 + (k in names[half:])}-of-00002.safetensors" for k in names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = load_pretrained(tmp_path)
    batch = batch_for("bert", 0)
    assert_same(bertkit_outputs(model, batch), hf_outputs(reference, batch), batch["attention_mask"])


def test_family_rules_are_checked_before_anything_is_written():
    with pytest.raises(ValueError, match="DistilBERT model has no segment embeddings"):
        preset("tiny", family="distilbert")
    with pytest.raises(ValueError, match="RoBERTa model numbers positions"):
        preset("tiny", family="roberta", pad_token_id=1)
