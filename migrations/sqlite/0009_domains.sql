-- Custom domains: extra host names an app answers on, beside APP.DOMAIN.
CREATE TABLE domains (
    host TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
CREATE INDEX domains_by_app ON domains (app);
