"""Real ``conveyor dev`` / ``conveyor worker`` processes for the observability tests, and a
Prometheus scrape parsed with prometheus-client's own text parser.

Processes are started with the real CLI and found ready by the lines they print on
stderr (``listening on http://…``, ``metrics on http://…``); every wait polls a
condition until a deadline.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import wait_until
from tests.server.helpers import Server, clean_env, start_server

APP = f"{Path(__file__).resolve().parent / 'apps' / 'obs_app.py'}:app"


@dataclass
class Proc:
    """One CLI process; its stderr goes to a file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of ``pattern`` on stderr, once it is there (failing at once if the
        process exits first)."""

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} before {pattern!r}:\n{self.stderr()[-4000:]}")
            return re.search(pattern, self.stderr())

        match: re.Match[str] = wait_until(found, timeout, lambda: f"{pattern!r} on stderr:\n{self.stderr()[-4000:]}")
        return match

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, and the exit status (SIGKILL at the bound, then fail)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"no exit within {timeout}s of SIGTERM:\n{self.stderr()[-4000:]}") from None
        return self.proc.returncode


def spawn(workdir: Path, *args: str, **env: str) -> Proc:
    """``python -m conveyor.cli.main ARGS`` in ``workdir``, configured by its arguments only."""
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("proc-*.err")))
    log = workdir / f"proc-{n}.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "conveyor.cli.main", *args], stdout=subprocess.DEVNULL,
                                stderr=err, stdin=subprocess.DEVNULL, env=clean_env(**env), cwd=str(workdir))
    return Proc(proc, log)


def start_dev(workdir: Path, db_url: str, *args: str, **env: str) -> tuple[Server, str]:
    """``conveyor dev`` of the test app on ``db_url``; the process and its URL once it answers."""
    argv = [sys.executable, "-m", "conveyor.cli.main", "dev", APP, "--database", db_url, "--port", "0", *args]
    server = start_server(db_url, workdir, argv=argv, env=clean_env(**env))
    return server, server.url


class Scrape:
    """A ``/metrics`` answer, parsed by prometheus-client's text parser: samples by name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in self.families.values():
            for s in family.samples:
                self.samples[s.name].append((dict(s.labels), s.value))

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` with exactly these labels, or None if there is none."""
        found = [v for lbl, v in self.samples.get(name, []) if lbl == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        """``{label value: sample value}`` of ``name``, summed over its other labels (matching ``where``)."""
        out: dict[str, float] = defaultdict(float)
        for lbl, v in self.samples.get(name, []):
            if all(lbl.get(k) == w for k, w in where.items()):
                out[lbl[label]] += v
        return dict(out)


def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(url, headers=headers, timeout=30)
    assert resp.status_code == 200, f"{url} -> {resp.status_code} {resp.text[:500]}"
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4"), resp.headers
    return Scrape(resp.text)
