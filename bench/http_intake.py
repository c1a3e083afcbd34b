#!/usr/bin/env python
"""HTTP intake benchmark: how fast ``conveyor server`` durably accepts events.

    .venv/bin/python bench/http_intake.py                          # both backends, 10 s per phase
    .venv/bin/python bench/http_intake.py --backend sqlite --seconds 20 --connections 64
    .venv/bin/python bench/http_intake.py --profile /tmp/intake    # + py-spy of the server per phase
    .venv/bin/python bench/http_intake.py --client python          # the built-in client instead of wrk

For each backend: a fresh database (a SQLite file in a temporary directory, or a fresh
PostgreSQL schema), one function registered on the event name (so every event also
creates a run), and a real server started as an operator would (``conveyor server
--database URL --port 0 --event-key K``). Then two timed phases of ``--seconds`` each,
after a short warm-up:

* ``single``: one event per ``POST /api/v1/events``, ``--connections`` keep-alive connections;
* ``batch``: 100 events per request, ``--batch-connections`` connections.

The load generator is ``wrk`` (one thread; a Lua script gives every event a unique id and
keeps the bodies of the 202s), because on a 2-core machine it competes with the server for
CPU; without ``wrk`` (``apt-get install wrk``) an asyncio raw-socket HTTP/1.1 keep-alive client
in this file does the same. At the end of each phase every acknowledged id is looked up in
the database: each 202 must be durable. See bench/README.md ("HTTP intake").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as base  # bench/run.py: shared helpers

ROOT = base.ROOT
EVENT = "bench.intake"
KEY = "bench-intake-key"
LISTENING = re.compile(r"listening on (http://\S+)")
TARGET_SINGLE_RPS = 1500.0
TARGET_BATCH_EPS = 20000.0

WRK_SCRIPT = r"""
-- Every event gets a unique id (<prefix>-<thread>-<n>); the bodies of the 202s are kept
-- and written out at the end, with the status counts and wrk's latency percentiles.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  batch = tonumber(os.getenv("BENCH_BATCH"))
  prefix = os.getenv("BENCH_PREFIX") .. "-" .. tid .. "-"
  counter = 0
  statuses = {}
  acked = {}
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  wrk.headers["Content-Type"] = "application/json"
end

local function event()
  counter = counter + 1
  return '{"name":"bench.intake","id":"' .. prefix .. counter .. '","data":{"n":' .. counter ..
         ',"user":"u' .. (counter % 997) .. '"}}'
end

function request()
  local body
  if batch == 1 then
    body = event()
  else
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then acked[#acked + 1] = body end
end

function done(summary, latency, requests)
  local f = io.open(os.getenv("BENCH_OUT"), "w")
  local e = summary.errors
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do f:write("status " .. status .. " " .. n .. "\n") end
    for _, body in ipairs(thread:get("acked")) do f:write("ack " .. body .. "\n") end
  end
  f:close()
end
"""


# --------------------------------------------------------------------------- the server


class Server:
    """One ``conveyor server`` process: its URL, CPU time and memory high-water mark."""

    def __init__(self, db_url: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [*base.cli_prefix(), "server", "--database", db_url, "--port", "0", "--event-key", KEY],
                cwd=log.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while not (m := LISTENING.search(log.read_text(errors="replace"))):
            self._check(deadline, "its 'listening on' line")
        self.url = m.group(1).rstrip("/")
        while not self._healthy():
            self._check(deadline, "GET /healthz to answer 200")

    def _check(self, deadline: float, what: str) -> None:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not come up ({what}): {self.tail()}")
        time.sleep(0.02)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def cpu_s(self) -> float:
        return base._proc_cpu_s(self.pid)

    def peak_rss_mib(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return math.nan

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def register_function(db_url: str, tmp: Path) -> None:
    """Register one no-op function on ``bench.intake`` in the database (the server loads no app)."""
    import conveyor

    app = conveyor.Conveyor("bench-intake", database=db_url, blob_dir=tmp / "blobs")

    @app.function(on=EVENT, retries=0)
    def intake_noop(ctx: conveyor.Context) -> None:
        return None

    app.migrate()
    app.close()


# --------------------------------------------------------------------------- load generators


@dataclass
class Load:
    """What the load generator saw."""

    requests: int = 0  # completed requests (any status)
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    acked_ids: list[str] = field(default_factory=list)
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    cpu_s: float = 0.0  # the load generator's own CPU time
    in_flight_cut: bool = True  # wrk drops the requests in flight at the end


def run_wrk(url: str, connections: int, seconds: float, batch: int, prefix: str, work: Path) -> Load:
    script = work / "intake.lua"
    script.write_text(WRK_SCRIPT)
    out = work / f"{prefix}.out"
    env = dict(os.environ, BENCH_BATCH=str(batch), BENCH_PREFIX=prefix, BENCH_KEY=KEY, BENCH_OUT=str(out))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
           "-s", str(script), f"{url}/api/v1/events"]
    with open(work / f"{prefix}.wrk.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(work / f'{prefix}.wrk.log').read_text()[-2000:]}")
    lines = out.read_text().splitlines()
    head = json.loads(lines[0])
    load = Load(requests=head["requests"], seconds=head["duration_us"] / 1e6,
                socket_errors=head["connect"] + head["read"] + head["write"] + head["timeout"],
                p50_ms=head["p50_us"] / 1000, p99_ms=head["p99_us"] / 1000, max_ms=head["max_us"] / 1000,
                cpu_s=usage.ru_utime + usage.ru_stime)
    for line in lines[1:]:
        kind, _, rest = line.partition(" ")
        if kind == "status":
            code, n = rest.split()
            load.statuses[int(code)] = load.statuses.get(int(code), 0) + int(n)
        elif kind == "ack":
            load.acked_ids.extend(json.loads(rest)["ids"])
    return load


def run_python_client(url: str, connections: int, seconds: float, batch: int, prefix: str) -> Load:
    """The fallback load generator: asyncio, raw sockets, HTTP/1.1 keep-alive; every connection
    finishes its request in flight, so nothing is cut off at the end."""
    t0 = time.process_time()
    load = asyncio.run(_python_load(url, connections, seconds, batch, prefix))
    load.cpu_s = time.process_time() - t0
    load.in_flight_cut = False
    return load


async def _python_load(url: str, connections: int, seconds: float, batch: int, prefix: str) -> Load:
    host, _, port = url.removeprefix("http://").partition(":")
    load = Load()
    latencies: list[float] = []
    head = (f"POST /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")
    counter = 0

    def body() -> bytes:
        nonlocal counter
        parts = []
        for _ in range(batch):
            counter += 1
            data = f'{{"n":{counter},"user":"u{counter % 997}"}}'
            parts.append(f'{{"name":"{EVENT}","id":"{prefix}-{counter}","data":{data}}}')
        return (parts[0] if batch == 1 else "[" + ",".join(parts) + "]").encode()

    async def one_connection(deadline: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                payload = body()
                start = time.perf_counter()
                writer.write((head % len(payload)).encode() + payload)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                load.requests += 1
                load.statuses[status] = load.statuses.get(status, 0) + 1
                if status == 202:
                    load.acked_ids.extend(json.loads(answer)["ids"])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            load.socket_errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection(start + seconds) for _ in range(connections)))
    load.seconds = time.perf_counter() - start
    if latencies:
        load.p50_ms = base.percentile(latencies, 50) * 1000
        load.p99_ms = base.percentile(latencies, 99) * 1000
        load.max_ms = max(latencies) * 1000
    return load


# --------------------------------------------------------------------------- the database side


def stored_ids(db: base.Db, prefix: str) -> tuple[set[str], int]:
    """The ids of this phase's events in the database, and how many runs they started."""
    like = prefix.replace("_", "\\_") + "-%"
    if db.backend == "sqlite":
        path = db.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            ids = {r[0] for r in conn.execute("SELECT id FROM conveyor_events WHERE id LIKE ? ESCAPE '\\'", (like,))}
            runs = conn.execute("SELECT count(*) FROM conveyor_runs WHERE event_id LIKE ? ESCAPE '\\'",
                                (like,)).fetchone()[0]
        return ids, int(runs)
    import psycopg

    with psycopg.connect(db.url, autocommit=True) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM conveyor_events WHERE id LIKE %s", (like,))}
        runs = conn.execute("SELECT count(*) FROM conveyor_runs WHERE event_id LIKE %s", (like,)).fetchone()[0]
    return ids, int(runs)


def pg_cpu_s(db: base.Db) -> float:
    """CPU seconds so far of the server's PostgreSQL backends and PostgreSQL's own processes."""
    if db.backend != "postgres":
        return math.nan
    pids = db.progress.backend_pids() + base._postgres_aux_pids()
    return sum(base._proc_cpu_s(pid) for pid in pids)


# --------------------------------------------------------------------------- one phase


@dataclass
class Phase:
    backend: str
    name: str  # single | batch
    batch: int
    connections: int
    client: str
    seconds: float = 0.0
    requests: int = 0
    accepted: int = 0  # 202 responses
    events: int = 0  # events acknowledged by those 202s
    other_statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: int = 0
    rps: float = 0.0
    eps: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    server_cpu_pct: float = math.nan
    pg_cpu_pct: float = math.nan
    client_cpu_pct: float = math.nan
    server_peak_rss_mib: float = math.nan
    stored: int = 0  # events of this phase in the database
    runs: int = 0  # runs those events started
    lost: int = 0  # acknowledged but not in the database: must be 0
    cut_off: int = 0  # stored but never acknowledged (in flight when the load generator stopped)
    durable: bool = False
    error: str | None = None


def run_phase(backend: str, name: str, batch: int, connections: int, seconds: float, server: Server,
              db: base.Db, work: Path, client: str, profile: Path | None, profile_mode: str = "gil") -> Phase:
    prefix = f"{name}_{os.getpid()}_{int(time.time())}"
    phase = Phase(backend, name, batch, connections, client)
    spy = None
    if profile is not None:
        raw = profile / f"{backend}-{name}.raw"
        spy = subprocess.Popen([str(base._py_spy()), "record", "-p", str(server.pid), "-d", str(int(seconds)),
                                "-r", "200", *base.PROFILE_MODES[profile_mode], "--format", "raw", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0, pg0, wall0 = server.cpu_s(), pg_cpu_s(db), time.perf_counter()
    if client == "wrk":
        load = run_wrk(server.url, connections, seconds, batch, prefix, work)
    else:
        load = run_python_client(server.url, connections, seconds, batch, prefix)
    wall = time.perf_counter() - wall0
    phase.server_cpu_pct = 100 * (server.cpu_s() - cpu0) / wall
    phase.pg_cpu_pct = 100 * (pg_cpu_s(db) - pg0) / wall
    phase.client_cpu_pct = 100 * load.cpu_s / wall
    phase.server_peak_rss_mib = server.peak_rss_mib()
    if spy is not None:
        spy.wait(timeout=seconds + 60)
    phase.seconds = load.seconds
    phase.requests = load.requests
    phase.accepted = load.statuses.get(202, 0)
    phase.events = len(load.acked_ids)
    phase.other_statuses = {str(k): v for k, v in sorted(load.statuses.items()) if k != 202}
    phase.socket_errors = load.socket_errors
    phase.rps = phase.accepted / load.seconds if load.seconds else math.nan
    phase.eps = phase.events / load.seconds if load.seconds else math.nan
    phase.p50_ms, phase.p99_ms, phase.max_ms = load.p50_ms, load.p99_ms, load.max_ms
    # Requests still in flight when wrk stopped are committed a moment later: wait for the
    # count to settle before comparing (every 202 is durable the moment it is sent).
    ids, runs = stored_ids(db, prefix)
    for _ in range(50):
        time.sleep(0.1)
        again, runs = stored_ids(db, prefix)
        if len(again) == len(ids):
            break
        ids = again
    acked = set(load.acked_ids)
    phase.stored, phase.runs = len(ids), runs
    phase.lost = len(acked - ids)
    phase.cut_off = len(ids - acked)
    bound = connections * batch if load.in_flight_cut else 0
    phase.durable = phase.lost == 0 and len(acked) == phase.events and phase.cut_off <= bound and runs == len(ids)
    return phase


def run_backend(backend: str, args: argparse.Namespace, tmp: Path, client: str) -> list[Phase]:
    work = tmp / backend
    work.mkdir(parents=True, exist_ok=True)
    db = base.open_db(backend, "intake", work, args)
    server = None
    phases: list[Phase] = []
    try:
        register_function(db.url, work)
        server = Server(db.url, work / "server.log")
        print(f"… {backend}: server pid {server.pid} at {server.url}; warm-up", file=sys.stderr, flush=True)
        for name, batch, conns in (("warm1", 1, 8), ("warm100", 100, 2)):
            run_phase(backend, name, batch, conns, 1.0, server, db, work, client, None)
        profile = Path(args.profile).resolve() if args.profile else None
        if profile:
            profile.mkdir(parents=True, exist_ok=True)
        for name, batch, conns in (("single", 1, args.connections), ("batch", 100, args.batch_connections)):
            print(f"… {backend}: {name} ({batch} event(s) per request, {conns} connections, {args.seconds:g} s)",
                  file=sys.stderr, flush=True)
            phases.append(run_phase(backend, name, batch, conns, args.seconds, server, db, work, client, profile,
                                    args.profile_mode))
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server died: {server.tail()}")
    except Exception as exc:
        phases.append(Phase(backend, "error", 0, 0, client, error=f"{type(exc).__name__}: {exc}"))
    finally:
        if server is not None:
            code = server.stop()
            if code != 0:
                print(f"bench: the {backend} server exited with status {code} after SIGTERM", file=sys.stderr)
        db.close()
    return phases


# --------------------------------------------------------------------------- output


def render(info: dict[str, Any], phases: list[Phase], args: argparse.Namespace, client: str) -> None:
    f = base._fmt
    head = ["backend", "phase", "conns", "req/s", "events/s", "p50 ms", "p99 ms", "max ms", "server CPU %",
            "PG CPU %", "client CPU %", "server peak RSS MiB", "202s", "non-202", "stored", "runs", "durable",
            "target", ""]
    rows = []
    for p in phases:
        if p.error:
            rows.append([p.backend, "ERROR", "", p.error, *[""] * (len(head) - 4)])
            continue
        target = TARGET_SINGLE_RPS if p.name == "single" else TARGET_BATCH_EPS
        value = p.rps if p.name == "single" else p.eps
        others = ", ".join(f"{k} x{v}" for k, v in p.other_statuses.items())
        if p.socket_errors:
            others = (others + ", " if others else "") + f"{p.socket_errors} socket errors"
        durable = "yes" if p.durable else f"NO ({p.lost} lost)"
        if p.durable and p.cut_off:
            durable += f" (+{p.cut_off} cut off)"
        rows.append([
            p.backend, f"{p.name} x{p.batch}", str(p.connections), f(p.rps), f(p.eps), f(p.p50_ms, 1),
            f(p.p99_ms, 1), f(p.max_ms, 1), f(p.server_cpu_pct), f(p.pg_cpu_pct), f(p.client_cpu_pct),
            f(p.server_peak_rss_mib, 1), f"{p.accepted:,}", others or "0", f"{p.stored:,}", f"{p.runs:,}", durable,
            f"≥{target:,.0f} {'req' if p.name == 'single' else 'events'}/s", base._verdict(value >= target),
        ])
    mline = (f"machine: nproc={info['nproc']}  cpu={info.get('cpu')}  python={info['python']}  "
             f"sqlite={info['sqlite']}  postgresql={info.get('postgresql') or '—'}  git={info.get('git')}  "
             f"tmp={info.get('tmp_fs')}")
    cline = (f"load generator: {client}{' (1 thread)' if client == 'wrk' else ' (asyncio, in the driver)'}; "
             f"{args.seconds:g} s per phase; every event starts one run")
    from rich.console import Console
    from rich.table import Table

    con = Console(width=None if sys.stdout.isatty() else 240)
    con.print(mline, highlight=False)
    con.print(cline, highlight=False)
    t = Table(title="HTTP intake (POST /api/v1/events, keep-alive, event key)")
    for h in head:
        t.add_column(h, justify="left" if h in ("backend", "phase", "non-202", "durable", "target", "") else "right")
    for row in rows:
        style = "red" if row[-1] == "MISS" or row[1] == "ERROR" else ("green" if row[-1] == "PASS" else None)
        t.add_row(*row, style=style)
    con.print(t)


def summarize(raw: Path, top: int = 15) -> None:
    """Top frames of a py-spy raw profile of the server: self time, and self time by package."""
    if not raw.exists():
        print(f"(no profile at {raw})")
        return
    summary = base.summarize_profile(raw, top=top)
    packages: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        m = re.search(r"\(([^()]*?)(?::\d+)?\)$", stack.split(";")[-1])
        parts = (m.group(1) if m else "?").split("/")  # py-spy names files by module path: starlette/routing.py
        pkg = "/".join(parts[:2]) if parts[0] == "conveyor" and len(parts) > 2 else parts[0].removesuffix(".py")
        packages[pkg] = packages.get(pkg, 0) + int(count)
        total += int(count)
    print(f"\npy-spy of the server, {summary['samples']} samples: {raw}")
    print("self time by package / module:")
    for pkg, n in sorted(packages.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {pkg}")
    print("self time (leaf frame):")
    for name, pct in summary["self"][:top]:
        print(f"  {pct:5.1f}%  {name}")
    print("inclusive, conveyor functions:")
    for name, pct in summary["inclusive_conveyor"][:top]:
        print(f"  {pct:5.1f}%  {name}")
    for thread, rows in summary.get("per_thread", {}).items():
        print(f"thread {thread} (share of its wall time, innermost conveyor frame -> leaf):")
        for name, pct in rows:
            print(f"  {pct:5.1f}%  {name}")


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", default=None, choices=["sqlite", "postgres", "both"],
                    help="default: both when PostgreSQL answers at --pg-url, else sqlite")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="connections of the single-event phase (64)")
    ap.add_argument("--batch-connections", type=int, default=8,
                    help="connections of the 100-event batch phase (8)")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator (default: wrk when installed)")
    ap.add_argument("--pg-url", default=base.PG_URL, help=f"PostgreSQL database (default {base.PG_URL})")
    ap.add_argument("--tmpdir", help="where the SQLite files go (default: system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory and the PostgreSQL schema")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy of the server during each phase: DIR/<backend>-<phase>.raw")
    ap.add_argument("--profile-mode", choices=sorted(base.PROFILE_MODES), default="gil",
                    help="gil: Python CPU time (default); wall: every thread, idle included (where it waits)")
    args = ap.parse_args()

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
        if client == "python":
            print("bench: wrk not found (apt-get install wrk): using the built-in asyncio client", file=sys.stderr)
    elif client == "wrk" and not shutil.which("wrk"):
        base.die("wrk not found: apt-get install wrk, or --client python")
    if args.backend in (None, "both"):
        why = base.pg_reachable(args.pg_url)
        if why is not None and args.backend == "both":
            base.die(f"PostgreSQL is not reachable at {args.pg_url}: {why}")
        if why is not None:
            print(f"bench: PostgreSQL is not reachable at {args.pg_url} ({why}): SQLite only", file=sys.stderr)
        backends = ["sqlite", "postgres"] if why is None else ["sqlite"]
    else:
        backends = [args.backend]
        if args.backend == "postgres" and (why := base.pg_reachable(args.pg_url)) is not None:
            base.die(f"PostgreSQL is not reachable at {args.pg_url}: {why}")

    base.check_core()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-intake-", dir=args.tmpdir))
    info = base.machine_info(tmp)
    if "postgres" in backends:
        info["postgresql"] = base.pg_version(args.pg_url)
    phases: list[Phase] = []
    try:
        for backend in backends:
            phases += run_backend(backend, args, tmp, client)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    render(info, phases, args, client)
    if args.profile:
        for p in phases:
            if not p.error:
                summarize(Path(args.profile).resolve() / f"{p.backend}-{p.name}.raw")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "client": client,
                                               "phases": [asdict(p) for p in phases]}, indent=1))
    if any(p.error or not p.durable for p in phases):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
