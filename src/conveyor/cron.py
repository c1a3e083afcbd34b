"""Standard five-field cron expressions: minute hour day-of-month month day-of-week."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.errors import InvalidInput

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_NAMES = {3: {m: i + 1 for i, m in enumerate(_MONTHS)}, 4: {d: i for i, d in enumerate(_DAYS)}}
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


@dataclass(frozen=True, slots=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool


def parse_cron(expression: str) -> Cron:
    """Parse ``expression`` or raise :class:`InvalidInput` saying which field is wrong."""
    if not isinstance(expression, str):
        raise InvalidInput(f"a cron expression must be a string, got {type(expression).__name__}")
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise InvalidInput(
            f"malformed cron expression {expression!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    sets = [_field(i, p, expression) for i, p in enumerate(parts)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(expression, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")


def _field(index: int, text: str, expression: str) -> frozenset[int]:
    name, lo, hi = _FIELDS[index]
    values: set[int] = set()
    for item in text.split(","):
        try:
            values.update(_item(index, item.lower(), lo, hi))
        except ValueError as exc:
            raise InvalidInput(f"malformed cron expression {expression!r}: {name} field {text!r}: {exc}") from None
    return frozenset(values)


def _item(index: int, item: str, lo: int, hi: int) -> range:
    step = 1
    if "/" in item:
        item, step_text = item.split("/", 1)
        step = int(step_text)
        if step < 1:
            raise ValueError("step must be positive")
    if item == "*":
        start, end = lo, hi
    elif "-" in item:
        a, b = item.split("-", 1)
        start, end = _value(index, a, lo, hi), _value(index, b, lo, hi)
        if start > end:
            raise ValueError(f"range {item!r} runs backwards")
    else:
        start = _value(index, item, lo, hi)
        end = hi if step > 1 else start
    return range(start, end + 1, step)


def _value(index: int, text: str, lo: int, hi: int) -> int:
    names = _NAMES.get(index, {})
    value = names[text] if text in names else int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{value} is out of range {lo}-{hi}")
    return value


# ---- slots: when an expression fires, in a time zone, with daylight-saving changes ---------


def _day_matches(cron: Cron, d: date) -> bool:
    dom = d.day in cron.days
    dow = (d.isoweekday() % 7) in cron.weekdays  # 0 = Sunday
    if cron.any_day and cron.any_weekday:
        return True
    if cron.any_day:
        return dow
    if cron.any_weekday:
        return dom
    return dom or dow  # both restricted: either matches (standard cron)


def _instant(wall: datetime, tz: tzinfo) -> float:
    """The UTC instant of a local wall-clock time.

    A time that does not exist (skipped by a spring-forward change) fires at the first
    instant after the gap; a time that exists twice (fall-back) fires once, at its first
    occurrence.
    """
    first = wall.replace(tzinfo=tz, fold=0)
    ts = first.timestamp()
    if datetime.fromtimestamp(ts, tz).replace(tzinfo=None) == wall:
        return ts
    # in a gap: walk forward minute by minute from the earlier reading to the first instant
    # whose wall-clock time is past the requested one
    t = min(ts, wall.replace(tzinfo=tz, fold=1).timestamp())
    while datetime.fromtimestamp(t, tz).replace(tzinfo=None) <= wall:
        t += 60
    return t - (t % 60)


def slots_after(cron: Cron, after: float, tz: tzinfo) -> Iterator[float]:
    """Scheduled instants (Unix seconds) strictly after ``after``, in increasing order."""
    start = datetime.fromtimestamp(after, tz).replace(tzinfo=None)
    day = start.date()
    hours, minutes = sorted(cron.hours), sorted(cron.minutes)
    last = after
    for _ in range(366 * 30):  # a valid expression fires within a few years; give up after 30
        if day.month in cron.months and _day_matches(cron, day):
            for h in hours:
                for m in minutes:
                    ts = _instant(datetime(day.year, day.month, day.day, h, m), tz)
                    if ts > last:
                        last = ts
                        yield ts
        day += timedelta(days=1)


def zone(name: str | None) -> tzinfo:
    """An IANA time zone by name (``None``: UTC), or :class:`InvalidInput`."""
    if name is None or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris'") from None
