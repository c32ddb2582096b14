-- Backfills: a run for every file already in a data dir that a
-- workflow's `file.created` triggers match. The files are taken in path
-- order, a batch at a time; each batch's events and runs are committed
-- with the path it ended at (`after_path`), so a backfill taken up again
-- (after a crash, on any node serving its origin) goes on from there and
-- starts no file twice. Its runs name it (`runs.backfill`).
CREATE TABLE backfills (
    id          TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    origin      TEXT NOT NULL,
    path_glob   TEXT,
    actor       TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    planned     BIGINT NOT NULL,
    after_path  TEXT NOT NULL DEFAULT '',
    started     BIGINT NOT NULL DEFAULT 0,
    finished_ms BIGINT,
    error       TEXT
);
-- One unfinished backfill per workflow and data dir: two at once would
-- start every file twice.
CREATE UNIQUE INDEX backfills_unfinished ON backfills (origin, workflow) WHERE finished_ms IS NULL;
ALTER TABLE runs ADD COLUMN backfill TEXT;
CREATE INDEX runs_backfill ON runs (backfill, status) WHERE backfill IS NOT NULL;
