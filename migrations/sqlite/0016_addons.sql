-- Per app: its add-ons (addons:create APP postgres). `secret` holds what the
-- add-on was made with (its password, its TLS certificate and key), sealed
-- with the home's secret key like config vars.
CREATE TABLE addons (
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app, kind)
);
