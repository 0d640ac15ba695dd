//! The one command grammar. `gantry keys:add …` on the host and
//! `ssh git@HOST keys:add …` parse into the same [`ManageCommand`] and run through
//! the same [`execute`]; only the transport and the [`Caller`] differ. Each
//! command parses its words, asks [`Caller`] whether it may, calls the
//! operation (in the parts below) and writes what people read.

mod addons;
mod apps;
mod artifacts;
mod config;
mod domains;
mod jobs;
mod keys;
mod nodes;
mod ps;
mod releases;
mod stacks;
mod storage;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::access::Caller;
use crate::context::Gantry;
use crate::names::AppName;
use crate::runtime::Streams;

/// Commands that manage gantry; the same over SSH and on the host.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum ManageCommand {
    /// Register an SSH key: an admin (--admin) or a deployer of some apps (--apps a,b)
    #[command(name = "keys:add")]
    KeysAdd {
        name: String,
        /// A public key file (`-` reads it from standard input, as over SSH)
        pubkey_file: String,
        /// The key may do anything
        #[arg(long, conflicts_with = "apps")]
        admin: bool,
        /// The key may push to and manage only these apps
        #[arg(long, value_delimiter = ',', value_name = "APP,...")]
        apps: Vec<String>,
    },
    /// List registered keys
    #[command(name = "keys:list")]
    KeysList,
    /// Remove a key
    #[command(name = "keys:remove")]
    KeysRemove { name: String },
    /// Create an app (pushing to an unknown app as admin creates it too)
    #[command(name = "apps:create")]
    AppsCreate { name: String },
    /// List apps
    #[command(name = "apps:list")]
    AppsList,
    /// Rename an app: config, domains, repository and the live release move to the new name
    #[command(name = "apps:rename")]
    AppsRename { old: String, new: String },
    /// Show an app: URL, stack, runtimes, domains, processes
    #[command(name = "apps:info")]
    AppsInfo { app: String },
    /// List the stacks (Debian suites) with their runtimes and age
    Stacks,
    /// Put an app on a stack (bookworm, trixie, forky) from its next build on
    #[command(name = "stack:set")]
    StackSet { app: String, stack: String },
    /// Make a new release of the live slug on its freshly built stack (no rebuild)
    #[command(name = "stack:rebase")]
    StackRebase { app: String },
    /// List an app's releases, newest first
    Releases { app: String },
    /// Show one release: what made it, its image, config var names and build log
    #[command(name = "releases:info")]
    ReleasesInfo {
        app: String,
        /// vN or N
        #[arg(value_name = "VERSION")]
        release: String,
    },
    /// Put an older release's image and config live again, as a new release
    #[command(name = "releases:rollback")]
    ReleasesRollback {
        app: String,
        /// vN or N [default: the release before the current one]
        #[arg(value_name = "VERSION")]
        release: Option<String>,
    },
    /// Show an app's config vars
    Config { app: String },
    /// Print one config var's value
    #[command(name = "config:get")]
    ConfigGet { app: String, key: String },
    /// Set config vars; makes a release and restarts the app with no downtime
    #[command(name = "config:set")]
    ConfigSet {
        app: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        assignments: Vec<String>,
        /// Record the release without restarting the running containers
        #[arg(long)]
        no_restart: bool,
        /// Each VALUE is base64 (Dokku's form for values with newlines or quotes)
        #[arg(long)]
        encoded: bool,
    },
    /// Print an app's config vars as shell `export` lines (or --format envfile, json)
    #[command(name = "config:export")]
    ConfigExport {
        app: String,
        #[arg(long, default_value = "exports", value_parser = ["exports", "envfile", "json", "shell"])]
        format: String,
    },
    /// Remove config vars; makes a release and restarts the app with no downtime
    #[command(name = "config:unset")]
    ConfigUnset {
        app: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Record the release without restarting the running containers
        #[arg(long)]
        no_restart: bool,
    },
    /// List an app's images: release, id, size, age, and the releases that use each
    Artifacts { app: String },
    /// Set an artifact option; today `keep` (how many releases' images to keep)
    #[command(name = "artifacts:set")]
    ArtifactsSet {
        app: String,
        #[arg(value_parser = ["keep"])]
        key: String,
        /// A number of releases (at least 1); omit it for the default (5)
        value: Option<String>,
    },
    /// The host names an app answers on: APP.DOMAIN and its custom domains
    Domains { app: String },
    /// Let an app answer on a domain of yours too (point its DNS here)
    #[command(name = "domains:add")]
    DomainsAdd { app: String, domain: String },
    /// Stop an app answering on a custom domain
    #[command(name = "domains:remove")]
    DomainsRemove { app: String, domain: String },
    /// Each of an app's hosts and its HTTPS certificate: issuer, names, expiry
    Certs { app: String },
    /// Install a certificate you bring: PEM chain and key files (`- -` reads both from standard input)
    #[command(name = "certs:add")]
    CertsAdd {
        app: String,
        cert_file: String,
        key_file: String,
    },
    /// Redirect plain HTTP to HTTPS for an app's hosts that have a certificate (on|off)
    #[command(name = "certs:redirect")]
    CertsRedirect {
        app: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Jobs: host jobs and app cron jobs, with their last run and next scheduled time
    Jobs,
    /// Queue a run of a job now, with KEY=VALUE parameters (its environment)
    #[command(name = "jobs:run")]
    JobsRun {
        job: String,
        params: Vec<String>,
        /// The run that started this one (set for you inside a job)
        #[arg(long, env = "GANTRY_PARENT_RUN", hide = true)]
        parent: Option<String>,
    },
    /// A job's runs, newest first: status, trigger, times, exit code or reason
    #[command(name = "jobs:runs")]
    JobsRuns { job: String },
    /// A run's log (the latest run by default); -f follows it until it ends
    #[command(name = "jobs:log")]
    JobsLog {
        job: String,
        run: Option<i64>,
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a queued or running run (a running one's process tree is killed)
    #[command(name = "jobs:cancel")]
    JobsCancel { job: String, run: i64 },
    /// Run a one-off command in a container of the live release, with its config
    Run {
        app: String,
        /// The command and its arguments (after `--`); use `sh -c '…'` for shell syntax
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Show an app's output; -f follows it across restarts and deploys
    Logs {
        app: String,
        /// Keep printing new output
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this process type
        #[arg(long = "ps", value_name = "TYPE")]
        process: Option<String>,
        /// How many past lines to show
        #[arg(short = 'n', long = "num", default_value_t = 100, value_name = "N")]
        lines: usize,
    },
    /// List an app's processes: type, replica, container, state, uptime, restarts
    Ps { app: String },
    /// Set how many containers of each process type run (web replicas are load-balanced)
    #[command(name = "ps:scale")]
    PsScale {
        app: String,
        #[arg(required = true, value_name = "TYPE=COUNT")]
        counts: Vec<String>,
    },
    /// Restart an app's processes with no downtime (fresh containers of the live release)
    #[command(name = "ps:restart")]
    PsRestart {
        app: String,
        #[arg(value_name = "TYPE")]
        process: Option<String>,
    },
    /// Stop an app's processes; the proxy answers 503 until ps:start or a deploy
    #[command(name = "ps:stop")]
    PsStop { app: String },
    /// Start a stopped app
    #[command(name = "ps:start")]
    PsStart { app: String },
    /// Print a one-time link that logs this key in to the dashboard
    #[command(name = "web:login")]
    WebLogin,
    /// Set an app's git option; today `deploy-branch` (empty: main or master)
    #[command(name = "git:set")]
    GitSet {
        app: String,
        #[arg(value_parser = ["deploy-branch"])]
        key: String,
        /// The new value; omit it to go back to the default
        value: Option<String>,
    },
    /// Destroy an app: its containers, images, repository and records
    #[command(name = "apps:destroy")]
    AppsDestroy {
        name: String,
        /// Really destroy it
        #[arg(long)]
        force: bool,
        /// Remove its volumes and their data too (kept otherwise)
        #[arg(long)]
        volumes: bool,
    },
    /// List the swarm's machines: address, role, availability, labels, apps' tasks (runtime = swarm)
    Nodes,
    /// Set labels on a node (KEY=VALUE; KEY= removes one): builds and jobs can require them
    #[command(name = "nodes:label")]
    NodesLabel {
        node: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        labels: Vec<String>,
    },
    /// Move every task off a node and give it no new ones (maintenance)
    #[command(name = "nodes:drain")]
    NodesDrain { node: String },
    /// Let a drained node take tasks again, and spread apps' tasks over all nodes
    #[command(name = "nodes:activate")]
    NodesActivate { node: String },
    /// Print the command that joins a new machine to the swarm
    #[command(name = "node:token")]
    NodeToken,
    /// List an app's mounts: volumes and host directories, and where it sees them
    Storage { app: String },
    /// Mount a volume (NAME, kept across deploys) or a host directory at PATH in every process of the app
    #[command(name = "storage:mount")]
    StorageMount {
        app: String,
        #[arg(value_name = "NAME:/PATH")]
        mount: String,
    },
    /// Unmount a volume or host directory (a volume keeps its data until the app is destroyed with --volumes)
    #[command(name = "storage:unmount")]
    StorageUnmount {
        app: String,
        #[arg(value_name = "NAME|NAME:/PATH")]
        mount: String,
    },
    /// List an app's add-ons (services gantry runs beside it)
    Addons { app: String },
    /// Create an add-on: postgres (a PostgreSQL server with TLS; sets DATABASE_URL)
    #[command(name = "addons:create")]
    AddonsCreate { app: String, kind: String },
    /// An app's add-on: state, version, URL (password hidden), volume, last backup
    #[command(name = "addons:info")]
    AddonsInfo { app: String },
    /// psql on the app's postgres (over SSH use ssh -t)
    #[command(name = "addons:psql")]
    AddonsPsql { app: String },
    /// Back up the app's postgres now (a run of APP/backup-postgres)
    #[command(name = "addons:backup")]
    AddonsBackup { app: String },
    /// Restore the app's postgres from backup run RUN of APP/backup-postgres
    #[command(name = "addons:restore")]
    AddonsRestore { app: String, run: i64 },
    /// Destroy an add-on and its data; DATABASE_URL is unset
    #[command(name = "addons:destroy")]
    AddonsDestroy {
        app: String,
        kind: String,
        /// Really destroy it and its data
        #[arg(long)]
        force: bool,
    },
    /// Show each process type's memory and CPU limits
    Resources { app: String },
    /// Limit a process type: memory=512m cpus=1.5 (0 or none removes a limit)
    #[command(name = "resources:set")]
    ResourcesSet {
        app: String,
        #[arg(value_name = "TYPE")]
        process: String,
        #[arg(required = true, value_name = "memory=SIZE|cpus=N")]
        limits: Vec<String>,
    },
}

impl ManageCommand {
    /// Whether the command reads its input from standard input.
    pub fn reads_stdin(&self) -> bool {
        matches!(self, ManageCommand::KeysAdd { pubkey_file, .. } if pubkey_file == "-")
            || matches!(self, ManageCommand::CertsAdd { cert_file, .. } if cert_file == "-")
    }

    /// Commands whose output streams while they run (see [`execute_streaming`]).
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            ManageCommand::Run { .. }
                | ManageCommand::Logs { .. }
                | ManageCommand::JobsLog { .. }
                | ManageCommand::AddonsPsql { .. }
        )
    }
}

/// The grammar over SSH: management commands only.
#[derive(Debug, Parser)]
#[command(
    name = "ssh git@HOST",
    no_binary_name = true,
    disable_version_flag = true,
    about = "gantry over SSH: git push/clone, and these commands"
)]
struct RemoteCli {
    #[command(subcommand)]
    command: ManageCommand,
}

/// Parses an SSH command line; `Err` holds the usage error (or help) to print.
pub fn parse_remote(words: &[String]) -> Result<ManageCommand, Outcome> {
    RemoteCli::try_parse_from(words)
        .map(|cli| cli.command)
        .map_err(|err| {
            let text = err.render().to_string();
            if err.use_stderr() {
                Outcome::failure(text, 2)
            } else {
                Outcome::success(text)
            }
        })
}

/// A finished command: what to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Outcome {
    pub fn success(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }

    pub fn failure(stderr: String, code: i32) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr,
            code,
        }
    }
}

/// Runs a management command for `caller`.
pub async fn execute(
    gantry: &Gantry,
    caller: &Caller,
    command: ManageCommand,
    stdin: Option<String>,
) -> Outcome {
    let result = match command {
        ManageCommand::KeysAdd {
            name,
            pubkey_file,
            admin,
            apps,
        } => keys::add(gantry, caller, &name, &pubkey_file, stdin, admin, &apps).await,
        ManageCommand::KeysList => keys::list(gantry, caller).await,
        ManageCommand::KeysRemove { name } => keys::remove(gantry, caller, &name).await,
        ManageCommand::AppsCreate { name } => apps::create(gantry, caller, &name).await,
        ManageCommand::AppsList => apps::list(gantry, caller).await,
        ManageCommand::AppsInfo { app } => stacks::info(gantry, caller, &app).await,
        ManageCommand::AppsRename { old, new } => apps::rename(gantry, caller, &old, &new).await,
        ManageCommand::Stacks => stacks::list(gantry).await,
        ManageCommand::StackSet { app, stack } => stacks::set(gantry, caller, &app, &stack).await,
        ManageCommand::StackRebase { app } => stacks::rebase(gantry, caller, &app).await,
        ManageCommand::Releases { app } => releases::list(gantry, caller, &app).await,
        ManageCommand::ReleasesInfo { app, release } => {
            releases::info(gantry, caller, &app, &release).await
        }
        ManageCommand::ReleasesRollback { app, release } => {
            releases::rollback(gantry, caller, &app, release.as_deref()).await
        }
        ManageCommand::Config { app } => config::show(gantry, caller, &app).await,
        ManageCommand::ConfigGet { app, key } => config::get(gantry, caller, &app, &key).await,
        ManageCommand::ConfigSet {
            app,
            assignments,
            no_restart,
            encoded,
        } => config::set(gantry, caller, &app, &assignments, no_restart, encoded).await,
        ManageCommand::ConfigExport { app, format } => {
            config::export(gantry, caller, &app, &format).await
        }
        ManageCommand::ConfigUnset {
            app,
            keys,
            no_restart,
        } => config::unset(gantry, caller, &app, &keys, no_restart).await,
        ManageCommand::Run { .. } | ManageCommand::Logs { .. } => Err(anyhow::anyhow!(
            "run and logs stream their output: use them over SSH or on the host"
        )),
        ManageCommand::Ps { app } => ps::list(gantry, caller, &app).await,
        ManageCommand::PsScale { app, counts } => ps::scale(gantry, caller, &app, &counts).await,
        ManageCommand::PsRestart { app, process } => {
            ps::restart(gantry, caller, &app, process.as_deref()).await
        }
        ManageCommand::PsStop { app } => ps::stop(gantry, caller, &app).await,
        ManageCommand::PsStart { app } => ps::restart(gantry, caller, &app, None).await,
        ManageCommand::WebLogin => crate::access::login::login_link(gantry, caller).await.map(|link| {
            format!("Open this link within 10 minutes to log in to the dashboard (it works once):\n  {link}\n")
        }),
        ManageCommand::Domains { app } => domains::list(gantry, caller, &app).await,
        ManageCommand::DomainsAdd { app, domain } => {
            domains::add(gantry, caller, &app, &domain).await
        }
        ManageCommand::DomainsRemove { app, domain } => {
            domains::remove(gantry, caller, &app, &domain).await
        }
        ManageCommand::Certs { app } => domains::show_certs(gantry, caller, &app).await,
        ManageCommand::CertsRedirect { app, state } => {
            domains::set_redirect(gantry, caller, &app, state == "on").await
        }
        ManageCommand::CertsAdd { app, .. } => domains::add_cert(gantry, caller, &app, stdin).await,
        ManageCommand::Jobs => jobs::list(gantry, caller).await,
        ManageCommand::JobsRun {
            job,
            params,
            parent,
        } => jobs::run(gantry, caller, &job, &params, parent.as_deref()).await,
        ManageCommand::JobsRuns { job } => jobs::runs(gantry, caller, &job).await,
        ManageCommand::JobsCancel { job, run } => jobs::cancel(gantry, caller, &job, run).await,
        ManageCommand::JobsLog { job, run, .. } => {
            let mut out = Vec::new();
            jobs::log(gantry, caller, &job, run, false, &mut out)
                .await
                .map(|_| String::from_utf8_lossy(&out).into_owned())
        }
        ManageCommand::Artifacts { app } => artifacts::list(gantry, caller, &app).await,
        ManageCommand::ArtifactsSet { app, key: _, value } => {
            artifacts::set_keep(gantry, caller, &app, value.as_deref()).await
        }
        ManageCommand::GitSet { app, key: _, value } => {
            apps::set_deploy_branch(gantry, caller, &app, value.as_deref()).await
        }
        ManageCommand::AppsDestroy {
            name,
            force,
            volumes,
        } => apps::destroy(gantry, caller, &name, force, volumes).await,
        ManageCommand::Nodes => nodes::list(gantry, caller).await,
        ManageCommand::NodesLabel { node, labels } => {
            nodes::label(gantry, caller, &node, &labels).await
        }
        ManageCommand::NodesDrain { node } => nodes::drain(gantry, caller, &node).await,
        ManageCommand::NodesActivate { node } => nodes::activate(gantry, caller, &node).await,
        ManageCommand::NodeToken => nodes::token(gantry, caller).await,
        ManageCommand::Storage { app } => storage::list(gantry, caller, &app).await,
        ManageCommand::StorageMount { app, mount } => {
            storage::mount(gantry, caller, &app, &mount).await
        }
        ManageCommand::StorageUnmount { app, mount } => {
            storage::unmount(gantry, caller, &app, &mount).await
        }
        ManageCommand::Resources { app } => storage::resources(gantry, caller, &app).await,
        ManageCommand::Addons { app } => addons::list(gantry, caller, &app).await,
        ManageCommand::AddonsCreate { app, kind } => {
            addons::create(gantry, caller, &app, &kind).await
        }
        ManageCommand::AddonsInfo { app } => addons::info(gantry, caller, &app).await,
        ManageCommand::AddonsBackup { app } => addons::backup(gantry, caller, &app).await,
        ManageCommand::AddonsRestore { app, run } => {
            addons::restore(gantry, caller, &app, run).await
        }
        ManageCommand::AddonsDestroy { app, kind, force } => {
            addons::destroy(gantry, caller, &app, &kind, force).await
        }
        ManageCommand::AddonsPsql { .. } => Err(anyhow::anyhow!(
            "addons:psql is interactive: use it over SSH (ssh -t) or on the host"
        )),
        ManageCommand::ResourcesSet {
            app,
            process,
            limits,
        } => storage::set_resources(gantry, caller, &app, &process, &limits).await,
    };
    match result {
        Ok(stdout) => Outcome::success(stdout),
        Err(err) => Outcome::failure(format!("gantry: {err:#}\n"), 1),
    }
}

/// Runs a command whose output streams (`run`, `logs`) with `streams`; any other
/// command runs as usual and its output is written at the end. Returns the exit code.
pub async fn execute_streaming(
    gantry: &Gantry,
    caller: &Caller,
    command: ManageCommand,
    mut streams: Streams,
) -> i32 {
    use tokio::io::AsyncWriteExt;
    let result: anyhow::Result<i32> = async {
        match command {
            ManageCommand::Run { app, command } => {
                let app = AppName::parse(&app)?;
                caller.require_app(&app)?;
                crate::deploy::oneoff::run(gantry, &app, command, &mut streams, &caller.name())
                    .await
            }
            ManageCommand::Logs {
                app,
                follow,
                process,
                lines,
            } => {
                let app = AppName::parse(&app)?;
                caller.require_app(&app)?;
                if gantry.store.get_app(&app).await?.is_none() {
                    anyhow::bail!("app {app} does not exist");
                }
                let request = crate::deploy::logs::LogsRequest {
                    follow,
                    process,
                    lines,
                };
                crate::deploy::logs::stream(gantry, &app, &request, &mut streams.stdout).await?;
                Ok(0)
            }
            ManageCommand::JobsLog { job, run, follow } => {
                jobs::log(gantry, caller, &job, run, follow, &mut streams.stdout).await
            }
            ManageCommand::AddonsPsql { app } => {
                let app = crate::access::managed_app(gantry, caller, &app).await?.name;
                crate::addons::psql(gantry, &app, &mut streams).await
            }
            other => {
                let outcome = execute(gantry, caller, other, None).await;
                streams.stdout.write_all(outcome.stdout.as_bytes()).await?;
                streams.stderr.write_all(outcome.stderr.as_bytes()).await?;
                Ok(outcome.code)
            }
        }
    }
    .await;
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            let _ = streams
                .stderr
                .write_all(format!("gantry: {err:#}\n").as_bytes())
                .await;
            1
        }
    };
    let _ = streams.stdout.flush().await;
    let _ = streams.stderr.flush().await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        shlex::split(line).expect("split")
    }

    #[test]
    fn remote_grammar_parses_management_commands() {
        let cmd = parse_remote(&words("keys:add bob - --apps web1,web2")).expect("parse");
        match cmd {
            ManageCommand::KeysAdd {
                name, apps, admin, ..
            } => {
                assert_eq!(name, "bob");
                assert_eq!(apps, ["web1", "web2"]);
                assert!(!admin);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            parse_remote(&words("apps:list")),
            Ok(ManageCommand::AppsList)
        ));
        assert!(matches!(
            parse_remote(&words("apps:destroy web1 --force")),
            Ok(ManageCommand::AppsDestroy { force: true, .. })
        ));
    }

    #[test]
    fn remote_grammar_refuses_serve_and_unknown_commands() {
        for line in [
            "serve",
            "hook pre-receive",
            "rm -rf /",
            "keys:add bob - --admin --apps x",
        ] {
            let outcome = parse_remote(&words(line)).expect_err(line);
            assert_eq!(outcome.code, 2, "{line}");
            assert!(!outcome.stderr.is_empty(), "{line}");
        }
        let help = parse_remote(&words("help")).expect_err("help");
        assert_eq!(help.code, 0);
        assert!(help.stdout.contains("apps:create"), "{}", help.stdout);
    }

    #[test]
    fn both_grammars_are_well_formed() {
        use clap::CommandFactory;
        RemoteCli::command().debug_assert();
    }

    #[test]
    fn config_and_release_commands_parse_and_refuse_bad_forms() {
        assert!(matches!(
            parse_remote(&words("config:set web A=1 B=2 --no-restart")),
            Ok(ManageCommand::ConfigSet { no_restart: true, ref assignments, .. }) if assignments.len() == 2
        ));
        assert!(
            parse_remote(&words("config:set web")).is_err(),
            "config:set needs KEY=VALUE"
        );
        assert!(parse_remote(&words("config:unset web")).is_err());
        assert!(matches!(
            parse_remote(&words("releases:rollback web")),
            Ok(ManageCommand::ReleasesRollback { release: None, .. })
        ));
    }
}
