"""``conveyor send`` and ``conveyor migrate``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from conveyor.cli.common import cli_app, database_parent, database_url, stdout_console
from conveyor.errors import InvalidInput


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = database_parent()
    p = commands.add_parser(
        "send",
        parents=[db],
        help="send an event; prints its id",
        description="Send an event and print its id. The id is the idempotency key: "
        "sending the same id twice starts the functions once.",
    )
    p.add_argument("name", metavar="NAME", help="event name, e.g. transcription.requested")
    p.add_argument("--data", metavar="JSON", default=None, help="a JSON object (default {})")
    p.add_argument("--id", metavar="ID", default=None, help="event id (default: generated)")
    p.set_defaults(handler=cmd_send)

    p = commands.add_parser("migrate", parents=[db], help="create or upgrade the database schema")
    p.set_defaults(handler=cmd_migrate)


def parse_data(text: str | None) -> dict[str, Any]:
    """``--data``: a JSON object; anything else is an :class:`InvalidInput`."""
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--data is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"--data must be a JSON object, got {type(data).__name__}")
    return data


def cmd_send(args: argparse.Namespace) -> int:
    data = parse_data(args.data)  # before touching the database: bad input stores nothing
    if not args.name.strip():
        raise InvalidInput("the event name must not be empty")
    app = cli_app(args)
    try:
        event_id = app.send(args.name, data, id=args.id)
    finally:
        app.close()
    stdout_console().print(event_id, soft_wrap=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        app.migrate()
    finally:
        app.close()
    stdout_console().print(f"database is up to date: {database_url(args)}", soft_wrap=True)
    return 0
