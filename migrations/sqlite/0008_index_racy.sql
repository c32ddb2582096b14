-- Entries seen within a clock tick of their mtime: an identical stat of
-- one is settled by the content hash (1), not trusted (0: proven by a look
-- far enough from the mtime).
ALTER TABLE file_index ADD COLUMN racy INTEGER NOT NULL DEFAULT 0;
