//! The proxy's own responses: small HTML pages that say what happened and that
//! gantry served them, so a user never mistakes them for their app's output.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};

/// The page for a host that no app serves.
pub fn not_found(host: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::NOT_FOUND,
        "No app here",
        &format!(
            "gantry has no app deployed at <code>{}</code>. Push one with \
             <code>git push</code>, or check the host name.",
            escape(host)
        ),
    )
}

/// The page for a request whose backend failed or refused the connection.
pub fn bad_gateway(app: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::BAD_GATEWAY,
        "App not responding",
        &format!(
            "gantry could not reach the app <code>{}</code>. It may be restarting or \
             crashed; its logs say more.",
            escape(app)
        ),
    )
}

/// The page for an app with no running web process (stopped, or scaled to 0).
pub fn unavailable(app: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "App not running",
        &format!(
            "The app <code>{}</code> has no running web process (stopped, or scaled to zero).",
            escape(app)
        ),
    )
}

/// The page for a backend that did not answer in time.
pub fn gateway_timeout(app: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "App too slow",
        &format!(
            "The app <code>{}</code> did not start answering in time.",
            escape(app)
        ),
    )
}

/// The page for an app whose every replica refused connections lately.
pub fn no_healthy_backend(app: &str) -> Response<Full<Bytes>> {
    let mut resp = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "App unavailable",
        &format!(
            "No replica of the app <code>{}</code> is accepting connections right now; \
             gantry tries them again in a moment.",
            escape(app)
        ),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
    resp
}

/// The page for a request body over the proxy's size limit.
pub fn too_large(limit: u64) -> Response<Full<Bytes>> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        &format!("This server takes request bodies of at most {limit} bytes."),
    )
}

/// The page for a request without a usable `Host` header.
pub fn bad_request(reason: &str) -> Response<Full<Bytes>> {
    page(StatusCode::BAD_REQUEST, "Bad request", &escape(reason))
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em\">\
         <h1>{code} {title}</h1><p>{body_html}</p><hr><small>gantry</small></body></html>\n",
        code = status.as_u16(),
    );
    let mut response = Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::SERVER, header::HeaderValue::from_static("gantry"));
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_gantry_and_escapes_the_host() {
        let response = not_found("<script>.localhost");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = format!("{:?}", response.body());
        assert!(body.contains("gantry"));
        assert!(body.contains("&lt;script&gt;"));
        assert!(!body.contains("<script>"));
    }
}
