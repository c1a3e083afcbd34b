-- Version 3: push endpoints, the HTTP services that the server's dispatcher calls to
-- advance the runs of a pool (instead of pull workers).

CREATE TABLE conveyor_endpoints (
    url           TEXT PRIMARY KEY,
    pool          TEXT NOT NULL,
    functions     TEXT NOT NULL,          -- JSON list of function ids served there
    concurrency   INTEGER NOT NULL,       -- invocations in flight at most
    rate          REAL,       -- invocations started per second at most (NULL: no limit)
    timeout       REAL NOT NULL,  -- seconds a request may take
    registered_at REAL NOT NULL,
    seen_at       REAL NOT NULL
);
