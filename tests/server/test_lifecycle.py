"""The server process: what it says on start, what it refuses to start with, and a graceful
shutdown on SIGTERM/SIGINT that finishes the requests in flight (every 202 stays durable)."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.conftest import wait_until

from .conftest import AUTH_ARGS
from .helpers import API_TOKEN, LISTENING, ROOT, clean_env, query, server_argv


def test_start_line_and_loopback_warning(server) -> None:
    text = server.stderr()
    line = next(line for line in text.splitlines() if LISTENING.search(line))
    assert line.startswith("conveyor server listening on http://127.0.0.1:"), line
    assert urlsplit(server.url).port and urlsplit(server.url).port != 0
    assert "(database " in line
    assert "no event keys or API tokens configured" in text


def test_no_warning_with_keys(auth_server) -> None:
    assert "no event keys or API tokens configured" not in auth_server.stderr()


@pytest.mark.backends("postgres")
def test_the_start_line_hides_the_database_password(conveyor_app, db_url, start_server) -> None:
    parts = urlsplit(db_url)
    userinfo, _, host = parts.netloc.rpartition("@")
    if ":" in userinfo:  # the test server's URL has a password of its own: that is the one to hide
        secret, with_password = userinfo.split(":", 1)[1], db_url
    else:  # a trusting server ignores the password it is given
        secret = "hunter2-secret"
        with_password = urlunsplit(parts._replace(netloc=f"{userinfo or 'postgres'}:{secret}@{host}"))
    server = start_server(with_password)
    assert secret not in server.stderr()
    assert "(database postgresql://" in server.stderr()
    assert secret not in httpx.get(server.url + "/healthz").text


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=str(ROOT),
                          stdin=subprocess.DEVNULL)


def test_a_public_host_without_keys_is_refused(db_url, conveyor_app) -> None:
    done = run_cli(*server_argv(db_url, "--host", "0.0.0.0"))
    assert done.returncode == 1, done
    assert "error:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not LISTENING.search(done.stderr)


def test_a_bad_database_url_is_an_error_line(tmp_path) -> None:
    done = run_cli(*server_argv("mysql://nowhere/db"))
    assert done.returncode != 0, done
    assert "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_too_short_key_is_refused(db_url, conveyor_app) -> None:
    done = run_cli(*server_argv(db_url, "--event-key", "k3y!"))
    assert done.returncode == 1, done
    assert "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "k3y!" not in done.stderr, "the key is not echoed"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_with_status_0(server, sig) -> None:
    assert server.stop(sig) == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


def test_sigterm_during_a_burst_keeps_every_accepted_event(conveyor_app, db_url, start_server) -> None:
    """Clients keep sending while the server is told to stop: each 202 answered before the
    end is durable, the process exits 0, and no request gets a 5xx."""
    server = start_server(db_url, *AUTH_ARGS, token=API_TOKEN)
    acked: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30) as http:
            for i in range(10_000):
                if stop.is_set():
                    return
                ids = [f"term-{k}-{i}-{j}" for j in range(1 + i % 3)]
                try:
                    resp = http.post("/api/v1/events", json=[{"name": "user.signup", "id": e} for e in ids])
                except httpx.TransportError:
                    return  # the server closed its listening socket: this client is done
                with lock:
                    if resp.status_code == 202:
                        acked.extend(resp.json()["ids"])
                    elif resp.status_code >= 500 and resp.status_code != 503:
                        problems.append(f"{resp.status_code} {resp.text[:300]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 200, timeout=60, message=lambda: f"200 acks (have {len(acked)})")
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not problems, problems[:5]
    with lock:
        accepted = set(acked)
    stored = {r[0] for r in query(db_url, "SELECT id FROM conveyor_events")}
    assert accepted <= stored, f"{len(accepted - stored)} acknowledged events were lost"
    runs = query(db_url, "SELECT event_id, function_id FROM conveyor_runs")
    assert len(runs) == len(stored) and {e for e, _ in runs} == stored
    assert code == 0, server.stderr()


def test_healthz_reads_the_database(server, db_url) -> None:
    """/healthz is 200 while the database can be read, and 503 in the error shape once it cannot
    (the SQLite file deleted under the server; the PostgreSQL schema dropped)."""
    resp = httpx.get(server.url + "/healthz")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    resp = httpx.get(server.url + "/healthz")
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "database_unavailable" and resp.headers["retry-after"]
