-- Each app's traffic through the proxy, and its replicas, one row per
-- minute, for the metrics page's graphs. Kept two days, and over a restart
-- of serve. `buckets`: JSON, the requests that took at most each histogram
-- bound (the proxy's), then those that took longer. `memory`: JSON, each
-- running process's bytes (`web.1`), as last sampled in the minute.
CREATE TABLE traffic_minutes (
    app TEXT NOT NULL,
    minute BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    buckets TEXT NOT NULL,
    replicas BIGINT NOT NULL,
    memory TEXT NOT NULL,
    PRIMARY KEY (app, minute)
);
