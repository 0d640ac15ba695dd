//! SSH keys as gantry knows them: an OpenSSH public key line parsed, reduced
//! to the canonical form it is stored and looked up in, and made a record.

use russh::keys::ssh_key::{HashAlg, PublicKey};

use crate::names::{AppName, KeyName};
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
