-- The file index: what the data dir held when last seen. Events are derived
-- by comparing the tree with it, live and at start.
CREATE TABLE file_index (
    path      TEXT PRIMARY KEY,
    ino       INTEGER NOT NULL,
    dev       INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    mode      INTEGER NOT NULL,
    uid       INTEGER NOT NULL,
    gid       INTEGER NOT NULL
) WITHOUT ROWID;

-- Every event, in the order it was observed.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    path          TEXT NOT NULL,
    old_path      TEXT,
    size          INTEGER,
    mtime_ms      INTEGER,
    observed_ms   INTEGER NOT NULL,
    cause_run_id  TEXT,
    chain_depth   INTEGER NOT NULL DEFAULT 0
);

-- One execution of one workflow for one event. Times are integer
-- milliseconds since the Unix epoch, so both backends compare them alike.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    path          TEXT NOT NULL,
    old_path      TEXT,
    status        TEXT NOT NULL,
    reason        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    chain_depth   INTEGER NOT NULL DEFAULT 0,
    queued_ms     INTEGER NOT NULL,
    started_ms    INTEGER,
    finished_ms   INTEGER,
    duration_ms   INTEGER,
    error         TEXT
);
CREATE INDEX runs_by_workflow ON runs (workflow, queued_ms);
CREATE INDEX runs_by_status ON runs (status);

-- Each attempt of a run, with its error.
CREATE TABLE attempts (
    run_id        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    started_ms    INTEGER NOT NULL,
    finished_ms   INTEGER,
    PRIMARY KEY (run_id, attempt)
) WITHOUT ROWID;

-- Each step of each attempt.
CREATE TABLE steps (
    run_id        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    exit_code     INTEGER,
    started_ms    INTEGER,
    finished_ms   INTEGER,
    stdout        TEXT,
    stderr        TEXT,
    output        TEXT,
    error         TEXT,
    PRIMARY KEY (run_id, attempt, idx)
) WITHOUT ROWID;
