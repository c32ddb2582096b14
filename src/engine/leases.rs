//! Run leases: this node's kept alive, and runs whose node stopped
//! renewing them (it died, hangs, or stopped) taken up here.

use std::sync::Arc;
use std::time::Duration;

use super::dispatch::Dispatcher;
use super::live::LiveHandle;
use super::run::{Job, Runtime};
use crate::events::now_ms;
use crate::store::{RunStatus, Write};

/// Hands claimed unfinished runs to the dispatcher: queued ones as they
/// were, running ones as a new attempt (their interrupted attempt recorded
/// as such), so every recorded event's runs reach a final state.
pub async fn take_up(
    rt: &Runtime,
    live: &LiveHandle,
    dispatcher: &Dispatcher,
    runs: Vec<crate::store::UnfinishedRun>,
) {
    if runs.is_empty() {
        return;
    }
    let live = live.current();
    let secrets = Arc::clone(&live.secrets);
    let mut jobs = Vec::new();
    for run in runs {
        let Some(workflow) = live.workflows.iter().find(|w| w.name == run.workflow) else {
            rt.writer
                .send(Write::RunClosed(crate::store::RunClose {
                    run_id: run.id.clone(),
                    fence: run.fence,
                    status: RunStatus::Cancelled,
                    reason: "workflow removed before the run could finish".to_owned(),
                    at_ms: now_ms(),
                }))
                .await;
            continue;
        };
        let mut first_attempt = run.attempts + 1;
        if run.status == RunStatus::Running {
            if let Err(e) = rt
                .store
                .interrupt_attempt(&run.id, run.attempts, now_ms())
                .await
            {
                tracing::error!(error = %e, "recording failed");
            }
        } else if run.status == RunStatus::Queued {
            first_attempt = 1;
        }
        tracing::info!(run = %run.id, workflow = %run.workflow, status = %run.status, "resuming an unfinished run");
        jobs.push(Job {
            run_id: run.id,
            workflow: Arc::clone(workflow),
            event: run.event,
            secrets: Arc::clone(&secrets),
            first_attempt,
            not_before_ms: run.next_attempt_ms,
            fence: run.fence,
        });
    }
    dispatcher.submit(jobs).await;
}

/// Keeps this node's leases alive (a third of the lease apart), and takes
/// up runs whose node stopped renewing them (it died, or hangs) or
/// released them (it stopped): looked for at each renewal, every `poll`,
/// and at once when a stopping node says so.
pub async fn lease_worker(
    rt: Arc<Runtime>,
    live: LiveHandle,
    dispatcher: Dispatcher,
    wakeups: crate::store::Wakeups,
    poll: Duration,
) {
    let mut renew = tokio::time::interval((rt.lease / 3).max(Duration::from_millis(100)));
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(poll);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renewing = tokio::select! {
            _ = renew.tick() => true,
            _ = look.tick() => false,
            () = wakeups.runs.notified() => false,
            () = rt.shutdown.cancelled() => return,
        };
        let (node, until) = rt.lease_now();
        if renewing && let Err(e) = rt.store.renew_leases(&node, until).await {
            tracing::warn!(error = %e, "renewing run leases failed");
            continue;
        }
        match rt
            .store
            .claim_unfinished(&node, until, now_ms(), false)
            .await
        {
            Ok(runs) if !runs.is_empty() => {
                tracing::warn!(
                    runs = runs.len(),
                    "taking up runs whose node stopped renewing their lease"
                );
                take_up(&rt, &live, &dispatcher, runs).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for abandoned runs failed"),
        }
    }
}
