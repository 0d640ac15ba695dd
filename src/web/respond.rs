//! How the dashboard answers: an HTML page with its security headers, a
//! redirect, a problem page; and the error of a handler that failed.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::Markup;

use super::pages;

/// A handler's answer: a response, or the error shown as a 500 page.
pub type Page = Result<Response, PageError>;

/// A page whose work failed: logged, and shown to the visitor.
pub struct PageError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(err: E) -> Self {
        PageError(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let err = self.0;
        tracing::warn!(error = %format!("{err:#}"), "dashboard request failed");
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            &format!("{err:#}"),
            None,
        )
    }
}

/// An HTML page, never cached, never framed, with a strict content policy.
pub fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'",
        ),
    );
    response
}

/// `303 See Other` to `to`, setting `cookie` if given.
pub fn redirect(to: &str, cookie: Option<&str>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A page that says what went wrong; with `csrf`, it keeps the Log out button.
pub fn problem(status: StatusCode, title: &str, text: &str, csrf: Option<&str>) -> Response {
    html(
        status,
        pages::layout(title, csrf, pages::message(title, text)),
    )
}

pub fn not_found(csrf: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page, or no such app you may see.",
        Some(csrf),
    )
}

pub fn csrf_refused(csrf: &str) -> Response {
    problem(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form's CSRF token is missing or wrong; reload the page.",
        Some(csrf),
    )
}
