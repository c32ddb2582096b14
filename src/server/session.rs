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

/// The session cookie a request came with: none, one token, or more than
/// one (another site of the same host may set a cookie of that name too:
/// then no session is taken, rather than perhaps the other site's).
pub enum Presented {
    None,
    One(String),
    Several,
}

/// The session token in a request's cookies.
pub fn token(headers: &HeaderMap) -> Presented {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned());
    match (found.next(), found.next()) {
        (None, _) => Presented::None,
        (Some(t), None) => Presented::One(t),
        (Some(_), Some(_)) => Presented::Several,
    }
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

/// What stops an event stream: cancelled at shutdown, and when the
/// session it was opened with ends. Cancel it (drop a guard of it) when
/// the stream ends otherwise: the watch over the session stops with it.
pub fn stream_stop(api: &Api, session: Option<Session>) -> tokio_util::sync::CancellationToken {
    let stop = api.rt.shutdown.child_token();
    let watch = stop.clone();
    let ended = ended(api.clone(), session);
    tokio::spawn(async move {
        tokio::select! {
            () = ended => watch.cancel(),
            () = watch.cancelled() => {}
        }
    });
    stop
}

/// Until the session a stream was opened with ends: its expiry comes, or
/// (looked at every 30 s) it was signed out or its key revoked. Never,
/// for a stream opened with a key.
async fn ended(api: Api, session: Option<Session>) {
    let Some(s) = session else {
        return std::future::pending().await;
    };
    loop {
        let left = s.expires_ms.saturating_sub(api.rt.store.now_ms()).max(0);
        let wait = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
            .min(std::time::Duration::from_secs(30));
        tokio::time::sleep(wait).await;
        if left <= 30_000 && api.rt.store.now_ms() >= s.expires_ms {
            return;
        }
        match api.rt.store.session(&s.token_hash).await {
            Ok(Some((key_id, _, _))) => {
                if super::owner_of(&api, &key_id, None).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            // The database away: the stream goes on; looked at again.
            Err(_) => {}
        }
    }
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
    // Only the dashboard's own page signs in: a JSON request, not one
    // another site's page sent (a form or a no-cors fetch cannot send JSON
    // as such; a browser says where a request came from).
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return Err(ApiError::bad_request(
            "sign in with a JSON body (`Content-Type: application/json`): {\"api_key\": \"nxk_...\"}",
        ));
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site");
    if cross_site {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a sign-in from another site's page is refused",
        ));
    }
    let (caller, key_id) = super::authenticate_key(&api, body.api_key.trim()).await?;
    // Signing in again ends the session the browser had.
    if let Presented::One(old) = token(&headers) {
        let _ = api.rt.store.delete_session(&auth::hash_secret(&old)).await;
    }
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

/// Signs out: the session the cookie names ends (if it had not), and the
/// cookie is cleared, whatever it named.
#[utoipa::path(delete, path = "/v1/session", tag = "auth", security(()),
    responses(
        (status = 204, description = "Signed out"),
    ))]
pub async fn sign_out(State(api): State<Api>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Presented::One(t) = token(&headers) {
        api.rt
            .store
            .delete_session(&auth::hash_secret(&t))
            .await
            .map_err(ApiError::store)?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, secure(&headers)));
    Ok(response)
}
