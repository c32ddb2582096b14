//! Raw definitions to compiled ones: names, durations, globs, event types,
//! retry policies and templates checked, every problem reported with its
//! position. Structs are destructured field by field so a new raw field
//! cannot be silently ignored.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::diagnostics::Diagnostics;
use super::duration::parse_duration;
use super::model::{Burst, Kind, RetryPolicy, SourceRef, Trigger, Workflow};
use super::names;
use super::raw::{
    RawBurst, RawDocument, RawKind, RawMetadata, RawPipelineSpec, RawRetry, RawStage, RawTrigger,
    RawWorkflowSpec,
};
use super::steps::compile_steps;
use super::yaml::{Located, Node, Target};
use crate::events::{EventSet, EventType};
use crate::pattern::Pattern;

/// A JSON pointer into the document being compiled.
pub type Ptr = Vec<String>;

/// Appends segments to a pointer.
pub fn at(base: &[String], more: &[&dyn ToString]) -> Ptr {
    let mut p = base.to_vec();
    p.extend(more.iter().map(|s| s.to_string()));
    p
}

/// The document being compiled, for positions and problems.
pub struct Doc<'a> {
    pub file: &'a Path,
    pub root: &'a Located<Node>,
    pub diags: &'a mut Diagnostics,
}

impl Doc<'_> {
    pub fn error(&mut self, ptr: &[String], target: Target, message: impl Into<String>) {
        let pos = self.root.position(ptr, target);
        self.diags.error(self.file, pos, message);
    }

    pub fn warning(&mut self, ptr: &[String], target: Target, message: impl Into<String>) {
        let pos = self.root.position(ptr, target);
        self.diags.warning(self.file, pos, message);
    }

    fn source(&self) -> SourceRef {
        SourceRef {
            file: self.file.to_path_buf(),
            line: self.root.pos.line,
            column: self.root.pos.col,
        }
    }

    /// Parses a duration field, reporting a bad one.
    pub fn duration(&mut self, text: Option<&str>, ptr: Ptr, default: Duration) -> Duration {
        match text.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.error(&ptr, Target::Value, message);
                default
            }
        }
    }
}

/// Compiles one document already checked by the schema. A `Pipeline` yields
/// one workflow per stage.
pub fn compile_document(doc: &mut Doc<'_>, json: Value) -> Vec<Workflow> {
    let Some(raw) = typed::<RawDocument>(doc, json, &[]) else {
        return Vec::new();
    };
    let RawDocument {
        api_version,
        kind,
        metadata,
        spec,
    } = raw;
    if api_version != "nexus/v1" {
        doc.error(
            &["apiVersion".into()],
            Target::Value,
            format!("unsupported apiVersion `{api_version}`, expected `nexus/v1`"),
        );
    }
    if let Some(message) = names::check_name(&metadata.name) {
        doc.error(&at(&[], &[&"metadata", &"name"]), Target::Value, message);
    }
    match kind {
        RawKind::Workflow => {
            let spec_ptr: Ptr = vec!["spec".into()];
            let Some(spec) = typed::<RawWorkflowSpec>(doc, spec, &spec_ptr) else {
                return Vec::new();
            };
            let header = Header {
                name: metadata.name.clone(),
                kind: Kind::Workflow,
                pipeline: None,
                metadata: &metadata,
            };
            compile_workflow(doc, header, spec, &spec_ptr)
                .into_iter()
                .collect()
        }
        RawKind::Pipeline => {
            let Some(spec) = typed::<RawPipelineSpec>(doc, spec, &["spec".into()]) else {
                return Vec::new();
            };
            compile_pipeline(doc, &metadata, spec)
        }
    }
}

/// Deserializes a typed value; a failure (which the schema should have
/// caught) is reported at the path serde names.
fn typed<T: DeserializeOwned>(doc: &mut Doc<'_>, json: Value, base: &[String]) -> Option<T> {
    match serde_json::from_value::<T>(json) {
        Ok(v) => Some(v),
        Err(e) => {
            doc.error(base, Target::Value, e.to_string());
            None
        }
    }
}

struct Header<'a> {
    name: String,
    kind: Kind,
    pipeline: Option<String>,
    metadata: &'a RawMetadata,
}

fn compile_pipeline(
    doc: &mut Doc<'_>,
    metadata: &RawMetadata,
    spec: RawPipelineSpec,
) -> Vec<Workflow> {
    let RawPipelineSpec { stages } = spec;
    if stages.is_empty() {
        doc.error(
            &at(&["spec".into()], &[&"stages"]),
            Target::Value,
            "`stages` is empty: give at least one",
        );
    }
    let mut seen: Vec<(String, Ptr)> = Vec::new();
    let mut out = Vec::new();
    for (i, stage) in stages.into_iter().enumerate() {
        let RawStage { name, spec } = stage;
        let ptr = at(&["spec".into()], &[&"stages", &i]);
        let name_ptr = at(&ptr, &[&"name"]);
        if let Some(message) = names::check_name(&name) {
            doc.error(
                &name_ptr,
                Target::Value,
                message.replace("invalid name", "invalid stage name"),
            );
        }
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            let first = doc.root.position(first, Target::Value);
            doc.error(
                &name_ptr,
                Target::Value,
                format!("duplicate stage name `{name}` (first at {first})"),
            );
        }
        seen.push((name.clone(), name_ptr));
        let header = Header {
            name: format!("{}/{name}", metadata.name),
            kind: Kind::Pipeline,
            pipeline: Some(metadata.name.clone()),
            metadata,
        };
        out.extend(compile_workflow(doc, header, spec, &ptr));
    }
    out
}

fn compile_workflow(
    doc: &mut Doc<'_>,
    header: Header<'_>,
    spec: RawWorkflowSpec,
    ptr: &[String],
) -> Option<Workflow> {
    let RawWorkflowSpec {
        on,
        concurrency,
        timeout,
        retry,
        secrets,
        steps,
    } = spec;
    let errors_before = doc.diags.errors().count();
    if on.is_empty() {
        doc.error(
            &at(ptr, &[&"on"]),
            Target::Value,
            "`on` is empty: give at least one trigger",
        );
    }
    if steps.is_empty() {
        doc.error(
            &at(ptr, &[&"steps"]),
            Target::Value,
            "`steps` is empty: give at least one",
        );
    }
    let triggers: Vec<Trigger> = on
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| compile_trigger(doc, t, &at(ptr, &[&"on", &i])))
        .collect();
    let timeout = timeout
        .as_deref()
        .map(|t| doc.duration(Some(t), at(ptr, &[&"timeout"]), Duration::ZERO));
    let retry = match retry {
        Some(r) => compile_retry(doc, r, &at(ptr, &[&"retry"])),
        None => RetryPolicy::default(),
    };
    check_secret_names(doc, &secrets, ptr);
    if concurrency == Some(0) {
        doc.error(
            &at(ptr, &[&"concurrency"]),
            Target::Value,
            "`concurrency` must be at least 1",
        );
    }
    let steps = compile_steps(doc, steps, &secrets, &at(ptr, &[&"steps"]));
    let Header {
        name,
        kind,
        pipeline,
        metadata,
    } = header;
    let workflow = Workflow {
        name,
        kind,
        pipeline,
        description: metadata.description.clone(),
        labels: metadata.labels.clone(),
        triggers,
        concurrency,
        timeout,
        retry,
        secrets,
        steps,
        source: doc.source(),
    };
    if doc.diags.errors().count() > errors_before {
        return None;
    }
    super::lint::check_workflow(doc, &workflow, ptr);
    Some(workflow)
}

fn check_secret_names(doc: &mut Doc<'_>, secrets: &[String], ptr: &[String]) {
    for (i, s) in secrets.iter().enumerate() {
        if secrets[..i].contains(s) {
            doc.error(
                &at(ptr, &[&"secrets", &i]),
                Target::Value,
                format!("secret `{s}` is declared twice"),
            );
        }
    }
}

fn compile_trigger(doc: &mut Doc<'_>, raw: RawTrigger, ptr: &[String]) -> Option<Trigger> {
    let RawTrigger {
        event,
        pattern,
        ignore,
        settle,
        on_burst,
    } = raw;
    let mut events = EventSet::default();
    for (i, name) in event.items() {
        let p = item_ptr(ptr, "event", i);
        match name.parse::<EventType>() {
            Ok(t) => events.insert(t),
            Err(message) => doc.error(&p, Target::Value, message),
        }
    }
    let patterns = compile_patterns(doc, pattern.items(), ptr, "pattern");
    let ignore_items: Vec<(Option<usize>, &str)> = ignore
        .iter()
        .enumerate()
        .map(|(i, s)| (Some(i), s.as_str()))
        .collect();
    let ignore = compile_patterns(doc, ignore_items, ptr, "ignore");
    let settle = doc.duration(
        settle.as_deref(),
        at(ptr, &[&"settle"]),
        Duration::from_millis(300),
    );
    Some(Trigger {
        events,
        patterns,
        ignore,
        settle,
        on_burst: match on_burst {
            Some(RawBurst::Queue) => Burst::Queue,
            Some(RawBurst::Coalesce) | None => Burst::Coalesce,
        },
    })
}

fn item_ptr(ptr: &[String], field: &str, index: Option<usize>) -> Ptr {
    match index {
        Some(i) => at(ptr, &[&field, &i]),
        None => at(ptr, &[&field]),
    }
}

fn compile_patterns(
    doc: &mut Doc<'_>,
    items: Vec<(Option<usize>, &str)>,
    ptr: &[String],
    field: &str,
) -> Vec<Pattern> {
    let mut out = Vec::new();
    for (i, text) in items {
        match Pattern::new(text) {
            Ok(p) => out.push(p),
            Err(message) => doc.error(&item_ptr(ptr, field, i), Target::Value, message),
        }
    }
    out
}

/// Compiles a retry policy (also used by steps).
pub fn compile_retry(doc: &mut Doc<'_>, raw: RawRetry, ptr: &[String]) -> RetryPolicy {
    let RawRetry {
        max_attempts,
        backoff,
        multiplier,
        max_backoff,
        non_retryable_exit_codes,
    } = raw;
    let defaults = RetryPolicy::default();
    if max_attempts == 0 {
        doc.error(
            &at(ptr, &[&"max_attempts"]),
            Target::Value,
            "`max_attempts` must be at least 1",
        );
    }
    let multiplier = multiplier.unwrap_or(defaults.multiplier);
    if !(multiplier.is_finite() && multiplier >= 1.0) {
        doc.error(
            &at(ptr, &[&"multiplier"]),
            Target::Value,
            "`multiplier` must be at least 1",
        );
    }
    let backoff = doc.duration(backoff.as_deref(), at(ptr, &[&"backoff"]), defaults.backoff);
    let max_backoff = doc.duration(
        max_backoff.as_deref(),
        at(ptr, &[&"max_backoff"]),
        defaults.max_backoff.max(backoff),
    );
    if max_backoff < backoff {
        doc.error(
            &at(ptr, &[&"max_backoff"]),
            Target::Value,
            "`max_backoff` is shorter than `backoff`",
        );
    }
    RetryPolicy {
        max_attempts: max_attempts.max(1),
        backoff,
        multiplier,
        max_backoff,
        non_retryable_exit_codes,
    }
}
