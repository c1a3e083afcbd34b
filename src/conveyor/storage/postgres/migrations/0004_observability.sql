-- Version 4: observability. Events carry the W3C trace context of the code that sent them,
-- so a run's spans join the sender's trace; live workers and dispatchers register
-- themselves, so the dashboard and /metrics can tell who serves each pool.

ALTER TABLE conveyor_events ADD COLUMN trace TEXT;

CREATE TABLE conveyor_workers (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,          -- worker | dispatcher
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    pools       TEXT NOT NULL,          -- JSON list of pool names
    concurrency INTEGER NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL
);
