-- The same schema as migrations/sqlite/0005_api.sql, in PostgreSQL's types.
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    display_name  TEXT,
    email         TEXT,
    role          TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users (name),
    secret_hash   TEXT NOT NULL,
    description   TEXT,
    created_ms    BIGINT NOT NULL,
    last_used_ms  BIGINT,
    revoked_ms    BIGINT
);

-- The live definitions, one row per document (a Workflow or a Pipeline),
-- as applied: the canonical JSON of the document and its hash.
CREATE TABLE definitions (
    name          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    document      TEXT NOT NULL,
    hash          TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    source        TEXT NOT NULL,
    applied_by    TEXT NOT NULL,
    applied_ms    BIGINT NOT NULL
);

-- Every change to a definition; `document` is NULL for a removal.
CREATE TABLE definition_revisions (
    name          TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    action        TEXT NOT NULL,
    document      TEXT,
    hash          TEXT,
    source        TEXT NOT NULL,
    applied_by    TEXT NOT NULL,
    applied_ms    BIGINT NOT NULL,
    PRIMARY KEY (name, revision)
);

-- Paused workflows (by workflow, stage or pipeline name); kept apart from
-- the definitions so a pause survives re-apply.
CREATE TABLE paused (
    name          TEXT PRIMARY KEY,
    paused_by     TEXT NOT NULL,
    paused_ms     BIGINT NOT NULL
);

-- Who caused an event through the API (a file write, a trigger).
ALTER TABLE events ADD COLUMN actor TEXT;
