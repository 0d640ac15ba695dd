-- Times are unix milliseconds: the sqlx Any driver carries only ints, floats, text and blobs.
CREATE TABLE keys (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    role TEXT NOT NULL,
    apps TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    deploy_branch TEXT,
    current_release BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE releases (
    app TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    image TEXT NOT NULL DEFAULT '',
    commit_sha TEXT NOT NULL,
    commit_message TEXT NOT NULL DEFAULT '',
    commit_author TEXT NOT NULL DEFAULT '',
    port BIGINT NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    build_ms BIGINT NOT NULL DEFAULT 0,
    build_log TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, version)
);
