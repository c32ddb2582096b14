//! Workflows, apply, runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

use super::error::{Body, JsonBody, P, Q};
use super::{Api, ApiError, Caller};
use crate::api::{
    ApplyAnswer, Backfill, BackfillList, BackfillRequest, BulkCancelAnswer, BulkCancelRequest,
    BulkRerunAnswer, BulkRerunItem, BulkRerunRequest, CancelAnswer, DefinitionKind, DiagnosticItem,
    DiffAnswer, DiffItem, ErrorBody, ErrorList, EventList, PauseAnswer, ReplayAnswer,
    ReplayRequest, RerunAnswer, RerunRequest, Results, RevisionDetail, RevisionSummary, RunDetail,
    RunList, RunLogs, SourceFile, Stats, TestMatchAnswer, TriggerAnswer, TriggerRequest, Whoami,
    WorkflowDetail, WorkflowList, WorkflowOrRevision, WorkflowStatus, WorkflowSummary,
};
use crate::definitions::load::SourceDocument;
use crate::definitions::load::load_sources;
use crate::definitions::names;
use crate::definitions::{Limits, load_text};
use crate::engine::backfills;
use crate::engine::intake::{Arrival, Target};
use crate::engine::registry::{Action, ApplyError, ApplyOptions, content_hash};
use crate::engine::reruns::{self, OpError};
use crate::events::{Event, EventType, Source, new_id, now_ms};
use crate::store::{Cancel, CancelOutcome, RunFilter, RunStatus, StoredDefinition, timestamp};

/// The key's user and role.
#[utoipa::path(get, path = "/v1/whoami", tag = "auth",
    responses((status = 200, description = "The caller", body = Whoami)))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami {
        user: caller.user,
        role: caller.role.as_str().to_owned(),
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// Check and report, change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Remove this source's definitions that the body does not name.
    #[serde(default)]
    prune: bool,
    /// Which source the set stands for (what `prune` compares); `api` by default.
    source: Option<String>,
}

/// The documents of an apply or diff body: definition files as JSON
/// (`[{file, text}]`, what the CLI sends), or multi-document YAML.
fn body_documents(
    headers: &axum::http::HeaderMap,
    bytes: &[u8],
) -> Result<Vec<SourceDocument>, ApiError> {
    // The body holds many files: its own size limit is the request's.
    let limits = Limits {
        max_file_bytes: super::MAX_BODY_BYTES,
        max_documents: 100_000,
        ..Limits::default()
    };
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let loaded = if json {
        let files: Vec<SourceFile> = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "bad JSON body: {e} (expected a list of {{\"file\", \"text\"}})"
            ))
        })?;
        if files.is_empty() {
            return Err(ApiError::invalid(
                "no definition files in the request: nothing was applied",
            ));
        }
        let sources = files
            .into_iter()
            .map(|f| (std::path::PathBuf::from(f.file), f.text.into_bytes()))
            .collect();
        load_sources(sources, &limits)
    } else {
        load_text(Path::new("<request>"), bytes, &limits)
    };
    if loaded.diagnostics.has_errors() {
        let list: Vec<DiagnosticItem> = loaded
            .diagnostics
            .errors()
            .map(|d| DiagnosticItem {
                file: d.file.display().to_string(),
                line: d.line,
                column: d.column,
                severity: d.severity.to_string(),
                message: d.message.clone(),
            })
            .collect();
        let first = loaded
            .diagnostics
            .errors()
            .next()
            .map(|d| d.to_string())
            .unwrap_or_default();
        return Err(ApiError::invalid(format!(
            "the definitions are invalid, nothing was applied: {first}"
        ))
        .with_diagnostics(list));
    }
    Ok(loaded.documents)
}

fn source_of(source: Option<String>) -> Result<String, ApiError> {
    let source = source.unwrap_or_else(|| "api".to_owned());
    if source.is_empty() || source.len() > 200 || source.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "`source` must be 1 to 200 printable characters",
        ));
    }
    Ok(source)
}

fn apply_error(e: ApplyError) -> ApiError {
    match e {
        ApplyError::Rejected(message) => ApiError::invalid(message),
        ApplyError::Store(e) => ApiError::store(e),
    }
}

/// Applies a set of definitions (multi-document YAML), all or nothing.
#[utoipa::path(post, path = "/v1/apply", tag = "definitions", params(ApplyQuery),
    request_body(description = "Definition files (`[{file, text}]`, what `nexusd apply` sends: errors name the files) or multi-document YAML",
        content((Vec<SourceFile> = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, description = "What the apply did to each definition", body = ApplyAnswer),
        (status = 422, description = "The definitions are invalid (with their diagnostics), or the set was refused; nothing was applied", body = ErrorBody),
    ))]
pub async fn apply(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<ApplyQuery>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> Result<Json<ApplyAnswer>, ApiError> {
    let docs = body_documents(&headers, &body)?;
    let opts = ApplyOptions {
        source: source_of(q.source)?,
        who: caller.user,
        prune: q.prune,
        dry_run: q.dry_run,
    };
    let report = api.registry.apply(docs, &opts).await.map_err(apply_error)?;
    Ok(Json(ApplyAnswer {
        dry_run: q.dry_run,
        results: report,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// Which source the set stands for; `api` by default.
    source: Option<String>,
    /// Also show what a pruning apply would remove.
    #[serde(default)]
    prune: bool,
}

/// What an apply of the body would change, with a unified diff of each
/// definition (live above, the body below).
#[utoipa::path(post, path = "/v1/diff", tag = "definitions", params(DiffQuery),
    request_body(description = "Definition files (`[{file, text}]`, what `nexusd apply` sends: errors name the files) or multi-document YAML",
        content((Vec<SourceFile> = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, description = "Each definition's change", body = DiffAnswer),
        (status = 422, description = "The definitions are invalid (with their diagnostics)", body = ErrorBody),
    ))]
pub async fn diff(
    State(api): State<Api>,
    Q(q): Q<DiffQuery>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> Result<Json<DiffAnswer>, ApiError> {
    let docs = body_documents(&headers, &body)?;
    let source = source_of(q.source)?;
    let live = api
        .registry
        .store()
        .definitions()
        .await
        .map_err(ApiError::store)?;
    let mut out = Vec::new();
    let named: BTreeSet<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    for doc in &docs {
        let new_text = doc.json.to_string();
        let old = live.iter().find(|d| d.name == doc.name);
        let action = match old {
            None => Action::Created,
            Some(o) if o.hash == content_hash(&new_text) => Action::Unchanged,
            Some(_) => Action::Configured,
        };
        let old_yaml = old.map(|o| yaml_of(&o.document)).unwrap_or_default();
        let diff = unified(&old_yaml, &yaml_of(&new_text), doc.kind, &doc.name);
        out.push(DiffItem {
            kind: doc.kind,
            name: doc.name.clone(),
            action,
            diff,
        });
    }
    if q.prune {
        for old in live
            .iter()
            .filter(|d| d.source == source && !named.contains(d.name.as_str()))
        {
            let diff = unified(&yaml_of(&old.document), "", old.kind, &old.name);
            out.push(DiffItem {
                kind: old.kind,
                name: old.name.clone(),
                action: Action::Pruned,
                diff,
            });
        }
    }
    let differs = out.iter().any(|c| c.action != Action::Unchanged);
    Ok(Json(DiffAnswer {
        differs,
        results: out,
    }))
}

/// A stored document as YAML, for people to read.
fn yaml_of(document: &str) -> String {
    let value: Value = serde_json::from_str(document).unwrap_or(Value::Null);
    serde_saphyr::to_string(&value).unwrap_or_else(|_| document.to_owned())
}

fn unified(old: &str, new: &str, kind: DefinitionKind, name: &str) -> String {
    if old == new {
        return String::new();
    }
    let label = format!("{}/{name}", kind.as_str().to_lowercase());
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{label}"), &format!("files/{label}"))
        .to_string()
}

/// A definition as the API shows it (SPEC section 7).
fn workflow_summary(d: &StoredDefinition, paused: &BTreeSet<String>) -> WorkflowSummary {
    let doc: Value = serde_json::from_str(&d.document).unwrap_or(Value::Null);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (triggers, stages) = if d.kind == DefinitionKind::Pipeline {
        let stages = list(&doc["spec"]["stages"]);
        let triggers = stages.iter().flat_map(|s| list(&s["on"])).collect();
        let names = stages
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        (triggers, Some(names))
    } else {
        (list(&doc["spec"]["on"]), None)
    };
    let paused_stages: Vec<String> = paused
        .iter()
        .filter_map(|p| names::stage_of(&d.name, p).map(str::to_owned))
        .collect();
    WorkflowSummary {
        name: d.name.clone(),
        kind: d.kind,
        description: doc["metadata"]["description"].as_str().map(str::to_owned),
        status: if paused.contains(&d.name) {
            WorkflowStatus::Paused
        } else {
            WorkflowStatus::Active
        },
        revision: d.revision,
        triggers,
        source: d.source.clone(),
        applied_by: d.applied_by.clone(),
        applied_at: timestamp(Some(d.applied_ms)),
        paused_stages: (stages.is_some() && !paused_stages.is_empty()).then_some(paused_stages),
        stages,
    }
}

async fn definition(api: &Api, name: &str) -> Result<StoredDefinition, ApiError> {
    api.registry
        .store()
        .definition(name)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(format!("no workflow or pipeline named `{name}`")))
}

/// Every applied definition.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows",
    responses((status = 200, description = "The definitions, by name", body = WorkflowList)))]
pub async fn list_workflows(State(api): State<Api>) -> Result<Json<WorkflowList>, ApiError> {
    let defs = api
        .registry
        .store()
        .definitions()
        .await
        .map_err(ApiError::store)?;
    let paused = api.registry.paused_names();
    let workflows = defs.iter().map(|d| workflow_summary(d, &paused)).collect();
    Ok(Json(WorkflowList { workflows }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// One revision's document instead of the live definition.
    revision: Option<i64>,
}

/// A definition with its document and history, or one revision.
#[utoipa::path(get, path = "/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "A workflow or pipeline"), GetQuery),
    responses(
        (status = 200, description = "The definition (or with `revision`, that revision)", body = WorkflowOrRevision),
        (status = 404, description = "No such definition or revision", body = ErrorBody),
    ))]
pub async fn get_workflow(
    State(api): State<Api>,
    P(name): P<String>,
    Q(q): Q<GetQuery>,
) -> Result<Json<WorkflowOrRevision>, ApiError> {
    let store = api.registry.store();
    let revisions = store.revisions(&name).await.map_err(ApiError::store)?;
    if let Some(n) = q.revision {
        let Some(rev) = revisions.iter().find(|r| r.revision == n) else {
            return Err(ApiError::not_found(format!("`{name}` has no revision {n}")));
        };
        let document: Value = rev
            .document
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        return Ok(Json(WorkflowOrRevision::Revision(Box::new(
            RevisionDetail {
                name: rev.name.clone(),
                kind: rev.kind,
                revision: rev.revision,
                action: rev.action.clone(),
                source: rev.source.clone(),
                applied_by: rev.applied_by.clone(),
                applied_at: timestamp(Some(rev.applied_ms)),
                document,
            },
        ))));
    }
    let d = definition(&api, &name).await?;
    let revisions = revisions
        .iter()
        .map(|r| RevisionSummary {
            revision: r.revision,
            action: r.action.clone(),
            source: r.source.clone(),
            applied_by: r.applied_by.clone(),
            applied_at: timestamp(Some(r.applied_ms)),
        })
        .collect();
    let live = api.registry.live().current();
    let mut runnable = live
        .workflows
        .iter()
        .filter(|w| crate::definitions::names::is_or_stage_of(&name, &w.name))
        .peekable();
    let any_node = runnable.peek().is_some() && runnable.all(|w| w.any_node);
    Ok(Json(WorkflowOrRevision::Workflow(Box::new(
        WorkflowDetail {
            summary: workflow_summary(&d, &api.registry.paused_names()),
            document: serde_json::from_str(&d.document).unwrap_or(Value::Null),
            any_node,
            revisions,
        },
    ))))
}

/// Removes a definition (a new revision records the removal).
#[utoipa::path(delete, path = "/v1/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "A workflow or pipeline")),
    responses(
        (status = 200, description = "Deleted", body = Results),
        (status = 404, description = "No such definition", body = ErrorBody),
        (status = 422, description = "Refused: the set without it does not hold", body = ErrorBody),
    ))]
pub async fn delete_workflow(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
) -> Result<Json<Results>, ApiError> {
    match api.registry.delete(&name, &caller.user).await {
        Ok(Some(done)) => Ok(Json(Results {
            results: vec![done],
        })),
        Ok(None) => Err(ApiError::not_found(format!(
            "no workflow or pipeline named `{name}`"
        ))),
        Err(e) => Err(apply_error(e)),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RollbackQuery {
    /// The revision whose document to apply again.
    revision: i64,
}

/// Applies an old revision's document again (a new revision).
#[utoipa::path(post, path = "/v1/workflows/{name}/rollback", tag = "workflows",
    params(("name" = String, Path, description = "A workflow or pipeline"), RollbackQuery),
    responses(
        (status = 200, description = "Applied again", body = Results),
        (status = 404, description = "No such revision", body = ErrorBody),
        (status = 422, description = "A removal, or a document that no longer compiles", body = ErrorBody),
    ))]
pub async fn rollback(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
    Q(q): Q<RollbackQuery>,
) -> Result<Json<Results>, ApiError> {
    let store = api.registry.store();
    let revisions = store.revisions(&name).await.map_err(ApiError::store)?;
    let Some(rev) = revisions.iter().find(|r| r.revision == q.revision) else {
        return Err(ApiError::not_found(format!(
            "`{name}` has no revision {}",
            q.revision
        )));
    };
    let Some(text) = rev.document.as_deref() else {
        return Err(ApiError::invalid(format!(
            "revision {} of `{name}` is a removal; there is nothing to roll back to",
            q.revision
        )));
    };
    // It stays with the source that owns it now (or its old one, if gone).
    let live_source = store
        .definition(&name)
        .await
        .map_err(ApiError::store)?
        .map(|d| d.source);
    let opts = ApplyOptions {
        source: live_source.unwrap_or_else(|| rev.source.clone()),
        who: caller.user,
        prune: false,
        dry_run: false,
    };
    let doc = crate::engine::registry::document_of_json(
        &format!("<revision {} of {name}>", q.revision),
        text,
    )
    .map_err(|e| {
        ApiError::invalid(format!(
            "revision {} of `{name}` no longer compiles: {e}",
            q.revision
        ))
    })?;
    let report = api
        .registry
        .apply(vec![doc], &opts)
        .await
        .map_err(apply_error)?;
    Ok(Json(Results { results: report }))
}

/// A name `pause`/`resume` accept: a definition, or a pipeline's stage.
async fn pausable(api: &Api, name: &str) -> Result<bool, ApiError> {
    let stage = api
        .registry
        .live()
        .current()
        .workflows
        .iter()
        .any(|w| w.name == name);
    Ok(stage
        || api
            .registry
            .store()
            .definition(name)
            .await
            .map_err(ApiError::store)?
            .is_some())
}

async fn set_paused(
    api: &Api,
    caller: &Caller,
    name: &str,
    paused: bool,
) -> Result<Json<PauseAnswer>, ApiError> {
    if !pausable(api, name).await? {
        return Err(ApiError::not_found(format!(
            "no workflow or pipeline named `{name}`"
        )));
    }
    api.registry
        .set_paused(name, paused, &caller.user)
        .await
        .map_err(ApiError::store)?;
    tracing::info!(workflow = name, user = %caller.user, "{}", if paused { "paused" } else { "resumed" });
    Ok(Json(PauseAnswer {
        name: name.to_owned(),
        status: if paused {
            WorkflowStatus::Paused
        } else {
            WorkflowStatus::Active
        },
    }))
}

/// Pauses a definition (or a pipeline's stage): its runs are recorded as
/// skipped until it is resumed.
#[utoipa::path(post, path = "/v1/workflows/{name}/pause", tag = "workflows",
    params(("name" = String, Path, description = "A workflow, a pipeline or a stage (`PIPELINE/STAGE`)")),
    responses(
        (status = 200, description = "Paused", body = PauseAnswer),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn pause(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
) -> Result<Json<PauseAnswer>, ApiError> {
    set_paused(&api, &caller, &name, true).await
}

/// Resumes a paused definition (or stage).
#[utoipa::path(post, path = "/v1/workflows/{name}/resume", tag = "workflows",
    params(("name" = String, Path, description = "A workflow, a pipeline or a stage (`PIPELINE/STAGE`)")),
    responses(
        (status = 200, description = "Active again", body = PauseAnswer),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn resume(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
) -> Result<Json<PauseAnswer>, ApiError> {
    set_paused(&api, &caller, &name, false).await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TriggerQuery {
    /// The file the run is for, when the body does not say.
    path: Option<String>,
}

/// Starts a run of a workflow (a pipeline: its first stage) for a file,
/// as if the file had just been created; patterns are not consulted.
#[utoipa::path(post, path = "/v1/workflows/{name}/trigger", tag = "workflows",
    params(("name" = String, Path, description = "A workflow or pipeline"), TriggerQuery),
    request_body(content = TriggerRequest, description = "The file (or give `?path=`); an empty body is `{}`"),
    responses(
        (status = 202, description = "The run, queued (or skipped: paused)", body = TriggerAnswer),
        (status = 404, description = "No such workflow, or no such file", body = ErrorBody),
    ))]
pub async fn trigger(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
    Q(q): Q<TriggerQuery>,
    JsonBody(body): JsonBody<TriggerRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(path) = body.path.or(q.path) else {
        return Err(ApiError::bad_request(
            "`path` is required: the file the run is for",
        ));
    };
    let vpath = crate::datadir::vpath(&path).map_err(ApiError::bad_request)?;
    let live = api.registry.live().current();
    // A workflow by its name; a pipeline by its first stage.
    let Some(workflow) = live
        .workflows
        .iter()
        .find(|w| names::is_or_stage_of(&name, &w.name))
        .map(Arc::clone)
    else {
        return Err(ApiError::not_found(format!(
            "no workflow or pipeline named `{name}`"
        )));
    };
    let root = Arc::clone(&api.rt.root);
    let rel = vpath.rel.clone();
    let meta = tokio::task::spawn_blocking(move || root.metadata(&rel))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let meta = match meta {
        Ok(m) if m.is_file() => m,
        _ => {
            return Err(ApiError::not_found(format!(
                "no file at `{}` in the data dir",
                vpath.virt
            )));
        }
    };
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let event = Event {
        id: new_id("evt_"),
        kind: EventType::Created,
        path: vpath.virt.clone(),
        old_path: None,
        size: Some(meta.len()),
        mtime_ms,
        observed_ms: now_ms(),
        cause: None,
        raw_abs: None,
        actor: Some(caller.user.clone()),
        source: Source::Api,
    };
    let why = format!("triggered through the API by {}", caller.user);
    let plan = api.intake.plan_against(
        &live,
        vec![Arrival {
            event,
            target: Target::Workflow(Arc::clone(&workflow), why),
        }],
        vec![],
    );
    api.intake.commit(&plan).await.map_err(ApiError::store)?;
    let (run, event) = (plan.runs[0].clone(), plan.events[0].0.id.clone());
    api.intake.publish(plan).await;
    tracing::info!(workflow = %workflow.name, path = %run.event.path, user = %caller.user, run = %run.id, "triggered");
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerAnswer {
            run: run.id,
            workflow: workflow.name.clone(),
            event,
            status: run.status,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// 1 to 10000.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    /// Only runs in this state.
    #[param(value_type = Option<RunStatus>)]
    status: Option<String>,
    /// Only this workflow's runs (a pipeline: its stages').
    workflow: Option<String>,
    /// Only runs for events on this virtual path.
    path: Option<String>,
}

fn run_filter(q: RunsQuery, default_limit: i64) -> Result<RunFilter, ApiError> {
    let status = match q.status.as_deref() {
        Some(s) => Some(RunStatus::parse(s).map_err(ApiError::bad_request)?),
        None => None,
    };
    let limit = q.limit.unwrap_or(default_limit);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 10000"));
    }
    Ok(RunFilter {
        stages: false,
        workflow: q.workflow,
        status,
        path: q.path,
        limit,
    })
}

/// A definition's runs (a pipeline: its stages'), newest first.
#[utoipa::path(get, path = "/v1/workflows/{name}/runs", tag = "runs",
    params(("name" = String, Path, description = "A workflow or pipeline"), RunsQuery),
    responses(
        (status = 200, description = "Runs, newest first (20 by default)", body = RunList),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn workflow_runs(
    State(api): State<Api>,
    P(name): P<String>,
    Q(q): Q<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let d = definition(&api, &name).await?;
    let mut f = run_filter(q, 20)?;
    f.workflow = Some(name);
    f.stages = d.kind == DefinitionKind::Pipeline;
    let runs = api.rt.store.list_runs(&f).await.map_err(ApiError::store)?;
    Ok(Json(RunList { runs }))
}

/// Runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, description = "Runs, newest first (50 by default)", body = RunList)))]
pub async fn list_runs(
    State(api): State<Api>,
    Q(q): Q<RunsQuery>,
) -> Result<Json<RunList>, ApiError> {
    let mut f = run_filter(q, 50)?;
    if let Some(w) = &f.workflow {
        let def = api
            .registry
            .store()
            .definition(w)
            .await
            .map_err(ApiError::store)?;
        f.stages = def.is_some_and(|d| d.kind == DefinitionKind::Pipeline);
    }
    let runs = api.rt.store.list_runs(&f).await.map_err(ApiError::store)?;
    Ok(Json(RunList { runs }))
}

/// One run with every attempt and its steps.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "A run id (`run_...`)")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        (status = 404, description = "No such run", body = ErrorBody),
    ))]
pub async fn get_run(
    State(api): State<Api>,
    P(id): P<String>,
) -> Result<Json<RunDetail>, ApiError> {
    match api
        .rt
        .store
        .run_detail(&id)
        .await
        .map_err(ApiError::store)?
    {
        Some(run) => Ok(Json(run)),
        None => Err(ApiError::not_found(format!("no run `{id}`"))),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Stream the output instead (server-sent events: `line`, `skipped`,
    /// then `end`), until the run ends or the client goes away.
    #[serde(default)]
    follow: bool,
}

/// A run's output: the lines of its attempt running on this node as its
/// shell steps write them (the last 1,000 kept), else the stored output of
/// its last attempt's steps that have ended. With `follow=true`, a stream
/// of server-sent events: `line` (a LogLine) as each is written (through
/// another node of a fleet: each step's stored lines as it ends),
/// `skipped` (`{"count"}`: lines no longer kept when the stream got to
/// them) and, when the run has ended, `end` (`{"status", "error"}`).
#[utoipa::path(get, path = "/v1/runs/{id}/logs", tag = "runs",
    params(("id" = String, Path, description = "A run id (`run_...`)"), LogsQuery),
    responses(
        (status = 200, description = "The output; with `follow=true`, a stream of `line`, `skipped` and `end` events",
            content((RunLogs = "application/json"), (crate::api::ServerSentEvent = "text/event-stream"))),
        (status = 404, description = "No such run", body = ErrorBody),
    ))]
pub async fn run_logs(
    State(api): State<Api>,
    session: Option<Extension<super::session::Session>>,
    P(id): P<String>,
    Q(q): Q<LogsQuery>,
) -> Result<axum::response::Response, ApiError> {
    let now = crate::engine::logs::snapshot(&api.rt, &id)
        .await
        .map_err(op_error)?;
    if !q.follow {
        return Ok(Json(now).into_response());
    }
    use axum::response::sse::{KeepAlive, Sse};
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let rt = Arc::clone(&api.rt);
    let stop = super::session::stream_stop(&api, session.map(|Extension(s)| s));
    // The stream ends with the run, or with what `stop` says.
    tokio::spawn(async move {
        let _done = stop.clone().drop_guard();
        tokio::select! {
            () = crate::engine::logs::follow(rt, id, tx) => {}
            () = stop.cancelled() => {}
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One run cancelled, whichever node holds it: a queued or retrying run
/// never starts (again); a running one has its step's process group
/// killed (its request aborted) by its node at once.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "A run id (`run_...`)")),
    responses(
        (status = 200, description = "The run, cancelled", body = CancelAnswer),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is already final (its status in the message)", body = ErrorBody),
    ))]
pub async fn cancel_run(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(id): P<String>,
) -> Result<Json<CancelAnswer>, ApiError> {
    let outcome = api
        .rt
        .store
        .cancel_runs(std::slice::from_ref(&id), &caller.user)
        .await
        .map_err(ApiError::store)?;
    let Some(c) = outcome.into_iter().next() else {
        return Err(ApiError::not_found(format!("no run `{id}`")));
    };
    match c.outcome {
        CancelOutcome::Cancelled(was) => {
            cancelled(&api, &caller, std::slice::from_ref(&c));
            Ok(Json(CancelAnswer::new(id, was)))
        }
        CancelOutcome::Final(status) => Err(ApiError::conflict(format!(
            "run `{id}` is already `{status}`: only a queued, retrying or running run can be cancelled"
        ))),
        CancelOutcome::Missing => Err(ApiError::not_found(format!("no run `{id}`"))),
    }
}

/// After a cancel: this node's holder of the runs told at once (the other
/// nodes were told through the database), followers told of each.
fn cancelled(api: &Api, caller: &Caller, runs: &[Cancel]) {
    api.intake.dispatcher.recheck();
    let reason = format!("by {}", caller.user);
    for c in runs {
        if let Some(was) = c.was() {
            tracing::info!(run = %c.id, workflow = %c.workflow, was = %was, user = %caller.user, "run cancelled");
            let mut change =
                crate::api::RunChange::new(&c.id, &c.workflow, &c.path, RunStatus::Cancelled);
            change.reason = Some(reason.clone());
            api.rt.changed(change);
        }
    }
}

/// A workflow's runs in the given states cancelled (a pipeline: its
/// stages'), optionally only those for files a glob matches; with
/// `dry_run`, those that would be.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs/cancel", tag = "runs",
    params(("name" = String, Path, description = "A workflow or pipeline")),
    request_body(content = BulkCancelRequest, description = "Which runs"),
    responses(
        (status = 200, description = "The runs cancelled (none: nothing matched)", body = BulkCancelAnswer),
        (status = 400, description = "No state given, a final state, or a bad glob", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn cancel_workflow_runs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
    JsonBody(body): JsonBody<BulkCancelRequest>,
) -> Result<Json<BulkCancelAnswer>, ApiError> {
    let d = definition(&api, &name).await?;
    if body.status.is_empty() {
        return Err(ApiError::bad_request(
            "`status` is required: one or more of queued, retrying, running",
        ));
    }
    if let Some(s) = body.status.iter().find(|s| s.is_final()) {
        return Err(ApiError::bad_request(format!(
            "a `{s}` run is final and cannot be cancelled: give queued, retrying or running"
        )));
    }
    let glob = match &body.path {
        Some(g) => Some(
            crate::pattern::Pattern::new(g)
                .map_err(|e| ApiError::bad_request(format!("`path`: {e}")))?,
        ),
        None => None,
    };
    let found = api
        .rt
        .store
        .runs_in_states(
            &name,
            d.kind == DefinitionKind::Pipeline,
            &body.status,
            None,
        )
        .await
        .map_err(ApiError::store)?;
    let chosen: Vec<(String, RunStatus)> = found
        .into_iter()
        .filter(|(_, path, _)| glob.as_ref().is_none_or(|g| g.is_match(path)))
        .map(|(id, _, status)| (id, status))
        .collect();
    if body.dry_run {
        return Ok(Json(BulkCancelAnswer {
            dry_run: true,
            runs: chosen
                .into_iter()
                .map(|(run, was)| CancelAnswer::new(run, was))
                .collect(),
        }));
    }
    let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
    let outcomes = api
        .rt
        .store
        .cancel_runs(&ids, &caller.user)
        .await
        .map_err(ApiError::store)?;
    // Those that finished between the listing and the cancel are not in it.
    let done: Vec<Cancel> = outcomes.into_iter().filter(|c| c.was().is_some()).collect();
    if !done.is_empty() {
        cancelled(&api, &caller, &done);
    }
    Ok(Json(BulkCancelAnswer {
        dry_run: false,
        runs: done
            .into_iter()
            .filter_map(|c| Some(CancelAnswer::new(c.id.clone(), c.was()?)))
            .collect(),
    }))
}

/// A recorded event matched again against today's definitions: every
/// workflow's result and why (as `test-match` says it); without
/// `dry_run`, taken in again as a new event, its runs started.
#[utoipa::path(post, path = "/v1/events/{id}/replay", tag = "events",
    params(("id" = String, Path, description = "An event id (`evt_...`)")),
    request_body(content = ReplayRequest, description = "How; an empty body is `{}`"),
    responses(
        (status = 200, description = "What it did (or would do)", body = ReplayAnswer),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "An event of another data dir", body = ErrorBody),
    ))]
pub async fn replay_event(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(id): P<String>,
    JsonBody(body): JsonBody<ReplayRequest>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    crate::engine::replays::replay(&api.intake, &id, body.dry_run, &caller.user)
        .await
        .map(Json)
        .map_err(op_error)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TestMatchQuery {
    /// The event type: `file.created`, `file.updated`, `file.deleted`,
    /// `file.moved`, `metadata.changed`.
    event: String,
    /// The file's virtual path, e.g. `/inbox/a.csv`.
    path: String,
    /// With `file.moved`: the path it was moved from.
    old_path: Option<String>,
}

/// What an event of this type on this path would do now, against the live
/// definitions: every workflow's result and why (what `nexusd test-match`
/// says of files; nothing is recorded or started).
#[utoipa::path(get, path = "/v1/test-match", tag = "events", params(TestMatchQuery),
    responses(
        (status = 200, description = "Every workflow's line, by name", body = TestMatchAnswer),
        (status = 400, description = "An unknown event type, a bad path, an old path with another type than file.moved or none with it", body = ErrorBody),
    ))]
pub async fn test_match(
    State(api): State<Api>,
    Q(q): Q<TestMatchQuery>,
) -> Result<Json<TestMatchAnswer>, ApiError> {
    let kind: EventType = q.event.parse().map_err(ApiError::bad_request)?;
    let path = crate::datadir::vpath(&q.path)
        .map_err(ApiError::bad_request)?
        .virt;
    let old_path = match q.old_path.as_deref() {
        Some(p) => Some(
            crate::datadir::vpath(p)
                .map_err(ApiError::bad_request)?
                .virt,
        ),
        None => None,
    };
    match (kind, &old_path) {
        (EventType::Moved, None) => {
            return Err(ApiError::bad_request(
                "`file.moved` needs `old_path`: the path the file was moved from",
            ));
        }
        (k, Some(_)) if k != EventType::Moved => {
            return Err(ApiError::bad_request("`old_path` is for `file.moved` only"));
        }
        _ => {}
    }
    let results = api
        .registry
        .live()
        .current()
        .lines(kind, &path, old_path.as_deref());
    Ok(Json(TestMatchAnswer {
        event: kind,
        path,
        old_path,
        results,
    }))
}

/// Begins a backfill: a run for every file already in the data dir that
/// the workflow's `file.created` triggers match (a pipeline: its first
/// stage's), and `path` too when given. A dry run counts the files and
/// names the first few. The runs start in the background, at the pace
/// they are run; follow them at `GET /v1/backfills/{id}`.
#[utoipa::path(post, path = "/v1/workflows/{name}/backfill", tag = "workflows",
    params(("name" = String, Path, description = "A workflow or pipeline")),
    request_body(content = BackfillRequest, description = "Which files; an empty body is `{}`"),
    responses(
        (status = 202, description = "Begun (`id`)", body = Backfill),
        (status = 200, description = "A dry run, or nothing to do: what it would start (no `id`; `message` says why nothing)", body = Backfill),
        (status = 400, description = "A bad `path` glob", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "The workflow is paused, or a backfill of it is still starting its runs", body = ErrorBody),
    ))]
pub async fn backfill(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
    JsonBody(body): JsonBody<BackfillRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let answer = backfills::begin(
        &api.intake,
        &name,
        body.path.as_deref(),
        body.dry_run,
        &caller.user,
    )
    .await
    .map_err(op_error)?;
    let status = if answer.id.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)))
}

/// A backfill: how far it is, and its runs by state.
#[utoipa::path(get, path = "/v1/backfills/{id}", tag = "workflows",
    params(("id" = String, Path, description = "A backfill id (`bf_...`)")),
    responses(
        (status = 200, description = "The backfill", body = Backfill),
        (status = 404, description = "No such backfill", body = ErrorBody),
    ))]
pub async fn get_backfill(
    State(api): State<Api>,
    P(id): P<String>,
) -> Result<Json<Backfill>, ApiError> {
    backfills::status(&api.intake, &id)
        .await
        .map(Json)
        .map_err(op_error)
}

/// The 50 newest backfills (their `runs` not counted, all 0: see each one).
#[utoipa::path(get, path = "/v1/backfills", tag = "workflows",
    responses((status = 200, description = "Backfills, newest first", body = BackfillList)))]
pub async fn list_backfills(State(api): State<Api>) -> Result<Json<BackfillList>, ApiError> {
    let rows = api.rt.store.backfills(50).await.map_err(ApiError::store)?;
    Ok(Json(BackfillList {
        backfills: rows
            .into_iter()
            .map(|r| backfills::answer_of(r, Default::default()))
            .collect(),
    }))
}

fn op_error(e: OpError) -> ApiError {
    match e {
        OpError::NotFound(m) => ApiError::not_found(m),
        OpError::Invalid(m) => ApiError::bad_request(m),
        OpError::Conflict(m) => ApiError::conflict(m),
        OpError::Store(e) => ApiError::store(e),
    }
}

/// A new run for a finished run's event, on the live revision of its
/// workflow, linked both ways (`rerun_of`, `reruns`); with `from_failed`,
/// from the step that failed.
#[utoipa::path(post, path = "/v1/runs/{id}/rerun", tag = "runs",
    params(("id" = String, Path, description = "A run id (`run_...`)")),
    request_body(content = RerunRequest, description = "How; an empty body is `{}`"),
    responses(
        (status = 202, description = "The re-run, queued (or skipped: paused)", body = RerunAnswer),
        (status = 404, description = "No such run, or its workflow is not applied", body = ErrorBody),
        (status = 409, description = "Not finished; or not from its failed step: it did not fail, its file changed, its steps do not line up", body = ErrorBody),
    ))]
pub async fn rerun_run(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(id): P<String>,
    JsonBody(body): JsonBody<RerunRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let plan = reruns::prepare(&api.intake, &id, &body)
        .await
        .map_err(op_error)?;
    let answer = reruns::start(&api.intake, plan, &caller.user)
        .await
        .map_err(op_error)?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// A workflow's finished runs re-run (a pipeline: its stages'), those in
/// the given states (failed by default) and finished since a time; each
/// refused one says why, the others are still re-run. With `dry_run`,
/// which would be.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs/rerun", tag = "runs",
    params(("name" = String, Path, description = "A workflow or pipeline")),
    request_body(content = BulkRerunRequest, description = "Which runs, and how"),
    responses(
        (status = 200, description = "Each run with its re-run or why not (none: nothing matched)", body = BulkRerunAnswer),
        (status = 400, description = "An unfinished state, or a bad `since`", body = ErrorBody),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn rerun_workflow_runs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    P(name): P<String>,
    JsonBody(body): JsonBody<BulkRerunRequest>,
) -> Result<Json<BulkRerunAnswer>, ApiError> {
    let d = definition(&api, &name).await?;
    let status = if body.status.is_empty() {
        vec![RunStatus::Failed]
    } else {
        body.status.clone()
    };
    if let Some(s) = status.iter().find(|s| !s.is_final()) {
        return Err(ApiError::bad_request(format!(
            "a `{s}` run has not finished: re-run gives succeeded, failed, cancelled or skipped"
        )));
    }
    let since = match &body.since {
        Some(text) => Some(parse_since(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`since`: `{text}` is neither a duration (`1h`) nor an RFC 3339 time"
            ))
        })?),
        None => None,
    };
    let found = api
        .rt
        .store
        .runs_in_states(&name, d.kind == DefinitionKind::Pipeline, &status, since)
        .await
        .map_err(ApiError::store)?;
    let mut runs = Vec::with_capacity(found.len());
    for (id, _, _) in found {
        let item = match rerun_one(&api, &id, &body, &caller.user).await {
            Ok(item) => item,
            Err(OpError::Store(e)) => return Err(ApiError::store(e)),
            Err(e) => BulkRerunItem {
                rerun_of: id,
                run: None,
                from_step: None,
                error: Some(e.to_string()),
            },
        };
        runs.push(item);
    }
    Ok(Json(BulkRerunAnswer {
        dry_run: body.dry_run,
        runs,
    }))
}

/// One run of a bulk re-run: re-run (or, a dry run, checked).
async fn rerun_one(
    api: &Api,
    id: &str,
    body: &BulkRerunRequest,
    user: &str,
) -> Result<BulkRerunItem, OpError> {
    let how = RerunRequest {
        from_failed: body.from_failed,
        same_revision: body.same_revision,
    };
    let plan = reruns::prepare(&api.intake, id, &how).await?;
    let (run, from_step) = if body.dry_run {
        (None, plan.from_step().map(str::to_owned))
    } else {
        let a = reruns::start(&api.intake, plan, user).await?;
        (Some(a.run), a.from_step)
    };
    Ok(BulkRerunItem {
        rerun_of: id.to_owned(),
        run,
        from_step,
        error: None,
    })
}

/// Counts and durations of a definition's runs.
#[utoipa::path(get, path = "/v1/workflows/{name}/stats", tag = "runs",
    params(("name" = String, Path, description = "A workflow or pipeline")),
    responses(
        (status = 200, description = "The statistics", body = Stats),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn stats(State(api): State<Api>, P(name): P<String>) -> Result<Json<Stats>, ApiError> {
    let d = definition(&api, &name).await?;
    let stats = api
        .rt
        .store
        .run_stats(&name, d.kind == DefinitionKind::Pipeline)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(stats))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErrorsQuery {
    /// 1 to 10000 (20 by default).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// A definition's failed attempts, newest first.
#[utoipa::path(get, path = "/v1/workflows/{name}/errors", tag = "runs",
    params(("name" = String, Path, description = "A workflow or pipeline"), ErrorsQuery),
    responses(
        (status = 200, description = "Failed attempts, newest first", body = ErrorList),
        (status = 404, description = "No such definition", body = ErrorBody),
    ))]
pub async fn errors(
    State(api): State<Api>,
    P(name): P<String>,
    Q(q): Q<ErrorsQuery>,
) -> Result<Json<ErrorList>, ApiError> {
    let d = definition(&api, &name).await?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 10000"));
    }
    let errors = api
        .rt
        .store
        .run_errors(&name, d.kind == DefinitionKind::Pipeline, limit)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(ErrorList { errors }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events on this virtual path.
    path: Option<String>,
    /// `10m` (that long ago) or an RFC 3339 time.
    since: Option<String>,
    /// 1 to 10000 (50 by default).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    /// Stream run changes instead (server-sent events, `event: run`, each
    /// a `RunChange`), until the client goes away.
    #[serde(default)]
    follow: bool,
    /// With `follow`: only this workflow's runs (a pipeline: its stages').
    workflow: Option<String>,
}

/// The decision log (`?path=&since=`), or with `follow=true` a stream of
/// run state changes as server-sent events, until the client goes away.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Events, newest first, each with what it started and why; with `follow=true`, a stream of `run` events whose data is a RunChange (and `lagged` events when this client read too slowly)",
            content((EventList = "application/json"), (crate::api::ServerSentEvent = "text/event-stream"))),
    ))]
pub async fn events(
    State(api): State<Api>,
    session: Option<Extension<super::session::Session>>,
    Q(q): Q<EventsQuery>,
) -> Result<axum::response::Response, ApiError> {
    if q.follow {
        let stop = super::session::stream_stop(&api, session.map(|Extension(s)| s));
        return Ok(follow(api.rt.changes.subscribe(), stop, q.workflow).into_response());
    }
    let since_ms = match q.since.as_deref() {
        None => None,
        Some(text) => Some(parse_since(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "bad `since` `{text}`: give a duration (`10m`, `2h`) or an RFC 3339 time"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 10000"));
    }
    let path = match q.path {
        Some(p) => Some(
            crate::datadir::vpath(&p)
                .map_err(ApiError::bad_request)?
                .virt,
        ),
        None => None,
    };
    let f = crate::store::EventFilter {
        path,
        since_ms,
        limit,
    };
    let events = api
        .rt
        .store
        .list_events(&f)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(EventList { events }).into_response())
}

fn parse_since(text: &str) -> Option<i64> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Some(now_ms() - i64::try_from(d.as_millis()).ok()?);
    }
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

fn follow(
    rx: tokio::sync::broadcast::Receiver<Arc<crate::engine::run::RunChange>>,
    stop: tokio_util::sync::CancellationToken,
    workflow: Option<String>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let wanted = move |w: &str| {
        workflow
            .as_deref()
            .is_none_or(|want| names::is_or_stage_of(want, w))
    };
    // The guard cancels `stop` when the stream is dropped (the client went
    // away), which ends the session's watch over it too.
    let state = (rx, stop.clone(), stop.drop_guard());
    let stream = futures_util::stream::unfold(state, move |(mut rx, stop, guard)| {
        let wanted = wanted.clone();
        async move {
            loop {
                let got = tokio::select! {
                    got = rx.recv() => got,
                    () = stop.cancelled() => return None,
                };
                let event = match got {
                    Ok(change) if wanted(&change.workflow) => SseEvent::default()
                        .event("run")
                        .json_data(&*change)
                        .unwrap_or_else(|_| SseEvent::default().comment("unserializable")),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => SseEvent::default().event("lagged").data(format!(
                        "{n} changes were dropped: this client read too slowly"
                    )),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (rx, stop, guard)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Every agent that records into this database (the whole fleet, whichever
/// node answers): its data dir, version, heartbeat, whether it watches its
/// data dir, and its runs in flight.
#[utoipa::path(get, path = "/v1/nodes", tag = "fleet",
    responses((status = 200, description = "The nodes, by origin and id", body = crate::api::NodeList)))]
pub async fn nodes(State(api): State<Api>) -> Result<Json<crate::api::NodeList>, ApiError> {
    let nodes = api.rt.store.list_nodes().await.map_err(ApiError::store)?;
    Ok(Json(crate::api::NodeList { nodes }))
}

/// Prometheus text: events, runs and their durations, queue depth, gaps.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "The exposition text", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn metrics(State(api): State<Api>) -> Result<axum::response::Response, ApiError> {
    let queue = api.rt.store.queue_depth().await.map_err(ApiError::store)?;
    let workflows = api.registry.live().current().workflows.len();
    let text = crate::metrics::METRICS.render(&queue, workflows);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
