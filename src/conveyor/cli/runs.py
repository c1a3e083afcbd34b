"""``conveyor runs list|show|cancel|replay|watch``."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from rich.text import Text

from conveyor.cli import render
from conveyor.cli.common import cli_app, database_parent, positive_int, stdout_console
from conveyor.cli.watch import watch
from conveyor.types import RunStatus, parse_time

RUN_STATUSES = tuple(s.value for s in RunStatus)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = database_parent()
    runs = commands.add_parser("runs", help="list, inspect, cancel, replay and watch runs")
    sub = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[db], help="runs, newest first")
    p.add_argument("--function", metavar="F", help="only runs of this function id")
    p.add_argument("--status", metavar="S", choices=RUN_STATUSES, help="only runs in this status")
    p.add_argument("--event", metavar="ID", help="only the runs this event started")
    p.add_argument("--since", metavar="WHEN", type=since_time,
                   help="only runs created since then: an age (90s, 15m, 2h, 7d), Unix seconds, or an ISO 8601 time")
    p.add_argument("--limit", metavar="N", type=positive_int, default=50, help="default 50")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", parents=[db], help="a run: its steps on a timeline, its children, its log")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("cancel", parents=[db], help="cancel a run that has not ended")
    p.add_argument("run_id", metavar="ID")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("replay", parents=[db], help="re-run from the failed step, keeping the rest")
    p.add_argument("run_id", metavar="ID")
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser(
        "watch", parents=[db], help="follow a run until it ends: a live progress bar of its children",
        description="Follow a run until it ends: its status and a live progress bar of its child runs (counts by "
        "status, rate, ETA); plain status lines when stdout is not a terminal. Exit 0 if the run completed, "
        "1 if it failed or was cancelled.",
    )
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--interval", metavar="SECONDS", type=interval_seconds, default=0.5,
                   help="poll interval (default 0.5)")
    p.set_defaults(handler=cmd_watch)


def cmd_list(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        runs = app.list_runs(function=args.function, status=args.status, limit=args.limit, since=args.since,
                             event_id=args.event)
    finally:
        app.close()
    console = stdout_console()
    if args.json:
        console.print_json(json.dumps([r.to_dict() for r in runs], default=str))
    elif not runs:
        console.print("no runs", style="dim")
    else:
        console.print(render.runs_table(runs))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        run = app.get_run(args.run_id)
        logs = app.run_logs(args.run_id)
    finally:
        app.close()
    console = stdout_console()
    if args.json:
        console.print_json(json.dumps({**run.to_dict(), "logs": logs}, default=str))
    else:
        console.print(render.run_detail(run, logs))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        app.cancel_run(args.run_id)
        run = app.get_run(args.run_id)
    finally:
        app.close()
    stdout_console().print(Text.assemble(f"run {run.id}: ", render.status_text(run.status)))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        app.replay_run(args.run_id)
        run = app.get_run(args.run_id)
    finally:
        app.close()
    stdout_console().print(Text.assemble(f"run {run.id} replayed: ", render.status_text(run.status)))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow the run until it ends; exit 0 if it completed, 1 if it failed or was cancelled."""
    app = cli_app(args)
    console = stdout_console()
    try:
        run = watch(app.get_run, args.run_id, console, interval=args.interval)
    finally:
        app.close()
    console.print()
    console.print(render.run_detail(run))
    return 0 if run.status == "completed" else 1


def since_time(text: str) -> datetime:
    """An argparse type: an age (90s, 15m, 2h, 7d), Unix seconds, or an ISO 8601 time."""
    try:
        return datetime.fromtimestamp(parse_time(text, time.time()), UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def interval_seconds(text: str) -> float:
    """An argparse type: a poll interval between 0.05 and 60 seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.05 <= value <= 60:
        raise argparse.ArgumentTypeError("must be between 0.05 and 60 seconds")
    return value
