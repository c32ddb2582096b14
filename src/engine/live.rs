//! The live definitions: a compiled set, its matcher and its secrets,
//! swapped whole when the config dir changes. Runs in flight keep the
//! `Arc` of the version they started with.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::api::MatchResult;
use crate::definitions::DefinitionSet;
use crate::definitions::model::Workflow;
use crate::events::EventType;
use crate::matching::{Matcher, Scope, Verdict};
use crate::pattern::Pattern;

/// One version of the definitions.
pub struct Live {
    pub workflows: Vec<Arc<Workflow>>,
    matcher: Matcher,
    /// Secret values by name, for every declared secret that has one here;
    /// shared by the runs.
    pub secrets: Arc<Vec<(String, String)>>,
    /// The workflows this node cannot run, by name, with why (a declared
    /// secret has no value here). Their events still start runs, which
    /// this node leaves to the nodes that can run them.
    pub lacking: BTreeMap<String, String>,
}

impl Live {
    /// Builds a version, reading every declared secret from `secrets_dir`
    /// (a file per name) or the environment; a workflow one of whose
    /// secrets has no value is one this node lacks.
    pub fn new(set: DefinitionSet, secrets_dir: Option<&Path>) -> Live {
        let mut secrets: Vec<(String, String)> = Vec::new();
        let mut lacking = BTreeMap::new();
        for w in &set.workflows {
            for name in &w.secrets {
                if secrets.iter().any(|(n, _)| n == name) {
                    continue;
                }
                let from_file =
                    secrets_dir.and_then(|d| std::fs::read_to_string(d.join(name)).ok());
                let value = from_file
                    .map(|v| v.trim_end_matches('\n').to_owned())
                    .or_else(|| std::env::var(name).ok());
                match value {
                    Some(value) => secrets.push((name.clone(), value)),
                    None => {
                        lacking.entry(w.name.clone()).or_insert_with(|| format!(
                            "workflow `{}` declares secret `{name}`, which has no value: put it in the file `{name}` of `--secrets-dir` or in the environment variable `{name}`",
                            w.name
                        ));
                    }
                }
            }
        }
        Live {
            workflows: set.workflows.iter().cloned().map(Arc::new).collect(),
            matcher: Matcher::new(set),
            secrets: Arc::new(secrets),
            lacking,
        }
    }

    /// Why this node cannot run `workflow`, when it cannot.
    pub fn lacks(&self, workflow: &str) -> Option<&str> {
        self.lacking.get(workflow).map(String::as_str)
    }

    /// What an event does: the workflows it starts and why the others
    /// near it do not (the matcher's one decision, move rule included).
    pub fn decide(&self, kind: EventType, path: &str, old_path: Option<&str>) -> Verdict {
        self.matcher.decide(kind, path, old_path, Scope::Near)
    }

    /// What an event would do, with why for every workflow (what
    /// `test-match` shows).
    pub fn decide_all(&self, kind: EventType, path: &str, old_path: Option<&str>) -> Verdict {
        self.matcher.decide(kind, path, old_path, Scope::All)
    }

    /// Every workflow's line for an event, by workflow name: what
    /// `test-match` and a replay's dry run say.
    pub fn lines(&self, kind: EventType, path: &str, old_path: Option<&str>) -> Vec<MatchResult> {
        let verdict = self.decide_all(kind, path, old_path);
        let mut lines: Vec<MatchResult> = verdict
            .starts
            .iter()
            .map(|s| MatchResult {
                workflow: self.workflows[s.workflow].name.clone(),
                matched: true,
                sees: Some(s.sees),
                reason: s.reason.to_string(),
            })
            .chain(verdict.misses.iter().map(|(w, reason)| MatchResult {
                workflow: self.workflows[*w].name.clone(),
                matched: false,
                sees: None,
                reason: reason.to_string(),
            }))
            .collect();
        lines.sort_by(|a, b| a.workflow.cmp(&b.workflow));
        lines
    }

    /// Each trigger pattern with its trigger's `settle:` time.
    pub fn settle_rules(&self) -> Vec<(Pattern, std::time::Duration)> {
        self.matcher
            .defs()
            .workflows
            .iter()
            .flat_map(|w| &w.triggers)
            .flat_map(|t| t.patterns.iter().map(|p| (p.clone(), t.settle)))
            .collect()
    }
}

/// The current version, shared.
#[derive(Clone)]
pub struct LiveHandle(Arc<RwLock<Arc<Live>>>);

impl LiveHandle {
    pub fn new(live: Live) -> LiveHandle {
        LiveHandle(Arc::new(RwLock::new(Arc::new(live))))
    }

    pub fn current(&self) -> Arc<Live> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn swap(&self, live: Live) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}
