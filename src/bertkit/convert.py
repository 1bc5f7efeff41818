"""Hugging Face BERT / RoBERTa / DistilBERT / ELECTRA directories <-> bertkit, one key map per family.

bertkit has no format of its own: a model directory is `config.json` + `model.safetensors` in the
Hugging Face layout of the model's family, so `transformers.AutoModel.from_pretrained` loads what
bertkit saves and the other way round.

A key map is a list of `(bertkit name, [Hugging Face names])`. Several Hugging Face names are
concatenated along the first dimension when reading and split when writing: that is how the
separate query, key and value projections become bertkit's fused `qkv`.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .files import write_safetensors, write_text
from .config import EncoderConfig
from .heads import pretraining_head
from .model import Encoder

KeyMap = list[tuple[str, list[str]]]

# Per family: Hugging Face model_type values, the encoder's key prefix inside models with heads,
# and the config.json field names for bertkit's fields.
MODEL_TYPES = {"bert": ("bert",), "roberta": ("roberta", "xlm-roberta"), "distilbert": ("distilbert",),
               "electra": ("electra",)}
PREFIX = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert.", "electra": "electra."}
CONFIG_FIELDS = {
    "bert": dict(vocab_size="vocab_size", hidden_size="hidden_size", num_layers="num_hidden_layers",
                 num_heads="num_attention_heads", intermediate_size="intermediate_size",
                 max_position_embeddings="max_position_embeddings", type_vocab_size="type_vocab_size",
                 hidden_act="hidden_act", layer_norm_eps="layer_norm_eps", hidden_dropout="hidden_dropout_prob",
                 attention_dropout="attention_probs_dropout_prob", initializer_range="initializer_range",
                 pad_token_id="pad_token_id", causal="is_decoder"),
    "distilbert": dict(vocab_size="vocab_size", hidden_size="dim", num_layers="n_layers", num_heads="n_heads",
                       intermediate_size="hidden_dim", max_position_embeddings="max_position_embeddings",
                       hidden_act="activation", hidden_dropout="dropout", attention_dropout="attention_dropout",
                       initializer_range="initializer_range", pad_token_id="pad_token_id"),
}
CONFIG_FIELDS["roberta"] = CONFIG_FIELDS["bert"]
CONFIG_FIELDS["electra"] = {**CONFIG_FIELDS["bert"], "embedding_size": "embedding_size"}
ARCHITECTURES = {  # the heads a checkpoint holds -> its class name
    "bert": {(): "BertModel", ("mlm",): "BertForMaskedLM", ("mlm", "nsp"): "BertForPreTraining"},
    "roberta": {(): "RobertaModel", ("mlm",): "RobertaForMaskedLM"},
    "distilbert": {(): "DistilBertModel", ("mlm",): "DistilBertForMaskedLM"},
    # a discriminator is ElectraForPreTraining; a generator (an MLM) ElectraForMaskedLM
    "electra": {(): "ElectraModel", ("mlm",): "ElectraForMaskedLM", ("rtd",): "ElectraForPreTraining"},
}
CAUSAL_ARCHITECTURES = {"bert": "BertLMHeadModel", "roberta": "RobertaForCausalLM"}  # with the (LM) head
IGNORED_KEYS = ("position_ids", "token_type_ids")  # buffers some checkpoints store
# Per family: the Hugging Face prefix of layer i's tensors, and its names for each tensor in the layer.
LAYER_KEYS = {
    "bert": ("encoder.layer", {
        "attention.qkv": ["attention.self.query", "attention.self.key", "attention.self.value"],
        "attention.out": ["attention.output.dense"], "attention.norm": ["attention.output.LayerNorm"],
        "feed_forward.up": ["intermediate.dense"], "feed_forward.down": ["output.dense"],
        "feed_forward.norm": ["output.LayerNorm"]}),
    "distilbert": ("transformer.layer", {
        "attention.qkv": ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
        "attention.out": ["attention.out_lin"], "attention.norm": ["sa_layer_norm"],
        "feed_forward.up": ["ffn.lin1"], "feed_forward.down": ["ffn.lin2"],
        "feed_forward.norm": ["output_layer_norm"]}),
}
LAYER_KEYS["roberta"] = LAYER_KEYS["electra"] = LAYER_KEYS["bert"]


class CheckpointError(ValueError):
    """A model directory or weights file that bertkit cannot load, with the file and tensor named."""


def _linear(ours: str, *theirs: str) -> KeyMap:
    """A weight and a bias; several Hugging Face tensors are fused into one of bertkit's."""
    return [(f"{ours}.{p}", [f"{t}.{p}" for t in theirs]) for p in ("weight", "bias")]


def encoder_key_map(config: EncoderConfig) -> KeyMap:
    """Names of the encoder's tensors in the family's Hugging Face layout (without prefix)."""
    keys: KeyMap = [("embeddings.word.weight", ["embeddings.word_embeddings.weight"]),
                    ("embeddings.position.weight", ["embeddings.position_embeddings.weight"])]
    if config.type_vocab_size:
        keys.append(("embeddings.segment.weight", ["embeddings.token_type_embeddings.weight"]))
    keys += _linear("embeddings.norm", "embeddings.LayerNorm")
    if config.embedding_width != config.hidden_size:
        keys += _linear("embeddings_project", "embeddings_project")
    layer, names = LAYER_KEYS[config.family]
    for i in range(config.num_layers):
        for ours, theirs in names.items():
            keys += _linear(f"layers.{i}.{ours}", *(f"{layer}.{i}.{t}" for t in theirs))
    if config.pooler:
        keys += _linear("pooler.dense", "pooler.dense")
    return keys


def head_key_map(family: str) -> dict[str, KeyMap]:
    """Names of the pretraining heads' tensors (the decoder weight is tied to the embeddings)."""
    if family == "bert":
        mlm = (_linear("mlm_head.dense", "cls.predictions.transform.dense")
               + _linear("mlm_head.norm", "cls.predictions.transform.LayerNorm")
               + [("mlm_head.decoder.bias", ["cls.predictions.bias"])])
        return {"mlm": mlm, "nsp": _linear("nsp_head.classifier", "cls.seq_relationship")}
    if family == "roberta":
        return {"mlm": _linear("mlm_head.dense", "lm_head.dense") + _linear("mlm_head.norm", "lm_head.layer_norm")
                + [("mlm_head.decoder.bias", ["lm_head.bias"])]}
    if family == "electra":
        return {"mlm": _linear("mlm_head.dense", "generator_predictions.dense")
                + _linear("mlm_head.norm", "generator_predictions.LayerNorm")
                + [("mlm_head.decoder.bias", ["generator_lm_head.bias"])],
                "rtd": _linear("rtd_head.dense", "discriminator_predictions.dense")
                + _linear("rtd_head.prediction", "discriminator_predictions.dense_prediction")}
    return {"mlm": _linear("mlm_head.dense", "vocab_transform") + _linear("mlm_head.norm", "vocab_layer_norm")
            + [("mlm_head.decoder.bias", ["vocab_projector.bias"])]}


# ---------------------------------------------------------------------------------------- reading

def config_from_hf(hf: dict, source: Path) -> EncoderConfig:
    model_type = hf.get("model_type")
    family = next((f for f, types in MODEL_TYPES.items() if model_type in types), None)
    if family is None:
        raise CheckpointError(f"{source}: model_type {model_type!r} is not a BERT, RoBERTa, DistilBERT or "
                              "ELECTRA model; bertkit reads those four families")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type {hf['position_embedding_type']!r} is "
                              "not supported; bertkit implements absolute positions")
    fields = {ours: hf[theirs] for ours, theirs in CONFIG_FIELDS[family].items() if theirs in hf}
    if family == "roberta":
        fields["position_offset"] = hf.get("pad_token_id", 1) + 1
    if family == "distilbert":
        fields.update(type_vocab_size=0, pooler=False)
    if family == "electra":
        fields["pooler"] = False
        if fields.get("embedding_size") == fields.get("hidden_size", EncoderConfig.hidden_size):
            fields["embedding_size"] = None  # no projection
    try:
        return EncoderConfig(family=family, **fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from e


def _weight_files(path: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index_name).exists():
            weight_map = json.loads((path / index_name).read_text())["weight_map"]
            return [path / name for name in sorted(set(weight_map.values()))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).exists():
            return [path / name]
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in this directory")


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor in a safetensors or PyTorch weights file, with a clear error if it is damaged."""
    try:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        else:
            tensors = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused code or objects other than tensors
        raise CheckpointError(f"{file}: holds more than tensors (pickled objects or code), which bertkit does not "
                              "load; convert the weights to safetensors with a tool you trust") from None
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: cannot read the weights ({e}); the file is corrupt or "
                              "truncated: save or download it again") from e
    # Checkpoints converted from TensorFlow name layer-norm parameters gamma and beta.
    return {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
            for k, v in tensors.items()}


def _gather(key_map: KeyMap, tensors: dict[str, torch.Tensor], files: str) -> dict[str, torch.Tensor]:
    missing = [t for _, theirs in key_map for t in theirs if t not in tensors]
    if missing:
        raise CheckpointError(f"{files}: tensor {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return {ours: torch.cat([tensors.pop(t) for t in theirs]) if len(theirs) > 1 else tensors.pop(theirs[0])
            for ours, theirs in key_map}


def load_pretrained(path: str | Path) -> Encoder:
    """Load a Hugging Face BERT, RoBERTa or DistilBERT directory, with MLM/NSP heads when present."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise CheckpointError(f"{path}: no config.json; expected a Hugging Face model directory")
    try:
        hf_config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'config.json'}: not valid JSON ({e})") from e
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{path / 'config.json'}: a JSON {type(hf_config).__name__}; expected an object "
                              "of model settings (model_type, hidden_size, ...)")
    files = _weight_files(path)
    names = ", ".join(str(f) for f in files)
    tensors = {name: tensor for file in files for name, tensor in read_tensors(file).items()}
    config = config_from_hf(hf_config, path / "config.json")
    tensors = {k.removeprefix(PREFIX[config.family]): v for k, v in tensors.items()}
    config = config.replace(pooler="pooler.dense.weight" in tensors)
    encoder = Encoder(config)
    key_map = encoder_key_map(config)
    for name, keys in head_key_map(config.family).items():
        if keys[0][1][0] in tensors:  # the checkpoint holds this head
            setattr(encoder, f"{name}_head", pretraining_head(name, encoder))
            key_map += keys
    state = _gather(key_map, tensors, names)
    _check_decoder(tensors, state, names)
    _load_state(encoder, state, names)
    leftover = [k for k in tensors if not k.endswith(IGNORED_KEYS)]
    if leftover:
        warnings.warn(f"{names}: {len(leftover)} tensors not used by bertkit (e.g. task heads): "
                      f"{', '.join(leftover[:5])}{' ...' if len(leftover) > 5 else ''}", stacklevel=2)
    return encoder.eval()


def _check_decoder(tensors: dict[str, torch.Tensor], state: dict[str, torch.Tensor], files: str) -> None:
    """bertkit ties the MLM decoder to the embeddings; refuse a checkpoint whose decoder differs."""
    for name in ("cls.predictions.decoder.weight", "lm_head.decoder.weight", "vocab_projector.weight",
                 "generator_lm_head.weight"):
        decoder = tensors.pop(name, None)
        if decoder is not None and not torch.equal(decoder, state["embeddings.word.weight"]):
            raise CheckpointError(f"{files}: {name} differs from the word embeddings; bertkit supports "
                                  "only tied output embeddings")
    for name in ("cls.predictions.decoder.bias", "lm_head.decoder.bias"):
        tensors.pop(name, None)


def _load_state(encoder: Encoder, state: dict[str, torch.Tensor], files: str) -> None:
    expected = encoder.state_dict()
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{files}: tensor for {name!r} has shape {tuple(tensor.shape)}, the "
                                  f"config says {tuple(expected[name].shape)}")
    state["mlm_head.decoder.weight"] = state["embeddings.word.weight"]
    encoder.load_state_dict({k: v.float() for k, v in state.items() if k in expected}, strict=True)


# ---------------------------------------------------------------------------------------- writing

def config_to_hf(config: EncoderConfig, architecture: str) -> dict:
    hf = {theirs: getattr(config, ours) for ours, theirs in CONFIG_FIELDS[config.family].items()}
    hf.update(model_type=config.family, architectures=[architecture])
    if config.family == "electra":
        hf["embedding_size"] = config.embedding_width
    if config.family != "distilbert":
        hf["position_embedding_type"] = "absolute"
    return hf


def save_pretrained(encoder: Encoder, path: str | Path) -> None:
    """Write `config.json` and `model.safetensors` in the family's Hugging Face layout."""
    path = Path(path)
    config = encoder.config
    with_heads = tuple(encoder.pretraining_heads())
    if with_heads not in ARCHITECTURES[config.family]:
        raise ValueError(f"a {config.family} checkpoint cannot hold the heads {' + '.join(with_heads)}; it holds "
                         f"one of: {', '.join(' + '.join(h) for h in ARCHITECTURES[config.family] if h)}")
    prefix = PREFIX[config.family] if with_heads else ""
    key_map = [(ours, [prefix + t for t in theirs]) for ours, theirs in encoder_key_map(config)]
    key_map += [keys for name in with_heads for keys in head_key_map(config.family)[name]]
    state = encoder.state_dict()
    tensors = {name: part.detach().float().contiguous() for ours, theirs in key_map
               for name, part in zip(theirs, state[ours].chunk(len(theirs)))}
    architecture = ARCHITECTURES[config.family][with_heads]
    if config.causal and "mlm" in with_heads:  # the same tensors; the class transformers builds differs
        architecture = CAUSAL_ARCHITECTURES[config.family]
    hf_config = json.dumps(config_to_hf(config, architecture), indent=2)
    write_safetensors(path / "model.safetensors", tensors, metadata={"format": "pt"})
    write_text(path / "config.json", hf_config)
