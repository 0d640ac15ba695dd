//! Certificates from an ACME CA (Let's Encrypt by default) with instant-acme.
//!
//! With `[acme] email` set, the built-in job `gantry.certs` obtains a
//! certificate for every host an app answers on that has none, and renews
//! those past two thirds of their lifetime. It runs every six hours, after
//! `domains:add`, and by hand (`jobs:run gantry.certs`); a failed issuance is a
//! failed run whose reason is the CA's error, so it alerts like any job.
//! Validation is HTTP-01: the proxy answers the challenge itself. `*.localhost`
//! hosts are left to the development CA.

use std::io::Write;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::Deserialize;

use crate::names::AppName;
use crate::server::Gantry;

/// `[acme]` in gantry.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The account's contact address.
    pub email: String,
    /// The CA's directory URL.
    #[serde(default = "lets_encrypt")]
    pub directory: String,
    /// A PEM root to trust for the CA's own HTTPS (a test CA such as Pebble).
    pub ca_root: Option<std::path::PathBuf>,
}

fn lets_encrypt() -> String {
    instant_acme::LetsEncrypt::Production.url().to_owned()
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
    if let Ok(text) = std::fs::read_to_string(&path) {
        let credentials: AccountCredentials = serde_json::from_str(&text)?;
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

/// Obtains a certificate for `host` over HTTP-01; returns (chain PEM, key PEM).
async fn obtain(
    gantry: &Gantry,
    account: &Account,
    host: &str,
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
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| anyhow::anyhow!("the CA offers no HTTP-01 challenge for {host}"))?;
            let token = challenge.token.clone();
            let answer = challenge.key_authorization().as_str().to_owned();
            gantry
                .challenges
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token.clone(), answer);
            tokens.push(token);
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
    let mut answers = gantry.challenges.write().unwrap_or_else(|e| e.into_inner());
    for token in tokens {
        answers.remove(&token);
    }
    outcome
}

/// Whether `host` needs a certificate now: none yet, or past two thirds of
/// its lifetime.
fn due(gantry: &Gantry, host: &str) -> bool {
    let path = gantry
        .config
        .certs_dir()
        .join(format!("{}.pem", host.replace('*', "_wildcard")));
    let Ok(pem) = std::fs::read(path) else {
        return true;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let start = cert.validity().not_before.timestamp();
    let end = cert.validity().not_after.timestamp();
    let now = crate::store::now_ms() / 1000;
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
    let hosts: Vec<String> = hosts
        .into_iter()
        .filter(|h| h != "localhost" && !h.ends_with(".localhost") && !h.starts_with("*."))
        .filter(|h| due(gantry, h))
        .collect();
    if hosts.is_empty() {
        let _ = writeln!(log, "every host's certificate is current");
        return Ok(());
    }
    let account = account(gantry, &acme).await?;
    let mut first_error = None;
    for host in hosts {
        let _ = writeln!(
            log,
            "-----> {host}: ordering a certificate from {}",
            acme.directory
        );
        match obtain(gantry, &account, &host).await {
            Ok((chain, key)) => {
                let app = gantry.store.domain_owner(&host).await.ok().flatten();
                match crate::certs::install(gantry, &host, chain.as_bytes(), key.as_bytes()) {
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
    match first_error {
        None => Ok(()),
        Some(err) => anyhow::bail!("{err}"),
    }
}

/// Queues a `gantry.certs` run now (after `domains:add`), if ACME is on.
pub async fn request(gantry: &Gantry, app: &AppName) {
    if gantry.config.acme.is_none() {
        return;
    }
    let Ok(job) = crate::jobs::find(gantry, crate::jobs::definition::CERTS).await else {
        return;
    };
    let cause = format!("domains of {app}");
    let trigger = crate::jobs::Trigger {
        kind: "upstream",
        cause: &cause,
        params: Vec::new(),
        parent: "",
    };
    if let Err(err) = crate::jobs::trigger(gantry, job, trigger).await {
        tracing::warn!(%app, error = %err, "cannot queue certificate issuance");
    }
}
