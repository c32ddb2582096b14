//! The OpenAPI 3.1 document of the HTTP API, generated from the wire types
//! (`crate::api`) and the routes' annotations by utoipa, and committed as
//! `schemas/openapi.json`; a test fails when the two differ. The agent
//! serves the committed file (`GET /v1/openapi.json`): the generator then
//! costs the binary nothing. The answers every route can give (a bad
//! request, a refused key, the database away, a body too large) are added
//! here, once.
// Outside the tests, only the committed document and the handler are used.
#![cfg_attr(not(test), allow(dead_code))]

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{files, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nexusd",
        description = "The HTTP API of nexusd, the file-event automation agent. Every route under /v1 takes an API key (`Authorization: Bearer nxk_...`), or the dashboard's session cookie (`POST /v1/session`; then every state-changing request also sends the session's CSRF token in `X-CSRF-Token`, else 403); the role it needs is reader for reads (and diff), writer for writes, triggers, pauses, resumes, backfills, cancels, re-runs and replays, admin for apply, delete and rollback. Errors are `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::health,
        openapi_json,
        routes::metrics,
        routes::nodes,
        routes::whoami,
        super::session::sign_in,
        super::session::current,
        super::session::sign_out,
        routes::apply,
        routes::diff,
        routes::list_workflows,
        routes::get_workflow,
        routes::delete_workflow,
        routes::pause,
        routes::resume,
        routes::trigger,
        routes::rollback,
        routes::backfill,
        routes::list_backfills,
        routes::get_backfill,
        routes::workflow_runs,
        routes::stats,
        routes::errors,
        routes::list_runs,
        routes::get_run,
        routes::run_logs,
        routes::cancel_run,
        routes::cancel_workflow_runs,
        routes::rerun_run,
        routes::rerun_workflow_runs,
        routes::replay_event,
        routes::test_match,
        routes::events,
        files::list_root,
        files::read,
        files::write,
        files::append,
        files::remove,
    ),
    components(schemas(crate::api::RunChange)),
    modifiers(&Common),
    security(("api_key" = [])),
    tags(
        (name = "operations", description = "Health, metrics and this document: no key needed"),
        (name = "auth", description = "Who the key is"),
        (name = "definitions", description = "Apply and diff Workflow and Pipeline documents"),
        (name = "workflows", description = "The applied definitions: inspect, pause, resume, trigger, backfill, roll back, delete"),
        (name = "runs", description = "Runs, their attempts and steps, statistics and errors"),
        (name = "events", description = "The decision log, and the stream of run changes"),
        (name = "files", description = "Files of the data dir, confined to it"),
        (name = "fleet", description = "The agents recording into this database"),
    ),
)]
pub struct ApiDoc;

/// The document as served and committed: pretty JSON, with a newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The committed document, as the drift test keeps it.
const COMMITTED: &str = include_str!("../../schemas/openapi.json");

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        COMMITTED,
    )
        .into_response()
}

/// The bearer key, and the error answers common to the routes.
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("nxk_...")
                    .description(Some("An API key (`nexusd admin create-key`)"))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common(op);
            }
        }
    }
}

fn add_common(op: &mut Operation) {
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
    if public {
        return;
    }
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    };
    add(
        "400",
        "A malformed request: a bad path, query string or body (unknown parameters are refused)",
    );
    add("401", "No API key, or one that is not valid");
    add("403", "The key's role does not allow this");
    add("503", "The database is not available; try again");
    if op.request_body.is_some() {
        add("413", "The body is over the 16 MiB limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schemas/openapi.json` is what the code generates; run with
    /// `UPDATE_OPENAPI=1` to write it again after changing the API.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.json");
        let generated = document();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            // The served copy is compiled in: it is current at the next build.
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated && COMMITTED == generated,
            "schemas/openapi.json differs from the API the code serves: run `UPDATE_OPENAPI=1 cargo test --lib openapi` and commit it"
        );
    }

    #[test]
    fn it_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/health",
            "/metrics",
            "/v1/openapi.json",
            "/v1/whoami",
            "/v1/nodes",
            "/v1/apply",
            "/v1/diff",
            "/v1/workflows",
            "/v1/workflows/{name}",
            "/v1/workflows/{name}/pause",
            "/v1/workflows/{name}/resume",
            "/v1/workflows/{name}/trigger",
            "/v1/workflows/{name}/rollback",
            "/v1/workflows/{name}/runs",
            "/v1/workflows/{name}/stats",
            "/v1/workflows/{name}/errors",
            "/v1/runs",
            "/v1/runs/{id}",
            "/v1/runs/{id}/cancel",
            "/v1/workflows/{name}/runs/cancel",
            "/v1/runs/{id}/rerun",
            "/v1/workflows/{name}/runs/rerun",
            "/v1/events/{id}/replay",
            "/v1/events",
            "/v1/files",
            "/v1/files/{path}",
        ] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
        let trigger = &paths["/v1/workflows/{name}/trigger"]["post"]["responses"];
        for status in ["202", "400", "401", "403", "404", "413", "503"] {
            assert!(trigger.get(status).is_some(), "trigger: no {status}");
        }
        assert!(paths["/health"]["get"]["responses"].get("401").is_none());
    }
}
