"""Cron schedules with an injected clock: each slot fires once, across schedulers, jumps and DST.

``CronTicker(app._engine(), clock=...)`` advances every schedule of the app to the
fake "now"; ``tick()`` returns the ``(function_id, slot)`` pairs this call fired.
A schedule's first tick only sets its starting point (nothing before it is "missed").
Every test runs on every backend.

Daylight-saving behaviour asserted (documented in ``conveyor.cron``):

* a slot whose wall-clock time does not exist that day (spring forward) fires once,
  at the first instant after the gap (Europe/Paris 2026-03-29 02:30 -> 03:00 CEST,
  01:00 UTC);
* a slot whose wall-clock time exists twice (fall back) fires once, at its first
  occurrence (Europe/Paris 2026-10-25 02:30 CEST, 00:30 UTC; not 02:30 CET).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import ConfigError, InvalidInput
from conveyor.scheduler.ticker import CronTicker


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _as_ts(slot) -> float:
    return slot.timestamp() if isinstance(slot, datetime) else float(slot)


def fired(ticker: CronTicker) -> list[tuple[str, float]]:
    return [(fid, _as_ts(slot)) for fid, slot in ticker.tick()]


def tick_at(ticker: CronTicker, clock: FakeClock, ts: float) -> list[tuple[str, float]]:
    clock.now = ts
    return fired(ticker)


def sweep(ticker: CronTicker, clock: FakeClock, start: float, end: float, step: float) -> list[tuple[float, float]]:
    """Tick every ``step`` seconds from ``start`` to ``end``; ``(tick time, slot)`` of every fire."""
    out = []
    t = start
    while t <= end:
        out.extend((t, slot) for _, slot in tick_at(ticker, clock, t))
        t += step
    return out


def _schedule(app, function_id: str):
    (found,) = [s for s in app.schedules() if s.function_id == function_id]
    return found


def _cron_runs(app, function_id: str) -> list:
    return app.list_runs(function=function_id, limit=10_000)


# ---- successive slots ---------------------------------------------------------------------------


def test_each_slot_fires_once_at_successive_ticks(app, tally) -> None:
    @app.function(cron="*/15 * * * *")
    def every_quarter(ctx):
        tally.hit("run", (ctx.event.name, dict(ctx.event.data)))
        return ctx.event.data["scheduled_at"]

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == [], "a new schedule's first tick starts it; nothing before it fires"
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 10)) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 14, 59)) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 15)) == [("every-quarter", utc(2026, 1, 5, 10, 15))]
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 15)) == [], "the same instant fires nothing twice"
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 15, 30)) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 29, 59)) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 30, 0, 500_000)) == [("every-quarter", utc(2026, 1, 5, 10, 30))]
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 46)) == [("every-quarter", utc(2026, 1, 5, 10, 45))]
    assert tick_at(ticker, clock, utc(2026, 1, 5, 11, 0)) == [("every-quarter", utc(2026, 1, 5, 11, 0))]
    assert tick_at(ticker, clock, utc(2026, 1, 5, 11, 1)) == []

    slots = [utc(2026, 1, 5, 10, 15), utc(2026, 1, 5, 10, 30), utc(2026, 1, 5, 10, 45), utc(2026, 1, 5, 11, 0)]
    assert len(_cron_runs(app, "every-quarter")) == len(slots)
    app.drain(timeout=20)
    seen = tally.values("run")
    assert sorted(data["scheduled_at"] for _, data in seen) == [iso(s) for s in slots]
    for name, data in seen:
        assert name == "conveyor/cron"
        assert data["function_id"] == "every-quarter"
        assert datetime.fromisoformat(data["scheduled_at"]).utcoffset() == timedelta(0)
    assert {r.status for r in _cron_runs(app, "every-quarter")} == {"completed"}

    schedule = _schedule(app, "every-quarter")
    assert schedule.cron == "*/15 * * * *"
    assert schedule.timezone == "UTC"
    assert schedule.last_slot == datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    assert schedule.missed == 0
    assert schedule.next_slot is not None and schedule.next_slot > schedule.last_slot


# ---- several schedulers ----------------------------------------------------------------------


def test_two_tickers_ticking_the_same_instant_fire_once(make_app) -> None:
    apps = [make_app(), make_app()]
    for app in apps:

        @app.function(cron="*/15 * * * *")
        def shared_schedule(ctx):
            return ctx.event.data["scheduled_at"]

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    tickers = [CronTicker(app._engine(), clock=clock) for app in apps]
    assert [fired(t) for t in tickers] == [[], []]

    clock.now = utc(2026, 1, 5, 10, 15)
    first, second = fired(tickers[0]), fired(tickers[1])
    assert first + second == [("shared-schedule", utc(2026, 1, 5, 10, 15))], (first, second)
    assert fired(tickers[0]) + fired(tickers[1]) == []
    assert len(_cron_runs(apps[0], "shared-schedule")) == 1


def test_concurrent_tickers_fire_each_slot_once(make_app) -> None:
    n_schedulers = 4
    apps = [make_app() for _ in range(n_schedulers)]
    for app in apps:

        @app.function(cron="*/15 * * * *")
        def raced_schedule(ctx):
            return 1

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    tickers = [CronTicker(app._engine(), clock=clock) for app in apps]
    for t in tickers:
        assert fired(t) == []

    slots = [utc(2026, 1, 5, 10, 15) + 900 * k for k in range(6)]
    for slot in slots:
        clock.now = slot + 1
        barrier = threading.Barrier(n_schedulers, timeout=10)
        results: list[list[tuple[str, float]]] = [[] for _ in tickers]
        errors: list[BaseException] = []

        def run(i: int, barrier=barrier, results=results, errors=errors) -> None:
            try:
                barrier.wait()
                results[i] = fired(tickers[i])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n_schedulers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
        assert errors == []
        assert [f for r in results for f in r] == [("raced-schedule", slot)], f"slot {iso(slot)}: {results}"

    runs = _cron_runs(apps[0], "raced-schedule")
    assert len(runs) == len(slots)
    assert _schedule(apps[0], "raced-schedule").missed == 0


# ---- clock jumps --------------------------------------------------------------------------------


def test_backward_clock_jump_repeats_nothing(app) -> None:
    @app.function(cron="*/15 * * * *")
    def jumpy(ctx):
        return 1

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 15)) == [("jumpy", utc(2026, 1, 5, 10, 15))]
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 31)) == [("jumpy", utc(2026, 1, 5, 10, 30))]
    # the clock goes back 25 minutes, then forward again over the same slots
    for t in (utc(2026, 1, 5, 10, 6), utc(2026, 1, 5, 10, 15), utc(2026, 1, 5, 10, 16), utc(2026, 1, 5, 10, 30),
              utc(2026, 1, 5, 10, 31), utc(2026, 1, 5, 9, 0), utc(2026, 1, 5, 10, 44)):
        assert tick_at(ticker, clock, t) == [], f"a slot fired again after the clock went back to {iso(t)}"
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 45)) == [("jumpy", utc(2026, 1, 5, 10, 45))]
    assert len(_cron_runs(app, "jumpy")) == 3
    schedule = _schedule(app, "jumpy")
    assert schedule.last_slot == datetime(2026, 1, 5, 10, 45, tzinfo=UTC)
    assert schedule.missed == 0


def test_forward_jump_fires_only_the_latest_slot_and_records_the_rest_as_missed(app, tally) -> None:
    @app.function(cron="*/15 * * * *")
    def leapt(ctx):
        tally.hit("run", ctx.event.data["scheduled_at"])

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 15)) == [("leapt", utc(2026, 1, 5, 10, 15))]
    # everything was down for ~3 hours: 10:30 ... 13:00 are due (11 slots); 13:00 is 7 min old
    assert tick_at(ticker, clock, utc(2026, 1, 5, 13, 7)) == [("leapt", utc(2026, 1, 5, 13, 0))]
    schedule = _schedule(app, "leapt")
    assert schedule.missed == 10, schedule
    assert schedule.last_slot == datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    assert tick_at(ticker, clock, utc(2026, 1, 5, 13, 8)) == []
    assert tick_at(ticker, clock, utc(2026, 1, 5, 13, 15)) == [("leapt", utc(2026, 1, 5, 13, 15))]
    assert _schedule(app, "leapt").missed == 10
    app.drain(timeout=20)
    assert sorted(tally.values("run")) == [iso(utc(2026, 1, 5, h, m)) for h, m in ((10, 15), (13, 0), (13, 15))]


def test_forward_jump_past_the_catch_up_window_fires_nothing_missed(app) -> None:
    @app.function(cron="0 3 * * *")
    def nightly(ctx):
        return 1

    clock = FakeClock(utc(2026, 1, 5, 2, 0))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == []
    # down from 01-05 02:00 to 01-07 05:00: 3 slots due, the latest 2 h old (> 1 h catch-up)
    assert tick_at(ticker, clock, utc(2026, 1, 7, 5, 0)) == []
    schedule = _schedule(app, "nightly")
    assert schedule.missed == 3, schedule
    assert tick_at(ticker, clock, utc(2026, 1, 7, 6, 0)) == [], "a missed slot fires later"
    assert _cron_runs(app, "nightly") == []
    assert tick_at(ticker, clock, utc(2026, 1, 8, 3, 0, 1)) == [("nightly", utc(2026, 1, 8, 3, 0))]
    assert _schedule(app, "nightly").missed == 3


def _check_five_minute_window(app, ticker: CronTicker, clock: FakeClock) -> None:
    assert fired(ticker) == []
    # 10:15, 10:30, 10:45 due; the latest is 7 min old: beyond a 5-minute window
    assert tick_at(ticker, clock, utc(2026, 1, 5, 10, 52)) == []
    assert _schedule(app, "tight").missed == 3
    # within the window: 11:00 is 4 min old
    assert tick_at(ticker, clock, utc(2026, 1, 5, 11, 4)) == [("tight", utc(2026, 1, 5, 11, 0))]
    assert _schedule(app, "tight").missed == 3


def test_catch_up_window_bounds_what_fires_on_recovery(make_app) -> None:
    app = make_app(cron_catchup=timedelta(minutes=5))

    @app.function(cron="*/15 * * * *")
    def tight(ctx):
        return 1

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    _check_five_minute_window(app, CronTicker(app._engine(), clock=clock, catchup=app.cron_catchup), clock)


def test_app_cron_catchup_is_the_tickers_window(make_app) -> None:
    """``Conveyor(cron_catchup=...)`` governs a ticker built as SURFACE4 documents it,
    ``CronTicker(app._engine(), clock=...)``, not only the worker's."""
    app = make_app(cron_catchup=timedelta(minutes=5))

    @app.function(cron="*/15 * * * *")
    def tight(ctx):
        return 1

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    _check_five_minute_window(app, CronTicker(app._engine(), clock=clock), clock)


def test_restarted_scheduler_catches_up_once(make_app) -> None:
    """All schedulers down, a new one (a fresh process) starts: it fires the latest slot once."""
    first = make_app()

    @first.function(cron="*/15 * * * *")
    def resumed(ctx):
        return 1

    clock = FakeClock(utc(2026, 1, 5, 10, 5))
    assert fired(CronTicker(first._engine(), clock=clock)) == []
    first.close()

    second = make_app()

    @second.function(cron="*/15 * * * *")
    def resumed(ctx):  # noqa: F811  (the same function in the restarted process)
        return 1

    clock.now = utc(2026, 1, 5, 11, 20)
    tickers = [CronTicker(second._engine(), clock=clock) for _ in range(3)]
    assert [fired(t) for t in tickers] == [[("resumed", utc(2026, 1, 5, 11, 15))], [], []]
    assert _schedule(second, "resumed").missed == 4  # 10:15, 10:30, 10:45, 11:00
    assert len(_cron_runs(second, "resumed")) == 1


# ---- daylight saving time -----------------------------------------------------------------------


def test_paris_spring_forward_slot_in_the_gap_fires_once_after_the_gap(app, tally) -> None:
    @app.function(cron="30 2 * * *", timezone="Europe/Paris")
    def paris_spring(ctx):
        tally.hit("run", ctx.event.data["scheduled_at"])

    clock = FakeClock(utc(2026, 3, 27, 23, 0))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == []
    fires = sweep(ticker, clock, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0), step=15 * 60)
    expected = [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET (UTC+1)
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 02:00 CET -> 03:00 CEST; fires at 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST (UTC+2)
    ]
    assert [slot for _, slot in fires] == expected, [iso(s) for _, s in fires]
    assert [tick for tick, _ in fires] == expected, "each slot fires at the first tick at or after it"
    schedule = _schedule(app, "paris-spring")
    assert schedule.timezone == "Europe/Paris"
    assert schedule.missed == 0
    app.drain(timeout=20)
    assert sorted(tally.values("run")) == [iso(s) for s in expected]


def test_paris_fall_back_ambiguous_slot_fires_once_at_its_first_occurrence(app) -> None:
    @app.function(cron="30 2 * * *", timezone="Europe/Paris")
    def paris_autumn(ctx):
        return 1

    clock = FakeClock(utc(2026, 10, 23, 23, 0))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == []
    fires = sweep(ticker, clock, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0), step=15 * 60)
    expected = [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first of two 02:30s; not 01:30 UTC (02:30 CET)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    assert [slot for _, slot in fires] == expected, [iso(s) for _, s in fires]
    assert len(_cron_runs(app, "paris-autumn")) == 3
    assert _schedule(app, "paris-autumn").missed == 0


def test_new_york_three_am_fires_once_a_day_across_both_changes(app) -> None:
    @app.function(cron="0 3 * * *", timezone="America/New_York")
    def new_york(ctx):
        return 1

    clock = FakeClock(utc(2026, 3, 6, 12, 0))
    ticker = CronTicker(app._engine(), clock=clock)
    assert fired(ticker) == []
    spring = sweep(ticker, clock, utc(2026, 3, 7, 0, 0), utc(2026, 3, 10, 0, 0), step=20 * 60)
    # 2026-03-08 02:00 EST -> 03:00 EDT: 03:00 exists (the first instant after the gap)
    assert [s for _, s in spring] == [utc(2026, 3, 7, 8, 0), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 7, 0)], [
        iso(s) for _, s in spring
    ]
    # a long quiet jump (outside the catch-up window) to just before the autumn change
    assert tick_at(ticker, clock, utc(2026, 10, 30, 12, 0)) == []
    missed_before = _schedule(app, "new-york").missed
    autumn = sweep(ticker, clock, utc(2026, 10, 31, 0, 0), utc(2026, 11, 3, 0, 0), step=20 * 60)
    # 2026-11-01 02:00 EDT -> 01:00 EST: 03:00 exists once (EST)
    assert [s for _, s in autumn] == [utc(2026, 10, 31, 7, 0), utc(2026, 11, 1, 8, 0), utc(2026, 11, 2, 8, 0)], [
        iso(s) for _, s in autumn
    ]
    assert _schedule(app, "new-york").missed == missed_before
    assert missed_before == (datetime(2026, 10, 30) - datetime(2026, 3, 10)).days + 1  # 03-10 ... 10-30


# ---- bad schedules fail at decoration time ----------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["*/15 * * *", "* * * * * *", "61 * * * *", "0 24 * * *", "0 0 32 * *", "0 0 * 13 *", "0 0 * * 8",
     "*/0 * * * *", "5-1 * * * *", "a b c d e", "", "every day"],
)
def test_malformed_cron_is_rejected_at_decoration(app, expression) -> None:
    with pytest.raises((ConfigError, InvalidInput)) as info:

        @app.function(cron=expression)
        def badly_scheduled(ctx):
            return 1

    assert "cron" in str(info.value).lower()
    assert "badly-scheduled" not in app.functions


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Europe/Pariss", "not a zone", "../etc/passwd"])
def test_unknown_timezone_is_rejected_at_decoration(app, tz) -> None:
    with pytest.raises((ConfigError, InvalidInput)) as info:

        @app.function(cron="0 3 * * *", timezone=tz)
        def misplaced(ctx):
            return 1

    assert "zone" in str(info.value).lower()
    assert "misplaced" not in app.functions


def test_timezone_without_cron_is_rejected(app) -> None:
    with pytest.raises((ConfigError, InvalidInput)):

        @app.function(on="x", timezone="Europe/Paris")
        def no_schedule(ctx):
            return 1


def test_schedules_lists_every_scheduled_function(app) -> None:
    @app.function(cron="0 3 1 * *", timezone="Europe/Paris")
    def monthly(ctx):
        return 1

    @app.function(cron="*/5 * * * *")
    def often(ctx):
        return 1

    @app.function(on="not.scheduled")
    def plain(ctx):
        return 1

    clock = FakeClock(utc(2026, 1, 5, 10, 1))
    CronTicker(app._engine(), clock=clock).tick()
    listed = {s.function_id: s for s in app.schedules()}
    assert set(listed) == {"monthly", "often"}
    assert (listed["monthly"].cron, listed["monthly"].timezone) == ("0 3 1 * *", "Europe/Paris")
    assert (listed["often"].cron, listed["often"].timezone) == ("*/5 * * * *", "UTC")
    for schedule in listed.values():
        assert isinstance(schedule.missed, int) and schedule.missed == 0
        assert schedule.last_slot is None or schedule.last_slot <= datetime(2026, 1, 5, 10, 1, tzinfo=UTC)
        assert isinstance(schedule.next_slot, datetime)
