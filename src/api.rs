//! The HTTP API's wire types: what the server answers, the store's reads
//! return and the CLI reads back. Nothing here knows where the values come
//! from; every layer may use it.

use serde::{Deserialize, Serialize};

/// A run's state (SPEC section 7), spelled the same in the database, the
/// API and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_spelled_one_way_everywhere() {
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
        assert!(
            RunStatus::parse("done")
                .unwrap_err()
                .contains("expected one of queued, running, retrying")
        );
    }
}
