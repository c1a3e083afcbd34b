"""The HTTP producer: an app that sends events (and inspects runs) through ``conveyor server``.

``Conveyor(name, server_url="http://host:8288", event_key="...")`` needs no database:
``send``/``send_many`` become ``POST /api/v1/events``, and with an ``api_token`` the
inspecting calls (``get_run``, ``list_runs``, ``cancel_run``, ...) use the management
API. Calls that need the database itself (``worker``, ``drain``, ``migrate``, ...) raise
:class:`~conveyor.errors.ConfigError`.

Retries. Event ids are made here, before the first attempt, so every retry of a send
carries the same ids and the server's idempotency makes it safe. Transient failures
(connection refused or reset, timeouts, 429 with ``Retry-After``, 502/503/504) are
retried with exponential backoff and jitter until ``send_timeout`` has passed; then
:class:`ServerUnavailable` names the server and the last error. A request that is not
idempotent (cancel, replay, redrive) is retried only when it surely was not applied:
the connection was never made, or the server refused it (429/503).

How the server's answers become errors::

    ConveyorError
    ├── ConfigError              401 (the key or token was refused), 404/405 on the events route
    ├── InvalidInput             400, 413, 422: the server's message
    ├── NotFound                 404 for a run
    ├── InvalidState             409
    └── DatabaseUnavailable
        └── ServerUnavailable    no success within send_timeout (the last error in the message)

Layout: the retry loop and each operation are generators free of I/O, written once, in
:mod:`conveyor.sdk.wire`; :meth:`Producer._drive` and :meth:`Producer._adrive` are the
thin sync and async shells that run them on one pooled ``httpx.Client`` /
``httpx.AsyncClient`` each. ``httpx`` is imported on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from conveyor.errors import ConfigError
from conveyor.observability.tracing import current_traceparent
from conveyor.sdk.wire import (
    API_TOKEN_ENV,
    EVENT_KEY_ENV,
    SERVER_URL_ENV,
    Attempt,
    Call,
    Op,
    Pause,
    Reply,
    RetryPolicy,
    Target,
    dead_letters_op,
    get_run_op,
    list_runs_op,
    logs_op,
    plan,
    redrive_op,
    run_action_op,
    runs_for_event_op,
    send_many_op,
    send_op,
)
from conveyor.types import Event, Run

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

DATABASE_ENV = "CONVEYOR_DATABASE_URL"
USER_AGENT = "conveyor-producer"


# ---- configuration ------------------------------------------------------------------------------


def http_producer(
    database: str | None,
    server_url: str | None,
    event_key: str | None,
    api_token: str | None,
    send_timeout: float,
) -> Producer | None:
    """The producer for these ``Conveyor(...)`` arguments, or ``None`` for a database-backed app.

    An app sends over HTTP when ``server_url`` is given, or when ``$CONVEYOR_SERVER_URL``
    is set and no database is named (neither ``database=`` nor ``$CONVEYOR_DATABASE_URL``):
    so one module can be a producer in the web tier and serve functions in a worker that
    is started with ``--database``. ``event_key`` and ``api_token`` default to
    ``$CONVEYOR_EVENT_KEY`` and ``$CONVEYOR_API_TOKEN``.
    """
    if server_url is not None and database is not None:
        raise ConfigError("give database= (this app uses the database) or server_url= (it sends over HTTP), not both")
    if server_url is None:
        env_url = os.environ.get(SERVER_URL_ENV)
        if not env_url or database is not None or os.environ.get(DATABASE_ENV):
            if database is not None and (event_key is not None or api_token is not None):
                raise ConfigError("event_key= and api_token= are for an app that sends over HTTP (server_url=), "
                                  "not for one with database=")
            return None  # a database app (the keys, if any, serve the same module when it is a producer)
        server_url = env_url
    event_key = event_key if event_key is not None else os.environ.get(EVENT_KEY_ENV) or None
    api_token = api_token if api_token is not None else os.environ.get(API_TOKEN_ENV) or None
    return Producer(server_url, event_key=event_key, api_token=api_token, send_timeout=send_timeout)


def _check_url(url: Any) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"server_url must be a URL string, got {type(url).__name__}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"bad server_url {url!r}: expected http://host:port or https://host")
    if parts.query or parts.fragment:
        raise ConfigError(f"bad server_url {url!r}: no query or fragment")
    return url.strip().rstrip("/")


def _check_secret(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
        raise ConfigError(f"{what} must be a non-empty string on one line")
    return value


# ---- the producer: one pooled client per app, thin sync and async shells ------------------------


class Producer:
    """Sends events to (and inspects runs through) a Conveyor server over HTTP.

    ``transport``/``async_transport``, ``sleep``/``asleep``, ``clock`` and ``rand`` are
    for tests; by default real sockets, real time and ``random.random``.
    """

    def __init__(
        self,
        server_url: str,
        *,
        event_key: str | None = None,
        api_token: str | None = None,
        send_timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if isinstance(send_timeout, bool) or not isinstance(send_timeout, int | float) or not send_timeout > 0:
            raise ConfigError(f"send_timeout must be a positive number of seconds, got {send_timeout!r}")
        self.server_url = _check_url(server_url)
        self.event_key = _check_secret(event_key, "event_key")
        self.api_token = _check_secret(api_token, "api_token")
        self.policy = RetryPolicy(budget=float(send_timeout))
        self.target = Target(self.server_url, self.event_key is not None, self.api_token is not None)
        self._transport = transport
        self._async_transport = async_transport
        self._sleep = sleep
        self._asleep = asleep
        self._clock = clock
        self._rand = rand
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._aclients: dict[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<Producer {self.server_url}>"

    def needs_database(self, what: str) -> ConfigError:
        return ConfigError(f"this app sends over HTTP (server_url={self.server_url}); {what} needs a database")

    # ---- the calls of the app ----

    def send(self, name: str, data: Any = None, *, id: str | None = None) -> str:
        return self._drive(send_op(name, data, id))

    async def asend(self, name: str, data: Any = None, *, id: str | None = None) -> str:
        return await self._adrive(send_op(name, data, id))

    def send_many(self, events: Iterable[Event]) -> list[str]:
        return self._drive(send_many_op(events))

    async def asend_many(self, events: Iterable[Event]) -> list[str]:
        return await self._adrive(send_many_op(events))

    def get_run(self, run_id: str) -> Run:
        return self._drive(get_run_op(run_id))

    async def aget_run(self, run_id: str) -> Run:
        return await self._adrive(get_run_op(run_id))

    def runs_for_event(self, event_id: str) -> list[Run]:
        return self._drive(runs_for_event_op(event_id))

    async def aruns_for_event(self, event_id: str) -> list[Run]:
        return await self._adrive(runs_for_event_op(event_id))

    def list_runs(
        self, function: str | None = None, status: str | None = None, limit: int = 100, *,
        since: datetime | None = None, event_id: str | None = None,
    ) -> list[Run]:
        return self._drive(list_runs_op(function, status, limit, since, event_id))

    async def alist_runs(
        self, function: str | None = None, status: str | None = None, limit: int = 100, *,
        since: datetime | None = None, event_id: str | None = None,
    ) -> list[Run]:
        return await self._adrive(list_runs_op(function, status, limit, since, event_id))

    def run_logs(self, run_id: str) -> list[dict[str, Any]]:
        return self._drive(logs_op(run_id))

    async def arun_logs(self, run_id: str) -> list[dict[str, Any]]:
        return await self._adrive(logs_op(run_id))

    def cancel_run(self, run_id: str) -> None:
        self._drive(run_action_op(run_id, "cancel"))

    async def acancel_run(self, run_id: str) -> None:
        await self._adrive(run_action_op(run_id, "cancel"))

    def replay_run(self, run_id: str) -> None:
        self._drive(run_action_op(run_id, "replay"))

    async def areplay_run(self, run_id: str) -> None:
        await self._adrive(run_action_op(run_id, "replay"))

    def dead_letters(self, limit: int = 100) -> list[Run]:
        return self._drive(dead_letters_op(limit))

    async def adead_letters(self, limit: int = 100) -> list[Run]:
        return await self._adrive(dead_letters_op(limit))

    def redrive(self, run_ids: Sequence[str] | None = None) -> list[str]:
        return self._drive(redrive_op(run_ids))

    async def aredrive(self, run_ids: Sequence[str] | None = None) -> list[str]:
        return await self._adrive(redrive_op(run_ids))

    # ---- the shells ----

    def _headers(self, call: Call) -> dict[str, str]:
        secret = (self.api_token or self.event_key) if call.management else (self.event_key or self.api_token)
        headers = {"content-type": "application/json"} if call.body is not None else {}
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        traceparent = current_traceparent()  # the runs of the events sent join the caller's trace
        if traceparent is not None:
            headers["traceparent"] = traceparent
        return headers

    def _request_args(self, attempt: Attempt) -> dict[str, Any]:
        import httpx

        call = attempt.call
        timeout = httpx.Timeout(attempt.timeout, connect=min(attempt.timeout, self.policy.connect_timeout))
        return {"method": call.method, "url": call.path, "content": call.body, "params": call.params,
                "headers": self._headers(call), "timeout": timeout}

    def _drive(self, op: Op[T]) -> T:
        """Run an operation on the pooled client, sleeping between retries."""
        import httpx

        client = self._sync_client()
        steps = plan(op, self.target, self.policy, self._clock, self._rand)
        try:
            step = next(steps)
            while True:
                outcome: Reply | Exception | None = None
                if isinstance(step, Pause):
                    self._sleep(step.seconds)
                else:
                    try:
                        r = client.request(**self._request_args(step))
                        outcome = Reply(r.status_code, r.content, r.headers.get("retry-after"))
                    except httpx.TransportError as exc:
                        outcome = exc
                step = steps.send(outcome)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _adrive(self, op: Op[T]) -> T:
        """Run an operation on this event loop's pooled client, sleeping between retries."""
        import httpx

        client = await self._async_client()
        steps = plan(op, self.target, self.policy, self._clock, self._rand)
        try:
            step = next(steps)
            while True:
                outcome: Reply | Exception | None = None
                if isinstance(step, Pause):
                    await self._asleep(step.seconds)
                else:
                    try:
                        r = await client.request(**self._request_args(step))
                        outcome = Reply(r.status_code, r.content, r.headers.get("retry-after"))
                    except httpx.TransportError as exc:
                        outcome = exc
                step = steps.send(outcome)
        except StopIteration as done:
            result: T = done.value
            return result

    # ---- pooled clients ----

    def _client_options(self) -> dict[str, Any]:
        return {"base_url": self.server_url, "headers": {"user-agent": USER_AGENT}}

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            import httpx

            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(transport=self._transport, **self._client_options())
                client = self._client
        return client

    async def _async_client(self) -> httpx.AsyncClient:
        """This event loop's client. A client belongs to the loop it was made on; it is closed
        when that loop shuts its async generators down (``asyncio.run`` does), or by ``close``."""
        import httpx

        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._aclients if lp.is_closed()]:
                del self._aclients[old]
            entry = self._aclients.get(loop)
            if entry is not None:
                return entry[0]
            client = httpx.AsyncClient(transport=self._async_transport, **self._client_options())
            keeper = self._keeper(loop, client)
            self._aclients[loop] = (client, keeper)
        await keeper.__anext__()  # now the loop knows it, and closes it at shutdown_asyncgens()
        return client

    async def _keeper(self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            with self._lock:
                if loop in self._aclients and self._aclients[loop][0] is client:
                    del self._aclients[loop]
            await client.aclose()

    def close(self) -> None:
        """Close the pooled connections: the sync client's, and those of every event loop still open."""
        with self._lock:
            client, self._client = self._client, None
            entries, self._aclients = self._aclients, {}
        if client is not None:
            client.close()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, (_, keeper) in entries.items():
            if loop.is_closed():
                continue
            if loop is running:  # called from a coroutine: it cannot wait here (aclose can)
                task = loop.create_task(keeper.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            elif loop.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(keeper.aclose(), loop).result(timeout=5)
            else:
                loop.run_until_complete(keeper.aclose())

    async def aclose(self) -> None:
        """Close the pooled connections, waiting for this event loop's."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()
        self.close()
