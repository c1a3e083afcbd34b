"""Seed B with push delivery: one service serves live traffic *and* background microprocesses.

The same FastAPI service answers ``GET /score/{company}`` inline (live traffic) and mounts
the app's push endpoint at ``/conveyor/``. Started twice — once as ``--role live``, once
as ``--role background`` — it registers itself with a running ``conveyor server`` for
that pool. ``score-all`` (on ``live``) is the splitter: it maps ``score-company`` over the
companies on the ``background`` pool, so the fan-out never touches the live instance, and
its ``report`` step (the reduce) reads every child's result through the server and writes
a CSV report. The scoring code is the same function in both places: no second runtime.

Run the whole demo from one command (a server, both instances, one fan-out, then stop)::

    python examples/push_service.py --demo                      # 50 companies, SQLite in a temp dir
    python examples/push_service.py --demo --companies 500 --database postgresql://...

Or by hand, in four terminals::

    export CONVEYOR_SIGNING_KEY=$(openssl rand -hex 16) CONVEYOR_API_TOKENS=secret-token-1
    conveyor server --port 8288
    CONVEYOR_API_TOKEN=secret-token-1 python examples/push_service.py --role live --port 8001
    CONVEYOR_API_TOKEN=secret-token-1 python examples/push_service.py --role background --port 8002
    curl -H 'Authorization: Bearer secret-token-1' -d '{"name": "scores.requested", "data": {"companies": 50}}' \\
         http://127.0.0.1:8288/api/v1/events
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import conveyor
from conveyor import Context

SERVER_URL = os.environ.get("CONVEYOR_SERVER_URL", "http://127.0.0.1:8288")
OUT = Path(os.environ.get("PUSH_DEMO_OUT", "out/push"))

app = conveyor.Conveyor("credit-push")


# --- the code both the live route and the microprocesses use -------------------------------------


def score(company: str) -> dict[str, Any]:
    """A deterministic credit score of 300-850 for a company name."""
    digest = hashlib.sha256(company.encode()).digest()
    value = 300 + int.from_bytes(digest[:4], "big") % 551
    return {"company": company, "score": value, "grade": "ABCDE"[min(4, (850 - value) // 110)]}


def list_companies(n: int) -> list[str]:
    return [f"company-{i:05d}" for i in range(int(n))]


def write_report(scores: Iterable[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """The reduce: every child's result (streamed from the server a page at a time) into a CSV."""
    rows = sorted(scores, key=lambda s: (-s["score"], s["company"]))
    OUT.mkdir(parents=True, exist_ok=True)
    path = (OUT / f"report-{run_id}.csv").resolve()
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("rank", "company", "score", "grade", "served_by"))
        writer.writerows((i, r["company"], r["score"], r["grade"], r["served_by"]) for i, r in enumerate(rows, 1))
    served = Counter(r["served_by"] for r in rows)
    return {"report": str(path), "count": len(rows), "served_by": dict(served),
            "mean": round(sum(r["score"] for r in rows) / len(rows), 1) if rows else None}


@app.function(id="score-all", on="scores.requested", pool="live", retries=2)
def score_all(ctx: Context) -> dict[str, Any]:
    companies = ctx.step.run("list-companies", list_companies, ctx.event.data.get("companies", 50))
    scores = ctx.step.map("score", score_company, companies, pool="background")
    result: dict[str, Any] = ctx.step.run("report", write_report, scores, ctx.run_id)
    return result


@app.function(pool="live", retries=2)
def score_company(ctx: Context) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        return {**score(ctx.event.data), "served_by": os.environ.get("PUSH_ROLE", "?")}

    result: dict[str, Any] = ctx.step.run("score", compute)
    return result


# --- the service ------------------------------------------------------------------------------------


def create_service(role: str, public_url: str, *, concurrency: int = 16) -> Any:
    """The FastAPI service of one instance: the live route, and the push endpoint of ``role``'s pool."""
    from fastapi import FastAPI

    service = FastAPI(title=f"credit scores ({role})")

    @service.get("/score/{company}")
    def live_score(company: str) -> dict[str, Any]:
        return score(company)  # inline, for live traffic: the same code the microprocesses run

    service.mount("/conveyor", app.serve(register=True, url=f"{public_url}/conveyor/", pool=role,
                                         server_url=SERVER_URL, concurrency=concurrency))
    return service


def run_service(role: str, host: str, port: int) -> int:
    import uvicorn

    os.environ["PUSH_ROLE"] = role
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}"
    config = uvicorn.Config(create_service(role, url), log_level="warning", lifespan="on")
    print(f"{role} instance serving on {url}", file=sys.stderr, flush=True)
    _graceful_server()(config).run(sockets=[sock])
    return 0


def _graceful_server() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, exiting 0 after a clean stop on SIGTERM (uvicorn re-raises the signal)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


# --- the demo: everything as subprocesses, one fan-out, then stop ----------------------------------


class Proc:
    """A child process whose stderr goes to a file, and the URL it announced there."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)

    def url(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.log.read_text(errors="replace"))) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        return match.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


@contextlib.contextmanager
def demo_processes(workdir: Path, database: str) -> Iterator[tuple[str, str, list[Proc]]]:
    key, token = secrets.token_hex(16), secrets.token_hex(12)
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    base |= {"CONVEYOR_SIGNING_KEY": key, "PYTHONUNBUFFERED": "1"}
    server_argv = [sys.executable, "-m", "conveyor.cli.main", "server", "--database", database, "--port", "0"]
    procs = [Proc("server", server_argv, base | {"CONVEYOR_API_TOKENS": token}, workdir / "server.log")]
    try:
        server_url = procs[0].url(r"listening on (http://\S+)")
        for role in ("live", "background"):
            env = base | {"CONVEYOR_SERVER_URL": server_url, "CONVEYOR_API_TOKEN": token,
                          "PUSH_DEMO_OUT": str(OUT.resolve())}
            argv = [sys.executable, __file__, "--role", role, "--port", "0"]
            procs.append(Proc(role, argv, env, workdir / f"{role}.log"))
        yield server_url, token, procs
    finally:
        codes = [p.stop() for p in reversed(procs)]
        if any(codes):
            print(f"exit codes (background, live, server): {codes}", file=sys.stderr)


def demo(companies: int, database: str | None) -> int:
    import httpx

    with tempfile.TemporaryDirectory(prefix="push-demo-") as tmp:
        workdir = Path(tmp)
        database = database or f"sqlite:///{workdir / 'demo.db'}"
        with demo_processes(workdir, database) as (server_url, token, _procs):
            api = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            with api:
                until("both instances to register", lambda: len(api.get("/api/v1/endpoints").json()["endpoints"]) == 2,
                      60)
                print(f"server {server_url}; endpoints registered for pools live and background")
                sent = api.post("/api/v1/events", json={"name": "scores.requested", "data": {"companies": companies}})
                [event_id] = sent.json()["ids"]
                run_id = until("the splitter's run", lambda: next(
                    (r["id"] for r in api.get("/api/v1/runs", params={"event_id": event_id}).json()["runs"]), None), 30)
                print(f"sent scores.requested ({companies} companies); run {run_id}")
                run = until("the reduce", lambda: _ended(api.get(f"/api/v1/runs/{run_id}").json()), 300)
        if run["status"] != "completed":
            print(f"run {run_id} {run['status']}: {run['error']}", file=sys.stderr)
            return 1
        out = run["output"]
        print(f"report: {out['report']}")
        print(f"{out['count']} companies, mean score {out['mean']}, children served by {out['served_by']}")
        return 0


def _ended(run: dict[str, Any]) -> dict[str, Any] | None:
    return run if run["status"] in ("completed", "failed", "cancelled") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("live", "background"), default=os.environ.get("PUSH_ROLE"),
                        help="serve this pool (default $PUSH_ROLE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--demo", action="store_true", help="run the whole demo and stop")
    parser.add_argument("--companies", type=int, default=50, help="companies in the demo's fan-out")
    parser.add_argument("--database", default=None, help="the demo server's database (default: SQLite, temporary)")
    args = parser.parse_args(argv)
    if args.demo:
        return demo(args.companies, args.database)
    if args.role is None:
        parser.error("give --role live or --role background (or --demo)")
    return run_service(args.role, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
