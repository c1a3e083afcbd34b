"""``conveyor``: parse the command line, run one command, map errors to exit codes.

Exit codes: 0 success; 1 a user error (any :class:`~conveyor.ConveyorError`, an
unknown run, bad ``--data``), printed as one ``error: ...`` line on stderr; 2 a
usage error (argparse); 130 interrupted. Set ``CONVEYOR_DEBUG=1`` to get the
traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable

from rich.markup import escape

from conveyor.cli import dlq, endpoints, events, runs, serve, server
from conveyor.cli.common import stderr_console
from conveyor.errors import ConveyorError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor: durable background functions on SQLite or PostgreSQL.",
        epilog="--database defaults to $CONVEYOR_DATABASE_URL, then sqlite:///conveyor.db.",
    )
    parser.add_argument("--version", action="version", version=f"conveyor {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parsers(commands)
    server.add_parsers(commands)
    events.add_parsers(commands)
    runs.add_parser(commands)
    dlq.add_parser(commands)
    endpoints.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``conveyor`` command; return its exit code (never raises for user errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # one clear error line instead of its retries
    try:
        return handler(args)
    except ConveyorError as exc:
        return _fail(exc.message or str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except (OSError, sqlite3.Error) as exc:  # e.g. a database in a missing directory
        return _fail(f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        if os.environ.get("CONVEYOR_DEBUG"):
            traceback.print_exc()
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set CONVEYOR_DEBUG=1 for the traceback)")


def entrypoint() -> None:
    sys.exit(main())


def _fail(message: str, *, code: int = 1) -> int:
    first, *_ = message.strip().splitlines() or ["failed"]
    stderr_console().print(f"[red]error:[/red] {escape(first)}", soft_wrap=True, markup=True)
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conveyor")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    entrypoint()
