"""Distillation: the student built from the teacher's layers, the embedding loss, a short run."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from bertkit import load_pretrained
from bertkit.cli import main
from bertkit.heads import pool
from bertkit.tokenizer import Tokenizer
from bertkit.train.checkpoint import full_model_state
from bertkit.train.distill import EmbeddingDistiller, student_from_teacher, student_layers


def test_student_layers_default_to_half_with_the_first_and_last_and_are_checked():
    assert student_layers(12) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice for BERT-base
    assert student_layers(6) == [0, 3, 5] and student_layers(4) == [0, 3]
    assert student_layers(2) == [1] and student_layers(1) == [0]  # one layer: the last
    assert student_layers(24) == [0, 2, 4, 6, 8, 10, 13, 15, 17, 19, 21, 23]
    assert student_layers(6, (0, 2, 4)) == [0, 2, 4]
    for bad in ((2, 0), (0, 0), (0, 6)):
        with pytest.raises(ValueError, match="distinct, increasing and within the teacher's 0..5"):
            student_layers(6, bad)


def test_a_student_of_every_layer_is_the_teacher_and_a_subset_runs_those_layers(minilm, sts_sentences):
    teacher, tokenizer = minilm
    batch = tokenizer.encode(sts_sentences[:8]).tensors(pad_id=tokenizer.pad_id)
    with torch.no_grad():
        same = student_from_teacher(teacher, range(6)).eval()(**batch).last_hidden_state
        assert torch.equal(same, teacher(**batch).last_hidden_state)
        student = student_from_teacher(teacher, (0, 2, 4)).eval()
        assert len(student.layers) == 3
        for mine, theirs in zip(student.layers, (0, 2, 4)):
            assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(),
                                                         teacher.layers[theirs].state_dict().values()))
        assert torch.equal(student.embeddings.word.weight, teacher.embeddings.word.weight)
        assert student.embeddings.word.weight is not teacher.embeddings.word.weight  # a copy: the teacher stays


def test_the_embedding_loss_is_the_squared_error_of_pooled_vectors_and_only_the_student_trains(minilm, sts_sentences):
    teacher, tokenizer = minilm
    batch = tokenizer.encode(sts_sentences[:8]).tensors(pad_id=tokenizer.pad_id)
    try:
        distiller = EmbeddingDistiller(student_from_teacher(teacher, (0, 2, 4)), teacher).eval()
        loss = distiller(batch)["embedding"]
        mask = batch["attention_mask"]
        with torch.no_grad():
            expected = (pool(distiller.student(**batch).last_hidden_state, mask, "mean")
                        - pool(teacher(**batch).last_hidden_state, mask, "mean")).pow(2).sum()
        assert torch.allclose(loss, expected, rtol=1e-5)
        loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert not any(p.requires_grad for p in teacher.parameters())
        assert distiller.student.layers[0].attention.qkv.weight.grad is not None
        assert all(k.startswith("student.") for k in full_model_state(distiller))  # checkpoints hold the student
    finally:
        teacher.requires_grad_(True)  # the session's shared fixture


def test_a_short_run_saves_a_student_that_transformers_loads(minilm_dir, sts_sentences, tmp_path, capsys):
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(sts_sentences[:96] + ["", sts_sentences[0]]) + "\n", encoding="utf-8")
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(minilm_dir), "--corpus", str(corpus), "--out", str(out),
                 "--max-steps", "4", "--dtype", "fp32", "--distill.batch_size=16", "--train.log_every=1",
                 "--train.lr=1e-3", "--train.warmup_steps=0"])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    distinct = len(dict.fromkeys(sts_sentences[:96]))  # the empty line and repeated sentences are dropped, counted
    assert '"student_layers": [0, 3, 5]' in err and f'"texts": {distinct}, "empty_lines": 1, "repeated_lines": {97 - distinct},' in err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "embedding" in r] == [0, 1, 2, 3]
    assert log[-1]["embedding"] < log[0]["embedding"]
    hf = transformers.AutoModel.from_pretrained(out)
    assert hf.config.num_hidden_layers == 3
    assert load_pretrained(out).config.num_layers == 3 and Tokenizer.from_pretrained(out).vocab_size == 30522


def test_distill_refuses_a_missing_corpus(minilm_dir, tmp_path, capsys):
    assert main(["distill", "--teacher", str(minilm_dir), "--out", str(tmp_path / "s")]) != 0
    assert "give unlabelled text (--corpus) for the embedding objective" in capsys.readouterr().err


def test_a_killed_distillation_resumes_to_the_same_losses(minilm_dir, sts_sentences, tmp_path, capsys):
    """The teacher is not in the checkpoints: a resumed run loads it again and continues exactly."""
    import subprocess
    import sys
    import time

    from bertkit import Encoder, preset, save_pretrained

    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    teacher_dir = tmp_path / "teacher"
    torch.manual_seed(0)
    save_pretrained(Encoder(preset("tiny", vocab_size=tokenizer.vocab_size, num_layers=4, hidden_size=32, num_heads=2,
                                   intermediate_size=64)), teacher_dir)
    tokenizer.save(teacher_dir)
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(sts_sentences[:400]) + "\n", encoding="utf-8")

    def args(out, *extra):
        return ["distill", "--teacher", str(teacher_dir), "--corpus", str(corpus), "--out", str(out), "--max-steps",
                "16", "--dtype", "fp32", "--distill.batch_size=8", "--train.log_every=1", "--train.checkpoint_every=1",
                "--train.lr=1e-3", *extra]

    def losses(out):
        return {r["step"]: r["embedding"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())}

    assert main(args(tmp_path / "reference")) == 0
    out = tmp_path / "killed"
    kills = 0
    for _ in range(2):
        resume = ["--resume"] if list((out / "checkpoints").glob("step-*")) else []
        job = subprocess.Popen([sys.executable, "-m", "bertkit.cli", *args(out, *resume)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        start = len(losses(out)) if (out / "log.jsonl").exists() else 0
        while time.time() < deadline and job.poll() is None and (
                not (out / "log.jsonl").exists() or len(losses(out)) < start + 3):
            time.sleep(0.01)
        job.kill()
        kills += job.wait() < 0 and len(losses(out)) < 16  # killed before the end
    assert kills >= 1 and list((out / "checkpoints").glob("step-*")), "no kill landed mid-run"
    assert main(args(out, "--resume")) == 0
    assert sorted(losses(out)) == list(range(16))
    assert losses(out) == pytest.approx(losses(tmp_path / "reference"), abs=1e-6)


def test_task_distillation_matches_the_definition_and_saves_a_task_model(minilm_dir, data_dir, tmp_path, capsys):
    """A tiny SST-2 teacher, fine-tuned here, taught to a 1-layer student: the loss is
    w T^2 KL(teacher || student) + (1 - w) CE per labelled text, and the student is a fine-tuned model."""
    import torch.nn.functional as F
    from tiny_task_data import lines_head, tiny_model_dir

    from bertkit.config import DistillConfig
    from bertkit.tasks.model import TaskModel, load_task_model
    from bertkit.train.distill import TaskDistiller
    from bertkit.train.finetune import spec_config, task_data

    train = lines_head(data_dir / "sst2" / "train.tsv", tmp_path / "train.tsv", 201)
    dev = lines_head(data_dir / "sst2" / "dev.tsv", tmp_path / "dev.tsv", 101)
    teacher_dir = tmp_path / "teacher"
    common = ["--dtype", "fp32", "--train.log_every=1", "--finetune.reader={text_column: sentence, label_column: label}"]
    assert main(["finetune", "classify", "--model", str(tiny_model_dir(tmp_path / "tiny", minilm_dir)), "--train",
                 str(train), "--out", str(teacher_dir), "--epochs", "1", "--batch-size", "16", *common]) == 0
    teacher = load_task_model(teacher_dir)
    student = TaskModel(student_from_teacher(teacher.encoder, (1,)), teacher.spec)
    data = task_data(spec_config(teacher.spec, model=str(teacher_dir), train=str(train), batch_size=16),
                     Tokenizer.from_pretrained(teacher_dir), 0)
    batch = data.steps.batches(0, 0, 1)[0]
    student.eval()
    loss = TaskDistiller(student, teacher, temperature=2.0, soft_weight=0.3)(batch)["loss"]
    with torch.no_grad():
        s, t = student.scores(batch), teacher.scores(batch)
    soft = sum(float((F.softmax(t[i] / 2, -1) * (F.log_softmax(t[i] / 2, -1) - F.log_softmax(s[i] / 2, -1))).sum())
               for i in range(len(s))) * 4
    hard = float(F.cross_entropy(s, batch["labels"], reduction="sum"))
    assert float(loss.detach()) == pytest.approx(0.3 * soft + 0.7 * hard, rel=1e-5)
    with pytest.raises(ValueError, match="give the task's training file"):
        DistillConfig(teacher=str(teacher_dir), objective="task")

    out = tmp_path / "student"
    assert main(["distill", "--objective", "task", "--teacher", str(teacher_dir), "--train", str(train), "--dev",
                 str(dev), "--layers", "1", "--out", str(out), "--max-steps", "3", "--distill.batch_size=16", *common[:-1]]) == 0
    trained = load_task_model(out)
    assert len(trained.encoder.layers) == 1 and trained.spec == teacher.spec
    assert "accuracy" in json.loads((out / "dev_metrics.json").read_text())


def test_task_distillation_learns_unlabelled_texts_from_the_teachers_scores_alone(minilm_dir, data_dir, tmp_path, capsys):
    """A batch of unlabelled texts costs T^2 KL(teacher || student) per text (weight 1, no label);
    each step takes one beside the labelled batch, each text counted as an item; without soft
    targets, or for a task on word tags, unlabelled text is refused."""
    import torch.nn.functional as F
    from tiny_task_data import conll_head, lines_head, tiny_model_dir

    from bertkit.config import DistillConfig
    from bertkit.data.examples import TextExample
    from bertkit.tasks import collate, encode_examples
    from bertkit.tasks.model import TaskModel, load_task_model
    from bertkit.train.distill import TaskDistiller

    train = lines_head(data_dir / "sst2" / "train.tsv", tmp_path / "train.tsv", 101)
    teacher_dir = tmp_path / "teacher"
    common = ["--dtype", "fp32", "--train.log_every=1"]
    assert main(["finetune", "classify", "--model", str(tiny_model_dir(tmp_path / "tiny", minilm_dir)), "--train",
                 str(train), "--out", str(teacher_dir), "--epochs", "1", "--batch-size", "16", *common,
                 "--finetune.reader={text_column: sentence, label_column: label}"]) == 0
    teacher, tokenizer = load_task_model(teacher_dir), Tokenizer.from_pretrained(teacher_dir)
    student = TaskModel(student_from_teacher(teacher.encoder, (1,)), teacher.spec).eval()
    texts = ["a gripping , tender film .", "the plot goes nowhere and takes two hours to get there ."]
    batch = collate(encode_examples([TextExample(t) for t in texts], tokenizer, teacher.spec), [0, 1],
                    teacher.spec, tokenizer.pad_id)
    assert "labels" not in batch
    loss = TaskDistiller(student, teacher, temperature=3.0, soft_weight=0.2)(batch)["loss"]
    with torch.no_grad():
        s, t = student.scores(batch) / 3, teacher.scores(batch) / 3
    by_hand = float((F.softmax(t, -1) * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum()) * 9
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-5) and by_hand > 0

    reviews = tmp_path / "reviews.txt"
    reviews.write_text(f"{texts[0]}\n\n{texts[1]}\n{texts[0]}\n")
    with pytest.raises(ValueError, match="needs distill.soft_weight > 0"):
        DistillConfig(teacher=str(teacher_dir), objective="task", train=str(train), corpus=(str(reviews),),
                      soft_weight=0.0)
    out = tmp_path / "student"
    capsys.readouterr()
    assert main(["distill", "--objective", "task", "--teacher", str(teacher_dir), "--train", str(train),
                 "--corpus", str(reviews), "--layers", "1", "--out", str(out), "--max-steps", "3",
                 "--distill.batch_size=16", *common]) == 0
    report = json.loads(next(line for line in capsys.readouterr().err.splitlines() if "student_layers" in line))
    assert (report["unlabelled_texts"], report["empty_lines"], report["repeated_lines"]) == (2, 1, 1)
    assert len(load_task_model(out).encoder.layers) == 1

    tags = conll_head(data_dir / "conll2003" / "eng.train", tmp_path / "train.conll", 20)
    tagger = tmp_path / "tagger"
    assert main(["finetune", "tag", "--model", str(tmp_path / "tiny"), "--train", str(tags), "--out", str(tagger),
                 "--epochs", "1", "--batch-size", "8", *common]) == 0
    capsys.readouterr()
    assert main(["distill", "--objective", "task", "--teacher", str(tagger), "--train", str(tags), "--corpus",
                 str(reviews), "--out", str(tmp_path / "no"), "--max-steps", "1", *common]) == 2
    assert "serves tasks on one text (classify); the teacher's task is tag" in capsys.readouterr().err


def test_the_mlm_triple_loss_matches_its_definition_and_a_run_saves_a_masked_lm(minilm_dir, data_dir, tmp_path, capsys):
    """DistilBERT's loss: 5 x T^2 KL over masked tokens + 2 x MLM + 1 x (1 - cos) over real tokens."""
    import torch.nn.functional as F

    from bertkit import Encoder, add_pretraining_heads, preset, save_pretrained
    from bertkit.train.distill import MLMDistiller

    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    teacher = add_pretraining_heads(Encoder(preset("tiny", vocab_size=tokenizer.vocab_size, num_layers=4, hidden_size=32,
                                                   num_heads=2, intermediate_size=64)), mlm=True).eval()
    student = student_from_teacher(teacher, (1, 3)).eval()
    assert torch.equal(student.mlm_head.dense.weight, teacher.mlm_head.dense.weight)
    assert student.mlm_head.decoder.weight is student.embeddings.word.weight  # tied to its own embeddings
    with torch.no_grad():  # a random tiny teacher's distributions are near uniform: make the two differ
        student.mlm_head.decoder.bias.add_(3 * torch.randn(tokenizer.vocab_size))
    ids = torch.randint(5, 1000, (3, 10))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[2, 3] = 11, 12, 13
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    loss = MLMDistiller(student, teacher, temperature=2.0)(batch)
    s = student(ids, mask).last_hidden_state.detach()  # with gradients, as the distiller runs it (the same kernels)
    with torch.no_grad():
        t = teacher(ids, mask).last_hidden_state
        chosen, real = labels != -100, mask.bool()
        tl, sl = teacher.mlm_head(t[chosen]), student.mlm_head(s[chosen])
        p = F.softmax(tl / 2, -1)
        soft = float((p * (p.log() - F.log_softmax(sl / 2, -1))).sum()) * 4
        mlm = float(F.cross_entropy(sl, labels[chosen], reduction="sum"))
        cosine = float((1 - F.cosine_similarity(s[real], t[real], dim=-1)).sum())
    assert float(loss["soft"].detach()) == pytest.approx(5 * soft, rel=1e-4)
    assert float(loss["mlm"].detach()) == pytest.approx(2 * mlm, rel=1e-5)
    assert float(loss["cosine"].detach()) == pytest.approx(cosine, rel=1e-5)

    teacher_dir = tmp_path / "teacher"
    save_pretrained(teacher, teacher_dir)
    tokenizer.save(teacher_dir)
    corpus = tmp_path / "book.txt"
    with open(data_dir / "gutenberg_nltk" / "austen-emma.txt", encoding="utf-8") as f:
        corpus.write_text("".join(next(f) for _ in range(300)), encoding="utf-8")
    out = tmp_path / "student"
    assert main(["distill", "--objective", "mlm", "--teacher", str(teacher_dir), "--corpus", str(corpus), "--out",
                 str(out), "--max-steps", "2", "--dtype", "fp32", "--distill.batch_size=4", "--distill.max_length=32",
                 f"--distill.cache={tmp_path / 'cache'}", "--train.log_every=1"]) == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"soft", "mlm", "cosine"} <= set(log[0])
    assert type(transformers.AutoModelForMaskedLM.from_pretrained(out)).__name__ == "BertForMaskedLM"
    assert load_pretrained(out).config.num_layers == 2
