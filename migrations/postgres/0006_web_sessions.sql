-- Dashboard logins: one-time login tokens and the sessions they open. Only a
-- SHA-256 of each secret is stored. key_name '' is the host's local admin.
CREATE TABLE web_tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    key_name TEXT NOT NULL,
    csrf TEXT NOT NULL DEFAULT '',
    expires_at BIGINT NOT NULL
);
