"""``conveyor worker MODULE:APP``.

It runs a pull worker in the foreground; ``Worker.run()`` stops cleanly on
SIGTERM/SIGINT by itself, after which the command exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence

from rich.markup import escape

import conveyor
from conveyor.cli.common import database_parent, load_user_app, positive_int, stderr_console

DEFAULT_PORT = 8288


def configure_logging() -> None:
    """Worker logs to stderr: level from CONVEYOR_LOG_LEVEL (default INFO); JSON lines with
    CONVEYOR_LOG_FORMAT=json. The connection pool's per-attempt warnings are quieted: the
    worker itself says once that the database is unreachable, and once that it is back."""
    level = os.environ.get("CONVEYOR_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    if os.environ.get("CONVEYOR_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class _JsonFormatter(logging.Formatter):
    FIELDS = ("run_id", "step_id", "attempt")

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": record.created, "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        out.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = database_parent()
    p = commands.add_parser(
        "worker",
        parents=[db],
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
    p.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    app = load_user_app(args.app, args.database)
    pools: list[str] | None = list(args.pools) if args.pools else None
    return _run(app, args.app, pools, args.concurrency, mode="worker")


def _run(
    app: conveyor.Conveyor,
    spec: str,
    pools: Sequence[str] | None,
    concurrency: int | None,
    *,
    mode: str,
) -> int:
    configure_logging()
    functions = app.functions
    served = sorted({f.pool for f in functions.values()}) if pools is None else sorted(pools)
    worker = (
        app.worker(pools=list(pools) if pools else None)
        if concurrency is None
        else app.worker(pools=list(pools) if pools else None, concurrency=concurrency)
    )
    console = stderr_console()
    names = ", ".join(sorted(functions)) or "-"
    console.print(
        f"[bold]conveyor {mode}[/] {escape(spec)}: {len(functions)} function(s) "
        f"{escape(names)}; pools: {escape(', '.join(served) or '-')}",
        soft_wrap=True,
        markup=True,
    )
    if not functions:
        console.print("[yellow]warning:[/] the app defines no functions", markup=True)
    console.print("[dim]press Ctrl+C to stop[/]", markup=True)
    try:
        worker.run()
    finally:
        app.close()
    console.print(f"conveyor {mode}: stopped", soft_wrap=True)
    return 0
