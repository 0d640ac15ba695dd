//! Backups of gantry itself: one archive with everything needed to bring
//! every app back on another machine, written while gantry runs.
//!
//! The archive is a gzipped tar holding `gantry-backup.json` (what it is:
//! its format, the gantry and schema that wrote it, the apps), the database
//! (`database/gantry.db`, a consistent copy made with SQLite's `VACUUM
//! INTO`, or `database/gantry.sql` from `pg_dump`), the home's own files
//! (`secret.key`, the SSH host key, `gantry.toml`, `certs/`, `acme/`,
//! `jobs/`, run logs) and every app's bare repository (refs copied before
//! objects, so a push during the backup never leaves a ref to a missing
//! object), and, when asked, the live release images (`docker save`).
//!
//! A restore unpacks into a scratch directory first and checks it all, so
//! a truncated archive, one of another format, or one from a newer gantry
//! changes nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::context::Gantry;
use crate::names::AppName;

/// The archive layout this gantry writes and reads.
pub const FORMAT: u32 = 1;

/// What the archive says of itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    /// The gantry version that wrote it.
    pub gantry: String,
    /// RFC 3339.
    pub created: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// The newest migration its database has.
    pub schema: i64,
    pub apps: Vec<String>,
    /// The images it carries (`gantry/APP:vN`).
    #[serde(default)]
    pub images: Vec<String>,
    /// The add-ons' data it carries, by their backup jobs (`APP/backup-postgres`).
    #[serde(default)]
    pub addons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a gantry backup, or it is damaged (truncated?): {1}")]
    Unreadable(String, String),
    #[error("{archive} is a gantry backup of format {found}; this gantry reads format {FORMAT}: restore it with the gantry version that wrote it ({gantry})")]
    Format {
        archive: String,
        found: u32,
        gantry: String,
    },
    #[error("{archive} was written by gantry {gantry}, whose database is newer (migration {schema}) than this gantry knows ({ours}): restore it with gantry {gantry} or newer")]
    Newer {
        archive: String,
        gantry: String,
        schema: i64,
        ours: i64,
    },
    #[error("{0} is not empty ({1}): a restore goes into a fresh home (--home DIR)")]
    NotEmpty(String, String),
    #[error("gantry serve runs on {0}: stop it before restoring into that home")]
    Running(String),
    #[error("this backup holds a {archive} database, and this home is configured for {home}: restore it into a home with the same kind of database")]
    DatabaseKind { archive: String, home: String },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot talk to the Docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Files and directories of the home an archive carries, as `home/NAME`.
const HOME_FILES: [&str; 8] = [
    "gantry.toml",
    "secret.key",
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "certs",
    "acme",
    "jobs",
    "runs",
];

/// The job whose runs keep backups; its own archives are not backed up.
pub const BACKUP_JOB: &str = "gantry.backup";

/// What `create` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: Manifest,
    pub bytes: u64,
}

/// Writes a backup of everything to `path` (a temporary file, renamed into
/// place when complete); with `images`, the live releases' images too.
pub async fn create(
    gantry: &Gantry,
    path: &Path,
    images: bool,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Written, BackupError> {
    let config = &gantry.config;
    let run_dir = config.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(&run_dir)
        .map_err(io(&run_dir))?;
    let sqlite = config.database_url.starts_with("sqlite:");
    let (db_name, kind) = if sqlite {
        ("gantry.db", "sqlite")
    } else {
        ("gantry.sql", "postgres")
    };
    let db_file = scratch.path().join(db_name);
    if sqlite {
        gantry.store.copy_sqlite_to(&db_file).await?;
    } else {
        pg_dump(&config.database_url, &db_file).await?;
    }
    on_line(&format!("database: {kind}, copied consistently"));
    let apps = gantry.store.list_apps().await?;
    let mut saved = Vec::new();
    if images {
        for app in &apps {
            let Some(release) = gantry.store.current_release(&app.name).await? else {
                continue;
            };
            if release.image.is_empty() {
                continue;
            }
            let file = scratch.path().join(format!("{}.image.tar", app.name));
            save_image(&gantry.docker, &release.image, &file).await?;
            on_line(&format!("image {} saved", release.image));
            saved.push(release.image.clone());
        }
    }
    // The add-ons' data, as their own backup jobs dump it, into addons/APP/.
    let mut addons = Vec::new();
    for doer in &gantry.app_upkeep {
        for job in doer.jobs(gantry).await {
            let suffix = job.name.rsplit('/').next().unwrap_or("backup").to_owned();
            let dir = scratch
                .path()
                .join("addons")
                .join(job.app.as_str())
                .join(&suffix);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let log_path = dir.join("backup.log");
            let mut log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
            doer.run(gantry, &job.app, &job.name, &mut log, &dir)
                .await
                .map_err(|e| BackupError::Command {
                    what: format!("backing up {}", job.name),
                    detail: format!("{e:#}"),
                })?;
            on_line(&format!("{}: its data dumped", job.name));
            addons.push(job.name);
        }
    }
    let manifest = Manifest {
        addons,
        format: FORMAT,
        gantry: env!("CARGO_PKG_VERSION").to_owned(),
        created: crate::time::now_rfc3339(),
        database: kind.to_owned(),
        schema: gantry.store.schema_version().await?,
        apps: apps.iter().map(|a| a.name.to_string()).collect(),
        images: saved,
    };
    let home = config.home.clone();
    let repos = config.repos_dir();
    let app_names: Vec<AppName> = apps.iter().map(|a| a.name.clone()).collect();
    let scratch_path = scratch.path().to_path_buf();
    let target = path.to_path_buf();
    let manifest_json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Unreadable("the manifest".into(), e.to_string()))?;
    let bytes = tokio::task::spawn_blocking(move || {
        write_archive(
            &target,
            &manifest_json,
            &scratch_path,
            &home,
            &repos,
            &app_names,
        )
    })
    .await
    .map_err(|e| BackupError::Unreadable("the backup".into(), e.to_string()))??;
    on_line(&format!(
        "{} app(s), {} image(s): {} ({})",
        manifest.apps.len(),
        manifest.images.len(),
        path.display(),
        crate::artifacts::human_bytes(bytes)
    ));
    Ok(Written { manifest, bytes })
}

fn write_archive(
    target: &Path,
    manifest: &[u8],
    scratch: &Path,
    home: &Path,
    repos: &Path,
    apps: &[AppName],
) -> Result<u64, BackupError> {
    let partial = target.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(io(&partial))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let result = (|| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(manifest.len() as u64);
        tar.append_data(&mut header, "gantry-backup.json", manifest)?;
        for entry in std::fs::read_dir(scratch)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "addons" {
                append_dir(&mut tar, &entry.path(), "addons", &|_| false)?;
                continue;
            }
            let inside = if name.ends_with(".image.tar") {
                format!("images/{name}")
            } else {
                format!("database/{name}")
            };
            tar.append_path_with_name(entry.path(), inside)?;
        }
        for name in HOME_FILES {
            let path = home.join(name);
            if path.is_file() {
                tar.append_path_with_name(&path, format!("home/{name}"))?;
            } else if path.is_dir() {
                append_dir(&mut tar, &path, &format!("home/{name}"), &|p: &Path| {
                    // The backups themselves are not backed up.
                    p.starts_with(home.join("runs").join(BACKUP_JOB))
                })?;
            }
        }
        for app in apps {
            let repo = repos.join(format!("{app}.git"));
            if !repo.is_dir() {
                continue;
            }
            let inside = format!("repos/{app}.git");
            // Refs first: every ref copied names objects copied after it.
            for part in [
                "HEAD",
                "config",
                "packed-refs",
                "refs",
                "description",
                "info",
            ] {
                let path = repo.join(part);
                if path.is_file() {
                    tar.append_path_with_name(&path, format!("{inside}/{part}"))?;
                } else if path.is_dir() {
                    append_dir(&mut tar, &path, &format!("{inside}/{part}"), &|_| false)?;
                }
            }
            append_dir(
                &mut tar,
                &repo.join("objects"),
                &format!("{inside}/objects"),
                &|_| false,
            )?;
        }
        Ok(())
    })();
    let finished = result.and_then(|()| tar.into_inner()?.finish()?.sync_all());
    if let Err(err) = finished {
        let _ = std::fs::remove_file(&partial);
        return Err(io(target)(err));
    }
    std::fs::rename(&partial, target).map_err(io(target))?;
    Ok(std::fs::metadata(target).map(|m| m.len()).unwrap_or(0))
}

/// Appends `dir` as `inside`, skipping what `skip` says (and hooks, which
/// gantry writes anew).
fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    inside: &str,
    skip: &dyn Fn(&Path) -> bool,
) -> std::io::Result<()> {
    tar.append_dir(inside, dir)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if skip(&path) {
            continue;
        }
        let name = format!("{inside}/{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            append_dir(tar, &path, &name, skip)?;
        } else if kind.is_file() {
            match std::fs::File::open(&path) {
                Ok(mut file) => tar.append_file(&name, &mut file)?,
                // A file that went away meanwhile (a temporary one of git's).
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

async fn save_image(docker: &bollard::Docker, image: &str, to: &Path) -> Result<(), BackupError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(to).await.map_err(io(to))?;
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?).await.map_err(io(to))?;
    }
    file.flush().await.map_err(io(to))?;
    Ok(())
}

async fn pg_dump(url: &str, to: &Path) -> Result<(), BackupError> {
    let out = tokio::process::Command::new("pg_dump")
        .args(["--no-owner", "--no-privileges", "--format=plain", "--file"])
        .arg(to)
        .arg(url)
        .output()
        .await
        .map_err(|e| BackupError::Command {
            what: "pg_dump (apt-get install postgresql-client)".into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BackupError::Command {
            what: "pg_dump".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// What a restore brought back.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    /// Add-ons' dumps to load once their servers run: (app, directory the
    /// backup job wrote), under the home.
    pub addon_dumps: Vec<(AppName, PathBuf)>,
    /// Apps whose live release's image is not in the engine: to build from
    /// their repositories.
    pub to_rebuild: Vec<AppName>,
    pub notes: Vec<String>,
}

/// Restores `archive` into `config`'s home, which must hold no gantry yet;
/// `database_url` is where a Postgres backup goes (else the home's own).
pub async fn restore(
    config: &Config,
    archive: &Path,
    database_url: Option<&str>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Restored, BackupError> {
    if crate::control::client::connect(&config.socket_path())
        .await
        .is_some()
    {
        return Err(BackupError::Running(config.home.display().to_string()));
    }
    check_empty(config)?;
    std::fs::create_dir_all(&config.home).map_err(io(&config.home))?;
    let unpacked = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(&config.home)
        .map_err(io(&config.home))?;
    let from = archive.to_path_buf();
    let into = unpacked.path().to_path_buf();
    let manifest = tokio::task::spawn_blocking(move || unpack(&from, &into))
        .await
        .map_err(|e| BackupError::Unreadable(archive.display().to_string(), e.to_string()))??;
    check_manifest(archive, &manifest)?;
    let unpacked = unpacked.path();
    on_line(&format!(
        "{}: gantry {}, {} app(s), written {}",
        archive.display(),
        manifest.gantry,
        manifest.apps.len(),
        manifest.created
    ));
    let mut notes = Vec::new();

    // The database first: it is the part most likely to refuse.
    let home_url = database_url
        .map(str::to_owned)
        .or_else(|| restored_database_url(unpacked))
        .unwrap_or_else(|| config.database_url.clone());
    let home_kind = if home_url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    if home_kind != manifest.database {
        return Err(BackupError::DatabaseKind {
            archive: manifest.database.clone(),
            home: home_kind.to_owned(),
        });
    }
    if home_kind == "sqlite" {
        let db_path = sqlite_path(&home_url);
        if let Some(parent) = db_path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let source = unpacked.join("database/gantry.db");
        std::fs::rename(&source, &db_path).map_err(io(&db_path))?;
    } else {
        let store = crate::store::Store::connect_bare(&home_url).await?;
        let tables = store.table_count().await?;
        store.close().await;
        if tables > 0 {
            return Err(BackupError::NotEmpty(
                crate::store::redact(&home_url),
                format!("{tables} table(s)"),
            ));
        }
        psql_file(&home_url, &unpacked.join("database/gantry.sql")).await?;
    }
    on_line("database restored");

    // The home's files; a gantry.toml already there stays, beside the backup's.
    let home_dir = unpacked.join("home");
    for name in HOME_FILES {
        let from = home_dir.join(name);
        if !from.exists() {
            continue;
        }
        let mut to = config.home.join(name);
        if name == "gantry.toml" && to.exists() {
            to = config.home.join("gantry.toml.from-backup");
            notes.push(format!(
                "kept this home's gantry.toml; the backup's is {}",
                to.display()
            ));
        }
        if to.exists() && to.is_dir() {
            merge_dir(&from, &to)?;
        } else {
            std::fs::rename(&from, &to).map_err(io(&to))?;
        }
    }
    let repos = unpacked.join("repos");
    if repos.is_dir() {
        std::fs::create_dir_all(config.repos_dir()).map_err(io(&config.repos_dir()))?;
        merge_dir(&repos, &config.repos_dir())?;
    }
    on_line("secret key, certificates, jobs and repositories restored");

    // Images it carries go back into the engine.
    let docker = crate::context::connect_docker()
        .await
        .map_err(|e| BackupError::Command {
            what: "connecting to Docker".into(),
            detail: format!("{e:#}"),
        })?;
    let images = unpacked.join("images");
    if images.is_dir() {
        for entry in std::fs::read_dir(&images).map_err(io(&images))?.flatten() {
            load_image(&docker, &entry.path()).await?;
        }
        on_line(&format!("{} image(s) loaded", manifest.images.len()));
    }
    // The add-ons' dumps wait in the home until their servers run.
    let mut addon_dumps = Vec::new();
    let dumps = unpacked.join("addons");
    if dumps.is_dir() {
        let kept = config.home.join("restored-addons");
        std::fs::rename(&dumps, &kept).map_err(io(&kept))?;
        for app_dir in std::fs::read_dir(&kept).map_err(io(&kept))?.flatten() {
            let Ok(app) = AppName::parse(&app_dir.file_name().to_string_lossy()) else {
                continue;
            };
            for job_dir in std::fs::read_dir(app_dir.path())
                .map_err(io(&kept))?
                .flatten()
            {
                addon_dumps.push((app.clone(), job_dir.path()));
            }
        }
    }
    let store = crate::store::Store::connect(&home_url).await?;
    let mut to_rebuild = Vec::new();
    for app in store.list_apps().await? {
        if let Some(release) = store.current_release(&app.name).await? {
            if docker.inspect_image(&release.image).await.is_err() {
                to_rebuild.push(app.name.clone());
            }
        }
    }
    store.close().await;
    Ok(Restored {
        manifest,
        addon_dumps,
        to_rebuild,
        notes,
    })
}

fn check_empty(config: &Config) -> Result<(), BackupError> {
    let home = config.home.display().to_string();
    if config.database_url.starts_with("sqlite:") {
        let db = sqlite_path(&config.database_url);
        if db.exists() {
            return Err(BackupError::NotEmpty(
                home,
                format!("it has {}", db.display()),
            ));
        }
    }
    let repos = config.repos_dir();
    if std::fs::read_dir(&repos).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::NotEmpty(
            home,
            "it has app repositories".into(),
        ));
    }
    if config.home.join("secret.key").exists() {
        return Err(BackupError::NotEmpty(home, "it has a secret.key".into()));
    }
    Ok(())
}

fn check_manifest(archive: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    if manifest.format != FORMAT {
        return Err(BackupError::Format {
            archive: archive.display().to_string(),
            found: manifest.format,
            gantry: manifest.gantry.clone(),
        });
    }
    let ours = crate::store::Store::latest_schema(&manifest.database);
    if manifest.schema > ours {
        return Err(BackupError::Newer {
            archive: archive.display().to_string(),
            gantry: manifest.gantry.clone(),
            schema: manifest.schema,
            ours,
        });
    }
    Ok(())
}

/// Unpacks the whole archive (a truncated one fails here, before anything
/// in the home changed) and reads its manifest.
fn unpack(archive: &Path, into: &Path) -> Result<Manifest, BackupError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        BackupError::Unreadable(archive.display().to_string(), e.to_string())
    };
    let file = std::fs::File::open(archive).map_err(io(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.unpack(into).map_err(|e| unreadable(&e))?;
    let mut text = String::new();
    std::fs::File::open(into.join("gantry-backup.json"))
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|_| unreadable(&"it has no gantry-backup.json"))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| unreadable(&e))?;
    let db = if manifest.database == "sqlite" {
        "database/gantry.db"
    } else {
        "database/gantry.sql"
    };
    if !into.join(db).is_file() {
        return Err(unreadable(&format!("it has no {db}")));
    }
    Ok(manifest)
}

/// The `database_url` of the backup's gantry.toml, if it names one.
fn restored_database_url(unpacked: &Path) -> Option<String> {
    let text = std::fs::read_to_string(unpacked.join("home/gantry.toml")).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    value.get("database_url")?.as_str().map(str::to_owned)
}

fn sqlite_path(url: &str) -> PathBuf {
    PathBuf::from(
        url.trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default(),
    )
}

/// Moves everything in `from` into `to`, keeping what `to` has.
fn merge_dir(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))?.flatten() {
        let target = to.join(entry.file_name());
        if target.is_dir() && entry.path().is_dir() {
            merge_dir(&entry.path(), &target)?;
        } else if !target.exists() {
            std::fs::rename(entry.path(), &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

async fn psql_file(url: &str, file: &Path) -> Result<(), BackupError> {
    let out = tokio::process::Command::new("psql")
        .args(["--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--file"])
        .arg(file)
        .arg(url)
        .output()
        .await
        .map_err(|e| BackupError::Command {
            what: "psql (apt-get install postgresql-client)".into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BackupError::Command {
            what: "psql".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

async fn load_image(docker: &bollard::Docker, file: &Path) -> Result<(), BackupError> {
    use futures_util::StreamExt;
    let opened = tokio::fs::File::open(file).await.map_err(io(file))?;
    let body = tokio_util::io::ReaderStream::new(opened);
    let mut loading = docker.import_image_stream(
        bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build(),
        body,
        None,
    );
    while let Some(item) = loading.next().await {
        if let Some(detail) = item?.error_detail {
            return Err(BackupError::Command {
                what: format!("docker load of {}", file.display()),
                detail: detail.message.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// The archives the backup job keeps: the newest `keep` of its runs'.
pub fn prune_kept(runs_dir: &Path, keep: usize) -> Vec<PathBuf> {
    let dir = runs_dir.join(BACKUP_JOB);
    let mut archives: Vec<(i64, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let number: i64 = name.strip_suffix(".artifacts")?.parse().ok()?;
            Some((number, e.path()))
        })
        .collect();
    archives.sort();
    let mut removed = Vec::new();
    let excess = archives.len().saturating_sub(keep.max(1));
    for (_, path) in archives.into_iter().take(excess) {
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".tar.gz") {
                let _ = std::fs::remove_file(entry.path());
                removed.push(entry.path());
            }
        }
    }
    removed
}

/// `gantry.backup`: a backup every day, kept as the run's artifacts (and
/// copied to `[backup] dir`), the newest `[backup] keep` of them. Critical:
/// a missed or failed backup alerts.
pub struct BackupJob;

#[async_trait::async_trait]
impl crate::context::Upkeep for BackupJob {
    fn name(&self) -> &'static str {
        BACKUP_JOB
    }

    fn schedule(&self) -> &'static str {
        // Every day at 03:17.
        "17 3 * * *"
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(6 * 3600)
    }

    fn enabled(&self, config: &Config) -> bool {
        config.backup.enabled
    }

    fn critical(&self, _config: &Config) -> bool {
        true
    }

    async fn run(
        &self,
        gantry: &Gantry,
        log: &mut std::fs::File,
        artifacts: &Path,
    ) -> anyhow::Result<()> {
        let settings = &gantry.config.backup;
        let stamp = crate::time::now_rfc3339().replace(':', "");
        let name = format!("gantry-{stamp}.tar.gz");
        let file = artifacts.join(&name);
        let mut lines = Vec::new();
        let written = create(gantry, &file, settings.images, &mut |line| {
            lines.push(line.to_owned())
        })
        .await;
        for line in &lines {
            writeln!(log, "{line}")?;
        }
        let written = written?;
        writeln!(
            log,
            "wrote {} ({}), a run artifact",
            name,
            crate::artifacts::human_bytes(written.bytes)
        )?;
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir)?;
            let copy = dir.join(&name);
            std::fs::copy(&file, &copy)?;
            writeln!(log, "copied to {}", copy.display())?;
            let mut kept: Vec<PathBuf> = std::fs::read_dir(dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with("gantry-") && n.ends_with(".tar.gz")
                    })
                })
                .collect();
            kept.sort();
            let excess = kept.len().saturating_sub(settings.keep.max(1));
            for old in kept.into_iter().take(excess) {
                std::fs::remove_file(&old)?;
                writeln!(log, "removed {} (keeping {})", old.display(), settings.keep)?;
            }
        }
        for old in prune_kept(&gantry.config.runs_dir(), settings.keep) {
            writeln!(log, "removed {} (keeping {})", old.display(), settings.keep)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_archives_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in 1..=4 {
            let run = dir.path().join(BACKUP_JOB).join(format!("{n}.artifacts"));
            std::fs::create_dir_all(&run).expect("mkdir");
            std::fs::write(run.join(format!("gantry-{n}.tar.gz")), b"x").expect("write");
        }
        let removed = prune_kept(dir.path(), 2);
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|p| {
            let s = p.display().to_string();
            s.contains("/1.artifacts/") || s.contains("/2.artifacts/")
        }));
    }

    #[test]
    fn a_manifest_of_another_format_or_a_newer_schema_is_refused() {
        let manifest = Manifest {
            format: FORMAT + 1,
            gantry: "9.9.9".into(),
            created: String::new(),
            database: "sqlite".into(),
            schema: 1,
            apps: vec![],
            images: vec![],
            addons: vec![],
        };
        let archive = Path::new("b.tar.gz");
        assert!(matches!(
            check_manifest(archive, &manifest),
            Err(BackupError::Format { found, .. }) if found == FORMAT + 1
        ));
        let newer = Manifest {
            format: FORMAT,
            schema: 999_999,
            ..manifest
        };
        assert!(matches!(
            check_manifest(archive, &newer),
            Err(BackupError::Newer { .. })
        ));
    }
}
