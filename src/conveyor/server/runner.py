"""Run the server with uvicorn: bind, start the services, serve until SIGTERM/SIGINT.

Shutdown is graceful: uvicorn stops accepting connections and lets requests in
flight finish (bounded by ``grace``), then the lifespan commits the intake queue
and stops the dispatcher, the scheduler and the worker.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from conveyor.engine.engine import Engine
from conveyor.scheduler.maintenance import run_maintenance
from conveyor.scheduler.ticker import CronTicker
from conveyor.server.app import Service, create_app
from conveyor.server.config import ServerConfig

log = logging.getLogger("conveyor.server")


class TickerService:
    """The cron scheduler for every scheduled function in the database."""

    def __init__(self, engine: Engine) -> None:
        self.ticker = CronTicker(engine, from_database=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.ticker.run, args=(self._stop,), name="conveyor-cron", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace)


class MaintenanceService:
    """Retention, the fan-in reconciler and backend housekeeping, for a server without workers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=run_maintenance, args=(self.engine, self._stop),
                                        name="conveyor-maintenance", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    engine: Engine,
    config: ServerConfig,
    *,
    services: Sequence[Service] = (),
    announce: Callable[[str], None] = print,
    grace: float = 10.0,
) -> None:
    """Serve until a signal stops the server; returns after a clean shutdown."""
    import uvicorn

    _Server = _server_class()
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    all_services: list[Service] = [TickerService(engine), *services]
    if not services:  # no worker in this process: someone must still prune and reconcile
        all_services.append(MaintenanceService(engine))
    dispatcher = _dispatcher(engine, config, url)
    if dispatcher is not None:
        all_services.append(dispatcher)

    def ready() -> None:
        announce(url)

    app = create_app(engine, config, services=all_services, on_ready=ready, grace=grace)
    uconfig = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=int(grace),
        loop=_loop(), http=_http(config.read_timeout), server_header=False, date_header=False, limit_concurrency=None,
        h11_max_incomplete_event_size=64 * 1024,
    )
    server = _Server(uconfig)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        from conveyor.errors import ConfigError

        raise ConfigError("the server did not start; see the messages above")


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGTERM/SIGINT that stopped it cleanly is not raised again
        afterwards: a graceful stop exits with status 0."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


def _dispatcher(engine: Engine, config: ServerConfig, url: str) -> Any:
    try:
        from conveyor.worker.dispatcher import Dispatcher
    except ImportError:
        return None
    if not config.signing_keys:
        return None
    primary, *rest = config.signing_keys
    return Dispatcher(engine, signing_key=primary, fallback_key=rest[0] if rest else None,
                      view_url=f"{config.public_url or url}/api/v1/push/view")


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _http(read_timeout: float) -> Any:
    try:
        from conveyor.server.protocol import HeadLimitedProtocol
    except ImportError:
        return "h11"
    return type("Protocol", (HeadLimitedProtocol,), {"head_timeout": read_timeout})
