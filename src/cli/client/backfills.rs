//! `workflows backfill`: begin a backfill, then follow its runs to the
//! end: a progress bar on a terminal, a line of counts otherwise.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::Method;

use super::{Client, enc, print_structured};
use crate::api::{Backfill, BackfillRequest};
use crate::cli::OutputFormat;

/// How `workflows backfill` reports.
pub struct How {
    /// Return once begun.
    pub detach: bool,
    pub output: OutputFormat,
}

/// How often the backfill is looked at while followed.
const LOOK: Duration = Duration::from_millis(500);

/// Without a terminal: a line of counts at most this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub async fn backfill(
    c: &Client,
    name: &str,
    path: Option<String>,
    dry_run: bool,
    how: How,
) -> anyhow::Result<ExitCode> {
    let body = BackfillRequest { path, dry_run };
    let begun: Backfill = c
        .call_json(
            Method::POST,
            &format!("/v1/workflows/{}/backfill", enc(name)),
            &body,
        )
        .await?;
    let Some(id) = begun.id.clone() else {
        // A dry run, or nothing to do.
        if print_structured(how.output, &begun)? {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(m) = &begun.message {
            println!("{m}");
        } else {
            println!(
                "workflow/{}: {} file(s) would be started",
                begun.workflow, begun.files
            );
            for p in &begun.sample {
                println!("  {p}");
            }
            let more = begun.files - begun.sample.len() as i64;
            if more > 0 {
                println!("  ... and {more} more");
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let table = how.output == OutputFormat::Table;
    if table {
        println!(
            "backfill/{id} begun: {} file(s) for workflow/{}",
            begun.files, begun.workflow
        );
    }
    if how.detach {
        if !table {
            print_structured(how.output, &begun)?;
        } else {
            println!("follow it: GET /v1/backfills/{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let last = follow(c, &id, table).await?;
    if !print_structured(how.output, &last)? {
        let r = &last.runs;
        println!(
            "backfill/{id} done: {} run(s): {} succeeded, {} failed, {} cancelled, {} skipped",
            last.started, r.succeeded, r.failed, r.cancelled, r.skipped
        );
        if let Some(e) = &last.error {
            println!("it stopped short: {e}");
        }
    }
    Ok(if last.runs.failed > 0 || last.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every file has its run, and every run has finished.
fn over(b: &Backfill) -> bool {
    b.done && b.runs.finished() >= b.started
}

/// Looks at backfill `id` until it is over, showing its progress on
/// standard error (when `show`); returns it as it ended.
async fn follow(c: &Client, id: &str, show: bool) -> anyhow::Result<Backfill> {
    let path = format!("/v1/backfills/{}", enc(id));
    let bar = (show && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:32} {pos}/{len} runs finished {msg} [{elapsed}, {eta} left]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut said = String::new();
    let mut said_at: Option<Instant> = None;
    loop {
        let b: Backfill = c.call(Method::GET, &path, None).await?;
        let r = &b.runs;
        let counts = format!(
            "{} running, {} failed{}",
            r.running,
            r.failed,
            if b.done {
                String::new()
            } else {
                format!(", {} of {} files started", b.started, b.files)
            }
        );
        let total = if b.done { b.started } else { b.files }.max(0) as u64;
        match &bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(r.finished().max(0) as u64);
                bar.set_message(counts.clone());
            }
            None if show => {
                let line = format!("{}/{total} runs finished, {counts}", r.finished());
                let due = said_at.is_none_or(|t| t.elapsed() >= LINE_EVERY);
                if line != said && (due || over(&b)) {
                    eprintln!("backfill/{id}: {line}");
                    said = line;
                    said_at = Some(Instant::now());
                }
            }
            None => {}
        }
        if over(&b) {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return Ok(b);
        }
        tokio::time::sleep(LOOK).await;
    }
}
