"""The `bertkit` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import Tokenizer, embed, load_pretrained
from .allocator import reuse_freed_memory
from .analysis.geometry import anisotropy, layer_vectors, plot_geometry, rogue_dimensions
from .analysis.lexical import nearest_sense_folds, plot_senses, read_senseval
from .analysis.sts import read_sts, sts_correlations
from .analysis.wic import (fit_threshold, plot_wic, read_wic, static_target_vectors, target_vectors, threshold_accuracy,
                          write_pair_file)
from .analysis.wsd import (SenseVectors, StaticSenseVectors, disambiguate, first_sense, instance_vectors,
                           read_instances, read_key, score, score_by_pos, sense_counts, static_instance_vectors,
                           wordnet, write_key)
from .embed import embed_file
from .bertscore import bertscore, compute_baseline, default_layer, load_baseline, save_baseline
from .config import (PRESETS, DistillConfig, FinetuneConfig, MultitaskConfig, PretrainConfig, TrainConfig, load_sections,
                     read_recipe)
from .data.examples import LabelSet, TextExample, unseen_labels
from .explain import (ATTRIBUTIONS, attention_view, attention_vs_attribution, plot_attention_tests,
                      summarize_attention_tests, word_importance)
from .explain_page import coloured_words, page
from .files import atomic_write, write_text
from .fill_mask import fill_mask
from .generate import Sampling, generate
from .metrics.ranking import evaluate_run
from .perplexity import load_causal_lm, text_perplexity, window_settings
from .postprocess import METHODS as POSTPROCESS_METHODS, fit_postprocess
from .pseudo_perplexity import corpus_pseudo_perplexity, pseudo_log_likelihoods
from .predict import predict_examples, prediction_record, read_inputs, task_metrics
from .serve import ServeConfig, load_service, serve
from .static import StaticVectors, is_static, train_static
from .retrieval import CRANFIELD_GRADES, bm25_run, dense_run, fuse, read_collection, read_qrels, read_run, write_run
from .tasks import TASKS, read_examples
from .tasks.model import load_task_model
from .textfiles import read_lines, read_texts, text_files
from .train import distributed
from .train.distill import distill
from .train.finetune import finetune
from .train.loop import NonFiniteLossError
from .train.multitask import multitask
from .train.pretrain import pretrain

EPILOG = """examples:
  bertkit info --model MODEL_DIR
  bertkit similarity --model MODEL_DIR "A man plays a guitar." "Someone is playing music." "A cat sleeps."
  bertkit embed --model MODEL_DIR --input sentences.txt --output vectors.npy --normalize
  bertkit tokenize --tokenizer MODEL_DIR "Tokenize this, please."
  bertkit train-tokenizer --input corpus/ --vocab-size 8000 --out my_tokenizer/
  bertkit fill-mask --model MODEL_WITH_MLM_HEAD "The capital of France is [MASK]."
  bertkit pretrain --config configs/bert.yaml --corpus ../shared/data/gutenberg_nltk --max-minutes 15 --out runs/bert-mini
  bertkit finetune tag --model MODEL_DIR --train eng.train --dev eng.testa --out runs/ner --decoder crf
  bertkit finetune classify --model MODEL_DIR --train train.tsv --dev dev.tsv --text-column sentence --out runs/sst2
  bertkit predict --model runs/ner --input sentences.txt --output entities.jsonl
  bertkit multitask --config configs/multitask/conll2003.yaml --model MODEL_DIR --out runs/ner-pos-chunk
  bertkit predict --model runs/ner-pos-chunk --head pos --input sentences.txt --output pos.jsonl
  bertkit evaluate --model runs/ner --data eng.testa
  bertkit retrieve --method hybrid --model MODEL_DIR --documents docs.tsv --queries queries.tsv --output run.txt
  bertkit evaluate-run --qrels qrels.txt --run run.txt
  bertkit bertscore-baseline --model MODEL_DIR --corpus sentences.txt --output baseline.json
  bertkit bertscore --model MODEL_DIR --candidates cands.txt --references refs.txt --idf --output scores.jsonl
  bertkit score --metric learned --model runs/stsb --candidates cands.txt --references refs.txt
  bertkit perplexity --model CAUSAL_LM_DIR_OR.gguf --input text.txt --max-length 512 --stride 256
  bertkit pseudo-perplexity --model MODEL_WITH_MLM_HEAD --input sentences.txt --variant word-l2r
  bertkit explain --model runs/sst2 "An unbelievably tedious film, though the acting is superb."
  bertkit analyze attention-vs-attribution --model runs/sst2 --data sst2/dev.tsv --out runs/sst2-attention

MODEL_DIR is a Hugging Face-layout directory (config.json + model.safetensors, with vocab.txt or
tokenizer.json), such as one bertkit saved or a BERT, RoBERTa or DistilBERT checkpoint.
"""


def _model_args(p: argparse.ArgumentParser, what: str = "model directory (config.json + weights)",
                required: bool = True) -> None:
    p.add_argument("--model", required=required, help=what)
    p.add_argument("--tokenizer", help="tokenizer directory or file (default: the model directory)")


def _precision_arg(p: argparse.ArgumentParser, int8: bool = True) -> None:
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"] + ["int8"] * int8,
                   help="numeric precision; auto = bf16 where the CPU computes it natively (default)"
                   + "; int8: dynamically quantized linear layers (CPU)" * int8)


def _inference_args(p: argparse.ArgumentParser, batch_size: int, help: str | None = None,
                    encoding: bool = True) -> None:
    """--batch-size, --dtype and (with `encoding`) --encoding-errors of a command that runs a model over inputs."""
    p.add_argument("--batch-size", type=_positive, default=batch_size, help=help)
    _precision_arg(p)
    if encoding:
        _encoding_arg(p)


def _run_args(p: argparse.ArgumentParser, out: str, budget: bool = True) -> None:
    """The flags of a training run, resumable in its --out folder; `budget`: driven by steps or minutes."""
    if budget:
        p.add_argument("--max-steps", type=int)
        p.add_argument("--max-minutes", type=float, help="stop (and save) after this much wall-clock time")
    p.add_argument("--out", help=f"output directory: {out}")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace another run's checkpoints and logs in --out")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16"])


def _positive(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _encoding_arg(p: argparse.ArgumentParser, default: str | None = "strict") -> None:
    p.add_argument("--encoding-errors", default=default, choices=["strict", "replace"],
                   help="invalid UTF-8: stop with file and line (default), or replace and report")


def _check_output(output: str | None, *inputs: str | None) -> None:
    """Refuse, before any work, an output path that is a folder or one of the inputs (None: no output asked for)."""
    if output is None:
        return
    out = Path(output)
    if out.is_dir():
        raise IsADirectoryError(f"{output}: is a folder; --output names the file to write")
    for given in inputs:
        if given and out.resolve() == Path(given).resolve():
            raise ValueError(f"{output}: --output is the input file, which writing would replace; give another path")


def _note(message: str) -> None:
    """What a command reports besides its result (progress, notes, warnings): stderr, so stdout holds the result."""
    print(message, file=sys.stderr)


def _text_lines(path: str, errors: str) -> list[str]:
    """Every line of a text file, one text each; an empty file is an error."""
    texts = [line for _, line in read_lines(path, errors)]
    if not texts:
        raise ValueError(f"{path}: the file is empty")
    return texts


def _overflow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-length", type=int, help="window in tokens (default: the model's maximum)")
    p.add_argument("--overflow", default="error", choices=["error", "truncate", "window"],
                   help="texts longer than --max-length: stop with an error (default), truncate and "
                        "count them, or split into overlapping windows")
    p.add_argument("--stride", type=int, default=64, help="tokens shared by neighbouring windows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="Bidirectional transformer encoders "
                                     "(the BERT family): tokenize, embed, inspect.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="describe a model: sizes, parameters, vocabulary, heads")
    _model_args(p)

    p = sub.add_parser("embed", help="embed each line of a text file into a .npy matrix")
    _model_args(p)
    p.add_argument("--input", required=True, help="UTF-8 text file, one text per line")
    p.add_argument("--output", required=True, help="where to write the (lines, hidden) float32 .npy")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"])
    p.add_argument("--layers", default="-1", help="hidden state(s) to pool, comma-separated, averaged "
                   "(-1 = last layer, 0 = embeddings; write negative lists with '=': --layers=-4,-3,-2,-1)")
    p.add_argument("--normalize", action="store_true", help="scale vectors to unit length")
    p.add_argument("--postprocess", help="a fitted standardization / all-but-the-top / whitening (bertkit analyze "
                   "postprocess-fit), applied before --normalize")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--chunk-lines", type=_positive, default=8192,
                   help="lines read, embedded and recorded together (what a kill can lose; memory grows with it)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into --output")
    _precision_arg(p)
    _overflow_args(p)
    _encoding_arg(p)

    p = sub.add_parser("similarity", help="cosine similarity between texts given on the command line")
    _model_args(p)
    p.add_argument("texts", nargs="+", help="two or more texts")
    _precision_arg(p)

    p = sub.add_parser("tokenize", help="show WordPiece tokens, ids and offsets (JSON lines)")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory, tokenizer.json or vocab.txt")
    p.add_argument("texts", nargs="*", help="texts (or use --input)")
    p.add_argument("--input", help="UTF-8 text file, one text per line")
    p.add_argument("--pair", help="second text: encode each text as a pair with this one")
    _overflow_args(p)
    _encoding_arg(p)

    p = sub.add_parser("train-tokenizer", help="train a WordPiece vocabulary on text files")
    p.add_argument("--input", required=True, action="append", help="text file or folder of .txt files (repeatable)")
    p.add_argument("--out", required=True, help="directory for tokenizer.json, vocab.txt, tokenizer_config.json")
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case, strip accents)")
    p.add_argument("--min-frequency", type=int, default=2)
    _encoding_arg(p)

    p = sub.add_parser("train-static", help="train static word vectors (skip-gram, gensim): the baseline of the "
                       "contextual-embedding analyses", description="Skip-gram with negative sampling on text files, "
                       "read and split into sentences as pretraining reads them, words as BERT's basic tokenizer "
                       "splits them. Writes vectors.bin (word2vec binary; --text: vectors.txt), counts.txt, static.json.")
    p.add_argument("--corpus", required=True, action="append", help="text file or folder of .txt files (repeatable)")
    p.add_argument("--out", required=True, help="folder for the vectors")
    p.add_argument("--dim", type=_positive, default=300, help="vector size")
    p.add_argument("--window", type=_positive, default=5, help="context words on each side")
    p.add_argument("--negative", type=_positive, default=5, help="negative samples per positive one")
    p.add_argument("--min-count", type=_positive, default=5, help="words seen fewer times are left out")
    p.add_argument("--epochs", type=_positive, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive, help="training threads (default: the CPU count, at most 8; 1 repeats "
                   "exactly)")
    p.add_argument("--cased", action="store_true", help="keep case and accents (default: lower-case, strip accents)")
    p.add_argument("--text", action="store_true", help="word2vec text format instead of binary")
    p.add_argument("--cache", default=".bertkit-cache", help="folder for the tokenized corpus, reused by the next run")
    _encoding_arg(p)

    p = sub.add_parser("pretrain", help="pretrain an encoder: bert (MLM+NSP), roberta, spanbert, mlm, arlm, electra, plm",
                       description="Pretrain from a YAML recipe (configs/*.yaml). Any field can be "
                       "overridden as --section.field=value, e.g. --train.lr=3e-4 --pretrain.max_length=256.")
    p.add_argument("--config", help="YAML recipe: configs/bert.yaml, roberta.yaml, spanbert.yaml, mlm.yaml, "
                   "arlm.yaml, electra.yaml or plm.yaml")
    p.add_argument("--corpus", action="append", help="text file or folder (repeatable); LANG=PATH for "
                   "multilingual sampling")
    p.add_argument("--tokenizer", help="tokenizer directory (default: train a WordPiece vocabulary on the corpus)")
    p.add_argument("--init", help="continue pretraining this model directory (domain-adaptive pretraining): its "
                   "weights, size and tokenizer; an MLM head tied to the word embeddings is added if it has none")
    p.add_argument("--preset", choices=sorted(PRESETS), help="model size (not with --init)")
    _run_args(p, "model, tokenizer, log.jsonl, loss.png, checkpoints/")
    p.add_argument("--encoding-errors", choices=["strict", "replace"],
                   help="invalid UTF-8 in the corpus: stop with file and line, or replace and report")

    p = sub.add_parser("distill", help="distil a teacher into a student with a subset of its layers (sentence vectors)",
                       description="Distil on unlabelled text (configs/distill.yaml). Any field can be overridden "
                       "as --section.field=value, e.g. --distill.layers=[0,3] --train.lr=5e-5.")
    p.add_argument("--config", help="YAML recipe with distill: and train: sections")
    p.add_argument("--teacher", help="the teacher model directory (--objective task: a fine-tuned model)")
    p.add_argument("--objective", choices=["embedding", "task", "mlm"], help="embedding (default): sentence vectors; "
                   "task: a fine-tuned model's scores on its training file; mlm: DistilBERT's triple loss on masked text "
                   "(teachers with an MLM head)")
    p.add_argument("--corpus", action="append", help="text file or folder of .txt, one text per line (repeatable)")
    p.add_argument("--train", help="--objective task: the task's training file")
    p.add_argument("--dev", help="--objective task: a labelled file scored at the end")
    p.add_argument("--layers", help="teacher layers the student keeps, 0-based, comma-separated (default: half, "
                   "spread evenly from the first to the last)")
    p.add_argument("--epochs", type=float)
    _run_args(p, "the student, its tokenizer, log.jsonl, checkpoints/")

    p = sub.add_parser("finetune", help=f"fine-tune on a task: {', '.join(TASKS)}",
                       description="Fine-tune a model on a labelled file. Options of a YAML recipe "
                       "(configs/finetune/*.yaml) can be overridden as --section.field=value, e.g. "
                       "--finetune.layer_lr_decay=0.9 --train.patience=2.")
    p.add_argument("task", choices=list(TASKS))
    p.add_argument("--config", help="YAML recipe with finetune: and train: sections")
    p.add_argument("--model", help="model directory to start from")
    p.add_argument("--train", help="training file: TSV/CSV, JSON Lines, RTE XML, CoNLL or span JSON Lines")
    p.add_argument("--dev", help="labelled file: the dev metric after every epoch, best epoch kept")
    _run_args(p, "the fine-tuned model, log.jsonl, loss.png, dev_metrics.json", budget=False)
    p.add_argument("--epochs", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--multi-label", action="store_true", help="classify --multi-label is multilabel: several labels "
                   "per text (a sigmoid each)")
    p.add_argument("--decoder", choices=["greedy", "crf"], help="tag: argmax or a linear-chain CRF")
    p.add_argument("--text-column", help="column or field of the text (tables and JSON Lines)")
    p.add_argument("--pair-column", help="column or field of the second text (pair)")
    p.add_argument("--label-column", help="column or field of the label")
    p.add_argument("--strict-spans", action="store_true",
                   help="span files: refuse character spans that do not start and end on word boundaries")
    _encoding_arg(p, default=None)  # None: not given, so a recipe's reader option stands

    p = sub.add_parser("multitask", help="fine-tune one encoder on several tasks at once (a head each)",
                       description="Multi-task fine-tuning from a YAML recipe (configs/multitask/*.yaml) that lists "
                       "the tasks, each with its files, reader options and loss weight. Any field can be overridden "
                       "as --section.field=value, e.g. --multitask.schedule=round_robin --train.lr=5e-5.")
    p.add_argument("--config", required=True, help="YAML recipe with multitask: (its tasks:) and train: sections")
    p.add_argument("--model", help="model directory to start from (default: the recipe's)")
    _run_args(p, "the encoder, heads/NAME/ per task, tasks.json", budget=False)

    p = sub.add_parser("predict", help="predict with a fine-tuned model: one JSON object per input")
    p.add_argument("--model", required=True, help="a directory written by bertkit finetune")
    p.add_argument("--head", help="the task of a multi-task model (bertkit multitask) to predict")
    p.add_argument("--input", required=True, help="a file in the training format (labels not needed), or "
                   ".txt with one text per line")
    p.add_argument("--output", required=True, help="JSON lines: labels and probabilities, or entities with "
                   "character offsets")
    p.add_argument("--input-format", default="auto", choices=["auto", "lines", "file"],
                   help="lines: one text per line; file: the training file's format; auto: lines for .txt")
    _inference_args(p, 64)

    p = sub.add_parser("evaluate", help="metrics of a fine-tuned model on a labelled file")
    p.add_argument("--model", required=True, help="a directory written by bertkit finetune")
    p.add_argument("--head", help="the task of a multi-task model (bertkit multitask) to evaluate")
    p.add_argument("--data", required=True, help="labelled file in the training format")
    p.add_argument("--entity-mode", choices=["strict", "default"],
                   help="BIO entity matching: seqeval strict IOB2 or its default (conlleval) mode (default: "
                        "the mode the model was trained with)")
    _inference_args(p, 64)

    p = sub.add_parser("retrieve", help="rank a collection's documents for each query (a TREC run): dense, "
                       "bm25 or hybrid")
    p.add_argument("--documents", required=True, help="the collection: SMART records (.I id, .W text) or id<TAB>text")
    p.add_argument("--queries", required=True, help="the queries, in the same formats")
    p.add_argument("--query-ids", default="given", choices=["given", "position"],
                   help="position: number the queries 1, 2, ... in file order (as Cranfield's qrels do)")
    p.add_argument("--method", default="dense", choices=["dense", "bm25", "hybrid"],
                   help="dense: cosine of embeddings; bm25; hybrid: reciprocal rank fusion of the two")
    _model_args(p, "encoder directory (dense and hybrid)", required=False)
    p.add_argument("--index", help="folder for the document vectors (default: OUTPUT.index); reused when it "
                   "holds the same documents")
    p.add_argument("--output", required=True, help="where to write the run (TREC format)")
    p.add_argument("--top-k", type=_positive, default=100, help="documents per query")
    _inference_args(p, 32, encoding=False)

    p = sub.add_parser("evaluate-run", help="ranking metrics of a TREC run against relevance judgments")
    p.add_argument("--qrels", required=True, help="judgments: 'query doc grade' or 'query iteration doc grade' lines")
    p.add_argument("--run", required=True, help="TREC run: 'query Q0 doc rank score tag' lines")
    p.add_argument("--grades", default="given", choices=["given", "cranfield"],
                   help="cranfield: codes 1-4 (most to least relevant) and -1 become gains 4-1 and 0")
    p.add_argument("--documents", help="the collection: documents of the run must be in it")
    p.add_argument("--k", default="5,10", help="cut-offs for P@k, recall@k, AP@k, MAP@k, nDCG@k (comma-separated)")
    p.add_argument("--relevance-threshold", type=int, default=1, help="lowest grade that counts as relevant")

    p = sub.add_parser("perplexity", help="perplexity of a causal LM over text files, by a sliding window")
    p.add_argument("--model", required=True, help="a bertkit causal LM (configs/arlm.yaml), a transformers "
                   "AutoModelForCausalLM directory or a .gguf file (converted once and cached)")
    p.add_argument("--input", required=True, nargs="+", help="text files, each scored as one text")
    p.add_argument("--max-length", type=_positive, help="window length in tokens (default: the model's)")
    p.add_argument("--stride", type=_positive, help="tokens the window moves by (default: max-length / 2)")
    p.add_argument("--max-tokens", type=_positive, help="score only each file's first N tokens")
    p.add_argument("--batch-tokens", type=_positive, default=2048,
                   help="input tokens per forward pass: windows run together up to this many (at least one)")
    p.add_argument("--cache-dir", help="where converted GGUF models are kept (default: ~/.cache/bertkit/gguf)")
    p.add_argument("--output", help="also write the figures as JSON")
    _precision_arg(p, int8=False)
    _encoding_arg(p)

    p = sub.add_parser("pseudo-perplexity", help="pseudo-perplexity of a masked LM (each token masked in turn; "
                       "not a perplexity)")
    _model_args(p)
    p.add_argument("--input", required=True, help="one sentence per line")
    p.add_argument("--variant", default="original", choices=["original", "word-l2r"],
                   help="word-l2r: also mask the rest of the token's word (Kauf & Ivanova, 2023)")
    p.add_argument("--output", help="per-line scores as JSON lines (pll in nats, tokens scored)")
    _inference_args(p, 128, "masked copies per forward pass")

    p = sub.add_parser("bertscore", help="BERTScore P / R / F1 of each candidate line against the reference line")
    _model_args(p)
    p.add_argument("--candidates", required=True, help="UTF-8 text file, one candidate per line")
    p.add_argument("--references", required=True, help="UTF-8 text file, one reference per line, as many lines")
    p.add_argument("--layer", type=int, help="hidden state to match (0 = embeddings, -1 = last); default: the "
                   "last layer for sentence-transformers models, else 3/4 of the depth (printed)")
    p.add_argument("--idf", action="store_true", help="weigh tokens by their idf among the references")
    p.add_argument("--baseline", help="rescale with this baseline (from bertkit bertscore-baseline)")
    p.add_argument("--output", help="JSON lines: line, precision, recall, f1 of each pair")
    p.add_argument("--batch-size", type=_positive, default=1024, help="texts per forward pass (at most; "
                   "fewer when long, 16,384 padded tokens at most)")
    p.add_argument("--stride", type=int, default=64,
                   help="tokens shared by the windows of texts longer than the model's positions")
    _precision_arg(p)
    _encoding_arg(p)

    p = sub.add_parser("score", help="score each candidate line against its reference line: a learned metric or "
                       "the cosine of embeddings (BERTScore: bertkit bertscore)")
    p.add_argument("--metric", required=True, choices=["learned", "cosine"],
                   help="learned: a model fine-tuned with `finetune regress` on (reference, candidate) ratings, read "
                   "as [CLS] reference [SEP] candidate [SEP]; cosine: of the encoder's mean-pooled embeddings")
    _model_args(p)
    p.add_argument("--candidates", required=True, help="UTF-8 text file, one candidate per line")
    p.add_argument("--references", required=True, help="UTF-8 text file, one reference per line, as many lines")
    p.add_argument("--output", help="JSON lines: line, score")
    _inference_args(p, 64)

    p = sub.add_parser("explain", help="which words a fine-tuned model's prediction rests on: attributions and "
                       "attention, in the terminal and as an HTML page")
    p.add_argument("--model", required=True, help="a fine-tuned classify, pair, multilabel or regress model directory")
    p.add_argument("--head", help="the task of a multi-task model (bertkit multitask) to explain")
    p.add_argument("text")
    p.add_argument("--pair", help="the second text, for a pair model")
    p.add_argument("--label", help="the label to explain (default: the predicted one)")
    p.add_argument("--method", default="integrated_gradients", choices=ATTRIBUTIONS, help="what colours the terminal")
    p.add_argument("--html", default="explanation.html", help="the page to write (default: explanation.html)")
    p.add_argument("--steps", type=_positive, default=50, help="integrated gradients' steps")

    analyze = sub.add_parser("analyze", help="analyses: attention-vs-attribution (Jain & Wallace), "
                             "postprocess-fit (standardize, all-but-the-top, whiten)").add_subparsers(
        dest="analysis", required=True, metavar="ANALYSIS")
    p = analyze.add_parser("attention-vs-attribution", help="is attention explanation? (Jain & Wallace, 2019)",
                           description="Per input of a labelled file: Kendall tau between word rankings by attention "
                           "(what the head reads, last layer and rollout) and by attribution (integrated gradients, "
                           "occlusion), and the change of the prediction when the last layer's attention is "
                           "permuted. Writes records.jsonl, summary.json, kendall-tau.png, permutation.png.")
    p.add_argument("--model", required=True, help="a fine-tuned classify or pair model directory")
    p.add_argument("--head", help="the task of a multi-task model (bertkit multitask) to analyse")
    p.add_argument("--data", required=True, help="a file the model's reader reads (e.g. SST-2 dev); labels unused")
    p.add_argument("--out", required=True, help="folder for the records, the summary and the plots")
    p.add_argument("--limit", type=_positive, help="the first N inputs only")
    p.add_argument("--permutations", type=_positive, default=20, help="random permutations per input")
    p.add_argument("--steps", type=_positive, default=50, help="integrated gradients' steps")
    p.add_argument("--seed", type=int, default=0)
    _encoding_arg(p)
    for name, what in (("anisotropy", "anisotropy, self- and intra-sentence similarity of word vectors per layer "
                                      "(Ethayarajh, 2019), with the rogue dimensions"),
                       ("dimensions", "rogue dimensions per layer: each dimension's share of the expected cosine, and "
                                      "the cosines' informativity without the top ones (Timkey & van Schijndel, 2021)")):
        p = analyze.add_parser(name, help=what)
        _model_args(p)
        p.add_argument("--input", required=True, help="UTF-8 text file, one sentence per line (e.g. WikiText-2 valid)")
        p.add_argument("--sentences", type=_positive, default=2000, help="random sentences to sample (seeded)")
        p.add_argument("--layers", help="hidden states, comma-separated (default: all, 0 = embeddings)")
        p.add_argument("--pairs", type=_positive, default=10_000, help="random word pairs from different sentences")
        p.add_argument("--top", type=_positive, default=3, help="rogue dimensions to report")
        p.add_argument("--output", required=True, help="JSON of every figure; a PNG beside it")
        p.add_argument("--seed", type=int, default=0)
        _precision_arg(p)
        _encoding_arg(p)
    p = analyze.add_parser("wsd", help="word sense disambiguation in Raganato et al.'s framework: score a method "
                           "on a *.data.xml file against its gold key")
    p.add_argument("--data", required=True, help="the framework's *.data.xml")
    p.add_argument("--gold", required=True, help="its *.gold.key.txt")
    p.add_argument("--wordnet", required=True, help="folder of the WordNet 3.0 database files (index.*, data.*, ...)")
    p.add_argument("--method", default="first-sense", choices=["first-sense", "gloss"],
                   help="first-sense: WordNet's first sense of the lemma and part of speech; gloss: the nearest "
                   "sense by cosine to its gloss embedding (needs --model)")
    _model_args(p, "the encoder of --method gloss", required=False)
    p.add_argument("--layers", default="-1", help="hidden states summed into word and sense vectors")
    p.add_argument("--prior", type=float, default=0.0, help="weight of the SemCor sense-frequency prior "
                   "(cntlist.rev) added to the cosine")
    p.add_argument("--examples", type=float, default=0.0, help="weight of the example embeddings (the synset's "
                   "lemmas where WordNet's examples of the synset use them) added to the gloss embeddings; 0: "
                   "glosses alone")
    p.add_argument("--one-sense-per-discourse", action="store_true",
                   help="one sense for every instance of a lemma and POS in a document")
    p.add_argument("--standardize", action="store_true", help="z-score the instance vectors and the gloss "
                   "embeddings first, each with its own statistics, the example embeddings with the instances' "
                   "(the anisotropy fix)")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "bertkit" / "sense-vectors"),
                   help="folder of the gloss and example embeddings kept per model and layers")
    p.add_argument("--output", help="the answers, in the key format")
    _precision_arg(p)
    p = analyze.add_parser("lexical-sample", help="lexical-sample WSD (Senseval *.pos files): k-fold accuracy of "
                           "the nearest sense centroid and of the nearest tagged example against the most frequent "
                           "sense, and a PCA plot")
    _model_args(p)
    p.add_argument("--data", required=True, nargs="+", help="NLTK Senseval files (hard.pos, interest.pos)")
    p.add_argument("--layers", default="-1", help="hidden states summed into the target word's vector")
    p.add_argument("--folds", type=_positive, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="JSON of every figure; a PCA plot per file beside it "
                   "(OUTPUT-hard.png, ...)")
    _precision_arg(p)
    p = analyze.add_parser("wic", help="Word-in-Context: cosine of the target word's two vectors against a "
                           "threshold fitted on train, dev accuracy per layer, as they are and z-scored (statistics "
                           "fitted on train)")
    _model_args(p)
    p.add_argument("--train", required=True, help="WiC train.data.txt (its gold file: train.gold.txt beside it)")
    p.add_argument("--dev", required=True, help="WiC dev.data.txt (dev.gold.txt beside it)")
    p.add_argument("--layers", help="hidden states, comma-separated (default: all, 0 = embeddings)")
    p.add_argument("--window", type=int, default=0, help="average the target word's vector with those of "
                   "the words up to this many places before and after it (0: the word alone)")
    p.add_argument("--output", required=True, help="JSON of every figure; a PNG beside it")
    p.add_argument("--pairs-out", help="also write train.tsv and dev.tsv here: the pairs with the target word "
                   "marked, for bertkit finetune pair --config configs/finetune/wic.yaml")
    _inference_args(p, 32, encoding=False)
    p = analyze.add_parser("sts", help="semantic textual similarity without training: Spearman and Pearson "
                           "correlation of sentence-vector cosines with the gold scores (STS-B)")
    _model_args(p)
    p.add_argument("--data", required=True, help="an STS-B sts-*.csv (tab-separated: ..., score, sentence 1, "
                   "sentence 2)")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"], help="an encoder's pooling")
    p.add_argument("--layers", default="-1", help="an encoder's hidden state(s) pooled, as for bertkit embed")
    p.add_argument("--weighting", default="mean", choices=["mean", "sif"], help="static vectors: averaged, or "
                   "SIF-weighted with the common component removed (Arora et al., 2017)")
    p.add_argument("--fit-on", help="static vectors, sif: an STS-B file whose sentences fit the common component "
                   "(default: the evaluated sentences, as the paper does)")
    p.add_argument("--output", help="JSON of the figures")
    _inference_args(p, 32, encoding=False)
    p = analyze.add_parser("postprocess-fit", help="fit standardization, all-but-the-top or whitening on a corpus's "
                           "sentence embeddings, for bertkit embed --postprocess")
    _model_args(p)
    p.add_argument("--input", required=True, help="UTF-8 text file, one text per line: the vectors to fit on")
    p.add_argument("--method", required=True, choices=POSTPROCESS_METHODS)
    p.add_argument("--components", type=_positive, help="all_but_the_top: directions removed (default dims / 100); "
                   "whiten: dimensions kept (default all)")
    p.add_argument("--output", required=True, help="the fitted post-processing (.safetensors)")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"])
    p.add_argument("--layers", default="-1", help="hidden state(s) pooled, as for bertkit embed")
    _inference_args(p, 32)

    p = sub.add_parser("bertscore-baseline", help="measure BERTScore baselines (random sentence pairs) for rescaling")
    _model_args(p)
    p.add_argument("--corpus", required=True, action="append", help="text file or folder of .txt files, one sentence "
                   "per line (repeatable)")
    p.add_argument("--output", required=True, help="where to write the baseline (JSON: P, R, F per layer)")
    p.add_argument("--pairs", type=_positive, default=10_000, help="random sentence pairs to average over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--idf", action="store_true", help="a baseline for scores with --idf")
    _inference_args(p, 1024, "texts per forward pass (at most; fewer when long, 16,384 padded tokens at most)")

    p = sub.add_parser("serve", help="an HTTP service with a page: /embed, /v1/embeddings, /predict, /fill-mask")
    p.add_argument("--model", required=True, help="a model directory: an encoder, or a fine-tuned model")
    p.add_argument("--head", help="the head to serve of a multi-task model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_positive, default=8080)
    p.add_argument("--max-inputs", type=_positive, default=256, help="texts per request")
    p.add_argument("--max-body-bytes", type=_positive, default=1_000_000)
    p.add_argument("--truncate", action="store_true", help="cut inputs longer than the model takes (default: refuse "
                   "them with 413) when a request does not say")
    p.add_argument("--max-batch", type=_positive, default=128, help="texts of concurrent requests run together")
    p.add_argument("--max-batch-tokens", type=_positive, default=16_384)
    p.add_argument("--wait-ms", type=float, default=ServeConfig.wait_ms,
                   help="how long a batch gathers requests once the model is free (ms)")
    p.add_argument("--workers", type=_positive, default=ServeConfig.workers,
                   help="model processes, the torch threads shared out among them")
    _precision_arg(p)

    p = sub.add_parser("fill-mask", help="predict the words behind [MASK] (models with an MLM head)")
    _model_args(p)
    p.add_argument("text", help="text with one or more [MASK] tokens")
    p.add_argument("--top-k", type=int, default=5)
    _precision_arg(p)
    p = sub.add_parser("generate", help="continue a prompt with a causal LM (a model pretrained with "
                       "configs/arlm.yaml): greedy, or sampled with --temperature, --top-k, --top-p")
    _model_args(p)
    p.add_argument("prompt", help="the text to continue")
    p.add_argument("--max-new-tokens", type=_positive, default=50)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; else sample")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most probable tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample from the nucleus of this probability mass")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the first [SEP] (in training: a document's end)")
    _precision_arg(p)
    return parser


def _load(args):
    if is_static(args.model):
        raise ValueError(f"{args.model}: static word vectors (bertkit train-static); bertkit {args.command}"
                         f"{' ' + args.analysis if args.command == 'analyze' else ''} needs an encoder here")
    return load_pretrained(args.model), Tokenizer.from_pretrained(args.tokenizer or args.model)


def cmd_info(args) -> None:
    model, tokenizer = _load(args)
    c = model.config
    heads = [n for n, h in (("MLM", model.mlm_head), ("NSP", model.nsp_head)) if h is not None]
    print(f"family        {c.family}\nlayers        {c.num_layers}\nhidden        {c.hidden_size}\n"
          f"heads         {c.num_heads} x {c.head_size}\nfeed-forward  {c.intermediate_size} ({c.hidden_act})\n"
          f"max length    {c.max_length} tokens\nvocabulary    {c.vocab_size} (tokenizer: {tokenizer.vocab_size})\n"
          f"parameters    {model.num_parameters():,} encoder, {model.num_parameters(include_heads=True):,} with heads\n"
          f"pooler        {'yes' if model.pooler is not None else 'no'}\n"
          f"pretraining heads  {', '.join(heads) or 'none'}")


def cmd_embed(args) -> None:
    _check_output(args.output, args.input)
    distributed.init()  # under torchrun: each process embeds its share of the chunks
    model, tokenizer = _load(args)
    lines, empty, embedded = embed_file(
        model.to(distributed.device()), tokenizer, args.input, args.output, resume=args.resume,
        chunk_lines=args.chunk_lines, rank=distributed.rank(), world_size=distributed.world_size(),
        barrier=distributed.barrier, errors=args.encoding_errors, pooling=args.pooling, layers=_layer_list(args.layers),
        normalize=args.normalize, batch_size=args.batch_size, precision=args.dtype, max_length=args.max_length,
        overflow=args.overflow, stride=args.stride, postprocess=args.postprocess)
    if distributed.rank() == 0:
        if empty:
            _note(f"note: {empty} empty lines embedded as empty texts, so rows match lines")
        if args.resume:
            _note(f"resumed: embedded {embedded} lines{' in this process' * (distributed.world_size() > 1)}, "
                  "the rest were done before")
        _note(f"wrote {lines} x {model.config.hidden_size} embeddings to {args.output}")


def cmd_similarity(args) -> None:
    if len(args.texts) < 2:
        raise ValueError("give at least two texts to compare")
    model, tokenizer = _load(args)
    vectors = embed(model, tokenizer, args.texts, normalize=True, precision=args.dtype, progress=False)
    sims = vectors @ vectors.T
    for i, a in enumerate(args.texts):
        for j in range(i + 1, len(args.texts)):
            print(f"{sims[i, j]:.4f}  {a!r} ~ {args.texts[j]!r}")


def cmd_tokenize(args) -> None:
    tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    texts = list(args.texts) + ([line for _, line in read_lines(args.input, args.encoding_errors)] if args.input else [])
    if not texts:
        raise ValueError("give texts on the command line or a file with --input")
    pairs = [args.pair] * len(texts) if args.pair is not None else None
    encoded = tokenizer.encode(texts, pairs, max_length=args.max_length or 512, overflow=args.overflow,
                               stride=args.stride)
    for r, row in enumerate(encoded.rows):
        print(json.dumps({"input": int(encoded.origin[r]), "tokens": row.tokens, "ids": row.ids,
                          "type_ids": row.type_ids, "offsets": row.offsets, "word_ids": row.word_ids},
                         ensure_ascii=False))


def cmd_train_tokenizer(args) -> None:
    files = [f for path in args.input for f in text_files(path)]
    tokenizer = Tokenizer.train(read_texts(files, args.encoding_errors), vocab_size=args.vocab_size, lowercase=not args.cased,
                                strip_accents=False if args.cased else None, min_frequency=args.min_frequency)
    tokenizer.save(args.out)
    _note(f"trained a vocabulary of {tokenizer.vocab_size} tokens on {len(files)} files; saved to {args.out}")


def cmd_train_static(args) -> None:
    if Path(args.out).is_file():
        raise NotADirectoryError(f"{args.out}: is a file; --out names the folder to write the vectors in")
    static = train_static(args.corpus, dim=args.dim, window=args.window, negative=args.negative,
                          min_count=args.min_count, epochs=args.epochs, seed=args.seed, workers=args.workers,
                          lowercase=not args.cased, errors=args.encoding_errors, cache_dir=args.cache)
    static.save(args.out, binary=not args.text)
    info = static.info
    _note(f"{info['vocabulary']:,} words of {info['word_types']:,} types seen at least {args.min_count} times "
          f"({info['words']:,} words in the corpus), {args.dim} dimensions, {info['train_seconds']} s; "
          f"wrote {args.out}")


def cmd_serve(args) -> None:
    config = ServeConfig(precision=args.dtype, max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs,
                         truncate=args.truncate, max_batch=args.max_batch, max_batch_tokens=args.max_batch_tokens,
                         wait_ms=args.wait_ms, workers=args.workers)
    service = load_service(args.model, args.head, config)
    _note(f"serving {args.model} ({', '.join(service.abilities)}) on http://{args.host}:{args.port}/")
    serve(service, args.host, args.port)


def cmd_fill_mask(args) -> None:
    model, tokenizer = _load(args)
    for n, candidates in enumerate(fill_mask(model, tokenizer, args.text, args.top_k, args.dtype), start=1):
        print(f"[MASK] #{n}: " + ", ".join(f"{c.token} ({c.probability:.3f})" for c in candidates))


def cmd_generate(args) -> None:
    model, tokenizer = _load(args)
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    print(generate(model, tokenizer, args.prompt, args.max_new_tokens, sampling, args.seed, not args.no_stop,
                   args.dtype))


def cmd_distill(args, overrides: list[str]) -> None:
    layers = tuple(_layer_list(args.layers)) if args.layers else None
    direct = {"distill": {"teacher": args.teacher, "corpus": tuple(args.corpus) if args.corpus else None,
                          "objective": args.objective, "train": args.train, "dev": args.dev,
                          "layers": layers, "epochs": args.epochs, "out": args.out},
              "train": {"max_steps": args.max_steps, "max_minutes": args.max_minutes, "seed": args.seed,
                        "precision": args.dtype}}
    sections = load_sections(args.config, {"distill": DistillConfig, "train": TrainConfig}, overrides, direct)
    out = distill(sections["distill"], sections["train"], resume=args.resume, overwrite=args.overwrite)
    _note(f"saved the student and its tokenizer to {out}")


def cmd_pretrain(args, overrides: list[str]) -> None:
    if args.init and args.preset:
        raise ValueError("give --init or --preset, not both: a model continued from --init keeps its size")
    direct = {"pretrain": {"corpus": tuple(args.corpus) if args.corpus else None, "tokenizer": args.tokenizer,
                           "init": args.init, "preset": args.preset, "out": args.out, "encoding_errors": args.encoding_errors},
              "train": {"max_steps": args.max_steps, "max_minutes": args.max_minutes, "seed": args.seed,
                        "precision": args.dtype}}
    sections = load_sections(args.config, {"pretrain": PretrainConfig, "train": TrainConfig}, overrides, direct)
    out = pretrain(sections["pretrain"], sections["train"], resume=args.resume, overwrite=args.overwrite)
    _note(f"saved the pretrained model, its tokenizer and log.jsonl to {out}")


def _column(value: str | None):
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


def cmd_finetune(args, overrides: list[str]) -> None:
    task = "multilabel" if args.task == "classify" and args.multi_label else args.task
    kind = "field" if args.train and args.train.endswith((".jsonl", ".jsonlines")) else "column"
    reader = {f"{name}_{kind}": _column(value) for name, value in (("text", args.text_column),
              ("pair", args.pair_column), ("label", args.label_column)) if value is not None}
    reader |= {"strict_spans": True} if args.strict_spans else {}
    reader |= {"encoding_errors": args.encoding_errors} if args.encoding_errors else {}
    direct = {"finetune": {"task": task, "model": args.model, "train": args.train, "dev": args.dev, "out": args.out,
                           "epochs": args.epochs, "batch_size": args.batch_size, "decoder": args.decoder},
              "train": {"lr": args.lr, "seed": args.seed, "precision": args.dtype}}
    classes = {"finetune": FinetuneConfig, "train": TrainConfig}
    recipe_task = (read_recipe(args.config, classes)[0].get("finetune") or {}).get("task") if args.config else None
    if recipe_task and recipe_task != task:
        raise ValueError(f"{args.config} is a {recipe_task} recipe, but the command says {task}: use "
                         f"bertkit finetune {recipe_task}")
    sections = load_sections(args.config, classes, overrides, direct)
    config = sections["finetune"]
    if reader:
        config = replace(config, reader={**config.reader, **reader})
    result = finetune(config, sections["train"], resume=args.resume, overwrite=args.overwrite)
    _note(json.dumps({k: v for k, v in result.items() if k != "per_type"}))
    _note(f"saved the fine-tuned model to {config.out}")


def _layer_list(text: str) -> list[int]:
    """--layers "-4,-3,-2,-1" -> [-4, -3, -2, -1]."""
    return [int(x) for x in text.split(",")]


def _layers_or_all(text: str | None, model) -> list[int]:
    """--layers as given, or every hidden state (0 = the embeddings)."""
    return _layer_list(text) if text else list(range(len(model.layers) + 1))


def _examples_for(model, path: str, errors: str) -> list:
    """A labelled file read as the model's training file was (its reader options)."""
    return read_examples(path, model.spec.task, {**model.spec.reader, "encoding_errors": errors})


def _task_model(path: str, head: str | None = None):
    return load_task_model(path, head), Tokenizer.from_pretrained(path)


def cmd_multitask(args, overrides: list[str]) -> None:
    direct = {"multitask": {"model": args.model, "out": args.out}, "train": {"seed": args.seed, "precision": args.dtype}}
    sections = load_sections(args.config, {"multitask": MultitaskConfig, "train": TrainConfig}, overrides, direct)
    result = multitask(sections["multitask"], sections["train"], resume=args.resume, overwrite=args.overwrite)
    _note(json.dumps({name: {k: v for k, v in r.items() if k != "per_type"} for name, r in result.items()}))
    _note(f"saved the multi-task model to {sections['multitask'].out}")


def cmd_predict(args) -> None:
    _check_output(args.output, args.input)
    model, tokenizer = _task_model(args.model, args.head)
    examples, pre_split = read_inputs(args.input, model.spec, tokenizer, args.input_format, args.encoding_errors)
    predictions = predict_examples(model, tokenizer, examples, args.batch_size, args.dtype, progress=True)
    with atomic_write(args.output) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for example, prediction in zip(examples, predictions):
            f.write(json.dumps(prediction_record(example, prediction, pre_split), ensure_ascii=False) + "\n")
    _note(f"wrote {len(predictions)} predictions to {args.output}")


def cmd_evaluate(args) -> None:
    model, tokenizer = _task_model(args.model, args.head)
    examples = _examples_for(model, args.data, args.encoding_errors)
    unseen = unseen_labels(LabelSet(model.spec.labels), examples) if model.spec.labels else []
    if unseen:
        _note(f"warning: {args.data}: labels {unseen} are not among the model's {len(model.spec.labels)}; it cannot "
              "predict them, so their recall is 0")
    predictions = predict_examples(model, tokenizer, examples, args.batch_size, args.dtype, progress=True)
    print(json.dumps(task_metrics(model.spec, examples, predictions, args.entity_mode), indent=1))


def cmd_retrieve(args) -> None:
    _check_output(args.output, args.documents, args.queries)
    if args.method != "bm25" and not args.model:
        raise ValueError(f"--method {args.method} needs --model (an encoder directory)")
    documents, queries = read_collection(args.documents), read_collection(args.queries, ids=args.query_ids)
    runs = []
    if args.method != "dense":
        runs.append(bm25_run(documents, queries, args.top_k))
    if args.method != "bm25":
        model, tokenizer = _load(args)
        runs.append(dense_run(model, tokenizer, documents, queries, args.index or f"{args.output}.index", args.top_k,
                              batch_size=args.batch_size, precision=args.dtype))
    write_run(args.output, fuse(runs, args.top_k) if len(runs) > 1 else runs[0], tag=f"bertkit-{args.method}")
    _note(f"wrote the top {args.top_k} of {len(documents)} documents for {len(queries)} queries to {args.output}")


def cmd_evaluate_run(args) -> None:
    qrels = read_qrels(args.qrels, CRANFIELD_GRADES if args.grades == "cranfield" else None)
    documents = read_collection(args.documents) if args.documents else None
    run = read_run(args.run, queries=list(qrels), documents=documents)
    if not re.fullmatch(r"\d+(,\d+)*", args.k):
        raise ValueError(f"--k {args.k!r}: expected positive whole numbers separated by commas, e.g. 5,10")
    result = evaluate_run(qrels, run, [int(k) for k in args.k.split(",")], args.relevance_threshold)
    if result["unanswered"]:
        _note(f"warning: {len(result['unanswered'])} queries with relevant documents have no results in {args.run}; "
              "each scores 0 (trec_eval -c)")
    counts = {"queries": result["queries"], "unanswered": len(result["unanswered"]), "unjudged": len(result["unjudged"])}
    print(json.dumps({**counts, **{k: round(v, 4) for k, v in result["mean"].items()}}, indent=1))


def cmd_perplexity(args) -> None:
    _check_output(args.output, *args.input)
    model = load_causal_lm(args.model, args.dtype, args.cache_dir)
    max_length, stride = window_settings(model, args.max_length, args.stride)
    files, total = {}, None
    for path in args.input:
        text = "\n".join(line for _, line in read_lines(path, args.encoding_errors))
        result = text_perplexity(model, text, max_length=max_length, stride=stride,
                                 batch_tokens=args.batch_tokens, max_tokens=args.max_tokens, name=path, progress=True)
        files[path] = result.summary()
        total = result if total is None else total + result
        _note(f"{path}: perplexity {result.perplexity:.3f} over {result.predicted} predicted tokens, "
              f"bits per byte {result.bits_per_byte}")
    report = {"model": args.model, "max_length": max_length, "stride": stride,
              "dtype": args.dtype, "files": files, "total": total.summary()}
    print(json.dumps(report["total"], indent=1))
    if args.output:
        write_text(args.output, json.dumps(report, indent=1) + "\n")


def cmd_pseudo_perplexity(args) -> None:
    _check_output(args.output, args.input)
    texts = _text_lines(args.input, args.encoding_errors)
    model, tokenizer = _load(args)
    scores = pseudo_log_likelihoods(model, tokenizer, texts, variant=args.variant, batch_size=args.batch_size,
                                    precision=args.dtype)
    if args.output:
        write_text(args.output, "".join(json.dumps({"line": n, "text": text, "pll": s.pll, "tokens": s.tokens,
                                                    "pseudo_perplexity": s.pseudo_perplexity}) + "\n"
                                        for n, (text, s) in enumerate(zip(texts, scores), start=1)))
    print(json.dumps({"metric": f"pseudo-perplexity ({args.variant})",
                      "pseudo_perplexity": corpus_pseudo_perplexity(scores), "lines": len(texts),
                      "scored_tokens": sum(s.tokens for s in scores),
                      "empty_lines": sum(1 for s in scores if not s.tokens)}, indent=1))


def _candidates_and_references(args) -> tuple[list[str], list[str]]:
    """Line n of --candidates and line n of --references, checked before any work."""
    _check_output(args.output, args.candidates, args.references)
    candidates = [line for _, line in read_lines(args.candidates, args.encoding_errors)]
    references = [line for _, line in read_lines(args.references, args.encoding_errors)]
    if len(candidates) != len(references):
        raise ValueError(f"{args.candidates} has {len(candidates)} lines but {args.references} has {len(references)}; "
                         "line n of the one is scored against line n of the other")
    if not candidates:
        raise ValueError(f"{args.candidates} and {args.references} have no lines; give one text per line")
    return candidates, references


def cmd_score(args) -> None:
    candidates, references = _candidates_and_references(args)
    if args.metric == "learned":
        model, tokenizer = _task_model(args.model)
        if model.spec.task != "regress":
            raise ValueError(f"{args.model} is a {model.spec.task} model; a learned metric is a regress model "
                             "(bertkit finetune regress on reference / candidate pairs with ratings)")
        examples = [TextExample(reference, candidate) for candidate, reference in zip(candidates, references)]
        scores = [p["score"] for p in predict_examples(model, tokenizer, examples, args.batch_size, args.dtype,
                                                       progress=True)]
    else:
        model, tokenizer = _load(args)
        vectors = [embed(model, tokenizer, texts, normalize=True, batch_size=args.batch_size, precision=args.dtype)
                   for texts in (candidates, references)]
        scores = (vectors[0] * vectors[1]).sum(1).tolist()
    if args.output:
        write_text(args.output, "".join(json.dumps({"line": n, "score": score}) + "\n"
                                        for n, score in enumerate(scores, start=1)))
    print(json.dumps({"metric": args.metric, "pairs": len(scores), "mean": float(np.mean(scores))}, indent=1))


def cmd_explain(args) -> None:
    model, tokenizer = _task_model(args.model, args.head)
    importance = word_importance(model, tokenizer, args.text, args.pair, args.label, steps=args.steps)
    view = attention_view(model, tokenizer, args.text, args.pair)
    what = f"a score of {importance.output:.3f}" if importance.label is None else \
        f"{importance.label} (probability {importance.output:.3f})"
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(f"{what}; words by {args.method.replace('_', ' ')}:")
    print(coloured_words(importance.words, importance.scores[args.method], colour))
    if importance.unscored:
        _note(f"not scored: {len(importance.unscored)} words no token stands for (cut at the model's "
              f"{model.spec.max_length} tokens, or characters the tokenizer drops): {' '.join(importance.unscored[:10])}")
    content = page(importance, view)
    write_text(args.html, content)
    _note(f"wrote {args.html} ({len(content) / 1e6:.1f} MB): every method side by side, attention per layer and "
          "head, rollout")


def cmd_analyze(args) -> None:
    {"attention-vs-attribution": _attention_vs_attribution, "postprocess-fit": _postprocess_fit,
     "anisotropy": _geometry, "dimensions": _geometry, "wsd": _wsd, "lexical-sample": _lexical_sample,
     "wic": _wic, "sts": _sts}[args.analysis](args)


def _sts(args) -> None:
    _check_output(args.output, args.data)
    first, second, gold = read_sts(args.data)
    static_only = [f for f, given in (("--weighting sif", args.weighting != "mean"), ("--fit-on", args.fit_on)) if given]
    encoder_only = [f for f, given in (("--pooling", args.pooling != "mean"), ("--layers", args.layers != "-1")) if given]
    static_model = is_static(args.model)
    if static_model and encoder_only or not static_model and static_only:
        raise ValueError(f"{', '.join(encoder_only or static_only)}: an option of "
                         f"{'encoders' if encoder_only else 'static word vectors'}, not of {args.model}")
    if static_model:
        static = StaticVectors.load(args.model)
        if args.fit_on and args.weighting != "sif":
            raise ValueError("--fit-on fits SIF's common component: it goes with --weighting sif")
        fit = list(dict.fromkeys(sum(read_sts(args.fit_on)[:2], []))) if args.fit_on else None
        vectors, counts = static.sentence_vectors(first + second, args.weighting, fit_on=fit)
        how = {"weighting": args.weighting, "fit_on": args.fit_on or "the evaluated sentences", **counts}
    else:
        model, tokenizer = _load(args)
        vectors = embed(model, tokenizer, first + second, pooling=args.pooling, layers=_layer_list(args.layers),
                        batch_size=args.batch_size, precision=args.dtype)
        how = {"pooling": args.pooling, "layers": args.layers}
    result = {"model": args.model, "data": args.data, **how, **sts_correlations(vectors[:len(first)],
                                                                                 vectors[len(first):], gold)}
    if args.output:
        write_text(args.output, json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def _wsd(args) -> None:
    _check_output(args.output, args.data, args.gold)
    if args.method == "gloss" and not args.model:
        raise ValueError("--method gloss needs --model, the encoder whose vectors it compares")
    if args.examples < 0:
        raise ValueError(f"--examples is a weight, 0 or more, not {args.examples:g}")
    if args.method == "first-sense":
        unused = [f"--{name.replace('_', '-')}" for name in ("model", "prior", "one_sense_per_discourse",
                                                            "standardize", "examples") if getattr(args, name)]
        if unused:
            raise ValueError(f"{', '.join(unused)}: options of --method gloss; --method first-sense uses none")
    instances, gold = read_instances(args.data), read_key(args.gold)
    missing = sorted({i.id for i in instances} - set(gold))
    if missing:
        raise ValueError(f"{args.gold}: no gold key for instance {missing[0]} of {args.data} ({len(missing)} missing)")
    wn = wordnet(args.wordnet)
    if args.method == "first-sense":
        answers, unknown = first_sense(wn, instances)
        counts = {"unanswered": len(unknown)}
    else:
        examples = None
        if is_static(args.model):  # the word's one vector against SIF-averaged glosses
            if args.examples:
                raise ValueError("--examples needs an encoder: a static model gives a word one vector in every example")
            static = StaticVectors.load(args.model)
            senses, vectors = StaticSenseVectors(static, wn), static_instance_vectors(static, instances)
        else:
            model, tokenizer = _load(args)
            layers = _layer_list(args.layers)
            senses = SenseVectors(model, tokenizer, wn, args.cache, layers, precision=args.dtype)
            examples = SenseVectors(model, tokenizer, wn, args.cache, layers, precision=args.dtype, source="examples")
            vectors = instance_vectors(model, tokenizer, instances, layers, args.dtype)
        prior = sense_counts(args.wordnet) if args.prior else None  # cntlist.rev, read only when weighed
        answers, counts = disambiguate(wn, instances, vectors, senses, prior, args.prior, args.one_sense_per_discourse,
                                       args.standardize, examples if args.examples else None, args.examples)
    if counts["unanswered"]:
        _note(f"note: WordNet knows no sense of the lemma of {counts['unanswered']} instances: unanswered")
    if args.output:
        write_key(args.output, answers)
    by_pos = {pos: round(r["f1"], 4) for pos, r in score_by_pos(answers, gold, instances).items()}
    result = {"method": args.method, **score(answers, gold), **counts, "f1_by_pos": by_pos}
    if counts.get("first_sense_backoff"):  # what the method answers itself, without WordNet's first sense
        own = {i: a for i, a in answers.items() if i in vectors}
        result["f1_own_answers"] = score(own, {i: gold[i] for i in own})["f1"]
    print(json.dumps(result, indent=1))


def _lexical_sample(args) -> None:
    _check_output(args.output, *args.data)
    stems = [Path(p).stem for p in args.data]
    if len(set(stems)) < len(stems):
        raise ValueError(f"--data: two files named {max(stems, key=stems.count)}: their plots would share a name")
    model, tokenizer = _load(args)
    layers, results = _layer_list(args.layers), {}
    print("file            contexts  senses  nearest sense centroid  nearest example  most frequent sense")
    for path in args.data:
        instances, senses = read_senseval(path)
        vectors = instance_vectors(model, tokenizer, instances, layers, args.dtype)
        kept = [(vectors[i.id], s) for i, s in zip(instances, senses) if i.id in vectors]
        if len(kept) < len(instances):
            _note(f"note: {path}: {len(instances) - len(kept)} targets tokenize to no subword: left out")
        if len(kept) < args.folds:
            raise ValueError(f"{path}: {len(kept)} contexts with a vector, fewer than the {args.folds} folds")
        matrix, tags = np.stack([v for v, _ in kept]), [s for _, s in kept]
        r = results[path] = {by: nearest_sense_folds(matrix, tags, args.folds, args.seed, by)
                             for by in ("centroid", "example")}
        r["no_vector"] = len(instances) - len(kept)
        plot_senses(matrix, tags, _beside(args.output, Path(path).stem),
                    f"{Path(path).stem}: {len(tags)} contexts, layers {args.layers}")
        print(f"{Path(path).name:15} {len(tags):8d}  {len(r['centroid']['senses']):6d}  "
              f"{r['centroid']['accuracy']:22.3f}  {r['example']['accuracy']:15.3f}  "
              f"{r['centroid']['most_frequent_sense']:19.3f}")
    write_text(args.output, json.dumps({"model": args.model, "layers": layers, "results": results}, indent=1))
    _note(f"{args.folds}-fold cross-validated; wrote {args.output} and a PCA plot per file beside it")


def _beside(output: str, name: str) -> Path:
    """OUTPUT.json -> OUTPUT-name.png."""
    out = Path(output)
    return out.with_name(f"{out.stem}-{name}.png")


def _wic(args) -> None:
    _check_output(args.output, args.train, args.dev)
    if args.window < 0:
        raise ValueError(f"--window counts words on each side: 0 or more, not {args.window}")
    sets = {name: read_wic(path, _wic_gold(path)) for name, path in (("train", args.train), ("dev", args.dev))}
    if args.pairs_out:
        for name, pairs in sets.items():
            write_pair_file(pairs, Path(args.pairs_out) / f"{name}.tsv")
    if is_static(args.model):  # one "layer": the word's one vector
        if args.window:
            raise ValueError("--window needs an encoder: a static model's word vectors do not see their neighbours")
        static, layers = StaticVectors.load(args.model), [0]
        vectors = {name: static_target_vectors(static, pairs) for name, pairs in sets.items()}
    else:
        model, tokenizer = _load(args)
        layers = _layers_or_all(args.layers, model)
        vectors = {name: target_vectors(model, tokenizer, pairs, layers, args.batch_size, args.dtype, args.window)
                   for name, pairs in sets.items()}
    zscores = vectors["train"].fit_standardization()
    cosines = {(name, z): v.cosines(zscores if z else None) for name, v in vectors.items() for z in (False, True)}
    truth = {name: [p.same for p in pairs] for name, pairs in sets.items()}
    results: dict[int, dict] = {layer: {} for layer in layers}
    print("layer  train accuracy  dev accuracy  z-scored: train  dev")
    for layer in layers:
        for z, prefix in ((False, ""), (True, "zscored_")):
            threshold = fit_threshold(cosines["train", z][layer], truth["train"])
            results[layer].update({f"{prefix}threshold": threshold, **{
                f"{prefix}{name}_accuracy": threshold_accuracy(cosines[name, z][layer], truth[name], threshold)
                for name in sets}})
        r = results[layer]
        print(f"{layer:5d}  {r['train_accuracy']:14.3f}  {r['dev_accuracy']:12.3f}  {r['zscored_train_accuracy']:15.3f}"
              f"  {r['zscored_dev_accuracy']:.3f}")
    missing = sum(v.missing for v in vectors.values())
    if missing:
        _note(f"note: {missing} pairs have a target word without a vector (no subword; or out of a static model's "
              "vocabulary): cosine 0, answered different")
    same_share = {name: float(np.mean(t)) for name, t in truth.items()}
    _note(f"same-sense pairs: {same_share['train']:.3f} of train, {same_share['dev']:.3f} of dev (what answering "
          "'same' every time scores)")
    write_text(args.output, json.dumps({"model": args.model, "window": args.window,
                                        "pairs": {n: len(p) for n, p in sets.items()},
                                        "same_share": same_share, "no_vector": missing, "layers": results}, indent=1))
    plot_wic(results, Path(args.output).with_suffix(".png"))
    _note(f"wrote {args.output} and its .png" + (f"; pair files in {args.pairs_out}" if args.pairs_out else ""))


def _wic_gold(data: str) -> Path:
    """WiC's gold file beside its data file: dev.data.txt -> dev.gold.txt."""
    gold = Path(data).with_name(Path(data).name.replace(".data.", ".gold."))
    if gold == Path(data) or not gold.exists():
        raise FileNotFoundError(f"{data}: no gold file {gold.name} beside it (WiC names them NAME.gold.txt)")
    return gold


def _geometry(args) -> None:
    _check_output(args.output, args.input)
    lines = [t for t in _text_lines(args.input, args.encoding_errors) if t.strip()]
    rng = np.random.default_rng(args.seed)
    sentences = [lines[i] for i in sorted(rng.choice(len(lines), min(args.sentences, len(lines)), replace=False))]
    if is_static(args.model):  # one "layer", one context: the self-similarity is 1
        static, layers = StaticVectors.load(args.model), [0]
        vectors, sentence, words, unknown = static.text_vectors(sentences)
        vectors = {0: vectors}
        if unknown:
            _note(f"note: {unknown} words out of the vocabulary: left out")
    else:
        model, tokenizer = _load(args)
        fits = [len(ids) + 2 <= model.config.max_length for ids in tokenizer.token_ids(sentences)]
        if not all(fits):
            _note(f"note: skipped {fits.count(False)} of {len(sentences)} sampled lines longer than the model's "
                  f"{model.config.max_length} tokens (split them into sentences to keep them)")
            sentences = [t for t, ok in zip(sentences, fits) if ok]
        layers = _layers_or_all(args.layers, model)
        vectors, sentence, words = layer_vectors(model, tokenizer, sentences, layers, args.dtype)
    results = {layer: {**anisotropy(vectors[layer], sentence, words, args.pairs, seed=args.seed),
                       "rogue": rogue_dimensions(vectors[layer], sentence, args.pairs, args.top, args.seed)}
               for layer in layers}
    for row in results.values():
        row["top_share"] = row["rogue"]["top_share"]
    write_text(args.output, json.dumps({"model": args.model, "input": args.input, "sentences": len(sentences),
                                        "words": len(words), "layers": results}, indent=1))
    plot_geometry(results, Path(args.output).with_suffix(".png"))
    if args.analysis == "anisotropy":
        def both(r: dict, name: str) -> str:  # "0.512 (+0.301)", or "-" where nothing was measured
            return "-" if r[name] is None else f"{r[name]:.3f} ({r[name + '_adjusted']:+.3f})"
        print("layer  anisotropy  self-sim (adj)   intra-sent (adj)  top-dims share  informativity")
        for layer, r in results.items():
            print(f"{layer:5d}  {r['anisotropy']:10.3f}  {both(r, 'self_similarity'):15}  "
                  f"{both(r, 'intra_sentence'):16}  {r['top_share']:14.3f}  {r['rogue']['informativity']:13.3f}")
    else:
        print("layer  expected cosine  top dimensions (contribution)          share  informativity")
        for layer, r in results.items():
            top = ", ".join(f"{d['dimension']} ({d['contribution']:.3f})" for d in r["rogue"]["top"])
            print(f"{layer:5d}  {r['rogue']['expected_cosine']:15.3f}  {top:38}  {r['top_share']:.3f}  "
                  f"{r['rogue']['informativity']:13.3f}")
    _note(f"sampled {len(sentences)} sentences, {len(words)} words; wrote {args.output} and its .png")


def _postprocess_fit(args) -> None:
    _check_output(args.output, args.input)
    texts = _text_lines(args.input, args.encoding_errors)
    model, tokenizer = _load(args)
    layers = _layer_list(args.layers)
    vectors = embed(model, tokenizer, texts, pooling=args.pooling, layers=layers, batch_size=args.batch_size,
                    precision=args.dtype)
    fit_postprocess(vectors, args.method, args.components, info={
        "model": args.model, "layers": layers, "pooling": args.pooling, "input": args.input}).save(args.output)
    _note(f"fitted {args.method} on {len(texts)} texts ({vectors.shape[1]} dimensions); wrote {args.output}")


def _attention_vs_attribution(args) -> None:
    model, tokenizer = _task_model(args.model, args.head)
    examples = _examples_for(model, args.data, args.encoding_errors)[:args.limit]  # --limit None: all
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with open(out / "records.jsonl", "w", encoding="utf-8") as f:  # written as they come: a long run shows progress
        for i, e in enumerate(tqdm(examples, desc=args.analysis, unit="input")):
            with warnings.catch_warnings():  # a cut input is counted in the summary, not warned about each time
                warnings.simplefilter("ignore")
                records.append(attention_vs_attribution(model, tokenizer, e.text, e.pair, args.permutations,
                                                        args.steps, args.seed + i))
            f.write(json.dumps(records[-1]) + "\n")
            f.flush()
    summary = {"model": args.model, "data": args.data, "permutations": args.permutations, "steps": args.steps,
               "truncated_inputs": sum(r["truncated"] for r in records), **summarize_attention_tests(records)}
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    plot_attention_tests(records, out)
    print(json.dumps(summary, indent=1))


def cmd_bertscore(args) -> None:
    candidates, references = _candidates_and_references(args)
    model, tokenizer = _load(args)
    layer, why = (args.layer, "given") if args.layer is not None else default_layer(model, args.model)
    baseline = load_baseline(args.baseline, model, tokenizer) if args.baseline else None
    scores = bertscore(model, tokenizer, candidates, references, layer=layer, idf=args.idf, baseline=baseline,
                       batch_size=args.batch_size, precision=args.dtype, stride=args.stride)
    for count, what in ((scores.empty, "pairs have an empty candidate or reference; they score 0 before rescaling"),
                        (scores.windowed, f"texts are longer than the model's {model.config.max_length} positions; "
                                          "read in overlapping windows"),
                        (scores.unweighted, "texts have idf 0 for every token (each is in every reference); their "
                                            "tokens weigh equally")):
        if count:
            _note(f"warning: {count} {what}")
    if args.output:
        with atomic_write(args.output) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for n, (p, r, f1) in enumerate(zip(scores.precision, scores.recall, scores.f1), start=1):
                f.write(json.dumps({"line": n, "precision": float(p), "recall": float(r), "f1": float(f1)}) + "\n")
        _note(f"wrote {len(candidates)} pair scores to {args.output}")
    print(json.dumps({"pairs": len(candidates), "layer": model.layer_index(layer), "layer_choice": why, "idf": args.idf,
                      "rescaled_with": args.baseline, **{k: round(v, 6) for k, v in scores.mean().items()},
                      "empty_pairs": scores.empty, "windowed_texts": scores.windowed}, indent=1))


def cmd_bertscore_baseline(args) -> None:
    _check_output(args.output, *args.corpus)
    files = [f for path in args.corpus for f in text_files(path)]
    sentences = list(read_texts(files, args.encoding_errors))
    model, tokenizer = _load(args)
    baseline = compute_baseline(model, tokenizer, sentences, pairs=args.pairs, seed=args.seed, idf=args.idf,
                                batch_size=args.batch_size, precision=args.dtype)
    save_baseline(args.output, baseline, model_dir=str(Path(args.model).resolve()), corpus=[str(f) for f in files])
    _note(f"{args.pairs} random pairs of {baseline['sentences']} sentences ({len(sentences) - baseline['sentences']} "
          f"blank lines skipped), {'with' if args.idf else 'without'} idf:")
    print("layer  P        R        F")
    for row in baseline["layers"]:
        print(f"{row['layer']:<6} {row['P']:.6f} {row['R']:.6f} {row['F']:.6f}")
    _note(f"wrote the baseline to {args.output}")


COMMANDS = {"info": cmd_info, "embed": cmd_embed, "similarity": cmd_similarity, "tokenize": cmd_tokenize,
            "train-tokenizer": cmd_train_tokenizer, "train-static": cmd_train_static, "fill-mask": cmd_fill_mask,
            "generate": cmd_generate, "serve": cmd_serve, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "retrieve": cmd_retrieve, "evaluate-run": cmd_evaluate_run, "perplexity": cmd_perplexity,
            "pseudo-perplexity": cmd_pseudo_perplexity, "bertscore": cmd_bertscore, "analyze": cmd_analyze,
            "explain": cmd_explain, "bertscore-baseline": cmd_bertscore_baseline, "score": cmd_score}
WITH_OVERRIDES = {"pretrain": cmd_pretrain, "finetune": cmd_finetune, "multitask": cmd_multitask,
                  "distill": cmd_distill}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if a.startswith("--") and "." in a.split("=")[0]]
    takes_overrides = args.command in WITH_OVERRIDES
    if not takes_overrides and extra or len(overrides) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(a for a in extra if a not in overrides or not takes_overrides)}")
    reuse_freed_memory()  # prediction and training alike allocate large tensors of changing shapes
    with warnings.catch_warnings():  # a user reads "warning: what happened", not the line that warned
        warnings.showwarning = lambda message, *rest: _note(f"warning: {message}")
        try:
            if takes_overrides:
                WITH_OVERRIDES[args.command](args, overrides)
            else:
                COMMANDS[args.command](args)
        except (ValueError, OSError, KeyError, ImportError, NonFiniteLossError) as e:
            _note(f"bertkit {args.command}: error: {e}")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
