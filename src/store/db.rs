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
        Ok(Store { pool })
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
        Ok(Store { pool })
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
