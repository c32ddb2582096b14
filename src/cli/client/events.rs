//! `events`: the decision log.

use std::process::ExitCode;

use reqwest::Method;

use super::{Client, block_on, cell, enc, exit_code, post_each, print_structured, short_time};
use crate::api::{DecisionKind, EventList, ReplayAnswer, ReplayRequest};
use crate::cli::{EventsCommand, OutputFormat};

pub fn events(command: EventsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let (path, since, limit, client, output) = match command {
            EventsCommand::List {
                path,
                since,
                limit,
                client,
                output,
            } => (path, since, limit, client, output),
            EventsCommand::Replay {
                ids,
                dry_run,
                client,
                output,
            } => return replay(&Client::new(&client)?, &ids, dry_run, output).await,
        };
        let c = Client::new(&client)?;
        let mut url = format!("/v1/events?limit={limit}");
        if let Some(p) = path {
            url.push_str(&format!("&path={}", enc(&p)));
        }
        if let Some(t) = since {
            url.push_str(&format!("&since={}", enc(&t)));
        }
        let v: EventList = c.call(Method::GET, &url, None).await?;
        if print_structured(output, &v)? {
            return Ok(ExitCode::SUCCESS);
        }
        for e in &v.events {
            let moved = match &e.old_path {
                Some(old) => format!(" (from {old})"),
                None => String::new(),
            };
            println!(
                "{}  {}  {}{moved}",
                short_time(e.observed_at.as_deref()),
                e.kind,
                e.path
            );
            if e.decisions.is_empty() {
                println!("    no workflow's patterns match this path");
            }
            for d in &e.decisions {
                let what = match d.decision {
                    DecisionKind::NotMatched => {
                        format!("not run: {}", cell(d.reason.as_deref()))
                    }
                    DecisionKind::Run | DecisionKind::Skipped => {
                        let status = d.run_status.map_or("recorded", |s| s.as_str());
                        let reason = d
                            .reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default();
                        format!("run {} {status}{reason}", cell(d.run.as_deref()))
                    }
                };
                println!("    {}: {what}", d.workflow);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Replays each event: a table per event like `test-match`'s (and the run
/// each started); one that cannot be is said so, the others still are,
/// and the exit status is then 1.
async fn replay(
    c: &Client,
    ids: &[String],
    dry_run: bool,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let route = |id: &str| format!("/v1/events/{}/replay", enc(id));
    let (answers, refused) =
        post_each::<ReplayAnswer>(c, ids, route, &ReplayRequest { dry_run }).await;
    if !print_structured(output, &answers)? {
        for a in &answers {
            match &a.replayed_as {
                Some(new) => println!("event {} replayed as {new}", a.event),
                None if a.dry_run => println!("event {} (dry run: nothing started)", a.event),
                None => println!("event {}: nothing runs", a.event),
            }
            let width = a
                .results
                .iter()
                .map(|r| r.workflow.len())
                .max()
                .unwrap_or(8)
                .max(8);
            println!("{:<width$}  {:<8}  REASON", "WORKFLOW", "RESULT");
            for r in &a.results {
                let result = match (&r.run, r.matched) {
                    (Some(run), _) => run.clone(),
                    (None, true) => "run".to_owned(),
                    (None, false) => "no run".to_owned(),
                };
                println!("{:<width$}  {:<8}  {}", r.workflow, result, r.reason);
            }
        }
    }
    Ok(exit_code(refused))
}
