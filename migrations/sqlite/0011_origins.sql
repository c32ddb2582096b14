-- Each data dir has an identity, its origin (DATA/.nexus/origin): the file
-- index is one per origin, events and runs say which data dir they came
-- from, and a run that touches files is claimed only by a node serving its
-- origin (`anywhere`: every step a webhook, so any node may run it). Events
-- and attempts say which node recorded or ran them. Rows from before have
-- the empty origin; the first agent to start takes them as its own.
CREATE TABLE file_index_by_origin (
    origin    TEXT NOT NULL DEFAULT '',
    path      TEXT NOT NULL,
    ino       INTEGER NOT NULL,
    dev       INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    mode      INTEGER NOT NULL,
    uid       INTEGER NOT NULL,
    gid       INTEGER NOT NULL,
    xattrs    INTEGER NOT NULL DEFAULT 0,
    hash      INTEGER,
    racy      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, path)
) WITHOUT ROWID;
INSERT INTO file_index_by_origin (origin, path, ino, dev, size, mtime_ns, mode, uid, gid, xattrs, hash, racy)
    SELECT '', path, ino, dev, size, mtime_ns, mode, uid, gid, xattrs, hash, racy FROM file_index;
DROP TABLE file_index;
ALTER TABLE file_index_by_origin RENAME TO file_index;
ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN node TEXT;
ALTER TABLE runs ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN anywhere INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN node TEXT;
-- Per-key order across nodes: a claim takes only the oldest unfinished run
-- of its workflow, path and origin.
CREATE INDEX runs_unfinished_key ON runs (origin, workflow, path)
    WHERE status IN ('queued', 'running', 'retrying');
-- The rows from before origins, found at once (empty once taken).
CREATE INDEX events_without_origin ON events (id) WHERE origin = '';
CREATE INDEX runs_without_origin ON runs (id) WHERE origin = '';
