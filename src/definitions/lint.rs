//! Warnings: definitions that are valid but almost certainly not what the
//! author meant. `validate --strict` turns them into failures.

use serde_json::{Value, json};

use super::doc::{Doc, at};
use super::model::{Action, StepKind, Workflow};
use super::yaml::Target;
use crate::events::{EventType, path_fields};

pub fn check_workflow(doc: &mut Doc<'_>, workflow: &Workflow, ptr: &[String]) {
    dead_patterns(doc, workflow, ptr);
    self_triggering_writes(doc, workflow, ptr);
}

/// A pattern that cannot match any file event.
fn dead_patterns(doc: &mut Doc<'_>, workflow: &Workflow, ptr: &[String]) {
    for (t, trigger) in workflow.triggers.iter().enumerate() {
        for (p, pattern) in trigger.patterns.iter().enumerate() {
            // For a lone string, the extra index resolves to the string itself.
            let p_ptr = at(ptr, &[&"on", &t, &"pattern", &p]);
            let reason = if pattern.rooted.ends_with('/') {
                Some(
                    "it ends with `/`, so it matches directories, and events are only for files"
                        .to_owned(),
                )
            } else if crate::datadir::is_state_path(&pattern.rooted) {
                Some(format!(
                    "`{}/` is nexusd's own state and never produces events",
                    crate::datadir::STATE_VPATH
                ))
            } else {
                let sample = pattern.sample_path();
                trigger
                    .ignore
                    .iter()
                    .find(|i| covers(i, pattern) && i.is_match(&sample))
                    .map(|i| format!("every path it matches is ignored by `{}`", i.text))
            };
            if let Some(reason) = reason {
                doc.warning(
                    &p_ptr,
                    Target::Value,
                    format!(
                        "pattern `{}` can never match a file: {reason}",
                        pattern.text
                    ),
                );
            }
        }
    }
}

/// An ignore pattern covers a trigger pattern when it is the same glob or
/// `**`-rooted catch-all; anything finer is left alone (no false alarms).
fn covers(ignore: &crate::pattern::Pattern, pattern: &crate::pattern::Pattern) -> bool {
    ignore.rooted == pattern.rooted || ignore.rooted == "/**" || ignore.rooted == "/**/*"
}

/// A built-in write whose target the workflow's own trigger matches: each
/// run would start the next until the chain-depth guard stops it.
fn self_triggering_writes(doc: &mut Doc<'_>, workflow: &Workflow, ptr: &[String]) {
    for (s, step) in workflow.steps.iter().enumerate() {
        let StepKind::Action(action) = &step.kind else {
            continue;
        };
        let Some(target) = action.written_path() else {
            continue;
        };
        let field = match action {
            Action::Copy { .. } | Action::Move { .. } => "to",
            _ => "path",
        };
        for trigger in &workflow.triggers {
            let writes_fire = trigger.events.contains(EventType::Created)
                || trigger.events.contains(EventType::Updated)
                || (trigger.events.contains(EventType::Moved)
                    && matches!(action, Action::Move { .. }));
            if !writes_fire {
                continue;
            }
            for pattern in &trigger.patterns {
                let sample = pattern.sample_path();
                let Ok(written) = target.render(&sample_context(workflow, &sample)) else {
                    continue;
                };
                let hit = trigger.patterns.iter().find(|p| p.is_match(&written));
                let ignored = trigger.ignore.iter().any(|i| i.is_match(&written));
                if let (Some(hit), false) = (hit, ignored) {
                    doc.warning(
                        &at(ptr, &[&"steps", &s, &"with", &field]),
                        Target::Value,
                        format!(
                            "step `{}` writes `{written}` (for an event on `{sample}`), which this workflow's own pattern `{}` matches: each run would start another until `--max-chain-depth` stops it; add an `ignore:` or write elsewhere",
                            step.name, hit.text
                        ),
                    );
                    return;
                }
            }
        }
    }
}

fn sample_context(workflow: &Workflow, path: &str) -> Value {
    let mut event = path_fields(path);
    event.insert("id".into(), "evt_sample".into());
    event.insert("type".into(), "file.created".into());
    event.insert("old_path".into(), Value::Null);
    event.insert("abs_path".into(), format!("/data{path}").into());
    event.insert("size".into(), 0.into());
    event.insert("mtime".into(), "1970-01-01T00:00:00Z".into());
    event.insert("timestamp".into(), "1970-01-01T00:00:00Z".into());
    json!({
        "event": event,
        "workflow": {"name": workflow.name},
        "run": {"id": "run_sample", "attempt": 1},
        "steps": {},
        "secrets": {},
    })
}
