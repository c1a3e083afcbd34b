"""Real pieces for the push tests: uvicorn servers on loopback ports, a fault injector, a
TCP proxy that resets connections, and the server-with-dispatcher of a test database.

Every wait polls a condition until a deadline (``tests.conftest.wait_until``); nothing
sleeps for a fixed time, except the endpoint's injected "too slow to answer" fault,
which is the behaviour under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from tests.conftest import wait_until

KEY = "push-test-signing-key-0123456789"
OLD_KEY = "push-test-old-key-9876543210abcd"
API_TOKEN = "push-api-token-42"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Served:
    """An ASGI app served by uvicorn on 127.0.0.1 (port chosen by the OS), in a thread.

    The socket is bound at once (so the URL is known before the app exists); ``start`` serves."""

    def __init__(self, app: Any = None, *, lifespan: str = "on") -> None:
        self.app = app
        self.lifespan = lifespan
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self, app: Any = None) -> Served:
        config = uvicorn.Config(app or self.app, log_level="warning", lifespan=self.lifespan, loop="asyncio",
                                timeout_graceful_shutdown=5)
        server = self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        thread = self.thread
        wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(30)
        self.sock.close()


@dataclass
class Traffic:
    """What an endpoint saw: requests (time, run ids) and the invocations in flight at most."""

    requests: list[tuple[float, list[str]]] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def runs(self) -> set[str]:
        with self.lock:
            return {r for _, ids in self.requests for r in ids}

    def times_of(self, run_id: str) -> list[float]:
        with self.lock:
            return [t for t, ids in self.requests if run_id in ids]


class Faulty:
    """ASGI middleware in front of an endpoint: records traffic, and answers the next requests
    wrongly on demand. The endpoint runs every request it is handed; the fault is applied to
    its answer, so the work is done and then lost:

    * ``"500"``: answer 500 instead;
    * ``"slow"``: answer only after ``slow_for`` seconds (past the registered timeout);
    * ``"badsig"``: corrupt the answer's signature.
    """

    def __init__(self, inner: Any, slow_for: float = 3.0) -> None:
        self.inner = inner
        self.slow_for = slow_for
        self.plan: deque[str] = deque()
        self.traffic = Traffic()
        self.applied: list[str] = []

    def fail_next(self, *modes: str) -> None:
        self.plan.extend(modes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        ids = [i["run_id"] for i in json.loads(body).get("invocations", [])] if body.startswith(b"{") else []
        t = self.traffic
        with t.lock:
            t.requests.append((time.monotonic(), ids))
            t.inflight += len(ids)
            t.max_inflight = max(t.max_inflight, t.inflight)
        mode = self.plan.popleft() if self.plan else None
        status, headers, out = await self._inner_answer(scope, body)
        with t.lock:
            t.inflight -= len(ids)
        if mode is not None:
            self.applied.append(mode)
        if mode == "500":
            status, headers, out = 500, [(b"content-type", b"text/plain")], b"injected failure"
        elif mode == "slow":
            await asyncio.sleep(self.slow_for)
        elif mode == "badsig":
            headers = [(k, _corrupt(v) if k == b"conveyor-signature" else v) for k, v in headers]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    async def _inner_answer(self, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        sent = False
        answer: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # (a disconnect never comes)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"], answer["headers"] = message["status"], list(message.get("headers", []))
            else:
                answer["body"] += message.get("body", b"")

        await self.inner(scope, receive, send)
        return answer["status"], answer["headers"], answer["body"]


def _corrupt(signature: bytes) -> bytes:
    head, _, mac = signature.rpartition(b"v1=")
    return head + b"v1=" + (b"0" if mac[:1] != b"0" else b"1") + mac[1:]


class ResettingProxy:
    """A TCP proxy to ``upstream`` that, while ``resets`` is above zero, lets a request through
    (so the endpoint runs it) and then resets the client's connection instead of answering."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.resets = 0
        self.done = 0
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset_next(self, n: int) -> None:
        with self._lock:
            self.resets += n

    def _take(self) -> bool:
        with self._lock:
            if self.resets <= 0:
                return False
            self.resets -= 1
            self.done += 1
            return True

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions in one thread, so that a reset closes a socket nobody is reading."""
        peer = {client: upstream, upstream: client}
        with contextlib.suppress(OSError):
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 30.0)
                if not readable:
                    break
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if src is upstream and self._take():  # the request ran; its answer never arrives
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        raise OSError("reset")
                    peer[src].sendall(data)
        for s in (client, upstream):
            s.close()

    def close(self) -> None:
        self._closed = True
        self.sock.close()


@contextlib.contextmanager
def served(app: Any, **kwargs: Any) -> Iterator[Served]:
    s = Served(app, **kwargs).start()
    try:
        yield s
    finally:
        s.stop()
