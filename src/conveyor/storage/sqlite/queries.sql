-- SQL of the SQLite backend, one named block per operation of storage.base.Storage.

-- name: migrate_lock
SELECT 1;  -- BEGIN IMMEDIATE already serializes migrations

-- name: migrations_table
CREATE TABLE IF NOT EXISTS conveyor_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- name: migrations_applied
SELECT version FROM conveyor_migrations ORDER BY version;

-- name: migration_record
INSERT INTO conveyor_migrations (version, name, applied_at) VALUES (?, ?, ?);

-- name: function_upsert
INSERT INTO conveyor_functions
    (id, pool, retries, concurrency_limit, concurrency_key, cron, has_on_failure, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    pool = excluded.pool, retries = excluded.retries,
    concurrency_limit = excluded.concurrency_limit, concurrency_key = excluded.concurrency_key,
    cron = excluded.cron, has_on_failure = excluded.has_on_failure, updated_at = excluded.updated_at;

-- name: triggers_clear
DELETE FROM conveyor_triggers WHERE function_id = ?;

-- name: trigger_insert
INSERT OR IGNORE INTO conveyor_triggers (event_name, function_id) VALUES (?, ?);

-- name: routes_for_event
SELECT f.id, f.pool, f.concurrency_limit, f.concurrency_key
FROM conveyor_triggers t JOIN conveyor_functions f ON f.id = t.function_id
WHERE t.event_name = ?;

-- name: function_get
SELECT id, pool, concurrency_limit, concurrency_key, has_on_failure
FROM conveyor_functions WHERE id = ?;

-- name: event_insert
INSERT OR IGNORE INTO conveyor_events (id, name, data, ts, trace) VALUES (?, ?, ?, ?, ?);

-- name: event_get
SELECT id, name, data, ts FROM conveyor_events WHERE id = ?;

-- name: run_insert
INSERT OR IGNORE INTO conveyor_runs
    (id, function_id, event_id, status, pool, parent_id, parent_step, child_index, failure_of, created_at)
VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?);

-- name: job_insert
INSERT INTO conveyor_jobs (run_id, pool, function_id, run_at, cgroup, climit)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET run_at = min(run_at, excluded.run_at)
WHERE lease_expires IS NULL;

-- name: waits_for_event
SELECT run_id, step_id, match_path, match_value, created_at
FROM conveyor_waits WHERE event_name = ? AND matched_event_id IS NULL;

-- name: wait_match
UPDATE conveyor_waits SET matched_event_id = ?
WHERE run_id = ? AND step_id = ? AND matched_event_id IS NULL;

-- name: job_wake
UPDATE conveyor_jobs SET run_at = ? WHERE run_id = ? AND lease_expires IS NULL AND run_at > ?;

-- name: jobs_due
SELECT run_id, cgroup, climit FROM conveyor_jobs
WHERE pool = ? AND run_at <= ? AND function_id IN (SELECT value FROM json_each(?))
ORDER BY run_at LIMIT ?;

-- name: cgroup_lock
SELECT ?;  -- one writer at a time: counting under the write lock is exact

-- name: cgroup_running
SELECT count(*) FROM conveyor_jobs WHERE cgroup = ? AND lease_expires > ?;

-- name: job_lease
UPDATE conveyor_jobs SET token = token + 1 + abs(random() % 1000000000), lease_expires = ?, run_at = ?, worker = ?
WHERE run_id = ? RETURNING token;

-- name: run_mark_running
UPDATE conveyor_runs SET status = 'running', started_at = coalesce(started_at, ?)
WHERE id = ? AND status IN ('queued', 'waiting', 'running')
RETURNING function_id, pool, event_id, failure_of, started_at = ?;

-- name: event_for_run
SELECT e.id, e.name, e.data, e.ts, e.trace FROM conveyor_events e WHERE e.id = ?;

-- name: memo_for_run
SELECT step_id, kind, status, attempts, output, error, wake_at, seq, started_at, children_total, children_created
FROM conveyor_steps WHERE run_id = ?;

-- name: waits_resolve
DELETE FROM conveyor_waits
WHERE run_id = ? AND (matched_event_id IS NOT NULL OR expires_at <= ?)
RETURNING step_id, matched_event_id;

-- name: step_resolve
UPDATE conveyor_steps SET status = ?, output = ?, error = ?, ended_at = ?, attempts = attempts + 1
WHERE run_id = ? AND step_id = ? AND status NOT IN ('completed', 'failed');

-- name: job_heartbeat
UPDATE conveyor_jobs SET lease_expires = ?, run_at = ?
WHERE run_id = ? AND token = ? AND lease_expires IS NOT NULL;

-- name: job_fence
SELECT token FROM conveyor_jobs WHERE run_id = ? AND lease_expires IS NOT NULL;

-- name: step_upsert
INSERT INTO conveyor_steps
    (run_id, step_id, seq, kind, status, attempts, output, error, wake_at, started_at, ended_at, children_total,
     children_created)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, output = excluded.output,
    error = excluded.error, wake_at = excluded.wake_at, ended_at = excluded.ended_at,
    children_total = excluded.children_total, children_created = excluded.children_created
WHERE conveyor_steps.status NOT IN ('completed', 'failed');

-- name: run_complete
UPDATE conveyor_runs SET status = 'completed', output = ?, error = NULL, ended_at = ?
WHERE id = ? AND status = 'running'
RETURNING parent_id, parent_step;

-- name: run_fail
UPDATE conveyor_runs SET status = 'failed', error = ?, ended_at = ?, failures = failures + 1
WHERE id = ? AND status = 'running'
RETURNING parent_id, parent_step, failures, event_id, failure_of;

-- name: run_set_status
UPDATE conveyor_runs SET status = ? WHERE id = ? AND status = 'running';

-- name: job_delete
DELETE FROM conveyor_jobs WHERE run_id = ?;

-- name: job_reschedule
UPDATE conveyor_jobs SET run_at = ?, lease_expires = NULL, worker = NULL WHERE run_id = ?;

-- name: job_release
UPDATE conveyor_jobs SET run_at = ?, lease_expires = NULL, worker = NULL, token = token + 1 + abs(random() % 1000000000)
WHERE run_id = ?;

-- name: child_ended
UPDATE conveyor_steps
SET children_ended = children_ended + ?, children_failed = children_failed + ?
WHERE run_id = ? AND step_id = ? AND status IN ('waiting', 'creating')
RETURNING kind, children_total, children_ended, children_failed;

-- name: children_first_errors
SELECT child_index, id, error FROM conveyor_runs
WHERE parent_id = ? AND parent_step = ? AND status IN ('failed', 'cancelled')
ORDER BY child_index LIMIT ?;

-- name: children_outputs
SELECT output FROM conveyor_runs
WHERE parent_id = ? AND parent_step = ? AND child_index >= ?
ORDER BY child_index LIMIT ?;

-- name: child_error_at
SELECT status, error FROM conveyor_runs WHERE parent_id = ? AND parent_step = ? AND child_index = ?;

-- name: function_exists
SELECT 1 FROM conveyor_functions WHERE id = ?;

-- name: parent_wake
UPDATE conveyor_runs SET status = 'queued' WHERE id = ? AND status = 'waiting';

-- name: wait_insert
INSERT OR REPLACE INTO conveyor_waits
    (run_id, step_id, event_name, match_path, match_value, created_at, expires_at, matched_event_id)
VALUES (?, ?, ?, ?, ?, ?, ?, NULL);

-- name: log_insert
INSERT INTO conveyor_logs (run_id, step_id, attempt, ts, level, message) VALUES (?, ?, ?, ?, ?, ?);

-- name: next_due
SELECT min(run_at) FROM conveyor_jobs
WHERE pool = ? AND lease_expires IS NULL AND function_id IN (SELECT value FROM json_each(?));

-- name: run_get
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs WHERE id = ?;

-- name: steps_list
SELECT run_id, step_id, seq, kind, status, attempts, output, error, wake_at, started_at, ended_at
FROM conveyor_steps WHERE run_id = ? ORDER BY seq;

-- name: children_counts
SELECT status, count(*) FROM conveyor_runs WHERE parent_id = ? GROUP BY status;

-- name: logs_list
SELECT step_id, attempt, ts, level, message FROM conveyor_logs WHERE run_id = ? ORDER BY id LIMIT ?;

-- name: run_cancel
UPDATE conveyor_runs SET status = 'cancelled', ended_at = ?
WHERE id = ? AND status IN ('queued', 'running', 'waiting');

-- name: children_unfinished
SELECT id FROM conveyor_runs
WHERE parent_id = ? AND status IN ('queued', 'running', 'waiting');

-- name: waits_delete
DELETE FROM conveyor_waits WHERE run_id = ?;

-- name: run_requeue
UPDATE conveyor_runs SET status = 'queued', error = NULL, output = NULL, ended_at = NULL
WHERE id = ? AND status IN (SELECT value FROM json_each(?))
RETURNING pool, function_id;

-- name: steps_unfinished_delete
DELETE FROM conveyor_steps WHERE run_id = ? AND status != 'completed';

-- Listing runs, newest first (run ids sort by creation time, so a time window is a range of
-- ids: from :lo, before :hi, which also carries the page cursor). Each block walks the index
-- that fits its filters, the rest is residual. A parent's children come in item order
-- instead, after the position (:ps, :ci) of the cursor. :top = 1 keeps runs without a parent.

-- name: runs_by_event
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE event_id = :ev AND (:fn IS NULL OR function_id = :fn) AND (:st IS NULL OR status = :st)
  AND id < :hi AND id >= :lo AND (:top = 0 OR parent_id IS NULL)
ORDER BY id DESC LIMIT :lim;

-- The runs of a page of events, newest first, at most ? of each: one statement for the page,
-- on the unique (event_id, function_id) index.
-- name: runs_of_events
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM (
    SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at,
           row_number() OVER (PARTITION BY event_id ORDER BY id DESC) AS n
    FROM conveyor_runs WHERE event_id IN (SELECT value FROM json_each(?))
)
WHERE n <= ?
ORDER BY event_id, id DESC;

-- name: run_position
SELECT parent_step, child_index FROM conveyor_runs WHERE id = ?;

-- name: runs_by_parent
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs INDEXED BY conveyor_runs_parent
WHERE parent_id = :par AND (parent_step, child_index) > (:ps, :ci) AND (:fn IS NULL OR function_id = :fn)
  AND id < :hi AND id >= :lo
ORDER BY parent_step, child_index LIMIT :lim;

-- name: runs_by_parent_status
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs INDEXED BY conveyor_runs_children_status
WHERE parent_id = :par AND status = :st AND (parent_step, child_index) > (:ps, :ci)
  AND (:fn IS NULL OR function_id = :fn) AND id < :hi AND id >= :lo
ORDER BY parent_step, child_index LIMIT :lim;

-- name: runs_by_function
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs INDEXED BY conveyor_runs_function
WHERE function_id = :fn AND id < :hi AND id >= :lo AND (:st IS NULL OR status = :st)
  AND (:top = 0 OR parent_id IS NULL)
ORDER BY function_id DESC, id DESC LIMIT :lim;

-- A function's dead letters: the status is written out, so the partial index applies.
-- name: runs_by_function_failed
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs INDEXED BY conveyor_runs_function_failed
WHERE function_id = :fn AND status = 'failed' AND id < :hi AND id >= :lo AND (:top = 0 OR parent_id IS NULL)
ORDER BY function_id DESC, id DESC LIMIT :lim;

-- name: runs_by_status
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs INDEXED BY conveyor_runs_status
WHERE status = :st AND id < :hi AND id >= :lo AND (:top = 0 OR parent_id IS NULL)
ORDER BY status DESC, id DESC LIMIT :lim;

-- name: runs_top
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs INDEXED BY conveyor_runs_top
WHERE parent_id IS NULL AND id < :hi AND id >= :lo
ORDER BY id DESC LIMIT :lim;

-- name: runs_all
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE id < :hi AND id >= :lo
ORDER BY id DESC LIMIT :lim;

-- name: waited_event_names
SELECT DISTINCT event_name FROM conveyor_waits WHERE matched_event_id IS NULL;

-- name: run_parent
SELECT parent_id, parent_step FROM conveyor_runs WHERE id = ?;

-- name: run_event_data
SELECT e.data FROM conveyor_runs r JOIN conveyor_events e ON e.id = r.event_id WHERE r.id = ?;

-- Retention: ended top-level runs older than a cutoff, with everything that hangs off them.

-- name: prune_pick
SELECT id, event_id FROM conveyor_runs INDEXED BY conveyor_runs_status
WHERE status = ? AND parent_id IS NULL AND ended_at < ?
ORDER BY status, id LIMIT ?;

-- name: children_of
SELECT id, event_id FROM conveyor_runs WHERE parent_id IN (SELECT value FROM json_each(?));

-- name: steps_delete_for
DELETE FROM conveyor_steps WHERE run_id IN (SELECT value FROM json_each(?));

-- name: logs_delete_for
DELETE FROM conveyor_logs WHERE run_id IN (SELECT value FROM json_each(?));

-- name: waits_delete_for
DELETE FROM conveyor_waits WHERE run_id IN (SELECT value FROM json_each(?));

-- name: jobs_delete_for
DELETE FROM conveyor_jobs WHERE run_id IN (SELECT value FROM json_each(?));

-- name: runs_delete_for
DELETE FROM conveyor_runs WHERE id IN (SELECT value FROM json_each(?));

-- name: events_delete_unused
DELETE FROM conveyor_events
WHERE id IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (SELECT 1 FROM conveyor_runs r WHERE r.event_id = conveyor_events.id);

-- name: events_prune_unrouted
DELETE FROM conveyor_events WHERE id IN (
    SELECT e.id FROM conveyor_events e
    WHERE e.ts < ? AND NOT EXISTS (SELECT 1 FROM conveyor_runs r WHERE r.event_id = e.id)
    LIMIT ?
);

-- name: fanout_counts
SELECT kind, children_total, children_ended, children_failed FROM conveyor_steps
WHERE run_id = ? AND step_id = ? AND status = 'waiting';

-- Cron schedules: one row per scheduled function; its lock serializes the schedulers.

-- name: schedule_init
INSERT INTO conveyor_schedules (function_id, cron, timezone, last_slot, missed, updated_at)
VALUES (?, ?, ?, ?, 0, ?)
ON CONFLICT (function_id) DO NOTHING;

-- name: schedule_lock
SELECT last_slot, cron, timezone FROM conveyor_schedules WHERE function_id = ?;

-- name: schedule_update
UPDATE conveyor_schedules SET last_slot = ?, missed = missed + ?, cron = ?, timezone = ?, updated_at = ?
WHERE function_id = ?;

-- name: schedules_list
SELECT function_id, cron, timezone, last_slot, missed FROM conveyor_schedules ORDER BY function_id;

-- Reconciler: recount the children of fan-out steps that have waited long.

-- name: fanouts_stale
SELECT run_id, step_id FROM conveyor_steps
WHERE status = 'waiting' AND kind IN ('map', 'invoke') AND started_at < ?
ORDER BY started_at LIMIT ?;

-- name: fanout_lock
SELECT kind, children_total FROM conveyor_steps
WHERE run_id = ? AND step_id = ? AND status = 'waiting';

-- name: children_step_counts
SELECT status, count(*) FROM conveyor_runs WHERE parent_id = ? AND parent_step = ? GROUP BY status;

-- name: fanout_set_counts
UPDATE conveyor_steps SET children_ended = ?, children_failed = ? WHERE run_id = ? AND step_id = ?;

-- Listing for the HTTP API and the dashboard.

-- name: functions_all
SELECT id, pool, retries, concurrency_limit, concurrency_key, cron, has_on_failure, updated_at
FROM conveyor_functions ORDER BY id;

-- name: triggers_all
SELECT event_name, function_id FROM conveyor_triggers ORDER BY event_name;

-- name: events_recent
SELECT id, name, data, ts FROM conveyor_events
WHERE (:name IS NULL OR name = :name) AND (:ts IS NULL OR ts < :ts OR (ts = :ts AND id < :id))
ORDER BY ts DESC, id DESC LIMIT :limit;

-- Events sent by applications (not the internal 'conveyor/...' ones), newest first; and
-- those of one such name. The page cursor is a row value, so a later page seeks to it.

-- name: events_sent
SELECT id, name, data, ts FROM conveyor_events INDEXED BY conveyor_events_sent
WHERE substr(name, 1, 9) <> 'conveyor/' AND (ts, id) < (coalesce(:ts, 1e300), coalesce(:id, ''))
ORDER BY ts DESC, id DESC LIMIT :limit;

-- name: events_named
SELECT id, name, data, ts FROM conveyor_events INDEXED BY conveyor_events_named
WHERE substr(name, 1, 9) <> 'conveyor/' AND name = :name AND (ts, id) < (coalesce(:ts, 1e300), coalesce(:id, ''))
ORDER BY name DESC, ts DESC, id DESC LIMIT :limit;

-- name: pools_backlog
SELECT pool, count(*), min(run_at) FROM conveyor_jobs WHERE run_at <= ? GROUP BY pool;

-- Push endpoints.

-- name: endpoint_upsert
INSERT INTO conveyor_endpoints (url, pool, functions, concurrency, rate, timeout, registered_at, seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (url) DO UPDATE SET
    pool = excluded.pool, functions = excluded.functions, concurrency = excluded.concurrency,
    rate = excluded.rate, timeout = excluded.timeout, seen_at = excluded.seen_at;

-- name: endpoints_all
SELECT url, pool, functions, concurrency, rate, timeout, registered_at, seen_at
FROM conveyor_endpoints ORDER BY pool, url;

-- name: endpoint_delete
DELETE FROM conveyor_endpoints WHERE url = ?;

-- name: functions_runs_since
SELECT f.id, (SELECT count(*) FROM conveyor_runs r INDEXED BY conveyor_runs_function
              WHERE r.function_id = f.id AND r.id >= ?)
FROM conveyor_functions f;

-- name: functions_failed_since
SELECT function_id, count(*) FROM conveyor_runs INDEXED BY conveyor_runs_status
WHERE status = 'failed' AND id >= ? GROUP BY function_id;

-- name: runs_count
SELECT count(*) FROM conveyor_runs WHERE status = ?;

-- name: worker_upsert
INSERT INTO conveyor_workers (id, kind, host, pid, pools, concurrency, started_at, seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET pools = excluded.pools, concurrency = excluded.concurrency, seen_at = excluded.seen_at;

-- name: workers_forget
DELETE FROM conveyor_workers WHERE seen_at < ?;

-- name: workers_list
SELECT id, kind, host, pid, pools, concurrency, started_at, seen_at FROM conveyor_workers WHERE seen_at >= ? ORDER BY id;

-- name: worker_delete
DELETE FROM conveyor_workers WHERE id = ?;

-- name: ping
SELECT count(*) FROM conveyor_migrations;
