//! The dashboard's files, embedded in the binary (`ui/`): served at `/`
//! and `/ui/...` unless the agent runs with `--no-ui`. No CDN, no font or
//! script from elsewhere; the Content-Security-Policy allows only this
//! origin.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The dashboard's page.
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// Its script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(file(APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Ok(file(APP_CSS, "text/css; charset=utf-8")),
        _ => Err(ApiError::not_found("no such file of the dashboard")),
    }
}
