//! Sessions for the dashboard: an API key exchanged once for a session
//! cookie (HttpOnly, SameSite=Strict, Secure behind TLS, with an expiry),
//! so the browser never keeps the key. A request signed in by the cookie
//! acts as the key's user with its role, checked again at each request (a
//! revoked key ends its sessions); a state-changing one must also carry
//! the session's CSRF token in `X-CSRF-Token`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::error::JsonBody;
use super::{Api, ApiError, Caller};
use crate::api::{ErrorBody, SessionInfo, SessionRequest};
use crate::auth;
use crate::store::timestamp;

/// The cookie's name.
pub const COOKIE: &str = "nexus_session";

/// The header a state-changing request signed in by the cookie carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session a request came with (set by the middleware).
#[derive(Debug, Clone)]
pub struct Session {
    pub token_hash: String,
    pub csrf: String,
    pub expires_ms: i64,
}

/// The session token in a request's cookies, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Behind a TLS proxy (`X-Forwarded-Proto: https`): the cookie is Secure.
fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let text = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Signs in: the API key in the body (never in the URL) for a session.
#[utoipa::path(post, path = "/v1/session", tag = "auth", security(()),
    request_body(content = SessionRequest, description = "An API key"),
    responses(
        (status = 201, description = "Signed in: the session cookie is set (`Set-Cookie`); the answer has its CSRF token", body = SessionInfo),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, description = "The key is malformed, not valid or revoked", body = ErrorBody),
    ))]
pub async fn sign_in(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SessionRequest>,
) -> Result<Response, ApiError> {
    let (caller, key_id) = super::authenticate_key(&api, body.api_key.trim()).await?;
    let token = auth::new_token().map_err(ApiError::internal)?;
    let csrf = auth::new_token().map_err(ApiError::internal)?;
    let now = api.rt.store.now_ms();
    let ttl_ms = i64::try_from(api.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_ms = now.saturating_add(ttl_ms);
    api.rt
        .store
        .create_session(&auth::hash_secret(&token), &key_id, &csrf, now, expires_ms)
        .await
        .map_err(ApiError::store)?;
    tracing::info!(user = %caller.user, "signed in to the dashboard");
    let info = SessionInfo {
        user: caller.user,
        role: caller.role.as_str().to_owned(),
        csrf,
        expires_at: timestamp(Some(expires_ms)).unwrap_or_default(),
    };
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&token, api.session_ttl.as_secs(), secure(&headers)),
    );
    Ok(response)
}

/// The session this request came with: who, with which role, its CSRF
/// token and its end (what the dashboard reads when it loads).
#[utoipa::path(get, path = "/v1/session", tag = "auth",
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 401, description = "No session (or it ended)", body = ErrorBody),
    ))]
pub async fn current(
    Extension(caller): Extension<Caller>,
    session: Option<Extension<Session>>,
) -> Result<Json<SessionInfo>, ApiError> {
    let Some(Extension(s)) = session else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no session: this request came with an API key, not a session cookie",
        ));
    };
    Ok(Json(SessionInfo {
        user: caller.user,
        role: caller.role.as_str().to_owned(),
        csrf: s.csrf,
        expires_at: timestamp(Some(s.expires_ms)).unwrap_or_default(),
    }))
}

/// Signs out: the session ends, and its cookie is cleared.
#[utoipa::path(delete, path = "/v1/session", tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "No session", body = ErrorBody),
    ))]
pub async fn sign_out(
    State(api): State<Api>,
    headers: HeaderMap,
    session: Option<Extension<Session>>,
) -> Result<Response, ApiError> {
    if let Some(Extension(s)) = session {
        api.rt
            .store
            .delete_session(&s.token_hash)
            .await
            .map_err(ApiError::store)?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, secure(&headers)));
    Ok(response)
}
