//! `runs`: list (or follow) and inspect runs.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use reqwest::Method;

use super::{
    Client, block_on, cell, duration, enc, exit_code, post_each, print_structured, print_table,
    short_time,
};
use crate::api::{
    BulkCancelAnswer, BulkCancelRequest, BulkRerunAnswer, BulkRerunRequest, CancelAnswer, LogLine,
    LogStream, RerunAnswer, RerunRequest, RunChange, RunDetail, RunList, RunLogs,
};
use crate::cli::{OutputFormat, RunsCommand};
use crate::store::RunStatus;

pub(super) fn print_runs(v: &RunList, with_workflow: bool) {
    let rows: Vec<Vec<String>> = v
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![short_time(r.queued_at.as_deref())];
            if with_workflow {
                row.push(r.workflow.clone());
            }
            row.push(r.event.path.clone());
            row.push(duration(r.duration_ms));
            row.push(r.status.to_string());
            if with_workflow {
                row.push(r.id.clone());
            }
            row
        })
        .collect();
    if with_workflow {
        print_table(
            &["TIMESTAMP", "WORKFLOW", "FILE", "DURATION", "STATUS", "RUN"],
            &rows,
            &[19, 20, 28, 8, 9, 36],
        );
    } else {
        // The seed's fields, within 80 columns; `-o json` has the run ids.
        print_table(
            &["TIMESTAMP", "FILE", "DURATION", "STATUS"],
            &rows,
            &[19, 34, 8, 9],
        );
    }
}

pub fn runs(command: RunsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match command {
            RunsCommand::List {
                workflow,
                status,
                limit,
                follow,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let mut path = format!("/v1/runs?limit={limit}");
                if let Some(w) = &workflow {
                    path.push_str(&format!("&workflow={}", enc(w)));
                }
                if let Some(st) = status {
                    path.push_str(&format!("&status={}", enc(&st)));
                }
                if follow {
                    return follow_runs(&c, workflow.as_deref(), output).await;
                }
                let v: RunList = c.call(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                print_runs(&v, true);
            }
            RunsCommand::Logs {
                id,
                follow,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                return logs(&c, &id, follow, output).await;
            }
            RunsCommand::Get { id, client, output } => {
                let c = Client::new(&client)?;
                let v: RunDetail = c
                    .call(Method::GET, &format!("/v1/runs/{}", enc(&id)), None)
                    .await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let run = &v.run;
                println!("run:       {}", run.id);
                println!("workflow:  {}", run.workflow);
                println!("status:    {}", run.status);
                if let Some(reason) = &run.reason {
                    println!("reason:    {reason}");
                }
                if let Some(of) = &run.rerun_of {
                    println!("re-run of: {of}");
                }
                if !v.reruns.is_empty() {
                    println!("re-runs:   {}", v.reruns.join(", "));
                }
                println!("attempts:  {}", run.attempts);
                let e = &run.event;
                println!("event:     {} {} ({})", e.kind, e.path, e.id);
                if let Some(cause) = &e.caused_by_run {
                    println!("caused by: run {cause}");
                }
                if let Some(actor) = &e.actor {
                    println!("actor:     {actor}");
                }
                println!("queued:    {}", short_time(run.queued_at.as_deref()));
                println!("duration:  {}", duration(run.duration_ms));
                if let Some(error) = &run.error {
                    println!("error:     {error}");
                }
                let rows: Vec<Vec<String>> = v
                    .steps
                    .iter()
                    .map(|st| {
                        vec![
                            st.name.clone(),
                            st.status.to_string(),
                            cell(st.exit_code),
                            cell(st.error.as_deref()),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    println!();
                    print_table(&["STEP", "STATUS", "EXIT", "ERROR"], &rows, &[24, 9, 4, 40]);
                }
            }
            RunsCommand::Rerun {
                ids,
                from_failed,
                same_revision,
                workflow,
                status,
                since,
                dry_run,
                client,
                output,
            } => {
                let how = RerunRequest {
                    from_failed,
                    same_revision,
                };
                let c = Client::new(&client)?;
                return match workflow {
                    Some(w) => {
                        let body = BulkRerunRequest {
                            status: statuses(&status)?,
                            since,
                            from_failed,
                            same_revision,
                            dry_run,
                        };
                        rerun_bulk(&c, &w, &body, output).await
                    }
                    None => rerun_ids(&c, &ids, &how, output).await,
                };
            }
            RunsCommand::Cancel {
                ids,
                workflow,
                status,
                path,
                dry_run,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                return match workflow {
                    Some(w) => cancel_bulk(&c, &w, status, path, dry_run, output).await,
                    None => cancel_ids(&c, &ids, output).await,
                };
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `--status` values, as given (repeated or comma-separated).
fn statuses(given: &[String]) -> anyhow::Result<Vec<RunStatus>> {
    given
        .iter()
        .map(|s| RunStatus::parse(s.trim()).map_err(|e| anyhow!("--status: {e}")))
        .collect()
}

/// Cancels each run; one that cannot be (unknown, already final) is said
/// so and the others still are, and the exit code is then 1.
async fn cancel_ids(c: &Client, ids: &[String], output: OutputFormat) -> anyhow::Result<ExitCode> {
    let route = |id: &str| format!("/v1/runs/{}/cancel", enc(id));
    let (answers, refused) = post_each::<CancelAnswer>(c, ids, route, &serde_json::json!({})).await;
    if !print_structured(output, &answers)? {
        for a in &answers {
            println!("{}: cancelled (was {})", a.run, a.was);
        }
    }
    Ok(exit_code(refused))
}

/// Re-runs each run; one that cannot be is said so on stderr, the others
/// still are, and the exit code is then 1.
async fn rerun_ids(
    c: &Client,
    ids: &[String],
    how: &RerunRequest,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let route = |id: &str| format!("/v1/runs/{}/rerun", enc(id));
    let (answers, refused) = post_each::<RerunAnswer>(c, ids, route, how).await;
    if !print_structured(output, &answers)? {
        for a in &answers {
            let mut from = a
                .from_step
                .as_ref()
                .map(|s| format!(", from step `{s}`"))
                .unwrap_or_default();
            if let Some(n) = a.revision {
                from.push_str(&format!(", on revision {n}"));
            }
            println!("{}: re-run as {} ({}{from})", a.rerun_of, a.run, a.status);
        }
    }
    Ok(exit_code(refused))
}

async fn rerun_bulk(
    c: &Client,
    workflow: &str,
    body: &BulkRerunRequest,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let url = format!("/v1/workflows/{}/runs/rerun", enc(workflow));
    let v: BulkRerunAnswer = c.call_json(Method::POST, &url, body).await?;
    let refused = v.runs.iter().filter(|r| r.error.is_some()).count();
    let code = if refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    if print_structured(output, &v)? {
        return Ok(code);
    }
    if v.runs.is_empty() {
        println!("nothing to do: no run of `{workflow}` matches");
        return Ok(ExitCode::SUCCESS);
    }
    for r in &v.runs {
        let from = r
            .from_step
            .as_ref()
            .map(|s| format!(" from step `{s}`"))
            .unwrap_or_default();
        match (&r.run, &r.error) {
            (_, Some(e)) => eprintln!("{}: not re-run: {e}", r.rerun_of),
            (Some(run), None) => println!("{}: re-run as {run}{from}", r.rerun_of),
            (None, None) => println!("{}: would re-run{from}", r.rerun_of),
        }
    }
    let done = v.runs.len() - refused;
    if v.dry_run {
        println!("{done} run(s) would be re-run");
    } else {
        println!("{done} run(s) re-run");
    }
    Ok(code)
}

async fn cancel_bulk(
    c: &Client,
    workflow: &str,
    status: Vec<String>,
    path: Option<String>,
    dry_run: bool,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let body = BulkCancelRequest {
        status: statuses(&status)?,
        path,
        dry_run,
    };
    let url = format!("/v1/workflows/{}/runs/cancel", enc(workflow));
    let v: BulkCancelAnswer = c.call_json(Method::POST, &url, &body).await?;
    if print_structured(output, &v)? {
        return Ok(ExitCode::SUCCESS);
    }
    if v.runs.is_empty() {
        println!("nothing to do: no run of `{workflow}` matches");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if v.dry_run {
        "would cancel"
    } else {
        "cancelled"
    };
    for a in &v.runs {
        println!("{}: {verb} (was {})", a.run, a.was);
    }
    println!("{} run(s) {verb}", v.runs.len());
    Ok(ExitCode::SUCCESS)
}

/// Prints a line of a step's output: `STEP | LINE`, on stdout or stderr
/// as the step wrote it (`-o json`: the line's object, on stdout).
fn print_line(line: &LogLine, output: OutputFormat) -> anyhow::Result<()> {
    if output != OutputFormat::Table {
        let mut out = std::io::stdout();
        writeln!(out, "{}", serde_json::to_string(line)?)?;
        return Ok(out.flush()?);
    }
    let text = format!("{} | {}\n", line.step, line.line);
    match line.stream {
        LogStream::Stdout => {
            let mut out = std::io::stdout();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        LogStream::Stderr => std::io::stderr().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// `runs logs`: what there is now, or (`follow`) the lines as they come
/// until the run ends.
async fn logs(
    c: &Client,
    id: &str,
    follow: bool,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/runs/{}/logs", enc(id));
    if !follow {
        let v: RunLogs = c.call(Method::GET, &path, None).await?;
        if v.skipped > 0 {
            eprintln!(
                "[{} earlier line(s) of the attempt no longer kept]",
                v.skipped
            );
        }
        for line in &v.lines {
            print_line(line, output)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = c.stream(&format!("{path}?follow=true")).await?;
    while let Some(events) = stream.next().await? {
        for (event, data) in events {
            match event.as_str() {
                "line" => {
                    if let Ok(line) = serde_json::from_str::<LogLine>(&data) {
                        print_line(&line, output)?;
                    }
                }
                "skipped" => {
                    let n = serde_json::from_str::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| v["count"].as_u64())
                        .unwrap_or(0);
                    eprintln!("[{n} line(s) no longer kept: this client read too slowly]");
                }
                "end" => {
                    let end: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                    let status = end["status"].as_str().unwrap_or("?");
                    match end["error"].as_str() {
                        Some(e) => eprintln!("run {id} {status}: {e}"),
                        None => eprintln!("run {id} {status}"),
                    }
                    return Ok(if status == "succeeded" {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    });
                }
                "error" => bail!("the server stopped the stream: {data}"),
                _ => {}
            }
        }
    }
    bail!("the stream ended before the run did (the agent stopped?)")
}

/// Prints run changes as the server streams them, one line each (`-o
/// json`: one JSON object per line), until interrupted or the server stops.
async fn follow_runs(
    c: &Client,
    workflow: Option<&str>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let mut url = "/v1/events?follow=true".to_owned();
    if let Some(w) = workflow {
        url.push_str(&format!("&workflow={}", enc(w)));
    }
    let mut stream = c.stream(&url).await?;
    if output == OutputFormat::Table {
        println!("{:<19}  {:<9}  {:<24}  FILE", "TIME", "STATUS", "WORKFLOW");
    }
    let mut stdout = std::io::stdout();
    while let Some(events) = stream.next().await? {
        for (_, data) in events {
            let Ok(change) = serde_json::from_str::<RunChange>(&data) else {
                continue;
            };
            match output {
                OutputFormat::Table => writeln!(
                    stdout,
                    "{:<19}  {:<9}  {:<24}  {}",
                    short_time(Some(&change.at)),
                    change.status,
                    change.workflow,
                    change.path
                )?,
                _ => writeln!(stdout, "{data}")?,
            }
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
