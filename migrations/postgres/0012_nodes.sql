-- The fleet view: every agent keeps its row fresh (a heartbeat), for
-- `GET /v1/nodes` and `nexusd nodes list`. A node id is one running
-- agent's: another agent takes it only once that one stopped, stopped
-- heartbeating for longer than its lease, or (same host and pid
-- namespace) is gone.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    data_dir TEXT NOT NULL,
    host TEXT NOT NULL,
    -- The boot and pid namespace its pid belongs to.
    pid_space TEXT NOT NULL,
    pid BIGINT NOT NULL,
    version TEXT NOT NULL,
    listen TEXT NOT NULL,
    lease_ms BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    stopped_ms BIGINT,
    watcher BIGINT NOT NULL DEFAULT 0,
    in_flight BIGINT NOT NULL DEFAULT 0,
    watch TEXT NOT NULL DEFAULT ''
);
-- The agent that watches each data dir and records its events, elected
-- (PostgreSQL: an advisory lock on the origin; SQLite: a file lock in the
-- state dir). The fence rises at each election and every commit of events
-- checks it: a watcher that lost its election records nothing more.
CREATE TABLE watchers (
    origin TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    fence BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    backend_pid BIGINT,
    -- The watcher before it.
    previous TEXT
);
-- Retention, on one node of the fleet at a time, finds the finished runs
-- by their finish time rather than reading the whole table.
CREATE INDEX runs_finished ON runs (finished_ms)
    WHERE status IN ('succeeded', 'failed', 'cancelled', 'skipped');
