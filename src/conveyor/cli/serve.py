"""``conveyor worker MODULE:APP``.

It runs a pull worker in the foreground; ``Worker.run()`` stops cleanly on
SIGTERM/SIGINT by itself, after which the command exits 0. With ``--metrics-port``
it also serves the counters of the runs and steps it executes, for Prometheus.
The log options (``--log-format``, ``--log-level``) are shared with ``server`` and ``dev``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence

from rich.markup import escape
from rich.text import Text

import conveyor
from conveyor.cli.common import database_parent, load_user_app, positive_int, stderr_console
from conveyor.observability.logging import FORMATS, default_format

DEFAULT_PORT = 8288


def log_parent() -> argparse.ArgumentParser:
    """``--log-format`` and ``--log-level``, shared by ``worker``, ``server`` and ``dev``."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--log-format", choices=FORMATS, default=None,
                   help="text, or json (one object per line, with run_id, step_id and attempt); "
                   "default $CONVEYOR_LOG_FORMAT, then text")
    p.add_argument("--log-level", default=None, metavar="LEVEL",
                   help="DEBUG, INFO, WARNING or ERROR (default $CONVEYOR_LOG_LEVEL, then INFO)")
    return p


def configure_logging(args: argparse.Namespace) -> Banner:
    """Logs to stderr, in the format and from the level the flags (or variables) say; returns
    how the command should say what it is doing."""
    from conveyor.observability.logging import configure

    configure(args.log_format, args.log_level)
    return Banner(json=(args.log_format or default_format()) == "json")


class Banner:
    """What a long-running command says on stderr about itself: rich text for a person, or,
    with ``--log-format json``, log records (logger ``conveyor.cli``), so that every line a
    log shipper reads from stderr is JSON."""

    def __init__(self, *, json: bool) -> None:
        self._console = None if json else stderr_console()

    def say(self, markup: str, level: int = logging.INFO) -> None:
        if self._console is not None:
            self._console.print(markup, markup=True, soft_wrap=True, highlight=False)
        else:
            logging.getLogger("conveyor.cli").log(level, Text.from_markup(markup).plain)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = database_parent()
    p = commands.add_parser(
        "worker",
        parents=[db, log_parent()],
        help="run a worker for the functions of MODULE:APP",
        description="Run a pull worker for the functions of MODULE:APP until SIGTERM or "
        "Ctrl+C. MODULE is an importable module or a path to a .py file; APP defaults "
        "to 'app'. With --database, the app must read its database from "
        "$CONVEYOR_DATABASE_URL (Conveyor(name) without database=).",
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument(
        "--pool",
        metavar="NAME",
        action="append",
        dest="pools",
        help="serve only this pool (repeatable; default: every pool)",
    )
    p.add_argument(
        "--concurrency",
        metavar="N",
        type=positive_int,
        default=None,
        help="runs advanced at the same time by this process",
    )
    p.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=int,
        default=None,
        help="serve this worker's Prometheus metrics (runs and steps it ran) at http://HOST:PORT/metrics",
    )
    p.add_argument(
        "--metrics-host",
        metavar="HOST",
        default=os.environ.get("CONVEYOR_METRICS_HOST", "127.0.0.1"),
        help="the address of --metrics-port (default $CONVEYOR_METRICS_HOST, then 127.0.0.1; "
        "0.0.0.0 for a scraper on another host)",
    )
    p.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    # from the first instant: a SIGTERM while the app loads must still mean "stop cleanly, exit 0"
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = load_user_app(args.app, args.database)
    pools: list[str] | None = list(args.pools) if args.pools else None
    banner = configure_logging(args)  # (not before: a command that fails to start leaves logging as it was)
    stop_metrics = _serve_metrics(app, args.metrics_host, args.metrics_port, banner)
    try:
        return _run(app, args.app, pools, args.concurrency, banner, stop)
    finally:
        stop_metrics()


def _serve_metrics(app: conveyor.Conveyor, host: str, port: int | None, banner: Banner) -> Callable[[], None]:
    """With ``--metrics-port``: this process's counters over HTTP (the database's gauges are the
    server's to serve); returns what stops it."""
    if port is None:
        return lambda: None
    from conveyor.errors import ConfigError
    from conveyor.observability.metrics import metrics_for, serve_http

    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid --metrics-port {port}")
    try:
        bound, stop = serve_http(metrics_for(app.hooks), port, host)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    where = f"[{host}]" if ":" in host else host
    banner.say(escape(f"metrics on http://{where}:{bound}/metrics"))
    return stop


def _run(app: conveyor.Conveyor, spec: str, pools: Sequence[str] | None, concurrency: int | None,
         banner: Banner, stop: threading.Event) -> int:
    functions = app.functions
    served = sorted({f.pool for f in functions.values()}) if pools is None else sorted(pools)
    worker = (
        app.worker(pools=list(pools) if pools else None)
        if concurrency is None
        else app.worker(pools=list(pools) if pools else None, concurrency=concurrency)
    )
    names = ", ".join(sorted(functions)) or "-"
    banner.say(
        f"[bold]conveyor worker[/] {escape(spec)}: {len(functions)} function(s) "
        f"{escape(names)}; pools: {escape(', '.join(served) or '-')}"
    )
    if not functions:
        banner.say("[yellow]warning:[/] the app defines no functions", logging.WARNING)
    banner.say("[dim]press Ctrl+C to stop[/]")
    try:
        worker.run(stop=stop)
    finally:
        app.close()
    banner.say("conveyor worker: stopped")
    return 0
