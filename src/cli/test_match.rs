//! `nexusd test-match`: "why didn't my file trigger?", answered offline.

use std::process::ExitCode;

use serde_json::json;

use super::{Output, TestMatchArgs};
use crate::definitions::load_paths;
use crate::definitions::model::Workflow;
use crate::matching::{Decision, Matcher};

pub fn run(args: &TestMatchArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_paths(&args.source.paths, &args.source.limits());
    if loaded.diagnostics.has_errors() {
        eprint!("{}", loaded.diagnostics);
        anyhow::bail!("the definitions are invalid: fix the errors above (see `nexusd validate`)");
    }
    let path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let set = &loaded.set;
    let decisions = Matcher::new(set).explain(set, args.event, &path);
    let rows: Vec<(&Workflow, &Decision)> = set.workflows.iter().zip(&decisions).collect();
    match args.output {
        Output::Table => print_table(&rows),
        Output::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|(w, d)| json!({"workflow": w.name, "matched": d.matched(), "reason": reason(w, d)}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"event": args.event.as_str(), "path": path, "results": items})
                )?
            );
        }
    }
    let any = decisions.iter().any(Decision::matched);
    Ok(if any {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(rows: &[(&Workflow, &Decision)]) {
    let width = rows
        .iter()
        .map(|(w, _)| w.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!("{:<width$}  {:<8}  REASON", "WORKFLOW", "RESULT");
    for (w, d) in rows {
        let result = if d.matched() { "run" } else { "no run" };
        println!("{:<width$}  {:<8}  {}", w.name, result, reason(w, d));
    }
}

fn reason(w: &Workflow, d: &Decision) -> String {
    match d {
        Decision::Matched { pattern, .. } => format!("pattern `{pattern}` matched"),
        Decision::Ignored { pattern } => format!("ignored by `{pattern}`"),
        Decision::EventTypeNotListed => {
            let listed: Vec<String> = w.triggers.iter().map(|t| t.events.to_string()).collect();
            format!("event type not listed (triggers on {})", listed.join("; "))
        }
        Decision::NoPatternMatched => {
            let patterns: Vec<&str> = w
                .triggers
                .iter()
                .flat_map(|t| t.patterns.iter().map(|p| p.text.as_str()))
                .collect();
            format!("no pattern matched (patterns: {})", patterns.join(", "))
        }
    }
}
