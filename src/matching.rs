//! The one matcher that decides which workflows an event starts, and why
//! the others near it do not.
//!
//! All trigger patterns of all workflows are compiled into one `GlobSet`, so
//! an event costs one match however many workflows there are; the per-trigger
//! event types and ignore patterns are checked only for the candidates.

use globset::{GlobSet, GlobSetBuilder};
use std::collections::HashMap;

use crate::definitions::model::DefinitionSet;
use crate::events::EventType;

/// Why a workflow does or does not run for an event: the one set of texts
/// the decision log, `test-match` and the API give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A pattern of a trigger listing the event type matched.
    Matched {
        pattern: String,
    },
    /// A move from outside the workflow's patterns into them: it sees a
    /// `file.created` of the new path.
    MovedIn {
        pattern: String,
    },
    /// A move out of the workflow's patterns: it sees a `file.deleted` of
    /// the old path.
    MovedOut {
        pattern: String,
    },
    Ignored {
        pattern: String,
    },
    /// The patterns matched, but no such trigger lists the type the
    /// workflow would see.
    EventTypeNotListed {
        kind: EventType,
        listed: Vec<String>,
    },
    NoPatternMatched {
        patterns: Vec<String>,
    },
}

impl Reason {
    pub fn matched(&self) -> bool {
        matches!(
            self,
            Reason::Matched { .. } | Reason::MovedIn { .. } | Reason::MovedOut { .. }
        )
    }

    /// Which explanation to keep when several triggers speak: a match
    /// wins, then the most specific reason for not matching.
    fn rank(&self) -> u8 {
        match self {
            Reason::Matched { .. } | Reason::MovedIn { .. } | Reason::MovedOut { .. } => 3,
            Reason::Ignored { .. } => 2,
            Reason::EventTypeNotListed { .. } => 1,
            Reason::NoPatternMatched { .. } => 0,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Matched { pattern } => write!(f, "pattern `{pattern}` matched"),
            Reason::MovedIn { pattern } => write!(
                f,
                "moved in: pattern `{pattern}` matched the new path (seen as file.created)"
            ),
            Reason::MovedOut { pattern } => write!(
                f,
                "moved out: pattern `{pattern}` matched the old path (seen as file.deleted)"
            ),
            Reason::Ignored { pattern } => write!(f, "ignored by `{pattern}`"),
            Reason::EventTypeNotListed { kind, listed } => write!(
                f,
                "event type {kind} not listed (triggers on {})",
                listed.join("; ")
            ),
            Reason::NoPatternMatched { patterns } => {
                write!(f, "no pattern matched (patterns: {})", patterns.join(", "))
            }
        }
    }
}

/// A workflow an event starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Its index in the definition set.
    pub workflow: usize,
    /// The event type it sees: a move across its patterns' edge is a
    /// creation (moved in) or a deletion (moved out) for it.
    pub sees: EventType,
    pub reason: Reason,
}

/// What one event does: the workflows it starts, and why each other
/// workflow considered does not run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub starts: Vec<Start>,
    /// `(workflow index, why not)`, in definition order.
    pub misses: Vec<(usize, Reason)>,
}

/// Which workflows are considered for the misses of a [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Those some pattern of which matched a path of the event: what the
    /// decision log keeps.
    Near,
    /// Every workflow: what `test-match` shows.
    All,
}

/// A definition set compiled for matching. Patterns that start with
/// literal directories (`/inbox/2024/*.txt`) are filed under that
/// directory, so an event looks only at the patterns of its own ancestors;
/// the rest (`**/*.json`) go into one `GlobSet`.
#[derive(Debug, Clone)]
pub struct Matcher {
    defs: DefinitionSet,
    /// The patterns without a literal leading directory.
    set: GlobSet,
    /// For each glob in `set`, its index in `owners`.
    set_owners: Vec<usize>,
    /// Patterns by their literal leading directory (`/inbox/2024`).
    by_dir: HashMap<String, Vec<usize>>,
    /// Every pattern: (workflow index, trigger index, pattern index).
    owners: Vec<(usize, usize, usize)>,
}

/// The literal directory a rooted pattern starts with: its leading segments
/// without glob syntax, the last segment excluded. `None` when the first
/// segment already has wildcards.
fn literal_dir(rooted: &str) -> Option<String> {
    let segments: Vec<&str> = rooted.split('/').skip(1).collect();
    let literal = |s: &&&str| !s.contains(['*', '?', '[', ']', '{', '}', '\\']);
    let count = segments[..segments.len().saturating_sub(1)]
        .iter()
        .take_while(literal)
        .count();
    (count > 0).then(|| format!("/{}", segments[..count].join("/")))
}

impl Matcher {
    pub fn new(defs: DefinitionSet) -> Matcher {
        let mut builder = GlobSetBuilder::new();
        let mut owners = Vec::new();
        let mut set_owners = Vec::new();
        let mut by_dir: HashMap<String, Vec<usize>> = HashMap::new();
        for (w, workflow) in defs.workflows.iter().enumerate() {
            for (t, trigger) in workflow.triggers.iter().enumerate() {
                for (p, pattern) in trigger.patterns.iter().enumerate() {
                    match literal_dir(&pattern.rooted) {
                        Some(dir) => by_dir.entry(dir).or_default().push(owners.len()),
                        None => {
                            builder.add(pattern.glob.clone());
                            set_owners.push(owners.len());
                        }
                    }
                    owners.push((w, t, p));
                }
            }
        }
        // Each glob compiled alone above; a set of valid globs always builds.
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        Matcher {
            defs,
            set,
            set_owners,
            by_dir,
            owners,
        }
    }

    /// The definitions this matcher was compiled from.
    pub fn defs(&self) -> &DefinitionSet {
        &self.defs
    }

    /// The patterns (indexes in `owners`) that match `path`, in order.
    fn hits(&self, path: &str) -> Vec<usize> {
        let mut out: Vec<usize> = if self.set_owners.is_empty() {
            Vec::new()
        } else {
            self.set
                .matches(path)
                .into_iter()
                .map(|i| self.set_owners[i])
                .collect()
        };
        if !self.by_dir.is_empty() {
            // Every ancestor directory of the path: /a, /a/b, ...
            let mut end = 0;
            while let Some(next) = path[end + 1..].find('/') {
                end += next + 1;
                if let Some(candidates) = self.by_dir.get(&path[..end]) {
                    for &i in candidates {
                        let (w, t, p) = self.owners[i];
                        if self.defs.workflows[w].triggers[t].patterns[p].is_match(path) {
                            out.push(i);
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The indexes of the workflows an event of `kind` on `path` starts,
    /// each once (no move rule: the hot path of the benchmark).
    pub fn matching(&self, kind: EventType, path: &str) -> Vec<usize> {
        let mut hits = Vec::new();
        for i in self.hits(path) {
            let (w, t, _) = self.owners[i];
            let trigger = &self.defs.workflows[w].triggers[t];
            if !hits.contains(&w)
                && trigger.events.contains(kind)
                && !trigger.ignore.iter().any(|p| p.is_match(path))
            {
                hits.push(w);
            }
        }
        hits.sort_unstable();
        hits
    }

    /// The workflows with a trigger whose patterns match `path` and whose
    /// ignores do not.
    fn within(&self, path: &str, hits: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        for &i in hits {
            let (w, t, _) = self.owners[i];
            let trigger = &self.defs.workflows[w].triggers[t];
            if !out.contains(&w) && !trigger.ignore.iter().any(|p| p.is_match(path)) {
                out.push(w);
            }
        }
        out
    }

    /// The best reason per workflow some pattern of which matches `path`
    /// (the patterns `hits`), the event type each sees given by `sees`,
    /// merged into `best`.
    fn judge(
        &self,
        path: &str,
        hits: &[usize],
        sees: impl Fn(usize) -> EventType,
        best: &mut Vec<(usize, EventType, Reason)>,
    ) {
        for &i in hits {
            let (w, t, p) = self.owners[i];
            let kind = sees(w);
            let trigger = &self.defs.workflows[w].triggers[t];
            let reason = if let Some(ignored) = trigger.ignore.iter().find(|i| i.is_match(path)) {
                Reason::Ignored {
                    pattern: ignored.text.clone(),
                }
            } else if !trigger.events.contains(kind) {
                Reason::EventTypeNotListed {
                    kind,
                    listed: self.defs.workflows[w]
                        .triggers
                        .iter()
                        .map(|t| t.events.to_string())
                        .collect(),
                }
            } else {
                Reason::Matched {
                    pattern: trigger.patterns[p].text.clone(),
                }
            };
            match best.iter_mut().find(|(o, _, _)| *o == w) {
                Some((_, k, old)) if reason.rank() > old.rank() => {
                    *k = kind;
                    *old = reason;
                }
                Some(_) => {}
                None => best.push((w, kind, reason)),
            }
        }
    }

    /// What an event does: which workflows it starts, with the event type
    /// each sees, and why each other workflow in `scope` does not run.
    ///
    /// The move rule: a `file.moved` is a move for a workflow whose
    /// patterns cover both paths, a `file.created` of the new path for one
    /// they cover only there, and a `file.deleted` of the old path for one
    /// they cover only there.
    pub fn decide(
        &self,
        kind: EventType,
        path: &str,
        old_path: Option<&str>,
        scope: Scope,
    ) -> Verdict {
        let mut best: Vec<(usize, EventType, Reason)> = Vec::new();
        match (kind, old_path) {
            (EventType::Moved, Some(old)) => {
                let (new_hits, old_hits) = (self.hits(path), self.hits(old));
                let was_in = self.within(old, &old_hits);
                let is_in = self.within(path, &new_hits);
                self.judge(
                    path,
                    &new_hits,
                    |w| {
                        if was_in.contains(&w) {
                            EventType::Moved
                        } else {
                            EventType::Created
                        }
                    },
                    &mut best,
                );
                // The old path speaks for the workflows the file left.
                let left: Vec<usize> = old_hits
                    .into_iter()
                    .filter(|&i| !is_in.contains(&self.owners[i].0))
                    .collect();
                self.judge(old, &left, |_| EventType::Deleted, &mut best);
                for (_, k, reason) in &mut best {
                    if let Reason::Matched { pattern } = reason {
                        let pattern = std::mem::take(pattern);
                        *reason = match k {
                            EventType::Created => Reason::MovedIn { pattern },
                            EventType::Deleted => Reason::MovedOut { pattern },
                            _ => Reason::Matched { pattern },
                        };
                    }
                }
            }
            _ => self.judge(path, &self.hits(path), |_| kind, &mut best),
        }
        if scope == Scope::All {
            for (w, workflow) in self.defs.workflows.iter().enumerate() {
                if !best.iter().any(|(o, _, _)| *o == w) {
                    let patterns = workflow
                        .triggers
                        .iter()
                        .flat_map(|t| t.patterns.iter().map(|p| p.text.clone()))
                        .collect();
                    best.push((w, kind, Reason::NoPatternMatched { patterns }));
                }
            }
        }
        best.sort_by_key(|(w, _, _)| *w);
        let mut verdict = Verdict::default();
        for (workflow, sees, reason) in best {
            if reason.matched() {
                verdict.starts.push(Start {
                    workflow,
                    sees,
                    reason,
                });
            } else {
                verdict.misses.push((workflow, reason));
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_filed_under_their_literal_directory() {
        assert_eq!(
            literal_dir("/inbox/2024/*.txt").as_deref(),
            Some("/inbox/2024")
        );
        assert_eq!(literal_dir("/a/b.txt").as_deref(), Some("/a"));
        assert_eq!(literal_dir("/w/c/**/*.txt").as_deref(), Some("/w/c"));
        assert_eq!(literal_dir("/**/*.json"), None);
        assert_eq!(literal_dir("/*.txt"), None);
        assert_eq!(literal_dir("/a[b]/c.txt"), None);
    }

    #[test]
    fn the_directory_index_finds_what_a_full_scan_finds() {
        let yaml = |name: &str, pattern: &str| {
            format!(
                "---\napiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  on: [{{event: file.created, pattern: \"{pattern}\"}}]\n  steps: [{{name: s, action: log, with: {{message: x}}}}]\n"
            )
        };
        let patterns = [
            "/a/*.txt",
            "/a/b/**/*.txt",
            "**/*.txt",
            "/a/b/c.txt",
            "/x/*",
            "/a/{b,c}/*.md",
            "/*.txt",
        ];
        let text: String = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| yaml(&format!("w{i}"), p))
            .collect();
        let loaded = crate::definitions::load_text(
            std::path::Path::new("t.yaml"),
            text.as_bytes(),
            &Default::default(),
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let set = loaded.set;
        let m = Matcher::new(set.clone());
        for path in [
            "/a/x.txt",
            "/a/b/c.txt",
            "/a/b/d/e.txt",
            "/a/c/r.md",
            "/x/y",
            "/top.txt",
            "/q/r.txt",
            "/a",
        ] {
            let brute: Vec<usize> = set
                .workflows
                .iter()
                .enumerate()
                .filter(|(_, w)| w.triggers[0].patterns[0].is_match(path))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(m.matching(EventType::Created, path), brute, "{path}");
        }
    }
}
