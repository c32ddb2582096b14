-- The decision log: per event, what each workflow near it decided (JSON:
-- runs started or skipped, and why the others whose patterns matched did
-- not run). Events are found by path.
ALTER TABLE events ADD COLUMN decisions TEXT;
CREATE INDEX events_by_path ON events (path, observed_ms);
