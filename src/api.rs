//! The HTTP API's wire types: what the server answers, the store's reads
//! return and the CLI reads back. Nothing here knows where the values come
//! from; every layer may use it.

use serde::{Deserialize, Serialize};

/// What one workflow near an event decided, as the decision log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub run_status: Option<String>,
}

/// The three outcomes of an event for a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
