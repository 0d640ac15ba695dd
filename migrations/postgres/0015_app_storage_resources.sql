-- Per app: its mounts (storage:mount, one `SOURCE:/path` per line) and its
-- resource limits (resources:set, one `TYPE memory=BYTES cpus=N` per line).
ALTER TABLE apps ADD COLUMN storage TEXT NOT NULL DEFAULT '';
ALTER TABLE apps ADD COLUMN resources TEXT NOT NULL DEFAULT '';
