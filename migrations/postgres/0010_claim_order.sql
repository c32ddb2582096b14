-- The unfinished runs in the order claims take them (oldest first): a
-- claim walks this index, not every unfinished run, however long the
-- backlog.
CREATE INDEX runs_unfinished ON runs (queued_ms, id) WHERE status IN ('queued', 'running', 'retrying');
