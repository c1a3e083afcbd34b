"""``Conveyor``: the application object: registers functions, sends events, inspects runs."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, overload

from conveyor.cron import parse_cron, zone
from conveyor.engine.engine import Engine
from conveyor.engine.events import make_event
from conveyor.engine.registry import FunctionDef, Registry
from conveyor.errors import ConfigError, InvalidInput
from conveyor.observability import tracing
from conveyor.observability.hooks import Hooks
from conveyor.scheduler.ticker import CronTicker, Schedule
from conveyor.sdk.function import Function, default_id
from conveyor.sdk.producer import Producer, http_producer
from conveyor.sdk.push import ServesPush
from conveyor.storage.base import FunctionSpec, RunFilter
from conveyor.storage.blobs import BlobStore
from conveyor.storage.factory import open_storage, resolve_url
from conveyor.types import Backoff, Concurrency, Event, Run, ts_from_datetime
from conveyor.worker.drain import drain as _drain
from conveyor.worker.service import Worker


class Conveyor(ServesPush):
    """An application: a set of durable functions and the database that holds their runs.

    ``database`` is a URL (``sqlite:///relative.db``, ``sqlite:////absolute.db``);
    by default ``CONVEYOR_DATABASE_URL``, else ``sqlite:///conveyor.db``. The schema
    is created and migrated on first use.

    With ``server_url`` (or ``$CONVEYOR_SERVER_URL`` when no database is named) the app
    needs no database: it sends events to ``conveyor server`` over HTTP with
    ``event_key`` (``$CONVEYOR_EVENT_KEY``), retrying for up to ``send_timeout`` seconds,
    and inspects runs through its management API with ``api_token``
    (``$CONVEYOR_API_TOKEN``). See :mod:`conveyor.sdk.producer`.

    ``app.hooks`` is the event catalog its engine emits into (``run.started``,
    ``step.retrying``, ``run.failed``, …): ``app.hooks.subscribe("run.failed", handler)``.
    See :mod:`conveyor.observability.hooks`.
    """

    def __init__(
        self,
        name: str,
        database: str | None = None,
        *,
        backoff: Backoff | None = None,
        lease_seconds: float = 30.0,
        invocation_budget: float = 60.0,
        retention: timedelta | float | None = timedelta(days=7),
        cron_catchup: timedelta | float = timedelta(hours=1),
        blob_dir: str | os.PathLike[str] = "conveyor-blobs",
        blob_threshold: int = 256 * 1024,
        server_url: str | None = None,
        event_key: str | None = None,
        api_token: str | None = None,
        send_timeout: float = 30.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("an app needs a non-empty name")
        if lease_seconds <= 0 or invocation_budget <= 0:
            raise ConfigError("lease_seconds and invocation_budget must be positive")
        self.name = name
        self._producer: Producer | None = http_producer(database, server_url, event_key, api_token, send_timeout)
        self.server_url = self._producer.server_url if self._producer else None
        self.database_url = "" if self._producer else resolve_url(database)
        self.backoff = backoff or Backoff()
        self.lease_seconds = float(lease_seconds)
        self.invocation_budget = float(invocation_budget)
        seconds = retention.total_seconds() if isinstance(retention, timedelta) else retention
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            raise ConfigError("retention must be a positive timedelta or number of seconds, or None to keep everything")
        self.retention = None if seconds is None else float(seconds)
        catchup = cron_catchup.total_seconds() if isinstance(cron_catchup, timedelta) else cron_catchup
        if not isinstance(catchup, int | float) or catchup < 0:
            raise ConfigError("cron_catchup must be a non-negative timedelta or number of seconds")
        self.cron_catchup = float(catchup)
        self.blobs = BlobStore(blob_dir, blob_threshold)
        self.functions: dict[str, Function] = {}
        self._registry = Registry()
        self.hooks = Hooks()
        self._engine_obj: Engine | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Conveyor {self.name!r} {self.server_url or self.database_url}>"

    # ---- wiring -------------------------------------------------------------------------------

    def _engine(self, what: str = "this call") -> Engine:
        engine = self._engine_obj
        if engine is None:
            if self._producer is not None:
                raise self._producer.needs_database(what)
            with self._lock:
                if self._engine_obj is None:
                    storage = open_storage(self.database_url)
                    self._engine_obj = Engine(
                        storage, self._registry, backoff=self.backoff,
                        lease=self.lease_seconds, budget=self.invocation_budget, retention=self.retention,
                        cron_catchup=self.cron_catchup, blobs=self.blobs, hooks=self.hooks,
                    )
                engine = self._engine_obj
        return engine

    def migrate(self) -> list[int]:
        """Create or upgrade the schema now (it also happens on first use)."""
        engine = self._engine("migrate()")
        applied = engine.storage.migrate()
        engine.ready()
        return applied

    def close(self) -> None:
        with self._lock:
            if self._engine_obj is not None:
                self._engine_obj.storage.close()
                self._engine_obj = None
        if self._producer is not None:
            self._producer.close()

    async def aclose(self) -> None:
        """Like :meth:`close`; over HTTP it also waits for this event loop's connections to close."""
        if self._producer is not None:
            await self._producer.aclose()
        await asyncio.to_thread(self.close)

    # ---- registration -------------------------------------------------------------------------

    @overload
    def function(self, fn: Callable[..., Any], /) -> Function: ...

    @overload
    def function(
        self,
        fn: None = None,
        *,
        id: str | None = None,
        on: str | Sequence[str] | None = None,
        retries: int = 3,
        concurrency: int | Concurrency | None = None,
        pool: str = "default",
        cron: str | None = None,
        timezone: str | None = None,
        backoff: Backoff | None = None,
    ) -> Callable[[Callable[..., Any]], Function]: ...

    def function(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        id: str | None = None,
        on: str | Sequence[str] | None = None,
        retries: int = 3,
        concurrency: int | Concurrency | None = None,
        pool: str = "default",
        cron: str | None = None,
        timezone: str | None = None,
        backoff: Backoff | None = None,
    ) -> Any:
        """Register a durable function. Use as ``@app.function(...)`` (or bare ``@app.function``).

        Returns a :class:`Function` (or a decorator that makes one).
        """
        triggers = _triggers(on)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, got {retries!r}")
        limit = _concurrency(concurrency)
        if not isinstance(pool, str) or not pool:
            raise ConfigError("pool must be a non-empty string")
        if cron is not None:
            cron, timezone = _split_tz(cron, timezone)
            parse_cron(cron)
        if timezone is not None:
            if cron is None:
                raise ConfigError("timezone= applies to a cron= schedule; this function has none")
            zone(timezone)

        def register(target: Callable[..., Any]) -> Function:
            if not callable(target):
                raise ConfigError(f"@app.function needs a function, got {target!r}")
            fid = id or default_id(target)
            if not isinstance(fid, str) or not fid or "/" in fid:
                raise ConfigError(f"bad function id {fid!r}: a non-empty string without '/'")
            if fid in self.functions and self.functions[fid].fn is not target:
                raise ConfigError(f"function id {fid!r} is registered twice in app {self.name!r}")
            func = Function(self, target, id=fid, triggers=triggers, retries=retries, concurrency=limit,
                            pool=pool, cron=cron, backoff=backoff)
            func.timezone = timezone
            self.functions[fid] = func
            self._registry.add(FunctionDef(fid, target, self._spec(func), backoff, timezone=timezone))
            return func

        return register(fn) if fn is not None else register

    def _spec(self, func: Function, *, has_on_failure: bool = False) -> FunctionSpec:
        c = func.concurrency
        return FunctionSpec(
            func.id, func.pool, func.triggers, func.retries,
            c.limit if c else None, c.key if c else None,
            f"TZ={func.timezone} {func.cron}" if func.cron and func.timezone else func.cron, has_on_failure,
        )

    def _register_failure_handler(self, func: Function, handler: Callable[..., Any]) -> None:
        if not callable(handler):
            raise ConfigError("on_failure needs a function taking (ctx, error)")
        hid = f"{func.id}/on-failure"
        self._registry.add(FunctionDef(func.id, func.fn, self._spec(func, has_on_failure=True), func.backoff,
                                       timezone=func.timezone))
        spec = FunctionSpec(hid, func.pool, (), func.retries)
        self._registry.add(FunctionDef(hid, handler, spec, func.backoff, failure_handler_of=func.id))

    # ---- sending ------------------------------------------------------------------------------

    def send(self, name: str, data: Any = None, *, id: str | None = None) -> str:
        """Store an event durably (and start its runs); returns its id once it is committed."""
        if self._producer is not None:
            return self._producer.send(name, data, id=id)
        engine = self._engine()
        return engine.send([make_event(name, data, id, tracing.current_traceparent())])[0]

    def send_many(self, events: Iterable[Event]) -> list[str]:
        """Store many events in one transaction; returns their ids in order.

        Over HTTP, one request (one transaction) carries up to 1,000 events; a larger batch
        is sent as several, in order."""
        if self._producer is not None:
            return self._producer.send_many(events)
        engine = self._engine()
        trace = tracing.current_traceparent()
        batch = []
        for ev in events:
            if not isinstance(ev, Event):
                raise InvalidInput(f"send_many takes conveyor.Event objects, got {type(ev).__name__}")
            batch.append(make_event(ev.name, ev.data, ev.id, trace))
        return engine.send(batch) if batch else []

    # ---- inspecting and operating ---------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        if self._producer is not None:
            return self._producer.get_run(run_id)
        return self._engine().get_run(run_id)

    def runs_for_event(self, event_id: str) -> list[Run]:
        """The runs an event started (over HTTP: summaries, without steps; see get_run)."""
        if self._producer is not None:
            return self._producer.runs_for_event(event_id)
        return self._engine().list_runs(RunFilter(event_id=event_id, limit=10_000))

    def list_runs(
        self, function: str | None = None, status: str | None = None, limit: int = 100, *,
        since: datetime | None = None, event_id: str | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally only those created at or after ``since`` (a naive
        datetime is UTC) or started by one event. Over HTTP: summaries, without steps; see get_run."""
        if since is not None and not isinstance(since, datetime):
            raise InvalidInput(f"since must be a datetime, got {type(since).__name__}")
        if self._producer is not None:
            return self._producer.list_runs(function, status, limit, since=since, event_id=event_id)
        after = None if since is None else ts_from_datetime(since)
        return self._engine().list_runs(
            RunFilter(function=function, status=status, limit=limit, since=after, event_id=event_id))

    def run_logs(self, run_id: str) -> list[dict[str, Any]]:
        """The records a run wrote through ``ctx.log``, oldest first."""
        if self._producer is not None:
            return self._producer.run_logs(run_id)
        return self._engine().logs(run_id)

    def cancel_run(self, run_id: str) -> None:
        """Cancel a run that has not ended; a waiting run never resumes."""
        if self._producer is not None:
            self._producer.cancel_run(run_id)
            return
        self._engine().cancel(run_id)

    def replay_run(self, run_id: str) -> None:
        """Re-run a failed or cancelled run from the step where it stopped, keeping its memoized
        steps (same run id); any other run is an ``InvalidState``, as over HTTP."""
        if self._producer is not None:
            self._producer.replay_run(run_id)
            return
        self._engine().replay(run_id)

    def dead_letters(self, limit: int = 100) -> list[Run]:
        """Runs that failed for good, newest first (over HTTP: summaries, without steps)."""
        if self._producer is not None:
            return self._producer.dead_letters(limit)
        return self._engine().dead_letters(limit)

    def redrive(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """Re-run failed runs (all, or these) from their failed step; returns the ids redriven."""
        if self._producer is not None:
            return self._producer.redrive(run_ids)
        return self._engine().redrive(run_ids)

    def purge_dead_letters(self, run_ids: Sequence[str] | None = None) -> int:
        """Delete dead letters for good (all, or these failed runs); returns how many."""
        return self._engine("purge_dead_letters()").purge(run_ids)

    def schedules(self) -> list[Schedule]:
        """The cron schedules in this database: last and next slot, and how many slots were missed."""
        return CronTicker(self._engine("schedules()"), catchup=self.cron_catchup).schedules()

    def prune(self) -> int:
        """Delete ended runs older than ``retention`` now (workers also do it every few minutes)."""
        return self._engine("prune()").prune()

    # ---- running ------------------------------------------------------------------------------

    def worker(self, pools: Sequence[str] | None = None, concurrency: int = 32) -> Worker:
        """A worker serving ``pools`` (default: every pool of this app's functions)."""
        return Worker(self._engine("worker()"), pools=pools, concurrency=concurrency)

    def drain(self, timeout: float = 30.0) -> int:
        """Run every job that is due in this thread until none is left (also waiting for retries
        and sleeps that fall due within ``timeout``); returns how many invocations ran."""
        return _drain(self._engine("drain()"), timeout)


def _split_tz(cron: str, timezone: str | None) -> tuple[str, str | None]:
    """Accept ``"TZ=Europe/Paris 0 3 * * *"`` (or ``CRON_TZ=``) as well as ``timezone=``."""
    if not isinstance(cron, str):
        raise ConfigError(f"cron= takes a cron expression string, got {type(cron).__name__}")
    head, _, rest = cron.strip().partition(" ")
    for prefix in ("TZ=", "CRON_TZ="):
        if head.upper().startswith(prefix):
            if timezone is not None:
                raise ConfigError("give the time zone once: in the cron expression or as timezone=")
            return rest.strip(), head[len(prefix):]
    return cron, timezone


def _triggers(on: str | Sequence[str] | None) -> tuple[str, ...]:
    if on is None:
        return ()
    names = [on] if isinstance(on, str) else list(on)
    for n in names:
        if not isinstance(n, str) or not n:
            raise ConfigError(f"on= takes event names (non-empty strings), got {n!r}")
    return tuple(dict.fromkeys(names))


def _concurrency(value: int | Concurrency | None) -> Concurrency | None:
    if value is None or isinstance(value, Concurrency):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return Concurrency(limit=value)
    raise ConfigError(f"concurrency must be a positive integer or conveyor.Concurrency, got {value!r}")


def _async_twin(name: str) -> Any:
    sync = getattr(Conveyor, name)

    @functools.wraps(sync)
    async def twin(self: Conveyor, *args: Any, **kwargs: Any) -> Any:
        if self._producer is not None and name in HTTP_CALLS:  # on the event loop's pooled client
            return await getattr(self._producer, "a" + name)(*args, **kwargs)
        return await asyncio.to_thread(sync, self, *args, **kwargs)

    twin.__name__ = twin.__qualname__ = "a" + name
    twin.__doc__ = f"Async twin of :meth:`Conveyor.{name}`."
    twin.__signature__ = inspect.signature(sync)  # type: ignore[attr-defined]
    return twin


HTTP_CALLS = frozenset(("send", "send_many", "get_run", "runs_for_event", "list_runs", "run_logs",
                        "cancel_run", "replay_run", "dead_letters", "redrive"))
ASYNC_TWINS = ("send", "send_many", "get_run", "runs_for_event", "list_runs", "run_logs",
               "cancel_run", "replay_run", "dead_letters", "redrive", "purge_dead_letters", "prune", "schedules",
               "drain")
for _name in ASYNC_TWINS:
    setattr(Conveyor, "a" + _name, _async_twin(_name))
