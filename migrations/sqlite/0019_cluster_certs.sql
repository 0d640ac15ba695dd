-- Used on a swarm (Postgres) only; here so both stores share one schema version.
CREATE TABLE cluster_certs (
    stem TEXT PRIMARY KEY,
    chain TEXT NOT NULL,
    key TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- HTTP-01 answers while an order is open: any node's edge may be asked.
CREATE TABLE acme_challenges (
    token TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Small shared documents: the ACME account's credentials, its orders.
CREATE TABLE cluster_documents (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
