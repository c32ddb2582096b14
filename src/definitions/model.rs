//! Compiled definitions: what the engine runs. Every value here has been
//! checked; nothing downstream re-validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::events::EventSet;
use crate::pattern::Pattern;
use crate::templates::Template;

/// Where a definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

/// What a document defined.
pub use crate::api::DefinitionKind as Kind;

/// A runnable workflow: a `Workflow` document, or one stage of a
/// `Pipeline` (named `PIPELINE/STAGE`).
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub kind: Kind,
    /// The pipeline a stage belongs to.
    pub pipeline: Option<String>,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub triggers: Vec<Trigger>,
    /// Runs at once for different paths; `None` is one per path.
    pub concurrency: Option<u32>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub secrets: Vec<String>,
    pub steps: Vec<Step>,
    /// Run once after the last attempt of a run failed (`spec.on_failure`).
    pub on_failure: Vec<Step>,
    /// Any node of a fleet may run its runs, not only one serving the data
    /// dir of their event ([`any_node`]).
    pub any_node: bool,
    pub source: SourceRef,
}

impl Workflow {
    /// True when a burst of events on one path keeps only the newest waiting
    /// run: every trigger says `on_burst: coalesce` (the default).
    pub fn coalesces(&self) -> bool {
        self.triggers.iter().all(|t| t.on_burst == Burst::Coalesce)
    }
}

/// True when any node of a fleet may run a workflow of `steps`, not only
/// one serving the data dir of its event: every step is a webhook, and none
/// names `event.abs_path` (a path on that data dir's disk).
pub fn any_node(steps: &[Step]) -> bool {
    !steps.is_empty()
        && steps.iter().all(|step| {
            let StepKind::Webhook(hook) = &step.kind else {
                return false;
            };
            let mut templates: Vec<&Template> = step.condition.iter().collect();
            hook.templates(&mut templates);
            !templates.iter().any(|t| t.source().contains("abs_path"))
        })
}

/// When a workflow runs.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub events: EventSet,
    pub patterns: Vec<Pattern>,
    pub ignore: Vec<Pattern>,
    /// Quiet time before a file modified but not closed counts as complete.
    pub settle: Duration,
    pub on_burst: Burst,
}

/// What a burst of events for one path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    /// At most one run waiting per path; the merged events are `superseded`.
    Coalesce,
    /// Every event gets its run.
    Queue,
}

/// How failed runs are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub multiplier: f64,
    pub max_backoff: Duration,
    pub non_retryable_exit_codes: Vec<i32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(300),
            non_retryable_exit_codes: Vec::new(),
        }
    }
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub condition: Option<Template>,
    pub timeout: Option<Duration>,
    /// Extra environment for `run` steps: name and value template.
    pub env: Vec<(String, Template)>,
    pub continue_on_error: bool,
    pub retry: Option<RetryPolicy>,
}

/// The closed set of step kinds.
#[derive(Debug, Clone)]
pub enum StepKind {
    Run(RunStep),
    Webhook(WebhookStep),
    Action(Action),
}

/// The shell of a `run` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
}

/// A shell command whose placeholders were rewritten into variables.
#[derive(Debug, Clone)]
pub struct RunStep {
    pub shell: Shell,
    /// The command as written.
    pub source: String,
    /// The command to execute: placeholders replaced by `"${NEXUS_Vn}"`.
    pub script: String,
    /// Each variable and the template of its value.
    pub vars: Vec<(String, Template)>,
}

impl RunStep {
    /// The environment variables that carry the placeholders' values.
    pub fn render_vars(
        &self,
        data: &serde_json::Value,
    ) -> Result<Vec<(String, String)>, crate::templates::TemplateError> {
        self.vars
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.render(data)?)))
            .collect()
    }
}

/// An HTTP request.
#[derive(Debug, Clone)]
pub struct WebhookStep {
    /// Scheme, host and port: literal.
    pub origin: String,
    /// Path and query: literal text and placeholders (percent-encoded when rendered).
    pub target: Vec<UrlPiece>,
    pub method: String,
    pub headers: Vec<(String, Template)>,
    pub body: Option<BodyTemplate>,
    pub timeout: Duration,
    pub secret: Option<String>,
}

impl WebhookStep {
    /// Every template of the request: its URL's, headers' and body's.
    fn templates<'a>(&'a self, out: &mut Vec<&'a Template>) {
        for piece in &self.target {
            if let UrlPiece::Value(t) = piece {
                out.push(t);
            }
        }
        out.extend(self.headers.iter().map(|(_, t)| t));
        if let Some(body) = &self.body {
            body.templates(out);
        }
    }
}

impl BodyTemplate {
    fn templates<'a>(&'a self, out: &mut Vec<&'a Template>) {
        match self {
            BodyTemplate::Literal(_) => {}
            BodyTemplate::String(t) => out.push(t),
            BodyTemplate::Array(items) => items.iter().for_each(|b| b.templates(out)),
            BodyTemplate::Object(fields) => fields.iter().for_each(|(_, b)| b.templates(out)),
        }
    }
}

/// A part of a URL's path and query.
#[derive(Debug, Clone)]
pub enum UrlPiece {
    Literal(String),
    Value(Template),
}

/// A JSON body whose strings are templates; each result is a JSON string.
#[derive(Debug, Clone)]
pub enum BodyTemplate {
    Literal(serde_json::Value),
    String(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

/// The built-in actions; every path is virtual, resolved beneath the data dir.
#[derive(Debug, Clone)]
pub enum Action {
    Write { path: Template, content: Template },
    Append { path: Template, content: Template },
    Copy { from: Template, to: Template },
    Move { from: Template, to: Template },
    Delete { path: Template },
    Mkdir { path: Template },
    Stats { path: Template },
    Log { message: Template },
}

impl Action {
    /// The action's name as written in `action:`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Write { .. } => "file.write",
            Action::Append { .. } => "file.append",
            Action::Copy { .. } => "file.copy",
            Action::Move { .. } => "file.move",
            Action::Delete { .. } => "file.delete",
            Action::Mkdir { .. } => "file.mkdir",
            Action::Stats { .. } => "file.stats",
            Action::Log { .. } => "log",
        }
    }

    /// The path this action writes a file to, if any.
    pub fn written_path(&self) -> Option<&Template> {
        match self {
            Action::Write { path, .. } | Action::Append { path, .. } => Some(path),
            Action::Copy { to, .. } | Action::Move { to, .. } => Some(to),
            _ => None,
        }
    }
}

/// The live set: every workflow, stages included, in source order.
#[derive(Debug, Clone, Default)]
pub struct DefinitionSet {
    pub workflows: Vec<Workflow>,
}

impl DefinitionSet {
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == name)
    }
}
