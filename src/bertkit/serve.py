"""An HTTP service for one model, with a page to try it: `bertkit serve --model DIR`.

FastAPI routes, served by uvicorn:
- `POST /embed`: the request and response of Hugging Face's text-embeddings-inference
  (`{"inputs": "text" | ["text", ...], "normalize": true, "truncate": false}` -> `[[float, ...], ...]`);
- `POST /v1/embeddings`: OpenAI's (`{"input": "text" | [...], "model": ...}` -> `{"object": "list",
  "data": [{"object": "embedding", "index": i, "embedding": [...]}], "model": ..., "usage": {...}}`);
- `POST /predict` (fine-tuned models): `{"inputs": "text" | [...], "truncate": false}`, pairs as
  `["first", "second"]`, -> what `bertkit predict` writes, one object per input;
- `POST /fill-mask` (models with an MLM head), `POST /explain` (classifiers, with Captum installed:
  `{"inputs": "text", "pair": "second text", "truncate": false}`);
- `GET /health`, `GET /info` (what this model can do), and `GET /`, the page.

The model runs in processes of its own (`workers`, 2 by default; see ModelPool and ModelProcess), so
that the event loop's work never holds up the model's. The event loop checks each request's shape and
sends it at once to the model process with the fewest texts outstanding; that process tokenizes
embedding requests as they arrive and, once its model is free, gathers them for `wait_ms` into one
batch (sorted by length), up to `max_batch` texts and `max_batch_tokens` tokens.
Bad requests get a 4xx JSON error that says what is wrong (body too large, invalid UTF-8 or JSON, wrong
types, too many inputs, an input longer than the model takes, unless truncation is asked for: a pair
counted as the model reads it, both texts together); an
error inside the model is a 500 for that request only; if a model process dies, its requests get a
500, a new one starts at once, and requests go to the live ones meanwhile. uvicorn finishes requests
in flight on SIGTERM / Ctrl-C before it stops.
"""

import asyncio  # no `from __future__ import annotations`: FastAPI reads the routes' annotations at run time
import copy
import dataclasses
import functools
import importlib.util
import itertools
import json
import logging
import multiprocessing
import multiprocessing.synchronize
import multiprocessing.util
import os
import pickle
import queue
import signal
import struct
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import resources
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tokenizers
import torch
import torch.nn.functional as F

from .allocator import reuse_freed_memory
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
    # how long a batch gathers requests once the model is free (see Gatherer.next). bench_serve's load on the AMX
    # Xeon, bf16, 20 s runs, alternating: with two model processes, 4 ms 1,034, 1,071, 1,049 sentences/s; 0 ms
    # 1,045, 1,081, 1,039; 8 ms 1,008, 1,012, 1,006. With one, 8 ms 1,020, 1,074; 5 ms 982, 972; 0 ms 926, 866.
    # 4 ms, not 0, though level under load: an idle server's requests sent together still share a batch
    wait_ms: float = 4.0
    workers: int = 2  # model processes, the torch threads shared out among them (measured: ModelPool)

    def __post_init__(self):
        for name in ("max_body_bytes", "max_inputs", "max_batch", "max_batch_tokens", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"serve's {name} must be at least 1, not {getattr(self, name)}")
        if self.wait_ms < 0:
            raise ValueError(f"serve's wait_ms must be 0 or more, not {self.wait_ms}")


class RequestError(Exception):
    """A bad request: `status` and a message for the client."""

    def __init__(self, status: int, message: str, kind: str = "Validation"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind

    def __reduce__(self):  # raised in the model process, it reaches the server pickled
        return RequestError, (self.status, self.message, self.kind)


# Messages from the server to its model process: EmbedRequest, Call, or STOP.
@dataclass
class EmbedRequest:
    id: int  # the server's key for the answer
    texts: list[str]
    truncate: bool
    normalize: bool


@dataclass
class Call:
    """A call of a Service method in the model process (fill-mask, predict, explain)."""
    id: int
    method: str
    args: tuple


STOP = "stop"  # the server's last message: the model process ends once the work before it is done


@dataclass
class Job:
    """An embedding request in the model process, tokenized as it arrived."""
    id: int
    encodings: list[tokenizers.Encoding]  # one per text, cut to the model's length where truncation was asked
    normalize: bool
    arrived: float  # time.monotonic() when the model process received it
    tokens: int = field(init=False)

    def __post_init__(self):
        self.tokens = sum(len(e) for e in self.encodings)


class RequestTokenizer:
    """Tokenizes requests' texts for a model of `limit` tokens: too long is a 413 unless truncating. It
    holds its own copies of the tokenizer, one set to truncate (truncation is a setting of a tokenizer,
    and each thread needs its own)."""

    def __init__(self, tokenizer: Tokenizer, limit: int):
        self.plain, self.truncating = copy.deepcopy(tokenizer.backend), copy.deepcopy(tokenizer.backend)
        self.limit = limit
        self.plain.no_truncation()
        self.truncating.enable_truncation(limit)

    def __call__(self, texts: list[str], truncate: bool, hint: str = "send shorter texts") -> list[tokenizers.Encoding]:
        """Each text's tokens, special tokens included (as the model reads them). One text after the other:
        `encode_batch` hands a request's few texts to a pool of threads, which cost more than it saved
        (requests of 1-8 STS-B sentences: 207 us of CPU a request, against 128 one by one)."""
        encodings = [self.plain.encode(text) for text in texts]
        too_long = [i for i, e in enumerate(encodings) if len(e) > self.limit]
        if too_long and not truncate:
            raise too_long_error([len(e) for e in encodings], too_long, self.limit, hint)
        for i in too_long:
            encodings[i] = self.truncating.encode(texts[i])
        return encodings

    def check(self, items: list, limit: int, hint: str) -> None:
        """A 413 if an item (a text, or a [first, second] pair read together) has more than `limit` tokens."""
        lengths = [len(self.plain.encode(*([item] if isinstance(item, str) else item))) for item in items]
        too_long = [i for i, n in enumerate(lengths) if n > limit]
        if too_long:
            raise too_long_error(lengths, too_long, limit, hint)


def too_long_error(lengths: list[int], too_long: list[int], limit: int, hint: str) -> RequestError:
    """The 413 for inputs of `lengths` tokens, those at `too_long` over `limit`."""
    i = too_long[0]
    return RequestError(413, f"input {i} has {lengths[i]} tokens, more than the model's {limit} "
                             f"({len(too_long)} inputs are too long); {hint}")


@dataclass
class Gatherer:
    """The model process's next piece of work from its inbox: a batch of embedding jobs, or one other call."""
    inbox: queue.Queue  # Job, Call or STOP, in the order the server sent them
    config: ServeConfig
    carried: Any = None  # taken from the inbox but left for the next batch

    def next(self) -> list[Job] | Call | str:
        """Embedding jobs gathered for wait_ms from when the model is free and a job has arrived (the later
        of the two), within the caps on texts and tokens. Under load the model so waits wait_ms after each
        batch: the clients answered at the end of the last one send their next requests meanwhile, and
        the batch takes them too, where it would have run with about half of the clients' requests
        (measured: ServeConfig.wait_ms)."""
        free = time.monotonic()
        first = self.carried if self.carried is not None else self.inbox.get()
        self.carried = None
        if not isinstance(first, Job):
            return first
        batch, texts, tokens = [first], len(first.encodings), first.tokens
        deadline = max(first.arrived, free) + self.config.wait_ms / 1000
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

    def request_tokenizer(self) -> RequestTokenizer:
        """A request tokenizer of its own, for a thread: the model thread's is `tokenize`."""
        return RequestTokenizer(self.tokenizer, self.encoder.config.max_length)

    @functools.cached_property
    def tokenize(self) -> RequestTokenizer:
        """The model thread's request tokenizer (the receiving thread makes its own)."""
        return self.request_tokenizer()

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
                mine = F.normalize(torch.from_numpy(mine), dim=-1).numpy()  # as embed(normalize=True)
            answers.append((mine, job.tokens))
        return answers

    def embed(self, texts: list[str], truncate: bool = False, normalize: bool = False) -> np.ndarray:
        """The vectors the server answers for one request of `texts`."""
        [(vectors, _)] = self.embed_jobs([Job(0, self.tokenize(texts, truncate), normalize, time.monotonic())])
        return vectors

    def fill_mask(self, text: str, top_k: int) -> list:
        self.tokenize([text], truncate=False)
        return fill_mask(self.encoder, self.tokenizer, text, top_k, self.config.precision)

    def predict(self, items: list, truncate: bool = False) -> list[dict]:
        """Predictions for texts or [first, second] pairs. Inputs longer than the model reads are windowed
        where its task windows them; where it truncates them, they are a 413 unless `truncate`."""
        spec = self.task_model.spec
        words = kind_of(spec.task).words
        for i, item in enumerate(items):
            self.check_pairing(isinstance(item, list), f"inputs[{i}]")
        if spec.overflow == "truncate" and not truncate:
            self.tokenize.check(items, spec.max_length, 'send shorter texts, or "truncate": true')
        examples = []
        for i, item in enumerate(items):
            text, pair = (item, None) if isinstance(item, str) else item
            examples.append(word_example(text, self.tokenizer.pre_tokenize, f"inputs[{i}]") if words
                            else TextExample(text, pair, source=f"inputs[{i}]"))
        predictions = predict_examples(self.task_model, self.tokenizer, examples, 32, self.config.precision)
        return [prediction_record(e, p) for e, p in zip(examples, predictions)]

    def explain(self, text: str, pair: str | None, truncate: bool = False) -> dict:
        """Word importances (integrated gradients) for the predicted label. An input longer than the model
        reads (text and pair together) is a 413 unless `truncate`: then the words cut off are `unscored`."""
        self.check_pairing(pair is not None, "the input")
        if not truncate:
            self.tokenize.check([text if pair is None else [text, pair]], self.task_model.spec.max_length,
                                'send a shorter text, or "truncate": true to explain its start')
        found = word_importance(self.task_model, self.tokenizer, text, pair, methods=("integrated_gradients",))
        return {"label": found.label, "output": found.output, "words": found.words,
                "scores": found.scores["integrated_gradients"].tolist(), "unscored": found.unscored}

    def check_pairing(self, paired: bool, what: str) -> None:
        """A 422 if an input is a pair and the model reads single texts, or the other way round."""
        pair_model = bool(self.task_model.spec.pair)
        if pair_model != paired:
            reads = "[first, second] pairs of texts" if pair_model else "single texts, not pairs"
            raise RequestError(422, f"{what}: this model reads {reads}")


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
    """`message` as one message down a pipe."""
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


def reply_frame(answers: list[tuple[int, bool, Any]]) -> bytes:
    """The model process's answers, [(request id, ok, result or exception)], as one message whose values
    are pickled one by one: a value that does not pickle goes as an error with its text, and one that does
    not load on the other side fails its own request only (`read_answer`)."""
    packed = []
    for request, ok, value in answers:
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            text = f"the answer could not be sent: {error}" if ok else f"{type(value).__name__}: {value}"
            ok, payload = False, pickle.dumps(RuntimeError(text))
        packed.append((request, ok, payload))
    return frame(packed)


def read_answer(ok: bool, payload: bytes) -> tuple[bool, Any]:
    """(ok, the result or an exception a future can take) of one answer of `reply_frame`."""
    try:
        value = pickle.loads(payload)
    except Exception as error:
        return False, RuntimeError(f"the model process's answer could not be read: {type(error).__name__}: {error}")
    if not ok and (not isinstance(value, Exception) or isinstance(value, StopIteration)):  # futures refuse these
        return False, RuntimeError(f"{type(value).__name__}: {value}")
    return ok, value


class Replies:
    """The model process's end of the replies pipe, written whole by its two threads."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.lock = stream, threading.Lock()

    def send(self, answers: list[tuple[int, bool, Any]]) -> None:
        data = reply_frame(answers)
        with self.lock:
            self.stream.write(data)
            self.stream.flush()


def failed(error: Exception) -> Exception:
    """`error` with its traceback in the model process as a note (the server's log shows it), unless it
    is the client's error."""
    if not isinstance(error, RequestError):
        error.add_note("in the model process:\n" + traceback.format_exc())
    return error


def _model_process(service: Service, threads: int, requests_end: Connection, replies_end: Connection,
                   ready: multiprocessing.synchronize.Event) -> None:
    """The model process: ignore the stop signals (held blocked since the spawn, see `ModelProcess._spawn`),
    take its share of the server's torch threads (`threads`), pack the layers by a first call, then answer
    the server's messages until it says STOP (or ends: its end of the requests pipe closes). The process is
    bertkit's own, so it keeps freed memory for reuse as the `bertkit` command does (`reuse_freed_memory`)."""
    reuse_freed_memory()
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile is ignored
    torch.set_num_threads(threads)
    requests, replies = open(os.dup(requests_end.fileno()), "rb"), Replies(open(os.dup(replies_end.fileno()), "wb"))
    requests_end.close()
    replies_end.close()
    service.embed(["warm up"])
    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_receive, args=(requests, inbox, replies, service.request_tokenizer()), daemon=True).start()
    ready.set()
    gatherer = Gatherer(inbox, service.config)
    while (work := gatherer.next()) != STOP:
        if isinstance(work, Call):
            try:
                replies.send([(work.id, True, getattr(service, work.method)(*work.args))])
            except Exception as error:
                replies.send([(work.id, False, failed(error))])
            continue
        try:
            replies.send([(job.id, True, answer) for job, answer in zip(work, service.embed_jobs(work))])
        except Exception as error:  # these requests get a 500, the process goes on
            error = failed(error)
            replies.send([(job.id, False, error) for job in work])


def _receive(requests: BinaryIO, inbox: queue.Queue, replies: Replies, tokenize: RequestTokenizer) -> None:
    """The model process's receiving thread: tokenizes embedding requests as they come (while the model runs:
    the tokenizer's Rust code does not hold the GIL) and answers those with too long inputs at once. If
    it fails, or the server ends without a STOP (killed, say), the process ends: the server then fails
    the requests it was answering and starts a new one."""
    try:
        while (message := read_frame(requests)) != STOP:
            if isinstance(message, EmbedRequest):
                try:
                    encodings = tokenize(message.texts, message.truncate, 'send shorter texts or "truncate": true')
                except Exception as error:  # too long (a 413), or the tokenizer failed (a 500): the thread goes on
                    replies.send([(message.id, False, failed(error))])
                    continue
                message = Job(message.id, encodings, message.normalize, time.monotonic())
            inbox.put(message)
        inbox.put(STOP)
    except EOFError:
        os._exit(1)
    except BaseException:
        traceback.print_exc()
        os._exit(1)


class ModelProcess:
    """A service's model in a process of its own, which gathers embedding requests into batches itself.

    In a thread of the server's process, the model's Python (between its kernels) waited for the GIL
    whenever the event loop parsed or answered a request; in a process of its own, it does not. The
    event loop sends each request down a pipe as soon as it has read it; the model process tokenizes it
    on arrival and takes its next batch from what has arrived the moment the last one is done, so that
    it does not wait for the event loop between batches.

    Spawned, not forked: OpenMP's threads do not survive a fork. The weights reach the process through
    shared memory (torch.multiprocessing), not as a copy: /dev/shm must hold the model (Docker: `--shm-size`).
    """

    def __init__(self, service: Service, threads: int | None = None):
        self.service, self.threads = service, threads or torch.get_num_threads()
        self.outstanding = 0  # texts of the requests sent and not yet answered
        self.process: multiprocessing.Process | None = None  # None until started, after it died, and once stopped
        self.requests: asyncio.WriteTransport | None = None
        self.waiting: dict[int, asyncio.Future] = {}  # request id -> its answer
        self.ids = itertools.count()
        self.starting: asyncio.Future | None = None
        self.stopped = False

    def _spawn(self) -> tuple[multiprocessing.Process, Connection, Connection]:
        """A started model process, its layers packed or copied by a first call (blocks for a second or two),
        with the server's ends of its requests and replies pipes. The process is spawned with the stop
        signals blocked in this thread, whose mask it inherits, so that a Ctrl-C while it imports does not
        kill it; it ignores them, then unblocks them."""
        context = multiprocessing.get_context("spawn")
        requests_in, requests_out = context.Pipe(duplex=False)
        replies_in, replies_out = context.Pipe(duplex=False)
        ready = context.Event()  # made before the signals are blocked: making its lock starts multiprocessing's
        # resource tracker, which unblocks them
        process = context.Process(target=_model_process, name="bertkit-model", daemon=True,
                                  args=(self.service, self.threads, requests_in, replies_out, ready))
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            requests_in.close()
            replies_out.close()
        # At the interpreter's exit multiprocessing ends daemon processes with SIGTERM, which this one
        # ignores, then waits for them: a forced quit (a second Ctrl-C) skips `stop`, and would hang there.
        multiprocessing.util.Finalize(None, process.kill, exitpriority=10)
        while not ready.wait(0.1):
            if not process.is_alive():
                requests_out.close()
                replies_in.close()
                raise RuntimeError(f"the model process ended while starting (exit code {process.exitcode}); "
                                   "its error is above")
        return process, requests_out, replies_in

    async def _start(self) -> None:
        process, requests, replies = await asyncio.to_thread(self._spawn)
        loop = asyncio.get_running_loop()
        try:
            if self.stopped:  # while it started: the server stops, and waits for no new process
                raise RuntimeError("the server is stopping")
            transport, _ = await loop.connect_write_pipe(asyncio.Protocol, requests)
            await loop.connect_read_pipe(functools.partial(ReplyReader, self, process), replies)
        except BaseException:
            process.kill()
            requests.close()
            replies.close()
            raise
        self.process, self.requests = process, transport

    async def running(self) -> None:
        """The model process started if need be, off the event loop (other requests go on meanwhile). The
        start goes on if the request that asked for it is cancelled."""
        if self.stopped:
            raise RuntimeError("the server is stopping")
        if self.process is None:
            if self.starting is None or self.starting.done():
                self.starting = asyncio.ensure_future(self._start())
            await asyncio.shield(self.starting)

    async def ask(self, message: EmbedRequest | Call, texts: int = 1) -> Any:
        """The model process's answer to `message`, of `texts` texts."""
        self.outstanding += texts
        try:
            await self.running()
            answer = self.waiting[message.id] = asyncio.get_running_loop().create_future()
            self.requests.write(frame(message))
            return await answer
        finally:
            self.waiting.pop(message.id, None)
            self.outstanding -= texts

    async def embed(self, texts: list[str], truncate: bool, normalize: bool) -> tuple[np.ndarray, int]:
        """The texts' vectors and their tokens, embedded in a batch with the requests that come meanwhile."""
        return await self.ask(EmbedRequest(next(self.ids), texts, truncate, normalize), len(texts))

    async def call(self, method: str, *args, texts: int = 1) -> Any:
        """`service.method(*args)` in the model process (for `texts` texts)."""
        return await self.ask(Call(next(self.ids), method, args), texts)

    def settle(self, request: int, ok: bool, payload: bytes) -> None:
        """Give a waiting request its answer (`reply_frame`'s); a request whose client went away has none."""
        future = self.waiting.get(request)
        if future is not None and not future.done():
            ok, value = read_answer(ok, payload)
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def ended(self, process: multiprocessing.Process) -> None:
        """`process` ended: unless it was stopped, the requests it had fail and a new process starts (a
        request sent meanwhile waits for it; ModelPool sends them to live processes first)."""
        if self.process is not process:
            return
        self.process, requests, self.requests = None, self.requests, None
        requests.close()
        self.fail_waiting(RuntimeError("the model process ended abruptly (killed, or out of memory: see the "
                                       "kernel's log, dmesg); this request failed, a new model process starts"))
        if not self.stopped:
            self.starting = asyncio.ensure_future(self._start())
            self.starting.add_done_callback(_log_failed_start)

    def fail_waiting(self, error: Exception) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(error)

    async def stop(self, seconds: float = 10) -> None:
        """Ends the model process once the work it has is done, or after `seconds` (it is killed then)."""
        self.stopped = True
        if self.starting is not None and not self.starting.done():  # it ends the process it started
            await asyncio.wait([self.starting])
        process, self.process = self.process, None
        if process is None:
            return
        self.requests.write(frame(STOP))
        await asyncio.to_thread(process.join, seconds)
        process.kill()  # if still running: requests given up on since, which no one waits for any more
        self.requests.close()
        self.fail_waiting(RuntimeError("the server stopped before this request was answered"))


def _log_failed_start(start: asyncio.Future) -> None:
    """A new model process that did not start: said in the server's log (the next request sent to it tries again)."""
    if not start.cancelled() and start.exception() is not None:
        logging.getLogger("uvicorn.error").error("a model process did not start again: %s", start.exception())


class ModelPool:
    """The server's model processes (`ServeConfig.workers`), this process's torch threads shared out among
    them (at least one each); each request goes to the one with the fewest texts outstanding.

    Two processes of one thread each embed more than one of two threads: each runs its batch on a core
    of its own without the threads' hand-offs around every kernel, and one computes while the other
    gathers its next batch. all-MiniLM-L6-v2 bf16 on the AMX Xeon, batches of 68 random STS-B sentences
    (`embed` alone, two runs): 808 + 762 and 829 + 829 sentences/s against 1,322 and 1,326; under
    bench_serve's load (20 s, alternating): 997 and 1,018 against 914 and 898. Each process holds its
    own inference copies of the linear layers (`precision.fast_linears`); the weights are shared."""

    def __init__(self, service: Service):
        workers, threads = service.config.workers, torch.get_num_threads()
        self.processes = [ModelProcess(service, max(1, threads // workers + (i < threads % workers)))
                          for i in range(workers)]

    def least_busy(self) -> ModelProcess:
        """The live process with the fewest texts outstanding (one starting again if none is live)."""
        return min(self.processes, key=lambda process: (process.process is None, process.outstanding))

    async def running(self) -> None:
        """Every process started; if one fails to, the others are stopped."""
        try:
            await asyncio.gather(*(process.running() for process in self.processes))
        except BaseException:
            await self.stop()
            raise

    async def embed(self, texts: list[str], truncate: bool, normalize: bool) -> tuple[np.ndarray, int]:
        return await self.least_busy().embed(texts, truncate, normalize)

    async def call(self, method: str, *args, texts: int = 1) -> Any:
        return await self.least_busy().call(method, *args, texts=texts)

    async def stop(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.processes))


class ReplyReader(asyncio.Protocol):
    """The server's end of the model process's replies, read by the event loop as they come."""

    def __init__(self, model: ModelProcess, process: multiprocessing.Process):
        self.model, self.process, self.buffer = model, process, bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(self.buffer)
            end = FRAME_HEADER.size + size
            if len(self.buffer) < end:
                return
            answers = pickle.loads(bytes(self.buffer[FRAME_HEADER.size:end]))  # (id, ok, bytes) triples: loads
            del self.buffer[:end]
            for answer in answers:
                self.model.settle(*answer)

    def connection_lost(self, error: Exception | None) -> None:
        self.model.ended(self.process)


def build_app(service: Service):
    """The FastAPI app of `service` (routes in the module docstring)."""
    import orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    config = service.config

    async def lifespan(app):
        app.state.model = ModelPool(service)
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
        items = request_texts(body, "inputs", config, pairs=True)
        return await app.state.model.call("predict", items, _flag(body, "truncate", config.truncate), texts=len(items))

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
        return await app.state.model.call("explain", text, pair, _flag(body, "truncate", config.truncate))

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("bertkit").joinpath("serve_page.html").read_text(encoding="utf-8")

    return app


def serve(service: Service, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the app until SIGINT / SIGTERM; requests in flight are finished (30 s at most). uvicorn runs it
    on uvloop and httptools where they are installed (`bertkit[serve]` installs them; measured: pyproject.toml).

    Put the call under Python's `if __name__ == "__main__":` guard: each model process is spawned, and
    imports the calling script. Without the guard, the call returns at once in a model process with a
    RuntimeWarning, and the script's whole top level (loading the model among it) runs again in each model
    process as it starts. Were the call to start a server there, that process would die starting
    its own model processes, and the server would wait for it for ever (multiprocessing blocks writing
    the service into the pipe that process no longer reads)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # multiprocessing's own test for it
        warnings.warn("this script calls bertkit.serve.serve() without an `if __name__ == \"__main__\":` guard: "
                      "each model process runs the script's top level again as it starts (loading the model once "
                      "more) and skips the call. Put the call under the guard.", RuntimeWarning, stacklevel=2)
        return
    import uvicorn
    uvicorn.run(build_app(service), host=host, port=port, timeout_graceful_shutdown=30, log_level="info")
