//! Raw definitions to compiled ones: names, durations, globs, event types,
//! retry policies and templates checked, every problem reported with its
//! position. Structs are destructured field by field so a new raw field
//! cannot be silently ignored.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::doc::{Doc, Ptr, at};
use super::model::{Burst, Kind, RetryPolicy, Trigger, Workflow};
use super::names;
use super::raw::{
    RawBurst, RawDocument, RawKind, RawMetadata, RawPipelineSpec, RawStage, RawTrigger,
    RawWorkflowSpec,
};
use super::retry::compile_retry;
use super::steps::{StepList, compile_steps};
use super::yaml::Target;
use crate::events::{EventSet, EventType};
use crate::pattern::Pattern;

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
        on_failure,
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
    let step_names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    let steps = compile_steps(doc, steps, &secrets, &at(ptr, &[&"steps"]), StepList::Steps);
    for (i, raw) in on_failure.iter().enumerate() {
        if step_names.contains(&raw.name) {
            doc.error(
                &at(ptr, &[&"on_failure", &i, &"name"]),
                Target::Value,
                format!(
                    "`on_failure` step `{}` has the name of a step of `steps`: give it a name of its own",
                    raw.name
                ),
            );
        }
    }
    let on_failure = compile_steps(
        doc,
        on_failure,
        &secrets,
        &at(ptr, &[&"on_failure"]),
        StepList::OnFailure,
    );
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
        any_node: super::model::any_node(&steps)
            && (on_failure.is_empty() || super::model::any_node(&on_failure)),
        steps,
        on_failure,
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
