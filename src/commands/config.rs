//! `config`, `config:get`, `config:set`, `config:unset`: an app's config vars.
//! A change makes a release with the current image and restarts the app with no
//! downtime (or, with `--no-restart`, only records it).

use crate::access::Caller;
use crate::config_vars::ConfigVars;
use crate::context::Gantry;
use crate::names::AppName;

pub async fn show(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let vars = ConfigVars::open(&record.config, &gantry.secrets)?;
    if vars.is_empty() {
        return Ok(format!("{} has no config vars\n", record.name));
    }
    Ok(vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect())
}

/// `config:export`: the vars in a form a shell or a tool reads back
/// exactly, newlines and quotes included.
pub async fn export(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    format: &str,
) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let vars = ConfigVars::open(&record.config, &gantry.secrets)?;
    Ok(render_export(&vars, format))
}

fn render_export(vars: &ConfigVars, format: &str) -> String {
    let quote = |v: &str| {
        shlex::try_quote(v)
            .map(|q| q.into_owned())
            .unwrap_or_else(|_| format!("'{}'", v.replace('\'', "'\\''")))
    };
    match format {
        "json" => {
            let map: serde_json::Map<String, serde_json::Value> = vars
                .iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
                .collect();
            format!("{}\n", serde_json::Value::Object(map))
        }
        "envfile" => vars
            .iter()
            .map(|(k, v)| format!("{k}={}\n", quote(v)))
            .collect(),
        "shell" => {
            let line: Vec<String> = vars
                .iter()
                .map(|(k, v)| format!("{k}={}", quote(v)))
                .collect();
            format!("{}\n", line.join(" "))
        }
        _ => vars
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", quote(v)))
            .collect(),
    }
}

pub async fn get(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    key: &str,
) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let vars = ConfigVars::open(&record.config, &gantry.secrets)?;
    match vars.get(key) {
        Some(value) => Ok(format!("{value}\n")),
        None => anyhow::bail!("{key} is not set on {}", record.name),
    }
}

pub async fn set(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    assignments: &[String],
    no_restart: bool,
    encoded: bool,
) -> anyhow::Result<String> {
    // Every bad assignment is reported, not just the first.
    let (pairs, errors): (Vec<_>, Vec<_>) = assignments
        .iter()
        .map(|a| {
            if encoded {
                ConfigVars::parse_encoded_assignment(a)
            } else {
                ConfigVars::parse_assignment(a)
            }
        })
        .partition(Result::is_ok);
    if !errors.is_empty() {
        let messages: Vec<String> = errors
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        anyhow::bail!("{}", messages.join("; "));
    }
    let pairs: Vec<(String, String)> = pairs.into_iter().filter_map(Result::ok).collect();
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let description = format!("Set {}", names.join(", "));
    change(gantry, caller, name, description, no_restart, |vars| {
        for (k, v) in pairs {
            vars.set(k, v);
        }
    })
    .await
}

pub async fn unset(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    keys: &[String],
    no_restart: bool,
) -> anyhow::Result<String> {
    for key in keys {
        ConfigVars::check_name(key)?;
    }
    let description = format!("Unset {}", keys.join(", "));
    change(gantry, caller, name, description, no_restart, |vars| {
        for key in keys {
            vars.unset(key);
        }
    })
    .await
}

/// Applies `edit` to the app's config and releases the result.
async fn change(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    description: String,
    no_restart: bool,
    edit: impl FnOnce(&mut ConfigVars),
) -> anyhow::Result<String> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    crate::deploy::releases::change_config(
        gantry,
        &app,
        &caller.name(),
        description,
        no_restart,
        edit,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_read_back_exactly_in_a_shell() {
        let mut vars = ConfigVars::default();
        vars.set("A".into(), "two\nlines with 'quotes' and $HOME".into());
        vars.set("B".into(), "plain".into());
        let script = format!(
            "{}printf '%s|%s' \"$A\" \"$B\"",
            render_export(&vars, "exports")
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "two\nlines with 'quotes' and $HOME|plain"
        );
        assert_eq!(
            render_export(&vars, "json"),
            "{\"A\":\"two\\nlines with 'quotes' and $HOME\",\"B\":\"plain\"}\n"
        );
    }
}
