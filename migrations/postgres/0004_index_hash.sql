-- Extended attributes' signature and a content hash, so metadata-only
-- changes (xattrs, an mtime alone) are told from content changes.
ALTER TABLE file_index ADD COLUMN xattrs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE file_index ADD COLUMN hash BIGINT;
