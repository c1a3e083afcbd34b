"""Shared pieces of the CLI: the database option, building an app, consoles."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from rich.console import Console

import conveyor
from conveyor.errors import ConfigError

DATABASE_ENV = "CONVEYOR_DATABASE_URL"
DEFAULT_DATABASE = "sqlite:///conveyor.db"
CLI_APP_NAME = "conveyor-cli"


def database_parent() -> argparse.ArgumentParser:
    """A parent parser that gives a subcommand the ``--database URL`` option."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--database",
        metavar="URL",
        default=None,
        help=f"database URL (default: ${DATABASE_ENV}, then {DEFAULT_DATABASE})",
    )
    return parent


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def database_url(args: argparse.Namespace) -> str:
    """``--database``, else ``$CONVEYOR_DATABASE_URL``, else the SQLite default."""
    given: str | None = getattr(args, "database", None)
    return given or os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE


def cli_app(args: argparse.Namespace) -> conveyor.Conveyor:
    """The app of commands that take no ``MODULE:APP``: no functions, just the database."""
    return conveyor.Conveyor(CLI_APP_NAME, database=database_url(args))


def load_user_app(spec: str, database: str | None) -> conveyor.Conveyor:
    """Load ``MODULE:APP``; ``--database`` (when given) is what the app must use.

    ``$CONVEYOR_DATABASE_URL`` is set before the import so that an app built with
    ``Conveyor(name)`` picks the URL up. An app that names another database itself
    is refused rather than silently pointed elsewhere.
    """
    if database:
        os.environ[DATABASE_ENV] = database
    app = conveyor.load_app(spec)
    if database:
        actual = app.database_url
        if _normalize(actual) != _normalize(database):
            raise ConfigError(
                f"app {spec!r} is configured with database {actual!r}, not {database!r}; "
                f"build it with Conveyor(name) to read ${DATABASE_ENV}, or drop --database"
            )
    return app


def _normalize(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return prefix + os.path.abspath(url[len(prefix) :])
    return url


def stdout_console() -> Console:
    return Console(width=_width(sys.stdout), highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, width=_width(sys.stderr), highlight=False)


def _width(stream: object) -> int | None:
    """Let rich size the output on a terminal; elsewhere do not wrap tables at 80."""
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return None
    if os.environ.get("COLUMNS"):
        return None
    return max(shutil.get_terminal_size((160, 24)).columns, 160)
