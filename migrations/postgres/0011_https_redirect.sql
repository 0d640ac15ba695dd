-- Per app: plain HTTP redirects to HTTPS once the host has a certificate (certs:redirect).
ALTER TABLE apps ADD COLUMN https_redirect BIGINT NOT NULL DEFAULT 0;
