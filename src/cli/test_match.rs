//! `nexusd test-match`: "why didn't my file trigger?", answered offline.

use std::process::ExitCode;

use serde_json::json;

use super::{Output, TestMatchArgs};
use crate::definitions::load_paths;
use crate::definitions::model::Workflow;
use crate::events::EventType;
use crate::matching::{Matcher, Reason, Scope};

pub fn run(args: &TestMatchArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_paths(&args.source.paths, &args.source.limits());
    if loaded.diagnostics.has_errors() {
        eprint!("{}", loaded.diagnostics);
        anyhow::bail!("the definitions are invalid: fix the errors above (see `nexusd validate`)");
    }
    let rooted = |p: &str| {
        if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("/{p}")
        }
    };
    let path = rooted(&args.path);
    let old_path = args.old_path.as_deref().map(rooted);
    match (args.event, &old_path) {
        (EventType::Moved, None) => {
            anyhow::bail!(
                "`--event file.moved` needs `--old-path`: the path the file was moved from"
            )
        }
        (kind, Some(_)) if kind != EventType::Moved => {
            anyhow::bail!("`--old-path` is for `--event file.moved` only")
        }
        _ => {}
    }
    let set = loaded.set;
    let matcher = Matcher::new(set);
    let verdict = matcher.decide(args.event, &path, old_path.as_deref(), Scope::All);
    let mut rows: Vec<Row> = verdict
        .starts
        .iter()
        .map(|s| Row {
            workflow: s.workflow,
            sees: Some(s.sees),
            reason: &s.reason,
        })
        .chain(verdict.misses.iter().map(|(w, reason)| Row {
            workflow: *w,
            sees: None,
            reason,
        }))
        .collect();
    rows.sort_by_key(|r| r.workflow);
    let names = &matcher.defs().workflows;
    match args.output {
        Output::Table => print_table(names, &rows),
        Output::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "workflow": names[r.workflow].name,
                        "matched": r.sees.is_some(),
                        "sees": r.sees.map(EventType::as_str),
                        "reason": r.reason.to_string(),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "event": args.event.as_str(),
                    "path": path,
                    "old_path": old_path,
                    "results": items,
                }))?
            );
        }
    }
    Ok(if verdict.starts.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One workflow's line: whether it runs (and the type it sees), and why.
struct Row<'a> {
    workflow: usize,
    sees: Option<EventType>,
    reason: &'a Reason,
}

fn print_table(workflows: &[Workflow], rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| workflows[r.workflow].name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!("{:<width$}  {:<8}  REASON", "WORKFLOW", "RESULT");
    for r in rows {
        let result = if r.sees.is_some() { "run" } else { "no run" };
        println!(
            "{:<width$}  {:<8}  {}",
            workflows[r.workflow].name, result, r.reason
        );
    }
}
