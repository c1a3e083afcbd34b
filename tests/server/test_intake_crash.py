"""SIGKILL the server in the middle of an intake burst, restart it, let the clients retry.

Four client threads send a stream of events with ids of their own choosing (single
events and small batches) to ``burst.item``, which two functions listen to. When a
few hundred events have been acknowledged the server is killed with SIGKILL and a
new one is started on the same database (on a new port); the clients resend every
request that got no 202, with the same ids, until it does. Then: every acknowledged
id is an event with exactly one run of each function, nothing is duplicated, and no
event or run exists for an id never sent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from tests.conftest import wait_until

from .helpers import describe, query

THREADS = 4
REQUESTS_PER_THREAD = 200
KILL_AFTER = 400  # acknowledged events
FUNCTIONS = ("burst-a", "burst-b")


class Target:
    """The URL of the server of the moment (swapped when it is restarted)."""

    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        self._url = url

    @property
    def url(self) -> str:
        with self._lock:
            return self._url

    @url.setter
    def url(self, value: str) -> None:
        with self._lock:
            self._url = value


def plan(k: int) -> list[list[str]]:
    """Thread ``k``'s requests: the ids of each (one event, or a batch of 2 to 4)."""
    out = []
    for i in range(REQUESTS_PER_THREAD):
        size = 1 if i % 2 == 0 else 2 + i % 3
        out.append([f"c{k}-r{i}-e{j}" for j in range(size)])
    return out


@pytest.mark.slow
def test_sigkill_mid_burst_loses_and_duplicates_nothing(conveyor_app, db_url, start_server) -> None:
    server = start_server(db_url)
    target = Target(server.url)
    plans = [plan(k) for k in range(THREADS)]
    sent = {i for p in plans for ids in p for i in ids}
    acked: list[str] = []
    failures = Counter()  # how requests failed before their 202, by kind
    problems: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=15) as http:
            for ids in plans[k]:
                events = [{"name": "burst.item", "id": i, "data": {"client": k}} for i in ids]
                body = events[0] if len(events) == 1 else events
                deadline = time.monotonic() + 90
                while True:
                    try:
                        resp = http.post(target.url + "/api/v1/events", json=body)
                    except httpx.TransportError as exc:
                        with lock:
                            failures[type(exc).__name__] += 1
                    else:
                        if resp.status_code == 202:
                            with lock:
                                if resp.json() != {"ids": ids}:
                                    problems.append(f"wrong ids: {describe(resp)} for {ids}")
                                acked.extend(ids)
                            break
                        with lock:
                            failures[str(resp.status_code)] += 1
                            if resp.status_code not in (429, 503):
                                problems.append(describe(resp))
                    if time.monotonic() > deadline:
                        with lock:
                            problems.append(f"client {k} gave up on {ids}")
                        return
                    time.sleep(0.01)  # retry interval while the server is away (bounded by the deadline)

    threads = [threading.Thread(target=client, args=(k,), name=f"client-{k}") for k in range(THREADS)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= KILL_AFTER, timeout=60,
                   message=lambda: f"{KILL_AFTER} acknowledged events (have {len(acked)}); {server.stderr()}")
        server.kill()
        with lock:
            acked_before_kill = len(acked)
        restarted = start_server(db_url)
        target.url = restarted.url
    finally:
        for t in threads:
            t.join(120)
    assert not any(t.is_alive() for t in threads), "clients still running"
    assert not problems, problems[:10]
    assert acked_before_kill < len(sent), "the kill came after the burst: nothing was in flight"

    # Every request was eventually acknowledged, each id once per request.
    assert Counter(acked) == Counter(sent), "some ids were never acknowledged, or acknowledged twice"

    events = query(db_url, "SELECT id, name FROM conveyor_events")
    assert Counter(i for i, _ in events) == Counter(sent), "events lost or invented"
    assert {n for _, n in events} == {"burst.item"}

    app = conveyor_app.app
    runs = [r for f in FUNCTIONS for r in app.list_runs(function=f, limit=100_000)]
    per_event = Counter(r.event_id for r in runs)
    assert set(per_event) == sent, "a run for an id never sent, or an event without runs"
    assert set(per_event.values()) == {2}, {e: n for e, n in per_event.items() if n != 2}
    assert Counter((r.event_id, r.function_id) for r in runs).most_common(1)[0][1] == 1, "duplicated runs"
    assert len(query(db_url, "SELECT id FROM conveyor_runs")) == 2 * len(sent)
    for event_id in sorted(sent)[:: max(1, len(sent) // 25)]:
        assert sorted(r.function_id for r in app.runs_for_event(event_id)) == list(FUNCTIONS)
    print(f"acked {acked_before_kill} before the kill; request failures before a 202: {dict(failures)}")
