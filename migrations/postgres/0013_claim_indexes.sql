-- The claims' indexes. A claim and the check for runs waiting unclaimed
-- find the runs whose lease ran out (or that nobody holds: no lease) by
-- their lease expiry, rather than reading every unfinished run another
-- node holds; a clean stop finds its node's runs by their owner.
CREATE INDEX runs_lease ON runs ((COALESCE(lease_until_ms, 0)))
    WHERE status IN ('queued', 'running', 'retrying');
CREATE INDEX runs_owner ON runs (owner)
    WHERE status IN ('queued', 'running', 'retrying');
