//! The live definitions: a compiled set, its matcher and its secrets,
//! swapped whole when the config dir changes. Runs in flight keep the
//! `Arc` of the version they started with.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::definitions::DefinitionSet;
use crate::definitions::model::Workflow;
use crate::events::EventType;
use crate::matching::Matcher;

/// One version of the definitions.
pub struct Live {
    pub workflows: Vec<Arc<Workflow>>,
    set: DefinitionSet,
    matcher: Matcher,
    /// Secret values by name, for every declared secret; shared by the runs.
    pub secrets: Arc<Vec<(String, String)>>,
}

impl Live {
    /// Builds a version, reading every declared secret from `secrets_dir`
    /// (a file per name) or the environment; a missing one is an error.
    pub fn new(set: DefinitionSet, secrets_dir: Option<&Path>) -> Result<Live, String> {
        let mut secrets: Vec<(String, String)> = Vec::new();
        for w in &set.workflows {
            for name in &w.secrets {
                if secrets.iter().any(|(n, _)| n == name) {
                    continue;
                }
                let from_file =
                    secrets_dir.and_then(|d| std::fs::read_to_string(d.join(name)).ok());
                let value = from_file
                    .map(|v| v.trim_end_matches('\n').to_owned())
                    .or_else(|| std::env::var(name).ok())
                    .ok_or_else(|| {
                        format!(
                            "workflow `{}` declares secret `{name}`, which has no value: put it in the file `{name}` of `--secrets-dir` or in the environment variable `{name}`",
                            w.name
                        )
                    })?;
                secrets.push((name.clone(), value));
            }
        }
        let matcher = Matcher::new(&set);
        Ok(Live {
            workflows: set.workflows.iter().cloned().map(Arc::new).collect(),
            set,
            matcher,
            secrets: Arc::new(secrets),
        })
    }

    /// Why the workflows some pattern of which matches `path` do not run
    /// for this event: `(workflow, reason)` for each, matched ones left out.
    pub fn near_misses(&self, kind: EventType, path: &str) -> Vec<(&str, String)> {
        use crate::matching::Decision;
        self.matcher
            .near(&self.set, kind, path)
            .into_iter()
            .filter_map(|(w, d)| {
                let workflow = &self.set.workflows[w];
                let reason = match d {
                    Decision::Matched { .. } | Decision::NoPatternMatched => return None,
                    Decision::Ignored { pattern } => format!("ignored by `{pattern}`"),
                    Decision::EventTypeNotListed => {
                        let listed: Vec<String> = workflow
                            .triggers
                            .iter()
                            .map(|t| t.events.to_string())
                            .collect();
                        format!(
                            "event type {kind} not listed (triggers on {})",
                            listed.join("; ")
                        )
                    }
                };
                Some((workflow.name.as_str(), reason))
            })
            .collect()
    }

    /// Each trigger pattern with its trigger's `settle:` time.
    pub fn settle_rules(&self) -> Vec<(crate::matching::Pattern, std::time::Duration)> {
        self.set
            .workflows
            .iter()
            .flat_map(|w| &w.triggers)
            .flat_map(|t| t.patterns.iter().map(|p| (p.clone(), t.settle)))
            .collect()
    }

    /// The workflows an event starts, each with the event type it sees: a
    /// move into a workflow's scope is a `file.created` for it, a move out a
    /// `file.deleted` (on the old path).
    pub fn targets(
        &self,
        kind: EventType,
        path: &str,
        old_path: Option<&str>,
    ) -> Vec<(Arc<Workflow>, EventType)> {
        let in_new = self.matcher.candidates(&self.set, path);
        let mut out = Vec::new();
        match (kind, old_path) {
            (EventType::Moved, Some(old)) => {
                let in_old = self.matcher.candidates(&self.set, old);
                for (w, events) in &in_new {
                    let was_in = in_old.iter().any(|(o, _)| o == w);
                    let seen = if was_in {
                        EventType::Moved
                    } else {
                        EventType::Created
                    };
                    if events.contains(seen) {
                        out.push((Arc::clone(&self.workflows[*w]), seen));
                    }
                }
                for (w, events) in &in_old {
                    if !in_new.iter().any(|(n, _)| n == w) && events.contains(EventType::Deleted) {
                        out.push((Arc::clone(&self.workflows[*w]), EventType::Deleted));
                    }
                }
            }
            _ => {
                for (w, events) in in_new {
                    if events.contains(kind) {
                        out.push((Arc::clone(&self.workflows[w]), kind));
                    }
                }
            }
        }
        out
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
