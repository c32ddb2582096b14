//! The HTTP API's wire types: what the server answers, the store's reads
//! return and the CLI reads back, and what the OpenAPI document
//! (`GET /v1/openapi.json`, `schemas/openapi.json`) is generated from.
//! Nothing here knows where the values come from; every layer may use it.
//!
//! Times are RFC 3339 strings in UTC with milliseconds
//! (`2026-11-26T04:06:36.123Z`); a time not reached yet is `null`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::events::EventType;

/// A run's state (SPEC section 7), spelled the same in the database, the
/// API and the metrics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Retrying,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Skipped,
    ];

    /// The states of a run not finished yet.
    pub const UNFINISHED: [RunStatus; 3] =
        [RunStatus::Queued, RunStatus::Running, RunStatus::Retrying];

    /// [`RunStatus::UNFINISHED`] as an SQL list, for `status IN ...`.
    pub const UNFINISHED_SQL: &str = "('queued', 'running', 'retrying')";

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Retrying => "retrying",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }

    /// The stored or requested spelling back.
    pub fn parse(text: &str) -> Result<RunStatus, String> {
        RunStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let all: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{text}`: expected one of {}",
                    all.join(", ")
                )
            })
    }

    pub fn is_final(self) -> bool {
        !RunStatus::UNFINISHED.contains(&self)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a definition document defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DefinitionKind {
    Workflow,
    Pipeline,
}

impl DefinitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::Workflow => "Workflow",
            DefinitionKind::Pipeline => "Pipeline",
        }
    }

    /// The stored spelling back; anything else reads as `Workflow`.
    pub fn parse(text: &str) -> DefinitionKind {
        if text == "Pipeline" {
            DefinitionKind::Pipeline
        } else {
            DefinitionKind::Workflow
        }
    }
}

impl std::fmt::Display for DefinitionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }

    /// The stored spelling back; anything else reads as `failed`.
    pub fn parse(text: &str) -> StepStatus {
        match text {
            "succeeded" => StepStatus::Succeeded,
            "skipped" => StepStatus::Skipped,
            _ => StepStatus::Failed,
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    Running,
    Succeeded,
    Failed,
    /// Cut off by the agent (a clean stop past `--shutdown-grace`, a crash,
    /// a lost lease): the run runs again as its next attempt.
    Interrupted,
    /// Stopped by a user's cancel of its run.
    Cancelled,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Running => "running",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Interrupted => "interrupted",
            AttemptStatus::Cancelled => "cancelled",
        }
    }

    /// The stored spelling back; anything else reads as `failed`.
    pub fn parse(text: &str) -> AttemptStatus {
        match text {
            "running" => AttemptStatus::Running,
            "succeeded" => AttemptStatus::Succeeded,
            "interrupted" => AttemptStatus::Interrupted,
            "cancelled" => AttemptStatus::Cancelled,
            _ => AttemptStatus::Failed,
        }
    }
}

/// What one workflow near an event decided, as the decision log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub workflow: String,
    pub decision: DecisionKind,
    /// The run it started (or recorded as skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Why it ran (the pattern that matched, the request that triggered
    /// it) or why not (its run's reason, once the run has one).
    pub reason: Option<String>,
    /// The run's status now; filled in when the log is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_status: Option<RunStatus>,
}

/// The three outcomes of an event for a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DecisionKind {
    /// A run was started.
    #[serde(rename = "run")]
    Run,
    /// A run was recorded, already skipped (paused, a loop).
    #[serde(rename = "skipped")]
    Skipped,
    /// A pattern matched the path, but the workflow does not run.
    #[serde(rename = "not matched")]
    NotMatched,
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `invalid`, `payload_too_large`,
    /// `unavailable` or `internal`.
    pub code: String,
    pub message: String,
    /// An invalid apply or diff: every problem, with its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<DiagnosticItem>>,
}

/// One problem in a definition file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticItem {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// `error` or `warning`.
    pub severity: String,
    pub message: String,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub version: String,
    /// Why it is degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    /// Working, but some directory has no watch (the inotify watch limit)
    /// and is polled, seconds late.
    Degraded,
}

/// `GET /v1/whoami`: the key's user and role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub user: String,
    /// `reader`, `writer` or `admin`.
    pub role: String,
}

/// One definition file of an apply or a diff sent as JSON
/// (`Content-Type: application/json`, a list of them): errors name `file`,
/// with lines and columns in `text`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub file: String,
    pub text: String,
}

/// What one apply did to one definition (kubectl's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Pruned,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Pruned => "pruned",
            Action::Deleted => "deleted",
        }
    }
}

/// One line of an apply's report: `workflow/NAME created`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    pub kind: DefinitionKind,
    pub name: String,
    pub action: Action,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {}",
            self.kind.as_str().to_lowercase(),
            self.name,
            self.action.as_str()
        )
    }
}

/// `POST /v1/apply`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyAnswer {
    pub dry_run: bool,
    pub results: Vec<Applied>,
}

/// `DELETE /v1/workflows/{name}`, `POST /v1/workflows/{name}/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Results {
    pub results: Vec<Applied>,
}

/// One definition's change in a diff.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiffItem {
    pub kind: DefinitionKind,
    pub name: String,
    pub action: Action,
    /// A unified diff, live above and the body below; empty when unchanged.
    pub diff: String,
}

/// `POST /v1/diff`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiffAnswer {
    /// True when any definition would change.
    pub differs: bool,
    pub results: Vec<DiffItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Active,
    Paused,
}

/// A definition as the API lists it (SPEC section 7).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummary {
    pub name: String,
    pub kind: DefinitionKind,
    pub description: Option<String>,
    pub status: WorkflowStatus,
    pub revision: i64,
    /// The triggers as written (a pipeline: all its stages').
    #[schema(value_type = Vec<Object>)]
    pub triggers: Vec<Value>,
    /// What applied it: `api`, `files:PATHS` (the CLI), `dir:PATH` (the
    /// config dir).
    pub source: String,
    pub applied_by: String,
    pub applied_at: Option<String>,
    /// A pipeline's stages, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<String>>,
    /// A pipeline's stages paused on their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_stages: Option<Vec<String>>,
}

/// `GET /v1/workflows`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
}

/// One entry of a definition's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionSummary {
    pub revision: i64,
    /// `created`, `configured`, `pruned`, `deleted` or `rolled-back`.
    pub action: String,
    pub source: String,
    pub applied_by: String,
    pub applied_at: Option<String>,
}

/// `GET /v1/workflows/{name}`: the definition, its document and history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowDetail {
    #[serde(flatten)]
    pub summary: WorkflowSummary,
    /// The document as applied (JSON).
    #[schema(value_type = Object)]
    pub document: Value,
    /// True when any node of a fleet may run its runs (every step a
    /// webhook that does not name `event.abs_path`); false when only a
    /// node serving the data dir its event came from may.
    pub any_node: bool,
    pub revisions: Vec<RevisionSummary>,
}

/// `GET /v1/workflows/{name}?revision=N`: one revision's document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionDetail {
    pub name: String,
    pub kind: DefinitionKind,
    pub revision: i64,
    pub action: String,
    pub source: String,
    pub applied_by: String,
    pub applied_at: Option<String>,
    /// `null` for a removal.
    #[schema(value_type = Option<Object>)]
    pub document: Value,
}

/// `GET /v1/workflows/{name}` answers either.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum WorkflowOrRevision {
    Workflow(Box<WorkflowDetail>),
    Revision(Box<RevisionDetail>),
}

/// `POST /v1/workflows/{name}/pause` and `/resume`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PauseAnswer {
    pub name: String,
    pub status: WorkflowStatus,
}

/// `POST /v1/workflows/{name}/trigger`: the file the run is for (or
/// `?path=`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// A virtual path: absolute, rooted at the data dir.
    #[serde(default)]
    pub path: Option<String>,
}

/// The run a trigger started (or recorded as skipped: paused).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TriggerAnswer {
    pub run: String,
    pub workflow: String,
    pub event: String,
    pub status: RunStatus,
}

/// Signing in to the dashboard: an API key, for a session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// `nxk_...`
    pub api_key: String,
}

/// A dashboard session: who, with which role, the CSRF token its
/// state-changing requests send in `X-CSRF-Token`, and when it ends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub user: String,
    pub role: String,
    pub csrf: String,
    pub expires_at: String,
}

/// One server-sent event of a stream (`follow=true`), as a client reads
/// it: its name and its data, JSON text whose shape the name gives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerSentEvent {
    /// `run`, `lagged`; `line`, `skipped`, `end`, `error`.
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<i64>,
}

/// Which stream of a step a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A line a shell step wrote (secrets redacted, cut at 4 KiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Its number in the attempt's live log (from 0); stored output's
    /// lines are numbered in their own order.
    pub seq: u64,
    pub attempt: u32,
    pub step: String,
    pub stream: LogStream,
    pub line: String,
    /// When the agent read it (a stored line: when its step ended).
    pub at: String,
}

/// A run's output: its running attempt's lines as they were written (kept
/// on the node running it, the last 1,000), or its stored output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunLogs {
    pub run: String,
    pub status: RunStatus,
    /// True: the lines of the attempt running now, on this node; false:
    /// the stored output of the last attempt's steps that have ended.
    pub live: bool,
    /// Earlier lines of the attempt no longer kept.
    pub skipped: u64,
    pub lines: Vec<LogLine>,
}

/// What to backfill.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// Only files this glob matches too (as a trigger's `pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Count the files and name the first few; start nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// How many of a backfill's runs are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackfillRuns {
    pub queued: i64,
    pub running: i64,
    pub retrying: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub skipped: i64,
}

impl BackfillRuns {
    /// Those in a final state.
    pub fn finished(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled + self.skipped
    }

    pub fn add(&mut self, status: RunStatus, n: i64) {
        *match status {
            RunStatus::Queued => &mut self.queued,
            RunStatus::Running => &mut self.running,
            RunStatus::Retrying => &mut self.retrying,
            RunStatus::Succeeded => &mut self.succeeded,
            RunStatus::Failed => &mut self.failed,
            RunStatus::Cancelled => &mut self.cancelled,
            RunStatus::Skipped => &mut self.skipped,
        } += n;
    }
}

/// A backfill: a run for every file already in the data dir that a
/// workflow's `file.created` triggers match (and `path`, when given).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Backfill {
    /// `bf_...`; none in a dry run, or when there was nothing to do.
    pub id: Option<String>,
    pub workflow: String,
    /// The `path` glob it was given.
    pub path: Option<String>,
    pub dry_run: bool,
    /// The files it found to start, when it was asked.
    pub files: i64,
    /// A dry run: the first files (in path order), 20 at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
    /// Runs started so far.
    pub started: i64,
    /// Every file has its run (or the backfill stopped short: `error`).
    pub done: bool,
    /// Its runs, by state (`GET /v1/backfills/{id}`; a dry run, a list and
    /// a backfill just begun: all 0).
    pub runs: BackfillRuns,
    /// The user who asked.
    pub by: Option<String>,
    pub created_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why it stopped short (its workflow was deleted).
    pub error: Option<String>,
    /// Said when there is nothing to do, and why.
    pub message: Option<String>,
}

/// Backfills, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackfillList {
    pub backfills: Vec<Backfill>,
}

/// A run cancelled: what it was doing when it was.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelAnswer {
    pub run: String,
    /// Always `cancelled`.
    pub status: RunStatus,
    /// Its state before: `queued`, `retrying` or `running`.
    pub was: RunStatus,
}

impl CancelAnswer {
    /// A run cancelled from state `was`.
    pub fn new(run: String, was: RunStatus) -> CancelAnswer {
        CancelAnswer {
            run,
            status: RunStatus::Cancelled,
            was,
        }
    }
}

/// Which of a workflow's runs to cancel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancelRequest {
    /// Runs in these states (`queued`, `retrying`, `running`); at least one.
    pub status: Vec<RunStatus>,
    /// Only runs for files this glob matches (as a trigger's `pattern`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Say which runs would be cancelled, and cancel none.
    #[serde(default)]
    pub dry_run: bool,
}

/// The runs a bulk cancel cancelled (or, a dry run, would cancel).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkCancelAnswer {
    pub dry_run: bool,
    /// Each run with its state before, oldest first.
    pub runs: Vec<CancelAnswer>,
}

/// How to re-run a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// Start at the step that failed, the earlier steps' recorded results
    /// standing for them (a failed run only; refused when its file changed
    /// since).
    #[serde(default)]
    pub from_failed: bool,
    /// Run on the revision of the workflow that was live when the run was
    /// queued, not on the live one.
    #[serde(default)]
    pub same_revision: bool,
}

/// A re-run started: the new run, and the one it re-runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RerunAnswer {
    pub run: String,
    pub rerun_of: String,
    pub workflow: String,
    /// `queued` (or `skipped`: the workflow is paused).
    pub status: RunStatus,
    /// From the failed step: its name.
    pub from_step: Option<String>,
    /// On its original's revision: that revision.
    pub revision: Option<i64>,
}

/// Which of a workflow's runs to re-run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRerunRequest {
    /// Runs in these final states; `["failed"]` when not given.
    #[serde(default)]
    pub status: Vec<RunStatus>,
    /// Only runs finished since then: a duration ago (`1h`) or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default)]
    pub from_failed: bool,
    /// Each on the revision live when it was queued.
    #[serde(default)]
    pub same_revision: bool,
    /// Say which runs would be re-run, and start none.
    #[serde(default)]
    pub dry_run: bool,
}

/// One run of a bulk re-run: its re-run, or why it has none.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkRerunItem {
    pub rerun_of: String,
    /// The new run (`null` in a dry run, or when refused).
    pub run: Option<String>,
    pub from_step: Option<String>,
    /// Why it was not re-run.
    pub error: Option<String>,
}

/// The runs a bulk re-run re-ran (or, a dry run, would), oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkRerunAnswer {
    pub dry_run: bool,
    pub runs: Vec<BulkRerunItem>,
}

/// How to replay an event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Say what would run and why not, and start nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A recorded event matched again against today's definitions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayAnswer {
    /// The event replayed.
    pub event: String,
    pub dry_run: bool,
    /// The new event its runs are for (none in a dry run).
    pub replayed_as: Option<String>,
    /// Every workflow, by name: whether it runs (and the type it sees), and why.
    pub results: Vec<ReplayResult>,
}

/// What one workflow would do with an event: whether it runs (and the
/// type it sees), and why (`test-match`'s line).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MatchResult {
    pub workflow: String,
    pub matched: bool,
    pub sees: Option<EventType>,
    pub reason: String,
}

/// `GET /v1/test-match`: what an event of this type on this path would do
/// now, every workflow's line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestMatchAnswer {
    pub event: EventType,
    pub path: String,
    pub old_path: Option<String>,
    pub results: Vec<MatchResult>,
}

/// What one workflow does with a replayed event (`test-match`'s line).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayResult {
    pub workflow: String,
    pub matched: bool,
    pub sees: Option<EventType>,
    pub reason: String,
    /// The run it started (none in a dry run or when it does not run).
    pub run: Option<String>,
    pub run_status: Option<RunStatus>,
}

/// A run's event, as its workflow saw it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub path: String,
    pub old_path: Option<String>,
    /// The run whose write caused the event (`runs/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caused_by_run: Option<String>,
    /// The API user whose request caused it (`runs/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// `watch`, `scan`, `api` or `backfill` (`runs/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    pub status: RunStatus,
    /// Why it was skipped or cancelled.
    pub reason: Option<String>,
    pub attempts: i64,
    pub chain_depth: i64,
    pub event: RunEvent,
    /// The data dir its event came from (its identity, `DATA/.nexus/origin`).
    pub origin: String,
    /// The node that holds it, or held it last (its latest attempt's);
    /// `null` for a run no node has claimed.
    pub node: Option<String>,
    pub queued_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// The run this one re-runs (`runs rerun`).
    pub rerun_of: Option<String>,
}

/// `GET /v1/runs`, `GET /v1/workflows/{name}/runs`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
}

/// One step of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepResult {
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// What the step put out (`$NEXUS_OUTPUT`, a built-in's result).
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// One attempt of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptResult {
    pub attempt: i64,
    pub status: AttemptStatus,
    /// The node that ran it.
    pub node: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub steps: Vec<StepResult>,
}

/// `GET /v1/runs/{id}`: a run with every attempt and its steps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub attempt_log: Vec<AttemptResult>,
    /// The last attempt's steps: the run's outcome.
    pub steps: Vec<StepResult>,
    /// Its re-runs, oldest first.
    pub reruns: Vec<String>,
    /// A re-run from the failed step: the index of the step it started at
    /// (the steps before it were not run again: their results are the
    /// original's).
    pub from_step: Option<i64>,
}

/// `GET /v1/workflows/{name}/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub workflow: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Succeeded over succeeded and failed; `null` before any ran.
    pub success_rate: Option<f64>,
    pub avg_duration_ms: Option<f64>,
    pub p95_duration_ms: Option<i64>,
    pub errors: i64,
}

/// One failed attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    pub run: String,
    pub workflow: String,
    pub path: String,
    pub attempt: i64,
    pub error: Option<String>,
    pub at: Option<String>,
}

/// `GET /v1/workflows/{name}/errors`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorList {
    pub errors: Vec<RunError>,
}

/// One recorded event with its decision log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub path: String,
    pub old_path: Option<String>,
    pub size: Option<i64>,
    pub observed_at: Option<String>,
    pub caused_by_run: Option<String>,
    pub chain_depth: i64,
    pub actor: Option<String>,
    /// `watch`, `scan`, `api` or `backfill`.
    pub source: String,
    /// The data dir it happened in (its identity, `DATA/.nexus/origin`).
    pub origin: String,
    /// The node that recorded it.
    pub node: Option<String>,
    /// The runs it started (or skipped), then the workflows near it that
    /// did not run; empty when no pattern matched the path.
    pub decisions: Vec<Decision>,
}

/// `GET /v1/events`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventRecord>,
}

/// A run entering a state: one `run` event of `GET /v1/events/stream`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunChange {
    pub run: String,
    pub workflow: String,
    pub path: String,
    pub status: RunStatus,
    pub attempt: u32,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub at: String,
}

impl RunChange {
    /// A change to `status` now, with nothing more said.
    pub fn new(run: &str, workflow: &str, path: &str, status: RunStatus) -> RunChange {
        RunChange {
            run: run.to_owned(),
            workflow: workflow.to_owned(),
            path: path.to_owned(),
            status,
            attempt: 0,
            reason: None,
            error: None,
            duration_ms: None,
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub size: u64,
    pub modified_at: Option<String>,
}

/// `GET /v1/files`, `GET /v1/files/{path}` of a directory (or with
/// `?list=true`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<FileEntry>,
}

/// A write or an append: the file and how many bytes were written.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileWritten {
    pub path: String,
    pub bytes: u64,
}

/// `DELETE /v1/files/{path}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileDeleted {
    pub path: String,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_kinds_are_spelled_one_way_everywhere() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let listed: Vec<String> = RunStatus::UNFINISHED
            .iter()
            .map(|s| format!("'{s}'"))
            .collect();
        assert_eq!(
            RunStatus::UNFINISHED_SQL,
            format!("({})", listed.join(", "))
        );
        for t in EventType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for k in [DefinitionKind::Workflow, DefinitionKind::Pipeline] {
            assert_eq!(DefinitionKind::parse(k.as_str()), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for st in [
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Skipped,
        ] {
            assert_eq!(StepStatus::parse(st.as_str()), st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        for st in [
            AttemptStatus::Running,
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
        ] {
            assert_eq!(AttemptStatus::parse(st.as_str()), st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!(
            RunStatus::parse("done")
                .unwrap_err()
                .contains("expected one of queued, running, retrying")
        );
    }
}

/// One agent of the fleet, as it last reported itself (`GET /v1/nodes`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// Its node id (`--node-id`; by default the host and the data dir).
    pub id: String,
    /// `up`; `stopped` (a clean stop); `lost` (no heartbeat for longer
    /// than its lease: killed, hung, or cut off from the database).
    pub state: NodeState,
    /// The data dir it serves (its identity, `DATA/.nexus/origin`).
    pub origin: String,
    pub data_dir: String,
    pub host: String,
    pub pid: i64,
    /// The nexusd version it runs.
    pub version: String,
    /// Its HTTP address.
    pub listen: String,
    pub started_at: Option<String>,
    pub heartbeat_at: Option<String>,
    pub stopped_at: Option<String>,
    /// Whether it is its data dir's watcher (the one agent of the data dir
    /// that watches it and records its events).
    pub watcher: bool,
    /// The runs it holds: running, or queued in its memory.
    pub runs_in_flight: i64,
    /// How it watches: `inotify`, `inotify, degraded: ...`, `poll every
    /// 2s`, or `standby` (another agent is the watcher).
    pub watch: String,
}

/// A node's state, from its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    Stopped,
    Lost,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Stopped => "stopped",
            NodeState::Lost => "lost",
        }
    }
}

/// `GET /v1/nodes`: every agent that recorded into this database, by data
/// dir and node id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<Node>,
}
