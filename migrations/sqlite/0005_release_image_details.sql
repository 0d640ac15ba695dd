-- The image a release runs, by content (the tag can be reused after pruning),
-- its size, and the process formation it went live with.
ALTER TABLE releases ADD COLUMN image_id TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN image_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN formation TEXT NOT NULL DEFAULT '';
