//! Backfills: a run for every file already in the data dir that a
//! workflow's `file.created` triggers match, the question every user asks
//! after applying a workflow to a directory that has files. The files come
//! from the index of this node's origin, in path order, a page at a time;
//! each becomes an event (source `backfill`, its actor the user) taken in
//! through the intake for that workflow alone, so its runs keep the
//! workflow's order, `concurrency` and the agent's `--workers`. A page and
//! the point the backfill reached are committed together (see
//! [`crate::store::BackfillStep`]): after a `kill -9` the backfill goes on
//! from there, on whichever node serving the data dir takes it up, and no
//! file starts twice. Pages go in at the pace the runs are run, so the
//! watch's new files are never queued behind a backfill.

use std::sync::Arc;
use std::time::Duration;

use super::intake::{Arrival, Intake, Target};
use super::live::Live;
use super::reruns::OpError;
use crate::api::{Backfill, BackfillRuns};
use crate::definitions::model::Workflow;
use crate::definitions::names;
use crate::events::{Event, EventType, Source, new_id, now_ms};
use crate::pattern::Pattern;
use crate::store::{BackfillRow, BackfillStep, IndexedFile, RunStatus, StoreError, timestamp};

/// Files read from the index at a time (and, at most, runs per commit).
const PAGE: usize = 256;

/// Files a dry run names.
const SAMPLE: usize = 20;

/// How far before a backfill began a run the watch started for a file
/// still counts as the file's run (clocks of two nodes differ).
const CLOCK_MARGIN_MS: i64 = 5_000;

/// The workflow a backfill of `name` runs: it, or a pipeline's first stage.
fn workflow_named(live: &Live, name: &str) -> Option<Arc<Workflow>> {
    live.workflows
        .iter()
        .find(|w| names::is_or_stage_of(name, &w.name))
        .map(Arc::clone)
}

/// Why `workflow` starts for the file at `path` (created now), when it does:
/// the matcher's reason, its `file.created` triggers only.
fn starts_for(
    live: &Live,
    workflow: &Workflow,
    glob: Option<&Pattern>,
    path: &str,
) -> Option<String> {
    if glob.is_some_and(|g| !g.is_match(path)) {
        return None;
    }
    live.decide(EventType::Created, path, None)
        .starts
        .into_iter()
        .find(|s| live.workflows[s.workflow].name == workflow.name)
        .map(|s| s.reason.to_string())
}

fn glob_of(text: Option<&str>) -> Result<Option<Pattern>, String> {
    text.map(|g| Pattern::new(g).map_err(|e| format!("`path`: {e}")))
        .transpose()
}

/// Answers `workflows backfill`: counts the files (a dry run names the
/// first few), and unless it is a dry run or there is nothing to do,
/// records the backfill for the worker to start.
pub async fn begin(
    intake: &Intake,
    name: &str,
    glob_text: Option<&str>,
    dry_run: bool,
    user: &str,
) -> Result<Backfill, OpError> {
    let glob = glob_of(glob_text).map_err(OpError::Invalid)?;
    let live = intake.live.current();
    let Some(workflow) = workflow_named(&live, name) else {
        return Err(OpError::NotFound(format!(
            "no workflow or pipeline named `{name}`"
        )));
    };
    let store = &intake.rt.store;
    let mut answer = Backfill {
        id: None,
        workflow: workflow.name.clone(),
        path: glob_text.map(str::to_owned),
        dry_run,
        files: 0,
        sample: Vec::new(),
        started: 0,
        done: false,
        runs: BackfillRuns::default(),
        by: Some(user.to_owned()),
        created_at: None,
        finished_at: None,
        error: None,
        message: None,
    };
    if !workflow
        .triggers
        .iter()
        .any(|t| t.events.contains(EventType::Created))
    {
        answer.message = Some(format!(
            "nothing to do: workflow `{}` has no file.created trigger",
            workflow.name
        ));
        return Ok(answer);
    }
    if !dry_run {
        if intake.registry.is_paused(&workflow) {
            return Err(OpError::Conflict(format!(
                "workflow `{}` is paused: resume it, then backfill",
                workflow.name
            )));
        }
        if let Some(busy) = store
            .unfinished_backfills()
            .await?
            .into_iter()
            .find(|b| b.workflow == workflow.name)
        {
            return Err(OpError::Conflict(format!(
                "backfill `{}` of `{}` is still starting its runs ({} of {}): wait for it to finish",
                busy.id, busy.workflow, busy.started, busy.planned
            )));
        }
    }
    let mut after = String::new();
    loop {
        let page = store.index_page(&after, 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.path.clone();
        for f in &page {
            if starts_for(&live, &workflow, glob.as_ref(), &f.path).is_some() {
                answer.files += 1;
                if dry_run && answer.sample.len() < SAMPLE {
                    answer.sample.push(f.path.clone());
                }
            }
        }
    }
    if answer.files == 0 {
        answer.done = true;
        answer.message = Some(match glob_text {
            Some(g) => format!(
                "nothing to do: no file in the data dir matches both `{}`'s file.created triggers and `{g}`",
                workflow.name
            ),
            None => format!(
                "nothing to do: no file in the data dir matches `{}`'s file.created triggers",
                workflow.name
            ),
        });
        return Ok(answer);
    }
    if dry_run {
        return Ok(answer);
    }
    let id = new_id("bf_");
    let row = match store
        .create_backfill(&id, &workflow.name, glob_text, user, answer.files)
        .await
    {
        Ok(row) => row,
        // Another request began one meanwhile.
        Err(e) if e.is_unique_violation() => {
            return Err(OpError::Conflict(format!(
                "a backfill of `{}` is still starting its runs: wait for it to finish",
                workflow.name
            )));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(backfill = %id, workflow = %workflow.name, files = answer.files, user, "backfill begun");
    intake.backfills.notify_one();
    Ok(answer_of(row, BackfillRuns::default()))
}

/// A recorded backfill as the API gives it.
pub fn answer_of(row: BackfillRow, runs: BackfillRuns) -> Backfill {
    Backfill {
        id: Some(row.id),
        workflow: row.workflow,
        path: row.glob,
        dry_run: false,
        files: row.planned,
        sample: Vec::new(),
        started: row.started,
        done: row.finished_ms.is_some(),
        runs,
        by: Some(row.actor),
        created_at: timestamp(Some(row.created_ms)),
        finished_at: timestamp(row.finished_ms),
        error: row.error,
        message: None,
    }
}

/// Backfill `id` with its runs counted, if there is one.
pub async fn status(intake: &Intake, id: &str) -> Result<Backfill, OpError> {
    let store = &intake.rt.store;
    let Some(row) = store.backfill(id).await? else {
        return Err(OpError::NotFound(format!("no backfill `{id}`")));
    };
    let mut runs = BackfillRuns::default();
    for (s, n) in store.backfill_counts(id).await? {
        runs.add(s, n);
    }
    Ok(answer_of(row, runs))
}

/// Takes up this origin's unfinished backfills, once this node is ready
/// (its index compared with the tree): at start, when one is begun here,
/// and every `poll` (one begun on another node, one left by a node that
/// died).
pub async fn backfill_worker(intake: Intake, poll: Duration) {
    let shutdown = intake.rt.shutdown.clone();
    tokio::select! {
        () = intake.ready.cancelled() => {}
        () = shutdown.cancelled() => return,
    }
    loop {
        match intake.rt.store.unfinished_backfills().await {
            Ok(list) => {
                for bf in list {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    drive(&intake, bf).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the unfinished backfills failed"),
        }
        tokio::select! {
            () = intake.backfills.notified() => {}
            () = tokio::time::sleep(poll) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Starts backfill `bf`'s runs, a page at a time, until every file has
/// its run; or until shutdown, or while its workflow is paused (it goes on
/// when resumed).
async fn drive(intake: &Intake, mut bf: BackfillRow) {
    let store = &intake.rt.store;
    let shutdown = &intake.rt.shutdown;
    let glob = match glob_of(bf.glob.as_deref()) {
        Ok(g) => g,
        Err(e) => return finish(intake, &bf, Some(&e)).await,
    };
    tracing::info!(backfill = %bf.id, workflow = %bf.workflow, started = bf.started, of = bf.planned, "backfill: starting runs");
    while !shutdown.is_cancelled() {
        let live = intake.live.current();
        let Some(workflow) = live
            .workflows
            .iter()
            .find(|w| w.name == bf.workflow)
            .map(Arc::clone)
        else {
            // Applied, and this node's definitions are behind: later.
            if !store.definition_exists(&bf.workflow).await.unwrap_or(true) {
                let why = format!("workflow `{}` was deleted", bf.workflow);
                finish(intake, &bf, Some(&why)).await;
            }
            return;
        };
        if intake.registry.is_paused(&workflow) {
            tracing::info!(backfill = %bf.id, workflow = %bf.workflow, "backfill waits: its workflow is paused");
            return;
        }
        // A node that cannot run it leaves the backfill to one that can,
        // which paces it by its own runs.
        if let Some(why) = live.lacks(&workflow.name) {
            tracing::debug!(backfill = %bf.id, reason = why, "backfill left to a node that can run its workflow");
            return;
        }
        let page = match page_of(intake, &bf, &live, &workflow, glob.as_ref()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(backfill = %bf.id, error = %e, "backfill: reading the index failed; trying again");
                if !pause(shutdown).await {
                    return;
                }
                continue;
            }
        };
        let Some((to, files)) = page else {
            return finish(intake, &bf, None).await;
        };
        tokio::select! {
            () = intake.dispatcher.room_for(files.len()) => {}
            () = shutdown.cancelled() => return,
        }
        let by = format!("backfill {} by {}", bf.id, bf.actor);
        let arrivals = files
            .into_iter()
            .map(|(f, reason)| Arrival {
                event: Event {
                    id: new_id("evt_"),
                    kind: EventType::Created,
                    path: f.path,
                    old_path: None,
                    size: Some(f.size),
                    mtime_ms: Some(f.mtime_ns.div_euclid(1_000_000)),
                    observed_ms: now_ms(),
                    cause: None,
                    raw_abs: None,
                    actor: Some(bf.actor.clone()),
                    source: Source::Backfill,
                },
                target: Target::Workflow(Arc::clone(&workflow), format!("{by}: {reason}")),
            })
            .collect();
        let mut plan = intake.plan_against(&live, arrivals, vec![]);
        // Paused meanwhile: nothing of this page is recorded (its runs
        // would be `skipped`), and the backfill waits to be resumed.
        if plan.runs.iter().any(|r| r.status == RunStatus::Skipped) {
            tracing::info!(backfill = %bf.id, workflow = %bf.workflow, "backfill waits: its workflow is paused");
            return;
        }
        for run in &mut plan.runs {
            run.backfill = Some(bf.id.clone());
        }
        let started = plan.runs.len() as i64;
        plan.backfill = Some(BackfillStep {
            id: bf.id.clone(),
            from: bf.after.clone(),
            to: to.clone(),
            started,
        });
        match intake.commit(&plan).await {
            Ok(()) => {
                bf.after = to;
                bf.started += started;
                intake.publish(plan).await;
            }
            // Another node took this page: on from where it is now.
            Err(StoreError::Conflict(_)) => match store.backfill(&bf.id).await {
                Ok(Some(now)) if now.finished_ms.is_none() => bf = now,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(backfill = %bf.id, error = %e, "backfill: reading it again failed");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(backfill = %bf.id, error = %e, "backfill: recording a page of runs failed; trying again");
                if !pause(shutdown).await {
                    return;
                }
            }
        }
    }
}

/// The next page of backfill `bf`: the path it ends at and its files that
/// start the workflow, with why; those the watch started a run of the
/// workflow for since the backfill began are left to those runs. `None`:
/// past the last file.
async fn page_of(
    intake: &Intake,
    bf: &BackfillRow,
    live: &Live,
    workflow: &Workflow,
    glob: Option<&Pattern>,
) -> Result<Option<(String, Vec<(IndexedFile, String)>)>, StoreError> {
    let store = &intake.rt.store;
    let page = store.index_page(&bf.after, PAGE).await?;
    let Some(last) = page.last() else {
        return Ok(None);
    };
    let to = last.path.clone();
    let matched: Vec<(IndexedFile, String)> = page
        .into_iter()
        .filter_map(|f| starts_for(live, workflow, glob, &f.path).map(|why| (f, why)))
        .collect();
    let paths: Vec<&str> = matched.iter().map(|(f, _)| f.path.as_str()).collect();
    // A few seconds' margin: the watcher's clock and the one the backfill
    // was begun by may differ; a run the watch started just before the
    // backfill began is the file's run too.
    let since = bf.created_ms.saturating_sub(CLOCK_MARGIN_MS);
    let fresh = store.started_since(&paths, &workflow.name, since).await?;
    let files = matched
        .into_iter()
        .filter(|(f, _)| !fresh.contains(&f.path))
        .collect();
    Ok(Some((to, files)))
}

/// Records `bf` finished (short of its end, with `error`).
async fn finish(intake: &Intake, bf: &BackfillRow, error: Option<&str>) {
    match intake.rt.store.finish_backfill(&bf.id, error).await {
        Ok(()) => match error {
            None => {
                tracing::info!(backfill = %bf.id, workflow = %bf.workflow, runs = bf.started, "backfill: every file has its run")
            }
            Some(e) => tracing::warn!(backfill = %bf.id, error = e, "backfill stopped short"),
        },
        Err(e) => {
            tracing::warn!(backfill = %bf.id, error = %e, "recording a backfill finished failed")
        }
    }
}

/// A second's wait before trying again; false at shutdown.
async fn pause(shutdown: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => true,
        () = shutdown.cancelled() => false,
    }
}
