//! `events`: the decision log.

use std::process::ExitCode;

use reqwest::Method;

use super::{Client, block_on, cell, enc, print_structured, short_time};
use crate::api::{DecisionKind, EventList};
use crate::cli::EventsCommand;

pub fn events(command: EventsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let EventsCommand::List {
            path,
            since,
            limit,
            client,
            output,
        } = command;
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
