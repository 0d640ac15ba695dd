//! `gantry install` and `gantry uninstall`: gantry as systemd services.
//!
//! Four units. `gantry-proxy-http.socket` and `gantry-proxy-https.socket`
//! hold the listening sockets (ports 80 and 443 by default), so a proxy that
//! restarts, crashes or is upgraded leaves clients waiting in the backlog
//! rather than refused. `gantry-proxy.service` is the proxy, started on
//! those sockets as the unprivileged `gantry` user with no capabilities
//! (systemd binds the ports, so none is needed), and it restarts on its own:
//! restarting `serve` never touches it. `gantry.service` is `serve --
//! proxy-service`, as root: it drives the Docker engine (root-equivalent in
//! any case) and builds stacks with debootstrap, which needs root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The units, in the order they are enabled.
pub const UNITS: [&str; 4] = [
    "gantry-proxy-http.socket",
    "gantry-proxy-https.socket",
    "gantry-proxy.service",
    "gantry.service",
];

/// Where units go unless told otherwise.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The user the proxy runs as.
pub const PROXY_USER: &str = "gantry";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("gantry {0} needs root: sudo gantry {0} ...")]
    NotRoot(&'static str),
    #[error("this host does not run systemd (no /run/systemd/system): run gantry serve under your own supervisor instead")]
    NoSystemd,
    #[error("a gantry proxy already runs on {home} (pid {pid}): stop gantry serve and its proxy first (kill {pid})")]
    ProxyRunning { home: String, pid: u32 },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What the units run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The gantry binary the units start.
    pub bin: PathBuf,
    pub home: PathBuf,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// `serve`'s own flags (`--domain`, `--ssh-listen`, `--database-url`).
    pub serve_args: Vec<String>,
}

impl Plan {
    /// The plan for `config`, with `serve_args` passed through to serve.
    pub fn new(config: &Config, bin: PathBuf, serve_args: Vec<String>) -> Plan {
        Plan {
            bin,
            home: config.home.clone(),
            http: config.http_listen,
            https: config.https_listen,
            serve_args,
        }
    }

    /// Each unit's file name and text.
    pub fn units(&self) -> Vec<(&'static str, String)> {
        let bin = quote(&self.bin.display().to_string());
        let home = quote(&self.home.display().to_string());
        let proxy_dir = self.home.join("proxy");
        let socket = |name: &str, what: &str, addr: SocketAddr| {
            format!(
                "# Written by gantry install. The proxy's {what} socket: systemd holds it,\n\
                 # so clients wait while the proxy restarts instead of being refused.\n\
                 [Unit]\n\
                 Description=gantry proxy: {what} listening socket\n\
                 Documentation=man:systemd.socket(5)\n\n\
                 [Socket]\n\
                 ListenStream={addr}\n\
                 FileDescriptorName={name}\n\
                 Service=gantry-proxy.service\n\
                 Backlog=4096\n\
                 NoDelay=true\n\n\
                 [Install]\n\
                 WantedBy=sockets.target\n"
            )
        };
        let mut serve_line = vec![
            bin.clone(),
            "--home".into(),
            home.clone(),
            "serve".into(),
            "--http-listen".into(),
            quote(&self.http.to_string()),
            "--https-listen".into(),
            quote(&self.https.to_string()),
            "--proxy-service".into(),
        ];
        serve_line.extend(self.serve_args.iter().map(|a| quote(a)));
        let proxy = format!(
            "# Written by gantry install. The proxy, as the unprivileged {PROXY_USER} user\n\
             # on the sockets systemd keeps; restarting gantry.service never touches it.\n\
             [Unit]\n\
             Description=gantry proxy: HTTP and HTTPS to the apps\n\
             Requires=gantry-proxy-http.socket gantry-proxy-https.socket\n\
             After=network.target gantry-proxy-http.socket gantry-proxy-https.socket\n\n\
             [Service]\n\
             Type=simple\n\
             ExecStart={bin} --home {home} proxy --http-listen {http} --https-listen {https}\n\
             User={PROXY_USER}\n\
             Group={PROXY_USER}\n\
             Restart=always\n\
             RestartSec=100ms\n\
             TimeoutStopSec=40\n\
             LimitNOFILE=65536\n\
             NoNewPrivileges=true\n\
             CapabilityBoundingSet=\n\
             AmbientCapabilities=\n\
             ProtectSystem=strict\n\
             ProtectHome=true\n\
             PrivateTmp=true\n\
             PrivateDevices=true\n\
             ProtectKernelTunables=true\n\
             ProtectControlGroups=true\n\
             RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
             ReadWritePaths={proxy_dir}\n\n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            http = quote(&self.http.to_string()),
            https = quote(&self.https.to_string()),
            proxy_dir = quote(&proxy_dir.display().to_string()),
        );
        let serve = format!(
            "# Written by gantry install. serve: the SSH git endpoint, builds and deploys.\n\
             # Root: it drives the Docker engine and builds stacks with debootstrap.\n\
             # A stop waits for the pushes in flight (up to 10 minutes).\n\
             [Unit]\n\
             Description=gantry: git push to deploy\n\
             Wants=network-online.target docker.service gantry-proxy.service\n\
             After=network-online.target docker.service gantry-proxy.service\n\n\
             [Service]\n\
             Type=simple\n\
             ExecStart={}\n\
             Restart=on-failure\n\
             RestartSec=2\n\
             KillMode=mixed\n\
             TimeoutStopSec=660\n\
             LimitNOFILE=65536\n\n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            serve_line.join(" ")
        );
        vec![
            (UNITS[0], socket("http", "HTTP", self.http)),
            (UNITS[1], socket("https", "HTTPS", self.https)),
            (UNITS[2], proxy),
            (UNITS[3], serve),
        ]
    }
}

/// An argument as systemd's command lines take it: in double quotes, with
/// `\`, `"` and systemd's `%` specifier escaped.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=,@+[]".contains(c));
    if plain {
        return arg.to_owned();
    }
    let escaped = arg
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

/// The unit that keeps a swarm node's part running (its image mirror, edge
/// proxy and worker): `gantry node:join --foreground` with `join_args`.
pub const NODE_UNIT: &str = "gantry-node.service";

/// [`NODE_UNIT`]'s text.
pub fn node_unit(bin: &Path, home: &Path, join_args: &[String]) -> String {
    let mut line = vec![
        quote(&bin.display().to_string()),
        "--home".into(),
        quote(&home.display().to_string()),
        "node:join".into(),
        "--foreground".into(),
    ];
    line.extend(join_args.iter().map(|a| quote(a)));
    format!(
        "# Written by gantry node:join. This machine's part of a gantry swarm: the\n\
         # pull-through mirror its engine pulls through, its edge proxy (ports 80 and\n\
         # 443) and its worker. Root: it drives the Docker engine. It holds the join\n\
         # token and the database URL, so only root reads it.\n\
         [Unit]\n\
         Description=gantry node: image mirror, edge proxy and worker\n\
         Wants=network-online.target docker.service\n\
         After=network-online.target docker.service\n\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         Restart=always\n\
         RestartSec=2\n\
         TimeoutStopSec=30\n\
         LimitNOFILE=65536\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        line.join(" ")
    )
}

/// Writes [`NODE_UNIT`] into `unit_dir` (only root reads it); unless
/// `units_only`, enables and starts it. Returns what to tell the user.
pub fn install_node(unit: &str, unit_dir: &Path, units_only: bool) -> Result<String, ServiceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !units_only && !is_root() {
        return Err(ServiceError::NotRoot("node:join"));
    }
    if !units_only && !has_systemd() {
        return Err(ServiceError::NoSystemd);
    }
    let path = unit_dir.join(NODE_UNIT);
    let io = |source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(unit_dir).map_err(io)?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(unit.as_bytes()))
        .map_err(io)?;
    if units_only {
        return Ok(format!(
            "wrote {} (nothing enabled or started)\n",
            path.display()
        ));
    }
    run("systemctl", &["daemon-reload"])?;
    run("systemctl", &["enable", "--now", NODE_UNIT])?;
    Ok(format!(
        "this node's mirror, edge proxy and worker run as {NODE_UNIT}, started again after a crash or a reboot\n\
         Status: systemctl status gantry-node    Logs: journalctl -u gantry-node -f\n"
    ))
}

/// Whether this host runs systemd (else a node runs in the foreground).
pub fn systemd_here() -> bool {
    has_systemd()
}

/// Writes the units into `dir`; the paths written.
pub fn write_units(plan: &Plan, dir: &Path) -> Result<Vec<PathBuf>, ServiceError> {
    let io = |path: &Path, source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut written = Vec::new();
    for (name, text) in plan.units() {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(program: &str, args: &[&str]) -> Result<String, ServiceError> {
    let what = format!("{program} {}", args.join(" "));
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ServiceError::Command {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ServiceError::Command {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Makes the proxy's user and gives it what it needs: its own directory,
/// and read access (by group) to the certificates.
fn prepare(home: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path, source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    };
    if run("id", &["-u", PROXY_USER]).is_err() {
        run(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                PROXY_USER,
            ],
        )?;
    }
    std::fs::create_dir_all(home).map_err(|e| io(home, e))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(home, e))?;
    let proxy = home.join("proxy");
    std::fs::create_dir_all(&proxy).map_err(|e| io(&proxy, e))?;
    run(
        "chown",
        &[
            "-R",
            &format!("{PROXY_USER}:{PROXY_USER}"),
            &proxy.display().to_string(),
        ],
    )?;
    std::fs::set_permissions(&proxy, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| io(&proxy, e))?;
    // Certificates stay root's; the proxy's group reads them, and new ones
    // take the directory's group (setgid).
    let certs = home.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| io(&certs, e))?;
    run("chgrp", &["-R", PROXY_USER, &certs.display().to_string()])?;
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o2750))
        .map_err(|e| io(&certs, e))?;
    for entry in std::fs::read_dir(&certs)
        .map_err(|e| io(&certs, e))?
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "key") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
                .map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// `gantry install`: writes the units into `unit_dir`; unless `units_only`,
/// also makes the proxy's user and permissions and enables and starts them.
/// Returns what to tell the user.
pub async fn install(
    config: &Config,
    plan: &Plan,
    unit_dir: &Path,
    units_only: bool,
) -> Result<String, ServiceError> {
    if units_only {
        let written = write_units(plan, unit_dir)?;
        let list: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        return Ok(format!(
            "wrote {} (nothing enabled or started)\n",
            list.join(", ")
        ));
    }
    if !is_root() {
        return Err(ServiceError::NotRoot("install"));
    }
    if !has_systemd() {
        return Err(ServiceError::NoSystemd);
    }
    if let Some(pid) = crate::routing::running(config).await {
        return Err(ServiceError::ProxyRunning {
            home: config.home.display().to_string(),
            pid,
        });
    }
    prepare(&config.home)?;
    write_units(plan, unit_dir)?;
    run("systemctl", &["daemon-reload"])?;
    let mut enable = vec!["enable", "--now"];
    enable.extend(UNITS);
    run("systemctl", &enable)?;
    Ok(format!(
        "gantry runs as systemd services, with its home in {home}:\n\
         \x20 {units}\n\
         HTTP on {http} and HTTPS on {https} (sockets held by systemd; the proxy runs as {PROXY_USER}).\n\
         Status: systemctl status gantry gantry-proxy    Logs: journalctl -u gantry -u gantry-proxy -f\n\
         Open the firewall for the HTTP and HTTPS ports and serve's SSH port.\n\
         Upgrade: install the new binary over {bin}, then run: sudo gantry upgrade\n",
        home = config.home.display(),
        units = UNITS.join(" "),
        http = plan.http,
        https = plan.https,
        bin = plan.bin.display(),
    ))
}

/// `gantry uninstall`: stops and removes the units; keeps gantry's home
/// (apps, releases, certificates, data) and the proxy's user.
pub fn uninstall(config: &Config, unit_dir: &Path) -> Result<String, ServiceError> {
    if !is_root() {
        return Err(ServiceError::NotRoot("uninstall"));
    }
    let present: Vec<&str> = UNITS
        .iter()
        .copied()
        .filter(|u| unit_dir.join(u).exists())
        .collect();
    if present.is_empty() {
        return Ok(format!(
            "no gantry units in {}: nothing to remove\n",
            unit_dir.display()
        ));
    }
    if has_systemd() {
        let mut disable = vec!["disable", "--now"];
        disable.extend(present.iter().rev());
        run("systemctl", &disable)?;
    }
    for unit in &present {
        let path = unit_dir.join(unit);
        std::fs::remove_file(&path).map_err(|source| ServiceError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    if has_systemd() {
        run("systemctl", &["daemon-reload"])?;
    }
    Ok(format!(
        "stopped and removed {}.\nKept {} (apps, releases, certificates, data) and the {PROXY_USER} user; app containers keep running until you stop them.\n",
        present.join(", "),
        config.home.display()
    ))
}

/// Whether gantry runs from units `gantry install` wrote (for `upgrade`).
pub fn installed(unit_dir: &Path) -> bool {
    has_systemd() && unit_dir.join("gantry.service").exists()
}

/// `gantry upgrade` on an installed gantry: systemd restarts the proxy (its
/// sockets stay open meanwhile; the old proxy finishes its requests), then
/// serve (which finishes the pushes in flight first).
pub fn upgrade_units() -> Result<String, ServiceError> {
    if !is_root() {
        return Err(ServiceError::NotRoot("upgrade"));
    }
    run("systemctl", &["restart", "gantry-proxy.service"])?;
    run("systemctl", &["restart", "gantry.service"])?;
    Ok("restarted gantry-proxy.service (on the sockets systemd holds) and gantry.service on the new binary\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            bin: "/usr/local/bin/gantry".into(),
            home: "/var/lib/gantry".into(),
            http: "0.0.0.0:80".parse().expect("addr"),
            https: "[::]:443".parse().expect("addr"),
            serve_args: vec![
                "--domain".into(),
                "apps.example.com".into(),
                "--database-url".into(),
                "postgres://u:p%40ss@db/gantry".into(),
            ],
        }
    }

    #[test]
    fn the_units_hold_the_sockets_and_run_the_proxy_unprivileged() {
        let units = plan().units();
        let names: Vec<&str> = units.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, UNITS);
        let text = |name: &str| &units.iter().find(|(n, _)| *n == name).expect("unit").1;
        assert!(text("gantry-proxy-http.socket")
            .contains("ListenStream=0.0.0.0:80\nFileDescriptorName=http\n"));
        assert!(text("gantry-proxy-https.socket")
            .contains("ListenStream=[::]:443\nFileDescriptorName=https\n"));
        let proxy = text("gantry-proxy.service");
        assert!(proxy.contains("User=gantry\n") && proxy.contains("CapabilityBoundingSet=\n"));
        assert!(proxy.contains("ReadWritePaths=/var/lib/gantry/proxy\n"));
        let serve = text("gantry.service");
        assert!(serve.contains(
            "ExecStart=/usr/local/bin/gantry --home /var/lib/gantry serve --http-listen 0.0.0.0:80 --https-listen [::]:443 --proxy-service --domain apps.example.com --database-url \"postgres://u:p%%40ss@db/gantry\"\n"
        ), "{serve}");
        assert!(serve.contains("TimeoutStopSec=660"));
    }

    #[test]
    fn arguments_are_quoted_for_systemd() {
        assert_eq!(quote("/usr/bin/gantry"), "/usr/bin/gantry");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("50%"), "\"50%%\"");
        assert_eq!(quote("say \"hi\" $HOME"), "\"say \\\"hi\\\" $$HOME\"");
        assert_eq!(quote(""), "\"\"");
    }
}
