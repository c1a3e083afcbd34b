"""A live ``conveyor dev`` process serving the demo app, and how the tests talk to its dashboard.

The process is the real CLI (``python -m conveyor.cli.main dev tests/dashboard/demo_app.py:app
--database URL --port 0``): the server, the dashboard and a worker in one process, as a
user runs it. Runs are started by sending events to its HTTP API and awaited by polling
the API (never a fixed sleep).
"""

from __future__ import annotations

import re
import sys
import uuid
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import wait_until
from tests.server.helpers import ROOT, Server, clean_env, start_server

DEMO = ROOT / "tests" / "dashboard" / "demo_app.py"
TERMINAL = {"completed", "failed", "cancelled"}
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def start_dev(db_url: str, workdir: Path, *args: str, token: str | None = None, timeout: float = 60.0) -> Server:
    """Start ``conveyor dev`` for the demo app on ``db_url``; return once ``/healthz`` answers."""
    argv = [sys.executable, "-m", "conveyor.cli.main", "dev", f"{DEMO}:app", "--database", db_url, "--port", "0", *args]
    return start_server(db_url, workdir, token=token, timeout=timeout, argv=argv,
                        env=clean_env(DEMO_FLAG=str(workdir / "flag")))


# ---- the API, to start runs and see how they end ----------------------------------------------------


def send(server: Server, name: str, data: dict[str, Any] | None = None) -> str:
    """Send one event through the HTTP API; return its id."""
    event_id = f"{name}-{uuid.uuid4().hex[:10]}"
    resp = httpx.post(server.url + "/api/v1/events", json={"name": name, "data": data or {}, "id": event_id},
                      headers=server.headers(), timeout=30)
    assert resp.status_code == 202, resp.text
    return event_id


def api_run(server: Server, run_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/api/v1/runs/{run_id}", headers=server.headers(), timeout=30)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def run_of(server: Server, event_id: str, *, ended: bool = True, timeout: float = 60.0) -> dict[str, Any]:
    """The run an event started, once it exists (and, with ``ended``, once it has ended)."""

    def look() -> dict[str, Any] | None:
        resp = httpx.get(server.url + "/api/v1/runs", params={"event_id": event_id}, headers=server.headers(),
                         timeout=30)
        runs = resp.json()["runs"]
        if not runs or (ended and runs[0]["status"] not in TERMINAL):
            return None
        run: dict[str, Any] = runs[0]
        return run

    found: dict[str, Any] = wait_until(look, timeout=timeout, message=lambda: f"a run of event {event_id}")
    return found


def status_is(server: Server, run_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
    run: dict[str, Any] = wait_until(lambda: (r := api_run(server, run_id))["status"] in statuses and r,
                                     timeout=timeout, message=lambda: f"run {run_id} to be {statuses}")
    return run


# ---- the dashboard ----------------------------------------------------------------------------------


@dataclass
class Browser:
    """An HTTP client that keeps the dashboard's cookies, as a browser would, and sends the
    ``Origin`` header a browser sends with every form."""

    server: Server
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.server.url, follow_redirects=False, timeout=30.0)
        self.server.clients.append(self.client)

    @property
    def origin(self) -> str:
        return self.server.url

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def page(self, path: str, status: int = 200) -> str:
        resp = self.get(path)
        assert resp.status_code == status, f"GET {path} -> {resp.status_code}: {resp.text[:800]}"
        assert resp.headers["content-type"].startswith("text/html"), resp.headers
        return resp.text

    def csrf(self, path: str = "/") -> str:
        match = CSRF.search(self.page(path))
        assert match, f"no CSRF token on {path}"
        return unescape(match.group(1))

    def post(self, path: str, form: dict[str, Any], *, origin: str | None = "same", **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if origin == "same":
            headers["Origin"] = self.origin
        elif origin is not None:
            headers["Origin"] = origin
        return self.client.post(path, data=form, headers=headers, **kwargs)


def text_of(html: str) -> str:
    """The visible text of a page, with whitespace collapsed, for ``in`` checks."""
    without = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", without))).strip()
