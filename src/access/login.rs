//! Dashboard logins. `web:login` makes a one-time login link for the caller's
//! key; opening it exchanges it for a session. Only SHA-256 hashes of the
//! secrets are stored, and the key is looked up again on every request, so
//! removing a key ends its sessions.

use std::time::Duration;

use aws_lc_rs::digest::{digest, SHA256};

use super::Caller;
use crate::context::Gantry;
use crate::store::WebToken;
use crate::time::now_ms;

const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("cannot make random bytes"))?;
    Ok(hex(&bytes))
}

fn hash(secret: &str) -> String {
    hex(digest(&SHA256, secret.as_bytes()).as_ref())
}

fn key_name(caller: &Caller) -> String {
    match caller {
        Caller::Local => String::new(),
        Caller::Key(key) => key.name.to_string(),
    }
}

/// Makes a one-time login link for `caller`.
pub async fn login_link(gantry: &Gantry, caller: &Caller) -> anyhow::Result<String> {
    let secret = random_secret()?;
    gantry
        .store
        .add_web_token(&WebToken {
            id: hash(&secret),
            kind: "login".into(),
            key_name: key_name(caller),
            csrf: String::new(),
            expires_at: now_ms() + LOGIN_TTL.as_millis() as i64,
        })
        .await?;
    Ok(format!("{}/login/{secret}", gantry.config.dashboard_url()))
}

/// Exchanges a login secret (once) for a new session; returns the session secret.
pub async fn redeem(gantry: &Gantry, login_secret: &str) -> anyhow::Result<Option<String>> {
    let id = hash(login_secret);
    let Some(login) = gantry.store.web_token(&id, "login").await? else {
        return Ok(None);
    };
    if !gantry.store.remove_web_token(&id).await? {
        return Ok(None);
    }
    let session = random_secret()?;
    gantry
        .store
        .add_web_token(&WebToken {
            id: hash(&session),
            kind: "session".into(),
            key_name: login.key_name,
            csrf: random_secret()?,
            expires_at: now_ms() + SESSION_TTL.as_millis() as i64,
        })
        .await?;
    Ok(Some(session))
}

/// A logged-in visitor.
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    id: String,
}

impl Session {
    pub async fn end(&self, gantry: &Gantry) -> anyhow::Result<()> {
        gantry.store.remove_web_token(&self.id).await?;
        Ok(())
    }
}

/// The session a session secret (the cookie's value) names, if valid.
pub async fn session(gantry: &Gantry, secret: &str) -> anyhow::Result<Option<Session>> {
    let id = hash(secret);
    let Some(token) = gantry.store.web_token(&id, "session").await? else {
        return Ok(None);
    };
    let caller = if token.key_name.is_empty() {
        Caller::Local
    } else {
        match gantry.store.get_key(&token.key_name).await? {
            Some(key) => Caller::Key(key),
            None => return Ok(None),
        }
    };
    Ok(Some(Session {
        caller,
        csrf: token.csrf,
        id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_secrets() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let a = random_secret().expect("secret");
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_secret().expect("secret"));
    }
}
