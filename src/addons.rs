//! Add-ons: services an app uses that gantry runs beside it, as Heroku's
//! and Dokku's do. One kind: `postgres`, a PostgreSQL server from the
//! default stack suite's own Debian packages (made into an image like a
//! runtime: nothing is pulled), in a container of its own on the apps'
//! network, its data on a volume of the app's, TLS on (a certificate gantry
//! made for it), a generated password, and `DATABASE_URL` set on the app
//! (`sslmode=require`, as Heroku's apps expect). Its daily `pg_dump` is the
//! critical job `APP/backup-postgres`, kept as run artifacts.
//!
//! The container is not one of the app's processes (its label is
//! `gantry.addon`, not `gantry.app`): deploys, scaling and rollbacks never
//! touch it, Docker restarts it, and `serve` starts any that is missing.

use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use serde::{Deserialize, Serialize};

use crate::context::{AppUpkeep, AppUpkeepJob, Gantry};
use crate::names::AppName;
use crate::runtime::{Attached, Interactive, Mount, OneOff, Owner, Streams, Task};

/// The kinds there are.
pub const KINDS: [&str; 1] = ["postgres"];

/// Label on an add-on's container: the app it belongs to.
pub const LABEL_ADDON: &str = "gantry.addon";

/// What an add-on was made with, sealed in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Made {
    /// The app's role's password.
    password: String,
    /// The `postgres` superuser's (only local connections use it).
    superuser: String,
    /// The server's TLS certificate and key (PEM).
    cert: String,
    key: String,
    /// The image it runs.
    image: String,
}

fn container_name(app: &AppName) -> String {
    format!("gantry-addon-{app}-postgres")
}

fn volume_name(app: &AppName) -> String {
    crate::storage::volume_name(app.as_str(), "postgres")
}

/// The URL the app connects with.
fn database_url(app: &AppName, made: &Made) -> String {
    format!(
        "postgres://app:{}@{}:5432/app?sslmode=require",
        made.password,
        container_name(app)
    )
}

/// `postgres://app:***@host:5432/app?sslmode=require`.
fn shown_url(app: &AppName) -> String {
    format!(
        "postgres://app:***@{}:5432/app?sslmode=require",
        container_name(app)
    )
}

fn check_kind(kind: &str) -> anyhow::Result<()> {
    if !KINDS.contains(&kind) {
        anyhow::bail!(
            "unknown add-on {kind:?}: gantry has {} (addons:create APP postgres)",
            KINDS.join(", ")
        );
    }
    Ok(())
}

fn random_secret(len: usize) -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// The server's entrypoint: a data directory made on first start (a role
/// and a database `app`, TLS, password logins over TLS only), then the
/// server, as `nobody`.
const SERVER: &str = r#"set -eu
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
DATA=/var/lib/gantry-postgres/data
mkdir -p /var/lib/gantry-postgres /var/run/postgresql
chown nobody:nogroup /var/lib/gantry-postgres /var/run/postgresql
as_pg() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
if [ ! -s "$DATA/PG_VERSION" ]; then
  rm -rf "$DATA"
  as_pg mkdir -p "$DATA"
  printf '%s\n' "$GANTRY_PG_SUPERUSER" > /tmp/pw && chown nobody /tmp/pw
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --pwfile=/tmp/pw --encoding=UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pw
  printf '%s\n' "$GANTRY_PG_CERT" > "$DATA/server.crt"
  printf '%s\n' "$GANTRY_PG_KEY" > "$DATA/server.key"
  chown nobody:nogroup "$DATA/server.crt" "$DATA/server.key"
  chmod 600 "$DATA/server.key"
  printf "listen_addresses = '*'\nssl = on\npassword_encryption = scram-sha-256\n" >> "$DATA/postgresql.conf"
  printf 'local all all trust\nhostssl all all 0.0.0.0/0 scram-sha-256\nhostssl all all ::/0 scram-sha-256\n' > "$DATA/pg_hba.conf"
  as_pg "$BIN/pg_ctl" -D "$DATA" -o "-c listen_addresses=''" -w start >/dev/null
  as_pg "$BIN/psql" -v ON_ERROR_STOP=1 -q -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD '$GANTRY_PG_PASSWORD'" -c "CREATE DATABASE app OWNER app"
  as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  echo "gantry: made the database app"
fi
exec setpriv --reuid=nobody --regid=nogroup --clear-groups "$BIN/postgres" -D "$DATA"
"#;

/// A client of the add-on's own image: `psql`, `pg_dump`, at the server's version.
fn client(command: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1); {command}"),
    ]
}

/// The PostgreSQL image, made from the default suite's packages on first need.
async fn image(gantry: &Gantry, on_line: &mut (dyn FnMut(&str) + Send)) -> anyhow::Result<String> {
    let config = &gantry.config;
    let suite = crate::build::stack::DEFAULT_SUITE;
    let stack = crate::build::stack::ensure(
        &gantry.docker,
        None,
        suite,
        &config.home,
        &config.stack_mirror,
        on_line,
    )
    .await?;
    let scratch = config.run_dir().join("addon-postgres");
    let provided = crate::build::debian::provide(
        &gantry.docker,
        &stack,
        crate::build::debian::POSTGRESQL,
        &scratch,
        on_line,
    )
    .await?;
    Ok(provided.run_image)
}

fn open_made(gantry: &Gantry, sealed: &str) -> anyhow::Result<Made> {
    let bytes = gantry.secrets.open(sealed)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Starts the add-on's server container (made if missing) and waits until
/// it accepts connections.
async fn start(gantry: &Gantry, app: &AppName, made: &Made) -> anyhow::Result<()> {
    let docker = &gantry.docker;
    let name = container_name(app);
    let exists = docker.inspect_container(&name, None).await.is_ok();
    if !exists {
        gantry.runtime.ensure_volume(app, &volume_name(app)).await?;
        let body = ContainerCreateBody {
            image: Some(made.image.clone()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), SERVER.into()]),
            cmd: Some(vec![]),
            env: Some(vec![
                format!("GANTRY_PG_PASSWORD={}", made.password),
                format!("GANTRY_PG_SUPERUSER={}", made.superuser),
                format!("GANTRY_PG_CERT={}", made.cert),
                format!("GANTRY_PG_KEY={}", made.key),
            ]),
            labels: Some(std::collections::HashMap::from([
                (LABEL_ADDON.to_owned(), app.to_string()),
                ("gantry.addon.kind".to_owned(), "postgres".to_owned()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(gantry.config.docker_network.clone()),
                binds: Some(vec![format!(
                    "{}:/var/lib/gantry-postgres",
                    volume_name(app)
                )]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await?;
    }
    let running = docker
        .inspect_container(&name, None)
        .await?
        .state
        .and_then(|s| s.running)
        .unwrap_or(false);
    if !running {
        docker.start_container(&name, None).await?;
    }
    wait_ready(gantry, &name).await
}

/// Until the server listens on TCP (during its first start it listens on
/// its socket only, while the database is made).
async fn wait_ready(gantry: &Gantry, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let info = gantry.docker.inspect_container(name, None).await?;
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|n| n.get(&gantry.config.docker_network).cloned())
            .and_then(|n| n.ip_address)
            .filter(|ip| !ip.is_empty());
        let state = info.state.unwrap_or_default();
        if let Some(ip) = ip {
            if tokio::net::TcpStream::connect((ip.as_str(), 5432))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        if state.running == Some(false) && state.restarting != Some(true) {
            let logs = crate::runtime::tail(&*gantry.runtime, name, 20).await;
            anyhow::bail!(
                "the postgres server stopped (exit {}):\n{}",
                state.exit_code.unwrap_or_default(),
                logs.join("\n")
            );
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the postgres server did not accept connections within 90 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `addons:create APP postgres`.
pub async fn create(
    gantry: &Gantry,
    app: &AppName,
    kind: &str,
    by: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<String> {
    check_kind(kind)?;
    if gantry
        .store
        .list_addons(Some(app))
        .await?
        .iter()
        .any(|a| a.kind == kind)
    {
        anyhow::bail!("{app} already has a {kind} add-on: addons:info {app}");
    }
    let image = image(gantry, on_line).await?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![container_name(app)])?;
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let cert = params.self_signed(&key)?;
    let made = Made {
        password: random_secret(32),
        superuser: random_secret(32),
        cert: cert.pem(),
        key: key.serialize_pem(),
        image,
    };
    let sealed = gantry.secrets.seal(&serde_json::to_vec(&made)?)?;
    gantry.store.create_addon(app, kind, &sealed).await?;
    if let Err(err) = start(gantry, app, &made).await {
        remove_container(gantry, app).await;
        let _ = gantry.runtime.remove_volume(&volume_name(app)).await;
        let _ = gantry.store.delete_addon(app, kind).await;
        return Err(err.context("the postgres add-on did not start; nothing was kept"));
    }
    let url = database_url(app, &made);
    let released = crate::deploy::releases::change_config(
        gantry,
        app,
        by,
        "Add postgres (DATABASE_URL)".into(),
        false,
        |vars| vars.set("DATABASE_URL".into(), url),
    )
    .await?;
    Ok(format!(
        "Created postgres for {app}: {} (TLS on), data on the volume {}\n{released}Backups: daily as the job {app}/backup-postgres (addons:backup {app} runs one now)\n",
        shown_url(app),
        volume_name(app)
    ))
}

/// `addons APP`.
pub async fn list(gantry: &Gantry, app: &AppName) -> anyhow::Result<String> {
    let addons = gantry.store.list_addons(Some(app)).await?;
    if addons.is_empty() {
        return Ok(format!(
            "{app} has no add-ons: addons:create {app} postgres\n"
        ));
    }
    let mut out = format!("{:<10} {:<12} CREATED\n", "ADD-ON", "STATE");
    for addon in addons {
        let state = container_state(gantry, app).await;
        out.push_str(&format!(
            "{:<10} {:<12} {}\n",
            addon.kind,
            state,
            crate::time::format_time(addon.created_at)
        ));
    }
    Ok(out)
}

async fn container_state(gantry: &Gantry, app: &AppName) -> String {
    match gantry
        .docker
        .inspect_container(&container_name(app), None)
        .await
    {
        Ok(info) => info
            .state
            .and_then(|s| s.status)
            .map_or_else(|| "unknown".into(), |s| s.to_string()),
        Err(_) => "missing".into(),
    }
}

/// `addons:info APP`.
pub async fn info(gantry: &Gantry, app: &AppName) -> anyhow::Result<String> {
    let addons = gantry.store.list_addons(Some(app)).await?;
    let Some(addon) = addons.first() else {
        anyhow::bail!("{app} has no add-ons: addons:create {app} postgres");
    };
    let made = open_made(gantry, &addon.secret)?;
    let version = gantry
        .docker
        .inspect_image(&made.image)
        .await
        .ok()
        .and_then(|i| {
            i.config?
                .labels?
                .get(crate::build::debian::LABEL_VERSION)
                .cloned()
        })
        .unwrap_or_default();
    let backups = gantry
        .store
        .list_runs(&backup_job(app), 5)
        .await
        .unwrap_or_default();
    let last = backups.first().map_or_else(
        || "none yet".to_owned(),
        |r| {
            format!(
                "#{} {} {}",
                r.number,
                r.status.as_str(),
                crate::time::format_time(r.queued_at)
            )
        },
    );
    Ok(format!(
        "=== {app} postgres\nState:     {}\nVersion:   PostgreSQL {} (Debian's postgresql {version})\nURL:       {} (the app's DATABASE_URL)\nContainer: {}\nVolume:    {}\nBackups:   {}/backup-postgres, daily; last {last}\nCreated:   {}\n",
        container_state(gantry, app).await,
        crate::build::debian::upstream_version(&version),
        shown_url(app),
        container_name(app),
        volume_name(app),
        app,
        crate::time::format_time(addon.created_at),
    ))
}

async fn remove_container(gantry: &Gantry, app: &AppName) {
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(err) = gantry
        .docker
        .remove_container(&container_name(app), Some(remove))
        .await
    {
        tracing::debug!(%app, error = %err, "no add-on container to remove");
    }
}

/// `addons:destroy APP postgres --force`: the server, its volume and data,
/// and `DATABASE_URL` (a new release) go.
pub async fn destroy(
    gantry: &Gantry,
    app: &AppName,
    kind: &str,
    by: &str,
) -> anyhow::Result<String> {
    check_kind(kind)?;
    let addons = gantry.store.list_addons(Some(app)).await?;
    let Some(addon) = addons.iter().find(|a| a.kind == kind) else {
        anyhow::bail!("{app} has no {kind} add-on");
    };
    let made = open_made(gantry, &addon.secret)?;
    remove_container(gantry, app).await;
    if let Err(err) = gantry.runtime.remove_volume(&volume_name(app)).await {
        tracing::warn!(%app, error = %err, "cannot remove the add-on's volume");
    }
    gantry.store.delete_addon(app, kind).await?;
    let url = database_url(app, &made);
    let unset = |vars: &mut crate::config_vars::ConfigVars| {
        if vars.get("DATABASE_URL") == Some(url.as_str()) {
            vars.unset("DATABASE_URL");
        }
    };
    let description = "Remove postgres (DATABASE_URL)".to_owned();
    let released = match crate::deploy::releases::change_config(
        gantry,
        app,
        by,
        description.clone(),
        false,
        unset,
    )
    .await
    {
        Ok(text) => text,
        // An app that needs the database does not start without it; the
        // add-on is gone either way, so the unset is recorded for the next
        // deploy and the failure told.
        Err(err) => {
            let recorded =
                crate::deploy::releases::change_config(gantry, app, by, description, true, unset)
                    .await?;
            format!(
                "{recorded}{app} did not start without DATABASE_URL, so its previous release keeps running (its database is gone):\n{err:#}\n"
            )
        }
    };
    Ok(format!(
        "Destroyed {app}'s postgres, its volume {} and its data\n{released}",
        volume_name(app)
    ))
}

/// Removes the add-ons' containers of an app being destroyed (their
/// volumes go with the app's, by `apps:destroy --volumes`).
pub async fn remove_for_app(gantry: &Gantry, app: &AppName) {
    remove_container(gantry, app).await;
}

/// Starts every add-on whose container is missing or stopped (`serve`
/// starting, a home restored on a new machine).
pub async fn ensure_all(gantry: &Gantry) {
    let Ok(addons) = gantry.store.list_addons(None).await else {
        return;
    };
    if addons.is_empty() {
        return;
    }
    // The apps' network, on a machine where serve never ran yet.
    if let Err(err) = gantry.runtime.prepare().await {
        tracing::error!(error = %err, "cannot make the apps' network for the add-ons");
        return;
    }
    for addon in addons {
        let made = match open_made(gantry, &addon.secret) {
            Ok(made) => made,
            Err(err) => {
                tracing::error!(app = %addon.app, error = %err, "cannot read the add-on's secret");
                continue;
            }
        };
        let mut made = made;
        if gantry.docker.inspect_image(&made.image).await.is_err() {
            match image(gantry, &mut |line| tracing::info!("{line}")).await {
                Ok(image) => made.image = image,
                Err(err) => {
                    tracing::error!(app = %addon.app, error = %err, "cannot make the postgres image");
                    continue;
                }
            }
        }
        if let Err(err) = start(gantry, &addon.app, &made).await {
            tracing::error!(app = %addon.app, error = %format!("{err:#}"), "cannot start the postgres add-on");
        }
    }
}

/// The app's add-on and what it was made with, or why not.
async fn postgres_of(gantry: &Gantry, app: &AppName) -> anyhow::Result<Made> {
    let addons = gantry.store.list_addons(Some(app)).await?;
    let addon = addons
        .iter()
        .find(|a| a.kind == "postgres")
        .ok_or_else(|| {
            anyhow::anyhow!("{app} has no postgres add-on: addons:create {app} postgres")
        })?;
    open_made(gantry, &addon.secret)
}

/// A one-off of the add-on's image on the apps' network.
fn task(app: &AppName, made: &Made, command: &str) -> Task {
    Task {
        owner: Owner::App {
            app: app.clone(),
            release: 0,
        },
        image: made.image.clone(),
        command: client(command),
        entrypoint: Some(vec![]),
        env: vec![format!("DATABASE_URL={}", database_url(app, made))],
        mounts: Vec::new(),
        working_dir: None,
        interactive: None,
    }
}

/// `addons:psql APP`: psql on the app's database, attached (`ssh -t`).
pub async fn psql(gantry: &Gantry, app: &AppName, streams: &mut Streams) -> anyhow::Result<i32> {
    let made = postgres_of(gantry, app).await?;
    let mut task = task(app, &made, r#"exec "$BIN/psql" "$DATABASE_URL""#);
    let stdin = streams.stdin.take();
    task.interactive = Some(Interactive {
        tty: streams.tty,
        stdin: stdin.is_some(),
    });
    let oneoff = OneOff::create(&gantry.runtime, &task).await?;
    let result = oneoff
        .attach(Attached {
            stdin,
            tty: streams.tty,
            stdout: &mut streams.stdout,
            stderr: &mut streams.stderr,
        })
        .await;
    oneoff.remove().await;
    Ok(result?)
}

/// The job that backs up an app's postgres.
pub fn backup_job(app: &AppName) -> String {
    format!("{app}/backup-postgres")
}

const DUMP: &str = "postgres.sql";

/// `APP/backup-postgres`: daily `pg_dump`s of every postgres add-on.
pub struct PostgresBackups;

#[async_trait::async_trait]
impl AppUpkeep for PostgresBackups {
    fn name(&self) -> &'static str {
        "postgres-backups"
    }

    async fn jobs(&self, gantry: &Gantry) -> Vec<AppUpkeepJob> {
        let Ok(addons) = gantry.store.list_addons(None).await else {
            return Vec::new();
        };
        addons
            .into_iter()
            .filter(|a| a.kind == "postgres")
            .map(|a| AppUpkeepJob {
                name: backup_job(&a.app),
                app: a.app,
                // Every day at 02:41.
                schedule: "41 2 * * *".into(),
                critical: true,
            })
            .collect()
    }

    async fn run(
        &self,
        gantry: &Gantry,
        app: &AppName,
        _job: &str,
        log: &mut std::fs::File,
        artifacts: &Path,
    ) -> anyhow::Result<()> {
        use std::io::Write;
        let made = postgres_of(gantry, app).await?;
        let mut task = task(
            app,
            &made,
            &format!(
                r#""$BIN/pg_dump" --clean --if-exists --no-owner --no-privileges --file /backup/{DUMP}.partial "$DATABASE_URL" && mv /backup/{DUMP}.partial /backup/{DUMP}"#
            ),
        );
        task.mounts.push(Mount {
            host: artifacts.to_path_buf(),
            path: "/backup".into(),
            read_only: false,
        });
        writeln!(log, "pg_dump of {app}'s database app")?;
        let mut lines = Vec::new();
        let code = crate::runtime::run_to_end(&gantry.runtime, &task, &mut |line| {
            lines.push(line.to_owned())
        })
        .await?;
        for line in &lines {
            writeln!(log, "{line}")?;
        }
        let dump = artifacts.join(DUMP);
        if code != 0 || !dump.is_file() {
            anyhow::bail!("pg_dump failed (exit {code})");
        }
        let size = std::fs::metadata(&dump).map(|m| m.len()).unwrap_or(0);
        writeln!(
            log,
            "kept {DUMP} ({}) as this run's artifact: addons:restore {app} RUN restores it",
            crate::artifacts::human_bytes(size)
        )?;
        Ok(())
    }
}

/// Loads the dump a backup job wrote into `dir` into the app's database.
pub async fn restore_dir(gantry: &Gantry, app: &AppName, dir: &Path) -> anyhow::Result<()> {
    let made = postgres_of(gantry, app).await?;
    if !dir.join(DUMP).is_file() {
        anyhow::bail!("{} holds no {DUMP}", dir.display());
    }
    let mut task = task(
        app,
        &made,
        &format!(r#""$BIN/psql" -v ON_ERROR_STOP=1 --quiet --file /backup/{DUMP} "$DATABASE_URL""#),
    );
    task.mounts.push(Mount {
        host: dir.to_path_buf(),
        path: "/backup".into(),
        read_only: true,
    });
    let mut lines = Vec::new();
    let code = crate::runtime::run_to_end(&gantry.runtime, &task, &mut |line| {
        lines.push(line.to_owned())
    })
    .await?;
    if code != 0 {
        anyhow::bail!("psql failed (exit {code}):\n{}", lines.join("\n"));
    }
    Ok(())
}

/// `addons:restore APP RUN`: the database as backup run RUN dumped it.
pub async fn restore(gantry: &Gantry, app: &AppName, run: i64) -> anyhow::Result<String> {
    let job = backup_job(app);
    let found = gantry.store.run(&job, run).await?;
    let Some(found) = found else {
        anyhow::bail!("{job} has no run #{run}: jobs:runs {job} lists them");
    };
    let artifacts: PathBuf = crate::jobs::artifacts_dir(gantry, &job, run);
    if !artifacts.join(DUMP).is_file() {
        anyhow::bail!(
            "{job} #{run} ({}) kept no dump to restore",
            found.status.as_str()
        );
    }
    restore_dir(gantry, app, &artifacts)
        .await
        .map_err(|e| e.context(format!("restoring {job} #{run}")))?;
    Ok(format!(
        "Restored {app}'s postgres from {job} #{run} ({})\n",
        crate::time::format_time(found.queued_at)
    ))
}
