-- Re-runs: a run made again for its event links to the one it re-runs
-- (`rerun_of`, and each run's re-runs found by it). One from the failed
-- step starts at that step (`from_step`, its index) with the earlier
-- steps' recorded results (`carried`, JSON: `steps.NAME.*`), kept here so
-- that a node taking the run up after a crash starts it the same way.
ALTER TABLE runs ADD COLUMN rerun_of TEXT;
ALTER TABLE runs ADD COLUMN from_step BIGINT;
ALTER TABLE runs ADD COLUMN carried TEXT;
CREATE INDEX runs_reruns ON runs (rerun_of) WHERE rerun_of IS NOT NULL;
