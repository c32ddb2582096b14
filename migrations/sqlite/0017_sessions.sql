-- Dashboard sessions: an API key exchanged for a cookie. Only the token's
-- SHA-256 is kept; the key it came from (`key_id`) is checked again at
-- each request, so revoking the key ends its sessions.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_ms);
