"""``conveyor runs list|show|cancel|replay|watch``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from conveyor.cli import render
from conveyor.cli.common import cli_app, database_parent, positive_int, stdout_console
from conveyor.types import TERMINAL_STATUSES, Run

RUN_STATUSES = ("queued", "running", "waiting", "completed", "failed", "cancelled")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = database_parent()
    runs = commands.add_parser("runs", help="list, inspect, cancel, replay and watch runs")
    sub = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[db], help="runs, newest first")
    p.add_argument("--function", metavar="F", help="only runs of this function id")
    p.add_argument("--status", metavar="S", choices=RUN_STATUSES, help="only runs in this status")
    p.add_argument("--limit", metavar="N", type=positive_int, default=50, help="default 50")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("show", parents=[db], help="a run and its steps")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("cancel", parents=[db], help="cancel a run that has not ended")
    p.add_argument("run_id", metavar="ID")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("replay", parents=[db], help="re-run from the failed step, keeping the rest")
    p.add_argument("run_id", metavar="ID")
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser("watch", parents=[db], help="follow a run until it ends")
    p.add_argument("run_id", metavar="ID")
    p.add_argument("--interval", metavar="SECONDS", type=float, default=0.5, help="poll interval (0.5)")
    p.set_defaults(handler=cmd_watch)


def cmd_list(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        runs = app.list_runs(function=args.function, status=args.status, limit=args.limit)
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
    finally:
        app.close()
    console = stdout_console()
    if args.json:
        console.print_json(json.dumps(run.to_dict(), default=str))
    else:
        console.print(render.run_detail(run))
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
    """Poll the run until it ends; exit 0 if it completed, 1 if it failed or was cancelled."""
    interval = max(float(args.interval), 0.05)
    app = cli_app(args)
    console = stdout_console()
    try:
        run = app.get_run(args.run_id)
        if console.is_terminal:
            with Live(_watch_view(run), console=console, auto_refresh=False) as live:
                while not run.done:
                    time.sleep(interval)
                    run = app.get_run(args.run_id)
                    live.update(_watch_view(run), refresh=True)
        else:
            run = _watch_plain(app.get_run, run, interval, console.print)
    finally:
        app.close()
    if not console.is_terminal:
        console.print(render.run_detail(run))
    return 0 if run.status == "completed" else 1


def _watch_plain(get_run: Callable[[str], Run], run: Run, interval: float, say: Callable[[Text], object]) -> Run:
    """Without a terminal: one line per status change, then the final state."""
    last = ""
    while True:
        line = _status_line(run)
        if line.plain != last:
            say(line)
            last = line.plain
        if run.status in TERMINAL_STATUSES:
            return run
        time.sleep(interval)
        run = get_run(run.id)


def _status_line(run: Run) -> Text:
    current = next((s for s in reversed(run.steps) if s.status != "completed"), None)
    parts: list[str | tuple[str, str] | Text] = [
        f"{run.function_id} {run.id}: ",
        render.status_text(run.status),
    ]
    done = sum(1 for s in run.steps if s.status == "completed")
    parts.append(f"  steps done: {done}")
    if current is not None and not run.done:
        parts.append(f"  at: {current.id} ({current.status}, attempt {current.attempts})")
    if run.progress is not None and run.progress.total:
        parts.append(f"  children: {run.progress.ended}/{run.progress.total}")
    return Text.assemble(*parts)


def _watch_view(run: Run) -> Group:
    items: list[Text | Progress] = [_status_line(run)]
    if run.progress is not None and run.progress.total:
        bar = Progress(TextColumn("children"), BarColumn(), MofNCompleteColumn())
        bar.add_task("children", total=run.progress.total, completed=run.progress.ended)
        items.append(bar)
    return Group(*items, render.run_detail(run))
