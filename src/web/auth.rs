//! The dashboard's session cookie (HttpOnly, SameSite=Strict); the sessions
//! themselves are `access::login`'s.

use crate::access::login::{self, Session, SESSION_TTL};
use crate::context::Gantry;

pub const COOKIE: &str = "gantry_session";

/// The session named by the request's cookie header, if valid.
pub async fn session(
    gantry: &Gantry,
    cookie_header: Option<&str>,
) -> anyhow::Result<Option<Session>> {
    let Some(secret) = cookie_header.and_then(|h| {
        h.split(';')
            .filter_map(|part| part.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned())
    }) else {
        return Ok(None);
    };
    login::session(gantry, &secret).await
}

/// The `Set-Cookie` value for a new session.
pub fn cookie(session_secret: &str) -> String {
    format!(
        "{COOKIE}={session_secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_are_http_only_and_strict() {
        let c = cookie("s3");
        assert!(
            c.starts_with("gantry_session=s3;")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Strict")
        );
    }
}
