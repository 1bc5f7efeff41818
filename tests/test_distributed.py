"""Two processes under DistributedDataParallel or FSDP (gloo, CPU) follow one process's loss curve
(checkpointing every step, which gathers the full states on every rank), for MLM and for the
ELECTRA and permutation-LM objectives."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from loopback import free_port  # noqa: E402
from pretrain_job import run  # noqa: E402

STEPS = 6


def _worker(rank: int, world: int, port: int, out: str, strategy: str, objective: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        records, _ = run(Path(out), STEPS, micro_batches=2, dropout=0.0, strategy=strategy, objective=objective)
        if rank == 0:
            Path(out, "losses.json").write_text(json.dumps({r["step"]: r["loss"] for r in records if "loss" in r}))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("strategy, objective", [("ddp", "mlm"), ("fsdp", "mlm"), ("ddp", "electra"),
                                                 ("fsdp", "electra"), ("ddp", "plm"), ("fsdp", "plm")])
def test_two_processes_match_one(tmp_path, strategy, objective):
    single, _ = run(tmp_path / "single", STEPS, micro_batches=1, dropout=0.0, objective=objective)
    expected = {r["step"]: r["loss"] for r in single if "loss" in r}
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path / "ddp"), strategy, objective), nprocs=2, join=True)
    got = {int(k): v for k, v in json.loads((tmp_path / "ddp" / "losses.json").read_text()).items()}
    assert got.keys() == expected.keys()
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step


def _finetune(out: Path, model: Path, train: Path) -> list[dict]:
    from bertkit.config import FinetuneConfig, TrainConfig
    from bertkit.train.finetune import finetune
    config = FinetuneConfig(task="tag", model=str(model), train=str(train), out=str(out), epochs=2, batch_size=8,
                            dropout=0.0)
    finetune(config, TrainConfig(lr=1e-3, log_every=1, checkpoint_every=1000))
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _finetune_worker(rank: int, world: int, port: int, out: str, model: str, train: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _finetune(Path(out), Path(model), Path(train))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_finetuning_two_processes_match_one(tmp_path, minilm_dir, data_dir):
    """A model with a pooler (unused by the tag head) trains under DDP and gives one process's losses."""
    from bertkit import Encoder, Tokenizer, preset, save_pretrained
    from tiny_task_data import conll_head
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    config = preset("tiny", hidden_size=32, num_heads=2, intermediate_size=64, num_layers=2,
                    vocab_size=tokenizer.vocab_size, hidden_dropout=0.0, attention_dropout=0.0)
    save_pretrained(Encoder(config), tmp_path / "model")
    tokenizer.save(tmp_path / "model")
    train = conll_head(data_dir / "conll2003" / "eng.train", tmp_path / "train.conll", 21)  # 21 rows: a short last batch
    single = {r["step"]: r["loss"] for r in _finetune(tmp_path / "one", tmp_path / "model", train) if "loss" in r}
    mp.spawn(_finetune_worker, args=(2, free_port(), str(tmp_path / "two"), str(tmp_path / "model"), str(train)),
             nprocs=2, join=True)
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    double = {r["step"]: r["loss"] for r in log if "loss" in r}
    assert double.keys() == single.keys()
    for step, loss in single.items():
        assert double[step] == pytest.approx(loss, abs=1e-5), step
    assert (tmp_path / "two" / "task_head.safetensors").exists()
