//! `keys:add`, `keys:list`, `keys:remove`: who may push and manage what.

use crate::access::keys::{parse_public_key, record};
use crate::access::Caller;
use crate::context::Gantry;
use crate::names::{AppName, KeyName};
use crate::store::{KeyRecord, Role};

pub async fn add(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    pubkey_file: &str,
    stdin: Option<String>,
    admin: bool,
    apps: &[String],
) -> anyhow::Result<String> {
    caller.require_admin("add keys")?;
    let name = KeyName::parse(name)?;
    let text = match (pubkey_file, stdin) {
        ("-", Some(text)) => text,
        _ => anyhow::bail!(
            "over SSH, send the key on standard input: ssh -p PORT git@HOST keys:add {name} - --admin < key.pub"
        ),
    };
    let key = parse_public_key(&text)?;
    let (role, apps) = match (admin, apps.is_empty()) {
        (true, _) => (Role::Admin, Vec::new()),
        (false, false) => (
            Role::Deployer,
            apps.iter()
                .map(|a| AppName::parse(a.trim()))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        (false, true) => {
            anyhow::bail!("say what the key may do: --admin, or --apps APP1,APP2 for a deployer")
        }
    };
    let record = record(name, &key, role, apps)?;
    gantry.store.add_key(&record).await?;
    Ok(format!(
        "Added key {} ({}) {}\n",
        record.name,
        describe(&record),
        record.fingerprint
    ))
}

pub async fn list(gantry: &Gantry, caller: &Caller) -> anyhow::Result<String> {
    caller.require_admin("list keys")?;
    let keys = gantry.store.list_keys().await?;
    if keys.is_empty() {
        return Ok("No keys. Add one: gantry keys:add NAME ~/.ssh/id_ed25519.pub --admin\n".into());
    }
    let width = keys
        .iter()
        .map(|k| k.name.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$}  {:50}  FINGERPRINT\n", "NAME", "ROLE");
    for key in keys {
        out.push_str(&format!(
            "{:width$}  {:50}  {}\n",
            key.name.as_str(),
            describe(&key),
            key.fingerprint
        ));
    }
    Ok(out)
}

pub async fn remove(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    caller.require_admin("remove keys")?;
    let name = KeyName::parse(name)?;
    gantry.store.remove_key(&name).await?;
    Ok(format!("Removed key {name}\n"))
}

fn describe(key: &KeyRecord) -> String {
    match key.role {
        Role::Admin => "admin".into(),
        Role::Deployer => {
            let apps: Vec<&str> = key.apps.iter().map(AppName::as_str).collect();
            format!("deployer: {}", apps.join(","))
        }
    }
}
