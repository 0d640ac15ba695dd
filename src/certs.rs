//! HTTPS for apps: the certificates the proxy serves.
//!
//! Certificates live in `$GANTRY_HOME/certs` as `HOST.pem` (the chain) and
//! `HOST.key`, and are loaded into the proxy's SNI store at start and whenever
//! one is added, without a restart. With the `localhost` domain, a local
//! development CA (`certs/_localhost-ca.pem`, made once) signs a certificate
//! for each `*.localhost` host on first use, so HTTPS works in development. Custom domains are `domains`'.

use std::path::PathBuf;

use gantry_proxy::tls;

use crate::context::Gantry;
use crate::names::AppName;

/// The file name stem of the development CA (trust `_localhost-ca.pem`).
pub const LOCAL_CA: &str = tls::LOCAL_CA_STEM;

pub fn paths(gantry: &Gantry, stem: &str) -> (PathBuf, PathBuf) {
    let dir = gantry.config.certs_dir();
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// File stem for a host (`*.example.com` is stored as `_wildcard.example.com`).
pub fn stem(host: &str) -> String {
    host.replace('*', "_wildcard")
}

/// Makes the certificate directory, and the development CA when the domain
/// is `localhost`, before the proxy (which reads both) starts.
pub fn prepare(gantry: &Gantry) {
    let dir = gantry.config.certs_dir();
    if let Err(err) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot create the certificate directory");
    }
    if gantry.config.domain == "localhost" {
        let (cert, key) = paths(gantry, LOCAL_CA);
        if let Err(err) = gantry_proxy::LocalCa::load_or_create(&cert, &key) {
            tracing::warn!(error = %err, "no development CA for *.localhost");
        }
    }
}

/// Has the proxy load every stored certificate, and routes every custom domain.
pub async fn load_all(gantry: &Gantry) {
    gantry.routing.reload_certs().await;
    match gantry.store.list_domains().await {
        Ok(domains) => {
            for (host, app) in domains {
                if let Ok(app) = AppName::parse(&app) {
                    gantry
                        .routing
                        .alias(&host, &gantry.config.app_host(&app))
                        .await;
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the custom domains"),
    }
}

/// The host names an app answers on: `APP.DOMAIN` and its custom domains.
pub async fn hosts(gantry: &Gantry, app: &AppName) -> anyhow::Result<Vec<String>> {
    let mut hosts = vec![gantry.config.app_host(app)];
    hosts.extend(
        gantry
            .store
            .list_domains()
            .await?
            .into_iter()
            .filter(|(_, owner)| owner == app.as_str())
            .map(|(host, _)| host),
    );
    Ok(hosts)
}

/// Installs a certificate the user brings for one of the app's hosts.
pub async fn add_certificate(
    gantry: &Gantry,
    app: &AppName,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<String> {
    tls::certified_key(chain_pem, key_pem)?;
    let info = describe(chain_pem)?;
    let hosts = hosts(gantry, app).await?;
    let covered: Vec<&String> = hosts
        .iter()
        .filter(|h| info.names.iter().any(|n| name_matches(n, h)))
        .collect();
    if covered.is_empty() {
        anyhow::bail!(
            "the certificate is for {} but {app} answers on {}: add the domain first (gantry domains:add)",
            info.names.join(", "),
            hosts.join(", ")
        );
    }
    for host in &covered {
        install(gantry, host, chain_pem, key_pem).await?;
    }
    gantry.routing.reload_certs().await;
    Ok(format!(
        "installed for {} (expires {})\n",
        covered
            .iter()
            .map(|h| h.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        info.not_after
    ))
}

/// Stores a certificate for `host` (the proxy serves it once told to reload)
/// and, on a swarm, shares it with every node; returns its expiry.
pub async fn install(
    gantry: &Gantry,
    host: &str,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<String> {
    tls::certified_key(chain_pem, key_pem)?;
    let info = describe(chain_pem)?;
    std::fs::create_dir_all(gantry.config.certs_dir())?;
    let stem = stem(host);
    let (chain_path, key_path) = paths(gantry, &stem);
    tls::write_private(&key_path, key_pem)?;
    std::fs::write(&chain_path, chain_pem)?;
    if shared(gantry) {
        let cert = crate::store::SharedCert {
            stem,
            chain: String::from_utf8(chain_pem.to_vec())?,
            key: String::from_utf8(key_pem.to_vec())?,
        };
        gantry.store.share_cert(&cert).await?;
    }
    Ok(info.not_after)
}

/// Whether certificates are shared through the store with every node (a
/// swarm), besides living in this machine's certs directory.
pub fn shared(gantry: &Gantry) -> bool {
    gantry.config.runtime == crate::config::RuntimeKind::Swarm
}

/// A new swarm's first manager shares the certificates it has (none are
/// shared yet); later managers take the cluster's.
pub async fn share_local_if_first(gantry: &Gantry) -> anyhow::Result<usize> {
    if !shared(gantry) || gantry.store.shared_certs_stamp().await?.0 > 0 {
        return Ok(0);
    }
    let mut shared = 0;
    for entry in std::fs::read_dir(gantry.config.certs_dir())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".pem").filter(|s| *s != LOCAL_CA) else {
            continue;
        };
        let (chain, key) = paths(gantry, stem);
        if let (Ok(chain), Ok(key)) = (std::fs::read_to_string(chain), std::fs::read_to_string(key))
        {
            let cert = crate::store::SharedCert {
                stem: stem.to_owned(),
                chain,
                key,
            };
            gantry.store.share_cert(&cert).await?;
            shared += 1;
        }
    }
    Ok(shared)
}

/// Writes into `dir` each shared certificate that differs from the file
/// there; returns how many it wrote. A stem that could leave `dir`, or the
/// development CA's, is skipped; nothing is removed.
fn write_shared(
    dir: &std::path::Path,
    certs: &[crate::store::SharedCert],
) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut written = 0;
    for cert in certs {
        let safe = !cert.stem.is_empty()
            && cert.stem != LOCAL_CA
            && cert
                .stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            && !cert.stem.starts_with('.');
        if !safe {
            tracing::warn!(stem = %cert.stem, "a shared certificate with a name that cannot be a file; skipped");
            continue;
        }
        let chain_path = dir.join(format!("{}.pem", cert.stem));
        let key_path = dir.join(format!("{}.key", cert.stem));
        let same = std::fs::read_to_string(&chain_path).is_ok_and(|c| c == cert.chain)
            && std::fs::read_to_string(&key_path).is_ok_and(|k| k == cert.key);
        if same {
            continue;
        }
        tls::write_private(&key_path, cert.key.as_bytes())?;
        std::fs::write(&chain_path, &cert.chain)?;
        written += 1;
    }
    Ok(written)
}

/// Brings `dir` up to the swarm's certificates if they changed since the
/// stamp in `seen` (asked first, so an unchanged table is not read whole),
/// and has `routing`'s proxy reload what was written. Managers and edges
/// both take them up this way.
pub async fn take_up_shared(
    store: &crate::store::Store,
    dir: &std::path::Path,
    routing: &crate::routing::Routing,
    seen: &mut Option<(i64, i64)>,
) -> anyhow::Result<()> {
    let stamp = store.shared_certs_stamp().await?;
    if *seen == Some(stamp) {
        return Ok(());
    }
    let certs = store.shared_certs().await?;
    let written = write_shared(dir, &certs)?;
    if written > 0 {
        tracing::info!(n = written, "certificates from the swarm");
        routing.reload_certs().await;
    }
    *seen = Some(stamp);
    Ok(())
}

/// A manager's side on a swarm: every two seconds, the shared certificates
/// into this machine's directory, and the proxy told when one changed.
pub async fn follow_shared_forever(
    gantry: std::sync::Arc<Gantry>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if !shared(&gantry) {
        return;
    }
    match share_local_if_first(&gantry).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "shared this machine's certificates with the swarm"),
        Err(err) => {
            tracing::warn!(error = %format!("{err:#}"), "cannot share this machine's certificates")
        }
    }
    let mut seen = None;
    loop {
        let dir = gantry.config.certs_dir();
        if let Err(err) = take_up_shared(&gantry.store, &dir, &gantry.routing, &mut seen).await {
            tracing::warn!(error = %format!("{err:#}"), "cannot take up the swarm's certificates");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

/// What `certs` shows of a certificate.
pub struct CertInfo {
    pub issuer: String,
    pub names: Vec<String>,
    pub not_after: String,
}

/// Reads the first certificate of a PEM chain.
pub fn describe(chain_pem: &[u8]) -> anyhow::Result<CertInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(CertInfo {
        issuer: cert.issuer().to_string(),
        names,
        not_after: cert.validity().not_after.to_string(),
    })
}

/// When the first certificate of a PEM chain ends, in unix seconds.
pub fn not_after(chain_pem: &[u8]) -> Option<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(_, rest)| rest == parent),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_described() {
        let (chain, _) =
            tls::self_signed(&["shop.example.com".into(), "*.shop.test".into()]).expect("cert");
        let info = describe(chain.as_bytes()).expect("describe");
        assert_eq!(info.names, ["shop.example.com", "*.shop.test"]);
        assert!(name_matches("*.shop.test", "a.shop.test"));
        assert!(!name_matches("*.shop.test", "a.b.shop.test"));
        assert!(describe(b"nope").is_err());
    }
}
