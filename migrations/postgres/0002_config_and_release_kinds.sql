-- Config vars: the app's current set, and each release's snapshot; both sealed
-- (encrypted with the key in $GANTRY_HOME/secret.key), empty when there are none.
ALTER TABLE apps ADD COLUMN config TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN config TEXT NOT NULL DEFAULT '';
-- What made the release: deploy, config or rollback; and a one-line summary.
ALTER TABLE releases ADD COLUMN kind TEXT NOT NULL DEFAULT 'deploy';
ALTER TABLE releases ADD COLUMN description TEXT NOT NULL DEFAULT '';
