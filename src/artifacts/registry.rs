//! The cluster's image registry: Debian's `docker-registry` (the CNCF
//! distribution server), which gantry starts and keeps running. Builds stay
//! on the builder's engine; the swarm runtime pushes a release's image here
//! before it runs, and services name it by digest, so every node runs exactly
//! the bytes that were built. Each node pulls through a mirror of its own
//! (the same server in pull-through mode, on the node's loopback), so
//! service specs carry no credentials and an image crosses the network once
//! per node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The server gantry runs (Debian's package `docker-registry`).
pub const REGISTRY_BIN: &str = "docker-registry";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "cannot start {REGISTRY_BIN}: {0}; the swarm runtime runs Debian's registry for the \
         cluster's images (apt-get install docker-registry)"
    )]
    Spawn(std::io::Error),
    #[error("cannot write the registry's settings in {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the registry at {addr} did not answer within {secs}s; its log is {log}")]
    NotReady {
        addr: String,
        secs: u64,
        log: PathBuf,
    },
}

/// What a registry process serves: the cluster's own images, or a
/// pull-through mirror of `upstream`.
#[derive(Debug, Clone)]
pub struct RegistrySpec {
    /// Its directory: settings, data, log.
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// `http://HOST:PORT` of the registry this one mirrors.
    pub upstream: Option<String>,
}

impl RegistrySpec {
    /// The server's settings (its `config.yml`).
    pub fn config_yaml(&self, secret: &str) -> String {
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {listen}\n  secret: {secret}\n",
            data = self.dir.join("data").display(),
            listen = self.listen,
        );
        if let Some(upstream) = &self.upstream {
            yaml.push_str(&format!("proxy:\n  remoteurl: {upstream}\n"));
        }
        yaml
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }
}

/// A registry process gantry keeps running: restarted a second after it
/// exits, killed when this is dropped.
#[derive(Debug)]
pub struct Supervised {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the registry `spec` describes and waits until it answers at
/// `probe` (`HOST:PORT`, as this machine reaches it).
pub async fn start(spec: RegistrySpec, probe: &str) -> Result<Supervised, RegistryError> {
    let log = spec.log_path();
    let supervised = supervise(spec)?;
    let secs = 15;
    match wait_ready(probe, Duration::from_secs(secs)).await {
        true => Ok(supervised),
        false => Err(RegistryError::NotReady {
            addr: probe.to_owned(),
            secs,
            log,
        }),
    }
}

/// Whether the registry at `probe` answers its API within `limit`.
pub async fn wait_ready(probe: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let client = reqwest::Client::new();
    let url = format!("http://{probe}/v2/");
    while tokio::time::Instant::now() < deadline {
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Starts the registry `spec` describes and keeps it running.
pub fn supervise(spec: RegistrySpec) -> Result<Supervised, RegistryError> {
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| RegistryError::Write { path, source })
    };
    std::fs::create_dir_all(spec.dir.join("data")).map_err(|source| RegistryError::Write {
        path: spec.dir.clone(),
        source,
    })?;
    let secret = {
        use rand::RngExt;
        format!("{:032x}", rand::rng().random::<u128>())
    };
    let config = spec.dir.join("config.yml");
    write(config.clone(), spec.config_yaml(&secret))?;
    // The first start's failure (no such program) is the caller's to report.
    let first = spawn(&config, &spec.log_path())?;
    let log = spec.log_path();
    let task = tokio::spawn(async move {
        let mut child = first;
        loop {
            let status = child.wait().await;
            tracing::warn!(?status, log = %log.display(), "the registry exited; starting it again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            child = loop {
                match spawn(&config, &log) {
                    Ok(child) => break child,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot start the registry");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            };
        }
    });
    Ok(Supervised { task })
}

fn spawn(config: &Path, log: &Path) -> Result<tokio::process::Child, RegistryError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| RegistryError::Write {
            path: log.to_owned(),
            source,
        })?;
    let err = out.try_clone().map_err(|source| RegistryError::Write {
        path: log.to_owned(),
        source,
    })?;
    tokio::process::Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(RegistryError::Spawn)
}

/// The `HOST:PORT` of a registry URL (`http://HOST:PORT`).
pub fn url_address(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let address = rest.split('/').next()?;
    (!address.is_empty()).then(|| address.to_owned())
}

/// Relays TCP connections from `listener` to `upstream` until `shutdown`:
/// a node's engine pushes to the cluster's registry through it, at a
/// loopback address it trusts without any daemon setting (the registry
/// speaks plain HTTP, which an engine refuses anywhere but on loopback).
pub async fn relay(
    listener: tokio::net::TcpListener,
    upstream: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let mut inbound = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "the registry relay cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(&upstream).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(err) => {
                    tracing::warn!(%upstream, error = %err, "the registry relay cannot reach the registry")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_url_gives_the_address_a_relay_dials() {
        assert_eq!(
            url_address("http://10.0.0.1:5000").as_deref(),
            Some("10.0.0.1:5000")
        );
        assert_eq!(
            url_address("https://registry.example/v2/").as_deref(),
            Some("registry.example")
        );
        assert_eq!(url_address("10.0.0.1:5000"), None);
        assert_eq!(url_address("http://"), None);
    }

    #[test]
    fn a_mirror_proxies_its_upstream_and_the_central_one_does_not() {
        let central = RegistrySpec {
            dir: "/var/lib/gantry/registry".into(),
            listen: "0.0.0.0:5000".parse().expect("addr"),
            upstream: None,
        };
        let yaml = central.config_yaml("s3cret");
        assert!(yaml.contains("rootdirectory: /var/lib/gantry/registry/data"));
        assert!(yaml.contains("addr: 0.0.0.0:5000"));
        assert!(yaml.contains("secret: s3cret"));
        assert!(!yaml.contains("proxy:"));
        let mirror = RegistrySpec {
            upstream: Some("http://192.168.231.1:5000".into()),
            ..central
        };
        assert!(mirror
            .config_yaml("x")
            .ends_with("proxy:\n  remoteurl: http://192.168.231.1:5000\n"));
    }
}
