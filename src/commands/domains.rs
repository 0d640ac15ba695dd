//! `domains`, `domains:add`, `domains:remove`, `certs`, `certs:add`.

use crate::access::Caller;
use crate::certs;
use crate::context::Gantry;
use crate::names::AppName;

async fn app(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<AppName> {
    Ok(crate::access::managed_app(gantry, caller, name).await?.name)
}

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    let hosts = certs::hosts(gantry, &app).await?;
    let mut out = format!("{app} answers on:\n");
    for (i, host) in hosts.iter().enumerate() {
        out.push_str(&format!(
            "  {host}{}\n",
            if i == 0 { " (its own)" } else { "" }
        ));
    }
    Ok(out)
}

pub async fn add(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    host: &str,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    crate::domains::add_domain(gantry, &app, host).await
}

pub async fn remove(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    host: &str,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    crate::domains::remove_domain(gantry, &app, host).await
}

pub async fn show_certs(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    crate::domains::show(gantry, &app).await
}

pub async fn set_redirect(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    on: bool,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    crate::domains::set_redirect(gantry, &app, on).await
}

/// `pem` holds the chain and the key, one after the other (PEM blocks say
/// what they are), as the CLI sends them.
pub async fn add_cert(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    pem: Option<String>,
) -> anyhow::Result<String> {
    let app = app(gantry, caller, name).await?;
    let pem = pem.ok_or_else(|| {
        anyhow::anyhow!("send the certificate chain and then the key as PEM on standard input")
    })?;
    certs::add_certificate(gantry, &app, pem.as_bytes(), pem.as_bytes()).await
}
