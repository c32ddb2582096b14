-- A re-run on the revision its original ran on (`--same-revision`), not
-- the live one: that revision's number, so that a node taking the run up
-- after a crash runs the same steps.
ALTER TABLE runs ADD COLUMN revision BIGINT;
