"""ELECTRA: the Hugging Face layouts, the loss against its definition, the masking, a run, and resume."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bertkit import Encoder, add_pretraining_heads, load_pretrained, preset, save_pretrained
from bertkit.cli import main
from bertkit.config import TrainConfig
from bertkit.data.masking import ELECTRA_SPLIT, mask_tokens
from bertkit.heads import IGNORE_INDEX, draw
from bertkit.train.electra import Electra, generator_config, generator_lr_scale
from bertkit.train.loop import make_optimizer
from tiny_pretraining import losses, pretraining, run  # noqa: F401 (pretraining: a fixture)

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parent.parent
VOCAB = 300


def tiny_electra(seed: int = 0, dropout: float = 0.0) -> Electra:
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=VOCAB, family="electra", pooler=False, hidden_size=64, num_heads=2,
                    intermediate_size=128, hidden_dropout=dropout, attention_dropout=dropout)
    discriminator = add_pretraining_heads(Encoder(config), mlm=False, rtd=True)
    return Electra(discriminator, Encoder(generator_config(config, 0.25)), rtd_weight=50.0)


def masked_batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(20)[None, :] < torch.tensor([20, 13, 17])[:, None]).long()
    ids = torch.randint(5, VOCAB, (3, 20), generator=g) * mask
    masked = mask_tokens(ids, mask.bool(), g, mask_id=4, random_ids=torch.arange(5, VOCAB), rate=0.3,
                         split=ELECTRA_SPLIT)
    return {"input_ids": masked.input_ids, "labels": masked.labels, "attention_mask": mask,
            "token_type_ids": torch.zeros_like(ids)}


def test_the_generator_is_a_quarter_wide_and_shares_the_embeddings():
    electra = tiny_electra()
    g, d = electra.generator, electra.discriminator
    assert (g.config.hidden_size, g.config.num_heads, g.config.intermediate_size) == (16, 1, 64)
    assert g.embeddings is d.embeddings and g.mlm_head.decoder.weight is d.embeddings.word.weight
    assert g.embeddings_project.in_features == 64 and g.embeddings_project.out_features == 16
    assert generator_config(preset("base"), 0.25).num_heads == 3  # one head per 64 dimensions


def test_the_generator_can_learn_slower_than_the_discriminator_and_the_shared_embeddings():
    electra = tiny_electra()
    train = TrainConfig(lr=1e-3, warmup_steps=1, max_steps=10)
    optimizer, _ = make_optimizer(electra, train, generator_lr_scale(0.1))
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert lr_of[id(electra.generator.layers[0].feed_forward.up.weight)] == pytest.approx(1e-4)
    assert lr_of[id(electra.generator.embeddings_project.weight)] == pytest.approx(1e-4)
    assert lr_of[id(electra.discriminator.layers[0].feed_forward.up.weight)] == pytest.approx(1e-3)
    assert lr_of[id(electra.generator.embeddings.word.weight)] == pytest.approx(1e-3)  # the discriminator's
    assert len(lr_of) == len({id(p) for p in electra.parameters()})  # every parameter, each once


def test_both_models_round_trip_through_transformers(tmp_path):
    """bertkit -> ElectraForPreTraining / ElectraForMaskedLM -> bertkit, outputs equal to 1e-5."""
    electra = tiny_electra(seed=3).eval()
    batch = masked_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = mask.bool()
    save_pretrained(electra.discriminator, tmp_path / "d")
    save_pretrained(electra.generator, tmp_path / "g")
    hf_d = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "d").eval()
    hf_g = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "g").eval()
    assert (type(hf_d).__name__, type(hf_g).__name__) == ("ElectraForPreTraining", "ElectraForMaskedLM")
    with torch.no_grad():
        ours_d = electra.discriminator.rtd_head(electra.discriminator(ids, mask).last_hidden_state)
        ours_g = electra.generator.mlm_head(electra.generator(ids, mask).last_hidden_state)
        torch.testing.assert_close(ours_d[real], hf_d(ids, attention_mask=mask).logits[real], atol=1e-5, rtol=0)
        torch.testing.assert_close(ours_g[real], hf_g(ids, attention_mask=mask).logits[real], atol=1e-5, rtol=0)
        hf_d.save_pretrained(tmp_path / "hf_d")
        hf_g.save_pretrained(tmp_path / "hf_g")
        back_d, back_g = load_pretrained(tmp_path / "hf_d"), load_pretrained(tmp_path / "hf_g")
        torch.testing.assert_close(back_d.rtd_head(back_d(ids, mask).last_hidden_state)[real], ours_d[real],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(back_g.mlm_head(back_g(ids, mask).last_hidden_state)[real], ours_g[real],
                                   atol=1e-5, rtol=0)


def test_the_loss_is_the_generator_mlm_plus_50_times_the_detection_loss():
    """Recomputed by hand from the two models, with the same samples: MLM cross-entropy over the
    chosen tokens, binary cross-entropy over the real tokens, a sample equal to the original
    counting as original."""
    electra = tiny_electra(seed=1).eval()
    batch = masked_batch(seed=2)
    labels, mask = batch["labels"], batch["attention_mask"]
    chosen, real = labels != IGNORE_INDEX, mask.bool()
    first = chosen.nonzero()[0]  # make the generator certain of the original token here
    with torch.no_grad():
        electra.generator.mlm_head.decoder.bias[labels[tuple(first)]] = 1e4
    torch.manual_seed(7)
    got = electra(batch)
    torch.manual_seed(7)
    with torch.no_grad():
        g_logits = electra.generator.mlm_head(electra.generator(batch["input_ids"], mask).last_hidden_state)[chosen]
        sampled = draw(g_logits.softmax(-1), torch.rand(len(g_logits)))
        text = torch.where(chosen, labels, batch["input_ids"])
        corrupted = text.clone()
        corrupted[chosen] = sampled
        d_logits = electra.discriminator.rtd_head(electra.discriminator(corrupted, mask).last_hidden_state)
    replaced = (corrupted != text).float()
    assert corrupted[tuple(first)] == text[tuple(first)] and replaced[tuple(first)] == 0
    assert 0 < replaced[chosen].sum() < chosen.sum()  # some samples differ, some equal the original
    torch.testing.assert_close(got["mlm"], F.cross_entropy(g_logits, labels[chosen], reduction="sum"))
    torch.testing.assert_close(got["rtd"], 50 * F.binary_cross_entropy_with_logits(d_logits[real], replaced[real],
                                                                                   reduction="sum"))


def test_samples_follow_the_generator_distribution():
    """Frequencies of 200,000 draws within 0.005 of the softmax; a token of probability 0 never drawn."""
    logits = torch.tensor([[2.0, 0.0, -1.0, float("-inf"), 1.0]]).expand(200_000, 5)
    drawn = draw(logits.softmax(-1), torch.rand(len(logits), generator=torch.Generator().manual_seed(0)))
    frequencies = torch.bincount(drawn, minlength=5) / len(drawn)
    torch.testing.assert_close(frequencies, logits[0].softmax(-1), atol=0.005, rtol=0)
    assert frequencies[3] == 0


def test_no_gradient_flows_through_the_samples():
    """The detection loss trains the discriminator and the shared embeddings, never the generator's own layers."""
    electra = tiny_electra(seed=4)
    electra(masked_batch())["rtd"].backward()
    assert all(p.grad is None or not p.grad.any() for p in electra.generator.layers.parameters())
    assert electra.discriminator.embeddings.word.weight.grad.any()
    assert all(p.grad is not None for p in electra.discriminator.layers.parameters())


def test_electra_masking_keeps_15_percent_and_never_draws_a_random_token():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 30000, (64, 512), generator=g)
    masked = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), g, mask_id=4,
                         random_ids=torch.arange(5, 30000), split=ELECTRA_SPLIT)
    chosen = masked.labels != IGNORE_INDEX
    is_mask = masked.input_ids[chosen] == 4
    assert abs(float(is_mask.float().mean()) - 0.85) < 0.01
    assert torch.equal(masked.input_ids[chosen][~is_mask], ids[chosen][~is_mask])  # the rest kept, none random
    assert torch.equal(masked.input_ids[~chosen], ids[~chosen])


def test_a_short_run_saves_both_models_and_reports_detection(data_dir, minilm_dir, tmp_path, capsys):
    out = tmp_path / "electra"
    code = main(["pretrain", "--config", str(ROOT / "configs" / "electra.yaml"),
                 "--corpus", str(data_dir / "gutenberg_nltk" / "carroll-alice.txt"), "--tokenizer", str(minilm_dir),
                 "--preset", "tiny", "--max-steps", "2", "--out", str(out), "--pretrain.batch_size=4",
                 f"--pretrain.cache={tmp_path / 'cache'}", "--pretrain.eval_blocks=8", "--train.log_every=1",
                 f"--pretrain.eval_corpus={data_dir / 'wikitext2' / 'raw' / 'wiki.valid.raw'}"])
    assert code == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"mlm", "rtd"} <= log[0].keys()
    evaluation = log[-1]
    assert 0.5 < evaluation["eval_rtd_baseline"] < 1 and 0 <= evaluation["eval_rtd_accuracy"] <= 1
    assert 0 <= evaluation["eval_rtd_auc"] <= 1
    assert type(transformers.AutoModelForPreTraining.from_pretrained(out)).__name__ == "ElectraForPreTraining"
    assert type(transformers.AutoModelForMaskedLM.from_pretrained(out / "generator")).__name__ == "ElectraForMaskedLM"
    assert (out / "vocab.txt").exists() and (out / "generator" / "vocab.txt").exists()


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_the_discriminator_fine_tunes_with_a_task_head(task, data_dir, minilm_dir, tmp_path, capsys):
    from tiny_task_data import lines_head

    from bertkit.tokenizer import Tokenizer

    torch.manual_seed(0)
    model_dir = tmp_path / "electra"
    config = preset("tiny", vocab_size=30522, family="electra", pooler=False)
    save_pretrained(add_pretraining_heads(Encoder(config), mlm=False, rtd=True), model_dir)
    Tokenizer.from_pretrained(minilm_dir).save(model_dir)
    if task == "classify":
        train = lines_head(data_dir / "sst2" / "train.tsv", tmp_path / "train.tsv", 65)
        data = ["--text-column", "sentence", "--label-column", "label"]
    else:
        train = lines_head(data_dir / "conll2003" / "eng.testa", tmp_path / "train.conll", 400)
        data = []
    code = main(["finetune", task, "--model", str(model_dir), "--train", str(train), "--dev", str(train), *data,
                 "--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "16", "--dtype", "fp32"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["model_type"] == "electra"
    assert json.loads((tmp_path / "ft" / "dev_metrics.json").read_text())


def test_a_killed_electra_run_resumes_to_the_same_losses(capsys, pretraining, tmp_path):  # noqa: F811
    """Generator and discriminator are both in the checkpoints, and the draws the samples are taken
    at come with each step's data: a killed run continues exactly."""
    steps = 12
    args = lambda out, *extra: pretraining(out, steps, "--pretrain.recipe=electra", "--train.checkpoint_every=1", *extra)  # noqa: E731
    assert run(capsys, *args(tmp_path / "reference"))[0] == 0
    out = tmp_path / "killed"
    job = subprocess.Popen([sys.executable, "-m", "bertkit.cli", *map(str, args(out))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and job.poll() is None and not (
            (out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= 4):
        time.sleep(0.01)
    job.kill()
    assert job.wait() < 0 and list((out / "checkpoints").glob("step-*")), "the kill did not land mid-run"
    assert run(capsys, *args(out, "--resume"))[0] == 0
    assert sorted(losses(out)) == list(range(steps))
    assert losses(out) == pytest.approx(losses(tmp_path / "reference"), abs=1e-6)
