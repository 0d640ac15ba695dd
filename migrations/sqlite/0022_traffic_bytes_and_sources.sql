-- Bytes in and out per app and minute, and a row per source: each proxy
-- that counts (serve's, and on a swarm every node's edge proxy, named by
-- its installation, host:home) writes only its own rows, so writers never
-- race; readers add a minute's rows up. `memory` then holds what that
-- source could see of the app's processes on its own engine.
CREATE TABLE traffic_minutes_new (
    app TEXT NOT NULL,
    minute BIGINT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    buckets TEXT NOT NULL,
    replicas BIGINT NOT NULL,
    memory TEXT NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    sent BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (app, minute, source)
);
INSERT INTO traffic_minutes_new (app, minute, source, requests, errors, buckets, replicas, memory)
    SELECT app, minute, '', requests, errors, buckets, replicas, memory FROM traffic_minutes;
DROP TABLE traffic_minutes;
ALTER TABLE traffic_minutes_new RENAME TO traffic_minutes;
