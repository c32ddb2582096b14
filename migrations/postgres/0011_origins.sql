-- Each data dir has an identity, its origin (DATA/.nexus/origin): the file
-- index is one per origin, events and runs say which data dir they came
-- from, and a run that touches files is claimed only by a node serving its
-- origin (`anywhere`: every step a webhook, so any node may run it). Events
-- and attempts say which node recorded or ran them. Rows from before have
-- the empty origin; the first agent to start takes them as its own.
ALTER TABLE file_index ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE file_index DROP CONSTRAINT file_index_pkey;
ALTER TABLE file_index ADD PRIMARY KEY (origin, path);
ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN node TEXT;
ALTER TABLE runs ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN anywhere BIGINT NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN node TEXT;
-- Per-key order across nodes: a claim takes only the oldest unfinished run
-- of its workflow, path and origin.
CREATE INDEX runs_unfinished_key ON runs (origin, workflow, path)
    WHERE status IN ('queued', 'running', 'retrying');
-- The rows from before origins, found at once (empty once taken).
CREATE INDEX events_without_origin ON events (id) WHERE origin = '';
CREATE INDEX runs_without_origin ON runs (id) WHERE origin = '';
