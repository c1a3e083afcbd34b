-- SQL of the PostgreSQL backend, one named block per operation of storage.base.Storage.

-- name: migrate_lock
SELECT pg_advisory_xact_lock(4242001);  -- one migrator at a time, across hosts

-- name: migrations_table
CREATE TABLE IF NOT EXISTS conveyor_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- name: migrations_applied
SELECT version FROM conveyor_migrations ORDER BY version;

-- name: migration_record
INSERT INTO conveyor_migrations (version, name, applied_at) VALUES (%s, %s, %s);

-- name: function_upsert
INSERT INTO conveyor_functions
    (id, pool, retries, concurrency_limit, concurrency_key, cron, has_on_failure, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    pool = excluded.pool, retries = excluded.retries,
    concurrency_limit = excluded.concurrency_limit, concurrency_key = excluded.concurrency_key,
    cron = excluded.cron, has_on_failure = excluded.has_on_failure, updated_at = excluded.updated_at;

-- name: triggers_clear
DELETE FROM conveyor_triggers WHERE function_id = %s;

-- name: trigger_insert
INSERT INTO conveyor_triggers (event_name, function_id) VALUES (%s, %s) ON CONFLICT DO NOTHING;

-- name: routes_for_event
SELECT f.id, f.pool, f.concurrency_limit, f.concurrency_key
FROM conveyor_triggers t JOIN conveyor_functions f ON f.id = t.function_id
WHERE t.event_name = %s;

-- name: function_get
SELECT id, pool, concurrency_limit, concurrency_key, has_on_failure
FROM conveyor_functions WHERE id = %s;

-- name: event_insert
INSERT INTO conveyor_events (id, name, data, ts, trace) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING;

-- name: events_insert_many
INSERT INTO conveyor_events (id, name, data, ts, trace)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::text[])
ON CONFLICT DO NOTHING RETURNING id;

-- name: event_get
SELECT id, name, data, ts FROM conveyor_events WHERE id = %s;

-- name: run_insert
INSERT INTO conveyor_runs
    (id, function_id, event_id, status, pool, parent_id, parent_step, child_index, failure_of, created_at)
VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING;

-- name: job_insert
INSERT INTO conveyor_jobs (run_id, pool, function_id, run_at, cgroup, climit)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id) DO UPDATE SET run_at = LEAST(conveyor_jobs.run_at, excluded.run_at)
WHERE conveyor_jobs.lease_expires IS NULL;

-- Bulk twins of the three inserts above, one statement for many rows (see Backend._many).

-- name: event_insert_unnest
INSERT INTO conveyor_events (id, name, data, ts, trace)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::text[])
ON CONFLICT DO NOTHING;

-- name: run_insert_unnest
INSERT INTO conveyor_runs
    (id, function_id, event_id, status, pool, parent_id, parent_step, child_index, failure_of, created_at)
SELECT id, fid, eid, 'queued', pool, par, pstep, idx, fail, ts
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[],
            %b::float8[]) AS t(id, fid, eid, pool, par, pstep, idx, fail, ts)
ON CONFLICT DO NOTHING;

-- name: job_insert_unnest
INSERT INTO conveyor_jobs (run_id, pool, function_id, run_at, cgroup, climit)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::int[])
ON CONFLICT (run_id) DO UPDATE SET run_at = LEAST(conveyor_jobs.run_at, excluded.run_at)
WHERE conveyor_jobs.lease_expires IS NULL;

-- name: waits_for_event
SELECT run_id, step_id, match_path, match_value, created_at
FROM conveyor_waits WHERE event_name = %s AND matched_event_id IS NULL;

-- name: wait_match
UPDATE conveyor_waits SET matched_event_id = %s
WHERE run_id = %s AND step_id = %s AND matched_event_id IS NULL;

-- name: job_wake
UPDATE conveyor_jobs SET run_at = %s WHERE run_id = %s AND lease_expires IS NULL AND run_at > %s;

-- name: jobs_due
SELECT run_id, cgroup, climit FROM conveyor_jobs
WHERE pool = %s AND run_at <= %s AND function_id = ANY(%b)
ORDER BY run_at LIMIT %s
FOR UPDATE SKIP LOCKED;

-- name: cgroup_lock
SELECT pg_advisory_xact_lock(hashtext(%s));  -- count and claim one group at a time

-- name: cgroup_running
SELECT count(*) FROM conveyor_jobs WHERE cgroup = %s AND lease_expires > %s;

-- name: job_lease
UPDATE conveyor_jobs SET token = token + 1 + floor(random() * 1000000000)::bigint, lease_expires = %s, run_at = %s, worker = %s
WHERE run_id = %s RETURNING token;

-- name: run_mark_running
UPDATE conveyor_runs SET status = 'running', started_at = coalesce(started_at, %s)
WHERE id = %s AND status IN ('queued', 'waiting', 'running')
RETURNING function_id, pool, event_id, failure_of, started_at = %s::float8;

-- name: event_for_run
SELECT e.id, e.name, e.data, e.ts, e.trace FROM conveyor_events e WHERE e.id = %s;

-- name: memo_for_run
SELECT step_id, kind, status, attempts, output, error, wake_at, seq, started_at, children_total, children_created
FROM conveyor_steps WHERE run_id = %s;

-- name: waits_resolve
DELETE FROM conveyor_waits
WHERE run_id = %s AND (matched_event_id IS NOT NULL OR expires_at <= %s)
RETURNING step_id, matched_event_id;

-- name: step_resolve
UPDATE conveyor_steps SET status = %s, output = %s, error = %s, ended_at = %s, attempts = attempts + 1
WHERE run_id = %s AND step_id = %s AND status NOT IN ('completed', 'failed');

-- name: job_heartbeat
UPDATE conveyor_jobs SET lease_expires = %s, run_at = %s
WHERE run_id = %s AND token = %s AND lease_expires IS NOT NULL;

-- name: job_fence
SELECT token FROM conveyor_jobs WHERE run_id = %s AND lease_expires IS NOT NULL FOR UPDATE;

-- name: step_upsert
INSERT INTO conveyor_steps
    (run_id, step_id, seq, kind, status, attempts, output, error, wake_at, started_at, ended_at, children_total,
     children_created)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, output = excluded.output,
    error = excluded.error, wake_at = excluded.wake_at, ended_at = excluded.ended_at,
    children_total = excluded.children_total, children_created = excluded.children_created
WHERE conveyor_steps.status NOT IN ('completed', 'failed');

-- name: run_complete
UPDATE conveyor_runs SET status = 'completed', output = %s, error = NULL, ended_at = %s
WHERE id = %s AND status = 'running'
RETURNING parent_id, parent_step;

-- name: run_fail
UPDATE conveyor_runs SET status = 'failed', error = %s, ended_at = %s, failures = failures + 1
WHERE id = %s AND status = 'running'
RETURNING parent_id, parent_step, failures, event_id, failure_of;

-- name: run_set_status
UPDATE conveyor_runs SET status = %s WHERE id = %s AND status = 'running';

-- name: job_delete
DELETE FROM conveyor_jobs WHERE run_id = %s;

-- name: job_reschedule
UPDATE conveyor_jobs SET run_at = %s, lease_expires = NULL, worker = NULL WHERE run_id = %s;

-- name: job_release
UPDATE conveyor_jobs SET run_at = %s, lease_expires = NULL, worker = NULL, token = token + 1 + floor(random() * 1000000000)::bigint
WHERE run_id = %s;

-- name: child_ended
UPDATE conveyor_steps
SET children_ended = children_ended + %s, children_failed = children_failed + %s
WHERE run_id = %s AND step_id = %s AND status IN ('waiting', 'creating')
RETURNING kind, children_total, children_ended, children_failed;

-- name: children_first_errors
SELECT child_index, id, error FROM conveyor_runs
WHERE parent_id = %s AND parent_step = %s AND status IN ('failed', 'cancelled')
ORDER BY child_index LIMIT %s;

-- name: children_outputs
SELECT output FROM conveyor_runs
WHERE parent_id = %s AND parent_step = %s AND child_index >= %s
ORDER BY child_index LIMIT %s;

-- name: child_error_at
SELECT status, error FROM conveyor_runs WHERE parent_id = %s AND parent_step = %s AND child_index = %s;

-- name: function_exists
SELECT 1 FROM conveyor_functions WHERE id = %s;

-- name: parent_wake
UPDATE conveyor_runs SET status = 'queued' WHERE id = %s AND status = 'waiting';

-- name: wait_insert
INSERT INTO conveyor_waits
    (run_id, step_id, event_name, match_path, match_value, created_at, expires_at, matched_event_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, NULL)
ON CONFLICT (run_id, step_id) DO UPDATE SET
    event_name = excluded.event_name, match_path = excluded.match_path, match_value = excluded.match_value,
    created_at = excluded.created_at, expires_at = excluded.expires_at, matched_event_id = NULL;

-- name: log_insert
INSERT INTO conveyor_logs (run_id, step_id, attempt, ts, level, message) VALUES (%s, %s, %s, %s, %s, %s);

-- name: next_due
SELECT min(run_at) FROM conveyor_jobs
WHERE pool = %s AND lease_expires IS NULL AND function_id = ANY(%b);

-- name: run_get
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs WHERE id = %s;

-- name: steps_list
SELECT run_id, step_id, seq, kind, status, attempts, output, error, wake_at, started_at, ended_at
FROM conveyor_steps WHERE run_id = %s ORDER BY seq;

-- name: children_counts
SELECT status, count(*) FROM conveyor_runs WHERE parent_id = %s GROUP BY status;

-- name: logs_list
SELECT step_id, attempt, ts, level, message FROM conveyor_logs WHERE run_id = %s ORDER BY id LIMIT %s;

-- name: run_cancel
UPDATE conveyor_runs SET status = 'cancelled', ended_at = %s
WHERE id = %s AND status IN ('queued', 'running', 'waiting');

-- name: children_unfinished
SELECT id FROM conveyor_runs
WHERE parent_id = %s AND status IN ('queued', 'running', 'waiting');

-- name: waits_delete
DELETE FROM conveyor_waits WHERE run_id = %s;

-- name: run_requeue
UPDATE conveyor_runs SET status = 'queued', error = NULL, output = NULL, ended_at = NULL
WHERE id = %s AND status = ANY(%b)
RETURNING pool, function_id;

-- name: steps_unfinished_delete
DELETE FROM conveyor_steps WHERE run_id = %s AND status != 'completed';

-- Listing runs, newest first (run ids sort by creation time, so a time window is a range of
-- ids: from :lo, before :hi, which also carries the page cursor). Each block walks the index
-- that fits its filters, the rest is residual. A parent's children come in item order
-- instead, after the position (:ps, :ci) of the cursor. :top = 1 keeps runs without a parent.
-- Plain parameters, not a CTE of them: the planner must see the filters to pick the index.

-- name: runs_by_event
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE event_id = %(ev)s::text AND (%(fn)s::text IS NULL OR function_id = %(fn)s::text)
  AND (%(st)s::text IS NULL OR status = %(st)s::text)
  AND id < %(hi)s::text AND id >= %(lo)s::text AND (%(top)s::int = 0 OR parent_id IS NULL)
ORDER BY id DESC LIMIT %(lim)s::int;

-- The runs of a page of events, newest first, at most :lim of each: one statement for the page,
-- on the unique (event_id, function_id) index.
-- name: runs_of_events
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM (
    SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at,
           row_number() OVER (PARTITION BY event_id ORDER BY id DESC) AS n
    FROM conveyor_runs WHERE event_id = ANY(%b)
) r
WHERE n <= %s
ORDER BY event_id, id DESC;

-- name: run_position
SELECT parent_step, child_index FROM conveyor_runs WHERE id = %s;

-- name: runs_by_parent
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE parent_id = %(par)s::text AND (parent_step, child_index) > (%(ps)s::text, %(ci)s::int)
  AND (%(fn)s::text IS NULL OR function_id = %(fn)s::text) AND id < %(hi)s::text AND id >= %(lo)s::text
ORDER BY parent_id, parent_step, child_index LIMIT %(lim)s::int;

-- name: runs_by_parent_status
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE parent_id = %(par)s::text AND status = %(st)s::text AND (parent_step, child_index) > (%(ps)s::text, %(ci)s::int)
  AND (%(fn)s::text IS NULL OR function_id = %(fn)s::text) AND id < %(hi)s::text AND id >= %(lo)s::text
ORDER BY parent_id, status, parent_step, child_index LIMIT %(lim)s::int;

-- name: runs_by_function
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE function_id = %(fn)s::text AND id < %(hi)s::text AND id >= %(lo)s::text
  AND (%(st)s::text IS NULL OR status = %(st)s::text) AND (%(top)s::int = 0 OR parent_id IS NULL)
ORDER BY function_id DESC, id DESC LIMIT %(lim)s::int;

-- A function's dead letters: the status is written out, so the partial index applies.
-- name: runs_by_function_failed
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE function_id = %(fn)s::text AND status = 'failed' AND id < %(hi)s::text AND id >= %(lo)s::text
  AND (%(top)s::int = 0 OR parent_id IS NULL)
ORDER BY function_id DESC, id DESC LIMIT %(lim)s::int;

-- name: runs_by_status
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE status = %(st)s::text AND id < %(hi)s::text AND id >= %(lo)s::text AND (%(top)s::int = 0 OR parent_id IS NULL)
ORDER BY status DESC, id DESC LIMIT %(lim)s::int;

-- name: runs_top
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE parent_id IS NULL AND id < %(hi)s::text AND id >= %(lo)s::text
ORDER BY id DESC LIMIT %(lim)s::int;

-- name: runs_all
SELECT id, function_id, event_id, status, pool, output, error, parent_id, created_at, started_at, ended_at
FROM conveyor_runs
WHERE id < %(hi)s::text AND id >= %(lo)s::text
ORDER BY id DESC LIMIT %(lim)s::int;

-- name: waited_event_names
SELECT DISTINCT event_name FROM conveyor_waits WHERE matched_event_id IS NULL;

-- name: run_parent
SELECT parent_id, parent_step FROM conveyor_runs WHERE id = %s;

-- name: run_event_data
SELECT e.data FROM conveyor_runs r JOIN conveyor_events e ON e.id = r.event_id WHERE r.id = %s;

-- Set-based variants: one round trip for a whole batch.

-- name: jobs_lease_many
WITH leased AS (
    UPDATE conveyor_jobs SET token = token + 1 + floor(random() * 1000000000)::bigint, lease_expires = %s, run_at = %s, worker = %s
    WHERE run_id = ANY(%b)
    RETURNING run_id, token
), marked AS (
    UPDATE conveyor_runs r SET status = 'running', started_at = coalesce(r.started_at, %s)
    FROM leased
    WHERE r.id = leased.run_id AND r.status IN ('queued', 'waiting', 'running')
    RETURNING r.id, r.function_id, r.pool, r.event_id, r.failure_of, r.started_at
)
SELECT l.run_id, l.token, m.function_id, m.pool, e.id, e.name, e.data, e.ts, m.failure_of, m.started_at = %s,
       e.trace
FROM leased l
LEFT JOIN marked m ON m.id = l.run_id
LEFT JOIN conveyor_events e ON e.id = m.event_id;

-- name: memos_for_runs
SELECT run_id, step_id, kind, status, attempts, output, error, wake_at, seq, started_at, children_total,
       children_created
FROM conveyor_steps WHERE run_id = ANY(%b);

-- name: jobs_fence_many
SELECT run_id, token FROM conveyor_jobs
WHERE run_id = ANY(%b) AND lease_expires IS NOT NULL
ORDER BY run_id
FOR UPDATE;

-- name: runs_complete_many
UPDATE conveyor_runs r SET status = 'completed', output = v.output, error = NULL, ended_at = %s
FROM unnest(%b::text[], %b::text[]) AS v(id, output)
WHERE r.id = v.id AND r.status = 'running'
RETURNING r.id, r.parent_id, r.parent_step;

-- name: jobs_delete_many
DELETE FROM conveyor_jobs WHERE run_id = ANY(%b);

-- name: jobs_reschedule_many
UPDATE conveyor_jobs j SET run_at = v.run_at, lease_expires = NULL, worker = NULL
FROM unnest(%b::text[], %b::float8[]) AS v(run_id, run_at)
WHERE j.run_id = v.run_id;

-- name: runs_status_many
UPDATE conveyor_runs r SET status = v.status
FROM unnest(%b::text[], %b::text[]) AS v(id, status)
WHERE r.id = v.id AND r.status = 'running';

-- Retention: ended top-level runs older than a cutoff, with everything that hangs off them.

-- name: prune_pick
SELECT id, event_id FROM conveyor_runs
WHERE status = %s AND parent_id IS NULL AND ended_at < %s
ORDER BY status, id LIMIT %s
FOR UPDATE SKIP LOCKED;

-- name: children_of
SELECT id, event_id FROM conveyor_runs WHERE parent_id = ANY(%b);

-- name: steps_delete_for
DELETE FROM conveyor_steps WHERE run_id = ANY(%b);

-- name: logs_delete_for
DELETE FROM conveyor_logs WHERE run_id = ANY(%b);

-- name: waits_delete_for
DELETE FROM conveyor_waits WHERE run_id = ANY(%b);

-- name: jobs_delete_for
DELETE FROM conveyor_jobs WHERE run_id = ANY(%b);

-- name: runs_delete_for
DELETE FROM conveyor_runs WHERE id = ANY(%b);

-- name: events_delete_unused
DELETE FROM conveyor_events e
WHERE e.id = ANY(%b) AND NOT EXISTS (SELECT 1 FROM conveyor_runs r WHERE r.event_id = e.id);

-- name: events_prune_unrouted
DELETE FROM conveyor_events WHERE id IN (
    SELECT e.id FROM conveyor_events e
    WHERE e.ts < %s AND NOT EXISTS (SELECT 1 FROM conveyor_runs r WHERE r.event_id = e.id)
    LIMIT %s
    FOR UPDATE SKIP LOCKED
);

-- name: fanout_counts
SELECT kind, children_total, children_ended, children_failed FROM conveyor_steps
WHERE run_id = %s AND step_id = %s AND status = 'waiting';

-- Cron schedules: one row per scheduled function; its lock serializes the schedulers.

-- name: schedule_init
INSERT INTO conveyor_schedules (function_id, cron, timezone, last_slot, missed, updated_at)
VALUES (%s, %s, %s, %s, 0, %s)
ON CONFLICT (function_id) DO NOTHING;

-- name: schedule_lock
SELECT last_slot, cron, timezone FROM conveyor_schedules WHERE function_id = %s FOR UPDATE;

-- name: schedule_update
UPDATE conveyor_schedules SET last_slot = %s, missed = missed + %s, cron = %s, timezone = %s, updated_at = %s
WHERE function_id = %s;

-- name: schedules_list
SELECT function_id, cron, timezone, last_slot, missed FROM conveyor_schedules ORDER BY function_id;

-- Reconciler: recount the children of fan-out steps that have waited long.

-- name: fanouts_stale
SELECT run_id, step_id FROM conveyor_steps
WHERE status = 'waiting' AND kind IN ('map', 'invoke') AND started_at < %s
ORDER BY started_at LIMIT %s;

-- name: fanout_lock
SELECT kind, children_total FROM conveyor_steps
WHERE run_id = %s AND step_id = %s AND status = 'waiting' FOR UPDATE;

-- name: children_step_counts
SELECT status, count(*) FROM conveyor_runs WHERE parent_id = %s AND parent_step = %s GROUP BY status;

-- name: fanout_set_counts
UPDATE conveyor_steps SET children_ended = %s, children_failed = %s WHERE run_id = %s AND step_id = %s;

-- Listing for the HTTP API and the dashboard.

-- name: functions_all
SELECT id, pool, retries, concurrency_limit, concurrency_key, cron, has_on_failure, updated_at
FROM conveyor_functions ORDER BY id;

-- name: triggers_all
SELECT event_name, function_id FROM conveyor_triggers ORDER BY event_name;

-- name: events_recent
SELECT id, name, data, ts FROM conveyor_events
WHERE (%(name)s::text IS NULL OR name = %(name)s::text)
  AND (%(ts)s::float8 IS NULL OR ts < %(ts)s::float8 OR (ts = %(ts)s::float8 AND id < %(id)s::text))
ORDER BY ts DESC, id DESC LIMIT %(limit)s;

-- Events sent by applications (not the internal 'conveyor/...' ones), newest first; and
-- those of one such name. The page cursor is a row value, so a later page seeks to it.

-- name: events_sent
SELECT id, name, data, ts FROM conveyor_events
WHERE substr(name, 1, 9) <> 'conveyor/'
  AND (ts, id) < (coalesce(%(ts)s::float8, 'Infinity'::float8), coalesce(%(id)s::text, ''))
ORDER BY ts DESC, id DESC LIMIT %(limit)s;

-- name: events_named
SELECT id, name, data, ts FROM conveyor_events
WHERE substr(name, 1, 9) <> 'conveyor/' AND name = %(name)s::text
  AND (name, ts, id) < (%(name)s::text, coalesce(%(ts)s::float8, 'Infinity'::float8), coalesce(%(id)s::text, ''))
ORDER BY name DESC, ts DESC, id DESC LIMIT %(limit)s;

-- name: pools_backlog
SELECT pool, count(*), min(run_at) FROM conveyor_jobs WHERE run_at <= %s GROUP BY pool;

-- Push endpoints.

-- name: endpoint_upsert
INSERT INTO conveyor_endpoints (url, pool, functions, concurrency, rate, timeout, registered_at, seen_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (url) DO UPDATE SET
    pool = excluded.pool, functions = excluded.functions, concurrency = excluded.concurrency,
    rate = excluded.rate, timeout = excluded.timeout, seen_at = excluded.seen_at;

-- name: endpoints_all
SELECT url, pool, functions, concurrency, rate, timeout, registered_at, seen_at
FROM conveyor_endpoints ORDER BY pool, url;

-- name: endpoint_delete
DELETE FROM conveyor_endpoints WHERE url = %s;

-- name: functions_runs_since
SELECT f.id, (SELECT count(*) FROM conveyor_runs r WHERE r.function_id = f.id AND r.id >= %s::text)
FROM conveyor_functions f;

-- name: functions_failed_since
SELECT function_id, count(*) FROM conveyor_runs
WHERE status = 'failed' AND id >= %s::text GROUP BY function_id;

-- name: runs_count
SELECT count(*) FROM conveyor_runs WHERE status = %s;

-- name: worker_upsert
INSERT INTO conveyor_workers (id, kind, host, pid, pools, concurrency, started_at, seen_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET pools = excluded.pools, concurrency = excluded.concurrency, seen_at = excluded.seen_at;

-- name: workers_forget
DELETE FROM conveyor_workers WHERE seen_at < %s;

-- name: workers_list
SELECT id, kind, host, pid, pools, concurrency, started_at, seen_at FROM conveyor_workers WHERE seen_at >= %s ORDER BY id;

-- name: worker_delete
DELETE FROM conveyor_workers WHERE id = %s;

-- name: ping
SELECT count(*) FROM conveyor_migrations;
