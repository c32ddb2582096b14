//! Glob patterns on virtual paths, and the one matcher that decides which
//! workflows an event starts.
//!
//! All trigger patterns of all workflows are compiled into one `GlobSet`, so
//! an event costs one match however many workflows there are; the per-trigger
//! event types and ignore patterns are checked only for the candidates.

use std::collections::HashMap;
use std::sync::OnceLock;

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::definitions::model::{DefinitionSet, Workflow};
use crate::events::{EventSet, EventType};

/// A compiled glob and the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As written.
    pub text: String,
    /// Rooted at `/`.
    pub rooted: String,
    glob: Glob,
    /// Built on first use: compiling a regex is most of a glob's cost, and
    /// `validate` never needs most of them.
    matcher: OnceLock<GlobMatcher>,
}

impl Pattern {
    /// Compiles a trigger or ignore pattern: `*` and `?` stay within one
    /// segment, `**` spans segments and must be a whole segment, and a
    /// pattern without a leading `/` is rooted at `/`.
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty pattern: give a glob such as `/inbox/*.txt`".to_owned());
        }
        if text.contains('\0') {
            return Err(format!(
                "pattern `{}` holds a NUL byte",
                text.escape_debug()
            ));
        }
        let rooted = if text.starts_with('/') {
            text.to_owned()
        } else {
            format!("/{text}")
        };
        if let Some(seg) = rooted.split('/').find(|s| s.contains("**") && *s != "**") {
            return Err(format!(
                "invalid glob `{text}`: `**` must be a whole path segment (`{seg}`); write `**/{}` to match at any depth, or `*` within one segment",
                seg.replace("**", "*")
            ));
        }
        if rooted.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "invalid glob `{text}`: `.` and `..` segments never match, paths are normalized"
            ));
        }
        let glob = GlobBuilder::new(&rooted)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid glob `{text}`: {}", glob_reason(&e)))?;
        Ok(Pattern {
            text: text.to_owned(),
            matcher: OnceLock::new(),
            glob,
            rooted,
        })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.matcher
            .get_or_init(|| self.glob.compile_matcher())
            .is_match(path)
    }

    /// A path this pattern matches, built by filling its wildcards with
    /// plain text; used to reason about loops and dead patterns.
    pub fn sample_path(&self) -> String {
        let mut out = String::new();
        let mut chars = self.rooted.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    out.push('x');
                }
                '?' => out.push('x'),
                '[' => {
                    let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                    let first = class.trim_start_matches(['!', '^']).chars().next();
                    out.push(if class.starts_with(['!', '^']) {
                        '_'
                    } else {
                        first.unwrap_or('x')
                    });
                }
                '{' => {
                    let alt: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push_str(alt.split(',').next().unwrap_or_default());
                }
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    }
}

fn glob_reason(e: &globset::Error) -> String {
    let text = e.kind().to_string();
    text.trim_end_matches('.').to_owned()
}

/// Why a workflow does or does not run for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Matched { trigger: usize, pattern: String },
    EventTypeNotListed,
    NoPatternMatched,
    Ignored { pattern: String },
}

impl Decision {
    pub fn matched(&self) -> bool {
        matches!(self, Decision::Matched { .. })
    }
}

/// Every trigger of a definition set, compiled for matching. Patterns that
/// start with literal directories (`/inbox/2024/*.txt`) are filed under
/// that directory, so an event looks only at the patterns of its own
/// ancestors; the rest (`**/*.json`) go into one `GlobSet`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The patterns without a literal leading directory.
    set: GlobSet,
    /// For each glob in `set`, its index in `owners`.
    set_owners: Vec<usize>,
    /// Patterns by their literal leading directory (`/inbox/2024`).
    by_dir: HashMap<String, Vec<usize>>,
    /// Every pattern: (workflow index, trigger index, pattern index).
    owners: Vec<(usize, usize, usize)>,
    workflows: usize,
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
    pub fn new(defs: &DefinitionSet) -> Matcher {
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
            set,
            set_owners,
            by_dir,
            owners,
            workflows: defs.workflows.len(),
        }
    }

    /// The patterns (indexes in `owners`) that match `path`, in order.
    fn hits(&self, defs: &DefinitionSet, path: &str) -> Vec<usize> {
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
                        if defs.workflows[w].triggers[t].patterns[p].is_match(path) {
                            out.push(i);
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The indexes of the workflows this event starts, each once.
    pub fn matching(&self, defs: &DefinitionSet, event: EventType, path: &str) -> Vec<usize> {
        let mut hits = Vec::new();
        for i in self.hits(defs, path) {
            let (w, t, _) = self.owners[i];
            let trigger = &defs.workflows[w].triggers[t];
            if !hits.contains(&w)
                && trigger.events.contains(event)
                && !trigger.ignore.iter().any(|p| p.is_match(path))
            {
                hits.push(w);
            }
        }
        hits.sort_unstable();
        hits
    }

    /// Every workflow with a trigger whose patterns match `path` and whose
    /// ignores do not, with the union of those triggers' event types.
    pub fn candidates(&self, defs: &DefinitionSet, path: &str) -> Vec<(usize, EventSet)> {
        let mut out: Vec<(usize, EventSet)> = Vec::new();
        for i in self.hits(defs, path) {
            let (w, t, _) = self.owners[i];
            let trigger = &defs.workflows[w].triggers[t];
            if trigger.ignore.iter().any(|p| p.is_match(path)) {
                continue;
            }
            match out.iter_mut().find(|(o, _)| *o == w) {
                Some((_, set)) => trigger.events.iter().for_each(|e| set.insert(e)),
                None => out.push((w, trigger.events)),
            }
        }
        out.sort_by_key(|(w, _)| *w);
        out
    }

    /// The decision for every workflow, in definition order.
    /// The decisions for the workflows that some pattern of theirs matched
    /// (the others did not match at all): what the decision log keeps. One
    /// set match, as [`Matcher::candidates`].
    pub fn near(
        &self,
        defs: &DefinitionSet,
        event: EventType,
        path: &str,
    ) -> Vec<(usize, Decision)> {
        let mut out: Vec<(usize, Decision)> = Vec::new();
        for i in self.hits(defs, path) {
            let (w, t, p) = self.owners[i];
            let decision = decide(&defs.workflows[w], t, p, event, path);
            match out.iter_mut().find(|(o, _)| *o == w) {
                Some((_, old)) if rank(&decision) > rank(old) => *old = decision,
                Some(_) => {}
                None => out.push((w, decision)),
            }
        }
        out.sort_by_key(|(w, _)| *w);
        out
    }

    pub fn explain(&self, defs: &DefinitionSet, event: EventType, path: &str) -> Vec<Decision> {
        let mut decisions = vec![None; self.workflows];
        for i in self.hits(defs, path) {
            let (w, t, p) = self.owners[i];
            let decision = decide(&defs.workflows[w], t, p, event, path);
            let better = match (&decisions[w], &decision) {
                (None, _) => true,
                (Some(old), new) => rank(new) > rank(old),
            };
            if better {
                decisions[w] = Some(decision);
            }
        }
        decisions
            .into_iter()
            .map(|d| d.unwrap_or(Decision::NoPatternMatched))
            .collect()
    }
}

fn decide(workflow: &Workflow, t: usize, p: usize, event: EventType, path: &str) -> Decision {
    let trigger = &workflow.triggers[t];
    if let Some(ignored) = trigger.ignore.iter().find(|i| i.is_match(path)) {
        return Decision::Ignored {
            pattern: ignored.text.clone(),
        };
    }
    if !trigger.events.contains(event) {
        return Decision::EventTypeNotListed;
    }
    Decision::Matched {
        trigger: t,
        pattern: trigger.patterns[p].text.clone(),
    }
}

/// Which explanation to keep when several triggers speak: a match wins,
/// then the most specific reason for not matching.
fn rank(d: &Decision) -> u8 {
    match d {
        Decision::Matched { .. } => 3,
        Decision::Ignored { .. } => 2,
        Decision::EventTypeNotListed => 1,
        Decision::NoPatternMatched => 0,
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
        let m = Matcher::new(&set);
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
            assert_eq!(m.matching(&set, EventType::Created, path), brute, "{path}");
        }
    }

    #[test]
    fn globs_follow_the_spec_table() {
        let cases = [
            ("/workspace/uploads/*.txt", "/workspace/uploads/a.txt", true),
            (
                "/workspace/uploads/*.txt",
                "/workspace/uploads/sub/a.txt",
                false,
            ),
            ("**/*.meta.json", "/a/b/c.meta.json", true),
            ("**/*.meta.json", "/c.meta.json", true),
            (
                "/workspace/categorized/**/*.txt",
                "/workspace/categorized/long/a.txt",
                true,
            ),
            ("/docs/*.{txt,md}", "/docs/a.md", true),
            ("/docs/[a-c]?.txt", "/docs/b1.txt", true),
            ("/docs/[a-c]?.txt", "/docs/d1.txt", false),
            ("/docs/*", "/docs/.hidden", true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).unwrap().is_match(path),
                expected,
                "{pattern} {path}"
            );
        }
    }

    #[test]
    fn refuses_bad_globs() {
        assert!(
            Pattern::new("**.txt")
                .unwrap_err()
                .contains("`**` must be a whole path segment")
        );
        assert!(
            Pattern::new("/x/[a.txt")
                .unwrap_err()
                .starts_with("invalid glob `/x/[a.txt`")
        );
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("/a/../b").is_err());
    }

    #[test]
    fn samples_match_their_pattern() {
        for text in [
            "/workspace/uploads/*.txt",
            "**/*.meta.json",
            "/d/{a,b}/[0-9]?.log",
        ] {
            let p = Pattern::new(text).unwrap();
            assert!(p.is_match(&p.sample_path()), "{text}: {}", p.sample_path());
        }
    }
}
