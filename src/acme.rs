//! Certificates from an ACME CA (Let's Encrypt by default) with instant-acme.
//!
//! With `[acme] email` set, the built-in job `gantry.certs` obtains a
//! certificate for every host an app answers on that has none, and renews
//! those past two thirds of their lifetime. It runs every six hours, after
//! `domains:add`, and by hand (`jobs:run gantry.certs`); a failed issuance is a
//! failed run whose reason is the CA's error, so it alerts like any job.
//! Validation is HTTP-01 (or TLS-ALPN-01 with `challenge = "tls-alpn-01"`):
//! the proxy answers the challenge itself. A host whose order failed is not
//! tried again before a backoff (1 h, doubling to 24 h), so a broken domain
//! never runs into the CA's rate limits; `certs APP` shows the last attempt
//! and its error. `*.localhost` hosts are left to the development CA, and a
//! certificate brought with `certs:add` is left alone until it expires.

use std::io::Write;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::Deserialize;

use crate::config::{AcmeChallenge as Challenge, AcmeConfig};
use crate::context::Gantry;

/// What gantry remembers of its orders per host, in `acme/hosts.json`.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
pub struct Attempt {
    /// Unix ms of the last order.
    pub at: i64,
    /// The CA's error, if the last order failed.
    pub error: Option<String>,
    /// Failed orders in a row.
    pub failures: u32,
    /// Unix ms before which no order is placed again.
    pub not_before: i64,
    /// The serial number (hex) of the certificate gantry last installed for
    /// the host: a different one there was brought with `certs:add`.
    #[serde(default)]
    pub issued_serial: Option<String>,
}

type Attempts = std::collections::BTreeMap<String, Attempt>;

fn attempts_path(gantry: &Gantry) -> std::path::PathBuf {
    gantry.config.home.join("acme").join("hosts.json")
}

/// The shared documents (on a swarm) holding the account and the orders.
const ACCOUNT_DOCUMENT: &str = "acme/account.json";
const ATTEMPTS_DOCUMENT: &str = "acme/hosts.json";

/// Every host's last order: on a swarm the cluster's (so a new leader
/// knows which certificates it renews), else this machine's.
pub async fn attempts(gantry: &Gantry) -> Attempts {
    if crate::certs::shared(gantry) {
        match gantry.store.document(ATTEMPTS_DOCUMENT).await {
            Ok(Some(text)) => return serde_json::from_str(&text).unwrap_or_default(),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the swarm's ACME orders"),
        }
    }
    std::fs::read(attempts_path(gantry))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

async fn save_attempts(gantry: &Gantry, attempts: &Attempts) {
    let path = attempts_path(gantry);
    let text = match serde_json::to_string_pretty(attempts) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!(error = %err, "cannot save ACME attempts");
            return;
        }
    };
    if crate::certs::shared(gantry) {
        if let Err(err) = gantry.store.put_document(ATTEMPTS_DOCUMENT, &text).await {
            tracing::warn!(error = %err, "cannot save the swarm's ACME orders");
        }
    }
    let saved = std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .and_then(|()| std::fs::write(&path, text));
    if let Err(err) = saved {
        tracing::warn!(path = %path.display(), error = %err, "cannot save ACME attempts");
    }
}

/// How long to wait after the `failures`-th failure in a row: 1 h, doubling,
/// at most a day; a rate-limit error waits at least 3 h.
fn backoff_ms(failures: u32, error: &str) -> i64 {
    const HOUR: i64 = 3600 * 1000;
    let doubling = HOUR.saturating_mul(1 << failures.saturating_sub(1).min(5));
    let wait = doubling.min(24 * HOUR);
    if error.contains("rateLimited") || error.contains("rate limit") {
        wait.max(3 * HOUR)
    } else {
        wait
    }
}

/// The account, created on first use and kept in `$GANTRY_HOME/acme`.
async fn account(gantry: &Gantry, acme: &AcmeConfig) -> anyhow::Result<Account> {
    let builder = || match &acme.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    let dir = gantry.config.home.join("acme");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("account.json");
    let shared = crate::certs::shared(gantry);
    let stored = match shared {
        true => gantry.store.document(ACCOUNT_DOCUMENT).await?,
        false => None,
    };
    if let Some(text) = stored.or_else(|| std::fs::read_to_string(&path).ok()) {
        let credentials: AccountCredentials = serde_json::from_str(&text)?;
        if shared {
            // A manager's own account becomes the swarm's.
            gantry.store.put_document(ACCOUNT_DOCUMENT, &text).await?;
        }
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact = format!("mailto:{}", acme.email);
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &[&contact],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await?;
    let text = serde_json::to_string(&credentials)?;
    if shared {
        gantry.store.put_document(ACCOUNT_DOCUMENT, &text).await?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)?
        .write_all(text.as_bytes())?;
    Ok(account)
}

/// How long an order waits, on a swarm, for the edges to take up a new
/// challenge before the CA is told to check it.
const EDGE_PICKUP: std::time::Duration = std::time::Duration::from_secs(1);

/// Obtains a certificate for `host`; returns (chain PEM, key PEM).
async fn obtain(
    gantry: &Gantry,
    account: &Account,
    host: &str,
    kind: Challenge,
) -> anyhow::Result<(String, String)> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut tokens = Vec::new();
    let outcome = async {
        let mut authorizations = order.authorizations();
        while let Some(result) = authorizations.next().await {
            let mut authz = result?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => anyhow::bail!("the CA says the authorization for {host} is {other:?}"),
            }
            let (wanted, name) = match kind {
                Challenge::Http01 => (ChallengeType::Http01, "HTTP-01"),
                Challenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "TLS-ALPN-01"),
            };
            let mut challenge = authz
                .challenge(wanted)
                .ok_or_else(|| anyhow::anyhow!("the CA offers no {name} challenge for {host}"))?;
            let key_authorization = challenge.key_authorization();
            match kind {
                Challenge::Http01 => {
                    let token = challenge.token.clone();
                    gantry
                        .routing
                        .challenge(&token, key_authorization.as_str())
                        .await?;
                    tokens.push(token.clone());
                    if crate::certs::shared(gantry) {
                        // Any node's edge may be asked: each hears of it at
                        // once (a notice) and tells its proxy.
                        gantry
                            .store
                            .open_challenge(&token, key_authorization.as_str())
                            .await?;
                        tokio::time::sleep(EDGE_PICKUP).await;
                    }
                }
                Challenge::TlsAlpn01 if crate::certs::shared(gantry) => {
                    anyhow::bail!(
                        "challenge = \"tls-alpn-01\" is not available on a swarm yet: the edges answer HTTP-01"
                    );
                }
                Challenge::TlsAlpn01 => {
                    let digest = key_authorization.digest();
                    gantry.routing.alpn_challenge(host, digest.as_ref()).await?;
                }
            }
            challenge.set_ready().await?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await?;
        if status != OrderStatus::Ready {
            let detail = order
                .state()
                .error
                .as_ref()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.r#type.as_deref().unwrap_or("error"),
                        p.detail.as_deref().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| format!("the order is {status:?}"));
            anyhow::bail!("{detail}");
        }
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&RetryPolicy::default()).await?;
        Ok((chain, key))
    }
    .await;
    for token in tokens {
        gantry.routing.unchallenge(&token).await;
        if crate::certs::shared(gantry) {
            if let Err(err) = gantry.store.close_challenge(&token).await {
                tracing::warn!(error = %err, "cannot close a challenge on the swarm");
            }
        }
    }
    if kind == Challenge::TlsAlpn01 {
        gantry.routing.alpn_unchallenge(host).await;
    }
    outcome
}

/// Whether `host` needs a certificate now: none yet, one gantry obtained
/// that is past two thirds of its lifetime, or one brought with `certs:add`
/// that has expired (until then, the user's certificate wins).
fn due(gantry: &Gantry, attempts: &Attempts, host: &str) -> bool {
    let path = gantry
        .config
        .certs_dir()
        .join(format!("{}.pem", host.replace('*', "_wildcard")));
    let Ok(pem) = std::fs::read(path) else {
        return true;
    };
    let now = crate::time::now_ms() / 1000;
    if ours(attempts.get(host), &pem) {
        due_at(&pem, now)
    } else {
        expired_at(&pem, now)
    }
}

/// Whether the certificate in `pem` is the one ACME got for the host (a
/// record from before serials were kept counts, if its order succeeded).
fn ours(attempt: Option<&Attempt>, pem: &[u8]) -> bool {
    match attempt {
        Some(Attempt {
            issued_serial: Some(serial),
            ..
        }) => serial_of(pem).as_deref() == Some(serial.as_str()),
        Some(attempt) => attempt.at > 0 && attempt.error.is_none() && attempt.failures == 0,
        None => false,
    }
}

fn serial_of(pem: &[u8]) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.raw_serial_as_string())
}

fn expired_at(pem: &[u8], now: i64) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return true;
    };
    pem.parse_x509()
        .map_or(true, |cert| now >= cert.validity().not_after.timestamp())
}

/// Whether the certificate in `pem` is due for renewal at unix time `now`
/// (an unreadable one is: it must be replaced).
fn due_at(pem: &[u8], now: i64) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let start = cert.validity().not_before.timestamp();
    let end = cert.validity().not_after.timestamp();
    now >= start + (end - start) * 2 / 3
}

/// The `gantry.certs` job: obtains or renews what is due; `Err` carries the
/// first failure (the CA's words) after trying every host.
pub async fn run(gantry: &Gantry, log: &mut std::fs::File) -> anyhow::Result<()> {
    let Some(acme) = gantry.config.acme.clone() else {
        let _ = writeln!(log, "no [acme] in gantry.toml: nothing to do");
        return Ok(());
    };
    // Every app's own host, and every custom domain (each belongs to an app).
    let mut hosts: Vec<String> = gantry
        .store
        .list_apps()
        .await?
        .iter()
        .map(|app| gantry.config.app_host(&app.name))
        .collect();
    hosts.extend(
        gantry
            .store
            .list_domains()
            .await?
            .into_iter()
            .map(|(host, _)| host),
    );
    let mut attempts = attempts(gantry).await;
    let hosts: Vec<String> = hosts
        .into_iter()
        .filter(|h| h != "localhost" && !h.ends_with(".localhost") && !h.starts_with("*."))
        .filter(|h| due(gantry, &attempts, h))
        .collect();
    if hosts.is_empty() {
        let _ = writeln!(log, "every host's certificate is current");
        return Ok(());
    }
    let now = crate::time::now_ms();
    let (hosts, waiting): (Vec<String>, Vec<String>) = hosts
        .into_iter()
        .partition(|h| attempts.get(h).is_none_or(|a| a.not_before <= now));
    for host in &waiting {
        if let Some(attempt) = attempts.get(host) {
            let _ = writeln!(
                log,
                "-----> {host}: backing off after {} failed order(s) until {}; last error: {}",
                attempt.failures,
                crate::time::format_time(attempt.not_before),
                attempt.error.as_deref().unwrap_or("-")
            );
        }
    }
    if hosts.is_empty() {
        return Ok(());
    }
    let account = account(gantry, &acme).await?;
    let mut first_error = None;
    for host in hosts {
        let _ = writeln!(
            log,
            "-----> {host}: ordering a certificate from {} ({})",
            acme.directory,
            match acme.challenge {
                Challenge::Http01 => "HTTP-01",
                Challenge::TlsAlpn01 => "TLS-ALPN-01",
            }
        );
        let obtained = obtain(gantry, &account, &host, acme.challenge).await;
        let attempt = attempts.entry(host.clone()).or_default();
        attempt.at = crate::time::now_ms();
        match &obtained {
            Ok((chain, _)) => {
                attempt.error = None;
                attempt.failures = 0;
                attempt.not_before = 0;
                attempt.issued_serial = serial_of(chain.as_bytes());
            }
            Err(err) => {
                let text = format!("{err:#}");
                attempt.failures += 1;
                attempt.not_before = attempt.at + backoff_ms(attempt.failures, &text);
                attempt.error = Some(text);
            }
        }
        save_attempts(gantry, &attempts).await;
        match obtained {
            Ok((chain, key)) => {
                let app = gantry.store.domain_owner(&host).await.ok().flatten();
                match crate::certs::install(gantry, &host, chain.as_bytes(), key.as_bytes()).await {
                    Ok(expiry) => {
                        let _ = writeln!(
                            log,
                            "       installed; expires {expiry}{}",
                            app.map(|a| format!(" (app {a})")).unwrap_or_default()
                        );
                    }
                    Err(err) => {
                        let _ = writeln!(log, " !     {host}: {err:#}");
                        first_error.get_or_insert(format!("{host}: {err:#}"));
                    }
                }
            }
            Err(err) => {
                let _ = writeln!(log, " !     {host}: {err:#}");
                first_error.get_or_insert(format!("{host}: {err:#}"));
            }
        }
    }
    gantry.routing.reload_certs().await;
    match first_error {
        None => Ok(()),
        Some(err) => anyhow::bail!("{err}"),
    }
}

/// The built-in job that obtains and renews certificates.
pub const CERTS_JOB: &str = "gantry.certs";

/// `gantry.certs` as one of gantry's own jobs: every six hours, when
/// `[acme]` is set.
pub struct CertsJob;

#[async_trait::async_trait]
impl crate::context::Upkeep for CertsJob {
    fn name(&self) -> &'static str {
        CERTS_JOB
    }

    fn schedule(&self) -> &'static str {
        "17 */6 * * *"
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1800)
    }

    fn enabled(&self, config: &crate::config::Config) -> bool {
        config.acme.is_some()
    }

    async fn run(
        &self,
        gantry: &Gantry,
        log: &mut std::fs::File,
        _artifacts: &std::path::Path,
    ) -> anyhow::Result<()> {
        run(gantry, log).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_day_and_waits_out_rate_limits() {
        const HOUR: i64 = 3600 * 1000;
        assert_eq!(backoff_ms(1, "x"), HOUR);
        assert_eq!(backoff_ms(2, "x"), 2 * HOUR);
        assert_eq!(backoff_ms(4, "x"), 8 * HOUR);
        assert_eq!(backoff_ms(30, "x"), 24 * HOUR);
        assert_eq!(
            backoff_ms(1, "urn:ietf:params:acme:error:rateLimited: too many"),
            3 * HOUR
        );
    }

    #[test]
    fn certificates_renew_past_two_thirds_of_their_lifetime() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example.com".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let pem = params.self_signed(&key).expect("cert").pem();
        let day = |d: i64| 1_767_225_600 + d * 86_400; // 2026-01-01 + d days
        assert!(!due_at(pem.as_bytes(), day(1)));
        assert!(!due_at(pem.as_bytes(), day(59)));
        assert!(due_at(pem.as_bytes(), day(61)));
        assert!(due_at(b"not a certificate", day(1)));
        assert!(!expired_at(pem.as_bytes(), day(89)));
        assert!(expired_at(pem.as_bytes(), day(91)));
    }

    #[test]
    fn a_certificate_the_user_brought_is_not_taken_for_ours() {
        let cert = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            rcgen::CertificateParams::new(vec![name.into()])
                .expect("params")
                .self_signed(&key)
                .expect("cert")
                .pem()
        };
        let (acme_pem, user_pem) = (cert("a.example.com"), cert("a.example.com"));
        let issued = Attempt {
            at: 1,
            issued_serial: serial_of(acme_pem.as_bytes()),
            ..Attempt::default()
        };
        assert!(ours(Some(&issued), acme_pem.as_bytes()));
        assert!(
            !ours(Some(&issued), user_pem.as_bytes()),
            "replaced by certs:add"
        );
        assert!(!ours(None, user_pem.as_bytes()), "never ordered");
        let legacy = Attempt {
            at: 1,
            ..Attempt::default()
        };
        assert!(ours(Some(&legacy), user_pem.as_bytes()));
        let failed = Attempt {
            at: 1,
            failures: 1,
            error: Some("no".into()),
            ..Attempt::default()
        };
        assert!(!ours(Some(&failed), user_pem.as_bytes()));
    }
}
