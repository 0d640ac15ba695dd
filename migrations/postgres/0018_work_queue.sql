-- The cluster's work queue: builds and host jobs that must run on a node
-- whose labels satisfy `requires` (K=V lines, sorted). A worker claims an
-- item for a lease it renews; `fence` grows with every claim, and every
-- write a worker makes names the fence it holds, so a worker whose lease
-- ran out (dead, or cut off) cannot write once another took the item over.
CREATE TABLE work (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    requires TEXT NOT NULL,
    spec TEXT NOT NULL,
    input BYTEA NOT NULL,
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
CREATE INDEX work_open ON work (id) WHERE state IN ('queued', 'running');

CREATE TABLE work_log (
    seq BIGSERIAL PRIMARY KEY,
    work_id BIGINT NOT NULL REFERENCES work (id) ON DELETE CASCADE,
    text TEXT NOT NULL
);
CREATE INDEX work_log_of ON work_log (work_id, seq);

-- The swarm's nodes and their labels, as serve last read them from Swarm
-- (workers cannot ask Swarm: only managers can).
CREATE TABLE cluster_nodes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    labels TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- Singletons (the scheduler, ...): one holder at a time, for a lease;
-- `term` grows with each new holder and fences the ones before.
CREATE TABLE leaders (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
