//! Executing one step: a shell command, a webhook or a built-in action.
//! Each kind lives in its own file; this module holds what they share.

pub mod builtin;
pub mod capture;
pub mod live;
pub mod shell;
pub mod spawn;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::events::Event;
use crate::events::causes::Causes;

pub use crate::api::StepStatus;

/// A step's result, as recorded and as later steps see it.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub output: Value,
    pub error: Option<String>,
    /// Whether retrying could help (false for bad input and listed exit codes).
    pub retryable: bool,
    /// A delay the other side asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl StepOutcome {
    pub fn success(output: Value) -> StepOutcome {
        StepOutcome {
            status: StepStatus::Succeeded,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            output,
            error: None,
            retryable: false,
            retry_after: None,
        }
    }

    /// A failure that another attempt would repeat (bad path, bad template).
    pub fn fatal(error: impl Into<String>) -> StepOutcome {
        StepOutcome {
            status: StepStatus::Failed,
            error: Some(error.into()),
            ..StepOutcome::success(Value::Object(Default::default()))
        }
    }

    /// A failure worth retrying (a timeout, a refused connection).
    pub fn transient(error: impl Into<String>) -> StepOutcome {
        StepOutcome {
            retryable: true,
            ..StepOutcome::fatal(error)
        }
    }

    /// The step's fields for templates: `steps.NAME.*`.
    pub fn template_fields(&self) -> Value {
        serde_json::json!({
            "stdout": self.stdout.strip_suffix('\n').unwrap_or(&self.stdout),
            "stderr": self.stderr.strip_suffix('\n').unwrap_or(&self.stderr),
            "exit_code": self.exit_code,
            "status": self.status.as_str(),
            "output": self.output,
        })
    }
}

/// What every step of one attempt shares.
pub struct StepContext {
    pub data_dir: PathBuf,
    pub root: Arc<cap_std::fs::Dir>,
    pub run_id: String,
    /// The claim the run's records are made under.
    pub fence: i64,
    pub attempt: u32,
    pub workflow: String,
    pub event: Event,
    /// Secret values, for the environment and for redaction.
    pub secrets: Vec<(String, String)>,
    pub http: webhook::LazyClient,
    pub causes: Arc<Causes>,
    pub output_cap: usize,
    /// Template data: `event`, `workflow`, `run`, `steps`, `secrets`.
    pub data: Value,
    /// The run's live log, for its shell steps' lines as they come.
    pub log: Option<Arc<live::RunLog>>,
    /// What redaction replaces ([`secret_patterns`] of `secrets`), made
    /// once per attempt.
    pub redactions: Arc<Vec<String>>,
}

impl StepContext {
    /// Where a shell step's `stream` goes line by line, while it runs.
    pub fn sink(&self, step: &str, stream: crate::api::LogStream) -> Option<live::LineSink> {
        Some(live::LineSink::new(
            Arc::clone(self.log.as_ref()?),
            self.attempt,
            step,
            stream,
            Arc::clone(&self.redactions),
        ))
    }

    /// Replaces every secret value in `text` by `***` (see
    /// [`secret_patterns`]).
    pub fn redact(&self, text: &str) -> String {
        redact_with(&self.redactions, text)
    }
}

/// `text` with each of `patterns` replaced by `***`.
pub fn redact_with(patterns: &[String], text: &str) -> String {
    let mut out = text.to_owned();
    for p in patterns {
        out = out.replace(p.as_str(), "***");
    }
    out
}

/// What redaction replaces, longest first (a secret inside another is not
/// left half): each secret value, and of one of several lines (a key) each
/// line that could not be mistaken for common text (8 bytes at least, a
/// letter or digit in it), since a line of output holds one line of it.
pub fn secret_patterns(values: &[String]) -> Vec<String> {
    let mut patterns: Vec<String> = Vec::new();
    for v in values.iter().filter(|v| !v.is_empty()) {
        patterns.push(v.clone());
        if v.contains('\n') {
            patterns.extend(
                v.lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| l.len() >= 8 && l.chars().any(char::is_alphanumeric))
                    .map(str::to_owned),
            );
        }
    }
    patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
    patterns.dedup();
    patterns
}
