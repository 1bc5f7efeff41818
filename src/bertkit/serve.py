"""An HTTP service for one model, with a page to try it: `bertkit serve --model DIR`.

FastAPI routes, served by uvicorn:
- `POST /embed`: the request and response of Hugging Face's text-embeddings-inference
  (`{"inputs": "text" | ["text", ...], "normalize": true, "truncate": false}` -> `[[float, ...], ...]`);
- `POST /v1/embeddings`: OpenAI's (`{"input": "text" | [...], "model": ...}` -> `{"object": "list",
  "data": [{"object": "embedding", "index": i, "embedding": [...]}], "model": ..., "usage": {...}}`);
- `POST /predict` (fine-tuned models): `{"inputs": "text" | [...]}`, pairs as `["first", "second"]`,
  -> what `bertkit predict` writes, one object per input;
- `POST /fill-mask` (models with an MLM head), `POST /explain` (classifiers, with Captum installed);
- `GET /health`, `GET /info` (what this model can do), and `GET /`, the page.

Embedding requests that arrive together are gathered for `wait_ms` and run as one batch (embed
sorts it by length), up to `max_batch` texts and `max_batch_tokens` tokens. The model runs in a process
of its own, one call at a time, so requests never interleave inside it and the event loop's work never
holds up the model's (see ModelProcess). Bad requests get a 4xx JSON error that says
what is wrong (body too large, invalid UTF-8 or JSON, wrong types, too many inputs, an input longer
than the model takes, unless truncation is asked for); an error inside the model is a 500 for that
request only; if the model process dies, its requests get a 500 and the next request starts a new
one. uvicorn finishes requests in flight on SIGTERM / Ctrl-C before it stops.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the routes' annotations at run time
import dataclasses
import functools
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
import torch

from .convert import load_pretrained
from .data.examples import TextExample
from .data.readers import word_example
from .embed import embed
from .explain import word_importance
from .fill_mask import fill_mask
from .model import Encoder
from .predict import predict_examples, prediction_record
from .tasks import kind_of
from .tasks.model import TaskModel, load_task_model
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class ServeConfig:
    precision: str = "auto"
    max_body_bytes: int = 1_000_000
    max_inputs: int = 256  # texts per request
    truncate: bool = False  # default for requests that do not say: cut long inputs instead of refusing them
    max_batch: int = 128  # texts run together
    max_batch_tokens: int = 16_384
    wait_ms: float = 5.0  # how long the first request of a batch waits for others


class RequestError(Exception):
    """A bad request: `status` and a message for the client."""

    def __init__(self, status: int, message: str, kind: str = "Validation"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind

    def __reduce__(self):  # raised in the model process, it reaches the server pickled
        return RequestError, (self.status, self.message, self.kind)


@dataclass
class Job:
    texts: list[str]
    tokens: int
    truncate: bool
    normalize: bool
    future: asyncio.Future
    arrived: float  # the event loop's clock when the job was queued


@dataclass
class Batcher:
    """Gathers concurrent embedding jobs into batches and runs each in the model."""
    run: Callable[[list[str], bool], Awaitable[np.ndarray]]  # (texts, truncate) -> vectors
    config: ServeConfig
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    carried: Job | None = None

    async def embed(self, texts: list[str], tokens: int, truncate: bool, normalize: bool) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = Job(texts, tokens, truncate, normalize, loop.create_future(), loop.time())
        await self.queue.put(job)
        return await job.future

    async def next_batch(self) -> list[Job]:
        """The waiting jobs of one kind (truncate or not), gathered until the first of them has waited
        wait_ms, within the caps. Under load the first job has waited out its wait_ms while the previous
        batch ran, so the model goes on with what is queued at once; an idle server waits for company."""
        loop = asyncio.get_running_loop()
        first = self.carried or await self.queue.get()
        self.carried, batch = None, [first]
        texts, tokens, deadline = len(first.texts), first.tokens, first.arrived + self.config.wait_ms / 1000
        while True:
            while not self.queue.empty():  # get_nowait, not wait_for(get()): a timeout never loses a job
                job = self.queue.get_nowait()
                if (job.truncate != first.truncate or texts + len(job.texts) > self.config.max_batch
                        or tokens + job.tokens > self.config.max_batch_tokens):
                    self.carried = job
                    return batch
                batch.append(job)
                texts, tokens = texts + len(job.texts), tokens + job.tokens
            left = deadline - loop.time()
            if left <= 0:
                return batch
            await asyncio.sleep(min(left, 0.001))

    async def serve_forever(self) -> None:
        while True:
            batch = await self.next_batch()
            texts = [t for job in batch for t in job.texts]
            try:
                vectors = await self.run(texts, batch[0].truncate)
            except Exception as error:  # the model failed: these requests get a 500, the server goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in batch:
                rows = vectors[start:start + len(job.texts)]
                start += len(job.texts)
                if job.normalize:
                    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
                if not job.future.done():  # a client that went away
                    job.future.set_result(rows)


def request_texts(body: dict, key: str, config: ServeConfig, pairs: bool = False) -> list:
    """The request's inputs under `key`: one string or a list of them (with `pairs`, also [a, b])."""
    if key not in body:
        raise RequestError(422, f"the body needs {key!r}: a string or a list of strings")
    value = body[key]
    items = [value] if isinstance(value, str) or (pairs and _is_pair(value)) else value
    if not isinstance(items, list) or not items:
        raise RequestError(422, f"{key!r} must be a string or a non-empty list of strings, not {_type(value)}")
    for i, item in enumerate(items):
        if not (isinstance(item, str) or (pairs and _is_pair(item))):
            what = "a string or a [first, second] pair of strings" if pairs else "a string"
            raise RequestError(422, f"{key}[{i}] must be {what}, not {_type(item)}")
    if len(items) > config.max_inputs:
        raise RequestError(413, f"{len(items)} inputs in one request; this server takes at most {config.max_inputs}")
    return items


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"{key!r} must be true or false, not {_type(value)}")
    return value


@dataclass
class Service:
    """The loaded model and what it can do."""
    encoder: Encoder
    tokenizer: Tokenizer
    name: str
    task_model: TaskModel | None = None
    config: ServeConfig = ServeConfig()

    @functools.cached_property  # read on every request: found once (the model does not change)
    def abilities(self) -> list[str]:
        able = {"embed": True, "fill-mask": self.encoder.mlm_head is not None, "predict": self.task_model is not None,
                "explain": self.task_model is not None and self.task_model.spec.task in ("classify", "pair")
                and importlib.util.find_spec("captum") is not None}
        return [ability for ability, yes in able.items() if yes]

    def info(self) -> dict:
        spec = self.task_model.spec if self.task_model is not None else None
        return {"model": self.name, "hidden_size": self.encoder.config.hidden_size,
                "max_length": self.encoder.config.max_length, "abilities": self.abilities,
                "task": spec.task if spec else None, "labels": list(spec.labels) if spec else [],
                "pair": bool(spec and spec.pair), "precision": self.config.precision}

    def token_counts(self, texts: list[str], truncate: bool) -> list[int]:
        """Tokens of each text (special tokens included); too long is an error unless truncating."""
        limit = self.encoder.config.max_length
        counts = [len(e.ids) for e in self.tokenizer.backend.encode_batch(texts)]
        too_long = [i for i, n in enumerate(counts) if n > limit]
        if too_long and not truncate:
            i = too_long[0]
            raise RequestError(413, f"input {i} has {counts[i]} tokens, more than the model's {limit} "
                               f"({len(too_long)} inputs are too long); send shorter texts or \"truncate\": true")
        return [min(n, limit) for n in counts]

    def embed_batch(self, texts: list[str], truncate: bool) -> np.ndarray:
        """One forward pass for a gathered batch (the batcher caps its texts and tokens; one request of more
        than max_batch texts runs in pieces of max_batch): the same batches embedded in embed's default
        pieces of 32 ran about 20% slower (72 STS-B sentences a call, measured alone)."""
        return embed(self.encoder, self.tokenizer, texts, precision=self.config.precision, progress=False,
                     overflow="truncate" if truncate else "error", batch_size=self.config.max_batch)

    def fill_mask(self, text: str, top_k: int) -> list:
        return fill_mask(self.encoder, self.tokenizer, text, top_k, self.config.precision)

    def predict(self, items: list) -> list[dict]:
        spec = self.task_model.spec
        words = kind_of(spec.task).words
        examples = []
        for i, item in enumerate(items):
            text, pair = (item, None) if isinstance(item, str) else item
            if bool(spec.pair) != (pair is not None):
                raise RequestError(422, f"inputs[{i}]: this model reads "
                                   f"{'[first, second] pairs of texts' if spec.pair else 'single texts, not pairs'}")
            examples.append(word_example(text, self.tokenizer.pre_tokenize, f"inputs[{i}]") if words
                            else TextExample(text, pair, source=f"inputs[{i}]"))
        predictions = predict_examples(self.task_model, self.tokenizer, examples, 32, self.config.precision)
        return [prediction_record(e, p) for e, p in zip(examples, predictions)]

    def explain(self, text: str, pair: str | None) -> dict:
        found = word_importance(self.task_model, self.tokenizer, text, pair, methods=("integrated_gradients",))
        return {"label": found.label, "output": found.output, "words": found.words,
                "scores": found.scores["integrated_gradients"].tolist()}


def load_service(path: str | Path, head: str | None = None, config: ServeConfig = ServeConfig()) -> Service:
    """A fine-tuned model (task.json, or tasks.json with `head`) or a plain encoder directory."""
    path = Path(path)
    tokenizer = Tokenizer.from_pretrained(path)
    if (path / "task.json").exists() or (path / "tasks.json").exists():
        task_model = load_task_model(path, head)
        return Service(task_model.encoder, tokenizer, path.name, task_model, config)
    return Service(load_pretrained(path), tokenizer, path.name, None, config)


_service_here: Service | None = None  # in the model process: the service it runs


# Ctrl-C reaches the whole process group, systemd the whole cgroup: the server decides when the model process stops
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _start_model_process(service: Service, threads: int) -> None:
    """The model process's start: ignore the stop signals (held blocked since the spawn, see
    `ModelProcess._start`), keep the service, take the server's torch threads, end with the server."""
    global _service_here
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile is ignored
    torch.set_num_threads(threads)
    _service_here = service
    threading.Thread(target=_exit_with, args=(multiprocessing.parent_process().sentinel,), daemon=True).start()


def _exit_with(server_sentinel: int) -> None:
    multiprocessing.connection.wait([server_sentinel])  # ready once the server's process has ended, even by SIGKILL
    os._exit(1)


def _call_service(method: str, *args):
    return getattr(_service_here, method)(*args)


class ModelProcess:
    """A service's model in a process of its own, one call at a time.

    In a thread of the server's process, the model's Python (between its kernels) waited for the GIL
    whenever the event loop parsed or answered a request: under bench_serve's load (16 clients, bf16)
    the model thread ran 0.80 of its core, the machine stood 20% idle, and the server reached 0.62-0.65x
    offline `embed`; in a process of its own, 0.73x-0.77x in three runs. Spawned, not forked: OpenMP's threads do
    not survive a fork. The weights reach the process through shared memory (torch.multiprocessing), not
    as a copy: /dev/shm must hold the model (Docker: `--shm-size`).
    """

    def __init__(self, service: Service):
        self.service = service
        self.executor: ProcessPoolExecutor | None = None  # None until started, and after the process died
        self.starting = asyncio.Lock()

    def _start(self) -> ProcessPoolExecutor:
        """A started model process, its layers packed or copied by a first call (blocks for a second or two).
        The process is spawned with the stop signals blocked in this thread, whose mask it inherits, so that a
        Ctrl-C while it imports does not kill it; its initializer ignores them, then unblocks them."""
        executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_model_process,
                                       initargs=(self.service, torch.get_num_threads()))
        try:  # the executor is built before: starting multiprocessing's resource tracker unblocks the signals
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                warm_up = executor.submit(_call_service, "embed_batch", ["warm up"], False)  # spawns the process
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            warm_up.result()
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        return executor

    async def running(self) -> ProcessPoolExecutor:
        """The model process, started first if need be, off the event loop (other requests go on meanwhile)."""
        async with self.starting:
            if self.executor is None:
                self.executor = await asyncio.to_thread(self._start)
            return self.executor

    async def call(self, method: str, *args):
        """`service.method(*args)` in the model process."""
        executor = self.executor or await self.running()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, _call_service, method, *args)
        except BrokenProcessPool:
            if self.executor is executor:  # the first call to see it; the next call starts a new process
                self.executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError("the model process ended abruptly (killed, or out of memory: see the kernel's log, "
                               "dmesg); this request failed, the next one starts a new model process") from None

    def stop(self) -> None:
        """Ends the model process once the call it runs is done; calls still queued are cancelled."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


def build_app(service: Service):
    """The FastAPI app of `service` (routes in the module docstring)."""
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    config = service.config

    async def lifespan(app):
        model = ModelProcess(service)
        await model.running()  # before the first request
        app.state.model, app.state.batcher = model, Batcher(functools.partial(model.call, "embed_batch"), config)
        batching = asyncio.create_task(app.state.batcher.serve_forever())
        yield
        batching.cancel()
        model.stop()

    app = FastAPI(title=f"bertkit: {service.name}", lifespan=lifespan)

    async def read_body(request: Request, ability: str = "embed") -> dict:
        """The request's JSON object, once the model is known to be able to `ability` (404 if not)."""
        if ability not in service.abilities:
            raise RequestError(404, f"this model cannot {ability} (it can: {', '.join(service.abilities)})",
                               "Unsupported")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise RequestError(413, f"the body has {declared} bytes; this server takes at most {config.max_body_bytes}")
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > config.max_body_bytes:
                raise RequestError(413, f"the body is larger than this server's {config.max_body_bytes} bytes")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(400, f"the body is not valid UTF-8 (byte {e.start}); send JSON in UTF-8") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise RequestError(400, f"the body is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        if not isinstance(body, dict):
            raise RequestError(422, f"the body must be a JSON object, not {_type(body)}")
        return body

    def json_response(content: Any) -> Response:
        """orjson writes numpy's float32 vectors directly, 20x faster than `json` on their `tolist()`: on
        the event loop, that time delays every other request."""
        return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def embed_request(body: dict, key: str) -> tuple[np.ndarray, int]:
        texts = request_texts(body, key, config)
        truncate = _flag(body, "truncate", config.truncate)
        counts = service.token_counts(texts, truncate)
        vectors = await app.state.batcher.embed(texts, sum(counts), truncate, _flag(body, "normalize", True))
        return vectors, sum(counts)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        if request.url.path.startswith("/v1/"):  # OpenAI's error shape
            content = {"error": {"message": error.message, "type": "invalid_request_error", "param": None,
                                 "code": error.status}}
        else:  # text-embeddings-inference's
            content = {"error": error.message, "error_type": error.kind}
        return JSONResponse(content, status_code=error.status)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        return JSONResponse({"error": f"{type(error).__name__}: {error}", "error_type": "Backend"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return service.info()

    @app.post("/embed")
    async def embed_route(request: Request):
        vectors, _ = await embed_request(await read_body(request), "inputs")
        return json_response(vectors)

    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request):
        body = await read_body(request)
        if body.get("encoding_format", "float") != "float":
            raise RequestError(422, "encoding_format: this server returns \"float\" vectors only")
        vectors, tokens = await embed_request(body, "input")
        return json_response({"object": "list", "model": body.get("model") or service.name,
                              "data": [{"object": "embedding", "index": i, "embedding": v}
                                       for i, v in enumerate(vectors)],
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/predict")
    async def predict_route(request: Request):
        body = await read_body(request, "predict")
        items = request_texts(body, "inputs", config, pairs=True)
        service.token_counts([t for item in items for t in ([item] if isinstance(item, str) else item)], True)
        return await app.state.model.call("predict", items)

    @app.post("/fill-mask")
    async def fill_mask_route(request: Request):
        body = await read_body(request, "fill-mask")
        text = body.get("inputs")
        if not isinstance(text, str):
            raise RequestError(422, f"'inputs' must be a string with [MASK] in it, not {_type(text)}")
        top_k = body.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise RequestError(422, "'top_k' must be a whole number from 1 to 100")
        service.token_counts([text], False)
        try:
            found = await app.state.model.call("fill_mask", text, top_k)
        except ValueError as e:  # no [MASK] in the text
            raise RequestError(422, str(e)) from None
        return [[dataclasses.asdict(c) for c in candidates] for candidates in found]

    @app.post("/explain")
    async def explain_route(request: Request):
        body = await read_body(request, "explain")
        text, pair = body.get("inputs"), body.get("pair")
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise RequestError(422, "'inputs' must be a string (and 'pair', if given, a string)")
        service.token_counts([text] + ([pair] if pair else []), False)
        return await app.state.model.call("explain", text, pair)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("bertkit").joinpath("serve_page.html").read_text(encoding="utf-8")

    return app


def serve(service: Service, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the app until SIGINT / SIGTERM; requests in flight are finished (30 s at most).

    The model process is spawned: a script that calls this needs Python's `if __name__ == "__main__":`
    guard around it, as for any multiprocessing (the new process imports the script's module)."""
    import uvicorn
    uvicorn.run(build_app(service), host=host, port=port, timeout_graceful_shutdown=30, log_level="info")
