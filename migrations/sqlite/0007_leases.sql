-- Leases: the node running a run, until when, and a fencing counter that
-- every claim raises, so a node that lost a run cannot record over it.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE runs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
