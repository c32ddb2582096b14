-- Each comparison of the whole tree with the index: when, why, what it found.
CREATE TABLE gaps (
    at_ms    BIGINT NOT NULL,
    reason   TEXT NOT NULL,
    changes  BIGINT NOT NULL,
    scan_ms  BIGINT NOT NULL
);
