"""Dashboard latency with a million runs in the database.

Fills a fresh SQLite file and a fresh PostgreSQL schema with ``--runs`` runs (default
1,000,000) by bulk SQL inserts, starts a real ``conveyor server`` on each, and times
every page of the dashboard: the first request after the server started (cold caches,
the per-function counts computed), then ``--requests`` more (p50, p99, max).

The data looks like a busy week of a media platform: eight functions on three pools,
runs spread over the last six days (mostly completed, some failed, a backlog of queued
runs), 2 to 4 steps per run with a sleep here and there, log lines, one event per run,
and two fan-outs: a finished one of 200,000 children (1 % failed) and one of 100,000
children still in progress.

    .venv/bin/python bench/dashboard.py                        # both backends, 1M runs
    .venv/bin/python bench/dashboard.py --runs 100000 --backend sqlite
    .venv/bin/python bench/dashboard.py --keep                  # keep the databases

Figures depend on the machine; see bench/README.md for the ones measured there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPAN = 6 * 86400.0  # runs are spread over the last six days (retention is seven)
CHUNK = 50_000


# ---- the data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fn:
    id: str
    pool: str
    triggers: tuple[str, ...]
    share: float  # of the top-level runs
    failed: float  # fraction that failed
    steps: tuple[tuple[str, str], ...]  # (step id, kind)
    cron: str | None = None


FUNCTIONS = (
    Fn("send-email", "default", ("user.signup", "email.requested"), 0.43, 0.005,
       (("render-template", "run"), ("send", "run"))),
    Fn("resize-image", "default", ("image.uploaded",), 0.29, 0.01,
       (("download", "run"), ("resize", "run"), ("upload", "run"))),
    Fn("transcribe-audio", "background", ("transcription.requested",), 0.215, 0.03,
       (("fetch-audio-metadata", "run"), ("transcribe", "run"), ("cool-down", "sleep"), ("notify-user", "run"))),
    Fn("generate-report", "default", ("report.requested",), 0.057, 0.02,
       (("load-rows", "run"), ("wait-for-approval", "wait_for_event"), ("render-pdf", "run"))),
    Fn("sync-crm", "live", (), 0.003, 0.10, (("fetch", "run"), ("push", "run")), cron="*/5 * * * *"),
    Fn("score-all", "background", (), 0.0, 0.0, (("list-companies", "run"), ("score", "map"), ("report", "run")),
       cron="0 3 1 * *"),
    Fn("score-company", "background", (), 0.0, 0.01, (("score", "run"),)),
    Fn("cleanup-blobs", "default", ("blobs.cleanup",), 0.0, 0.0, (("sweep", "run"),)),
)
EVENT_OF = {f.id: (f.triggers[0] if f.triggers else "conveyor/cron") for f in FUNCTIONS}


@dataclass
class Rows:
    """Rows of each table, flushed to the database in chunks."""

    runs: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[tuple[Any, ...]] = field(default_factory=list)

    def size(self) -> int:
        return len(self.runs)

    def clear(self) -> None:
        for rows in (self.runs, self.steps, self.events, self.jobs, self.logs):
            rows.clear()


@dataclass
class Plan:
    """What the generator made: ids the timed pages look at."""

    completed: str = ""
    failed: str = ""
    parent_done: str = ""
    parent_busy: str = ""
    event: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def generate(n: int, now: float, seed: int = 7) -> Iterator[Rows | Plan]:
    """Yield chunks of rows, then the :class:`Plan`."""
    from conveyor.ids import encode  # run ids as Conveyor makes them: by creation time

    rng = random.Random(seed)
    big, busy = (n * 20) // 100, n // 10  # the two fan-outs' children
    top = n - big - busy
    weights = [f.share for f in FUNCTIONS]
    start = now - SPAN
    stamps = sorted(rng.uniform(start, now - 600) for _ in range(top))
    plan = Plan(counts={"top-level": top, "children": big + busy})
    rows = Rows()
    parents = {int(top * 0.35): ("parent_done", big), int(top * 0.995): ("parent_busy", busy)}
    picks = rng.choices(FUNCTIONS, weights=weights, k=top)
    queued_from = top - max(1, top // 100)  # the newest 1 %: a backlog of due, queued runs
    for i, ts in enumerate(stamps):
        fn = picks[i]
        if i in parents:
            fn = FUNCTIONS[5]
        run_id = encode((int(ts * 1000) << 80) | rng.getrandbits(79))
        if i in parents:
            what, size = parents[i]
            setattr(plan, what, run_id)
            yield from _fanout(rows, rng, run_id, ts, size, done=what == "parent_done", now=now)
            continue
        status = "completed"
        if i >= queued_from and fn.pool == "default":
            status = "queued"
        elif rng.random() < fn.failed:
            status = "failed"
        _top_run(rows, rng, fn, run_id, ts, status, now)
        if status == "completed" and not plan.completed and i > top // 2 and fn.id == "transcribe-audio":
            plan.completed, plan.event = run_id, rows.runs[-1][2]
        if status == "failed" and i > top // 2 and fn.id == "transcribe-audio":
            plan.failed = run_id
        if rows.size() >= CHUNK:
            yield rows
            rows = Rows()
    if rows.size():
        yield rows
    yield plan


def _top_run(rows: Rows, rng: random.Random, fn: Fn, run_id: str, ts: float, status: str, now: float) -> None:
    event_id = f"ev-{run_id}"
    name = EVENT_OF[fn.id]
    data = json.dumps({"user_id": f"u{rng.randrange(10**6)}", "object": f"obj-{rng.randrange(10**9)}"})
    rows.events.append((event_id, name, data, ts, None))
    started = ts + rng.uniform(0.001, 0.05)
    t = started
    nsteps = len(fn.steps) if status != "queued" else 0
    failed_at = rng.randrange(nsteps) if status == "failed" else -1
    for seq, (sid, kind) in enumerate(fn.steps[:nsteps]):
        took = rng.uniform(0.5, 5.0) if kind in ("sleep", "wait_for_event") else rng.expovariate(1 / 0.08)
        if seq == failed_at:
            error = json.dumps({"step_id": sid, "type": "RuntimeError", "message": f"{sid} failed: upstream timed out",
                                "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: upstream"})
            rows.steps.append((run_id, sid, seq, kind, "failed", 4, None, error, None, t, t + took, None, 0, 0, 0))
            t += took
            break
        output = json.dumps({"ok": True, "bytes": rng.randrange(10**6)}) if kind == "run" else None
        rows.steps.append((run_id, sid, seq, kind, "completed", 1, output, None, None, t, t + took, None, 0, 0, 0))
        t += took
    if rng.random() < 0.2 and nsteps:
        rows.logs.append((run_id, fn.steps[0][0], 0, started, "INFO", f"started {fn.id} for {data[:40]}"))
    ended = t if status in ("completed", "failed") else None
    error = rows.steps[-1][7] if status == "failed" else None
    output = json.dumps({"done": True}) if status == "completed" else None
    rows.runs.append((run_id, fn.id, event_id, status, fn.pool, output, error, None, None, None, None, 0, ts,
                      started if nsteps else None, ended))
    if status == "queued":
        rows.jobs.append((run_id, fn.pool, fn.id, ts, 0, None, None, None, None))


def _fanout(rows: Rows, rng: random.Random, run_id: str, ts: float, size: int, *, done: bool,
            now: float) -> Iterator[Rows]:
    from conveyor.ids import child_id  # the ids a map gives its children

    fn, child_fn = FUNCTIONS[5], FUNCTIONS[6]
    event_id = f"cron/score-all/{int(ts)}"
    rows.events.append((event_id, "conveyor/cron", json.dumps({"function_id": fn.id}), ts, None))
    rows.steps.append((run_id, "list-companies", 0, "run", "completed", 1, json.dumps({"count": size}), None, None,
                       ts, ts + 2, None, 0, 0, 0))
    child_failed = 0
    span = 900.0 if done else now - ts
    finished = size if done else size // 2
    step = "score"
    for k in range(size):
        cid = child_id(run_id, step, k)
        cts = ts + 2 + span * k / size
        status = ("failed" if rng.random() < 0.01 else "completed") if k < finished else "queued"
        child_failed += status == "failed"
        rows.events.append((cid, "conveyor/map", str(k), cts, None))
        error = json.dumps({"step_id": None, "type": "ValueError", "message": f"company {k} has no filings"}) \
            if status == "failed" else None
        output = json.dumps(k % 997) if status == "completed" else None
        if status != "queued":
            rows.steps.append((cid, "score", 0, "run", status, 1, output, error, None, cts, cts + 0.3, None, 0, 0, 0))
        rows.runs.append((cid, child_fn.id, cid, status, child_fn.pool, output, error, run_id, step, k, None, 0, cts,
                          cts if status != "queued" else None,
                          cts + 0.3 if status != "queued" else None))
        if status == "queued":
            rows.jobs.append((cid, child_fn.pool, child_fn.id, cts, 0, None, None, None, None))
        if rows.size() >= CHUNK:
            yield rows
            rows.clear()
    end = ts + 2 + span
    rows.steps.append((run_id, step, 1, "map", ("completed" if not child_failed else "failed") if done else "waiting",
                       1, None, None, None, ts + 2, end if done else None, size, finished, child_failed, size))
    if done:
        rows.steps.append((run_id, "report", 2, "run", "completed", 1, json.dumps({"path": "reports/x.csv"}), None,
                           None, end, end + 1, None, 0, 0, 0))
    rows.runs.append((run_id, fn.id, event_id, "completed" if done else "waiting", fn.pool,
                      json.dumps({"report": "reports/x.csv"}) if done else None, None, None, None, None, None, 0,
                      ts, ts, end + 1 if done else None))
    if not done:
        rows.jobs.append((run_id, fn.pool, fn.id, 1e15, 0, None, None, None, None))


# ---- loading ----------------------------------------------------------------------------------------

COLUMNS = {
    "runs": "id, function_id, event_id, status, pool, output, error, parent_id, parent_step, child_index, "
            "failure_of, failures, created_at, started_at, ended_at",
    "steps": "run_id, step_id, seq, kind, status, attempts, output, error, wake_at, started_at, ended_at, "
             "children_total, children_ended, children_failed, children_created",
    "events": "id, name, data, ts, trace",
    "jobs": "run_id, pool, function_id, run_at, token, lease_expires, worker, cgroup, climit",
    "logs": "run_id, step_id, attempt, ts, level, message",
}


def migrate(url: str) -> None:
    from conveyor.storage.base import FunctionSpec
    from conveyor.storage.factory import open_storage

    storage = open_storage(url)
    storage.migrate()
    storage.functions_sync([FunctionSpec(f.id, f.pool, f.triggers, 3, cron=f.cron) for f in FUNCTIONS])
    storage.close()


def load_sqlite(path: Path, n: int, now: float) -> Plan:
    migrate(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    plan = Plan()
    for chunk in generate(n, now):
        if isinstance(chunk, Plan):
            plan = chunk
            break
        with conn:
            for table, rows in _tables(chunk):
                cols = COLUMNS[table]
                marks = ", ".join("?" * len(cols.split(",")))
                conn.executemany(f"INSERT INTO conveyor_{table} ({cols}) VALUES ({marks})", rows)
        _progress(chunk)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return plan


def load_postgres(url: str, n: int, now: float) -> Plan:
    import psycopg

    migrate(url)
    plan = Plan()
    with psycopg.connect(url, autocommit=False) as conn:
        for chunk in generate(n, now):
            if isinstance(chunk, Plan):
                plan = chunk
                break
            with conn.cursor() as cur:
                for table, rows in _tables(chunk):
                    with cur.copy(f"COPY conveyor_{table} ({COLUMNS[table]}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            conn.commit()
            _progress(chunk)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return plan


def _tables(rows: Rows) -> list[tuple[str, list[tuple[Any, ...]]]]:
    return [("events", rows.events), ("runs", rows.runs), ("steps", rows.steps), ("jobs", rows.jobs),
            ("logs", rows.logs)]


_loaded = [0]


def _progress(rows: Rows) -> None:
    _loaded[0] += len(rows.runs)
    print(f"\r  loaded {_loaded[0]:,} runs", end="", flush=True)


# ---- measuring --------------------------------------------------------------------------------------


def start_server(url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``conveyor server`` without keys (the dashboard open, on 127.0.0.1), and its URL.

    Its own: the tests' helper is not for benchmarks to import, and http_intake.Server starts
    the server with an event key, which closes the dashboard to a client without a session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    log = workdir / "server.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "conveyor.cli.main", "server", "--database", url, "--port", "0"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=workdir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://\S+)", log.read_text(errors="replace"))
        if match:
            return proc, match.group(1).rstrip("/")
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def pages(plan: Plan, client: httpx.Client) -> list[tuple[str, str]]:
    first = client.get("/runs").text
    cursor = re.search(r'cursor=([^"&]+)" rel="next"', first)
    older = f"/runs?cursor={cursor.group(1)}" if cursor else "/runs"
    return [
        ("functions", "/"),
        ("runs (newest)", "/runs"),
        ("runs, older page", older),
        ("runs, all incl. children", "/runs?children=1"),
        ("runs by function", "/runs?function=resize-image"),
        ("runs by status (failed)", "/runs?status=failed"),
        ("runs by function+status", "/runs?function=send-email&status=failed"),
        ("runs, function+status (none)", "/runs?function=cleanup-blobs&status=failed"),
        ("runs, last hour", "/runs?window=1h"),
        ("runs, a day last week", f"/runs?since={int(time.time() - 4 * 86400)}&until={int(time.time() - 3 * 86400)}"),
        ("children of a parent", f"/runs?parent={plan.parent_done}"),
        ("failed children", f"/runs?parent={plan.parent_done}&status=failed"),
        ("run page", f"/runs/{plan.completed}"),
        ("run page, failed", f"/runs/{plan.failed}"),
        ("run page, 200k children", f"/runs/{plan.parent_done}"),
        ("run page, 100k in progress", f"/runs/{plan.parent_busy}"),
        ("run page, live fragment", f"/runs/{plan.parent_busy}#partial"),
        ("events", "/events"),
        ("events incl. internal", "/events?internal=1"),
        ("events by name", "/events?name=report.requested"),
        ("event page", f"/events/{quote(plan.event, safe='')}"),
        ("dead letters", "/dead-letters"),
        ("dead letters by function", "/dead-letters?function=transcribe-audio"),
        ("pools", "/pools"),
        ("search (redirect)", f"/search?q={plan.completed}"),
    ]


def measure(client: httpx.Client, path: str, n: int) -> dict[str, float]:
    headers = {}
    if path.endswith("#partial"):
        path, headers = path[: -len("#partial")], {"X-Conveyor-Partial": "1"}

    def one() -> float:
        t0 = time.perf_counter()
        resp = client.get(path, headers=headers)
        took = (time.perf_counter() - t0) * 1000
        if resp.status_code not in (200, 303):
            raise SystemExit(f"GET {path} -> {resp.status_code}: {resp.text[:400]}")
        return took

    first = one()
    times = sorted(one() for _ in range(n))
    return {"first": first, "p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max": times[-1]}


def refresh_workers(url: str) -> None:
    """Two live workers (as if they had just beaten), so the pools page lists someone."""
    from conveyor.storage.base import WorkerRow
    from conveyor.storage.factory import open_storage

    storage = open_storage(url)
    now = time.time()
    for i, pools in enumerate((("default", "live"), ("background",))):
        storage.worker_beat(WorkerRow(f"bench-{i}", "worker", "bench-host", 1000 + i, pools, 32, now - 3600))
    storage.close()


def bench(backend: str, url: str, workdir: Path, n: int, requests: int) -> list[tuple[str, dict[str, float]]]:
    print(f"== {backend}: loading {n:,} runs")
    _loaded[0] = 0
    t0 = time.monotonic()
    now = time.time()
    plan = load_sqlite(Path(url[len("sqlite:///"):]), n, now) if backend == "sqlite" else load_postgres(url, n, now)
    print(f"\n  loaded in {time.monotonic() - t0:.0f} s ({plan.counts})")
    refresh_workers(url)
    proc, base = start_server(url, workdir)
    results = []
    try:
        with httpx.Client(base_url=base, timeout=60, follow_redirects=False) as client:
            for name, path in pages(plan, client):
                if name == "pools":
                    refresh_workers(url)
                results.append((name, measure(client, path, requests)))
                r = results[-1][1]
                print(f"  {name:32} first {r['first']:8.1f} ms   p50 {r['p50']:7.1f}   p99 {r['p99']:7.1f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def table(all_results: dict[str, list[tuple[str, dict[str, float]]]], requests: int) -> str:
    backends = list(all_results)
    head = "| page | " + " | ".join(f"{b} first | {b} p50 | {b} p99" for b in backends) + " |"
    sep = "| --- |" + " ---: | ---: | ---: |" * len(backends)
    lines = [f"Latency in ms of each page, one client, {requests} requests after the first.", "", head, sep]
    names = [name for name, _ in next(iter(all_results.values()))]
    for i, name in enumerate(names):
        cells = []
        for b in backends:
            r = all_results[b][i][1]
            cells.append(f"{r['first']:.1f} | {r['p50']:.1f} | {r['p99']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--backend", default="sqlite,postgres")
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the SQLite file and the PostgreSQL schema")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    results: dict[str, list[tuple[str, dict[str, float]]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-dash-", dir=args.tmpdir))
    try:
        for backend in args.backend.split(","):
            if backend == "sqlite":
                results["SQLite"] = bench("sqlite", f"sqlite:///{workdir / 'dash.db'}", workdir, args.runs,
                                          args.requests)
            elif backend == "postgres":
                with _schema(args.pg_url, args.keep) as url:
                    results["PostgreSQL"] = bench("postgres", url, workdir, args.runs, args.requests)
            else:
                raise SystemExit(f"unknown backend {backend!r}")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(table(results, args.requests))
    return 0


@contextlib.contextmanager
def _schema(base: str, keep: bool) -> Iterator[str]:
    import psycopg

    schema = f"bench_dash_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        if keep:
            print(f"kept schema {schema}")
        else:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    sys.exit(main())
