"""serve: `bertkit serve` under load, against offline `embed` and the FastAPI app most people write.

16 client threads post to `/embed` for `--seconds` each (loopback only): requests of 1 to 8 STS-B
sentences drawn at random, every 8th request a bad one (invalid JSON, a wrong type, an input too
long, invalid UTF-8, in turn) that must get a 4xx. Reported: failed good requests (target 0), bad
requests not answered with a 4xx, p50 / p99 latency of the good ones, and throughput in sentences/s,
against

- offline `bertkit.embed` of as many sentences in batches of 32 at the same precision (target: the
  server reaches >= 70% of it), and
- a plain FastAPI app that calls sentence-transformers' `encode` once per request (target: bertkit
  serves >= 3x its sentences/s), run under the same load.

Each server is its own process (`bertkit serve`, or this file with `--naive-app`) with 2 torch threads
(OMP_NUM_THREADS; `bertkit serve` shares them out among its model processes, one each by default), the
clients in this process. Both servers run on the same machine in the same run: the seconds are
split into `--rounds` slices, each round loading our server, then embedding offline as many
sentences as it served, then loading the plain app, so that a slow spell of a shared machine falls
on all three alike (the ratios of single rounds are reported too). all-MiniLM-L6-v2, precision `auto`
(bertkit's server and offline embed; `--dtype int8` for both, recorded as serve-int8 with the machine's
suffix; the plain app keeps sentence-transformers' fp32).

    python benchmarks/bench_serve.py [--seconds 60] [--clients 16] [--rounds 6] [--dtype auto]
"""

# no `from __future__ import annotations`: FastAPI reads the naive app's annotations at run time

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DTYPE_NAMES, minilm_dir, write_results  # noqa: E402

BAD_REQUESTS = [b"{not json", b'{"inputs": 5}', json.dumps({"inputs": ["word " * 600]}).encode(),
                b'{"inputs": "caf\xe9"}']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def naive_app(port: int) -> None:
    """The app most people write: one `encode` call per request."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(2)
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    app = FastAPI()

    class Body(BaseModel):
        inputs: str | list[str]

    @app.post("/embed")
    def embed(body: Body):
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        return model.encode(texts, normalize_embeddings=True).tolist()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not become healthy")


def load(port: int, sentences: list[str], clients: int, seconds: float, seed: int = 0) -> dict:
    """`clients` threads posting for `seconds`; latencies of good requests, failures, sentences served."""
    stop = time.perf_counter() + seconds
    results: list[dict] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        rng = random.Random(seed * 1000 + c)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = {"latencies": [], "failed": 0, "sentences": 0, "bad_not_4xx": 0, "bad": 0}
        n = 0
        while time.perf_counter() < stop:
            n += 1
            bad = n % 8 == 0
            body = (BAD_REQUESTS[(n // 8) % len(BAD_REQUESTS)] if bad
                    else json.dumps({"inputs": rng.sample(sentences, rng.randint(1, 8))}).encode())
            began = time.perf_counter()
            try:
                connection.request("POST", "/embed", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
            except OSError:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                mine["bad_not_4xx" if bad else "failed"] += 1
                continue
            if bad:
                mine["bad"] += 1
                mine["bad_not_4xx"] += not 400 <= response.status < 500
            elif response.status == 200:
                mine["latencies"].append(time.perf_counter() - began)
                mine["sentences"] += len(json.loads(payload))
            else:
                mine["failed"] += 1
        with lock:
            results.append(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - began, "latencies": [x for r in results for x in r["latencies"]],
            **{key: sum(r[key] for r in results) for key in ("failed", "sentences", "bad", "bad_not_4xx")}}


def rate(run: dict) -> float:
    """Sentences per second of a load slice, an offline run, or their sums."""
    return run["sentences"] / run["seconds"]


def summary(slices: list[dict]) -> dict:
    """The load slices of one server (or offline runs), together."""
    total = {key: sum(s[key] for s in slices) for key in ("sentences", "seconds")}
    if "latencies" not in slices[0]:  # offline embed
        return {**total, "sentences_per_s": rate(total)}
    latencies = np.array([x for s in slices for x in s["latencies"]])
    return {"good_requests": int(latencies.size), "failed_good_requests": sum(s["failed"] for s in slices),
            "bad_requests": sum(s["bad"] for s in slices), "bad_not_4xx": sum(s["bad_not_4xx"] for s in slices),
            **total, "sentences_per_s": rate(total),
            "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies.size else None,
            "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies.size else None}


def start_server(command: list[str]) -> tuple[int, subprocess.Popen]:
    """Start the server `command` (which takes the port as its last argument); its port and process."""
    port = free_port()
    process = subprocess.Popen(command + [str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "2"})  # bertkit serve's torch threads
    try:
        wait_healthy(port, process)
    except BaseException:
        process.terminate()
        process.wait()
        raise
    return port, process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="slices the seconds are split into, alternating")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                        help="bertkit's precision, in the server and offline alike")
    parser.add_argument("--naive-app", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_app:
        return naive_app(args.naive_app)
    import bertkit
    from bertkit.precision import resolve
    torch.set_num_threads(2)
    sentences = [line.split("\t")[5] for line in open(DATA / "stsb" / "sts-dev.csv", encoding="utf-8")]
    dtype = DTYPE_NAMES[resolve(args.dtype)]
    model, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    names = {"ours": "bertkit serve", "offline": "offline bertkit.embed",
             "naive": "FastAPI + sentence-transformers encode per request"}
    commands = {"ours": [sys.executable, "-m", "bertkit.cli", "serve", "--model", str(minilm_dir()),
                         "--dtype", args.dtype, "--port"], "naive": [sys.executable, __file__, "--naive-app"]}
    servers = {}
    slices: dict[str, list[dict]] = {key: [] for key in names}
    try:
        for key, command in commands.items():
            servers[key] = start_server(command)
        for r in range(args.rounds):  # alternating, so that a slow spell of a shared machine hits all three
            slices["ours"].append(load(servers["ours"][0], sentences, args.clients, args.seconds / args.rounds, r))
            served = slices["ours"][-1]["sentences"]
            texts = random.Random(r).choices(sentences, k=served)
            began = time.perf_counter()
            bertkit.embed(model, tokenizer, texts, normalize=True, batch_size=32, precision=args.dtype, progress=False)
            slices["offline"].append({"sentences": served, "seconds": time.perf_counter() - began})
            slices["naive"].append(load(servers["naive"][0], sentences, args.clients, args.seconds / args.rounds, r))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{names[key]} {rate(s[-1]):.0f}" for key, s in slices.items()) + " sentences/s")
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait()
    rows = {names[key]: summary(slices[key]) for key in ("ours", "naive", "offline")}
    ours = rows[names["ours"]]["sentences_per_s"]
    ratios = {}
    for key, label, target in (("offline", "offline embed", ">= 0.7"), ("naive", "FastAPI + sentence-transformers", ">= 3")):
        per_round = [rate(a) / rate(b) for a, b in zip(slices["ours"], slices[key])]
        ratios[f"bertkit serve / {label}"] = (ours / rows[names[key]]["sentences_per_s"], min(per_round),
                                              max(per_round), target)
    table = [f"{args.clients} clients for {args.seconds:g} s per server, in {args.rounds} slices alternating with the "
             f"other server and offline embed; loopback, requests of 1-8 STS-B dev sentences, every 8th request a bad "
             f"one; all-MiniLM-L6-v2, {dtype}, 2 torch threads per server.\n",
             "| run | good requests | failed good | bad requests (not 4xx) | p50 ms | p99 ms | sentences/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if "good_requests" in r:
            table.append(f"| {name} | {r['good_requests']} | {r['failed_good_requests']} | {r['bad_requests']} "
                         f"({r['bad_not_4xx']}) | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['sentences_per_s']:.0f} |")
        else:
            table.append(f"| {name} (batches of 32, the sentences each slice served) | | | | | | "
                         f"{r['sentences_per_s']:.0f} |")
    table += ["", "| ratio | overall | rounds (min - max) | target |", "|---|---:|---:|---:|"]
    table += [f"| {k} | {v:.2f}x | {lo:.2f}x - {hi:.2f}x | {t} |" for k, (v, lo, hi, t) in ratios.items()]
    text = "\n".join(table)
    print(text)
    asked = "" if args.dtype == "auto" else f"-{args.dtype}"
    command = (f"python benchmarks/bench_serve.py --seconds {args.seconds:g} --clients {args.clients} "
               f"--rounds {args.rounds}" + (f" --dtype {args.dtype}" if asked else ""))
    kept_slices = {key: [{k: v for k, v in s.items() if k != "latencies"} for s in kept]
                   for key, kept in slices.items()}
    write_results(f"serve{asked}", command, {"dtype": dtype, "runs": rows, "slices": kept_slices,
                                             "ratios": {k: v[:3] for k, v in ratios.items()}}, text)


if __name__ == "__main__":
    main()
