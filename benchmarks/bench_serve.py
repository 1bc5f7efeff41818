"""serve: `bertkit serve` under load, against offline `embed` and the FastAPI app most people write.

16 client threads post to `/embed` for `--seconds` each (loopback only): requests of 1 to 8 STS-B
sentences drawn at random, every 8th request a bad one (invalid JSON, a wrong type, an input too
long, invalid UTF-8, in turn) that must get a 4xx. Reported: failed good requests (target 0), bad
requests not answered with a 4xx, p50 / p99 latency of the good ones, and throughput in sentences/s,
against

- offline `bertkit.embed` of the same number of sentences in batches of 32 at the same precision
  (target: the server reaches >= 70% of it), and
- a plain FastAPI app that calls sentence-transformers' `encode` once per request (target: bertkit
  serves >= 3x its sentences/s), run under the same load.

Each server is its own process (`bertkit serve`, or this file with `--naive-app`), 2 torch threads,
the clients in this process; both servers run on the same machine in the same run, one after the
other. all-MiniLM-L6-v2, precision `auto`.

    python benchmarks/bench_serve.py [--seconds 60] [--clients 16]
"""

# no `from __future__ import annotations`: FastAPI reads the naive app's annotations at run time

import argparse
import http.client
import json
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
from common import DATA, median, minilm_dir, write_results  # noqa: E402

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
    elapsed = time.perf_counter() - began
    latencies = np.array([x for r in results for x in r["latencies"]])
    return {"good_requests": int(latencies.size), "failed_good_requests": sum(r["failed"] for r in results),
            "bad_requests": sum(r["bad"] for r in results), "bad_not_4xx": sum(r["bad_not_4xx"] for r in results),
            "sentences": sum(r["sentences"] for r in results), "seconds": elapsed,
            "sentences_per_s": sum(r["sentences"] for r in results) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies.size else None,
            "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies.size else None}


def load_server(command: list[str], sentences: list[str], clients: int, seconds: float) -> dict:
    """Start the server `command` (which takes the port as its last argument), put it under `load`,
    stop it."""
    port = free_port()
    process = subprocess.Popen(command + [str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, process)
        return load(port, sentences, clients, seconds)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--naive-app", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_app:
        return naive_app(args.naive_app)
    import bertkit
    from bertkit.precision import resolve
    torch.set_num_threads(2)
    sentences = [line.split("\t")[5] for line in open(DATA / "stsb" / "sts-dev.csv", encoding="utf-8")]
    dtype = "bf16" if resolve("auto") == torch.bfloat16 else "fp32"
    rows = {}
    rows["bertkit serve"] = load_server([sys.executable, "-m", "bertkit.cli", "serve", "--model", str(minilm_dir()),
                                         "--dtype", "auto", "--port"], sentences, args.clients, args.seconds)
    served = rows["bertkit serve"]["sentences"]
    model, tokenizer = bertkit.load_pretrained(minilm_dir()), bertkit.Tokenizer.from_pretrained(minilm_dir())
    offline_texts = (sentences * (served // len(sentences) + 1))[:served]
    random.Random(0).shuffle(offline_texts)
    times = []
    for _ in range(3):
        began = time.perf_counter()
        bertkit.embed(model, tokenizer, offline_texts, normalize=True, batch_size=32, progress=False)
        times.append(time.perf_counter() - began)
    rows["offline bertkit.embed"] = {"sentences": served, "seconds": median(times),
                                     "sentences_per_s": served / median(times)}
    rows["FastAPI + sentence-transformers encode per request"] = load_server(
        [sys.executable, __file__, "--naive-app"], sentences, args.clients, args.seconds)
    ours = rows["bertkit serve"]["sentences_per_s"]
    ratios = {"bertkit serve / offline embed": (ours / rows["offline bertkit.embed"]["sentences_per_s"], ">= 0.7"),
              "bertkit serve / FastAPI + sentence-transformers": (
                  ours / rows["FastAPI + sentence-transformers encode per request"]["sentences_per_s"], ">= 3")}
    table = [f"{args.clients} clients for {args.seconds:g} s each, loopback, requests of 1-8 STS-B dev sentences, every "
             f"8th request a bad one; all-MiniLM-L6-v2, {dtype}, 2 torch threads per server.\n",
             "| run | good requests | failed good | bad requests (not 4xx) | p50 ms | p99 ms | sentences/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if "good_requests" in r:
            table.append(f"| {name} | {r['good_requests']} | {r['failed_good_requests']} | {r['bad_requests']} "
                         f"({r['bad_not_4xx']}) | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['sentences_per_s']:.0f} |")
        else:
            table.append(f"| {name} (batches of 32, median of 3) | | | | | | {r['sentences_per_s']:.0f} |")
    table += ["", "| ratio | value | target |", "|---|---:|---:|"]
    table += [f"| {k} | {v:.2f}x | {t} |" for k, (v, t) in ratios.items()]
    text = "\n".join(table)
    print(text)
    write_results("serve", f"python benchmarks/bench_serve.py --seconds {args.seconds:g} --clients {args.clients}",
                  {"dtype": dtype, "runs": rows, "ratios": {k: v for k, (v, _) in ratios.items()}}, text)


if __name__ == "__main__":
    main()
