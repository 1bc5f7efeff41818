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

The model runs in a process of its own (see ModelProcess), so that the event loop's work never holds
up the model's. The event loop checks each request's shape and sends it there at once; the model
process tokenizes embedding requests as they arrive, and gathers those that come together for
`wait_ms` into one batch (sorted by length), up to `max_batch` texts and `max_batch_tokens` tokens.
Bad requests get a 4xx JSON error that says
what is wrong (body too large, invalid UTF-8 or JSON, wrong types, too many inputs, an input longer
than the model takes, unless truncation is asked for); an error inside the model is a 500 for that
request only; if the model process dies, its requests get a 500 and the next request starts a new
one. uvicorn finishes requests in flight on SIGTERM / Ctrl-C before it stops.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the routes' annotations at run time
import copy
import dataclasses
import functools
import importlib.util
import itertools
import json
import multiprocessing
import multiprocessing.synchronize
import os
import pickle
import queue
import signal
import struct
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tokenizers
import torch

from .convert import load_pretrained
from .data.examples import TextExample
from .data.readers import word_example
from .embed import pooled_rows
from .explain import word_importance
from .fill_mask import fill_mask
from .model import Encoder
from .predict import predict_examples, prediction_record
from .tasks import kind_of
from .tasks.model import TaskModel, load_task_model
from .tokenizer import Encoded, Tokenizer


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
    """An embedding request in the model process, tokenized as it arrived."""
    id: int
    encodings: list[tokenizers.Encoding]  # one per text, cut to the model's length where truncation was asked
    normalize: bool
    arrived: float  # time.monotonic() when the model process received it

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self.encodings)


@dataclass
class Call:
    """A call of a Service method in the model process (fill-mask, predict, explain)."""
    id: int
    method: str
    args: tuple


STOP = "stop"  # the server's last message to the model process


@dataclass
class Gatherer:
    """The model process's next piece of work from its inbox: a batch of embedding jobs, or one other call."""
    inbox: queue.Queue  # Job, Call or STOP, in the order the server sent them
    config: ServeConfig
    carried: Any = None  # taken from the inbox but left for the next batch

    def next(self) -> list[Job] | Call | str:
        """Embedding jobs gathered until the first of them has waited wait_ms, within the caps on texts
        and tokens. Under load the first job has waited out its wait_ms while the previous batch ran, so
        the model goes on with what is queued at once; an idle server waits for company."""
        first = self.carried if self.carried is not None else self.inbox.get()
        self.carried = None
        if not isinstance(first, Job):
            return first
        batch, texts, tokens = [first], len(first.encodings), first.tokens
        deadline = first.arrived + self.config.wait_ms / 1000
        while True:
            try:
                job = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return batch
            if (not isinstance(job, Job) or texts + len(job.encodings) > self.config.max_batch
                    or tokens + job.tokens > self.config.max_batch_tokens):
                self.carried = job
                return batch
            batch.append(job)
            texts, tokens = texts + len(job.encodings), tokens + job.tokens


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

    def encode(self, texts: list[str], truncate: bool, tokenizer: Tokenizer | None = None) -> list[tokenizers.Encoding]:
        """Each text's tokens (special tokens included); too long is a 413 unless truncating. `tokenizer`:
        a copy of the service's, for a thread of its own (truncation is a setting of the tokenizer)."""
        tokenizer, limit = tokenizer or self.tokenizer, self.encoder.config.max_length
        encodings = tokenizer.backend.encode_batch(texts)
        too_long = [i for i, e in enumerate(encodings) if len(e.ids) > limit]
        if not too_long:
            return encodings
        if not truncate:
            i = too_long[0]
            raise RequestError(413, f"input {i} has {len(encodings[i].ids)} tokens, more than the model's {limit} "
                               f"({len(too_long)} inputs are too long); send shorter texts or \"truncate\": true")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the client asked for it: no warning per request in the server's log
            return tokenizer.encode(texts, max_length=limit, overflow="truncate").rows

    def embed_jobs(self, jobs: list[Job]) -> list[tuple[np.ndarray, int]]:
        """One forward pass for a gathered batch -> each job's (vectors, tokens). The batch is capped in
        texts and tokens (one job of more than max_batch texts runs in pieces of max_batch): the same
        batches embedded in embed's default pieces of 32 ran about 20% slower (72 STS-B sentences a call,
        measured alone)."""
        rows = [e for job in jobs for e in job.encodings]
        encoded = Encoded(rows, np.arange(len(rows), dtype=np.int64))
        vectors = pooled_rows(self.encoder, encoded, self.tokenizer.pad_id, batch_size=self.config.max_batch,
                              precision=self.config.precision)
        answers, start = [], 0
        for job in jobs:
            mine = vectors[start:start + len(job.encodings)]
            start += len(job.encodings)
            if job.normalize:
                mine = mine / np.maximum(np.linalg.norm(mine, axis=1, keepdims=True), 1e-12)
            answers.append((mine, job.tokens))
        return answers

    def embed(self, texts: list[str], truncate: bool = False, normalize: bool = False) -> np.ndarray:
        """The vectors the server answers for one request of `texts`."""
        [(vectors, _)] = self.embed_jobs([Job(0, self.encode(texts, truncate), normalize, time.monotonic())])
        return vectors

    def fill_mask(self, text: str, top_k: int) -> list:
        self.encode([text], truncate=False)
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
        self.encode([text] + ([pair] if pair else []), truncate=False)
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


# Ctrl-C reaches the whole process group, systemd the whole cgroup: the server decides when the model process stops
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Messages between the server and its model process, each way: an 8-byte big-endian length, then a pickle.
FRAME_HEADER = struct.Struct("!Q")


def frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(payload)) + payload


def read_frame(stream: BinaryIO) -> Any:
    """The next message of a blocking stream; EOFError once its other end has closed."""
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        raise EOFError
    (size,) = FRAME_HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


class Replies:
    """The model process's side of its replies: [(id, ok, result or exception), ...] frames, written whole by
    the receiving thread and the model's thread alike."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.lock = stream, threading.Lock()

    def send(self, answers: list[tuple[int, bool, Any]]) -> None:
        try:
            data = frame(answers)
        except Exception:  # an exception that does not pickle: its text does
            data = frame([(i, ok, value if ok else RuntimeError(f"{type(value).__name__}: {value}"))
                          for i, ok, value in answers])
        with self.lock:
            self.stream.write(data)
            self.stream.flush()


def _model_process(service: Service, threads: int, requests_end: Connection, replies_end: Connection,
                   ready: multiprocessing.synchronize.Event) -> None:
    """The model process: ignore the stop signals (held blocked since the spawn, see `ModelProcess._spawn`),
    take the server's torch threads, pack the layers by a first call, then answer the server's messages
    until it says STOP (or ends: its end of the requests pipe closes)."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile is ignored
    torch.set_num_threads(threads)
    requests, replies = open(os.dup(requests_end.fileno()), "rb"), Replies(open(os.dup(replies_end.fileno()), "wb"))
    requests_end.close()
    replies_end.close()
    service.embed(["warm up"])
    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_receive, args=(service, requests, inbox, replies), daemon=True).start()
    ready.set()
    gatherer = Gatherer(inbox, service.config)
    while (work := gatherer.next()) != STOP:
        if isinstance(work, Call):
            try:
                replies.send([(work.id, True, getattr(service, work.method)(*work.args))])
            except Exception as error:
                replies.send([(work.id, False, error)])
            continue
        try:
            replies.send([(job.id, True, answer) for job, answer in zip(work, service.embed_jobs(work))])
        except Exception as error:  # these requests get a 500, the process goes on
            replies.send([(job.id, False, error) for job in work])


def _receive(service: Service, requests: BinaryIO, inbox: queue.Queue, replies: Replies) -> None:
    """The model process's receiving thread: tokenizes embedding requests as they come (while the model runs:
    the tokenizer's Rust code does not hold the GIL) and answers those with too long inputs at once."""
    tokenizer = copy.deepcopy(service.tokenizer)  # truncating sets the tokenizer: not the model thread's
    while True:
        try:
            message = read_frame(requests)
        except EOFError:  # the server's process ended without a STOP (killed, say): end with it
            os._exit(1)
        if message == STOP:
            inbox.put(STOP)
            continue
        kind, id, *rest = message  # ("call", id, method, args) or ("embed", id, texts, truncate, normalize)
        if kind == "call":
            inbox.put(Call(id, *rest))
            continue
        texts, truncate, normalize = rest
        try:
            inbox.put(Job(id, service.encode(texts, truncate, tokenizer), normalize, time.monotonic()))
        except Exception as error:  # too long (a 413), or the tokenizer failed (a 500): this thread goes on
            replies.send([(id, False, error)])


class ModelProcess:
    """A service's model in a process of its own, which gathers embedding requests into batches itself.

    In a thread of the server's process, the model's Python (between its kernels) waited for the GIL
    whenever the event loop parsed or answered a request: under bench_serve's load (16 clients, bf16)
    the model thread ran 0.80 of its core, the machine stood 20% idle, and the server reached 0.62-0.65x
    offline `embed`; in a process of its own, 0.73x-0.77x in three runs (AMD EPYC). The event loop sends
    each request down a pipe as soon as it has read it; the model process tokenizes it on arrival and
    takes its next batch from what has arrived the moment the last one is done. When the event loop
    gathered the batches, the model process stood idle 10% of the time between them (2.8 ms median:
    the batch waited for the event loop, then for the executor's thread); gathering them here, it is
    busy 99% of the time, and the server served 1.03x-1.07x as many sentences/s (Xeon with AMX, bf16,
    three alternating 20 s runs of bench_serve's load).

    Spawned, not forked: OpenMP's threads do not survive a fork. The weights reach the process through
    shared memory (torch.multiprocessing), not as a copy: /dev/shm must hold the model (Docker: `--shm-size`).
    """

    def __init__(self, service: Service):
        self.service = service
        self.process: multiprocessing.Process | None = None  # None until started, and after it died
        self.requests: asyncio.WriteTransport | None = None
        self.waiting: dict[int, asyncio.Future] = {}  # request id -> its answer
        self.ids = itertools.count()
        self.starting = asyncio.Lock()

    def _spawn(self) -> tuple[multiprocessing.Process, Connection, Connection]:
        """A started model process, its layers packed or copied by a first call (blocks for a second or two),
        with the server's ends of its requests and replies pipes. The process is spawned with the stop
        signals blocked in this thread, whose mask it inherits, so that a Ctrl-C while it imports does not
        kill it; it ignores them, then unblocks them."""
        context = multiprocessing.get_context("spawn")
        requests_in, requests_out = context.Pipe(duplex=False)
        replies_in, replies_out = context.Pipe(duplex=False)
        ready = context.Event()  # before the signals are blocked: the resource tracker its lock starts unblocks them
        process = context.Process(target=_model_process, name="bertkit-model", daemon=True,
                                  args=(self.service, torch.get_num_threads(), requests_in, replies_out, ready))
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            requests_in.close()
            replies_out.close()
        while not ready.wait(0.1):
            if not process.is_alive():
                requests_out.close()
                replies_in.close()
                raise RuntimeError(f"the model process ended while starting (exit code {process.exitcode}); "
                                   "its error is above")
        return process, requests_out, replies_in

    async def running(self) -> None:
        """The model process started if need be, off the event loop (other requests go on meanwhile)."""
        async with self.starting:
            if self.process is not None:
                return
            process, requests, replies = await asyncio.to_thread(self._spawn)
            loop = asyncio.get_running_loop()
            self.requests, _ = await loop.connect_write_pipe(asyncio.Protocol, requests)
            await loop.connect_read_pipe(functools.partial(ReplyReader, self, process), replies)
            self.process = process

    async def ask(self, *message) -> Any:
        """The model process's answer to `message` (its second item the id, filled in here)."""
        if self.process is None:
            await self.running()
        id = next(self.ids)
        answer = self.waiting[id] = asyncio.get_running_loop().create_future()
        self.requests.write(frame((message[0], id, *message[1:])))
        try:
            return await answer
        finally:
            self.waiting.pop(id, None)

    async def embed(self, texts: list[str], truncate: bool, normalize: bool) -> tuple[np.ndarray, int]:
        """The texts' vectors and their tokens, embedded in a batch with the requests that come meanwhile."""
        return await self.ask("embed", texts, truncate, normalize)

    async def call(self, method: str, *args) -> Any:
        """`service.method(*args)` in the model process."""
        return await self.ask("call", method, args)

    def answer(self, id: int, ok: bool, value: Any) -> None:
        answer = self.waiting.get(id)
        if answer is not None and not answer.done():  # not a request whose client went away
            answer.set_result(value) if ok else answer.set_exception(value)

    def ended(self, process: multiprocessing.Process) -> None:
        """`process` ended: unless stopped, its requests fail and the next request starts a new one."""
        if self.process is not process:
            return
        self.process, requests, self.requests = None, self.requests, None
        requests.close()
        error = RuntimeError("the model process ended abruptly (killed, or out of memory: see the kernel's log, "
                             "dmesg); this request failed, the next one starts a new model process")
        for answer in self.waiting.values():
            if not answer.done():
                answer.set_exception(error)

    async def stop(self) -> None:
        """Ends the model process once the work it has is done."""
        process, self.process = self.process, None
        if process is not None:
            self.requests.write(frame(STOP))
            await asyncio.to_thread(process.join)
            self.requests.close()


class ReplyReader(asyncio.Protocol):
    """The server's side of the model process's replies, read by the event loop as they come."""

    def __init__(self, model: ModelProcess, process: multiprocessing.Process):
        self.model, self.process, self.buffer = model, process, bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(self.buffer)
            end = FRAME_HEADER.size + size
            if len(self.buffer) < end:
                return
            answers = pickle.loads(bytes(self.buffer[FRAME_HEADER.size:end]))
            del self.buffer[:end]
            for answer in answers:
                self.model.answer(*answer)

    def connection_lost(self, error: Exception | None) -> None:
        self.model.ended(self.process)


def build_app(service: Service):
    """The FastAPI app of `service` (routes in the module docstring)."""
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    config = service.config

    async def lifespan(app):
        app.state.model = ModelProcess(service)
        await app.state.model.running()  # before the first request
        yield
        await app.state.model.stop()

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
        return await app.state.model.embed(texts, _flag(body, "truncate", config.truncate),
                                           _flag(body, "normalize", True))

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
        return await app.state.model.call("predict", request_texts(body, "inputs", config, pairs=True))

    @app.post("/fill-mask")
    async def fill_mask_route(request: Request):
        body = await read_body(request, "fill-mask")
        text = body.get("inputs")
        if not isinstance(text, str):
            raise RequestError(422, f"'inputs' must be a string with [MASK] in it, not {_type(text)}")
        top_k = body.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise RequestError(422, "'top_k' must be a whole number from 1 to 100")
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
