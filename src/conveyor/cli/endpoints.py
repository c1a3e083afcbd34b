"""``conveyor endpoints register|list|remove``: push endpoints of a running ``conveyor server``.

    conveyor endpoints register service.py:app --url http://10.0.0.5:8000/conveyor/ --pool background
    conveyor endpoints list
    conveyor endpoints remove http://10.0.0.5:8000/conveyor/

They talk to the server's API (``--server``, default ``$CONVEYOR_SERVER_URL``, then
``http://127.0.0.1:8288``) with an API token (``--api-token``, default ``$CONVEYOR_API_TOKEN``).
``register`` loads ``MODULE:APP`` only to read its functions; it opens no database.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.table import Table

import conveyor
from conveyor.cli.common import positive_int, stdout_console
from conveyor.errors import ConveyorError, NotFound

DEFAULT_SERVER = "http://127.0.0.1:8288"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--server", metavar="URL", default=None,
                        help=f"the Conveyor server (default: $CONVEYOR_SERVER_URL, then {DEFAULT_SERVER})")
    server.add_argument("--api-token", metavar="TOKEN", default=None,
                        help="an API token of the server (default: $CONVEYOR_API_TOKEN)")
    top = commands.add_parser("endpoints", help="push endpoints: register, list, remove")
    sub = top.add_subparsers(dest="endpoints_command", metavar="COMMAND", required=True)

    p = sub.add_parser("register", parents=[server], help="register a push endpoint serving MODULE:APP's functions",
                       description="Tell the server that URL serves a pool's runs of the functions of MODULE:APP "
                       "(a module or a .py file; APP defaults to 'app'). Registering a URL again updates it.")
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--url", required=True, help="where the server reaches the endpoint (the serve() mount)")
    p.add_argument("--pool", default=None, help="the pool it serves (default: its functions' pool, if they share one)")
    p.add_argument("--concurrency", metavar="N", type=positive_int, default=16,
                   help="invocations in flight there at most (default 16)")
    p.add_argument("--rate", metavar="R", type=_positive_float, default=None,
                   help="invocations started per second at most (default: no limit)")
    p.add_argument("--timeout", metavar="S", type=_positive_float, default=300.0,
                   help="seconds a request may take (default 300)")
    p.set_defaults(handler=cmd_register)

    p = sub.add_parser("list", parents=[server], help="the registered endpoints")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("remove", parents=[server], help="remove an endpoint (runs in flight there finish)")
    p.add_argument("url", metavar="URL")
    p.set_defaults(handler=cmd_remove)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _server(args: argparse.Namespace) -> tuple[str, str | None]:
    url = args.server or os.environ.get("CONVEYOR_SERVER_URL") or DEFAULT_SERVER
    return url.rstrip("/"), args.api_token or os.environ.get("CONVEYOR_API_TOKEN") or None


def cmd_register(args: argparse.Namespace) -> int:
    app = conveyor.load_app(args.app)
    server, token = _server(args)
    app.register_endpoint(args.url, server_url=server, pool=args.pool, api_token=token,
                          concurrency=args.concurrency, rate=args.rate, timeout=args.timeout)
    names = sorted(app.functions)
    stdout_console().print(f"registered {args.url} with {server}: {len(names)} functions ({', '.join(names)})")
    return 0


def _call(args: argparse.Namespace, method: str, params: dict[str, str] | None = None) -> Any:
    import httpx

    server, token = _server(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.request(method, f"{server}/api/v1/endpoints", params=params, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise ConveyorError(f"cannot reach the Conveyor server at {server} ({type(exc).__name__})") from None
    if reply.status_code >= 300:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text[:200]
        error = NotFound if reply.status_code == 404 else ConveyorError
        raise error(f"the server answered {reply.status_code}: {message}")
    return reply.json()


def cmd_list(args: argparse.Namespace) -> int:
    endpoints = _call(args, "GET")["endpoints"]
    console = stdout_console()
    if args.json:
        console.print_json(json.dumps(endpoints))
        return 0
    if not endpoints:
        console.print("no endpoints", style="dim")
        return 0
    table = Table("url", "pool", "functions", "concurrency", "rate", "timeout", "registered",
                  title=f"push endpoints ({len(endpoints)})", title_justify="left")
    for e in endpoints:
        table.add_row(e["url"], e["pool"], ", ".join(e["functions"]), str(e["concurrency"]),
                      "-" if e["rate"] is None else f"{e['rate']:g}/s", f"{e['timeout']:g}s", e["registered_at"] or "")
    console.print(table)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _call(args, "DELETE", {"url": args.url})
    stdout_console().print(f"removed {args.url}")
    return 0
