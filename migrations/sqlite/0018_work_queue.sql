-- The cluster's work queue, its nodes and its singletons' leaders live in
-- Postgres (a swarm needs it); SQLite is one machine, where none of them
-- is used. The tables exist so both stores share one schema version.
CREATE TABLE work (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    requires TEXT NOT NULL,
    spec TEXT NOT NULL,
    input BLOB NOT NULL,
    state TEXT NOT NULL,
    worker TEXT NOT NULL DEFAULT '',
    fence BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0,
    cancel_asked BOOLEAN NOT NULL DEFAULT FALSE,
    code BIGINT,
    result TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE TABLE work_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    work_id BIGINT NOT NULL REFERENCES work (id) ON DELETE CASCADE,
    text TEXT NOT NULL
);
CREATE TABLE cluster_nodes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    labels TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);
CREATE TABLE leaders (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
