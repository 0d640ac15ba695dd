//! What a swarm's machines share besides routes and work: certificates
//! (every node's proxy serves them), open HTTP-01 challenges (any node may
//! be asked) and small documents (the ACME account and its orders, so a
//! new leader carries on). Changes are announced on [`CERTS_CHANNEL`].

use sqlx::Row;

use super::db::{Result, Store};

/// The channel on which certificate and challenge changes are announced.
pub const CERTS_CHANNEL: &str = "gantry_certs";

/// A certificate as the cluster shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCert {
    /// The file stem (`HOST`, `_wildcard.DOMAIN`).
    pub stem: String,
    pub chain: String,
    pub key: String,
}

impl Store {
    async fn notify_certs(&self) -> Result<()> {
        if self.postgres {
            sqlx::query("SELECT pg_notify($1, 'changed')")
                .bind(CERTS_CHANNEL)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Shares a certificate (replacing the stem's).
    pub async fn share_cert(&self, cert: &SharedCert) -> Result<()> {
        sqlx::query(
            "INSERT INTO cluster_certs (stem, chain, key, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stem) DO UPDATE SET chain = excluded.chain, key = excluded.key, \
             updated_at = excluded.updated_at",
        )
        .bind(&cert.stem)
        .bind(&cert.chain)
        .bind(&cert.key)
        .bind(crate::time::now_ms())
        .execute(&self.pool)
        .await?;
        self.notify_certs().await
    }

    /// What changes when a certificate is shared: how many there are and
    /// when the last was written; cheap to ask before reading them all.
    pub async fn shared_certs_stamp(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(updated_at), 0) AS at FROM cluster_certs",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("at")?))
    }

    /// Every shared certificate, by stem.
    pub async fn shared_certs(&self) -> Result<Vec<SharedCert>> {
        let rows = sqlx::query("SELECT stem, chain, key FROM cluster_certs ORDER BY stem")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SharedCert {
                    stem: row.try_get("stem")?,
                    chain: row.try_get("chain")?,
                    key: row.try_get("key")?,
                })
            })
            .collect()
    }

    /// Opens an HTTP-01 challenge on every node.
    pub async fn open_challenge(&self, token: &str, answer: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_challenges (token, answer, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (token) DO UPDATE SET answer = excluded.answer",
        )
        .bind(token)
        .bind(answer)
        .bind(crate::time::now_ms())
        .execute(&self.pool)
        .await?;
        self.notify_certs().await
    }

    pub async fn close_challenge(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM acme_challenges WHERE token = $1")
            .bind(token)
            .execute(&self.pool)
            .await?;
        self.notify_certs().await
    }

    /// The open challenges: (token, answer).
    pub async fn open_challenges(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT token, answer FROM acme_challenges ORDER BY token")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("token")?, row.try_get("answer")?)))
            .collect()
    }

    /// A shared document, if written.
    pub async fn document(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT body FROM cluster_documents WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(row.try_get("body")?)).transpose()
    }

    pub async fn put_document(&self, name: &str, body: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO cluster_documents (name, body, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(body)
        .bind(crate::time::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
