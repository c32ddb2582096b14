//! The definition format as written: serde types that mirror the YAML one to
//! one and reject unknown fields. The `///` on each field is the reference
//! documentation of that field; `schemas/nexus-v1.schema.json` says the same
//! in JSON Schema, and a test keeps the two in agreement.
//!
//! Nothing here is validated beyond its shape: see `compile` for that.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One YAML document: a `Workflow` or a `Pipeline`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocument {
    /// Always `nexus/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `Workflow` or `Pipeline`.
    pub kind: RawKind,
    /// Name, description and labels.
    pub metadata: RawMetadata,
    /// A workflow spec for `kind: Workflow`, a pipeline spec for `kind: Pipeline`.
    pub spec: Value,
}

/// What a document defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RawKind {
    Workflow,
    Pipeline,
}

/// Identity of a definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters, unique across all files.
    pub name: String,
    /// Free text shown by `nexusd workflows list`.
    #[serde(default)]
    pub description: Option<String>,
    /// Free-form string labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What a workflow does: its triggers and steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflowSpec {
    /// One or more triggers; a run starts when any of them matches.
    pub on: Vec<RawTrigger>,
    /// Runs of this workflow at once (different paths); default 1 per path.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Limit on one attempt of the whole run (`500ms`, `30s`, `5m`, `1h`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// How failed runs are retried; default: one attempt.
    #[serde(default)]
    pub retry: Option<RawRetry>,
    /// Names usable as `{{secrets.NAME}}` and as a webhook's `secret: NAME`.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The steps, run in order.
    pub steps: Vec<RawStep>,
    /// Steps run once after the last attempt of a run failed.
    #[serde(default)]
    pub on_failure: Vec<RawStep>,
}

/// A group of stages, each a workflow named `PIPELINE/STAGE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipelineSpec {
    /// The stages, usually chained by files one writes and the next matches.
    pub stages: Vec<RawStage>,
}

/// A pipeline stage: a workflow spec with a name.
#[derive(Debug, Clone, Deserialize)]
pub struct RawStage {
    /// The stage's name, unique in the pipeline: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
    pub name: String,
    /// The stage's workflow spec.
    #[serde(flatten)]
    pub spec: RawWorkflowSpec,
}

/// When a workflow runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// An event type or a list of them (`file.created`, `file.updated`,
    /// `file.deleted`, `file.moved`, `metadata.changed`).
    pub event: OneOrMany,
    /// A glob or a list of globs on the virtual path.
    pub pattern: OneOrMany,
    /// Globs that exclude paths the patterns matched.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Quiet time before a file written but not closed counts as complete (default `300ms`).
    #[serde(default)]
    pub settle: Option<String>,
    /// What a burst of events for one path does: `coalesce` (default) or `queue`.
    #[serde(default)]
    pub on_burst: Option<RawBurst>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The items with their index in the list (`None` for a lone string).
    pub fn items(&self) -> Vec<(Option<usize>, &str)> {
        match self {
            OneOrMany::One(s) => vec![(None, s.as_str())],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (Some(i), s.as_str()))
                .collect(),
        }
    }
}

/// Burst handling for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBurst {
    Coalesce,
    Queue,
}

/// A retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before attempt 2 (default `1s`).
    #[serde(default)]
    pub backoff: Option<String>,
    /// Each delay is the previous one times this (default 2, at least 1).
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Cap on any one delay (default `5m`).
    #[serde(default)]
    pub max_backoff: Option<String>,
    /// Exit codes of a `run` step that fail the run at once, without retry.
    #[serde(default)]
    pub non_retryable_exit_codes: Vec<i32>,
}

/// One step. Exactly one of `run`, `action`, `webhook`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Unique in the workflow: `[a-z0-9_-]+`.
    pub name: String,
    /// A shell command; placeholders reach it as environment variables.
    #[serde(default)]
    pub run: Option<String>,
    /// The shell for `run`: `sh` (default) or `bash`.
    #[serde(default)]
    pub shell: Option<RawShell>,
    /// A built-in action (`file.write`, `file.copy`, `log`, ...).
    #[serde(default)]
    pub action: Option<String>,
    /// The built-in action's arguments.
    #[serde(default)]
    pub with: Option<serde_json::Map<String, Value>>,
    /// An HTTP request.
    #[serde(default)]
    pub webhook: Option<RawWebhook>,
    /// A template; the step is skipped when it renders empty, `false` or `0`.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// Limit on the step (`30s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Environment variables for a `run` step; values are templates.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A failure of this step does not fail the run.
    #[serde(default)]
    pub continue_on_error: bool,
    /// Overrides the workflow's retry policy for this step's failures.
    #[serde(default)]
    pub retry: Option<RawRetry>,
}

/// The shell a `run` step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawShell {
    Sh,
    Bash,
}

/// An HTTP request step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `http(s)://host[:port]/path?query`; only the path and query may hold placeholders.
    pub url: String,
    /// `GET`, `POST` (default), `PUT`, `PATCH` or `DELETE`.
    #[serde(default)]
    pub method: Option<String>,
    /// Request headers; values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body; every string in it is a template whose result is inserted as a JSON string.
    #[serde(default)]
    pub body: Option<Value>,
    /// Limit on the request (default `30s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// A declared secret whose value signs the request (Standard Webhooks).
    #[serde(default)]
    pub secret: Option<String>,
}
