//! `workflows`: list, get, history, stats, errors, pause, resume, delete,
//! trigger and roll back definitions.

use std::process::ExitCode;

use reqwest::Method;

use super::runs::print_runs;
use super::{Client, block_on, cell, enc, print_structured, print_table, short_time};
use crate::api::{
    ErrorList, PauseAnswer, Results, RunList, Stats, TriggerAnswer, TriggerRequest, WorkflowList,
    WorkflowOrRevision, WorkflowStatus,
};
use crate::cli::{ClientArgs, WorkflowsCommand};

fn status_text(s: WorkflowStatus) -> &'static str {
    match s {
        WorkflowStatus::Active => "active",
        WorkflowStatus::Paused => "paused",
    }
}

pub fn workflows(command: WorkflowsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match command {
            WorkflowsCommand::List { client, output } => {
                let c = Client::new(&client)?;
                let v: WorkflowList = c.call(Method::GET, "/v1/workflows", None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v
                    .workflows
                    .iter()
                    .map(|w| {
                        vec![
                            w.name.clone(),
                            w.kind.to_string(),
                            status_text(w.status).to_owned(),
                            w.revision.to_string(),
                            cell(w.description.as_deref()),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAME", "KIND", "STATUS", "REV", "DESCRIPTION"],
                    &rows,
                    &[28, 8, 6, 4, 28],
                );
            }
            WorkflowsCommand::Get {
                name,
                revision,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let mut path = format!("/v1/workflows/{}", enc(&name));
                if let Some(n) = revision {
                    path.push_str(&format!("?revision={n}"));
                }
                let v: WorkflowOrRevision = c.call(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                // The table view of one definition is its document, as YAML.
                let document = match &v {
                    WorkflowOrRevision::Workflow(w) => {
                        // A comment, so that the output stays the YAML it was.
                        println!(
                            "# runs on: {}",
                            if w.any_node {
                                "any node of the fleet (every step a webhook)"
                            } else {
                                "a node serving the data dir of the run's event"
                            }
                        );
                        &w.document
                    }
                    WorkflowOrRevision::Revision(r) => &r.document,
                };
                print!("{}", serde_saphyr::to_string(document)?);
            }
            WorkflowsCommand::History {
                name,
                limit,
                status,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let mut path = format!("/v1/workflows/{}/runs?limit={limit}", enc(&name));
                if let Some(st) = status {
                    path.push_str(&format!("&status={}", enc(&st)));
                }
                let v: RunList = c.call(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                print_runs(&v, false);
            }
            WorkflowsCommand::Stats {
                name,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let v: Stats = c
                    .call(
                        Method::GET,
                        &format!("/v1/workflows/{}/stats", enc(&name)),
                        None,
                    )
                    .await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rate = v
                    .success_rate
                    .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
                println!("workflow:         {}", v.workflow);
                println!("total:            {}", v.total);
                println!("succeeded:        {}", v.succeeded);
                println!("failed:           {}", v.failed);
                println!("skipped:          {}", v.skipped);
                println!("success_rate:     {rate}");
                println!("avg_duration_ms:  {}", cell(v.avg_duration_ms));
                println!("p95_duration_ms:  {}", cell(v.p95_duration_ms));
                println!("errors:           {}", v.errors);
            }
            WorkflowsCommand::Errors {
                name,
                limit,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let path = format!("/v1/workflows/{}/errors?limit={limit}", enc(&name));
                let v: ErrorList = c.call(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v
                    .errors
                    .iter()
                    .map(|e| {
                        vec![
                            short_time(e.at.as_deref()),
                            e.path.clone(),
                            e.attempt.to_string(),
                            cell(e.error.as_deref()),
                        ]
                    })
                    .collect();
                print_table(&["AT", "FILE", "TRY", "ERROR"], &rows, &[19, 24, 3, 60]);
            }
            WorkflowsCommand::Pause { name, client } => {
                return simple(&client, Method::POST, &name, "pause", "paused").await;
            }
            WorkflowsCommand::Resume { name, client } => {
                return simple(&client, Method::POST, &name, "resume", "resumed").await;
            }
            WorkflowsCommand::Delete { name, client } => {
                let c = Client::new(&client)?;
                let v: Results = c
                    .call(
                        Method::DELETE,
                        &format!("/v1/workflows/{}", enc(&name)),
                        None,
                    )
                    .await?;
                for r in &v.results {
                    println!("{}/{} deleted", r.kind.as_str().to_lowercase(), r.name);
                }
            }
            WorkflowsCommand::Trigger { name, path, client } => {
                let c = Client::new(&client)?;
                let body = TriggerRequest { path: Some(path) };
                let v: TriggerAnswer = c
                    .call_json(
                        Method::POST,
                        &format!("/v1/workflows/{}/trigger", enc(&name)),
                        &body,
                    )
                    .await?;
                println!("run/{} {}", v.run, v.status);
            }
            WorkflowsCommand::Backfill {
                name,
                path,
                dry_run,
                detach,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let how = super::backfills::How { detach, output };
                return super::backfills::backfill(&c, &name, path, dry_run, how).await;
            }
            WorkflowsCommand::Rollback {
                name,
                revision,
                client,
            } => {
                let c = Client::new(&client)?;
                let path = format!("/v1/workflows/{}/rollback?revision={revision}", enc(&name));
                let v: Results = c.call(Method::POST, &path, None).await?;
                for r in &v.results {
                    println!("{r}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn simple(
    client: &ClientArgs,
    method: Method,
    name: &str,
    verb: &str,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    let _: PauseAnswer = c
        .call(method, &format!("/v1/workflows/{}/{verb}", enc(name)), None)
        .await?;
    println!("workflow/{name} {done}");
    Ok(ExitCode::SUCCESS)
}
