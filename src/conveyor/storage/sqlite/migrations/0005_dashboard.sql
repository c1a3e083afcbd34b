-- Version 5: indexes for the dashboard's lists, so that no page walks a big table.
-- The partial indexes leave out what would make them large and churn on every write:
-- child runs of fan-outs, the internal events ('conveyor/map', 'conveyor/invoke', ...)
-- that fan-outs create one per child, and runs that have not failed.

-- A function's dead letters. Failed only: an index keyed by status would be written on every
-- status change of every run; a failed run changes status rarely (a redrive, a replay). A
-- function's runs in another status walk the function's index with a residual filter.
CREATE INDEX conveyor_runs_function_failed ON conveyor_runs (function_id, id) WHERE status = 'failed';

-- Top-level runs, newest first: the runs page without filters.
CREATE INDEX conveyor_runs_top ON conveyor_runs (id) WHERE parent_id IS NULL;

-- Events sent by applications, newest first, and by name.
CREATE INDEX conveyor_events_sent ON conveyor_events (ts, id) WHERE substr(name, 1, 9) <> 'conveyor/';
CREATE INDEX conveyor_events_named ON conveyor_events (name, ts, id) WHERE substr(name, 1, 9) <> 'conveyor/';

-- A parent's children in one status, in item order (its failed children, page by page):
-- the index that counts children by status, extended with their position.
DROP INDEX conveyor_runs_children_status;
CREATE INDEX conveyor_runs_children_status ON conveyor_runs (parent_id, status, parent_step, child_index)
    WHERE parent_id IS NOT NULL;
