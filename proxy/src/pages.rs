//! The proxy's own responses: small HTML pages that say what happened and that
//! gantry served them, so a user never mistakes them for their app's output.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// One of the proxy's own answers, before it is written out by either the
/// HTTP/1.1 path or hyper's (HTTP/2).
#[derive(Debug, Clone)]
pub struct Page {
    pub status: StatusCode,
    /// Content type, `Server`, and any the answer needs (`Location`, `Retry-After`).
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Page {
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }

    /// A plain-text answer (an ACME HTTP-01 key authorization).
    pub fn text(body: String) -> Page {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Page {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(body),
        }
    }

    /// A `308` to `location`, with no body.
    pub fn redirect(location: HeaderValue) -> Page {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, location);
        Page {
            status: StatusCode::PERMANENT_REDIRECT,
            headers,
            body: Bytes::new(),
        }
    }
}

/// The page for a host that no app serves.
pub fn not_found(host: &str) -> Page {
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
pub fn bad_gateway(app: &str) -> Page {
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
pub fn unavailable(app: &str) -> Page {
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
pub fn gateway_timeout(app: &str) -> Page {
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
pub fn no_healthy_backend(app: &str) -> Page {
    let mut resp = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "App unavailable",
        &format!(
            "No replica of the app <code>{}</code> is accepting connections right now; \
             gantry tries them again in a moment.",
            escape(app)
        ),
    );
    resp.headers
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    resp
}

/// The page for a request body over the proxy's size limit.
pub fn too_large(limit: u64) -> Page {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        &format!("This server takes request bodies of at most {limit} bytes."),
    )
}

/// The page for a request without a usable `Host` header.
pub fn bad_request(reason: &str) -> Page {
    page(StatusCode::BAD_REQUEST, "Bad request", &escape(reason))
}

/// The page for a request the proxy will not take as sent: malformed (400),
/// too slow to arrive (408), a method it does not proxy (405), a header
/// section too large (431).
pub fn refused(status: u16, reason: &str) -> Page {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let title = status.canonical_reason().unwrap_or("Bad request");
    page(status, title, &escape(reason))
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Page {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em\">\
         <h1>{code} {title}</h1><p>{body_html}</p><hr><small>gantry</small></body></html>\n",
        code = status.as_u16(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::SERVER, HeaderValue::from_static("gantry"));
    Page {
        status,
        headers,
        body: Bytes::from(html),
    }
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
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        let body = String::from_utf8_lossy(&response.body).into_owned();
        assert!(body.contains("gantry"));
        assert!(body.contains("&lt;script&gt;"));
        assert!(!body.contains("<script>"));
    }
}
