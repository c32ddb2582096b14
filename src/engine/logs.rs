//! A run's output for `runs logs`: the lines of the attempt running on this
//! node as its shell steps write them (see [`crate::steps::live`]), else
//! the stored output of the last attempt's steps; followed, a stream that
//! goes from one to the other until the run ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use serde_json::json;
use tokio::sync::mpsc;

use super::reruns::OpError;
use super::run::Runtime;
use crate::api::{LogLine, LogStream, RunDetail, RunLogs};

/// How often a follower looks at the store while no live log is here.
const LOOK: Duration = Duration::from_millis(250);

/// The stored output of the last attempt's steps that have ended, a line
/// each, stdout before stderr; those of `skip` (attempt, step) left out.
fn stored(d: &RunDetail, skip: &HashSet<(u32, String)>) -> Vec<LogLine> {
    let attempt = d
        .attempt_log
        .last()
        .map_or(0, |a| u32::try_from(a.attempt).unwrap_or(0));
    let mut lines = Vec::new();
    for step in d.steps.iter().filter(|s| s.finished_at.is_some()) {
        if skip.contains(&(attempt, step.name.clone())) {
            continue;
        }
        for (stream, text) in [
            (LogStream::Stdout, &step.stdout),
            (LogStream::Stderr, &step.stderr),
        ] {
            for line in text.as_deref().unwrap_or("").lines() {
                lines.push(LogLine {
                    seq: lines.len() as u64,
                    attempt,
                    step: step.name.clone(),
                    stream,
                    line: line.to_owned(),
                    at: step.finished_at.clone().unwrap_or_default(),
                });
            }
        }
    }
    lines
}

/// Run `id`'s output now.
pub async fn snapshot(rt: &Runtime, id: &str) -> Result<RunLogs, OpError> {
    let Some(d) = rt.store.run_detail(id).await? else {
        return Err(OpError::NotFound(format!("no run `{id}`")));
    };
    let status = d.run.status;
    if !status.is_final()
        && let Some(log) = rt.logs.get(id)
    {
        let (lines, skipped, _) = log.since(0);
        return Ok(RunLogs {
            run: id.to_owned(),
            status,
            live: true,
            skipped,
            lines,
        });
    }
    Ok(RunLogs {
        run: id.to_owned(),
        status,
        live: false,
        skipped: 0,
        lines: stored(&d, &HashSet::new()),
    })
}

/// Follows run `id` (which exists), sending `line` events (a [`LogLine`]
/// each), `skipped` ones (`{"count"}`: lines no longer kept when the
/// follower got to them) and, when the run has ended, `end` (`{"status",
/// "error"}`), until then or until the follower leaves.
pub async fn follow(rt: Arc<Runtime>, id: String, tx: mpsc::Sender<SseEvent>) {
    let event = |name: &str, value: &serde_json::Value| {
        SseEvent::default()
            .event(name)
            .json_data(value)
            .unwrap_or_else(|_| SseEvent::default().comment("unserializable"))
    };
    // The (attempt, step) pairs whose lines went out already.
    let mut sent: HashSet<(u32, String)> = HashSet::new();
    loop {
        let opened = rt.logs.opened();
        if let Some(log) = rt.logs.get(&id) {
            let mut next = 0;
            loop {
                let (lines, skipped, closed) = log.since(next);
                if skipped > 0
                    && tx
                        .send(event("skipped", &json!({"count": skipped})))
                        .await
                        .is_err()
                {
                    return;
                }
                for l in lines {
                    next = l.seq + 1;
                    sent.insert((l.attempt, l.step.clone()));
                    let value = serde_json::to_value(&l).unwrap_or_default();
                    if tx.send(event("line", &value)).await.is_err() {
                        return;
                    }
                }
                if closed {
                    break;
                }
                tokio::select! {
                    () = log.wait(next) => {}
                    () = tx.closed() => return,
                    () = rt.shutdown.cancelled() => return,
                }
            }
            // The attempt ended: a retry follows, or the end.
            continue;
        }
        let detail = match rt.store.run_detail(&id).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                let gone = json!({"message": format!("run `{id}` is gone (deleted by retention)")});
                let _ = tx.send(event("error", &gone)).await;
                return;
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "following a run's output: reading it failed");
                let _ = tx
                    .send(event("error", &json!({"message": e.to_string()})))
                    .await;
                return;
            }
        };
        for l in stored(&detail, &sent) {
            sent.insert((l.attempt, l.step.clone()));
            let value = serde_json::to_value(&l).unwrap_or_default();
            if tx.send(event("line", &value)).await.is_err() {
                return;
            }
        }
        if detail.run.status.is_final() {
            let end = json!({"status": detail.run.status, "error": detail.run.error});
            let _ = tx.send(event("end", &end)).await;
            return;
        }
        // Until its log opens here, or it is time to look at the store
        // again: other runs' logs opening wake it, and cost only a look.
        let deadline = tokio::time::Instant::now() + LOOK;
        let mut opened = std::pin::pin!(opened);
        loop {
            tokio::select! {
                () = &mut opened => {
                    // Armed again before looking: none opening meanwhile is missed.
                    opened.set(rt.logs.opened());
                    if rt.logs.get(&id).is_some() {
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
                () = tx.closed() => return,
                () = rt.shutdown.cancelled() => return,
            }
        }
    }
}
