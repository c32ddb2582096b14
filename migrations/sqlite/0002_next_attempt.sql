-- When a retrying run's next attempt is due, so retries survive restarts.
ALTER TABLE runs ADD COLUMN next_attempt_ms INTEGER;
