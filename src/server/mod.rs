//! The HTTP API (SPEC section 7): JSON in and out, API keys, roles.
//! Who may call what is decided in one place, [`required_role`], applied by
//! one middleware before any handler runs. Every error is
//! `{"error": {"code", "message"}}` with a 4xx for bad input.

mod error;
mod files;
pub mod openapi;
mod routes;
pub mod session;
mod ui;

use std::sync::Arc;
use std::time::Instant;

use crate::api::{Health, HealthStatus};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

pub use self::error::ApiError;
use crate::auth::{self, Role};
use crate::engine::intake::Intake;
use crate::engine::registry::Registry;
use crate::engine::run::Runtime;
use crate::events::{new_id, now_ms};

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    pub registry: Arc<Registry>,
    pub rt: Arc<Runtime>,
    /// The way in for the events the API makes (`workflows trigger`).
    pub intake: Intake,
    /// Serve the dashboard at `/` (not with `--no-ui`).
    pub ui: bool,
    /// How long a dashboard session lasts.
    pub session_ttl: std::time::Duration,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
}

/// Largest request body accepted (an apply of many definitions, a file).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub fn router(api: Api) -> Router {
    let v1 = Router::new()
        .route("/v1/apply", post(routes::apply))
        .route("/v1/diff", post(routes::diff))
        .route("/v1/workflows", get(routes::list_workflows))
        .route(
            "/v1/workflows/{name}",
            get(routes::get_workflow).delete(routes::delete_workflow),
        )
        .route("/v1/workflows/{name}/pause", post(routes::pause))
        .route("/v1/workflows/{name}/resume", post(routes::resume))
        .route("/v1/workflows/{name}/trigger", post(routes::trigger))
        .route("/v1/workflows/{name}/rollback", post(routes::rollback))
        .route("/v1/workflows/{name}/backfill", post(routes::backfill))
        .route("/v1/backfills", get(routes::list_backfills))
        .route("/v1/backfills/{id}", get(routes::get_backfill))
        .route("/v1/workflows/{name}/runs", get(routes::workflow_runs))
        .route("/v1/workflows/{name}/stats", get(routes::stats))
        .route("/v1/workflows/{name}/errors", get(routes::errors))
        .route(
            "/v1/workflows/{name}/runs/cancel",
            post(routes::cancel_workflow_runs),
        )
        .route(
            "/v1/workflows/{name}/runs/rerun",
            post(routes::rerun_workflow_runs),
        )
        .route("/v1/runs", get(routes::list_runs))
        .route("/v1/runs/{id}", get(routes::get_run))
        .route("/v1/runs/{id}/logs", get(routes::run_logs))
        .route("/v1/runs/{id}/cancel", post(routes::cancel_run))
        .route("/v1/runs/{id}/rerun", post(routes::rerun_run))
        .route(
            "/v1/files/{*path}",
            get(files::read)
                .put(files::write)
                .delete(files::remove)
                .post(files::append),
        )
        .route("/v1/files", get(files::list_root))
        .route("/v1/events", get(routes::events))
        .route("/v1/events/{id}/replay", post(routes::replay_event))
        .route("/v1/test-match", get(routes::test_match))
        .route("/v1/nodes", get(routes::nodes))
        .route("/v1/whoami", get(routes::whoami))
        .route(
            "/v1/session",
            post(session::sign_in)
                .get(session::current)
                .delete(session::sign_out),
        );
    let mut public = Router::new();
    if api.ui {
        public = public
            .route("/", get(ui::index))
            .route("/ui/{file}", get(ui::asset));
    }
    public
        .route("/health", get(health))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(routes::metrics))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

/// `ok`, or `degraded` while some directory of the data dir has no watch
/// (its changes are then found by polling, seconds late).
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, description = "The agent answers", body = Health)))]
async fn health() -> Json<Health> {
    let degraded = crate::metrics::METRICS.watch_degraded();
    Json(Health {
        status: if degraded {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
        reason: degraded.then(|| {
            "the inotify watch limit is reached: some directories are polled; raise fs.inotify.max_user_watches".to_owned()
        }),
    })
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The least role a route needs; `None` for the public ones. The one place
/// the role matrix of SPEC section 7 lives.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if path == "/health"
        || path == "/metrics"
        || path == "/v1/openapi.json"
        || path == "/"
        || path.starts_with("/ui/")
        || (path == "/v1/session" && (*method == Method::POST || *method == Method::DELETE))
    {
        return None;
    }
    if path == "/v1/session" {
        return Some(Role::Reader);
    }
    let reads = *method == Method::GET || *method == Method::HEAD;
    let workflow_route = path.strip_prefix("/v1/workflows/");
    let admin = path == "/v1/apply"
        || (*method == Method::DELETE && workflow_route.is_some())
        || workflow_route.is_some_and(|rest| rest.ends_with("/rollback"));
    Some(if admin {
        Role::Admin
    } else if reads || path == "/v1/diff" {
        Role::Reader
    } else {
        Role::Writer
    })
}

/// Gives each request an id, checks its key against the route's role, and
/// logs it.
async fn authorize(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = new_id("req_");
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = match required_role(&method, &path) {
        None => next.run(req).await,
        Some(needed) => match caller_of(&api, &mut req).await {
            Err(e) => e.into_response(),
            Ok(caller) if caller.role < needed => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "user `{}` is a {}; this needs the {} role",
                    caller.user,
                    caller.role.as_str(),
                    needed.as_str()
                ),
            )
            .into_response(),
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
        },
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(request = %request_id, %method, %path, status, ms, "request failed");
    } else {
        tracing::debug!(request = %request_id, %method, %path, status, ms, "request");
    }
    response
}

/// The `Authorization` header's text, if any.
fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or_default().to_owned())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
}

/// The caller of a request: the key its `Authorization: Bearer nxk_...`
/// header names, or else the dashboard session its cookie names (then a
/// state-changing request must carry the session's CSRF token, and the
/// session goes into the request's extensions).
async fn caller_of(api: &Api, req: &mut Request) -> Result<Caller, ApiError> {
    if let Some(text) = bearer(req) {
        let key = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or_default();
        return Ok(authenticate_key(api, key).await?.0);
    }
    let token = match session::token(req.headers()) {
        session::Presented::One(t) => t,
        session::Presented::None => {
            return Err(unauthorized(
                "an API key is needed: send `Authorization: Bearer nxk_...` (or sign in to the dashboard)",
            ));
        }
        session::Presented::Several => {
            return Err(unauthorized(
                "the request came with more than one session cookie: sign in again",
            ));
        }
    };
    let hash = auth::hash_secret(&token);
    let Some((key_id, csrf, expires_ms)) =
        api.rt.store.session(&hash).await.map_err(ApiError::store)?
    else {
        return Err(unauthorized("the session has ended: sign in again"));
    };
    let caller = owner_of(api, &key_id, None).await?;
    let safe = req.method() == Method::GET || req.method() == Method::HEAD;
    let sent = req
        .headers()
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !safe && !auth::same(sent, &csrf) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this request came with a session cookie but not its CSRF token (`X-CSRF-Token`)",
        ));
    }
    req.extensions_mut().insert(session::Session {
        token_hash: hash,
        csrf,
        expires_ms,
    });
    Ok(caller)
}

/// The caller an API key `nxk_...` is, and the key's id.
pub(crate) async fn authenticate_key(api: &Api, key: &str) -> Result<(Caller, String), ApiError> {
    let Some((id, secret)) = auth::parse_key(key) else {
        return Err(unauthorized("the API key is malformed"));
    };
    let caller = owner_of(api, id, Some(secret)).await?;
    Ok((caller, id.to_owned()))
}

/// The user of key `id` (its `secret` checked, when given), unless the key
/// is unknown or revoked.
pub(crate) async fn owner_of(
    api: &Api,
    id: &str,
    secret: Option<&str>,
) -> Result<Caller, ApiError> {
    let owner = api.rt.store.key_owner(id).await.map_err(ApiError::store)?;
    let Some(owner) = owner else {
        return Err(unauthorized("the API key is not valid"));
    };
    // Checked before `revoked`, so a revoked key's id alone tells nothing.
    if secret.is_some_and(|s| !auth::secret_matches(s, &owner.secret_hash)) {
        return Err(unauthorized("the API key is not valid"));
    }
    if owner.revoked {
        return Err(unauthorized("the API key has been revoked"));
    }
    let role: Role = owner
        .role
        .parse()
        .map_err(|e: String| ApiError::internal(e))?;
    // `last_used` to the minute: no write on every request.
    let now = now_ms();
    if owner.last_used_ms.is_none_or(|t| now - t > 60_000)
        && let Err(e) = api.rt.store.touch_key(id, now).await
    {
        tracing::warn!(error = %e, "recording a key's use failed");
    }
    Ok(Caller {
        user: owner.user,
        role,
    })
}

/// Serves until shutdown, then drains open requests.
pub async fn http_worker(listener: tokio::net::TcpListener, api: Api, shutdown: CancellationToken) {
    let result = axum::serve(listener, router(api))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http server stopped");
    }
}
