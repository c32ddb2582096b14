-- How each event entered the engine: `watch`, `scan` (a comparison of the
-- tree with the index) or `api` (a trigger; `actor` names its user).
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'watch';
