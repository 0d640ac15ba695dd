//! `keys:add`, `keys:list`, `keys:remove`: who may push and manage what.

use russh::keys::ssh_key::{HashAlg, PublicKey};

use super::Caller;
use crate::names::{AppName, KeyName};
use crate::server::Gantry;
use crate::store::{KeyRecord, Role};

/// Parses an OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
pub fn parse_public_key(text: &str) -> anyhow::Result<PublicKey> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no public key given (expected a line like `ssh-ed25519 AAAA… you@host`)"
            )
        })?;
    PublicKey::from_openssh(line).map_err(|e| {
        anyhow::anyhow!("not an OpenSSH public key ({e}); give the .pub file, not the private key")
    })
}

/// The form keys are stored and looked up in: `ALGORITHM BASE64`, no comment.
pub fn canonical(key: &PublicKey) -> anyhow::Result<String> {
    Ok(PublicKey::new(key.key_data().clone(), "")
        .to_openssh()?
        .trim()
        .to_owned())
}

/// A key record for `key`, ready to store.
pub fn record(
    name: KeyName,
    key: &PublicKey,
    role: Role,
    apps: Vec<AppName>,
) -> anyhow::Result<KeyRecord> {
    Ok(KeyRecord {
        name,
        public_key: canonical(key)?,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        role,
        apps,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_drops_the_comment() {
        let a = parse_public_key(
            "# my key\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop\n",
        )
        .expect("parse");
        let b = parse_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl other",
        )
        .expect("parse");
        assert_eq!(
            canonical(&a).expect("canonical"),
            canonical(&b).expect("canonical")
        );
        assert!(canonical(&a)
            .expect("canonical")
            .starts_with("ssh-ed25519 AAAA"));
    }

    #[test]
    fn garbage_and_private_keys_are_refused_clearly() {
        let err = parse_public_key("-----BEGIN OPENSSH PRIVATE KEY-----").expect_err("private");
        assert!(
            err.to_string().contains("not an OpenSSH public key"),
            "{err}"
        );
        assert!(parse_public_key("\n\n").is_err());
    }
}
