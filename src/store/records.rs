//! Keys, apps, custom domains, releases and dashboard tokens: recorded and
//! answered, with no business rules.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::db::{is_unique_violation, next_number, Result, Store, StoreError};
use super::models::{
    AddonRecord, AppRecord, KeyRecord, Release, ReleaseKind, ReleaseStatus, Role, WebToken,
};
use crate::names::{AppName, KeyName};
use crate::time::now_ms;

impl Store {
    // ---- keys ----

    /// Registers a key. `public_key` must be canonical (`ALGO BASE64`, no comment).
    pub async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        let apps = key
            .apps
            .iter()
            .map(AppName::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let result = sqlx::query(
            "INSERT INTO keys (name, public_key, fingerprint, role, apps, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.name.as_str())
        .bind(&key.public_key)
        .bind(&key.fingerprint)
        .bind(key.role.as_str())
        .bind(apps)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Duplicate(format!(
                "a key named {:?} or the same public key",
                key.name.as_str()
            ))),
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces the apps a deployer key may touch.
    pub async fn set_key_apps(&self, name: &KeyName, apps: &[AppName]) -> Result<()> {
        let apps = apps
            .iter()
            .map(AppName::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let done = sqlx::query("UPDATE keys SET apps = $1 WHERE name = $2")
            .bind(apps)
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("key {:?}", name.as_str())));
        }
        Ok(())
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let rows =
            sqlx::query("SELECT name, public_key, fingerprint, role, apps FROM keys ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn key_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// The key whose canonical public key is `public_key`, if registered.
    pub async fn find_key(&self, public_key: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT name, public_key, fingerprint, role, apps FROM keys WHERE public_key = $1",
        )
        .bind(public_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn get_key(&self, name: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT name, public_key, fingerprint, role, apps FROM keys WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn remove_key(&self, name: &KeyName) -> Result<()> {
        let done = sqlx::query("DELETE FROM keys WHERE name = $1")
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("key {:?}", name.as_str())));
        }
        Ok(())
    }

    // ---- apps ----

    pub async fn create_app(&self, name: &AppName) -> Result<()> {
        let result = sqlx::query("INSERT INTO apps (name, created_at) VALUES ($1, $2)")
            .bind(name.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => {
                Err(StoreError::Duplicate(format!("app {name}")))
            }
            Err(err) => Err(err.into()),
        }
    }

    pub async fn get_app(&self, name: &AppName) -> Result<Option<AppRecord>> {
        let row = sqlx::query(
            "SELECT name, deploy_branch, current_release, created_at, config, keep_releases, formation, stopped, https_redirect, stack, storage, resources FROM apps WHERE name = $1",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(app_from_row).transpose()
    }

    pub async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let rows = sqlx::query(
            "SELECT name, deploy_branch, current_release, created_at, config, keep_releases, formation, stopped, https_redirect, stack, storage, resources FROM apps ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(app_from_row).collect()
    }

    /// Replaces the app's sealed config vars.
    pub async fn set_app_config(&self, app: &AppName, sealed: &str) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET config = $1 WHERE name = $2",
            sealed.to_owned(),
        )
        .await
    }

    /// Replaces the app's process formation (JSON).
    pub async fn set_formation(&self, app: &AppName, formation: &str) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET formation = $1 WHERE name = $2",
            formation.to_owned(),
        )
        .await
    }

    /// Replaces the app's mounts (`storage::to_stored`).
    pub async fn set_storage(&self, app: &AppName, storage: &str) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET storage = $1 WHERE name = $2",
            storage.to_owned(),
        )
        .await
    }

    /// Replaces the app's resource limits (`resources::to_stored`).
    pub async fn set_resources(&self, app: &AppName, resources: &str) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET resources = $1 WHERE name = $2",
            resources.to_owned(),
        )
        .await
    }

    /// Marks the app stopped (`ps:stop`) or not.
    pub async fn set_stopped(&self, app: &AppName, stopped: bool) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET stopped = $1 WHERE name = $2",
            i64::from(stopped),
        )
        .await
    }

    /// The stack (a Debian suite's name) the app's next build uses.
    pub async fn set_stack(&self, app: &AppName, stack: &str) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET stack = $1 WHERE name = $2",
            stack.to_owned(),
        )
        .await
    }

    /// Whether plain HTTP to the app redirects to HTTPS (`certs:redirect`).
    pub async fn set_https_redirect(&self, app: &AppName, on: bool) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET https_redirect = $1 WHERE name = $2",
            i64::from(on),
        )
        .await
    }

    /// Runs a one-value `UPDATE apps … WHERE name = $2` and reports an unknown app.
    async fn update_app<V>(&self, app: &AppName, sql: &'static str, value: V) -> Result<()>
    where
        V: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send,
    {
        let done = sqlx::query(sql)
            .bind(value)
            .bind(app.as_str())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {app}")));
        }
        Ok(())
    }

    /// Sets how many releases' images to keep (`None`: the default).
    pub async fn set_keep_releases(&self, app: &AppName, keep: Option<i64>) -> Result<()> {
        self.update_app(
            app,
            "UPDATE apps SET keep_releases = $1 WHERE name = $2",
            keep,
        )
        .await
    }

    /// Sets the branch whose pushes deploy (`None`: main or master).
    pub async fn set_deploy_branch(&self, app: &AppName, branch: Option<&str>) -> Result<()> {
        let branch = branch.map(str::to_owned);
        self.update_app(
            app,
            "UPDATE apps SET deploy_branch = $1 WHERE name = $2",
            branch,
        )
        .await
    }

    /// Deletes an app, its release records and its domains.
    pub async fn delete_app(&self, name: &AppName) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["releases", "domains", "addons"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE app = $1"))
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM counters WHERE scope = $1")
            .bind(format!("release:{name}"))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM apps WHERE name = $1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {name}")));
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- add-ons ----

    /// Records `app`'s add-on of `kind`; a second one of a kind is refused.
    pub async fn create_addon(&self, app: &AppName, kind: &str, secret: &str) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO addons (app, kind, secret, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(app.as_str())
        .bind(kind)
        .bind(secret)
        .bind(crate::time::now_ms())
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => {
                Err(StoreError::Duplicate(format!("the {kind} add-on of {app}")))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Every add-on (`app` set: that app's), oldest first.
    pub async fn list_addons(&self, app: Option<&AppName>) -> Result<Vec<AddonRecord>> {
        let rows = match app {
            Some(app) => {
                sqlx::query(
                    "SELECT app, kind, secret, created_at FROM addons WHERE app = $1 ORDER BY created_at",
                )
                .bind(app.as_str())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT app, kind, secret, created_at FROM addons ORDER BY created_at")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                let app: String = row.try_get("app")?;
                Ok(AddonRecord {
                    app: AppName::parse(&app).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    kind: row.try_get("kind")?,
                    secret: row.try_get("secret")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn delete_addon(&self, app: &AppName, kind: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM addons WHERE app = $1 AND kind = $2")
            .bind(app.as_str())
            .bind(kind)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("the {kind} add-on of {app}")));
        }
        Ok(())
    }

    // ---- domains ----

    /// Adds `host` to `app`; a host another app has is refused.
    pub async fn add_domain(&self, app: &AppName, host: &str) -> Result<()> {
        if let Some(owner) = self.domain_owner(host).await? {
            return Err(StoreError::Conflict(format!(
                "{host} already belongs to app {owner}"
            )));
        }
        sqlx::query("INSERT INTO domains (host, app, added_at) VALUES ($1, $2, $3)")
            .bind(host)
            .bind(app.as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes `host` from `app`; false if the app did not have it.
    pub async fn remove_domain(&self, app: &AppName, host: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM domains WHERE host = $1 AND app = $2")
            .bind(host)
            .bind(app.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn domain_owner(&self, host: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT app FROM domains WHERE host = $1")
            .bind(host)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("app")).transpose()?)
    }

    /// Every custom domain as (host, app), by host.
    pub async fn list_domains(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT host, app FROM domains ORDER BY host")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("host")?, r.try_get("app")?)))
            .collect()
    }

    // ---- releases ----

    /// Allocates the app's next release number and records it as building.
    pub async fn begin_release(&self, release: &Release) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let version = next_number(&mut tx, &format!("release:{}", release.app)).await?;
        sqlx::query(
            "INSERT INTO releases (app, version, status, image, commit_sha, commit_message, commit_author, port, created_by, created_at, build_ms, build_log, error, config, kind, description, image_id, image_size, formation, manifest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(release.app.as_str())
        .bind(version)
        .bind(ReleaseStatus::Building.as_str())
        .bind(&release.image)
        .bind(&release.commit_sha)
        .bind(&release.commit_message)
        .bind(&release.commit_author)
        .bind(i64::from(release.port))
        .bind(&release.created_by)
        .bind(now_ms())
        .bind(release.build_ms)
        .bind(&release.build_log)
        .bind(&release.error)
        .bind(&release.config)
        .bind(release.kind.as_str())
        .bind(&release.description)
        .bind(&release.image_id)
        .bind(release.image_size)
        .bind(&release.formation)
        .bind(&release.manifest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Records the outcome of a release (image, port, timings, log, status, and
    /// the manifest, which a buildpack's default processes complete).
    pub async fn finish_release(&self, release: &Release) -> Result<()> {
        sqlx::query(
            "UPDATE releases SET status = $1, image = $2, port = $3, build_ms = $4, build_log = $5, error = $6, \
             image_id = $7, image_size = $8, formation = $9, manifest = $10 WHERE app = $11 AND version = $12",
        )
        .bind(release.status.as_str())
        .bind(&release.image)
        .bind(i64::from(release.port))
        .bind(release.build_ms)
        .bind(&release.build_log)
        .bind(&release.error)
        .bind(&release.image_id)
        .bind(release.image_size)
        .bind(&release.formation)
        .bind(&release.manifest)
        .bind(release.app.as_str())
        .bind(release.version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks `version` as the app's live release.
    pub async fn set_current_release(&self, app: &AppName, version: i64) -> Result<()> {
        sqlx::query("UPDATE apps SET current_release = $1 WHERE name = $2")
            .bind(version)
            .bind(app.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn release(&self, app: &AppName, version: i64) -> Result<Option<Release>> {
        let row = sqlx::query(&format!(
            "{RELEASE_COLUMNS} WHERE app = $1 AND version = $2"
        ))
        .bind(app.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(release_from_row).transpose()
    }

    /// The app's live release, if it has one.
    pub async fn current_release(&self, app: &AppName) -> Result<Option<Release>> {
        let Some(record) = self.get_app(app).await? else {
            return Ok(None);
        };
        match record.current_release {
            Some(version) => self.release(app, version).await,
            None => Ok(None),
        }
    }

    /// The app's releases, newest first.
    pub async fn list_releases(&self, app: &AppName) -> Result<Vec<Release>> {
        let rows = sqlx::query(&format!(
            "{RELEASE_COLUMNS} WHERE app = $1 ORDER BY version DESC"
        ))
        .bind(app.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(release_from_row).collect()
    }

    /// Marks releases left `building` by a crashed or killed server as failed.
    pub async fn fail_interrupted_releases(&self) -> Result<u64> {
        let done = sqlx::query("UPDATE releases SET status = $1, error = $2 WHERE status = $3")
            .bind(ReleaseStatus::Failed.as_str())
            .bind("interrupted: gantry stopped during this deploy")
            .bind(ReleaseStatus::Building.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

impl Store {
    /// Records a dashboard token (`kind` login or session), dropping expired ones.
    pub async fn add_web_token(&self, token: &WebToken) -> Result<()> {
        sqlx::query("DELETE FROM web_tokens WHERE expires_at < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO web_tokens (id, kind, key_name, csrf, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&token.id)
            .bind(&token.kind)
            .bind(&token.key_name)
            .bind(&token.csrf)
            .bind(token.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The unexpired token with this id and kind.
    pub async fn web_token(&self, id: &str, kind: &str) -> Result<Option<WebToken>> {
        let row = sqlx::query(
            "SELECT id, kind, key_name, csrf, expires_at FROM web_tokens WHERE id = $1 AND kind = $2 AND expires_at >= $3",
        )
        .bind(id)
        .bind(kind)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(WebToken {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                key_name: row.try_get("key_name")?,
                csrf: row.try_get("csrf")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Deletes a token; returns whether it existed (a login token works once).
    pub async fn remove_web_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

const RELEASE_COLUMNS: &str = "SELECT app, version, status, image, commit_sha, commit_message, commit_author, port, created_by, created_at, build_ms, build_log, error, config, kind, description, image_id, image_size, formation, manifest FROM releases";

fn key_from_row(row: &AnyRow) -> Result<KeyRecord> {
    let name: String = row.try_get("name")?;
    let role: String = row.try_get("role")?;
    let apps: String = row.try_get("apps")?;
    Ok(KeyRecord {
        name: KeyName::parse(&name).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        public_key: row.try_get("public_key")?,
        fingerprint: row.try_get("fingerprint")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        apps: apps
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|a| AppName::parse(a).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<_>>()?,
    })
}

fn app_from_row(row: &AnyRow) -> Result<AppRecord> {
    let name: String = row.try_get("name")?;
    Ok(AppRecord {
        name: AppName::parse(&name).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        deploy_branch: row.try_get("deploy_branch")?,
        current_release: row.try_get("current_release")?,
        created_at: row.try_get("created_at")?,
        config: row.try_get("config")?,
        keep_releases: row.try_get("keep_releases")?,
        formation: row.try_get("formation")?,
        stopped: row.try_get::<i64, _>("stopped")? != 0,
        https_redirect: row.try_get::<i64, _>("https_redirect")? != 0,
        stack: row.try_get::<Option<String>, _>("stack")?,
        storage: row.try_get("storage")?,
        resources: row.try_get("resources")?,
    })
}

fn release_from_row(row: &AnyRow) -> Result<Release> {
    let app: String = row.try_get("app")?;
    let status: String = row.try_get("status")?;
    let kind: String = row.try_get("kind")?;
    let port: i64 = row.try_get("port")?;
    Ok(Release {
        app: AppName::parse(&app).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        version: row.try_get("version")?,
        status: ReleaseStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("release status {status:?}")))?,
        image: row.try_get("image")?,
        commit_sha: row.try_get("commit_sha")?,
        commit_message: row.try_get("commit_message")?,
        commit_author: row.try_get("commit_author")?,
        port: u16::try_from(port).map_err(|_| StoreError::Corrupt(format!("port {port}")))?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        build_ms: row.try_get("build_ms")?,
        build_log: row.try_get("build_log")?,
        error: row.try_get("error")?,
        config: row.try_get("config")?,
        kind: ReleaseKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("release kind {kind:?}")))?,
        description: row.try_get("description")?,
        image_id: row.try_get("image_id")?,
        image_size: row.try_get("image_size")?,
        formation: row.try_get("formation")?,
        manifest: row.try_get("manifest")?,
    })
}
