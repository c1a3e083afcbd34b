-- Conveyor schema for PostgreSQL, version 1. Times are Unix seconds from the
-- database clock (double precision). Payloads are JSON text.

CREATE TABLE conveyor_functions (
    id                TEXT PRIMARY KEY,
    pool              TEXT NOT NULL,
    retries           INTEGER NOT NULL,
    concurrency_limit INTEGER,
    concurrency_key   TEXT,
    cron              TEXT,
    has_on_failure    INTEGER NOT NULL DEFAULT 0,
    updated_at        DOUBLE PRECISION NOT NULL
);

CREATE TABLE conveyor_triggers (
    event_name  TEXT NOT NULL,
    function_id TEXT NOT NULL,
    PRIMARY KEY (event_name, function_id)
);

CREATE TABLE conveyor_events (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    ts   DOUBLE PRECISION NOT NULL
);
CREATE INDEX conveyor_events_ts ON conveyor_events (ts);

CREATE TABLE conveyor_runs (
    id          TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    status      TEXT NOT NULL,
    pool        TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    parent_id   TEXT,
    parent_step TEXT,
    child_index INTEGER,
    failure_of  TEXT,
    failures    INTEGER NOT NULL DEFAULT 0,
    created_at  DOUBLE PRECISION NOT NULL,
    started_at  DOUBLE PRECISION,
    ended_at    DOUBLE PRECISION,
    UNIQUE (event_id, function_id)
);
CREATE INDEX conveyor_runs_function ON conveyor_runs (function_id, id);
CREATE INDEX conveyor_runs_status ON conveyor_runs (status, id);
CREATE INDEX conveyor_runs_parent ON conveyor_runs (parent_id, parent_step, child_index) WHERE parent_id IS NOT NULL;

CREATE TABLE conveyor_steps (
    run_id          TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    output          TEXT,
    error           TEXT,
    wake_at         DOUBLE PRECISION,
    started_at      DOUBLE PRECISION,
    ended_at        DOUBLE PRECISION,
    children_total  INTEGER,
    children_ended  INTEGER NOT NULL DEFAULT 0,
    children_failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_id)
);

-- One job per unfinished run. A leased job has lease_expires set and run_at =
-- lease_expires, so an expired lease is simply due again (rescue).
CREATE TABLE conveyor_jobs (
    run_id        TEXT PRIMARY KEY,
    pool          TEXT NOT NULL,
    function_id   TEXT NOT NULL,
    run_at        DOUBLE PRECISION NOT NULL,
    token         BIGINT NOT NULL DEFAULT 0,
    lease_expires DOUBLE PRECISION,
    worker        TEXT,
    cgroup        TEXT,
    climit        INTEGER
) WITH (fillfactor = 70);
CREATE INDEX conveyor_jobs_due ON conveyor_jobs (pool, run_at);
CREATE INDEX conveyor_jobs_cgroup ON conveyor_jobs (cgroup, lease_expires) WHERE cgroup IS NOT NULL;

CREATE TABLE conveyor_waits (
    run_id           TEXT NOT NULL,
    step_id          TEXT NOT NULL,
    event_name       TEXT NOT NULL,
    match_path       TEXT,
    match_value      TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    expires_at       DOUBLE PRECISION,
    matched_event_id TEXT,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX conveyor_waits_event ON conveyor_waits (event_name);

CREATE TABLE conveyor_logs (
    id      BIGSERIAL PRIMARY KEY,
    run_id  TEXT NOT NULL,
    step_id TEXT,
    attempt INTEGER NOT NULL,
    ts      DOUBLE PRECISION NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX conveyor_logs_run ON conveyor_logs (run_id, id);
