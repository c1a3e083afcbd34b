"""``conveyor dlq list|redrive [ID...]``: runs that failed for good."""

from __future__ import annotations

import argparse
import json

from conveyor.cli import render
from conveyor.cli.common import cli_app, database_parent, positive_int, stdout_console


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = database_parent()
    dlq = commands.add_parser("dlq", help="dead letters: list and redrive failed runs")
    sub = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", parents=[db], help="runs that failed for good, newest first")
    p.add_argument("--limit", metavar="N", type=positive_int, default=100, help="default 100")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("redrive", parents=[db], help="queue dead runs again, from their failed step")
    p.add_argument("run_ids", metavar="ID", nargs="*", help="runs to redrive (default: all)")
    p.set_defaults(handler=cmd_redrive)


def cmd_list(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        runs = app.dead_letters(limit=args.limit)
    finally:
        app.close()
    console = stdout_console()
    if args.json:
        console.print_json(json.dumps([r.to_dict() for r in runs], default=str))
    elif not runs:
        console.print("no dead letters", style="dim")
    else:
        console.print(render.runs_table(runs, title=f"dead letters ({len(runs)})"))
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    app = cli_app(args)
    try:
        ids = app.redrive(run_ids=list(args.run_ids) or None)
    finally:
        app.close()
    console = stdout_console()
    noun = "run" if len(ids) == 1 else "runs"
    console.print(f"redriven {len(ids)} {noun}")
    for run_id in ids:
        console.print(run_id)
    return 0
