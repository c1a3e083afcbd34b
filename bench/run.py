#!/usr/bin/env python
"""Conveyor benchmark on SQLite and PostgreSQL: throughput, send-to-start latency, worker memory.

    .venv/bin/python bench/run.py                 # full run (N=20000), both backends, about 5 minutes
    .venv/bin/python bench/run.py --quick         # smoke test, < 1 min
    .venv/bin/python bench/run.py --backend postgres --workers 1,2,4 --json out.json
    .venv/bin/python bench/run.py --profile /tmp/prof   # py-spy profile of 1 worker on one-step

Every scenario gets a fresh database: a SQLite file in a temporary directory, or a
fresh schema in the PostgreSQL database (``--pg-url``; dropped afterwards). Worker
*processes* are started the way an operator would start them (``conveyor worker
bench/apps.py:app ...``) and stopped with SIGTERM. Progress is read straight from
the database (a count on ``conveyor_runs`` by status, every 20 ms), never through
the SDK, so the observer costs the workers as little as possible. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps.py"
POLL = 0.020  # seconds between progress reads

# Targets from the issues, 2-core machine: {backend: (workers, one-step runs/s, three-step runs/s)}.
TARGETS = {"sqlite": (2, 5000.0, 1500.0), "postgres": (4, 9000.0, 1500.0)}
TARGET_P50_MS = 1.0  # send-to-start, both backends
TARGET_P99_MS = 5.0
DEFAULT_WORKERS = {"sqlite": "1,2", "postgres": "1,2,4"}
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


# --------------------------------------------------------------------------- helpers


def die(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr)
    raise SystemExit(2)


def check_core() -> None:
    try:
        import conveyor

        conveyor.Conveyor  # noqa: B018
        conveyor.Event  # noqa: B018
    except Exception as exc:  # pragma: no cover - depends on the state of src/
        die(f"the conveyor core is not importable yet ({type(exc).__name__}: {exc})")


def machine_info(tmpdir: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(terse=True),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        info["conveyor"] = version("conveyor")
    with contextlib.suppress(Exception):
        out = subprocess.run(["stat", "-f", "-c", "%T", str(tmpdir)], capture_output=True, text=True, timeout=5)
        info["tmp_fs"] = f"{tmpdir} ({out.stdout.strip()})"
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        info["git"] = rev.stdout.strip() or "(no commit)"
    return info


_loaded = 0


def load_app(url: str, style: str) -> Any:
    """A fresh copy of bench/apps.py bound to ``url`` (the module reads the env var)."""
    global _loaded
    _loaded += 1
    os.environ["CONVEYOR_DATABASE_URL"] = url
    os.environ["BENCH_STYLE"] = style
    spec = importlib.util.spec_from_file_location(f"_bench_apps_{_loaded}", APPS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


_cli_ok: bool | None = None


def cli_prefix() -> list[str]:
    """The ``conveyor`` command: the venv's console script, else its entry point via -c."""
    script = Path(sys.executable).parent / "conveyor"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from conveyor.cli.main import entrypoint; entrypoint()"]


def cli_available() -> bool:
    """True when ``conveyor worker --help`` works and knows --concurrency."""
    global _cli_ok
    if _cli_ok is None:
        try:
            out = subprocess.run(
                [*cli_prefix(), "worker", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
            _cli_ok = out.returncode == 0 and "--concurrency" in out.stdout
        except Exception:
            _cli_ok = False
    return _cli_ok


def worker_cmd(url: str, concurrency: int) -> list[str]:
    if cli_available():
        return [
            *cli_prefix(),
            "worker",
            f"{APPS}:app",
            "--database",
            url,
            "--concurrency",
            str(concurrency),
        ]
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('bench_apps', {str(APPS)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"m.app.worker(concurrency={concurrency}).run()\n"
    )
    return [sys.executable, "-c", code]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    if not s:
        return math.nan
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


class Worker:
    """One worker process, its log, and its memory high-water mark."""

    def __init__(self, url: str, concurrency: int, log: Path, style: str) -> None:
        env = dict(os.environ, CONVEYOR_DATABASE_URL=url, BENCH_STYLE=style, PYTHONUNBUFFERED="1")
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            worker_cmd(url, concurrency),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_kib(self) -> int | None:
        """VmHWM of the worker and of any child process it started."""
        total = 0
        found = False
        for pid in [self.pid, *_children(self.pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        found = True
        return total if found else None

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far by the worker (and its children)."""
        total = 0.0
        for pid in [self.pid, *_children(self.pid)]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self, grace: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM, wait; SIGKILL after ``grace``. Returns (exit code, seconds to exit)."""
        t = time.perf_counter()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None  # had to be killed
        self._log.close()
        return rc, time.perf_counter() - t

    def tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _children(pid: int) -> list[int]:
    kids = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


class Progress:
    """Read-only view of the runs table (``conveyor_runs``) of one SQLite file."""

    TABLES = ("conveyor_runs", "runs")

    def __init__(self, db: Path) -> None:
        self.db = db
        self.conn: sqlite3.Connection | None = None
        self.table = ""

    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5.0)
            for table in self.TABLES:
                cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if "status" in cols:
                    self.table = table
                    break
            else:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
                conn.close()
                raise sqlite3.OperationalError(f"no such table: runs (tables: {tables})")
            self.conn = conn
        return self.conn

    def count(self, statuses: tuple[str, ...]) -> int:
        marks = ",".join("?" * len(statuses))
        err: Exception | None = None
        for _ in range(200):
            try:
                conn = self._connect()
                sql = f"SELECT count(*) FROM {self.table} WHERE status IN ({marks})"
                return int(conn.execute(sql, statuses).fetchone()[0])
            except sqlite3.OperationalError as exc:  # busy, or the schema is not there yet
                err = exc
                if "no such table" in str(exc):
                    self.close()
                time.sleep(0.01)
        raise RuntimeError(f"could not read {self.db}: {err}")

    def completed(self) -> int:
        return self.count(("completed",))

    def failed(self) -> int:
        return self.count(("failed", "cancelled"))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ServerGone(RuntimeError):
    """The PostgreSQL server went away mid-scenario (restarted by something else): redo the scenario."""


class PgProgress:
    """The same counts on PostgreSQL, on one autocommit connection to the scenario's schema.

    ``SELECT count(*) FROM conveyor_runs WHERE status = 'completed'`` walks the
    ``conveyor_runs_status (status, id)`` index; measured at 1-4 ms of server time at
    N=20,000 (heap visibility checks on rows the workers just updated), i.e. < 10 % of
    one backend at one poll every 20 ms.
    """

    def __init__(self, url: str, app_name: str) -> None:
        self.url = url
        self.app_name = app_name
        self.conn: Any = None
        self.waits: Counter[str] = Counter()  # sampled pg_stat_activity states of the workers' backends

    def _connect(self) -> Any:
        if self.conn is None:
            import psycopg

            self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name="bench-observer")
        return self.conn

    def count(self, statuses: tuple[str, ...]) -> int:
        import psycopg

        err: Exception | None = None
        for _ in range(200):
            try:
                row = (
                    self._connect()
                    .execute("SELECT count(*) FROM conveyor_runs WHERE status = ANY(%s)", (list(statuses),))
                    .fetchone()
                )
                return int(row[0])
            except psycopg.errors.UndefinedTable as exc:  # schema not migrated yet
                err = exc
            except psycopg.OperationalError as exc:
                self.close()
                raise ServerGone(f"PostgreSQL connection lost: {str(exc).strip().splitlines()[0]}") from None
            time.sleep(0.01)
        raise RuntimeError(f"could not read {self.url}: {err}")

    def completed(self) -> int:
        return self.count(("completed",))

    def failed(self) -> int:
        return self.count(("failed", "cancelled"))

    def sample_waits(self) -> None:
        """What the workers' backends are doing right now (state / wait event), counted."""
        rows = (
            self._connect()
            .execute(
                "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'on CPU'), "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
                "FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
                (self.app_name,),
            )
            .fetchall()
        )
        for state, wait, query in rows:
            if state == "active" or (state or "").startswith("idle in transaction"):
                self.waits[f"{state} | {wait} | {query}"] += 1
            else:
                self.waits[f"{state} | {wait}"] += 1

    def server_stats(self) -> dict[str, float]:
        """Cumulative server counters: commits of this database, WAL records/bytes/writes/fsyncs
        (pg_stat_wal, whole cluster). Differences over a scenario, divided by N, give per-run
        costs (anything else using the server at the same time is counted too)."""
        row = (
            self._connect()
            .execute(
                "SELECT d.xact_commit, d.xact_rollback, w.wal_records, w.wal_bytes, w.wal_write, w.wal_sync "
                "FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()"
            )
            .fetchone()
        )
        keys = ("commits", "rollbacks", "wal_records", "wal_bytes", "wal_writes", "wal_fsyncs")
        return dict(zip(keys, (float(v) for v in row), strict=True))

    def backend_pids(self) -> list[int]:
        rows = (
            self._connect()
            .execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.app_name,))
            .fetchall()
        )
        return [r[0] for r in rows]

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def _proc_cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _host_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with contextlib.suppress(OSError, ValueError):
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
    return math.nan


def _postgres_aux_pids() -> list[int]:
    """PostgreSQL's own processes (walwriter, checkpointer, ...), not client backends."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmd.startswith("postgres: ") and "(" not in cmd and "]" not in cmd:
                pids.append(int(d.name))
    return pids


class Db:
    """One scenario's database: URL for the workers, a progress view, cleanup, server CPU."""

    def __init__(self, backend: str, url: str, progress: Any, cleanup: Any = None) -> None:
        self.backend = backend
        self.url = url
        self.progress = progress
        self._cleanup = cleanup
        self._aux0: dict[int, float] = {}

    def start_cpu(self) -> None:
        if self.backend == "postgres":
            self._aux0 = {pid: _proc_cpu_s(pid) for pid in _postgres_aux_pids()}

    def server_cpu_s(self) -> float:
        """CPU seconds of the PostgreSQL backends serving the workers (whole life: they connect
        after start_cpu) plus what PostgreSQL's own processes (WAL writer, ...) used since
        start_cpu. The observer's backend is not counted. NaN on SQLite (in-process)."""
        if self.backend != "postgres":
            return math.nan
        total = sum(_proc_cpu_s(pid) for pid in self.progress.backend_pids())
        total += sum(max(0.0, _proc_cpu_s(pid) - self._aux0.get(pid, 0.0)) for pid in _postgres_aux_pids())
        return total

    def close(self) -> None:
        self.progress.close()
        if self._cleanup is not None:
            self._cleanup()


_schemas = 0


def open_db(backend: str, tag: str, tmp: Path, args: argparse.Namespace) -> Db:
    if backend == "sqlite":
        path = tmp / f"{tag}.db"
        return Db("sqlite", f"sqlite:///{path}", Progress(path))  # path is absolute: sqlite:////tmp/...
    import psycopg

    global _schemas
    _schemas += 1
    schema = f"bench_{os.getpid()}_{_schemas}_{re.sub(r'[^a-z0-9]', '_', tag.lower())}"
    for attempt in range(30):  # the server may be restarting (a crash test sharing it): wait a little
        try:
            with psycopg.connect(args.pg_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.execute(f"CREATE SCHEMA {schema}")
            break
        except psycopg.OperationalError:
            if attempt == 29:
                raise
            time.sleep(1.0)
    sep = "&" if "?" in args.pg_url else "?"
    app_name = f"conveyor-{schema}"[:63]
    url = f"{args.pg_url}{sep}options=-csearch_path%3D{schema}&application_name={app_name}"

    def drop() -> None:
        if args.keep:
            print(f"kept schema {schema}", file=sys.stderr)
            return
        with contextlib.suppress(Exception), psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    return Db("postgres", url, PgProgress(url, app_name), drop)


def drop_leftover_schemas(url: str) -> None:
    """Schemas of this run left behind when the server went away while a scenario ended."""
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            like = f"bench\\_{os.getpid()}\\_%"
            for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (like,)).fetchall():
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def pg_reachable(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'conveyor[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def pg_version(url: str) -> str | None:
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            v = conn.execute("SHOW server_version").fetchone()[0]
            sc = conn.execute("SHOW synchronous_commit").fetchone()[0]
            return f"{v.split()[0]} (synchronous_commit={sc})"
    return None


# --------------------------------------------------------------------------- scenarios


@dataclass
class Throughput:
    kind: str  # "one" | "three"
    workers: int
    n: int
    backend: str = "sqlite"
    load_s: float = math.nan  # send_many of all N events (not timed in the rate)
    elapsed_s: float = math.nan  # worker start -> N completed
    rate: float = math.nan  # N / elapsed_s
    steady_rate: float = math.nan  # between 5% and 95% completed
    first_s: float = math.nan  # worker start -> first completed run
    peak_rss_mib: list[float] = field(default_factory=list)
    cpu_pct: list[float] = field(default_factory=list)  # worker CPU time / elapsed, per worker
    server_cpu_pct: float = math.nan  # PostgreSQL backends + aux processes, CPU time / elapsed
    other_cpu_pct: float = math.nan  # everything else busy on the host meanwhile (driver, other jobs)
    pg_waits: dict[str, int] = field(default_factory=dict)  # sampled states of the workers' backends
    pg_per_run: dict[str, float] = field(default_factory=dict)  # server counters / N (commits, WAL, fsyncs)
    exit_codes: list[int | None] = field(default_factory=list)
    stop_s: float = math.nan
    failed: int = 0
    error: str | None = None
    repeats: list[float] = field(default_factory=list)  # runs/s of every repetition
    steady_repeats: list[float] = field(default_factory=list)


def median_of(results: list[Throughput]) -> Throughput:
    """The repetition with the median end-to-end rate, carrying every repetition's rates."""
    bad = [r for r in results if r.error]
    if bad:
        return bad[0]
    ordered = sorted(results, key=lambda r: r.rate)
    med = ordered[(len(ordered) - 1) // 2]
    med.repeats = [r.rate for r in results]
    med.steady_repeats = [r.steady_rate for r in results]
    return med


@dataclass
class Latency:
    events: int
    spacing_ms: float
    backend: str = "sqlite"
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    max_ms: float = math.nan
    send_p50_ms: float = math.nan  # app.send() duration (part of the latency)
    send_p99_ms: float = math.nan
    pickup_p50_ms: float = math.nan  # send() returned -> step body started
    pickup_p99_ms: float = math.nan
    peak_rss_mib: float = math.nan
    exit_code: int | None = None
    error: str | None = None


def _mib(kib: int | None) -> float:
    return math.nan if kib is None else round(kib / 1024, 1)


def _send_bulk(app: Any, name: str, n: int, chunk: int = 1000) -> float:
    from conveyor import Event

    t = time.perf_counter()
    for start in range(0, n, chunk):
        app.send_many([Event(name=name, data={"i": i}) for i in range(start, min(n, start + chunk))])
    return time.perf_counter() - t


def run_throughput(
    backend: str,
    kind: str,
    n: int,
    workers: int,
    args: argparse.Namespace,
    tmp: Path,
    profile_out: Path | None = None,
) -> Throughput:
    res = Throughput(kind=kind, workers=workers, n=n, backend=backend)
    tag = f"{backend}-{kind}-w{workers}" + ("-profile" if profile_out else "")
    db = open_db(backend, tag, tmp, args)
    url = db.url
    try:
        app = load_app(url, args.style)
        try:
            res.load_s = _send_bulk(app, f"bench.{kind}", n)
        finally:
            app.close()
    except BaseException:
        db.close()
        raise

    prog = db.progress
    pg = backend == "postgres"
    if pg and args.pg_analyze:  # statistics as autovacuum would eventually gather them
        prog._connect().execute("ANALYZE")
    procs: list[Worker] = []
    spy: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, int]] = []
    try:
        db.start_cpu()
        stats0 = prog.server_stats() if pg else {}
        busy0 = _host_busy_s()
        t0 = time.perf_counter()
        procs = [Worker(url, args.concurrency, tmp / f"{tag}-worker{i}.log", args.style) for i in range(workers)]
        last_change, last = t0, -1
        next_fail_check = t0 + 0.5
        polls = 0
        while True:
            time.sleep(POLL)
            now = time.perf_counter()
            done = prog.completed()
            samples.append((now - t0, done))
            if done >= n:
                break
            polls += 1
            if pg and done > 0 and polls % 5 == 0:  # every 100 ms: what the workers' backends wait on
                prog.sample_waits()
            if profile_out is not None and spy is None and done > 0:
                # attach once the worker is past its imports: profile the steady state only
                spy = subprocess.Popen(
                    [
                        str(_py_spy()),
                        "record",
                        "--pid",
                        str(procs[0].pid),
                        "-r",
                        str(args.profile_rate),
                        "-f",
                        "raw",
                        "-o",
                        str(profile_out),
                        *PROFILE_MODES[args.profile_mode],
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            if done != last:
                last, last_change = done, now
            if now >= next_fail_check:
                next_fail_check = now + 0.5
                res.failed = prog.failed()
                if res.failed and done + res.failed >= n:
                    res.error = f"{res.failed} runs failed"
                    break
            if not any(w.alive() for w in procs):
                res.error = "all workers exited"
                break
            if now - last_change > args.stall:
                res.error = f"no progress for {args.stall:.0f} s ({done}/{n} completed)"
                break
        res.failed = prog.failed()
        if res.error is None:
            res.elapsed_s = samples[-1][0]
            res.rate = n / res.elapsed_s
            res.first_s = next(t for t, c in samples if c > 0)
            lo = next((t, c) for t, c in samples if c >= 0.05 * n)
            hi = next((t, c) for t, c in samples if c >= 0.95 * n)
            if hi[0] > lo[0]:
                res.steady_rate = (hi[1] - lo[1]) / (hi[0] - lo[0])
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                _, err = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            if not profile_out.exists():
                print(err.decode(errors="replace"), file=sys.stderr)
    finally:
        res.peak_rss_mib = [_mib(w.peak_rss_kib()) for w in procs]
        wall = time.perf_counter() - t0 if procs else math.nan
        worker_cpu = [w.cpu_s() for w in procs]
        res.cpu_pct = [round(100 * c / wall) for c in worker_cpu]
        if pg and procs:
            with contextlib.suppress(Exception):
                res.server_cpu_pct = round(100 * db.server_cpu_s() / wall)
            res.pg_waits = dict(prog.waits.most_common(15))
            with contextlib.suppress(Exception):
                stats1 = prog.server_stats()
                res.pg_per_run = {k: round((stats1[k] - stats0[k]) / n, 3) for k in stats0}
        if procs:
            server = 0.0 if math.isnan(res.server_cpu_pct) else res.server_cpu_pct
            res.other_cpu_pct = round(100 * (_host_busy_s() - busy0) / wall - 100 * sum(worker_cpu) / wall - server)
        t_stop = time.perf_counter()
        for w in procs:
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)
        for w in procs:
            rc, _ = w.stop()
            res.exit_codes.append(rc)
        res.stop_s = time.perf_counter() - t_stop
        db.close()  # after the workers exited: the schema is dropped here
        if res.error:
            for i, w in enumerate(procs):
                print(f"--- worker {i} log ({w.log_path}) ---\n{w.tail()}", file=sys.stderr)
    return res


def run_latency(backend: str, args: argparse.Namespace, tmp: Path) -> Latency:
    res = Latency(events=args.latency_events, spacing_ms=args.latency_spacing_ms, backend=backend)
    db = open_db(backend, f"{backend}-latency", tmp, args)
    url = db.url
    app = load_app(url, args.style)
    prog = db.progress
    worker: Worker | None = None
    try:
        app.migrate()  # schema in place before the worker and the observer look at it
        worker = Worker(url, args.concurrency, tmp / f"{backend}-latency-worker.log", args.style)
        # Warm up: the worker has imported everything and served a few runs.
        warm = args.latency_warmup
        for _ in range(warm):
            app.send("bench.latency", data={"t0": time.time(), "warmup": True})
        deadline = time.perf_counter() + args.stall
        while prog.completed() < warm:
            if time.perf_counter() > deadline or not worker.alive():
                res.error = "warm-up runs did not complete"
                return res
            time.sleep(POLL)
        time.sleep(args.idle)  # let the worker go idle

        spacing = args.latency_spacing_ms / 1000
        sent: list[tuple[str, float, float]] = []  # (event id, t0, send returned)
        next_t = time.perf_counter()
        for _ in range(args.latency_events):
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_t += spacing
            t0 = time.time()
            eid = app.send("bench.latency", data={"t0": t0})
            sent.append((eid, t0, time.time()))

        total = warm + len(sent)
        deadline = time.perf_counter() + args.stall
        while prog.completed() < total:
            if time.perf_counter() > deadline or not worker.alive():
                res.error = f"only {prog.completed() - warm}/{len(sent)} latency runs completed"
                return res
            time.sleep(POLL)

        lat, send_ms, pickup = [], [], []
        for eid, t0, t_sent in sent:
            runs = app.runs_for_event(eid)
            if len(runs) != 1 or not isinstance(runs[0].output, dict):
                res.error = f"unexpected runs for event {eid}: {runs!r}"
                return res
            started = runs[0].output["started"]
            lat.append((started - t0) * 1000)
            send_ms.append((t_sent - t0) * 1000)
            pickup.append((started - t_sent) * 1000)
        res.p50_ms, res.p99_ms = percentile(lat, 50), percentile(lat, 99)
        res.mean_ms, res.max_ms = sum(lat) / len(lat), max(lat)
        res.send_p50_ms, res.send_p99_ms = percentile(send_ms, 50), percentile(send_ms, 99)
        res.pickup_p50_ms, res.pickup_p99_ms = percentile(pickup, 50), percentile(pickup, 99)
        return res
    finally:
        app.close()
        if worker is not None:
            res.peak_rss_mib = _mib(worker.peak_rss_kib())
            res.exit_code, _ = worker.stop()
            if res.error:
                print(f"--- worker log ({worker.log_path}) ---\n{worker.tail()}", file=sys.stderr)
        db.close()


def with_retries(what: str, pg_url: str, fn: Any, *a: Any) -> Any:
    """Run a PostgreSQL scenario; if the server restarts under it (other jobs share the server),
    wait for it and redo the whole scenario, at most 3 times."""
    try:
        import psycopg
    except ImportError:  # SQLite only
        return fn(*a)

    for attempt in range(4):
        try:
            return fn(*a)
        except (ServerGone, psycopg.OperationalError) as exc:
            if attempt == 3:
                raise
            print(f"bench: {what}: PostgreSQL went away ({exc}); redoing the scenario", file=sys.stderr, flush=True)
            for _ in range(60):
                if pg_reachable(pg_url) is None:
                    break
                time.sleep(1.0)
            time.sleep(2.0)
    raise AssertionError


# --------------------------------------------------------------------------- profile


def _py_spy() -> Path:
    for cand in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if cand and Path(cand).exists():
            return Path(cand)
    die("py-spy not found: .venv/bin/pip install py-spy")
    raise AssertionError


PROFILE_MODES = {"gil": ["--gil"], "cpu": [], "wall": ["--idle", "--threads"]}
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's raw (collapsed) output."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        names = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr)
            names.append(f"{m['func']} ({m['file']})" if m else fr)
        self_t[names[-1]] += c
        m = _FRAME.match(stack.split(";")[-1])
        by_file[m["file"] if m else "?"] += c
        for nm in set(names):
            incl[nm] += c
    # Time charged to the innermost conveyor frame (what conveyor code is responsible for,
    # including the library calls it makes: sqlite3, json, threading...).
    owner: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        mine = [f for f in frames if "conveyor/" in f and "bench/" not in f]
        key = mine[-1] if mine else "(outside conveyor)"
        m = _FRAME.match(key)
        owner[f"{m['func']} ({m['file']})" if m else key] += int(count)

    def pct(cnt: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100 * v / total) for k, v in cnt.most_common(top)] if total else []

    conveyor_incl = Counter({k: v for k, v in incl.items() if "conveyor/" in k})
    # With --threads (wall mode) every stack starts with "thread (tid): name": where does
    # each kind of thread spend its time? Innermost conveyor frame, with its line number.
    threads: dict[str, Counter[str]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or not count.isdigit():
            continue
        frames = stack.split(";")
        name = re.sub(r"[-_]\d+$", "-*", frames[0].partition(": ")[2] or frames[0])
        mine = [f for f in frames[1:] if "conveyor/" in f and "bench/" not in f]
        key = (mine[-1] if mine else "(outside conveyor)") + " -> " + frames[-1]
        threads.setdefault(name, Counter())[key] += int(count)
    per_thread = {
        name: [(k, 100 * v / sum(c.values())) for k, v in c.most_common(8)]
        for name, c in sorted(threads.items(), key=lambda kv: -sum(kv[1].values()))
    }
    return {
        "per_thread": per_thread,
        "samples": total,
        "self": pct(self_t),
        "owner": pct(owner),
        "inclusive_conveyor": pct(conveyor_incl),
        "self_by_file": pct(by_file),
    }


# --------------------------------------------------------------------------- output


def _fmt(x: float, nd: int = 0) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{nd}f}"


def _spread(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    return f"{min(vals):,.0f}..{max(vals):,.0f}" if len(vals) > 1 else ""


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def render(info: dict[str, Any], thr: list[Throughput], lats: list[Latency], args: argparse.Namespace) -> None:
    rows = []
    for r in thr:
        tw, t_one, t_three = TARGETS[r.backend]
        target = t_one if r.kind == "one" else t_three
        ok = None if r.workers != tw or r.error or args.quick else r.rate >= target
        rows.append(
            [
                r.backend,
                f"{r.kind}-step" if r.kind == "one" else "three-step",
                str(r.workers),
                f"{r.n:,}",
                _fmt(r.load_s, 2),
                _fmt(r.elapsed_s, 2),
                _fmt(r.rate),
                _spread(r.repeats),
                _fmt(r.steady_rate),
                _fmt(r.first_s, 2),
                " ".join(_fmt(m, 1) for m in r.peak_rss_mib) or "—",
                " ".join(f"{c:.0f}" for c in r.cpu_pct) or "—",
                _fmt(r.server_cpu_pct),
                _fmt(r.other_cpu_pct),
                f"≥{target:,.0f}" if r.workers == tw else "",
                _verdict(ok) if not r.error else f"ERROR: {r.error}",
            ]
        )
    head = [
        "backend",
        "scenario",
        "workers",
        "N",
        "load s",
        "elapsed s",
        "runs/s",
        "min..max",
        "steady runs/s",
        "1st run s",
        "peak RSS MiB",
        "CPU %",
        "PG CPU %",
        "other CPU %",
        "target",
        "",
    ]
    lrows = []
    for lat in lats:
        lrows += [
            [
                f"{lat.backend}: send→start p50",
                _fmt(lat.p50_ms, 2),
                f"≤{TARGET_P50_MS:g} ms",
                _verdict(None if lat.error else lat.p50_ms <= TARGET_P50_MS),
            ],
            [
                f"{lat.backend}: send→start p99",
                _fmt(lat.p99_ms, 2),
                f"≤{TARGET_P99_MS:g} ms",
                _verdict(None if lat.error else lat.p99_ms <= TARGET_P99_MS),
            ],
            ["  send→start mean / max", f"{_fmt(lat.mean_ms, 2)} / {_fmt(lat.max_ms, 2)}", "", ""],
            ["  app.send() p50 / p99", f"{_fmt(lat.send_p50_ms, 2)} / {_fmt(lat.send_p99_ms, 2)}", "", ""],
            [
                "  send returned→start p50 / p99",
                f"{_fmt(lat.pickup_p50_ms, 2)} / {_fmt(lat.pickup_p99_ms, 2)}",
                "",
                "",
            ],
            ["  worker peak RSS MiB", _fmt(lat.peak_rss_mib, 1), "", ""],
        ]
        if lat.error:
            lrows.append(["ERROR", lat.error, "", ""])
    mline = (
        f"machine: nproc={info['nproc']}  cpu={info.get('cpu')}  mem={info.get('mem_gib')} GiB  "
        f"python={info['python']}  sqlite={info['sqlite']}  postgresql={info.get('postgresql') or '—'}  "
        f"conveyor={info.get('conveyor')}  git={info.get('git')}  tmp={info.get('tmp_fs')}"
    )
    cline = (
        f"config: concurrency={args.concurrency} per worker, style={args.style}, "
        f"median of {args.repeat} round(s), "
        f"worker via {'conveyor CLI' if cli_available() else 'python -c app.worker().run()'}"
        + (f", latency: {lats[0].events} events {lats[0].spacing_ms:g} ms apart" if lats else "")
        + "; targets: "
        + ", ".join(f"{b} at {w} workers" for b, (w, _, _) in TARGETS.items())
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(mline)
        print(cline)
        _plain(head, rows)
        if lrows:
            print()
            _plain(["latency (1 idle worker)", "ms", "target", ""], lrows)
        return
    con = Console(width=None if sys.stdout.isatty() else 240)
    con.print(mline, highlight=False)
    con.print(cline, highlight=False)
    t = Table(title="Throughput (worker processes, end to end)")
    for h in head:
        t.add_column(h, justify="left" if h in ("backend", "scenario", "target", "") else "right")
    for row in rows:
        style = "red" if row[-1].startswith(("MISS", "ERROR")) else ("green" if row[-1] == "PASS" else None)
        t.add_row(*row, style=style)
    con.print(t)
    pg_rows = [r for r in thr if r.pg_per_run]
    if pg_rows:
        pt = Table(title="PostgreSQL server counters per run (deltas over the timed phase / N; whole server)")
        keys = list(pg_rows[0].pg_per_run)
        for h in ["scenario", "workers", *keys]:
            pt.add_column(h, justify="left" if h == "scenario" else "right")
        for r in pg_rows:
            pt.add_row(f"{r.kind}-step", str(r.workers), *(f"{r.pg_per_run.get(k, math.nan):g}" for k in keys))
        con.print(pt)
    if lrows:
        lt = Table(title="Send-to-start latency (1 idle worker; LISTEN/NOTIFY on PostgreSQL)")
        for h in ["metric", "ms", "target", ""]:
            lt.add_column(h, justify="right" if h == "ms" else "left")
        for row in lrows:
            style = "red" if row[-1] == "MISS" or row[0] == "ERROR" else ("green" if row[-1] == "PASS" else None)
            lt.add_row(*row, style=style)
        con.print(lt)


def _plain(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def render_profile(summary: dict[str, Any], raw: Path) -> None:
    print(f"\npy-spy profile of worker 0: {summary['samples']} samples (idle excluded), raw: {raw}")
    sections = [
        ("inclusive_conveyor", "inclusive time, conveyor functions"),
        ("owner", "time charged to the innermost conveyor frame (incl. sqlite3/json it calls)"),
        ("self", "self time (leaf Python frame)"),
        ("self_by_file", "self time by file"),
    ]
    for key, title in sections:
        print(f"\n{title}:")
        for name, p in summary[key][:20]:
            print(f"  {p:5.1f}%  {name}")
    if summary.get("pg_per_run"):
        print("\nPostgreSQL counters per run (pg_stat_database / pg_stat_wal deltas over the scenario / N):")
        print("  " + "  ".join(f"{k}={v:g}" for k, v in summary["pg_per_run"].items()))
    if summary.get("pg_waits"):
        print("\nPostgreSQL: sampled state | wait event | query of the workers' backends (every 100 ms):")
        tot = sum(summary["pg_waits"].values())
        for k, v in summary["pg_waits"].items():
            print(f"  {100 * v / tot:5.1f}%  {k}")
    for thread, rows in summary.get("per_thread", {}).items():
        print(f"\nthread {thread} (share of its wall time, innermost conveyor frame -> leaf):")
        for name, p in rows:
            print(f"  {p:5.1f}%  {name}")


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N, smoke test (< 1 min)")
    ap.add_argument(
        "--backend",
        help="sqlite,postgres (default: both when PostgreSQL answers at --pg-url, else sqlite only)",
    )
    ap.add_argument(
        "--pg-analyze",
        action="store_true",
        help="ANALYZE the fresh schema after the load phase (default: no, like a new deployment)",
    )
    ap.add_argument("--pg-url", default=PG_URL, help=f"PostgreSQL database (default $BENCH_PG_URL or {PG_URL})")
    ap.add_argument("--n", type=int, help="events per throughput scenario (default 20000)")
    ap.add_argument(
        "--workers",
        help="worker-process counts to try, for every backend (default: sqlite 1,2; postgres 1,2,4)",
    )
    ap.add_argument(
        "--repeat", type=int, help="rounds of each throughput scenario; the median is shown (default 3, --quick 1)"
    )
    ap.add_argument("--concurrency", type=int, default=32, help="--concurrency of each worker")
    ap.add_argument("--scenarios", default="one,three,latency", help="subset of one,three,latency")
    ap.add_argument(
        "--style",
        choices=["sync", "async"],
        default="sync",
        help="register the bench functions as def (sync) or async def",
    )
    ap.add_argument("--latency-events", type=int, help="events sent one by one (default 300)")
    ap.add_argument("--latency-spacing-ms", type=float, default=5.0)
    ap.add_argument("--latency-warmup", type=int, default=20)
    ap.add_argument("--idle", type=float, help="seconds the worker idles before latency (default 2)")
    ap.add_argument("--stall", type=float, default=60.0, help="abort after this long without progress")
    ap.add_argument("--tmpdir", help="where the SQLite files go (default: system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="only profile: one-step, 1 worker, first backend, under py-spy; write DIR/<backend>-one-w1-<mode>.raw",
    )
    ap.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument(
        "--profile-mode",
        choices=sorted(PROFILE_MODES),
        default="gil",
        help="gil: only the thread holding the GIL (Python CPU time; default); "
        "cpu: py-spy's default (non-idle threads); "
        "wall: every thread, idle included, one root per thread",
    )
    args = ap.parse_args()

    n = args.n or (500 if args.quick else 20000)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.latency_events is None:
        args.latency_events = 50 if args.quick else 300
    if args.idle is None:
        args.idle = 0.5 if args.quick else 2.0
    if args.quick:
        args.latency_warmup = min(args.latency_warmup, 5)
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if unknown := scenarios - {"one", "three", "latency"}:
        die(f"unknown scenarios: {sorted(unknown)}")
    if args.backend is None:
        why = pg_reachable(args.pg_url)
        backends = ["sqlite", "postgres"] if why is None else ["sqlite"]
        if why is not None:
            print(
                f"bench: PostgreSQL is not reachable at {args.pg_url} ({why}): running SQLite only "
                "(set --pg-url or BENCH_PG_URL, or pass --backend sqlite to silence this)",
                file=sys.stderr,
            )
    else:
        backends = [b.strip() for b in args.backend.split(",") if b.strip()]
        if unknown := set(backends) - set(TARGETS):
            die(f"unknown backends: {sorted(unknown)} (expected sqlite, postgres)")
        if "postgres" in backends and (why := pg_reachable(args.pg_url)) is not None:
            die(f"PostgreSQL is not reachable at {args.pg_url}: {why}")
    workers_of = {b: [int(w) for w in (args.workers or DEFAULT_WORKERS[b]).split(",") if w] for b in backends}

    check_core()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-", dir=args.tmpdir))
    info = machine_info(tmp)
    if "postgres" in backends:
        info["postgresql"] = pg_version(args.pg_url)
        info["pg_url"] = args.pg_url
    thr: list[Throughput] = []
    lats: list[Latency] = []
    t_all = time.perf_counter()
    try:
        if args.profile:
            out_dir = Path(args.profile)
            out_dir.mkdir(parents=True, exist_ok=True)
            b = backends[0]
            pw = workers_of[b][0]
            kind = "three" if scenarios == {"three"} else "one"
            raw = out_dir.resolve() / f"{b}-{kind}-w{pw}-{args.profile_mode}.raw"
            raw.unlink(missing_ok=True)
            r = with_retries(f"{b} profile", args.pg_url, run_throughput, b, kind, n, pw, args, tmp, raw)
            thr.append(r)
            render(info, thr, [], args)
            if raw.exists():
                summary = summarize_profile(raw)
                summary["pg_waits"] = r.pg_waits
                summary["pg_per_run"] = r.pg_per_run
                (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
                render_profile(summary, raw)
            return
        reps: dict[tuple[str, str, int], list[Throughput]] = {}
        for rep in range(args.repeat):  # interleaved, so slow drift hits every config alike
            for b in backends:
                for kind in ("one", "three"):
                    if kind in scenarios:
                        for w in workers_of[b]:
                            print(
                                f"… {b}: {kind}-step, {w} worker(s), N={n}, round {rep + 1}/{args.repeat}",
                                file=sys.stderr,
                                flush=True,
                            )
                            sub = tmp / f"r{rep}"
                            sub.mkdir(exist_ok=True)
                            what = f"{b} {kind}-step w{w}"
                            r = with_retries(what, args.pg_url, run_throughput, b, kind, n, w, args, sub)
                            reps.setdefault((b, kind, w), []).append(r)
        thr = [median_of(rs) for rs in reps.values()]
        if "latency" in scenarios:
            for b in backends:
                print(f"… {b}: latency, {args.latency_events} events", file=sys.stderr, flush=True)
                lats.append(with_retries(f"{b} latency", args.pg_url, run_latency, b, args, tmp))
        render(info, thr, lats, args)
        print(f"total bench time {time.perf_counter() - t_all:.1f} s")
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "machine": info,
                        "config": {
                            "n": n,
                            "backends": backends,
                            "workers": workers_of,
                            "concurrency": args.concurrency,
                            "style": args.style,
                            "repeat": args.repeat,
                            "cli": cli_available(),
                        },
                        "throughput": [asdict(r) for r in thr],
                        "latency": [asdict(lat) for lat in lats],
                    },
                    indent=1,
                    default=str,
                )
            )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if "postgres" in backends:
                drop_leftover_schemas(args.pg_url)
    if any(r.error for r in thr) or any(lat.error for lat in lats):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
