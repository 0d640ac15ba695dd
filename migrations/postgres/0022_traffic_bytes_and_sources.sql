-- Bytes in and out per app and minute, and a row per source: each proxy
-- that counts (serve's, and on a swarm every node's edge proxy, named by
-- its installation, host:home) writes only its own rows, so writers never
-- race; readers add a minute's rows up. `memory` then holds what that
-- source could see of the app's processes on its own engine.
ALTER TABLE traffic_minutes ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE traffic_minutes ADD COLUMN received BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_minutes ADD COLUMN sent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE traffic_minutes DROP CONSTRAINT traffic_minutes_pkey;
ALTER TABLE traffic_minutes ADD PRIMARY KEY (app, minute, source);
