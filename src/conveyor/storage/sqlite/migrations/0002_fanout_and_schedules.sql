-- Version 2: map steps create their children in batches (and resume after a crash);
-- progress counts children by status from an index; cron schedules.

ALTER TABLE conveyor_steps ADD COLUMN children_created INTEGER NOT NULL DEFAULT 0;

CREATE INDEX conveyor_runs_children_status ON conveyor_runs (parent_id, status) WHERE parent_id IS NOT NULL;

CREATE TABLE conveyor_schedules (
    function_id TEXT PRIMARY KEY,
    cron        TEXT NOT NULL,
    timezone    TEXT NOT NULL,
    last_slot   REAL,
    missed      INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);

-- The reconciler looks for fan-out steps that have waited a long time.
CREATE INDEX conveyor_steps_fanout_waiting ON conveyor_steps (started_at) WHERE status = 'waiting' AND kind IN ('map', 'invoke');
