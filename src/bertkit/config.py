"""Configuration as frozen dataclasses, every run setting in one place.

`EncoderConfig` describes an encoder; `TrainConfig` the training loop; `PretrainConfig` (with its
`RECIPES`) and `FinetuneConfig` the two kinds of run. YAML recipes load into the same dataclasses
(`load_sections`), one section each, and the command line overrides a field as
`--section.field=value`. A field that a run derives (fine-tuning derives its steps from its
epochs) is None until derived, so an explicit value, even one equal to a default, is never taken
for "not given".

The four Hugging Face families that bertkit reads and writes (BERT, RoBERTa, DistilBERT, ELECTRA) are one
architecture with small differences, each an `EncoderConfig` field rather than a subclass:

- RoBERTa numbers positions from `pad_token_id + 1` (`position_offset`) and has one segment type;
- DistilBERT has no segment embeddings (`type_vocab_size = 0`) and no pooler;
- ELECTRA has no pooler, and its embeddings may be narrower or wider than its layers (`embedding_size`).

`causal` makes the encoder a left-to-right language model (each token attends to itself and the
tokens before it): Hugging Face's `is_decoder`, saved as `BertLMHeadModel` with its LM head.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

FAMILIES = ("bert", "roberta", "distilbert", "electra")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# The range checks of config fields: each rule's text, and the test a value that breaks it fails.
_RULES = {"must be positive": lambda v: v <= 0, "must be >= 0": lambda v: v < 0,
          "must be in [0, 1)": lambda v: not 0 <= v < 1, "must be in (0, 1)": lambda v: not 0 < v < 1,
          "must be in (0, 1]": lambda v: not 0 < v <= 1, "must be in [0, 1]": lambda v: not 0 <= v <= 1}


def _require(config, rule: str, *names: str, prefix: str = "") -> None:
    """Refuse the first field among `names` whose value breaks `rule` (a key of `_RULES`)."""
    for name in names:
        if _RULES[rule](getattr(config, name)):
            raise ValueError(f"{prefix}{name} {rule}, got {getattr(config, name)}")


def _require_one_of(config, **allowed: Sequence[str]) -> None:
    """Refuse the first field whose value is not among its allowed values."""
    for name, values in allowed.items():
        if getattr(config, name) not in values:
            raise ValueError(f"{name} must be one of {tuple(values)}, not {getattr(config, name)!r}")


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    position_offset: int = 0
    pooler: bool = True
    family: str = "bert"
    causal: bool = False  # attention sees only the past (Hugging Face is_decoder)
    embedding_size: int | None = None  # width of the embeddings, projected to hidden_size (ELECTRA); None = hidden_size

    def __post_init__(self) -> None:
        _require(self, "must be positive", "vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings", prefix="EncoderConfig.")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        _require_one_of(self, hidden_act=ACTIVATIONS, family=FAMILIES)
        _require(self, "must be >= 0", "type_vocab_size", "position_offset", prefix="EncoderConfig.")
        if self.family == "distilbert" and (self.type_vocab_size or self.pooler):
            raise ValueError("a DistilBERT model has no segment embeddings and no pooler: set "
                             "type_vocab_size=0 and pooler=False")
        if self.family == "roberta" and self.position_offset != self.pad_token_id + 1:
            raise ValueError("a RoBERTa model numbers positions from pad_token_id + 1: set "
                             f"position_offset={self.pad_token_id + 1}")
        _require(self, "must be in [0, 1)", "hidden_dropout", "attention_dropout")
        if self.causal and self.family not in ("bert", "roberta"):
            raise ValueError(f"bertkit builds causal (decoder) models of family 'bert' or 'roberta', not {self.family!r}")
        if self.family == "electra" and self.pooler:
            raise ValueError("an ELECTRA model has no pooler: set pooler=False")
        if self.embedding_size is not None and self.embedding_size <= 0:
            raise ValueError(f"EncoderConfig.embedding_size must be positive, got {self.embedding_size}")

    @property
    def embedding_width(self) -> int:
        """Width of the token, position and segment embeddings (and of the MLM head's output)."""
        return self.embedding_size or self.hidden_size

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        """Longest input in tokens that the position embeddings cover."""
        return self.max_position_embeddings - self.position_offset

    def replace(self, **changes) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)


def _preset(layers: int, hidden: int, heads: int) -> EncoderConfig:
    return EncoderConfig(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden)


# Sizes of Turc et al. (2019) "Well-Read Students Learn Better" plus BERT-base and BERT-large.
PRESETS: dict[str, EncoderConfig] = {
    "tiny": _preset(2, 128, 2),
    "mini": _preset(4, 256, 4),
    "small": _preset(4, 512, 8),
    "medium": _preset(8, 512, 8),
    "base": _preset(12, 768, 12),
    "large": _preset(24, 1024, 16),
}


def preset(name: str, **changes) -> EncoderConfig:
    """The named preset, with any field changed (e.g. `preset("mini", vocab_size=8000)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes)


# ------------------------------------------------------------------------------ training loop

# What the loop uses for a field that is None and that no run derived.
LOOP_DEFAULTS = {"max_steps": 1000, "warmup_steps": 100, "eval_every": 0, "checkpoint_every": 100, "eps": 1e-6}


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int | None = None  # None: derived (fine-tuning: from its epochs), else LOOP_DEFAULTS
    max_minutes: float | None = None
    lr: float = 1e-4
    warmup_steps: int | None = None  # None: derived (fine-tuning: warmup_ratio), else LOOP_DEFAULTS
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None  # AdamW's; None: derived (fine-tuning: 1e-8, the Trainer's), else LOOP_DEFAULTS (BERT's 1e-6)
    clip_norm: float = 1.0
    precision: str = "fp32"
    compile: bool = False
    log_every: int = 10
    eval_every: int | None = None  # 0: only at the end; None: derived (fine-tuning: every epoch)
    checkpoint_every: int | None = None  # None: derived (fine-tuning: every epoch), else LOOP_DEFAULTS
    keep_checkpoints: int = 2
    seed: int = 0
    strategy: str = "ddp"  # under torchrun: "ddp" or "fsdp"
    monitor: str | None = None  # an `evaluate` metric: keep the weights where it was best
    higher_is_better: bool = True
    patience: int = 0  # stop after this many evaluations without improvement of `monitor`; 0 = never

    def __post_init__(self) -> None:
        _require(self, "must be positive", "lr", "keep_checkpoints", *self.given("max_steps", "checkpoint_every"))
        _require(self, "must be >= 0", "patience", *self.given("warmup_steps", "eval_every"))
        # int8 (precision.py) is for inference only
        _require_one_of(self, strategy=("ddp", "fsdp"), precision=("auto", "fp32", "bf16", "float32", "bfloat16"))

    def given(self, *names: str) -> list[str]:
        """Which of these fields were set (are not None)."""
        return [n for n in names if getattr(self, n) is not None]

    def derive(self, **values) -> "TrainConfig":
        """This config with each None field among `values` set to its value; set fields are kept."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if getattr(self, k) is None})


# ------------------------------------------------------------------------------ pretraining


@dataclass(frozen=True)
class Recipe:
    """A pretraining objective: what instances it trains on, how it masks, which extra losses."""

    instances: str  # "pairs": BERT's sentence pairs; "packed": RoBERTa's FULL-SENTENCES blocks
    masking: str  # "token" (or whole-word with pretrain.whole_word) | "span" (SpanBERT) | "causal" (next token)
    #               | "permutation" (XLNet: targets at the end of a random factorization order)
    nsp: bool = False  # next-sentence prediction
    sbo: bool = False  # SpanBERT's span boundary objective
    rtd: bool = False  # ELECTRA: a generator MLM fills the masks, the encoder detects replaced tokens

    @property
    def causal(self) -> bool:
        """A left-to-right language model: causal attention, every next token predicted."""
        return self.masking == "causal"


RECIPES = {
    "bert": Recipe("pairs", "token", nsp=True),
    "roberta": Recipe("packed", "token"),  # its YAML: beta2 0.98, big batches
    "spanbert": Recipe("packed", "span", sbo=True),
    "mlm": Recipe("pairs", "token"),  # BERT's instances and masking, MLM loss alone
    "arlm": Recipe("packed", "causal"),  # autoregressive LM: the encoder with causal attention
    "electra": Recipe("packed", "token", rtd=True),  # replaced-token detection (generator + discriminator)
    "plm": Recipe("packed", "permutation"),  # permutation LM: two-stream attention, partial prediction
}


@dataclass(frozen=True)
class PretrainConfig:
    recipe: str = "bert"
    corpus: tuple[str, ...] = ()  # files or folders; "LANG=PATH" entries for multilingual sampling
    tokenizer: str | None = None  # a directory; None trains a WordPiece vocabulary on the corpus (or uses init's)
    init: str | None = None  # continue from this pretrained encoder directory (its size, weights and tokenizer)
    preset: str = "mini"  # ignored with init
    vocab_size: int = 30522  # for a tokenizer trained here
    max_length: int = 128
    batch_size: int = 32
    micro_batches: int = 1
    mask_rate: float = 0.15
    whole_word: bool = False
    alpha: float = 0.3
    documents: str = "file"
    encoding_errors: str = "strict"
    eval_corpus: str | None = None
    eval_blocks: int = 256
    generator_size: float = 0.25  # electra: the generator's hidden size as a fraction of the discriminator's
    rtd_weight: float = 50.0  # electra: loss = generator MLM + rtd_weight x replaced-token detection
    generator_lr_scale: float = 1.0  # electra: the generator's own layers learn at train.lr x this (shared embeddings at train.lr)
    sample_temperature: float = 1.0  # electra: replacements drawn from softmax(generator logits / this) (the reference's `temperature`)
    partial: int = 6  # plm: predict 1/partial of the tokens, after the others in a random order (XLNet's K)
    out: str = "runs/pretrain"
    cache: str = ".bertkit-cache"

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if not self.corpus:
            raise ValueError("give a corpus (--corpus PATH, repeatable; LANG=PATH for several languages)")
        _require(self, "must be in (0, 1)", "mask_rate")
        _require(self, "must be positive", "vocab_size", "max_length", "batch_size", "micro_batches", "eval_blocks",
                 "rtd_weight", "partial", "generator_lr_scale", "sample_temperature")
        if self.batch_size % self.micro_batches:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batches {self.micro_batches}")
        _require(self, "must be in (0, 1]", "alpha", "generator_size")
        _require_one_of(self, documents=("file", "blank_line"), encoding_errors=("strict", "replace"))

    @property
    def objective(self) -> Recipe:
        return RECIPES[self.recipe]

    @property
    def languages(self) -> dict[str, list[str]]:
        """{language: paths} for LANG=PATH entries; {"": paths} when no entry names a language."""
        out: dict[str, list[str]] = {}
        for lang, _, path in (entry.rpartition("=") for entry in self.corpus):  # lang "" when no "="
            out.setdefault(lang, []).append(path)
        return out


# ------------------------------------------------------------------------------ fine-tuning

# The task settings a fine-tuned model's spec (`tasks.TaskSpec`) shares with the FinetuneConfig that
# sets them, and the values bertkit implements.
TASK_CHOICES = {"alignment": ("first", "mean", "every"), "decoder": ("greedy", "crf"), "pooling": ("cls", "mean"),
                "span_summary": ("mean", "attention"), "overflow": ("window", "truncate"),
                "entity_mode": ("strict", "default")}


# The task head's learning rate / the encoder's, per task kind, when a run does not set it. A tagger's
# classifier starts at random (std 0.02) and at the encoder's lr moves at most about 0.01 a weight in an
# epoch, so the encoder spends the epoch fitting a near-random head: at 30x, CoNLL-2003 dev F1 rises from
# 0.832 to 0.855 after one epoch and 0.896 to 0.902 after three (README, "Batches, and what a step
# learns"). A sentence classifier lost accuracy at 30x (SST-2 dev 0.897 -> 0.889), so the other kinds
# keep 1, as the Trainer.
HEAD_LR_SCALE = {"tag": 30.0}


def check_task_settings(settings) -> None:
    """Refuse task settings (of a TaskSpec or a FinetuneConfig) that bertkit does not implement."""
    _require_one_of(settings, **TASK_CHOICES)
    _require(settings, "must be in (0, 1)", "threshold")
    if settings.max_span_width < 1:
        raise ValueError(f"max_span_width must be at least 1 word, got {settings.max_span_width}")


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run. Its fields named like `tasks.TaskSpec`'s (alignment, decoder, ...)
    go to the model's spec as they are, and are checked there."""

    task: str = "classify"
    model: str = ""  # a model directory (config.json + weights, tokenizer files)
    train: str = ""
    dev: str | None = None
    out: str = "runs/finetune"
    epochs: float = 3.0
    batch_size: int = 32
    batch_by: str = "rows"  # "rows": batch_size rows a batch; "tokens": as many padded tokens each, as many batches
    batching: str = "random"  # "random": rows drawn at random (as the Trainer does); "grouped": similar lengths together
    loss_norm: str = "batch"  # a batch's loss sum / "batch": its own items; "dataset": its rows x mean items per row
    reader: dict = dataclasses.field(default_factory=dict)  # options for the file reader (columns, fields, scheme)
    labels: tuple[str, ...] = ()  # fixed label set; empty = the training file's labels
    alignment: str = "first"
    decoder: str = "greedy"
    pooling: str = "cls"
    max_span_width: int = 8
    span_summary: str = "mean"
    threshold: float = 0.5
    tune_thresholds: bool = True
    max_length: int = 512
    stride: int | None = None  # tokens shared by neighbouring windows; None = a quarter of max_length
    overflow: str = "window"
    dropout: float = 0.1
    trainable_layers: int = -1  # -1: the whole encoder; 0: frozen encoder (the head only); k: the top k layers
    layer_lr_decay: float = 1.0  # layer l of L learns at lr * decay^(L - l); embeddings at decay^L
    head_lr_scale: float | None = None  # the task head (and CRF) learns at lr * this; None: HEAD_LR_SCALE, else 1
    class_weights: str = "none"  # "none" | "balanced"
    entity_mode: str = "strict"  # seqeval mode for BIO metrics: "strict" (IOB2) | "default"
    eval_batch_size: int = 64
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_task_settings(self)
        _require_one_of(self, batch_by=("rows", "tokens"), batching=("grouped", "random"),
                        loss_norm=("dataset", "batch"), class_weights=("none", "balanced"))
        if not self.model or not self.train:
            raise ValueError("give a model directory (--model) and a training file (--train)")
        if self.head_lr_scale is None:
            object.__setattr__(self, "head_lr_scale", HEAD_LR_SCALE.get(self.task, 1.0))
        _require(self, "must be positive", "epochs", "batch_size", "eval_batch_size", "max_length", "head_lr_scale")
        _require(self, "must be in (0, 1]", "layer_lr_decay")
        _require(self, "must be in [0, 1)", "warmup_ratio")


@dataclass(frozen=True)
class MultitaskConfig:
    """A multi-task run: one encoder, a head per entry of `tasks`. Each task is a mapping of
    FinetuneConfig fields (task, train, dev, reader, labels, decoder, ...) plus its loss `weight`;
    the fields below hold for every task (epochs, batch_size, max_length, eval_batch_size may also
    be set per task) or for the shared encoder."""

    model: str = ""
    out: str = "runs/multitask"
    tasks: dict = dataclasses.field(default_factory=dict)  # name -> {task, train, dev, weight, ...}
    schedule: str = "proportional"  # which task each step trains: "proportional" | "temperature" | "round_robin"
    alpha: float = 0.5  # temperature: task t is drawn with probability proportional to its batches^alpha
    epochs: float = 3.0  # passes over each task's data, on average (as many steps in all as the tasks' epochs)
    batch_size: int = 32
    max_length: int = 512
    eval_batch_size: int = 64
    warmup_ratio: float = 0.0
    layer_lr_decay: float = 1.0
    head_lr_scale: float | None = None  # None: each head its task kind's (HEAD_LR_SCALE, else 1)
    trainable_layers: int = -1

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("give a model directory (multitask.model, or --model)")
        if not self.tasks:
            raise ValueError("a multi-task recipe lists its tasks under multitask.tasks: {NAME: {task: KIND, "
                             "train: FILE, dev: FILE, weight: 1.0, ...}}")
        _require_one_of(self, schedule=("proportional", "temperature", "round_robin"))
        _require(self, "must be in (0, 1]", "alpha")
        _require(self, "must be positive", "epochs")
        for name, task in self.tasks.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name)):
                raise ValueError(f"multitask.tasks: {name!r} is not a task name (letters, digits, _ and - only)")
            if not isinstance(task, dict):
                raise ValueError(f"multitask.tasks.{name}: expected a mapping of fields, got {task!r}")
            shared = sorted(set(task) & {"model", "out", "layer_lr_decay", "head_lr_scale", "trainable_layers",
                                         "warmup_ratio"})
            if shared:
                raise ValueError(f"multitask.tasks.{name}.{shared[0]}: set for every task (multitask.{shared[0]}), "
                                 "not per task: the tasks share one encoder and one schedule")
            weight = task.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or weight < 0 or not math.isfinite(weight):
                raise ValueError(f"multitask.tasks.{name}.weight must be a number >= 0, not {weight!r}")
        if all(task.get("weight", 1.0) == 0 for task in self.tasks.values()):
            raise ValueError("every task has weight 0: nothing would train")


# ------------------------------------------------------------------------------ distillation


@dataclass(frozen=True)
class DistillConfig:
    """A distillation run (`train.distill`): a student built from the teacher's layers learns to
    reproduce the teacher's outputs: sentence vectors on unlabelled text, or a fine-tuned model's
    scores on its task's training file."""

    teacher: str = ""  # a model directory (objective "task": a fine-tuned one)
    objective: str = "embedding"  # "embedding": sentence vectors (MSE); "task": a task model's scores; "mlm": DistilBERT's
    #   triple loss on masked text (soft targets, MLM, hidden-state cosine; teachers with an MLM head)
    # the teacher's layers (0-based) the student starts from; () = half, first to last (student_layers)
    layers: tuple[int, ...] = ()
    corpus: tuple[str, ...] = ()  # text files (or folders of .txt), one text per line; "task": optional, unlabelled
    train: str | None = None  # "task": the task's training file (labels used by the hard loss)
    dev: str | None = None  # "task": a labelled file scored after training
    temperature: float = 2.0  # "task", "mlm": softmax temperature of the soft targets (their loss scaled by T^2)
    soft_weight: float = 0.5  # "task": the soft (teacher) loss's share; the hard (label) loss has the rest
    loss_weights: tuple[float, float, float] = (5.0, 2.0, 1.0)  # "mlm": soft targets, MLM, cosine (DistilBERT's)
    pooling: str = "mean"
    max_length: int = 128  # longer texts are cut (counted)
    batch_size: int = 64
    epochs: float = 1.0
    warmup_ratio: float = 0.05
    encoding_errors: str = "strict"
    cache: str = ".bertkit-cache"  # "mlm": where the tokenized corpus is kept (as pretraining keeps it)
    out: str = "runs/distill"

    def __post_init__(self) -> None:
        _require_one_of(self, objective=("embedding", "task", "mlm"), pooling=("mean", "cls", "max"),
                        encoding_errors=("strict", "replace"))
        if not self.teacher:
            raise ValueError("give a teacher model directory (--teacher)")
        if self.objective in ("embedding", "mlm") and not self.corpus:
            raise ValueError(f"give unlabelled text (--corpus) for the {self.objective} objective")
        if self.objective == "task" and not self.train:
            raise ValueError("give the task's training file (--train) for the task objective")
        if self.objective == "task" and self.corpus and self.soft_weight == 0:
            raise ValueError("unlabelled text (--corpus) has only the teacher's scores to learn: "
                             "it needs distill.soft_weight > 0")
        _require(self, "must be positive", "temperature", "max_length", "batch_size", "epochs")
        _require(self, "must be in [0, 1]", "soft_weight")
        _require(self, "must be in [0, 1)", "warmup_ratio")


# ------------------------------------------------------------------------------ YAML and flags


# Recipe fields that name input files: a relative path in a YAML recipe is relative to the recipe.
RECIPE_PATHS = {"pretrain": ("corpus", "eval_corpus", "tokenizer", "init"), "finetune": ("model", "train", "dev"),
                "multitask": ("model", "tasks"), "distill": ("teacher", "corpus", "train", "dev")}  # tasks: each task's train and dev


def _coerce(value, hint, where: str):
    """A value as the field's type: tuples from lists, floats from ints and from strings such as
    1e-8 (YAML 1.1 reads those as strings); a value of another type is an error naming `where`."""
    args = typing.get_args(hint)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [a for a in args if a is not type(None)] if union else [hint]
    if value is None and type(None) in args:
        return None
    for kind in kinds:
        ok, converted = _as_kind(value, kind)
        if ok:
            return converted
    expected = " or ".join(_NAMES.get(typing.get_origin(k) or k, str(k)) for k in kinds)
    raise ValueError(f"{where}: expected {expected}{' or null' if type(None) in args else ''}, got {value!r}")


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a text", dict: "a mapping",
          tuple: "a list"}


def _as_kind(value, kind) -> tuple[bool, object]:
    """(whether `value` can be a `kind`, the value as one); floats must be finite."""
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        args = typing.get_args(kind)
        item_kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if args and len(item_kinds) != len(items):
            return False, value
        converted = [_as_kind(v, k) for v, k in zip(items, item_kinds)] if args else [(True, v) for v in items]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    if isinstance(value, bool) or origin is bool:
        return origin is bool and isinstance(value, bool), value
    if origin is float:
        try:
            number = float(value) if isinstance(value, (str, int, float)) else math.nan
        except ValueError:
            number = math.nan
        return math.isfinite(number), number
    if origin is str:
        return isinstance(value, (str, int, float)), str(value) if isinstance(value, (int, float)) else value
    if origin in (int, dict):
        return isinstance(value, origin), value
    return True, value


def read_recipe(path: str, sections: dict[str, type]) -> tuple[dict, dict[tuple, int]]:
    """A YAML recipe's sections, and the line of every value in it ({(section, field): line},
    by_preset values under ("by_preset", PRESET, section, field))."""
    import yaml
    text = Path(path).read_text()
    try:
        raw, root = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) or v is None for v in raw.values()):
        raise ValueError(f"{path}: expected sections ({', '.join(sorted(sections))}), each a mapping of field: value")
    lines: dict[tuple, int] = {}

    def walk(node, keys: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[keys + (key.value,)] = value.start_mark.line + 1
                walk(value, keys + (key.value,))
    walk(root, ())
    return raw, lines


def _recipe_relative(values: dict, fields: Sequence[str], folder: Path) -> dict:
    """`values` with the relative paths of `fields` made relative to the recipe's folder."""
    def resolve(entry: str) -> str:
        lang, eq, rest = entry.rpartition("=")
        parts = [p if not p or Path(p).is_absolute() else os.path.normpath(folder / p) for p in rest.split(",")]
        return f"{lang}{eq}{','.join(parts)}"
    out = dict(values)
    for name in fields:
        value = out.get(name)
        if name == "tasks" and isinstance(value, dict):  # a multi-task recipe: {NAME: {train: ..., dev: ...}}
            out[name] = {k: _recipe_relative(v, ("train", "dev"), folder) if isinstance(v, dict) else v
                         for k, v in value.items()}
        elif isinstance(value, str):
            out[name] = resolve(value)
        elif isinstance(value, list):
            out[name] = [resolve(v) if isinstance(v, str) else v for v in value]
    return out


def _parse_overrides(overrides: Sequence[str], sections: dict[str, type]) -> dict[str, dict]:
    import yaml
    parsed: dict[str, dict] = {name: {} for name in sections}
    for item in overrides:
        key, sep, text = item.lstrip("-").partition("=")
        section, _, field = key.partition(".")
        if not sep or section not in sections or not field:
            raise ValueError(f"override {item!r} is not --section.field=value with a section in {sorted(sections)}")
        try:
            parsed[section][field] = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed[section][field] = text  # a value YAML cannot read is taken as the text it is
    return parsed


def load_sections(path: str | None, sections: dict[str, type], overrides: Sequence[str] = (),
                  direct: dict[str, dict] | None = None) -> dict:
    """Build one frozen dataclass per section from YAML, a preset block, flags and overrides.

    Precedence, lowest first: the dataclass defaults; the YAML file's sections
    (`{section: {field: value}}`); its `by_preset: {PRESET: {section: {...}}}` block for the chosen
    `pretrain.preset` (a field may be set in a section or in the preset's block, not in both with
    different values); `direct` values from dedicated command-line flags (None = not given); and
    `overrides`, each "section.field=value" with the value parsed as YAML. Relative input paths in
    the recipe (`RECIPE_PATHS`) are relative to the recipe's folder.

    Raises:
        ValueError: naming the file and line (or the flag), the field and what it allows.
    """
    raw, lines = read_recipe(path, sections) if path else ({}, {})
    unknown = set(raw) - set(sections) - {"by_preset"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected {sorted(sections)}")
    folder = Path(path).parent if path else Path(".")
    recipe = {n: _recipe_relative(raw.get(n) or {}, RECIPE_PATHS.get(n, ()), folder) for n in sections}
    flags = {name: {k: v for k, v in (direct or {}).get(name, {}).items() if v is not None} for name in sections}
    parsed = _parse_overrides(overrides, sections)
    preset_name = next((layer.get("pretrain", {}).get("preset") for layer in (parsed, flags, recipe)
                        if layer.get("pretrain", {}).get("preset")), None)
    block = (raw.get("by_preset") or {}).get(preset_name) or {}
    block = {n: _recipe_relative(block.get(n) or {}, RECIPE_PATHS.get(n, ()), folder) for n in sections}
    for name in sections:
        for field in set(recipe[name]) & set(block[name]):
            if recipe[name][field] != block[name][field]:
                raise ValueError(f"{path}:{lines[('by_preset', preset_name, name, field)]}: {name}.{field} is "
                                 f"{block[name][field]!r} for preset {preset_name} but {recipe[name][field]!r} at line "
                                 f"{lines[(name, field)]}: set it in one place")
    layers = [(recipe, lambda name, k: f"{path}:{lines[(name, k)]}"),
              (block, lambda name, k: f"{path}:{lines[('by_preset', preset_name, name, k)]}"),
              (flags, lambda name, k: "command line"), (parsed, lambda name, k: f"--{name}.{k}")]
    return {name: _build(cls, name, {k: (v, where(name, k)) for layer, where in layers for k, v in layer[name].items()},
                         path) for name, cls in sections.items()}


def _build(cls: type, name: str, values: dict[str, tuple[object, str]], path: str | None):
    """`cls` from {field: (value, where it was set)}; every error names where."""
    hints = typing.get_type_hints(cls)
    bad = sorted(set(values) - set(hints))
    if bad:
        raise ValueError(f"{values[bad[0]][1]}: {name} has no field(s) {bad}; fields: {sorted(hints)}")
    try:
        return cls(**{k: _coerce(v, hints[k], f"{where}: {name}.{k}") for k, (v, where) in values.items()})
    except ValueError as e:
        if str(e).startswith(tuple(where for _, where in values.values())):
            raise  # a value of the wrong type: _coerce named where it was set
        field = next((k for k in values if str(e).startswith(k)), None)  # the dataclass's own checks name it
        raise ValueError(f"{values[field][1]}: {name}.{e}" if field else f"{path or 'command line'}: {name}: {e}") from None
