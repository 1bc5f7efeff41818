"""Distillation (DistilBERT, Sanh et al., 2019): a smaller student learns to reproduce a teacher.

The student is built from the teacher: the same widths, a subset of its layers (by default half,
the first and last among them, as DistilBERT took 0, 2, 4, 7, 9, 11 of BERT-base; or a list), each
initialised from the teacher's layer, with the teacher's embeddings. Keeping the last layer keeps
the space the teacher's outputs live in: all-MiniLM-L6-v2's layers 0, 3, 5 embed STS-B dev at
Spearman 0.842 before any distillation, its layers 0, 2, 4 at 0.738. It trains through the one
loop (`train.loop.fit`) on unlabelled text.

Objective "embedding" (the way sentence encoders are compressed, Reimers & Gurevych 2020): the
student's pooled sentence vector regresses the teacher's by mean squared error over every
dimension. It needs no MLM head, so any sentence encoder can teach.

Objective "mlm" (DistilBERT's triple loss, for teachers with an MLM head): on masked text, per
masked token the soft-target loss T^2 KL(softmax(teacher / T) || softmax(student / T)) and the MLM
loss, per real token the cosine loss 1 - cos(student hidden, teacher hidden), weighted 5 / 2 / 1.

Objective "task" (Hinton et al., 2015; DistilBERT's task-specific variant): a fine-tuned teacher's
scores on the task's training data are soft targets. Per labelled item, loss = w * T^2 *
KL(softmax(teacher / T) || softmax(student / T)) + (1 - w) * cross-entropy with the label; the
student starts from the teacher's layers and its head. Single-label kinds (classify, pair, tag with
the greedy decoder). Unlabelled texts of the task's domain (`corpus`, classify only) add what the
labelled data cannot: each step also takes a batch of them, whose only target is the teacher's
scores (T^2 KL per text, weight 1), as Tang et al. (2019) distil BERT with unlabelled transfer data.

The teacher runs in eval mode without autograd state. It is not a submodule of the trained module:
checkpoints hold the student alone, and a resumed run loads the teacher again from its directory.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DistillConfig, PretrainConfig, TrainConfig
from ..convert import load_pretrained, save_pretrained
from ..data.batches import EpochSampler, GroupedBatches
from ..data.examples import TextExample
from ..files import write_text
from ..heads import IGNORE_INDEX, add_pretraining_heads, pool
from ..model import Encoder
from ..predict import predict_examples, task_metrics
from ..tasks import encode_examples
from ..tasks.model import TaskModel, load_task_model, save_task_model
from ..textfiles import read_texts, text_files
from ..tokenizer import Encoded, Tokenizer
from . import distributed
from .checkpoint import gathered
from .finetune import FINETUNE_EPS, TaskSteps, freeze, spec_config, task_data
from .pretrain import training_data
from .loop import fit
from .runs import run_folder


def student_layers(num_layers: int, layers: Sequence[int] = ()) -> list[int]:
    """The teacher layers (0-based) a student keeps: `layers` as given (checked), or half of them
    (rounded up) spread evenly from the first to the last: DistilBERT's 0, 2, 4, 7, 9, 11 of
    BERT-base's 12; 0, 3, 5 of 6. A one-layer student (of a teacher of 1 or 2) keeps the last."""
    k = (num_layers + 1) // 2
    # layer i of the student: the teacher's i * (num_layers - 1) / (k - 1), rounded half up
    evenly = [(2 * i * (num_layers - 1) + k - 1) // (2 * (k - 1)) for i in range(k)] if k > 1 else [num_layers - 1]
    keep = list(layers) if layers else evenly
    if sorted(set(keep)) != keep or not all(0 <= i < num_layers for i in keep):
        raise ValueError(f"student layers must be distinct, increasing and within the teacher's 0..{num_layers - 1}; "
                         f"got {keep}")
    return keep


def student_from_teacher(teacher: Encoder, layers: Sequence[int] = ()) -> Encoder:
    """A new encoder with the teacher's widths, embeddings, pooler, MLM head (tied to the student's
    own embeddings) and the chosen layers' weights."""
    keep = student_layers(len(teacher.layers), layers)
    student = Encoder(teacher.config.replace(num_layers=len(keep)))
    for mine, theirs in [(student.embeddings, teacher.embeddings), (student.pooler, teacher.pooler),
                         (student.embeddings_project, teacher.embeddings_project),
                         *zip(student.layers, (teacher.layers[i] for i in keep))]:
        if theirs is not None:
            mine.load_state_dict(theirs.state_dict())
    if teacher.mlm_head is not None:
        add_pretraining_heads(student, mlm=True).mlm_head.load_state_dict(teacher.mlm_head.state_dict())
    return student


def soft_target_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) summed over the rows of (N, L) logits."""
    T = temperature
    return F.kl_div((student / T).log_softmax(-1), (teacher / T).log_softmax(-1), reduction="sum",
                    log_target=True) * T * T


class Distiller(nn.Module):
    """A student (the only submodule: what trains and what checkpoints hold) and, beside it, its
    teacher, put in eval mode with its gradients stopped (in place). A student encoder's pooler is
    carried along unchanged: no loss here reads it (a student task model's is frozen by `freeze`)."""

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))
        if isinstance(student, Encoder) and student.pooler is not None:
            student.pooler.requires_grad_(False)


class EmbeddingDistiller(Distiller):
    """A student encoder learning the teacher's sentence vectors."""

    def __init__(self, student: Encoder, teacher: Encoder, pooling: str = "mean"):
        super().__init__(student, teacher)
        self.pooling = pooling

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{"embedding": the squared error summed over the batch's vectors and dimensions}."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            target = pool(self.teacher(ids, mask).last_hidden_state, mask, self.pooling).float()
        vectors = pool(self.student(ids, mask).last_hidden_state, mask, self.pooling).float()
        return {"embedding": (vectors - target).pow(2).sum()}


class TaskDistiller(Distiller):
    """A student task model learning a fine-tuned teacher's scores and the labels."""

    def __init__(self, student: TaskModel, teacher: TaskModel, temperature: float = 2.0, soft_weight: float = 0.5):
        if student.kind.label_kind != "single" or getattr(student.head, "crf", None) is not None:
            raise ValueError(f"task distillation takes single-label tasks with a softmax over labels; "
                             f"{student.spec.task} ({student.spec.decoder}) is not one")
        super().__init__(student, teacher)
        self.temperature, self.soft_weight = temperature, soft_weight

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{"loss": the weighted soft and hard losses summed over the batch's labelled items, or, for
        a batch of unlabelled texts (no "labels"), the soft loss summed over its rows}."""
        scores = self.student.scores(batch).float()  # (..., L): per row or per word
        if self.soft_weight == 0:
            return {"loss": self.student.kind.loss(self.student, scores, batch)}
        with torch.no_grad():
            target = self.teacher.scores(batch).float()
        if "labels" not in batch:
            return {"loss": soft_target_loss(scores, target, self.temperature)}
        hard = self.student.kind.loss(self.student, scores, batch)
        labelled = batch["labels"] != IGNORE_INDEX  # the items the hard loss counts
        soft = soft_target_loss(scores[labelled], target[labelled], self.temperature)
        return {"loss": self.soft_weight * soft + (1 - self.soft_weight) * hard}


class MLMDistiller(Distiller):
    """DistilBERT's triple loss: a student encoder with its MLM head learning the teacher's."""

    def __init__(self, student: Encoder, teacher: Encoder, temperature: float = 2.0,
                 weights: Sequence[float] = (5.0, 2.0, 1.0)):
        if teacher.mlm_head is None or student.mlm_head is None:
            raise ValueError("the mlm objective needs a teacher with an MLM head (cls.predictions weights); "
                             "use the embedding objective for sentence encoders without one")
        super().__init__(student, teacher)
        self.temperature, self.weights = temperature, tuple(weights)

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """{"soft", "mlm": sums over masked tokens; "cosine": a sum over real tokens}, each weighted."""
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        chosen, real = batch["labels"] != IGNORE_INDEX, mask.bool()
        with torch.no_grad():
            theirs = self.teacher(ids, mask, types).last_hidden_state
            target = self.teacher.mlm_head(theirs[chosen]).float()
        mine = self.student(ids, mask, types).last_hidden_state
        logits = self.student.mlm_head(mine[chosen]).float()
        soft = soft_target_loss(logits, target, self.temperature)
        mlm = F.cross_entropy(logits, batch["labels"][chosen], reduction="sum")
        cosine = (1 - F.cosine_similarity(mine[real].float(), theirs[real].float(), dim=-1)).sum()
        w_soft, w_mlm, w_cosine = self.weights
        return {"soft": w_soft * soft, "mlm": w_mlm * mlm, "cosine": w_cosine * cosine}


class WithTokenCounts:
    """Masked pretraining batches with the item counts of the triple loss: masked tokens for the soft
    and MLM parts, real tokens for the cosine part."""

    def __init__(self, steps):
        self.steps = steps

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        batches = self.steps.batches(step, rank, world)
        for b in batches:
            chosen = b["counts"]["mlm"]
            b["counts"] = {"soft": chosen, "mlm": chosen, "cosine": int(b["attention_mask"].sum())}
        return batches


class WithUnlabelled:
    """Task distillation's step data: each step the task's labelled batch and a batch of unlabelled
    texts (their own epochs), each text one item of the loss."""

    def __init__(self, labelled: TaskSteps, unlabelled: TaskSteps):
        self.labelled, self.unlabelled = labelled, unlabelled

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        extra = self.unlabelled.batches(step, rank, world)
        for b in extra:
            b["counts"] = {"loss": len(b["input_ids"])}
        return self.labelled.batches(step, rank, world) + extra


class TextSteps:
    """The loop's step data: batches of encoded texts, a fresh permutation each epoch."""

    def __init__(self, encoded: Encoded, batch_size: int, pad_id: int, hidden_size: int, seed: int):
        self.encoded, self.pad_id, self.hidden_size = encoded, pad_id, hidden_size
        self.sampler = EpochSampler(len(encoded), batch_size, seed)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.encoded) // self.sampler.batch_size

    def batches(self, step: int, rank: int, world: int) -> list[dict]:
        rows = np.sort(self.sampler.indices(step))
        mine = np.array_split(rows, world)[rank]
        batch = self.encoded.tensors(mine, self.pad_id)
        batch["counts"] = {"embedding": len(mine) * self.hidden_size}  # a mean over vectors and dimensions
        return [batch]


def unlabelled_texts(corpus: Sequence[str], errors: str = "strict") -> tuple[list[str], dict[str, int]]:
    """Every non-empty line of the corpus files, each distinct text once (first occurrence kept),
    and the count of lines left out: {"empty_lines": ..., "repeated_lines": ...}."""
    files = [f for path in corpus for f in text_files(path)]
    lines = [t.strip() for t in read_texts(files, errors)]
    texts = list(dict.fromkeys(t for t in lines if t))
    if not texts:
        raise ValueError(f"{', '.join(map(str, corpus))}: no text to distil on")
    empty = sum(not t for t in lines)
    return texts, {"empty_lines": empty, "repeated_lines": len(lines) - empty - len(texts)}


def distill(config: DistillConfig, train: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Build the student, train it, save it in `config.out` (Hugging Face layout with the teacher's
    tokenizer; for "task", a fine-tuned model directory and its dev metrics); returns that folder."""
    distributed.init()
    with run_folder(config.out, {"distill": asdict(config), "train": asdict(train)}, resume=resume,
                    overwrite=overwrite) as out:
        run = {"embedding": _distill_embedding, "task": _distill_task, "mlm": _distill_mlm}[config.objective]
        return run(config, train, out, resume)


def _distill_mlm(config: DistillConfig, train: TrainConfig, out: Path, resume: bool) -> Path:
    teacher = load_pretrained(config.teacher).to(distributed.device())
    tokenizer = Tokenizer.from_pretrained(config.teacher)
    settings = PretrainConfig(recipe="roberta", corpus=tuple(config.corpus), tokenizer=config.teacher,
                              max_length=config.max_length, batch_size=config.batch_size,
                              encoding_errors=config.encoding_errors, cache=config.cache, out=str(out))
    data, report = training_data(settings, tokenizer, train.seed)
    train = _scheduled(train, config, len(data.source.blocks) // config.batch_size)
    torch.manual_seed(train.seed)
    student = student_from_teacher(teacher, config.layers)
    _report(teacher, config, train, out, report)
    distiller = MLMDistiller(student, teacher, config.temperature, config.loss_weights)
    fit(distiller, WithTokenCounts(data), train, out, resume=resume)
    return _save_student(distiller, lambda: add_pretraining_heads(Encoder(student.config), mlm=True), tokenizer, out)


def _distill_task(config: DistillConfig, train: TrainConfig, out: Path, resume: bool) -> Path:
    teacher = load_task_model(config.teacher).to(distributed.device())
    tokenizer = Tokenizer.from_pretrained(config.teacher)
    settings = spec_config(teacher.spec, model=config.teacher, train=config.train, dev=config.dev, out=str(out),
                           epochs=config.epochs, batch_size=config.batch_size)
    data = task_data(settings, tokenizer, train.seed)
    train = _scheduled(train, config, data.steps.grouped.steps_per_epoch).derive(eps=FINETUNE_EPS)
    student = TaskModel(student_from_teacher(teacher.encoder, config.layers), teacher.spec)
    report = {"train_examples": len(data.train_examples), "rows": len(data.features)}
    steps = data.steps
    if config.corpus:
        if teacher.spec.task != "classify":
            raise ValueError(f"unlabelled text (--corpus) serves tasks on one text (classify); the teacher's task "
                             f"is {teacher.spec.task}")
        texts, skipped = unlabelled_texts(config.corpus, config.encoding_errors)
        features = encode_examples([TextExample(t) for t in texts], tokenizer, teacher.spec)
        batches = GroupedBatches(features.lengths, config.batch_size, train.seed + 1, pool=1,
                                 min_batch=distributed.world_size())
        steps = WithUnlabelled(steps, TaskSteps(features, teacher.spec, tokenizer.pad_id, batches))
        report.update(unlabelled_texts=len(texts), unlabelled_rows=len(features), **skipped)
    _report(teacher.encoder, config, train, out, report)
    student.head.load_state_dict(teacher.head.state_dict())
    freeze(student, trainable_layers=-1)  # as fine-tuning: the pooler and pretraining heads stay as they are
    distiller = TaskDistiller(student, teacher, config.temperature, config.soft_weight)
    fit(distiller, steps, train, out, resume=resume)
    final = gathered(distiller, lambda: TaskModel(Encoder(student.encoder.config), student.spec), "student.")
    if final is not None:
        result = task_metrics(final.spec, data.dev_examples, predict_examples(
            final, tokenizer, data.dev_examples, 64, train.precision, data.dev_features)) if data.dev_examples else {}
        save_task_model(final, tokenizer, out)
        write_text(out / "dev_metrics.json", json.dumps(result, indent=2))
    return out


def _scheduled(train: TrainConfig, config: DistillConfig, steps_per_epoch: int) -> TrainConfig:
    """`train` with its steps from distill.epochs and its warm-up from distill.warmup_ratio, where
    train.max_steps and train.warmup_steps are not given."""
    steps = max(1, round(config.epochs * steps_per_epoch))
    return replace(train, max_steps=train.max_steps or steps,
                   warmup_steps=train.warmup_steps if train.warmup_steps is not None
                   else round(config.warmup_ratio * steps))


def _report(teacher: Encoder, config: DistillConfig, train: TrainConfig, out: Path, data: dict) -> None:
    """Print what the run distils (layers, data, steps) and write out/distill_config.json (rank 0)."""
    if distributed.rank() != 0:
        return
    keep = student_layers(len(teacher.layers), config.layers)
    print(json.dumps({"teacher_layers": len(teacher.layers), "student_layers": keep, **data,
                      "steps": train.max_steps}), file=sys.stderr)
    write_text(out / "distill_config.json", json.dumps({"distill": asdict(config), "train": asdict(train)}, indent=2))


def _distill_embedding(config: DistillConfig, train: TrainConfig, out: Path, resume: bool) -> Path:
    teacher = load_pretrained(config.teacher).to(distributed.device())
    tokenizer = Tokenizer.from_pretrained(config.teacher)
    texts, skipped = unlabelled_texts(config.corpus, config.encoding_errors)
    encoded = tokenizer.encode(texts, max_length=config.max_length, overflow="truncate")
    data = TextSteps(encoded, config.batch_size, tokenizer.pad_id, teacher.config.hidden_size, train.seed)
    train = _scheduled(train, config, data.steps_per_epoch)
    torch.manual_seed(train.seed)
    student = student_from_teacher(teacher, config.layers)
    _report(teacher, config, train, out, {"texts": len(texts), **skipped, "truncated": encoded.num_truncated})
    distiller = EmbeddingDistiller(student, teacher, config.pooling)
    fit(distiller, data, train, out, resume=resume)
    return _save_student(distiller, lambda: Encoder(student.config), tokenizer, out)


def _save_student(distiller: Distiller, empty, tokenizer: Tokenizer, out: Path) -> Path:
    """Rank 0 saves the trained student encoder (`empty()` of its shape, loaded) with the teacher's tokenizer."""
    final = gathered(distiller, empty, "student.")  # a collective under torch.distributed
    if final is not None:
        save_pretrained(final, out)
        tokenizer.save(out)
    return out
