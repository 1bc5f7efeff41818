"""Pretraining objectives -> loss sums for the loop: MLM, + NSP (BERT), + SBO (SpanBERT), the
next-token LM of a causal encoder (ARLM), ELECTRA's replaced-token detection (`electra.Electra`) or
XLNet's permutation LM (`plm.PermutationLM`).

`Pretrainer` holds the encoder (with its MLM and NSP heads) and the span boundary head, and turns a
masked batch into loss sums. Only the chosen positions reach the vocabulary projection. A causal
encoder's LM head is the MLM head's layout (`BertLMHeadModel` has the same `cls.predictions`); its
loss is named "lm".
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import precision
from ..config import LOOP_DEFAULTS, PretrainConfig, TrainConfig, preset
from ..convert import load_pretrained, save_pretrained
from ..data.batches import BlockRows, EpochSampler, LanguageSampler, MaskedSteps, MaskingSpec, PairRows
from ..data.corpus import Corpus, build_corpus
from ..data.instances import full_sentence_stream, language_probabilities, pack_full_sentences, sentence_pairs
from ..data.masking import BERT_SPLIT, ELECTRA_SPLIT
from ..files import write_text
from ..heads import IGNORE_INDEX, SpanBoundaryHead, add_pretraining_heads, vocabulary_cross_entropy
from ..metrics import roc_auc
from ..model import Encoder
from ..textfiles import read_texts, text_files
from ..tokenizer import Tokenizer
from . import distributed
from .checkpoint import gathered
from .electra import Electra, generator_config, generator_lr_scale, rtd_counts, rtd_metrics
from .plm import PermutationLM
from .loop import fit, to_device
from .runs import run_folder


class Pretrainer(nn.Module):
    def __init__(self, encoder: Encoder, sbo: bool = False):
        super().__init__()
        if encoder.mlm_head is None:
            raise ValueError("the encoder has no MLM head; call heads.add_pretraining_heads first")
        self.encoder = encoder
        self.sbo = SpanBoundaryHead(encoder.config) if sbo else None

    def scored(self, batch: dict) -> dict[str, tuple[Tensor, Tensor]]:
        """Per objective, what is scored and its targets: "mlm" and "sbo" give the (M, H) vectors that
        the tied decoder projects onto the vocabulary (at the chosen positions only), "nsp" its
        (B, 2) logits; each with its (M,) or (B,) labels."""
        hidden = self.encoder(batch["input_ids"], batch.get("attention_mask"),
                              batch.get("token_type_ids")).last_hidden_state  # (B, T, H)
        labels = batch["labels"]
        chosen = labels != IGNORE_INDEX
        out = {self.objective: (self.encoder.mlm_head.transform(hidden[chosen]), labels[chosen])}  # (M, H): chosen only
        if self.encoder.nsp_head is not None and "next_sentence_label" in batch:
            out["nsp"] = (self.encoder.nsp_head(self.encoder.pooler(hidden)), batch["next_sentence_label"])
        if self.sbo is not None and "span_starts" in batch:  # held-out batches use token masking
            out["sbo"] = (span_boundary_vectors(self, hidden, labels, batch["span_starts"], batch["span_ends"]),
                          labels[chosen])
        return out

    def blank(self) -> "Pretrainer":
        """A new Pretrainer of the same shapes (to load a trained state into)."""
        heads = {name: True for name in self.encoder.pretraining_heads()}
        return Pretrainer(add_pretraining_heads(Encoder(self.encoder.config), **heads), sbo=self.sbo is not None)

    def saved(self) -> dict[str, Encoder]:
        """{folder in the run's out/: encoder} of what the run saves."""
        return {"": self.encoder}

    @property
    def objective(self) -> str:
        """The vocabulary loss: "lm" (next token) for a causal encoder, else "mlm"."""
        return "lm" if self.encoder.config.causal else "mlm"

    def outputs(self, batch: dict) -> dict[str, Tensor]:
        """Logits and their targets: "mlm" or "lm" (M, V) at the chosen positions, "nsp" (B, 2), "sbo" (M, V)."""
        decoder = self.encoder.mlm_head.decoder
        out = {}
        for name, (scores, labels) in self.scored(batch).items():
            out[name] = decoder(scores) if name in VOCABULARY_OBJECTIVES else scores
            out[f"{name}_labels"] = labels
        return out

    def forward(self, batch: dict) -> dict[str, Tensor]:
        """Loss sums: "mlm" over chosen tokens, "nsp" over pairs, "sbo" over span tokens. The
        vocabulary losses never materialise their (M, V) logits (`heads.vocabulary_cross_entropy`)."""
        decoder = self.encoder.mlm_head.decoder
        return {name: vocabulary_cross_entropy(scores, decoder.weight, decoder.bias, labels)
                if name in VOCABULARY_OBJECTIVES else F.cross_entropy(scores.float(), labels, reduction="sum")
                for name, (scores, labels) in self.scored(batch).items()}


VOCABULARY_OBJECTIVES = ("mlm", "lm", "sbo")


def span_boundary_vectors(pretrainer: Pretrainer, hidden: Tensor, labels: Tensor, starts: Tensor,
                          ends: Tensor) -> Tensor:
    """(M, H) vectors of the masked span tokens (in row-major order, as `labels != IGNORE_INDEX`
    selects them), each from its span's outside boundaries and its offset in the span; the shared
    output embedding (the MLM decoder) projects them onto the vocabulary."""
    rows, cols = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
    s, e = starts[rows, cols], ends[rows, cols]
    T = hidden.shape[1]
    left = hidden[rows, (s - 1).clamp(min=0)]  # (M, H); a span never starts at [CLS], so s >= 1
    right = hidden[rows, (e + 1).clamp(max=T - 1)]
    return pretrainer.sbo(left, right, cols - s)


def masking_for(tokenizer: Tokenizer, kind: str, rate: float, rtd: bool = False, partial: int = 6) -> MaskingSpec:
    """The masking of a recipe; `rtd`: ELECTRA's (85% [MASK], 15% kept, every real token judged);
    `partial`: a permutation LM's K."""
    continuation = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    continuation[[i for t, i in tokenizer.vocab().items() if t.startswith("##")]] = True
    special = torch.tensor(sorted(tokenizer.special_ids))
    random_ids = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids])
    return MaskingSpec(kind=kind, rate=rate, mask_id=tokenizer.mask_id, random_ids=random_ids,
                       special_ids=special, continuation=continuation, pad_id=tokenizer.pad_id,
                       sep_id=tokenizer.role_id("sep"), split=ELECTRA_SPLIT if rtd else BERT_SPLIT, rtd=rtd,
                       partial=partial)


def _tokenizer(config: PretrainConfig, out: Path, resume: bool) -> Tokenizer:
    """The given tokenizer (or the one of the model continued from); on --resume the one the run
    trained; else rank 0 trains one on the corpus and saves it in `out`, and the other ranks load it."""
    if config.tokenizer or config.init:
        return Tokenizer.from_pretrained(config.tokenizer or config.init)
    if resume and (out / "tokenizer.json").exists():
        return Tokenizer.from_pretrained(out)
    if distributed.rank() == 0:
        files = [f for paths in config.languages.values() for p in paths for f in text_files(p)]
        Tokenizer.train(read_texts(files, config.encoding_errors), vocab_size=config.vocab_size).save(out)
    distributed.barrier()
    return Tokenizer.from_pretrained(out)


def _corpus(paths: list[str], tokenizer: Tokenizer, config: PretrainConfig) -> Corpus:
    """Rank 0 tokenizes (once, cached) and writes the packed stream; the other ranks wait, then open."""
    build = lambda: build_corpus(paths, tokenizer, config.cache, documents=config.documents,  # noqa: E731
                                 errors=config.encoding_errors, progress=distributed.rank() == 0)
    if distributed.rank() == 0:
        full_sentence_stream(build(), tokenizer.role_id("sep"))
    distributed.barrier()
    return build()


def training_data(config: PretrainConfig, tokenizer: Tokenizer, seed: int) -> tuple[MaskedSteps, dict]:
    """The recipe's step data, and what to report about it."""
    recipe = config.objective
    kind = "whole_word" if config.whole_word and recipe.masking == "token" else recipe.masking
    masking = masking_for(tokenizer, kind, config.mask_rate, rtd=recipe.rtd, partial=config.partial)
    cls_id, sep_id = tokenizer.role_id("cls"), tokenizer.role_id("sep")
    if recipe.instances == "pairs":
        if len(config.languages) > 1:
            raise ValueError(f"the {config.recipe} recipe takes one corpus; use roberta or spanbert for "
                             "language sampling")
        corpus = _corpus(next(iter(config.languages.values())), tokenizer, config)
        if recipe.nsp and corpus.num_documents < 2:
            raise ValueError(f"next-sentence prediction needs at least 2 documents for its random B "
                             f"segments; the corpus has {corpus.num_documents}: give several files, or "
                             "--pretrain.documents=blank_line to make each paragraph block a document")
        if distributed.rank() == 0:  # built once, beside the corpus shards; the other ranks read them
            sentence_pairs(corpus, cls_id, sep_id, config.max_length, seed=seed)
        distributed.barrier()
        pairs = sentence_pairs(corpus, cls_id, sep_id, config.max_length, seed=seed)
        report = {"pairs": len(pairs), "random_next": float(pairs.is_random_next.mean()),
                  "truncated_pairs": pairs.truncated, **{k: v for k, v in corpus.stats.items() if k != "files"}}
        sampler = EpochSampler(len(pairs), config.batch_size, seed)
        rows = PairRows(pairs, tokenizer.pad_id, nsp=recipe.nsp)
        return MaskedSteps(rows, sampler, masking, config.micro_batches, seed), report
    corpora = {lang: _corpus(paths, tokenizer, config) for lang, paths in config.languages.items()}
    blocks = pack_full_sentences(list(corpora.values()), cls_id, sep_id, config.max_length)
    if len(corpora) == 1:
        sampler = EpochSampler(len(blocks), config.batch_size, seed)
        return MaskedSteps(BlockRows(blocks), sampler, masking, config.micro_batches, seed), {"blocks": len(blocks)}
    sizes = dict(zip(corpora, np.diff(blocks.offsets).tolist()))
    q = language_probabilities(sizes, config.alpha)
    sampler = LanguageSampler(blocks.offsets, np.array([q[lang] for lang in corpora]), config.batch_size, seed)
    report = {"languages": {lang: {"blocks": n, "p": n / len(blocks), "q": q[lang]} for lang, n in sizes.items()}}
    return MaskedSteps(BlockRows(blocks), sampler, masking, config.micro_batches, seed), report


def held_out_batches(config: PretrainConfig, tokenizer: Tokenizer) -> list[dict]:
    """Fixed held-out batches of the eval corpus (blank-line separated documents), masked once with
    a fixed seed: sentence pairs for bert and mlm, packed blocks otherwise (token masking for
    spanbert too, so that held-out MLM figures compare across the MLM recipes; ELECTRA's are its
    generator's, on its own masking)."""
    if not config.eval_corpus:
        return []
    held = replace(config, corpus=(config.eval_corpus,), batch_size=min(config.batch_size, 32), micro_batches=1,
                   recipe="roberta" if config.recipe == "spanbert" else config.recipe, documents="blank_line")
    data, _ = training_data(held, tokenizer, seed=12345)
    steps = max(1, config.eval_blocks // held.batch_size)
    return [b for step in range(steps) for b in data.batches(step, 0, 1)]


@torch.no_grad()
def evaluate(pretrainer: nn.Module, batches: list[dict], dtype: torch.dtype) -> dict[str, float]:
    """Held-out MLM (or a causal encoder's next-token LM) loss and accuracy, NSP accuracy for pairs,
    and for ELECTRA the discriminator's: loss, accuracy, the all-original baseline's accuracy, the
    share of replaced tokens found and the ROC AUC of its logits (how well it ranks replaced tokens
    above original ones, before any is called replaced); the batches fix the generator's draws, so
    evaluations compare."""
    device = next(pretrainer.parameters()).device
    name = pretrainer.objective
    counts: Counter = Counter()  # summed over the batches
    detections: list[tuple[Tensor, Tensor]] = []  # ELECTRA: (logits, targets) per batch, for the AUC
    for batch in batches:
        with precision.autocast(dtype, device):
            out = pretrainer.outputs(to_device(batch, device))
        scores, labels = out[name].float(), out[f"{name}_labels"]
        parts = {"loss": float(F.cross_entropy(scores, labels, reduction="sum")),
                 "correct": int((scores.argmax(-1) == labels).sum()), "n": len(labels)}
        if "nsp" in out:
            parts.update(nsp_correct=int((out["nsp"].argmax(-1) == out["nsp_labels"]).sum()),
                         nsp_n=len(out["nsp_labels"]))
        if "rtd" in out:
            parts.update(rtd_counts(out["rtd"], out["rtd_labels"]))
            detections.append((out["rtd"].float(), out["rtd_labels"]))
        counts.update(parts)
    n = max(1, counts["n"])
    result = {f"{name}_loss": counts["loss"] / n, f"{name}_accuracy": counts["correct"] / n}
    if "nsp_n" in counts:
        result["nsp_accuracy"] = counts["nsp_correct"] / counts["nsp_n"]
    if detections:
        logits, targets = (torch.cat(column).cpu().numpy() for column in zip(*detections))
        result.update(rtd_metrics(counts))
        if 0 < targets.sum() < len(targets):  # both classes: the AUC is defined
            result["rtd_auc"] = roc_auc(targets, logits)
    return result


def report_sampling(report: dict, sampler: LanguageSampler, steps: int, path: Path) -> None:
    """Write per language: corpus share p, sampling probability q, and the share of rows the run
    actually drew (over `steps` steps), and print it as a table."""
    drawn = np.concatenate([sampler.indices(s) for s in range(steps)])
    language = np.searchsorted(sampler.offsets, drawn, side="right") - 1
    counts = np.bincount(language, minlength=len(sampler.probabilities))
    table = {lang: {**info, "drawn": int(c), "drawn_share": float(c / len(drawn))}
             for (lang, info), c in zip(report["languages"].items(), counts)}
    write_text(path, json.dumps(table, indent=2))
    print("language  blocks      p      q  drawn share", file=sys.stderr)
    for lang, row in table.items():
        print(f"{lang:9} {row['blocks']:6d} {row['p']:6.3f} {row['q']:6.3f} {row['drawn_share']:12.3f}", file=sys.stderr)


def pretrain(config: PretrainConfig, train: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """setup -> fit -> save: returns `config.out`, a Hugging Face-layout model directory with its
    MLM (and NSP) heads, its tokenizer, log.jsonl, loss.png and checkpoints/. The folder is claimed
    for this run first (`runs.run_folder`: `resume` continues the run in it, `overwrite` replaces
    another run's)."""
    distributed.init()
    train = train.derive(**LOOP_DEFAULTS)
    for name, paths in (("corpus", [p for ps in config.languages.values() for p in ps]),
                        ("eval_corpus", [config.eval_corpus] if config.eval_corpus else []),
                        ("tokenizer", [config.tokenizer] if config.tokenizer else []),
                        ("init", [config.init] if config.init else [])):
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such file or folder (pretrain.{name})")
    with run_folder(config.out, {"pretrain": asdict(config), "train": asdict(train)}, resume=resume,
                    overwrite=overwrite) as out:
        return _pretrain(config, train, out, resume)


def _pretrain(config: PretrainConfig, train: TrainConfig, out: Path, resume: bool) -> Path:
    tokenizer = _tokenizer(config, out, resume)
    data, report = training_data(config, tokenizer, train.seed)
    held_out = held_out_batches(config, tokenizer)
    torch.manual_seed(train.seed)
    model = _pretraining_model(config, tokenizer)
    if distributed.rank() == 0:
        sizes = {f"{folder}_parameters".lstrip("_"): e.num_parameters() for folder, e in model.saved().items()}
        print(json.dumps({"recipe": config.recipe, **sizes, **report}, indent=1), file=sys.stderr)
        settings = {"pretrain": asdict(config), "train": asdict(train), "data": report}
        write_text(out / "pretrain_config.json", json.dumps(settings, indent=2))
    dtype = precision.resolve(train.precision, distributed.device())
    records = fit(model, data, train, out, resume=resume,
                  evaluate=(lambda m: evaluate(m, held_out, dtype)) if held_out else None,
                  lr_scale=generator_lr_scale(config.generator_lr_scale) if config.objective.rtd else None)
    if distributed.rank() == 0 and "languages" in report:
        report_sampling(report, data.sampler, 1 + max(r["step"] for r in records), out / "languages.json")
    final = gathered(model, model.blank)  # a collective under torch.distributed
    if distributed.rank() == 0:
        for folder, encoder in final.saved().items():  # the encoder in out/; ELECTRA's generator in out/generator
            save_pretrained(encoder, out / folder)
            tokenizer.save(out / folder)
    return out


def _pretraining_model(config: PretrainConfig, tokenizer: Tokenizer) -> Pretrainer | Electra | PermutationLM:
    """The recipe's module around the encoder to train: a `Pretrainer`, a `PermutationLM`, or for
    ELECTRA an `Electra` with its generator (the one saved beside init, in init/generator, or a new one)."""
    recipe = config.objective
    encoder = _initial_encoder(config, tokenizer)
    if recipe.masking == "permutation":
        return PermutationLM(encoder)
    if not recipe.rtd:
        return Pretrainer(encoder, sbo=recipe.sbo)
    saved = Path(config.init or "") / "generator"
    generator = (load_pretrained(saved) if config.init and (saved / "config.json").exists()
                 else Encoder(generator_config(encoder.config, config.generator_size)))
    return Electra(encoder, generator, config.rtd_weight, config.sample_temperature)


def _initial_encoder(config: PretrainConfig, tokenizer: Tokenizer) -> Encoder:
    """A new encoder of `config.preset`, or the pretrained one in `config.init` with its weights as
    saved; either way with the recipe's heads (MLM, + NSP; ELECTRA: RTD), new ones where it has none."""
    nsp, causal, rtd = config.objective.nsp, config.objective.causal, config.objective.rtd
    heads = dict(mlm=not rtd, nsp=nsp, rtd=rtd)
    if not config.init:
        # a causal LM's windows (generation, perplexity) reach every position: only the trained ones exist
        positions = config.max_length if causal else max(512, config.max_length)
        model_config = preset(config.preset, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
                              max_position_embeddings=positions, pooler=nsp, causal=causal,
                              family="electra" if rtd else "bert")
        return add_pretraining_heads(Encoder(model_config), **heads)
    encoder = load_pretrained(config.init).set_causal(causal)
    if rtd and encoder.config.family != "electra":
        raise ValueError(f"the electra recipe continues an ELECTRA discriminator; {config.init} is a "
                         f"{encoder.config.family} model")
    held = " + ".join(encoder.pretraining_heads())
    if ("mlm" if rtd else "rtd") in encoder.pretraining_heads():
        raise ValueError(f"{config.init} holds the heads {held}: the electra recipe continues a discriminator "
                         "(ElectraForPreTraining; its generator from init/generator), the other recipes a model "
                         "without a replaced-token-detection head")
    check_vocabulary(encoder, config.init, tokenizer, config.tokenizer)
    if config.max_length > encoder.config.max_length:
        raise ValueError(f"pretrain.max_length {config.max_length} is longer than the "
                         f"{encoder.config.max_length} positions of {config.init}")
    if not nsp:  # an NSP head (and the pooler under it) the recipe does not train: kept as it is, untouched
        for module in (encoder.pooler, encoder.nsp_head):
            if module is not None:
                module.requires_grad_(False)
    return add_pretraining_heads(encoder, **{name: wanted and getattr(encoder, f"{name}_head") is None
                                             for name, wanted in heads.items()})


def check_vocabulary(encoder: Encoder, model_dir: str, tokenizer: Tokenizer, tokenizer_dir: str | None) -> None:
    """Refuse a tokenizer (from `tokenizer_dir`) that disagrees with the vocabulary the encoder (from
    `model_dir`) was trained with: its own tokenizer's, or at least its embedding matrix's size."""
    vocab_size = encoder.config.vocab_size
    if tokenizer.vocab_size != vocab_size:
        raise ValueError(f"the tokenizer {tokenizer_dir or model_dir} has {tokenizer.vocab_size} tokens but the "
                         f"model {model_dir} was trained with {vocab_size}")
    if tokenizer_dir is None:
        return
    try:
        own = Tokenizer.from_pretrained(model_dir).vocab()
    except FileNotFoundError:  # a model directory without its tokenizer: the size is all there is to check
        return
    differ = sorted((i, t) for t, i in tokenizer.vocab().items() if own.get(t) != i)
    if differ:
        i, token = differ[0]
        raise ValueError(f"the tokenizer {tokenizer_dir} disagrees with the vocabulary of {model_dir}: "
                         f"{len(differ)} tokens differ, e.g. id {i} is {token!r} in the tokenizer but "
                         f"{next((t for t, j in own.items() if j == i), None)!r} in the model's")
