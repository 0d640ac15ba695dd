-- Process counts per type as JSON ('' = one web), and whether ps:stop stopped the app.
ALTER TABLE apps ADD COLUMN formation TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN stopped BIGINT NOT NULL DEFAULT 0;
