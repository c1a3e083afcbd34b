"""``conveyor server`` and ``conveyor dev``: the HTTP API (and dashboard) over a database.

``server`` needs no app module: it serves events, runs and dead letters of the
database, fires every cron schedule registered in it, and pushes runs to the
registered push endpoints. ``dev`` adds an in-process worker for MODULE:APP.
Both stop cleanly on SIGTERM/SIGINT and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

from rich.markup import escape

import conveyor
from conveyor.cli.common import cli_app, database_parent, load_user_app, positive_int
from conveyor.cli.serve import DEFAULT_PORT, Banner, configure_logging, log_parent
from conveyor.errors import ConfigError


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    http = _http_parent()
    db = database_parent()
    logs = log_parent()
    p = commands.add_parser(
        "server", parents=[db, http, logs],
        help="serve the HTTP API, the scheduler and push delivery for a database",
        description="Serve the HTTP API (events, runs, dead letters, functions, push endpoints) "
        "over the database, fire cron schedules, and push runs to registered endpoints, until "
        "SIGTERM or Ctrl+C. Without event keys or API tokens it only listens on loopback.",
    )
    p.set_defaults(handler=cmd_server)

    p = commands.add_parser(
        "dev", parents=[db, http, logs],
        help="the server plus a worker for MODULE:APP, in one process",
        description="Development mode: migrate, then serve the HTTP API and run a worker for every "
        "pool of MODULE:APP in one process (due sleeps, retries and timeouts included).",
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--concurrency", metavar="N", type=positive_int, default=None,
                   help="runs advanced at the same time by the worker")
    p.set_defaults(handler=cmd_dev)


def _http_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    env = os.environ.get
    p.add_argument("--host", default=env("CONVEYOR_HOST", "127.0.0.1"),
                   help="address to listen on (default $CONVEYOR_HOST, then 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env("CONVEYOR_PORT", DEFAULT_PORT)),
                   help=f"port (default $CONVEYOR_PORT, then {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--event-key", action="append", dest="event_keys", metavar="KEY", default=None,
                   help="a key that may send events (repeatable; default $CONVEYOR_EVENT_KEYS, comma-separated; "
                   "prefer the variable: arguments are visible to other users in the process list)")
    p.add_argument("--api-token", action="append", dest="api_tokens", metavar="TOKEN", default=None,
                   help="a token for the whole API (repeatable; default $CONVEYOR_API_TOKENS, comma-separated)")
    p.add_argument("--signing-key", default=env("CONVEYOR_SIGNING_KEY"), metavar="KEY",
                   help="HMAC key that signs push requests (default $CONVEYOR_SIGNING_KEY)")
    p.add_argument("--signing-key-fallback", default=env("CONVEYOR_SIGNING_KEY_FALLBACK"), metavar="KEY",
                   help="the previous signing key, still accepted during a rotation")
    p.add_argument("--max-backlog", type=positive_int, default=None, metavar="N",
                   help="answer 429 to events while more than N jobs are due (default: no limit)")
    p.add_argument("--public-url", default=env("CONVEYOR_PUBLIC_URL"), metavar="URL",
                   help="the URL push endpoints use to reach this server (default: the bound address)")
    from conveyor.server.config import ServerConfig  # the defaults are the config's own

    for flag, kind, what in SETTINGS:
        name = flag.replace("-", "_")
        var = "CONVEYOR_" + name.upper()
        # argparse applies the type to a default given as text: a bad variable is a usage error
        p.add_argument(f"--{flag}", type=kind, default=env(var), metavar="N",
                       help=f"{what} (default ${var}, then {getattr(ServerConfig, name):,})")
    return p


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


#: Server settings a deployment may change: (flag, its type, its meaning); the defaults are ServerConfig's.
SETTINGS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("max-event-bytes", positive_int, "bytes of JSON in one event's data"),
    ("max-body-bytes", positive_int, "bytes in one request body"),
    ("max-batch", positive_int, "events in one request"),
    ("max-inflight-bytes", positive_int, "bytes of request bodies read at once before intake answers 429"),
    ("read-timeout", _seconds, "seconds a request's headers, or each chunk of its body, may take before a 408"),
)



def _config(args: argparse.Namespace) -> Any:
    from conveyor.server.config import ServerConfig, keys_from_env

    config = ServerConfig(
        host=args.host, port=args.port,
        event_keys=tuple(args.event_keys) if args.event_keys else keys_from_env("CONVEYOR_EVENT_KEYS"),
        api_tokens=tuple(args.api_tokens) if args.api_tokens else keys_from_env("CONVEYOR_API_TOKENS"),
        signing_keys=tuple(k for k in (args.signing_key, args.signing_key_fallback) if k),
        max_backlog=args.max_backlog, public_url=args.public_url.rstrip("/") if args.public_url else None,
        **{flag.replace("-", "_"): value for flag, _, _ in SETTINGS
           if (value := getattr(args, flag.replace("-", "_"))) is not None},
    )
    config.check()
    return config


def cmd_server(args: argparse.Namespace) -> int:
    config = _config(args)
    app = cli_app(args)
    return _serve(app, config, configure_logging(args), worker=None, title="conveyor server")


def cmd_dev(args: argparse.Namespace) -> int:
    config = _config(args)
    app = load_user_app(args.app, args.database)
    app.migrate()
    worker = app.worker() if args.concurrency is None else app.worker(concurrency=args.concurrency)
    functions = ", ".join(sorted(app.functions)) or "-"
    banner = configure_logging(args)
    banner.say(f"[bold]conveyor dev[/] {escape(args.app)}: functions {escape(functions)}")
    return _serve(app, config, banner, worker=worker, title="conveyor dev")


def _serve(app: conveyor.Conveyor, config: Any, banner: Banner, *, worker: Any, title: str) -> int:
    try:
        from conveyor.server.runner import serve
    except ImportError as exc:  # pragma: no cover - the server stack is a core dependency
        raise ConfigError(f"the HTTP server needs FastAPI and uvicorn ({exc}); pip install conveyor") from None
    engine = app._engine()
    db = _redacted(app.database_url)

    def announce(url: str) -> None:
        banner.say(escape(f"{title} listening on {url} (database {db})"))
        if not config.auth_enabled:
            banner.say("[yellow]warning:[/] no event keys or API tokens configured: listening on loopback "
                       "only, and anyone on this machine can use the API", logging.WARNING)
        banner.say("[dim]press Ctrl+C to stop[/]")

    try:
        serve(engine, config, services=[worker] if worker is not None else [], announce=announce)
    finally:
        app.close()
    banner.say(escape(f"{title}: stopped"))
    return 0


def _redacted(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{creds}{at}{host}"
