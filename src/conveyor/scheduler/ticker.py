"""The cron ticker: fires each scheduled slot once, across any number of schedulers.

Every worker (and ``conveyor dev``) runs one. A tick advances each scheduled function
under its schedule row's lock: the slots due since the last one fired are computed; the
most recent fires if it is within the catch-up window (so a scheduler that was down
for a while fires once on recovery, not once per missed slot) and the others are
recorded as missed. The fired run's event id is the slot itself, so even two ticks
that raced past the lock could not start it twice. A clock that jumps back repeats
nothing: slots at or before the last one are never due again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.cron import parse_cron, slots_after, zone
from conveyor.engine.engine import Engine

log = logging.getLogger(__name__)
MAX_SLOTS_SCANNED = 100_000  # per tick and function; beyond it the rest count as missed in bulk


@dataclass(frozen=True, slots=True)
class Schedule:
    function_id: str
    cron: str
    timezone: str
    last_slot: datetime | None
    next_slot: datetime | None
    missed: int


class CronTicker:
    def __init__(
        self, engine: Engine, *, clock: Callable[[], float] | None = None, catchup: float | None = None,
        from_database: bool = False,
    ) -> None:
        self.engine = engine
        self.clock = clock or engine.storage.now
        self.catchup = engine.cron_catchup if catchup is None else catchup
        self.from_database = from_database  # every scheduled function of the database, not only this app's

    def _scheduled(self) -> list[tuple[str, str, str]]:
        if self.from_database:
            specs = [row.spec for row in self.engine.storage.functions_list()]
        else:
            specs = [d.spec for d in self.engine.registry.functions.values()]
        out = []
        for spec in specs:
            if spec.cron:
                head, _, rest = spec.cron.partition(" ")
                if head.startswith("TZ="):  # how a function's time zone is stored with its cron
                    out.append((spec.id, rest, head[3:]))
                else:
                    out.append((spec.id, spec.cron, "UTC"))
        return out

    def tick(self) -> list[tuple[str, float]]:
        """Advance every schedule to now; returns ``(function_id, slot)`` of the runs this call fired."""
        self.engine.ready()
        fired = []
        now = self.clock()
        for function_id, expression, tz_name in self._scheduled():
            cron, tz = parse_cron(expression), zone(tz_name)

            def plan(last: float, now: float, cron=cron, tz=tz) -> tuple[float | None, int, float]:  # type: ignore[no-untyped-def]
                if now <= last:
                    return None, 0, last  # nothing due (or the clock went back)
                due = 0
                latest = None
                for slot in slots_after(cron, last, tz):
                    if slot > now:
                        break
                    due += 1
                    latest = slot
                    if due >= MAX_SLOTS_SCANNED:
                        break
                if latest is None:
                    return None, 0, last
                if now - latest <= self.catchup:
                    return latest, due - 1, latest
                return None, due, latest

            slot = self.engine.storage.schedule_advance(function_id, expression, tz_name, now, plan)
            if slot is not None:
                fired.append((function_id, slot))
                log.info("cron: started %s for %s", function_id, datetime.fromtimestamp(slot, UTC).isoformat())
        if fired:
            self.engine.storage.notify()
        return fired

    def next_due(self) -> float | None:
        """The next slot of any schedule (from now), to sleep until."""
        now = self.clock()
        times = []
        for _, expression, tz_name in self._scheduled():
            times.append(next(slots_after(parse_cron(expression), now, zone(tz_name)), None))
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def schedules(self) -> list[Schedule]:
        self.engine.ready()
        now = self.clock()
        out = []
        for function_id, expression, tz_name, last, missed in self.engine.storage.schedules_list():
            try:
                cron, tz = parse_cron(expression), zone(tz_name)
                nxt = next(slots_after(cron, max(now, last or now), tz), None)
                # a schedule starts from the moment it was first seen, which is not itself a slot
                if last is not None and next(slots_after(cron, last - 1, tz), None) != last:
                    last = None
            except Exception:
                nxt = None
            out.append(Schedule(
                function_id, expression, tz_name,
                None if last is None else datetime.fromtimestamp(last, UTC),
                None if nxt is None else datetime.fromtimestamp(nxt, UTC), missed,
            ))
        return out

    def run(self, stop: threading.Event, max_sleep: float = 30.0) -> None:
        """Tick until ``stop`` is set: at each due slot, and at least every ``max_sleep`` seconds."""
        while not stop.is_set():
            try:
                if self._scheduled():
                    self.tick()
                nxt = self.next_due()
            except Exception:
                log.warning("cron tick failed; retrying", exc_info=True)
                nxt = None
            wait = max_sleep if nxt is None else min(max_sleep, max(0.05, nxt - self.clock() + 0.01))
            stop.wait(wait)
