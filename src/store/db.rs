//! The database handle: connecting (SQLite or Postgres, migrations applied),
//! the store's error, and the numbering shared by runs and releases.

use std::path::Path;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    #[error("cannot create the database directory {0}: {1}")]
    Dir(String, std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(super) pool: AnyPool,
    /// Postgres (else SQLite): it has LISTEN/NOTIFY.
    pub(super) postgres: bool,
    /// The manager this handle works for (see [`Store::for_runner`]).
    pub(super) runner: std::sync::Arc<str>,
}

/// Takes the next number in `scope` (`run:JOB`, `release:APP`) inside `tx`.
///
/// The upsert is the transaction's first statement, so it takes the write lock
/// before reading: on Postgres the counter row's lock makes concurrent callers
/// wait their turn until commit, and SQLite never has to upgrade a read
/// transaction (which fails with SQLITE_BUSY under load).
pub(super) async fn next_number(tx: &mut sqlx::AnyConnection, scope: &str) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO counters (scope, last) VALUES ($1, 1) \
         ON CONFLICT (scope) DO UPDATE SET last = counters.last + 1 RETURNING last",
    )
    .bind(scope)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.try_get::<i64, _>("last")?)
}

/// Hides a password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let mut url = url.to_owned();
        if is_sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            if let Some(parent) = Path::new(&path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::Dir(parent.display().to_string(), e))?;
                }
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 8 })
            .connect(&url)
            .await?;
        if is_sqlite {
            // WAL lets the CLI read while `serve` writes.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        }
        Ok(Store {
            pool,
            postgres: !is_sqlite,
            runner: "".into(),
        })
    }

    /// This handle as the one of manager `runner`: the runs it queues are
    /// its own, and a restart takes back only those.
    pub fn for_runner(mut self, runner: &str) -> Store {
        self.runner = runner.into();
        self
    }

    /// The manager this handle works for; empty on one machine.
    pub fn runner(&self) -> &str {
        &self.runner
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Connects to `url` as it is, without applying migrations (to look at
    /// a database before a restore fills it).
    pub async fn connect_bare(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        Ok(Store {
            pool,
            postgres: url.starts_with("postgres"),
            runner: "".into(),
        })
    }

    /// Tables in a Postgres database's public schema (0: empty).
    pub async fn table_count(&self) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// The newest migration this database has.
    pub async fn schema_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
    }

    /// The newest migration this gantry has for a `sqlite` or `postgres` database.
    pub fn latest_schema(kind: &str) -> i64 {
        let migrator = match kind {
            "sqlite" => sqlx::migrate!("migrations/sqlite"),
            _ => sqlx::migrate!("migrations/postgres"),
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// A consistent copy of a SQLite database at `to` (`VACUUM INTO`: it
    /// reads one snapshot while writers go on).
    pub async fn copy_sqlite_to(&self, to: &Path) -> Result<()> {
        let target = to.display().to_string().replace('\'', "''");
        sqlx::query(&format!("VACUUM INTO '{target}'"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// The channel on which serve tells edge proxies that the routes changed.
pub const ROUTES_CHANNEL: &str = "gantry_routes";

impl Store {
    /// Publishes the whole route table (as JSON) for the edge proxies and
    /// returns its version; on Postgres, listeners on [`ROUTES_CHANNEL`]
    /// are told.
    pub async fn publish_routes(&self, state: &str) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO published_routes (id, version, state, updated_at) VALUES (1, 1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET version = published_routes.version + 1, \
             state = excluded.state, updated_at = excluded.updated_at RETURNING version",
        )
        .bind(state)
        .bind(crate::time::now_ms())
        .fetch_one(&self.pool)
        .await?;
        let version: i64 = row.try_get("version")?;
        if self.postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(ROUTES_CHANNEL)
                .bind(version.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(version)
    }

    /// The published route table: its version and JSON, if any.
    pub async fn published_routes(&self) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT version, state FROM published_routes WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("version")?, row.try_get("state")?)))
            .transpose()
    }
}

/// A deploy of one app that holds the cluster-wide lock (see
/// [`Store::try_lock_deploy`]); dropping it lets the next one go.
pub struct DeployLease {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    key: i64,
}

impl std::fmt::Debug for DeployLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployLease")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for DeployLease {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let key = self.key;
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut *conn)
                        .await;
                    if unlocked.is_err() {
                        // Closing the session releases its locks too.
                        drop(conn.detach());
                    }
                });
            }
            Err(_) => drop(conn.detach()),
        }
    }
}

/// The advisory lock key of `app`'s deploys (the first 8 bytes of a
/// sha256, so every manager computes the same one).
fn deploy_key(app: &str) -> i64 {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("gantry deploy {app}").as_bytes(),
    );
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    i64::from_be_bytes(bytes)
}

impl Store {
    /// Takes the lock that lets one deploy of `app` run at a time across
    /// every manager sharing this Postgres (a session advisory lock, held
    /// by one pooled connection); `None` when another holds it. On SQLite,
    /// where one machine is all there is, the lease holds nothing.
    pub async fn try_lock_deploy(&self, app: &str) -> Result<Option<DeployLease>> {
        let key = deploy_key(app);
        if !self.postgres {
            return Ok(Some(DeployLease { conn: None, key }));
        }
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query("SELECT pg_try_advisory_lock($1) AS taken")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        let taken: bool = row.try_get("taken")?;
        Ok(taken.then_some(DeployLease {
            conn: Some(conn),
            key,
        }))
    }
}
