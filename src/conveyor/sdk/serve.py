"""``app.serve()``: the push endpoint, an ASGI (or WSGI) app that runs invocations the
server's dispatcher sends it.

Mount it in the service that already serves live traffic::

    api = FastAPI()
    api.mount("/conveyor", app.serve())          # register http://host:port/conveyor/

Each request is a signed batch of invocation inputs (see :mod:`conveyor.push.protocol`).
The endpoint verifies the signature (401 and nothing executed when it is missing, wrong,
stale or replayed), runs each invocation to its next step checkpoint with the app's own
code (``yield_after_write``: at most one new step body per invocation, so a request that
is lost repeats at most one step), and answers the step writes and outcome, signed with
the same request id. It never opens the database: reads of running steps go to the
server (``view_url``). ``def`` functions run on a thread pool; ``async def`` ones on the
server's event loop.

:class:`Endpoint` holds the I/O-free logic; :class:`AsgiEndpoint` and
:class:`WsgiEndpoint` are thin shells over it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.engine.prepare import build_invocation
from conveyor.errors import ConfigError, InvalidInput
from conveyor.executor.inputs import InvocationInput
from conveyor.executor.invocation import Invocation, InvocationResult
from conveyor.push.protocol import PushResult, decode_request, encode_response
from conveyor.push.signing import HEADER, SignatureError, Verifier, check_keys, sign
from conveyor.records import Failed, StepWrite

if TYPE_CHECKING:
    from conveyor.sdk.app import Conveyor
    from conveyor.sdk.push_client import HttpView, Registration

log = logging.getLogger(__name__)
SIGNING_KEY_ENV = "CONVEYOR_SIGNING_KEY"
FALLBACK_KEY_ENV = "CONVEYOR_SIGNING_KEY_FALLBACK"
DEFAULT_MAX_BODY = 64 * 1024 * 1024
SPREAD_AFTER = 0.002  # seconds one thread runs a request's def invocations before others join
Response = tuple[int, list[tuple[str, str]], bytes]


def signing_keys(signing_key: str | None, fallback_signing_key: str | None) -> tuple[str, ...]:
    """The endpoint's keys: given, else ``$CONVEYOR_SIGNING_KEY`` (and ``..._FALLBACK``)."""
    primary = signing_key or os.environ.get(SIGNING_KEY_ENV) or None
    fallback = fallback_signing_key or os.environ.get(FALLBACK_KEY_ENV) or None
    return check_keys([primary, fallback])


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, [("content-type", "application/json")], body


class _Job:
    """One invocation of a request: the invocation and the writes its steps emitted."""

    __slots__ = ("function_id", "invocation", "run_id", "writes")

    def __init__(self, run_id: str, function_id: str) -> None:
        self.run_id = run_id
        self.function_id = function_id
        self.writes: list[StepWrite] = []
        self.invocation: Invocation | None = None  # None: the function is not deployed here

    def sink(self, write: StepWrite) -> None:
        self.writes.append(write)

    def run_sync(self) -> PushResult:
        try:
            result = self.invocation.run() if self.invocation is not None else None
        except Exception as exc:
            return self.report(None, exc)
        return self.report(result, None)

    def report(self, result: InvocationResult | None, error: BaseException | None) -> PushResult:
        if self.invocation is None:  # not deployed here (yet): the dispatcher delivers it again later
            message = f"function {self.function_id!r} is not registered in the app served here"
            return PushResult(self.run_id, error={"type": "NotFound", "message": message})
        if result is None:
            log.error("invocation of run %s crashed", self.run_id, exc_info=error)
            return PushResult(self.run_id, error={"type": type(error).__name__, "message": str(error)})
        writes = self.writes + ([result.final_write] if result.final_write else [])
        return PushResult(self.run_id, writes, result.outcome, result.logs)


@dataclass(slots=True)
class Opened:
    """A verified, decoded request: its id (the answer is signed with it) and its invocations."""

    request_id: str
    jobs: list[_Job]
    view: HttpView | None = None

    def close(self) -> None:
        if self.view is not None:
            self.view.close()


class Endpoint:
    """Verifies, decodes, builds invocations, and signs answers; runs nothing itself."""

    def __init__(self, app: Conveyor, keys: tuple[str, ...], *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.keys = keys
        self.max_body = max_body
        self.verifier = Verifier(keys)

    def open(self, signature: str | None, body: bytes) -> Opened | Response:
        """The request id and the jobs of a request, or the error response (nothing is run)."""
        try:
            request_id = self.verifier.verify(signature, body).request_id
            req = decode_request(body)
        except SignatureError as exc:
            return _error(401, "unauthorized", exc.message)
        except InvalidInput as exc:
            return _error(400, "invalid_input", exc.message)
        skew = req.now - time.time()
        view = None
        if req.view_url is not None:  # what steps read while they run: asked of the server
            from conveyor.sdk.push_client import HttpView

            view = HttpView(req.view_url, self.keys)
        jobs = []
        for inp in req.invocations:
            inp.skew = skew  # the endpoint's clock set to the database's, as of the request
            jobs.append(self._job(inp, view))
        return Opened(request_id, jobs, view)

    def _job(self, inp: InvocationInput, view: HttpView | None) -> _Job:
        job = _Job(inp.run_id, inp.function_id)
        built = build_invocation(
            self.app._registry, inp, job.sink, backoff=self.app.backoff, budget=self.app.invocation_budget,
            view=view, yield_after_write=True,
        )
        if not isinstance(built, Failed):
            job.invocation = built
        return job

    def reply(self, request_id: str, results: Iterable[PushResult]) -> Response:
        body = encode_response(list(results))
        headers = [("content-type", "application/json"), (HEADER.lower(), sign(body, self.keys, request_id=request_id))]
        return 200, headers, body



class SyncBatch:
    """The ``def`` invocations of one request, run from a shared queue by pool threads.

    One thread starts; if it has not emptied the queue after ``SPREAD_AFTER`` seconds (slow
    step bodies), more threads join, one per waiting invocation. A batch of short steps thus
    costs one thread hand-off instead of one per invocation; slow ones still run side by side.
    With ``everything`` (WSGI), ``async def`` invocations are queued too (each runs its own loop).
    """

    def __init__(self, jobs: list[_Job], pool: ThreadPoolExecutor, threads: int, *, everything: bool = False) -> None:
        self.order = jobs
        self.jobs = [j for j in jobs if everything or j.invocation is None or not j.invocation.is_async]
        self.queue: collections.deque[_Job] = collections.deque(self.jobs)
        self.results: dict[int, PushResult] = {}
        self.threads = threads

    def work(self) -> None:
        while True:
            try:
                job = self.queue.popleft()
            except IndexError:
                return
            self.results[id(job)] = job.run_sync()

    def spread(self) -> int:
        return min(len(self.queue), self.threads - 1)

    def merge(self, others: list[PushResult]) -> list[PushResult]:
        """Every job's result in request order (``others``: the rest's, in order)."""
        rest = iter(others)
        return [self.results[id(j)] if id(j) in self.results else next(rest) for j in self.order]


class AsgiEndpoint:
    """The endpoint as an ASGI app (FastAPI, Starlette, any ASGI server)."""

    def __init__(self, endpoint: Endpoint, *, threads: int = 32, registration: Registration | None = None) -> None:
        self.endpoint = endpoint
        self.registration = registration
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status, headers, body = await self._handle(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
        if scope["method"] != "POST":
            return _error(405, "method_not_allowed", "a Conveyor push endpoint takes signed POST requests")
        body = await _read_body(receive, self.endpoint.max_body)
        if body is None:
            return _error(413, "too_large", f"the body is over {self.endpoint.max_body} bytes")
        signature = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"conveyor-signature"), None)
        # verifying and decoding a large body must not hold up the event loop
        opened = await asyncio.to_thread(self.endpoint.open, signature, body)
        if not isinstance(opened, Opened):
            return opened
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="conveyor-push")
            batch = SyncBatch(opened.jobs, self._pool, self._threads)
            loop = asyncio.get_running_loop()
            workers = [loop.run_in_executor(self._pool, batch.work)] if batch.queue else []
            queued = {id(j) for j in batch.jobs}
            asyncs = asyncio.gather(*(self._run_async(j) for j in opened.jobs if id(j) not in queued))
            if workers:
                done, _ = await asyncio.wait(workers, timeout=SPREAD_AFTER)
                if not done:  # slow step bodies: run the rest side by side
                    workers += [loop.run_in_executor(self._pool, batch.work) for _ in range(batch.spread())]
                await asyncio.gather(*workers)
            results = batch.merge(await asyncs)
        finally:
            opened.close()
        return self.endpoint.reply(opened.request_id, results)

    async def _run_async(self, job: _Job) -> PushResult:
        assert job.invocation is not None
        try:
            result = await job.invocation.arun()
        except Exception as exc:
            return job.report(None, exc)
        return job.report(result, None)

    async def _lifespan(self, receive: Callable[[], Awaitable[dict[str, Any]]],
                        send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.registration is not None:
                    self.registration.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        """Stop registering, and release the thread pool and the view's connections."""
        if self.registration is not None:
            self.registration.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


async def _read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class WsgiEndpoint:
    """The endpoint as a WSGI app (Flask, Django): each request runs its invocations on threads."""

    def __init__(self, endpoint: Endpoint, *, threads: int = 32, registration: Registration | None = None) -> None:
        self.endpoint = endpoint
        self.registration = registration
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="conveyor-push")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        status, headers, body = self._handle(environ)
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
                  413: "Payload Too Large"}.get(status, "Error")
        start_response(f"{status} {reason}", [*headers, ("content-length", str(len(body)))])
        return [body]

    def _handle(self, environ: dict[str, Any]) -> Response:
        if environ.get("REQUEST_METHOD") != "POST":
            return _error(405, "method_not_allowed", "a Conveyor push endpoint takes signed POST requests")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _error(400, "invalid_input", "bad Content-Length")
        if length > self.endpoint.max_body:
            return _error(413, "too_large", f"the body is over {self.endpoint.max_body} bytes")
        body = environ["wsgi.input"].read(length) if length else b""
        opened = self.endpoint.open(environ.get("HTTP_CONVEYOR_SIGNATURE"), body)
        if not isinstance(opened, Opened):
            return opened
        batch = SyncBatch(opened.jobs, self._pool, self._threads, everything=True)
        try:
            workers = [self._pool.submit(batch.work)]
            if concurrent.futures.wait(workers, timeout=SPREAD_AFTER).not_done:
                workers += [self._pool.submit(batch.work) for _ in range(batch.spread())]
            for worker in workers:
                worker.result()
            results = batch.merge([])
        finally:
            opened.close()
        return self.endpoint.reply(opened.request_id, results)

    def close(self) -> None:
        if self.registration is not None:
            self.registration.stop()
        self._pool.shutdown(wait=False)


def make_endpoint(
    app: Conveyor, *, signing_key: str | None, fallback_signing_key: str | None, max_body: int,
) -> Endpoint:
    if not isinstance(max_body, int) or max_body < 1024:
        raise ConfigError("max_body must be at least 1024 bytes")
    return Endpoint(app, signing_keys(signing_key, fallback_signing_key), max_body=max_body)
