"""A real ``conveyor server`` process for the HTTP tests, and what they check with it.

The server is started with the real CLI (``python -m conveyor.cli.main server
--database URL --port 0``); the bound URL is read from its stderr line
``listening on http://HOST:PORT``, and the server counts as up once ``GET /healthz``
answers 200. Nothing here sleeps for a fixed time: every wait polls a condition
until a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
LISTENING = re.compile(r"listening on (http://\S+)")

#: The secrets of the authenticated server variant.
EVENT_KEY = "ek-secret"
API_TOKEN = "at-secret"

#: Environment variables that would change how the server is configured: tests say
#: everything on the command line.
_SERVER_ENV = (
    "CONVEYOR_DATABASE_URL", "CONVEYOR_EVENT_KEYS", "CONVEYOR_API_TOKENS", "CONVEYOR_SIGNING_KEY",
    "CONVEYOR_SIGNING_KEY_FALLBACK", "CONVEYOR_HOST", "CONVEYOR_PORT", "CONVEYOR_LOG_FORMAT", "CONVEYOR_LOG_LEVEL",
    "CONVEYOR_METRICS_HOST",
)


def server_argv(db_url: str | None, *args: str, port: str = "0") -> list[str]:
    argv = [sys.executable, "-m", "conveyor.cli.main", "server"]
    if db_url is not None:
        argv += ["--database", db_url]
    return [*argv, "--port", port, *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Server:
    """One ``conveyor server`` process."""

    url: str
    proc: subprocess.Popen[bytes]
    db_url: str
    log: Path
    token: str | None = None  # the API token to send (None: an open server)
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname and parts.port, self.url
        return parts.hostname, parts.port

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An HTTP client of this server (with the API token, if any), closed at teardown."""
        kwargs.setdefault("timeout", 30.0)
        client = httpx.Client(base_url=self.url, headers=self.headers(token), **kwargs)
        self.clients.append(client)
        return client

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_kib(self) -> int:
        """The server's resident memory (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status (killing it at the bound)."""
        self.close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"the server did not exit within {timeout}s of signal {sig}; stderr:\n{self.stderr()}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        self.close_clients()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


def start_server(
    db_url: str | None,
    workdir: Path,
    *args: str,
    token: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    argv: list[str] | None = None,
) -> Server:
    """Start ``conveyor server`` on ``db_url`` with extra ``args`` (or the command ``argv``, e.g.
    ``conveyor dev``); return once /healthz is 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("server-*.err")))
    log = workdir / f"server-{n}.err"
    with open(log, "wb") as err, open(workdir / f"server-{n}.out", "wb") as out:
        proc = subprocess.Popen(
            argv or server_argv(db_url, *args), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            env=env or clean_env(), cwd=str(workdir),
        )
    deadline = time.monotonic() + timeout
    url = None
    try:
        while url is None:
            match = LISTENING.search(log.read_text(errors="replace"))
            if match:
                url = match.group(1).rstrip("/")
                break
            _check_alive(proc, log, deadline, "its 'listening on' line")
        server = Server(url, proc, db_url or "", log, token=token)
        while not server.healthy():
            _check_alive(proc, log, deadline, f"GET {url}/healthz to answer 200")
        return server
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise


def _check_alive(proc: subprocess.Popen[bytes], log: Path, deadline: float, what: str) -> None:
    if proc.poll() is not None:
        raise AssertionError(
            f"the server exited with status {proc.returncode} before {what}; stderr:\n"
            + log.read_text(errors="replace")[-5000:]
        )
    if time.monotonic() >= deadline:
        raise AssertionError(f"timed out waiting for {what}; stderr:\n" + log.read_text(errors="replace")[-5000:])
    time.sleep(0.02)


# ---- checks ------------------------------------------------------------------------------------


def describe(resp: httpx.Response) -> str:
    return f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text[:600]!r}"


def assert_error(resp: httpx.Response, status: int | Iterable[int], code: str | Iterable[str] | None = None) -> dict:
    """``resp`` is an error of ``status`` whose body is exactly ``{"error": {"code", "message"}}``."""
    statuses = {status} if isinstance(status, int) else set(status)
    assert resp.status_code in statuses, describe(resp)
    assert resp.headers.get("content-type", "").startswith("application/json"), describe(resp)
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, describe(resp)
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, describe(resp)
    assert isinstance(error["code"], str) and error["code"], describe(resp)
    assert isinstance(error["message"], str) and error["message"], describe(resp)
    if code is not None:
        codes = {code} if isinstance(code, str) else set(code)
        assert error["code"] in codes, describe(resp)
    return error


def assert_accepted(resp: httpx.Response, n: int | None = None) -> list[str]:
    """A 202 ``{"ids": [...]}``; returns the ids."""
    assert resp.status_code == 202, describe(resp)
    body = resp.json()
    assert set(body) == {"ids"}, describe(resp)
    ids = body["ids"]
    assert isinstance(ids, list) and all(isinstance(i, str) and i for i in ids), describe(resp)
    if n is not None:
        assert len(ids) == n, describe(resp)
    return ids


RUN_SUMMARY_KEYS = {
    "id", "function_id", "event_id", "status", "pool", "parent_id", "output", "error",
    "created_at", "started_at", "ended_at",
}
STEP_KEYS = {"id", "kind", "status", "attempts", "output", "error", "started_at", "ended_at"}


def assert_run_summary(run: Any) -> None:
    assert isinstance(run, dict), run
    missing = RUN_SUMMARY_KEYS - set(run)
    assert not missing, f"run summary lacks {sorted(missing)}: {run}"
    assert run["status"] in {"queued", "running", "waiting", "completed", "failed", "cancelled"}, run
    for key in ("created_at", "started_at", "ended_at"):
        assert run[key] is None or _is_utc_iso(run[key]), f"{key} is not an ISO-8601 UTC time: {run}"
    assert run["created_at"] is not None, run


def _is_utc_iso(value: Any) -> bool:
    from datetime import datetime, timedelta

    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


# ---- the database, read directly -----------------------------------------------------------------


def _sqlite_path(db_url: str) -> str:
    assert db_url.startswith("sqlite:///"), db_url
    return db_url[len("sqlite:///"):]


@contextlib.contextmanager
def _connect(db_url: str) -> Iterator[Any]:
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(_sqlite_path(db_url), timeout=30)
        try:
            yield conn
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            yield conn


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run on the database itself (not through the server)."""
    with _connect(db_url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def counts(db_url: str) -> tuple[int, int]:
    """How many events and runs the database holds."""
    events = query(db_url, "SELECT count(*) FROM conveyor_events")[0][0]
    runs = query(db_url, "SELECT count(*) FROM conveyor_runs")[0][0]
    return int(events), int(runs)


# ---- raw HTTP, for what a well-behaved client cannot send -------------------------------------------


@dataclass
class RawResponse:
    status: int | None  # None: the connection closed without a response
    head: str
    body: bytes
    elapsed: float
    sent: int  # body bytes written before the response (or the close)


def raw_request(
    address: tuple[str, int],
    head: bytes,
    body: Iterable[bytes] = (),
    *,
    timeout: float = 30.0,
) -> RawResponse:
    """Write ``head`` then the ``body`` chunks on a fresh connection, stopping as soon as the
    server answers (or closes); return its response."""
    import select

    start = time.monotonic()
    sent = 0
    data = b""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(head)
            for chunk in body:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
                if time.monotonic() - start > timeout:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its response (if any) is still to be read
        deadline = start + timeout
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            head_part, _, rest = data.partition(b"\r\n\r\n")
            length = _content_length(head_part)
            while length is not None and len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            data = head_part + b"\r\n\r\n" + rest if head_part else b""
        except (ConnectionResetError, TimeoutError):
            pass
    elapsed = time.monotonic() - start
    if not data.startswith(b"HTTP/"):
        return RawResponse(None, "", b"", elapsed, sent)
    head_part, _, rest = data.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return RawResponse(status, head_part.decode("latin-1"), rest, elapsed, sent)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None
