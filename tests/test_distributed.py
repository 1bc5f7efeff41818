"""Two processes under DistributedDataParallel or FSDP (gloo, CPU) follow one process's loss curve
(checkpointing every step, which gathers the full states on every rank)."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_job import run  # noqa: E402

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, strategy: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        records, _ = run(Path(out), STEPS, micro_batches=2, dropout=0.0, strategy=strategy)
        if rank == 0:
            Path(out, "losses.json").write_text(json.dumps({r["step"]: r["loss"] for r in records if "loss" in r}))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, strategy):
    single, _ = run(tmp_path / "single", STEPS, micro_batches=1, dropout=0.0)
    expected = {r["step"]: r["loss"] for r in single if "loss" in r}
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), strategy), nprocs=2, join=True)
    got = {int(k): v for k, v in json.loads((tmp_path / "ddp" / "losses.json").read_text()).items()}
    assert got.keys() == expected.keys()
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step
