//! Custom domains (`domains:add`): an app answers on them like on its own
//! `APP.DOMAIN`, and with ACME they get certificates; `certs APP` shows what
//! each host is served with, and `certs:redirect` sends plain HTTP to HTTPS.

use crate::certs;
use crate::context::Gantry;
use crate::names::AppName;

/// Checks a host name for `domains:add`: DNS labels, at least two of them.
pub fn check_domain(host: &str) -> anyhow::Result<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let wildcard_ok = labels.first() == Some(&"*") && labels.len() > 2;
    if host.len() > 253
        || labels.len() < 2
        || !labels
            .iter()
            .enumerate()
            .all(|(i, l)| label_ok(l) || (i == 0 && wildcard_ok))
    {
        anyhow::bail!(
            "{host:?} is not a domain name: use labels of letters, digits and '-', separated by dots (a leading *. for a wildcard)"
        );
    }
    Ok(host)
}

pub async fn add_domain(gantry: &Gantry, app: &AppName, host: &str) -> anyhow::Result<String> {
    let host = check_domain(host)?;
    if host == gantry.config.dashboard_host
        || host.ends_with(&format!(".{}", gantry.config.domain)) && !host.starts_with("*.")
    {
        if gantry.config.app_host(app) == host {
            anyhow::bail!("{host} is {app}'s own host name already");
        }
        anyhow::bail!(
            "{host} is under gantry's own domain {}; pick a domain of yours",
            gantry.config.domain
        );
    }
    gantry.store.add_domain(app, &host).await?;
    gantry
        .routing
        .alias(&host, &gantry.config.app_host(app))
        .await;
    request_certificates(gantry, app).await;
    Ok(format!(
        "{app} now answers on {host} (point its DNS at this server; gantry certs:add {app} CERT KEY for HTTPS)\n"
    ))
}

pub async fn remove_domain(gantry: &Gantry, app: &AppName, host: &str) -> anyhow::Result<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if !gantry.store.remove_domain(app, &host).await? {
        anyhow::bail!("{app} has no domain {host} (see gantry domains {app})");
    }
    gantry.routing.unalias(&host).await;
    Ok(format!("{app} no longer answers on {host}\n"))
}

/// `certs APP`: each host, and the certificate it is served with.
pub async fn show(gantry: &Gantry, app: &AppName) -> anyhow::Result<String> {
    let mut out = String::new();
    let attempts = crate::acme::attempts(gantry).await;
    for host in certs::hosts(gantry, app).await? {
        let (chain, _) = certs::paths(gantry, &certs::stem(&host));
        let line = match std::fs::read(&chain)
            .ok()
            .and_then(|pem| certs::describe(&pem).ok())
        {
            Some(info) => format!(
                "{host}: issuer {}; names {}; expires {}",
                info.issuer,
                info.names.join(", "),
                info.not_after
            ),
            None if gantry.config.domain == "localhost" && host.ends_with(".localhost") => {
                format!(
                    "{host}: signed by the local development CA ({})",
                    certs::paths(gantry, certs::LOCAL_CA).0.display()
                )
            }
            None => format!("{host}: no certificate (gantry certs:add {app} CERT KEY)"),
        };
        out.push_str(&line);
        if let Some(attempt) = attempts.get(&host) {
            out.push_str(&format!(
                "; last ACME order {}: {}",
                crate::time::format_time(attempt.at),
                match &attempt.error {
                    None => "succeeded".to_owned(),
                    Some(err) => format!(
                        "failed ({} in a row; next try after {}): {err}",
                        attempt.failures,
                        crate::time::format_time(attempt.not_before)
                    ),
                }
            ));
        }
        out.push('\n');
    }
    let redirect = gantry
        .store
        .get_app(app)
        .await?
        .is_some_and(|a| a.https_redirect);
    out.push_str(&format!(
        "HTTP to HTTPS redirect: {} (gantry certs:redirect {app} {})\n",
        if redirect {
            "on, for hosts with a certificate"
        } else {
            "off"
        },
        if redirect { "off" } else { "on" }
    ));
    Ok(out)
}

/// `certs:redirect APP on|off`: plain HTTP answers with a 308 to HTTPS, for
/// the app's hosts that have a certificate of their own.
pub async fn set_redirect(gantry: &Gantry, app: &AppName, on: bool) -> anyhow::Result<String> {
    gantry.store.set_https_redirect(app, on).await?;
    if gantry.store.current_release(app).await?.is_some() {
        crate::deploy::reroute(gantry, app).await?;
    }
    Ok(format!(
        "{app}: HTTP to HTTPS redirect {}\n",
        if on {
            "on (for hosts with a certificate of their own)"
        } else {
            "off"
        }
    ))
}

/// Queues a `gantry.certs` run now (after `domains:add`), if ACME is on.
async fn request_certificates(gantry: &Gantry, app: &AppName) {
    if gantry.config.acme.is_none() {
        return;
    }
    let Ok(job) = crate::jobs::find(gantry, crate::acme::CERTS_JOB).await else {
        return;
    };
    let cause = format!("domains of {app}");
    let trigger = crate::jobs::Trigger {
        kind: "upstream",
        cause: &cause,
        params: Vec::new(),
        parent: "",
        fence: None,
    };
    if let Err(err) = crate::jobs::trigger(gantry, job, trigger).await {
        tracing::warn!(%app, error = %err, "cannot queue certificate issuance");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked() {
        assert_eq!(
            check_domain("Shop.Example.com.").expect("ok"),
            "shop.example.com"
        );
        assert!(check_domain("*.example.com").is_ok());
        for bad in [
            "localhost",
            "ex ample.com",
            "-a.com",
            "a..com",
            "*.com",
            "a.*.com",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }
}
