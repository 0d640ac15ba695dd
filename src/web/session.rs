//! The dashboard's session: a cookie (HttpOnly, SameSite=Strict) naming a
//! session of `access::login`'s, checked by the [`require`] middleware on
//! every page but the public ones, and the CSRF token every form must carry
//! ([`CsrfForm`]).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::respond::{csrf_refused, problem, PageError};
use crate::access::login::{self, Session, SESSION_TTL};
use crate::access::Caller;
use crate::context::Gantry;

pub const COOKIE: &str = "gantry_session";

/// The most a dashboard form may send.
const MAX_FORM: usize = 16 * 1024;

/// The `Set-Cookie` value for a new session.
pub fn cookie(session_secret: &str) -> String {
    format!(
        "{COOKIE}={session_secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn expired_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session a request's cookie names, if valid.
pub async fn session_of(gantry: &Gantry, headers: &HeaderMap) -> anyhow::Result<Option<Session>> {
    let Some(secret) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.split(';')
                .filter_map(|part| part.trim().split_once('='))
                .find(|(name, _)| *name == COOKIE)
                .map(|(_, value)| value.to_owned())
        })
    else {
        return Ok(None);
    };
    login::session(gantry, &secret).await
}

/// The caller of a request with a valid session cookie.
pub async fn caller_of(gantry: &Gantry, headers: &HeaderMap) -> Option<Caller> {
    session_of(gantry, headers)
        .await
        .ok()
        .flatten()
        .map(|s| s.caller)
}

/// Middleware: a request without a valid session gets the log-in page; one
/// with a session carries it on (see [`LoggedIn`]).
pub async fn require(State(gantry): State<Arc<Gantry>>, mut req: Request, next: Next) -> Response {
    match session_of(&gantry, req.headers()).await {
        Ok(Some(session)) => {
            let key = session.caller.name();
            req.extensions_mut().insert(Arc::new(session));
            // The page's header names who is logged in.
            super::pages::VISITOR.scope(key, next.run(req)).await
        }
        Ok(None) => problem(
            StatusCode::UNAUTHORIZED,
            "Log in",
            "Run `gantry web:login` on the host (or `ssh -p PORT git@HOST web:login`) and open the link it prints.",
            None,
        ),
        Err(err) => PageError::from(err).into_response(),
    }
}

/// The logged-in visitor of a page behind [`require`].
pub struct LoggedIn(pub Arc<Session>);

impl LoggedIn {
    pub fn caller(&self) -> &Caller {
        &self.0.caller
    }

    pub fn csrf(&self) -> &str {
        &self.0.csrf
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Session>>()
            .cloned()
            .map(LoggedIn)
            .ok_or_else(|| {
                PageError::from(anyhow::anyhow!(
                    "a page behind the session check has no session"
                ))
                .into_response()
            })
    }
}

/// A posted form (urlencoded, at most 16 KiB) whose `csrf` field is the
/// session's token; its fields.
pub struct CsrfForm(pub Vec<(String, String)>);

impl CsrfForm {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A form without the session's CSRF token.
pub struct CsrfRefused {
    csrf: String,
}

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        csrf_refused(&self.csrf)
    }
}

impl<S: Send + Sync> FromRequest<S> for CsrfForm {
    type Rejection = CsrfRefused;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let csrf = req
            .extensions()
            .get::<Arc<Session>>()
            .map(|s| s.csrf.clone())
            .unwrap_or_default();
        let refused = || CsrfRefused { csrf: csrf.clone() };
        let body = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|_| refused())?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let matches = !csrf.is_empty() && fields.iter().any(|(n, v)| n == "csrf" && *v == csrf);
        if matches {
            Ok(CsrfForm(fields))
        } else {
            Err(refused())
        }
    }
}

/// The record of the app a caller may see, or `None` (shown as 404 either
/// way): every app page asks this first.
pub async fn visible_app(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
) -> anyhow::Result<Option<crate::store::AppRecord>> {
    let Ok(app) = crate::names::AppName::parse(name) else {
        return Ok(None);
    };
    if !caller.may_manage(&app) {
        return Ok(None);
    }
    Ok(gantry.store.get_app(&app).await?)
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
        assert!(expired_cookie().contains("Max-Age=0"));
    }
}
