-- Each comparison of the whole tree with the index: when, why, what it found.
CREATE TABLE gaps (
    at_ms    INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    changes  INTEGER NOT NULL,
    scan_ms  INTEGER NOT NULL
);
