#!/usr/bin/env python
"""Fan-out benchmark: ``ctx.step.map`` over 10k / 100k / 1M children, then a streaming reduce.

    .venv/bin/python bench/fanout.py --quick                       # 10k, both kinds, both backends
    .venv/bin/python bench/fanout.py --sizes 10000,100000 --backend sqlite
    .venv/bin/python bench/fanout.py --sizes 1000000 --kinds noop --backend postgres --json /tmp/f.json
    .venv/bin/python bench/fanout.py --sizes 100000 --profile /tmp/fanprof    # py-spy on the workers

Each scenario (backend x size x child kind) gets a fresh database (a SQLite file, or a
fresh PostgreSQL schema) and fresh worker *processes*, started the way an operator
starts them (``conveyor worker bench/fanout_app.py:app --database URL --pool P``):

* 1 worker on pool ``default`` (runs the parent: creates the children, then the reduce),
* ``--workers`` (default 2) workers on pool ``background`` (the children),
* 1 worker on pool ``live`` (the latency probe).

After a warm-up fan-out of 100 children and an idle-latency phase (``--idle-events``
live events ``--live-spacing-ms`` apart, nothing else running), the driver sends
``fan.start {"n": N, "kind": K}`` and, until the parent run has completed, polls the
parent's status (one primary-key read) and sends a ``fan.live`` event every
``--live-spacing-ms``. Wall time is ``parent.ended_at - time before app.send()``.
See bench/README.md ("Fan-out").
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # bench/run.py: shared helpers

ROOT = base.ROOT
APP = ROOT / "bench" / "fanout_app.py"
PG_URL = base.PG_URL
POLL = 0.010  # driver loop tick (s)
TARGET_10K_S = 2.0
TARGET_1M_S = 300.0
TARGET_RSS_MIB = 300.0


# --------------------------------------------------------------------------- processes


class Proc:
    """One worker process serving one pool; its log, CPU time and memory high-water mark."""

    def __init__(self, role: str, url: str, pool: str, concurrency: int, log: Path) -> None:
        self.role = role
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115
        cmd = [
            *base.cli_prefix(),
            "worker",
            f"{APP}:app",
            "--database",
            url,
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
        ]
        env = dict(os.environ, CONVEYOR_DATABASE_URL=url, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status_kib(self, key: str) -> int | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        return None

    def cpu_s(self) -> float:
        return base._proc_cpu_s(self.pid)

    def stop(self, grace: float = 30.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self._log.close()
        return rc

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --------------------------------------------------------------------------- database views


class View:
    """Cheap direct reads of the scenario's database (never through the SDK)."""

    def __init__(self, backend: str, url: str, sqlite_path: Path | None) -> None:
        self.backend = backend
        self.url = url
        self.path = sqlite_path
        self.conn: Any = None
        self.mark = "?" if backend == "sqlite" else "%s"

    def _connect(self) -> Any:
        if self.conn is None:
            if self.backend == "sqlite":
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
            else:
                import psycopg

                self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                            application_name="bench-observer")
        return self.conn

    def q(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        sql = sql.replace("?", self.mark)
        err: Exception | None = None
        for _ in range(100):
            try:
                return list(self._connect().execute(sql, params).fetchall())
            except sqlite3.OperationalError as exc:  # busy, or schema not there yet
                err = exc
                time.sleep(0.01)
        raise RuntimeError(f"query failed: {err}")

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = self.q(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


def load_app(url: str) -> Any:
    os.environ["CONVEYOR_DATABASE_URL"] = url
    spec = importlib.util.spec_from_file_location(f"_fanout_app_{time.monotonic_ns()}", APP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


# --------------------------------------------------------------------------- scenario


@dataclass
class Result:
    backend: str
    n: int
    kind: str
    workers: int
    elapsed_s: float = math.nan  # send -> parent completed (parent.ended_at)
    polled_s: float = math.nan  # send -> the driver saw it completed
    rate: float = math.nan  # children / elapsed
    create_s: float = math.nan  # first child created -> last child created
    children_done_s: float = math.nan  # send -> last child ended
    resume_s: float = math.nan  # last child ended -> reduce step started
    reduce_s: float = math.nan  # the reduce step body (streaming over all outputs)
    reduce_ok: bool | None = None  # sum and count as expected
    rss_mib: dict[str, float] = field(default_factory=dict)  # VmHWM per worker (role -> MiB)
    reduce_rss_mib: float = math.nan  # VmHWM of the default worker (creator + reduce)
    reduce_step_rss_mib: tuple[float, float] = (math.nan, math.nan)  # VmRSS before / after the reduce body
    cpu_pct: dict[str, float] = field(default_factory=dict)  # CPU s / elapsed per worker
    pg_cpu_pct: float = math.nan
    live_idle: dict[str, float] = field(default_factory=dict)
    live_busy: dict[str, float] = field(default_factory=dict)
    pg_waits: dict[str, int] = field(default_factory=dict)
    progress: list[tuple[float, int, int]] = field(default_factory=list)  # (t, created, ended)
    profiles: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def _lat_stats(lat: list[float], send: list[float]) -> dict[str, float]:
    if not lat:
        return {"n": 0}
    ms = [x * 1000 for x in lat]
    sm = [x * 1000 for x in send]
    return {
        "n": len(ms),
        "p50": base.percentile(ms, 50),
        "p99": base.percentile(ms, 99),
        "max": max(ms),
        "send_p50": base.percentile(sm, 50),
        "send_p99": base.percentile(sm, 99),
    }


class LiveProbe:
    """Sends fan.live events (data t0) and collects the latencies they report."""

    def __init__(self, app: Any, view: View) -> None:
        self.app = app
        self.view = view
        self.sent: dict[str, tuple[str, float]] = {}  # event id -> (phase, send duration)

    def send(self, phase: str) -> None:
        t0 = time.time()
        eid = self.app.send("fan.live", {"t0": t0})
        self.sent[eid] = (phase, time.time() - t0)

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            row = self.view.one(
                "SELECT count(*) FROM conveyor_runs WHERE function_id = 'fan-live' AND status = 'completed'")
            if row and row[0] >= len(self.sent):
                return
            time.sleep(0.05)

    def stats(self, phase: str) -> dict[str, float]:
        rows = self.view.q(
            "SELECT event_id, output FROM conveyor_runs WHERE function_id = 'fan-live' AND status = 'completed'")
        lat, send = [], []
        for eid, out in rows:
            ph = self.sent.get(eid)
            if ph is None or ph[0] != phase or out is None:
                continue
            out = json.loads(out) if isinstance(out, str) else out
            lat.append(float(out["latency"]))
            send.append(ph[1])
        st = _lat_stats(lat, send)
        st["sent"] = sum(1 for p, _ in self.sent.values() if p == phase)
        return st


def wait_parent(view: View, eid: str, timeout: float) -> tuple[str, str | None, float | None]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = view.one("SELECT id, status, ended_at FROM conveyor_runs WHERE event_id = ?", (eid,))
        if row and row[1] in ("completed", "failed", "cancelled"):
            return row[0], row[1], row[2]
        time.sleep(0.02)
    raise TimeoutError(f"parent of event {eid} did not end within {timeout:.0f} s")


def open_db(backend: str, tag: str, tmp: Path, args: argparse.Namespace) -> tuple[str, Path | None, Any]:
    """(url, sqlite path, cleanup)."""
    if backend == "sqlite":
        path = tmp / f"{tag}.db"
        return f"sqlite:///{path}", path, lambda: None
    import psycopg

    schema = f"fan_{os.getpid()}_{re.sub(r'[^a-z0-9]', '_', tag.lower())}"[:60]
    with psycopg.connect(args.pg_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.pg_url else "?"
    url = f"{args.pg_url}{sep}options=-csearch_path%3D{schema}"

    def drop() -> None:
        if args.keep:
            print(f"kept schema {schema}", file=sys.stderr)
            return
        with contextlib.suppress(Exception), psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    return url, None, drop


def _with_app_name(url: str, name: str) -> str:
    if not url.startswith("postgres"):
        return url
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}application_name={name[:63]}"


def run_scenario(backend: str, n: int, kind: str, args: argparse.Namespace, tmp: Path) -> Result:
    res = Result(backend=backend, n=n, kind=kind, workers=args.workers)
    tag = f"{backend}-{kind}-{n}"
    url, path, cleanup = open_db(backend, tag, tmp, args)
    app = load_app(url)
    app.migrate()
    view = View(backend, url, path)
    appname = f"fan{os.getpid()}-{kind}-{n}"
    procs: list[Proc] = []
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        procs.append(Proc("default", _with_app_name(url, f"{appname}-default"), "default", 4,
                          tmp / f"{tag}-default.log"))
        for i in range(args.workers):
            procs.append(Proc(f"bg{i}", _with_app_name(url, f"{appname}-bg{i}"), "background", args.concurrency,
                              tmp / f"{tag}-bg{i}.log"))
        procs.append(Proc("live", _with_app_name(url, f"{appname}-live"), "live", 8, tmp / f"{tag}-live.log"))

        # warm-up: a small fan-out (every worker imports, connects, migrates-checks) and live runs
        probe = LiveProbe(app, view)
        warm = app.send("fan.start", {"n": 100, "kind": kind})
        for _ in range(10):
            probe.send("warm")
            time.sleep(0.02)
        _, st, _ = wait_parent(view, warm, 120)
        if st != "completed":
            raise RuntimeError(f"warm-up fan-out {st}")
        probe.wait()
        time.sleep(args.idle)

        # idle latency: nothing else running
        for _ in range(args.idle_events):
            probe.send("idle")
            time.sleep(args.live_spacing_ms / 1000)
        probe.wait()

        cpu0 = {p.role: p.cpu_s() for p in procs}
        aux0 = {pid: base._proc_cpu_s(pid) for pid in base._postgres_aux_pids()} if backend == "postgres" else {}
        be0 = {}
        if backend == "postgres":
            be0 = {r[0]: base._proc_cpu_s(r[0]) for r in view.q(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE ?", (f"{appname}-%",))}

        if args.profile:
            prof_dir = Path(args.profile)
            prof_dir.mkdir(parents=True, exist_ok=True)
            for p in procs:
                if p.role == "live":
                    continue
                out = prof_dir / f"{tag}-{p.role}.raw"
                spy = subprocess.Popen(
                    [str(base._py_spy()), "record", "--pid", str(p.pid), "-r", "50", "-f", "raw", "-o", str(out),
                     *base.PROFILE_MODES[args.profile_mode]],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                spies.append((p.role, spy, out))
            time.sleep(0.5)

        t_send = time.time()
        eid = app.send("fan.start", {"n": n, "kind": kind})
        next_live = time.time()
        next_prog = t_send
        next_wait_sample = t_send
        waits: Counter[str] = Counter()
        parent_id: str | None = None
        last_change, last_mark = time.time(), None
        status = None
        ended_at = None
        while True:
            now = time.time()
            if now >= next_live:
                probe.send("busy")
                next_live = max(next_live + args.live_spacing_ms / 1000, time.time())
            row = view.one("SELECT id, status, ended_at FROM conveyor_runs WHERE event_id = ?", (eid,))
            if row:
                parent_id, status, ended_at = row
                if status in ("completed", "failed", "cancelled"):
                    res.polled_s = time.time() - t_send
                    break
            if parent_id and now >= next_prog:
                next_prog = now + 0.5
                pr = view.one("SELECT children_created, children_ended FROM conveyor_steps WHERE run_id = ? "
                              "AND step_id = 'kids'", (parent_id,))
                if pr:
                    res.progress.append((round(now - t_send, 2), int(pr[0] or 0), int(pr[1] or 0)))
                    if pr != last_mark:
                        last_mark, last_change = pr, now
            if backend == "postgres" and now >= next_wait_sample:
                next_wait_sample = now + 0.2
                for app_n, state, wait, query in view.q(
                    "SELECT application_name, state, coalesce(wait_event_type || ':' || wait_event, 'CPU'), "
                    "left(regexp_replace(query, '\\s+', ' ', 'g'), 70) FROM pg_stat_activity "
                    "WHERE application_name LIKE ?", (f"{appname}-%",)):
                    role = app_n.rsplit("-", 1)[-1]
                    if state == "active" or (state or "").startswith("idle in"):
                        waits[f"{role:8} {state} | {wait} | {query}"] += 1
            if now - last_change > args.stall:
                raise RuntimeError(f"no progress for {args.stall:.0f} s (created/ended: {last_mark})")
            if not all(p.alive() for p in procs):
                dead = [p for p in procs if not p.alive()]
                raise RuntimeError(f"worker {dead[0].role} exited:\n{dead[0].tail()}")
            time.sleep(POLL)

        t_end = time.time()
        for _role, spy, _out in spies:
            spy.send_signal(signal.SIGINT)
        for role, spy, out in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.communicate(timeout=60)
            if out.exists():
                res.profiles[role] = str(out)
        wall = t_end - t_send
        res.cpu_pct = {p.role: round(100 * (p.cpu_s() - cpu0[p.role]) / wall, 1) for p in procs}
        if backend == "postgres":
            be = sum(base._proc_cpu_s(pid) - c for pid, c in be0.items())
            aux = sum(max(0.0, base._proc_cpu_s(pid) - aux0.get(pid, 0.0)) for pid in base._postgres_aux_pids())
            res.pg_cpu_pct = round(100 * (be + aux) / wall, 1)
            res.pg_waits = dict(waits.most_common(25))
        if status != "completed":
            raise RuntimeError(f"parent {parent_id} {status}")
        res.elapsed_s = float(ended_at) - t_send
        res.rate = n / res.elapsed_s

        # phases, from the database
        c = view.one("SELECT min(created_at), max(created_at), max(ended_at) FROM conveyor_runs WHERE parent_id = ?",
                     (parent_id,))
        if c and c[0] is not None:
            res.create_s = c[1] - c[0]
            res.children_done_s = c[2] - t_send
        out = view.one("SELECT output FROM conveyor_runs WHERE id = ?", (parent_id,))
        if out and out[0]:
            o = json.loads(out[0]) if isinstance(out[0], str) else out[0]
            res.reduce_s = float(o["seconds"])
            if c and c[2] is not None:
                res.resume_s = float(o["started"]) - c[2]
            expected = n * (n - 1) / 2 if kind == "noop" else None
            res.reduce_ok = o["count"] == n and (expected is None or o["sum"] == expected)
            res.reduce_step_rss_mib = (base._mib(o.get("rss_before_kib")), base._mib(o.get("rss_after_kib")))

        probe.wait()
        res.live_idle = probe.stats("idle")
        res.live_busy = probe.stats("busy")
    except Exception as exc:  # report and go on with the next scenario
        res.error = f"{type(exc).__name__}: {exc}"
        for p in procs:
            if not p.alive() or "exited" in str(exc):
                print(f"--- {p.role} log tail:\n{p.tail()}", file=sys.stderr)
    finally:
        for p in procs:
            res.rss_mib[p.role] = base._mib(p.status_kib("VmHWM:"))
        res.reduce_rss_mib = res.rss_mib.get("default", math.nan)
        for p in procs:
            p.stop()
        for _, spy, _ in spies:
            if spy.poll() is None:
                spy.kill()
        view.close()
        app.close()
        cleanup()
        if not args.keep and path is not None:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
    return res


# --------------------------------------------------------------------------- output


def _target(r: Result) -> str:
    if r.error:
        return f"ERROR: {r.error.splitlines()[0][:80]}"
    verdicts = []
    if r.n == 10_000:
        verdicts.append(f"≤{TARGET_10K_S:g}s " + ("PASS" if r.elapsed_s <= TARGET_10K_S else "MISS"))
    if r.n == 1_000_000:
        verdicts.append(f"≤{TARGET_1M_S:g}s " + ("PASS" if r.elapsed_s <= TARGET_1M_S else "MISS"))
    rss = [v for v in r.rss_mib.values() if not math.isnan(v)]
    if rss:
        verdicts.append(f"RSS<{TARGET_RSS_MIB:g} " + ("PASS" if max(rss) < TARGET_RSS_MIB else "MISS"))
    if r.reduce_ok is False:
        verdicts.append("REDUCE WRONG")
    return ", ".join(verdicts)


def render(info: dict[str, Any], results: list[Result], args: argparse.Namespace) -> None:
    f = base._fmt
    print()
    print(
        f"machine: nproc={info['nproc']}  cpu={info.get('cpu')}  mem={info.get('mem_gib')} GiB  "
        f"python={info['python']}  sqlite={info['sqlite']}  postgresql={info.get('postgresql') or '—'}  "
        f"git={info.get('git')}  tmp={info.get('tmp_fs')}"
    )
    print(f"workers: 1 default (parent + reduce, concurrency 4), {args.workers} background (children, "
          f"concurrency {args.concurrency}), 1 live (concurrency 8); live events every {args.live_spacing_ms:g} ms")
    head = ["backend", "kind", "children", "send→reduce done s", "children/s", "create s", "last child s",
            "resume s", "reduce s", "RSS MiB default/bg…/live", "reduce RSS MiB", "CPU % default/bg…/live",
            "PG CPU %", "live p50/p99 ms idle", "live p50/p99 ms busy (done/sent)", "target"]
    rows = []
    for r in results:
        roles = ["default", *[f"bg{i}" for i in range(r.workers)], "live"]
        li, lb = r.live_idle, r.live_busy
        rows.append([
            r.backend, r.kind, f"{r.n:,}", f(r.elapsed_s, 2), f(r.rate), f(r.create_s, 2), f(r.children_done_s, 2),
            f(r.resume_s, 3), f(r.reduce_s, 3),
            "/".join(f(r.rss_mib.get(k, math.nan), 0) for k in roles),
            f(r.reduce_rss_mib, 0),
            "/".join(f(r.cpu_pct.get(k, math.nan), 0) for k in roles),
            f(r.pg_cpu_pct, 0),
            f"{f(li.get('p50', math.nan), 1)}/{f(li.get('p99', math.nan), 1)}",
            f"{f(lb.get('p50', math.nan), 1)}/{f(lb.get('p99', math.nan), 1)} (n={lb.get('n', 0)}/{lb.get('sent', 0)})",
            _target(r),
        ])
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for r in results:
        if r.pg_waits:
            print(f"\npg_stat_activity samples every 200 ms, {r.backend} {r.kind} {r.n:,} (role state | wait | query):")
            for k, v in r.pg_waits.items():
                print(f"  {v:6d}  {k}")
        for role, raw in r.profiles.items():
            summ = base.summarize_profile(Path(raw), top=12)
            print(f"\npy-spy ({args.profile_mode}) {r.backend} {r.kind} {r.n:,} worker {role}: "
                  f"{summ['samples']} samples; by owner (innermost conveyor frame):")
            for k, pct in summ["owner"]:
                print(f"  {pct:5.1f}%  {k}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--kinds", default="noop,tiny", help="child kinds: noop, tiny")
    ap.add_argument("--backend", default=None, help="sqlite,postgres (default: both when PostgreSQL answers)")
    ap.add_argument("--quick", action="store_true", help="10k children only")
    ap.add_argument("--workers", type=int, default=2, help="background worker processes")
    ap.add_argument("--concurrency", type=int, default=32, help="per background worker")
    ap.add_argument("--live-spacing-ms", type=float, default=50.0)
    ap.add_argument("--idle-events", type=int, default=60)
    ap.add_argument("--idle", type=float, default=1.0, help="seconds of idleness before the idle-latency phase")
    ap.add_argument("--stall", type=float, default=60.0, help="abort after this many seconds without progress")
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", default=None, help="directory: py-spy record of the default and background workers")
    ap.add_argument("--profile-mode", default="gil", choices=sorted(base.PROFILE_MODES))
    args = ap.parse_args()

    base.check_core()
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in ("noop", "tiny"):
            base.die(f"unknown kind {k!r}")
    if args.backend is None:
        why = base.pg_reachable(args.pg_url)
        backends = ["sqlite"] if why else ["sqlite", "postgres"]
        if why:
            print(f"PostgreSQL not reachable at {args.pg_url} ({why}): SQLite only", file=sys.stderr)
    else:
        backends = [b for b in args.backend.split(",") if b]
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-fanout-", dir=args.tmpdir))
    info = base.machine_info(tmp)
    if "postgres" in backends:
        info["postgresql"] = base.pg_version(args.pg_url)
    results: list[Result] = []
    try:
        for backend in backends:
            for n in sizes:
                for kind in kinds:
                    print(f"[{time.strftime('%H:%M:%S')}] {backend} {kind} {n:,} ...", file=sys.stderr, flush=True)
                    r = run_scenario(backend, n, kind, args, tmp)
                    results.append(r)
                    print(f"    -> {base._fmt(r.elapsed_s, 2)} s, {base._fmt(r.rate)} children/s, "
                          f"RSS {r.rss_mib}, live busy p50/p99 {r.live_busy.get('p50')}/{r.live_busy.get('p99')}"
                          + (f"  ERROR {r.error}" if r.error else ""), file=sys.stderr, flush=True)
    finally:
        render(info, results, args)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args),
                                                   "results": [asdict(r) for r in results]}, indent=1, default=str))
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(1 if any(r.error for r in results) else 0)


if __name__ == "__main__":
    main()
