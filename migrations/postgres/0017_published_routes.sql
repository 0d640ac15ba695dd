-- On a swarm, serve publishes its whole route table here (one row: the
-- table as JSON and a version that grows with each change) for the edge
-- proxy every node runs (`gantry edge`), which reads it again after each
-- notice on the `gantry_routes` channel (Postgres) and every 30 s.
CREATE TABLE published_routes (
    id INTEGER PRIMARY KEY,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
