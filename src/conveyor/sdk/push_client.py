"""The endpoint's side of its conversation with the server: registering, and reading.

* :func:`register_endpoint` tells ``conveyor server`` that a URL serves a pool's runs of
  an app's functions (``POST /api/v1/endpoints`` with an API token).
* :class:`Registration` does it from a background thread once the endpoint answers at
  its own URL, retrying while the server is down.
* :class:`HttpView` is what a running step reads (a map's results, whether a function
  exists) when the database is the server's: signed calls to its ``/api/v1/push/view``.

``httpx`` is imported here only; ``import conveyor`` does not import this module.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import httpx

from conveyor.errors import ConfigError, ConveyorError, InvalidInput
from conveyor.ids import new_id
from conveyor.push import protocol
from conveyor.push.signing import HEADER, Verifier, sign
from conveyor.sdk.wire import API_TOKEN_ENV, SERVER_URL_ENV

if TYPE_CHECKING:
    from conveyor.sdk.app import Conveyor

log = logging.getLogger(__name__)


def endpoint_document(
    app: Conveyor, url: str, *, pool: str | None, concurrency: int, rate: float | None, timeout: float,
) -> dict[str, Any]:
    """The body of ``POST /api/v1/endpoints`` for this app's functions."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"the endpoint url must be an http:// or https:// URL, got {url!r}")
    specs = app._registry.specs()
    if not specs:
        raise ConfigError(f"app {app.name!r} has no functions to serve")
    if pool is None:
        pools = sorted({s.pool for s in specs})
        if len(pools) != 1:
            raise ConfigError(f"the functions of app {app.name!r} use pools {', '.join(pools)}: "
                              "pass pool= to say which one this endpoint serves")
        pool = pools[0]
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ConfigError("concurrency must be a positive integer")
    if rate is not None and not (isinstance(rate, int | float) and rate > 0):
        raise ConfigError("rate must be a positive number of invocations per second, or None")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError("timeout must be a positive number of seconds")
    return {"url": url, "pool": pool, "functions": [asdict(s) for s in specs], "concurrency": concurrency,
            "rate": rate, "timeout": float(timeout)}


def server_settings(app: Conveyor, server_url: str | None, api_token: str | None) -> tuple[str, str | None]:
    """The server's URL and the API token: given, else the app's (``server_url=``), else the environment."""
    producer = getattr(app, "_producer", None)
    url = server_url or getattr(app, "server_url", None) or os.environ.get(SERVER_URL_ENV)
    if not url:
        raise ConfigError(f"registering an endpoint needs the server's URL: pass server_url= or set ${SERVER_URL_ENV}")
    token = api_token or getattr(producer, "api_token", None) or os.environ.get(API_TOKEN_ENV) or None
    return str(url).rstrip("/"), token


class RegistrationRefused(ConveyorError):
    """The server refused the registration (bad token, bad document): retrying will not help."""

    code = "registration_refused"


def post_registration(server_url: str, api_token: str | None, doc: dict[str, Any], timeout: float = 10.0) -> None:
    """Register once; :class:`RegistrationRefused` on a 4xx, :class:`ConveyorError` if unreachable or 5xx."""
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    try:
        reply = httpx.post(f"{server_url}/api/v1/endpoints", json=doc, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConveyorError(f"cannot reach the Conveyor server at {server_url} ({type(exc).__name__})") from None
    if reply.status_code < 300:
        return
    try:
        message = reply.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = reply.text[:200]
    error = RegistrationRefused if 400 <= reply.status_code < 500 else ConveyorError
    raise error(f"the Conveyor server refused the endpoint {doc['url']} ({reply.status_code}): {message}")


class Registration:
    """Registers an endpoint from a daemon thread: first waits until the endpoint answers at its
    own URL (so the server never pushes to a socket that is not listening yet), then registers,
    retrying with backoff while the server is down or failing. A refusal (4xx) is logged and
    not retried. ``done`` is set once registered."""

    def __init__(self, server_url: str, api_token: str | None, doc: dict[str, Any]) -> None:
        self.server_url = server_url
        self.api_token = api_token
        self.doc = doc
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-register", daemon=True)

    def start(self) -> Registration:
        if not self._thread.is_alive() and not self.done.is_set():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set() and not self._answers():
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)
        delay = 0.2
        while not self._stop.is_set():
            try:
                post_registration(self.server_url, self.api_token, self.doc)
            except RegistrationRefused as exc:
                self.error = exc
                log.error("%s", exc)
                return
            except ConveyorError as exc:
                log.warning("registering endpoint %s failed (%s); retrying in %.1fs", self.doc["url"], exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            log.info("registered endpoint %s for pool %s with %s", self.doc["url"], self.doc["pool"], self.server_url)
            self.done.set()
            return

    def _answers(self) -> bool:
        try:
            httpx.get(self.doc["url"], timeout=2.0)
        except httpx.HTTPError:
            return False
        return True


class HttpView:
    """A running step's reads, answered by the server (see ``conveyor.executor.invocation.StorageView``)."""

    def __init__(self, url: str, keys: Sequence[str]) -> None:
        self.url = url
        self._keys = tuple(keys)
        self._client: httpx.Client | None = None  # opened on the first read, closed with the request
        self._verifier = Verifier(self._keys, replay_guard=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _call(self, doc: dict[str, Any]) -> dict[str, Any]:
        body = protocol.encode(doc)
        request_id = new_id()
        headers = {HEADER: sign(body, self._keys, request_id=request_id), "Content-Type": "application/json"}
        if self._client is None:
            self._client = httpx.Client()
        try:
            reply = self._client.post(self.url, content=body, headers=headers, timeout=60.0)
        except httpx.HTTPError as exc:
            raise ConveyorError(f"cannot reach the Conveyor server at {self.url} ({type(exc).__name__})") from None
        if reply.status_code != 200:
            raise ConveyorError(f"the Conveyor server answered {reply.status_code} to a read: {reply.text[:200]}")
        self._verifier.verify(reply.headers.get(HEADER), reply.content, request_id=request_id)
        return protocol.decode(reply.content)

    def function_exists(self, function_id: str) -> bool:
        return bool(self._call({"op": "function_exists", "function_id": function_id}).get("exists"))

    def children_outputs(self, run_id: str, step_id: str, offset: int, limit: int) -> list[str | None]:
        doc = self._call({"op": "children_outputs", "run_id": run_id, "step_id": step_id, "offset": offset,
                          "limit": limit})
        outputs = doc.get("outputs")
        if not isinstance(outputs, list) or not all(o is None or isinstance(o, str) for o in outputs):
            raise InvalidInput("malformed answer of the Conveyor server to a read of children's outputs")
        return outputs

    def child_error(self, run_id: str, step_id: str, index: int) -> dict[str, Any] | None:
        doc = self._call({"op": "child_error", "run_id": run_id, "step_id": step_id, "index": index})
        error = doc.get("error")
        return error if isinstance(error, dict) else None
