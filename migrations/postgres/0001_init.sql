-- The same schema as migrations/sqlite/0001_init.sql, in PostgreSQL's types.
-- Times are integer Unix milliseconds on both backends.
CREATE TABLE file_index (
    path      TEXT PRIMARY KEY,
    ino       BIGINT NOT NULL,
    dev       BIGINT NOT NULL,
    size      BIGINT NOT NULL,
    mtime_ns  BIGINT NOT NULL,
    mode      BIGINT NOT NULL,
    uid       BIGINT NOT NULL,
    gid       BIGINT NOT NULL
);

CREATE TABLE events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    path          TEXT NOT NULL,
    old_path      TEXT,
    size          BIGINT,
    mtime_ms      BIGINT,
    observed_ms   BIGINT NOT NULL,
    cause_run_id  TEXT,
    chain_depth   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    path          TEXT NOT NULL,
    old_path      TEXT,
    status        TEXT NOT NULL,
    reason        TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    chain_depth   BIGINT NOT NULL DEFAULT 0,
    queued_ms     BIGINT NOT NULL,
    started_ms    BIGINT,
    finished_ms   BIGINT,
    duration_ms   BIGINT,
    error         TEXT
);
CREATE INDEX runs_by_workflow ON runs (workflow, queued_ms);
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE attempts (
    run_id        TEXT NOT NULL,
    attempt       BIGINT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    started_ms    BIGINT NOT NULL,
    finished_ms   BIGINT,
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    attempt       BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    exit_code     BIGINT,
    started_ms    BIGINT,
    finished_ms   BIGINT,
    stdout        TEXT,
    stderr        TEXT,
    output        TEXT,
    error         TEXT,
    PRIMARY KEY (run_id, attempt, idx)
);
