"""`bertkit serve`: real HTTP on 127.0.0.1 against a running uvicorn server, and the page in a real
headless Chromium (Playwright)."""

import asyncio
import glob
import importlib.util
import json
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="bertkit serve needs fastapi and uvicorn: pip install 'bertkit[serve]'")
import uvicorn  # noqa: E402

from bertkit import Encoder, Tokenizer, add_pretraining_heads, embed, preset, save_pretrained  # noqa: E402
from bertkit.data.readers import word_example  # noqa: E402
from bertkit.fill_mask import fill_mask  # noqa: E402
from bertkit.predict import predict_examples, prediction_record  # noqa: E402
from bertkit.serve import (Call, Gatherer, Job, ModelPool, ModelProcess, ReplyReader, RequestError,  # noqa: E402
                           RequestTokenizer, ServeConfig, Service, build_app, load_service, reply_frame)
from bertkit.tasks import TaskSpec  # noqa: E402
from bertkit.tasks.model import TaskModel, save_task_model  # noqa: E402
from loopback import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# [the marked texts, the whole text] of the page's entity view, without the labels it adds (a space and
# the label after each entity)
SHOWN_ENTITIES = """() => { const shown = document.getElementById("entities").cloneNode(true);
  shown.querySelectorAll("small").forEach((label) => label.remove());
  const marks = [...shown.querySelectorAll("mark")].map((mark) => mark.textContent = mark.textContent.slice(0, -1));
  return [marks, shown.textContent]; }"""


def call(url: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, object]:
    """(status, JSON answer) of a request to the server at `url`: a POST of `body` as JSON (or `raw`), else a GET."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def started(process: subprocess.Popen, port: int, what: str) -> str:
    """The URL of the server that `process` runs on `port`, once it answers /health (120 s at most)."""
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return call(url, "/health")[0] == 200
        except OSError:
            return False

    wait_until(lambda: process.poll() is not None or answers(), seconds=120, what=f"{what} answering /health")
    assert process.poll() is None, f"{what} ended with exit code {process.returncode}"
    return url


class Server:
    """The app of `service` served by uvicorn in a thread, on a free port."""

    def __init__(self, service: Service):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(build_app(service), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, path: str, body=None, raw: bytes | None = None) -> tuple[int, object]:
        return call(self.url, path, body, raw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def minilm_server(minilm_dir):
    server = Server(load_service(minilm_dir, config=ServeConfig(precision="fp32", max_inputs=8, max_body_bytes=20_000)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm_dir):
    """A tiny encoder with an MLM head, a tiny NER tagger, a classifier and a sentence-pair classifier that
    truncates (untrained: the shapes are what is tested)."""
    out = tmp_path_factory.mktemp("serve-models")
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=tokenizer.vocab_size)
    save_pretrained(add_pretraining_heads(Encoder(config), mlm=True), out / "mlm")
    tokenizer.save(out / "mlm")
    spec = TaskSpec("tag", ("B-LOC", "B-PER", "I-LOC", "I-PER", "O"))
    save_task_model(TaskModel(Encoder(config), spec), tokenizer, out / "tagger")
    spec = TaskSpec("classify", ("negative", "positive"))
    save_task_model(TaskModel(Encoder(config), spec), tokenizer, out / "classifier")
    spec = TaskSpec("pair", ("contradiction", "entailment", "neutral"), pair=True, overflow="truncate")
    save_task_model(TaskModel(Encoder(config), spec), tokenizer, out / "nli")
    return out


def test_health_info_and_the_page(minilm_server):
    assert minilm_server.call("/health") == (200, {"status": "ok"})
    status, info = minilm_server.call("/info")
    assert status == 200 and info["abilities"] == ["embed"] and info["hidden_size"] == 384
    with urllib.request.urlopen(minilm_server.url + "/") as response:
        assert response.status == 200 and "Compare sentences" in response.read().decode()


def test_embed_answers_as_text_embeddings_inference_and_openai_do(minilm_server, minilm, sts_sentences):
    texts = sts_sentences[:5]
    expected = embed(*minilm, texts, precision="fp32", normalize=True, progress=False)
    status, vectors = minilm_server.call("/embed", {"inputs": texts})
    assert status == 200 and np.allclose(vectors, expected, atol=1e-5)
    status, one = minilm_server.call("/embed", {"inputs": texts[0], "normalize": False})
    raw = embed(*minilm, texts[:1], precision="fp32", progress=False)
    assert status == 200 and np.allclose(one, raw, atol=1e-5)
    status, reply = minilm_server.call("/v1/embeddings", {"input": texts, "model": "minilm"})
    assert status == 200 and reply["object"] == "list" and reply["model"] == "minilm"
    assert [d["index"] for d in reply["data"]] == list(range(5)) and reply["data"][0]["object"] == "embedding"
    assert np.allclose([d["embedding"] for d in reply["data"]], expected, atol=1e-5)
    tokens = sum(len(e.ids) for e in minilm[1].encode(texts).rows)
    assert reply["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(minilm_server, minilm, sts_sentences):
    requests = [sts_sentences[i * 3:i * 3 + 1 + i % 3] for i in range(32)]
    expected = [embed(*minilm, texts, precision="fp32", normalize=True, progress=False) for texts in requests]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda texts: minilm_server.call("/embed", {"inputs": texts}), requests))
    for (status, vectors), want in zip(replies, expected):
        assert status == 200 and np.allclose(vectors, want, atol=1e-5)


class Inbox(queue.Queue):
    """A queue that records how long each `get` would wait for an item."""

    def __init__(self):
        super().__init__()
        self.waits: list[float | None] = []

    def get(self, block: bool = True, timeout: float | None = None):
        self.waits.append(timeout)
        return super().get(block, timeout)


def test_a_batch_gathers_for_wait_ms_from_when_the_model_is_free_and_a_job_has_come(minilm):
    """Under load, the jobs queued while the model ran wait wait_ms more from when it is free, for the
    requests of the clients it has just answered, up to the caps; a call waits for the next turn. On an
    idle server the first job waits wait_ms from its arrival, and a job that comes meanwhile joins it."""
    tokenize = RequestTokenizer(minilm[1], 512)
    inbox, wait = Inbox(), 0.05
    gatherer = Gatherer(inbox, ServeConfig(wait_ms=1000 * wait, max_batch=4))

    def job(text: str, waited: float, texts: int = 1) -> Job:
        return Job(text, tokenize([text] * texts, False), True, time.monotonic() - waited)

    for item in (job("a", 2 * wait), job("b", wait), Call(1, "fill_mask", ("a [MASK]", 5))):
        inbox.put(item)
    assert [j.id for j in gatherer.next()] == ["a", "b"]
    assert inbox.waits[0] is None and 0.8 * wait < inbox.waits[1] <= wait  # from when the model was free
    assert gatherer.next() == Call(1, "fill_mask", ("a [MASK]", 5))
    inbox.waits.clear()
    inbox.put(job("c", -wait / 2))  # comes after the model is free
    inbox.put(job("d", -wait))
    assert [j.id for j in gatherer.next()] == ["c", "d"] and wait < inbox.waits[1] <= 1.5 * wait
    inbox.put(job("five", 1.0, texts=5))
    inbox.put(job("e", 1.0))
    assert [j.id for j in gatherer.next()] == ["five"]  # one job over the cap runs alone (in pieces)
    assert [j.id for j in gatherer.next()] == ["e"]


def test_long_and_short_requests_in_one_batch_embed_as_the_library_does(tiny_models):
    service = load_service(tiny_models / "mlm", config=ServeConfig(precision="fp32"))
    model, tokenizer = service.encoder, service.tokenizer
    limit = model.config.max_length
    long_text, short = " ".join(["word"] * (limit + 20)), ["A man plays a guitar.", "Paris in spring."]
    with pytest.raises(RequestError, match=f"input 1 has {limit + 22} tokens, more than the model's {limit}"):
        service.tokenize([short[0], long_text], False)
    jobs = [Job(0, service.tokenize([short[0], long_text], True), False, 0.0), Job(1, service.tokenize(short, False), True, 0.0)]
    (cut, cut_tokens), (plain, plain_tokens) = service.embed_jobs(jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns that it truncated
        assert np.allclose(cut, embed(model, tokenizer, [short[0], long_text], overflow="truncate",
                                      precision="fp32", progress=False), atol=1e-5)
        assert cut_tokens == tokenizer.encode([short[0], long_text], overflow="truncate").lengths.sum()
    assert np.allclose(plain, embed(model, tokenizer, short, normalize=True, precision="fp32", progress=False), atol=1e-5)
    assert plain_tokens == tokenizer.encode(short).lengths.sum()


class Unloadable(Exception):
    def __init__(self, path: str, line: int):  # pickles, but does not load: its args are the message only
        super().__init__(f"{path}:{line}: broken")


def test_answers_that_do_not_pickle_or_load_fail_their_own_request_only():
    async def settled() -> list:
        model = ModelProcess(None)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]
        model.waiting = dict(enumerate(futures))
        answers = [(0, True, [1.0, 2.0]), (1, False, Unloadable("a.txt", 3)), (2, False, StopIteration()),
                   (3, True, lambda: None), (4, False, RequestError(413, "too long"))]
        reader = ReplyReader(model, None)
        data = reply_frame(answers)
        reader.data_received(data[:7])  # the pipe may hand over a message in pieces
        reader.data_received(data[7:])
        return [f.result() if f.exception() is None else f.exception() for f in futures]

    ok, unloadable, stop, unpicklable, request = asyncio.run(settled())
    assert ok == [1.0, 2.0]
    assert isinstance(unloadable, RuntimeError) and "could not be read" in str(unloadable)
    assert isinstance(stop, RuntimeError) and "StopIteration" in str(stop)
    assert isinstance(unpicklable, RuntimeError) and "could not be sent" in str(unpicklable)
    assert isinstance(request, RequestError) and request.status == 413


@pytest.mark.parametrize("body, raw, status, message", [
    (None, b"{not json", 400, "not JSON"),
    (None, b'{"inputs": "caf\xe9"}', 400, "not valid UTF-8"),
    (None, b'{"inputs": "' + b"a" * 30_000 + b'"}', 413, "larger than|at most"),
    ({"inputs": ["a"] * 9}, None, 413, "9 inputs in one request; this server takes at most 8"),
    ({"inputs": 3}, None, 422, "must be a string or a non-empty list"),
    ({"inputs": ["ok", 7]}, None, 422, r"inputs\[1\] must be a string"),
    ({"inputs": []}, None, 422, "non-empty list"),
    ({"text": "a"}, None, 422, "the body needs 'inputs'"),
    ({"inputs": "a", "normalize": "yes"}, None, 422, "'normalize' must be true or false"),
    ({"inputs": ["fine", "word " * 600]}, None, 413, "input 1 has 602 tokens, more than the model's 512"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_goes_on(minilm_server, body, raw, status, message):
    import re
    got, reply = minilm_server.call("/embed", body, raw)
    assert got == status and re.search(message, reply["error"]), reply
    assert minilm_server.call("/embed", {"inputs": ["still serving"]})[0] == 200


def test_long_inputs_are_cut_when_asked_and_openai_errors_have_openai_shape(minilm_server):
    status, vectors = minilm_server.call("/embed", {"inputs": ["word " * 600], "truncate": True})
    assert status == 200 and len(vectors) == 1
    status, reply = minilm_server.call("/v1/embeddings", {"input": 5})
    assert status == 422 and "must be a string" in reply["error"]["message"]
    status, reply = minilm_server.call("/predict", {"inputs": ["a"]})
    assert status == 404 and "cannot predict" in reply["error"]


def test_fill_mask_predict_and_explain(tiny_models):
    mlm = Server(load_service(tiny_models / "mlm"))
    try:
        status, masks = mlm.call("/fill-mask", {"inputs": "Paris is the [MASK] of France.", "top_k": 3})
        assert status == 200 and len(masks) == 1 and len(masks[0]) == 3 and {"token", "probability"} <= set(masks[0][0])
        assert mlm.call("/fill-mask", {"inputs": "no mask here"})[0] == 422
        status, error = mlm.call("/fill-mask", {"inputs": "[MASK] " + "word " * 600})
        assert status == 413 and "more than the model's 512" in error["error"] and "truncate" not in error["error"]
    finally:
        mlm.stop()
    tagger = Server(load_service(tiny_models / "tagger"))
    try:
        status, [prediction] = tagger.call("/predict", {"inputs": "Angela Merkel visited Paris."})
        assert status == 200 and len(prediction["tags"]) == 5
        for entity in prediction["entities"]:
            assert "Angela Merkel visited Paris."[entity["start"]:entity["end"]] == entity["text"]
        assert tagger.call("/predict", {"inputs": [["a", "b"]]})[0] == 422  # not a pair model
        assert tagger.call("/explain", {"inputs": "a"})[0] == 404  # word importances are for classifiers
    finally:
        tagger.stop()
    pytest.importorskip("captum")
    classifier = Server(load_service(tiny_models / "classifier"))
    try:
        status, [prediction] = classifier.call("/predict", {"inputs": "A tedious film."})
        assert status == 200 and set(prediction["probabilities"]) == {"negative", "positive"}
        status, found = classifier.call("/explain", {"inputs": "A tedious film."})
        assert status == 200 and found["words"] == ["A", "tedious", "film."] and len(found["scores"]) == 3
        assert found["label"] == prediction["label"]
    finally:
        classifier.stop()


def test_a_pair_is_measured_as_the_model_reads_it_and_too_long_is_a_413_unless_truncating(tiny_models):
    nli = Server(load_service(tiny_models / "nli"))
    first, second = "word " * 300, "other " * 300  # 302 tokens alone each, 603 read together
    try:
        status, error = nli.call("/predict", {"inputs": [["a", "b"], [first, second]]})
        assert status == 413 and "input 1 has 603 tokens, more than the model's 512" in error["error"]
        status, [prediction] = nli.call("/predict", {"inputs": [[first, second]], "truncate": True})
        assert status == 200 and set(prediction["probabilities"]) == {"contradiction", "entailment", "neutral"}
        status, error = nli.call("/predict", {"inputs": ["a single text"]})
        assert status == 422 and "pairs of texts" in error["error"]
        pytest.importorskip("captum")
        status, error = nli.call("/explain", {"inputs": first, "pair": second})
        assert status == 413 and "603 tokens" in error["error"]
        status, found = nli.call("/explain", {"inputs": first, "pair": second, "truncate": True})
        assert status == 200 and len(found["words"]) == 512 - 3 and len(found["unscored"]) == 600 - 509
        status, error = nli.call("/explain", {"inputs": "a single text"})
        assert status == 422 and "pairs of texts" in error["error"]
    finally:
        nli.stop()


def long_texts(sts_sentences: list[str]) -> list[str]:
    """128 texts of about 80 tokens: about 1.5 s in all-MiniLM-L6-v2 in fp32 on two threads, 3 s on one."""
    return [" ".join(sts_sentences[i:i + 5]) for i in range(0, 640, 5)]


def wait_until(condition, seconds: float = 60, what: str = "the condition") -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"{what} did not hold within {seconds} s"
        time.sleep(0.01)


def test_a_model_process_killed_mid_batch_fails_that_batch_the_other_serves_and_a_new_one_starts(minilm_dir,
                                                                                                 sts_sentences):
    server = Server(load_service(minilm_dir, config=ServeConfig(precision="fp32", workers=2)))
    pool = server.server.config.app.state.model
    try:
        busy, other = pool.processes
        killed, spared = busy.process.pid, other.process.pid
        with ThreadPoolExecutor(1) as threads:
            reply = threads.submit(server.call, "/embed", {"inputs": long_texts(sts_sentences)})
            wait_until(lambda: busy.outstanding == 128, what="the long request reaching the first process")
            time.sleep(0.3)  # in the model
            os.kill(killed, signal.SIGKILL)  # what the kernel's out-of-memory killer does
            status, error = reply.result(timeout=60)
        assert status == 500 and "the model process ended abruptly" in error["error"]
        status, vectors = server.call("/embed", {"inputs": sts_sentences[:3]})  # by the live one
        assert status == 200 and len(vectors) == 3
        wait_until(lambda: busy.process is not None, what="a new model process")
        assert busy.process.pid != killed and other.process.pid == spared
        status, vectors = server.call("/embed", {"inputs": sts_sentences[:3]})
        assert status == 200 and len(vectors) == 3
    finally:
        server.stop()


def test_with_two_model_processes_a_short_request_is_answered_while_a_long_one_runs(minilm_dir, sts_sentences):
    server = Server(load_service(minilm_dir, config=ServeConfig(precision="fp32", workers=2)))
    first = server.server.config.app.state.model.processes[0]
    try:
        with ThreadPoolExecutor(1) as threads:
            long = threads.submit(server.call, "/embed", {"inputs": long_texts(sts_sentences)})
            wait_until(lambda: first.outstanding == 128, what="the long request reaching the first process")
            status, vectors = server.call("/embed", {"inputs": sts_sentences[:2]})
            assert status == 200 and len(vectors) == 2
            assert not long.done()  # one model process would have answered it after the long one
            status, vectors = long.result(timeout=60)
        assert status == 200 and len(vectors) == 128
    finally:
        server.stop()


def test_the_model_processes_share_out_the_threads_and_bad_settings_are_refused(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert [p.threads for p in ModelPool(Service(None, None, "m", config=ServeConfig(workers=2))).processes] == [2, 1]
    assert [p.threads for p in ModelPool(Service(None, None, "m", config=ServeConfig(workers=4))).processes] == [1] * 4
    with pytest.raises(ValueError, match="workers must be at least 1, not 0"):
        ServeConfig(workers=0)
    with pytest.raises(ValueError, match="wait_ms must be 0 or more"):
        ServeConfig(wait_ms=-1)


def test_a_request_that_fails_or_is_cancelled_leaves_no_texts_outstanding(monkeypatch):
    async def outstanding_after(running) -> int:
        model = ModelProcess(None)
        monkeypatch.setattr(model, "running", running)
        task = asyncio.ensure_future(model.embed(["a", "b"], False, True))
        await asyncio.sleep(0.01)
        assert model.outstanding == 2 or task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return model.outstanding

    async def fails():
        raise RuntimeError("no process")

    async def hangs():
        await asyncio.sleep(3600)

    assert asyncio.run(outstanding_after(fails)) == 0
    assert asyncio.run(outstanding_after(hangs)) == 0


def test_a_ctrl_c_while_the_model_process_starts_does_not_end_it(tiny_models):
    model = ModelProcess(load_service(tiny_models / "mlm"))
    before = set(multiprocessing.active_children())

    async def start_then_embed() -> tuple[np.ndarray, bool]:
        await model.running()
        try:
            vectors, _ = await model.embed(["still here"], False, True)
            return vectors, model.process.is_alive()
        finally:
            await model.stop()

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(asyncio.run, start_then_embed())
        deadline = time.time() + 60
        while not (spawned := set(multiprocessing.active_children()) - before) and time.time() < deadline:
            time.sleep(0.001)
        assert spawned, "no model process started within 60 s"
        [process] = spawned
        os.kill(process.pid, signal.SIGINT)  # while it imports: Ctrl-C in a terminal reaches the whole group
        vectors, alive = answer.result(timeout=120)
    assert len(vectors) == 1 and alive
    process.join(timeout=30)
    assert not process.is_alive()
    with pytest.raises(RuntimeError, match="the server is stopping"):  # a stopped model process stays stopped
        asyncio.run(model.embed(["too late"], False, True))


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads the processes from Linux's /proc")
def test_the_model_processes_end_with_a_killed_server(tiny_models):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bertkit.cli", "serve", "--model", str(tiny_models / "mlm"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started(server, port, "bertkit serve")
        tasks = glob.glob(f"/proc/{server.pid}/task/*")  # a child belongs to the thread that started it
        children = [c for task in tasks for c in open(f"{task}/children").read().split()]
        model_pids = [int(c) for c in children if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]
        assert len(model_pids) == ServeConfig.workers
        server.kill()
        server.wait()
        deadline = time.time() + 30
        while any(map(_running, model_pids)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(map(_running, model_pids))
    finally:
        server.kill()
        server.wait()


def test_a_script_without_the_main_guard_serves_and_is_told_to_add_it(tiny_models, tmp_path):
    """The model processes import the script: there its call of serve() returns at once, with a warning at
    its line, and the server answers."""
    port, script, log = free_port(), tmp_path / "unguarded.py", tmp_path / "stderr.txt"
    script.write_text("from bertkit.serve import load_service, serve\n"
                      f"serve(load_service({str(tiny_models / 'mlm')!r}), port={port})\n")
    with open(log, "w") as stderr, subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                                                    stderr=stderr) as server:
        try:
            url = started(server, port, f"the server of a script without the guard (its stderr: {log})")
            status, vectors = call(url, "/embed", {"inputs": ["a test"]})
            assert status == 200 and len(vectors) == 1, log.read_text()
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        finally:
            server.kill()
    warning = f"{script}:2: RuntimeWarning: this script calls bertkit.serve.serve() without an `if __name__"
    assert log.read_text().count(warning) == ServeConfig.workers, log.read_text()


def test_in_bf16_the_service_answers_as_the_library_does_and_keeps_its_fp32_layers(tiny_models):
    """bf16 serving answers as the library's bf16 calls do, call after call (the second runs on the bf16
    layers the first made), and the model's own layers stay fp32 (explanations read them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 is emulated on CPUs without AVX-512 BF16: slow, not wrong
        mlm = load_service(tiny_models / "mlm", config=ServeConfig(precision="bf16"))
        texts = ["Paris is the capital of France.", "A man plays a guitar in the park."]
        expected = embed(mlm.encoder, mlm.tokenizer, texts, precision="bf16", progress=False)
        for _ in range(2):  # the second call runs on the copies the first made
            assert np.array_equal(mlm.embed(texts), expected)
        text = "Paris is the [MASK] of France."
        assert mlm.fill_mask(text, 3) == fill_mask(mlm.encoder, mlm.tokenizer, text, 3, "bf16")
        tagger = load_service(tiny_models / "tagger", config=ServeConfig(precision="bf16"))
        text = "Angela Merkel visited Paris."
        example = word_example(text, tagger.tokenizer.pre_tokenize, "inputs[0]")
        [prediction] = predict_examples(tagger.task_model, tagger.tokenizer, [example], 32, "bf16")
        assert tagger.predict([text]) == [prediction_record(example, prediction)]
    for model in (mlm.encoder, tagger.task_model):
        assert all(m.weight.dtype == torch.float32 for m in model.modules() if isinstance(m, torch.nn.Linear))


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven through Playwright."""
    if not os.path.exists(CHROMIUM) or not shutil.which("chromium"):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_the_page_in_a_real_browser_compares_sentences(minilm_server, browser, tmp_path):
    page = browser.new_page()
    page.goto(minilm_server.url + "/")
    page.fill("#compare-input", "A man is playing a guitar.\nSomeone is playing an instrument.\n"
                                "A woman is slicing an onion.")
    page.click("#compare-button")
    page.wait_for_selector("#similarity")
    cells = page.locator("#similarity tr").nth(1).locator("td").all_inner_texts()
    assert [float(c) for c in cells][0] == pytest.approx(1.0, abs=1e-3)
    assert float(cells[1]) > float(cells[2])  # guitar ~ instrument, more than ~ onion
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    page.close()


@pytest.fixture
def page_of(tiny_models, browser):
    """A function: tiny model name -> (its server, the page it serves, loaded in the browser)."""
    opened = []

    def open_page(model: str):
        server = Server(load_service(tiny_models / model))
        page = browser.new_page()
        opened.append((server, page))
        page.goto(server.url + "/")
        page.wait_for_selector("#abilities:not(:empty)")  # the page has read /info
        return server, page

    yield open_page
    for server, page in opened:
        page.close()
        server.stop()


def test_the_page_fills_masks_as_the_api_does(page_of):
    server, page = page_of("mlm")
    page.fill("#fill-input", "Paris is the [MASK] of [MASK].")
    page.click("#fill-button")
    page.wait_for_selector("#fill-output p:nth-child(2)")
    _, masks = server.call("/fill-mask", {"inputs": "Paris is the [MASK] of [MASK].", "top_k": 5})
    shown = [p.locator("b").all_inner_texts() for p in page.locator("#fill-output p").all()]
    assert shown == [[c["token"] for c in candidates] for candidates in masks]


def test_the_page_marks_the_entities_the_api_finds_in_text_with_emoji(page_of):
    server, page = page_of("tagger")
    text = "Ménard 😀 met Angela Merkel in Paris 🇫🇷 and Berlin."  # characters outside the BMP: offsets differ in JS
    page.fill("#predict-input", text)
    page.click("#predict-button")
    page.wait_for_selector("#entities")
    _, [prediction] = server.call("/predict", {"inputs": text})
    marks, shown = page.evaluate(SHOWN_ENTITIES)
    assert prediction["entities"] and marks == [e["text"] for e in prediction["entities"]]
    assert shown == text  # the whole text, each entity where it is


@pytest.mark.parametrize("model", ["classifier", "nli"])
def test_the_page_shows_the_class_probabilities_of_the_api(page_of, model):
    server, page = page_of(model)
    text, pair = "An unbelievably tedious film.", "The film is boring."
    page.fill("#predict-input", text)
    if model == "nli":
        page.fill("#predict-pair", pair)
    page.click("#predict-button")
    page.wait_for_selector("#probabilities")
    _, [prediction] = server.call("/predict", {"inputs": [[text, pair] if model == "nli" else text]})
    rows = [r.inner_text().split() for r in page.locator("#probabilities tr").all()]
    assert {label: float(p) for label, p in rows} == pytest.approx(prediction["probabilities"], abs=1e-3)
    if model == "classifier" and importlib.util.find_spec("captum"):
        page.click("#explain-button")
        page.wait_for_selector("#importances")
        _, found = server.call("/explain", {"inputs": text})
        assert page.locator("#importances span").all_inner_texts() == found["words"]


def test_shutdown_finishes_the_requests_in_flight(minilm_dir, sts_sentences):
    server = Server(load_service(minilm_dir, config=ServeConfig(precision="fp32")))
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(server.call, "/embed", {"inputs": sts_sentences[:256]})
        time.sleep(0.3)  # the request is in the model
        server.server.should_exit = True  # what SIGTERM / Ctrl-C set
        status, vectors = reply.result(timeout=120)
    server.thread.join(timeout=60)
    assert status == 200 and len(vectors) == 256 and not server.thread.is_alive()
