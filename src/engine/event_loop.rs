//! The event loop: watch hints and whole-tree comparisons become changes,
//! changes become events through the intake; at start, the runs a previous
//! agent left unfinished are taken up first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::intake::{Arrival, Intake, Target};
use crate::events::index::FileMeta;
use crate::events::reconcile::{Change, Hint, Reconciler};
use crate::events::watcher::Watch;
use crate::events::{Event, EventType, Source, new_id, now_ms};
use crate::store::{IndexOp, StoreError};

/// Turns hints into changes, changes into recorded events and runs.
pub struct EventLoop {
    pub intake: Intake,
    /// How often the tree is compared with the index while some directory
    /// has no watch (`--poll-interval`), or always (`--watch poll`,
    /// `--watch-interval`).
    pub poll_interval: Duration,
    /// This node's term as its data dir's watcher: every commit of events
    /// carries its fence, and the loop ends when it is lost.
    pub fence: i64,
    pub lost: CancellationToken,
    /// Why the first comparison of the tree with the index ran.
    pub start_reason: String,
}

impl EventLoop {
    pub async fn run(
        &self,
        mut rec: Reconciler,
        mut watch: Watch,
        mut hints: mpsc::Receiver<Hint>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut changes: Vec<Change> = Vec::new();
        let mut version = self.intake.live.current();
        rec.set_settle_rules(version.settle_rules());
        let caught_up = rec.scan_all(Instant::now(), &mut changes);
        self.record_gap(&self.start_reason, caught_up, started)
            .await;
        let scanned = 0..changes.len();
        let committed = self
            .process(std::mem::take(&mut changes), scanned, rec.take_settled())
            .await;
        self.rederive_until_committed(&mut rec, committed).await;
        release_free_memory();
        tracing::info!(
            files = rec.index_len(),
            changes = caught_up,
            ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        self.intake.ready.cancel();
        // While the watch is degraded: when to compare the tree next.
        let mut next_poll = Instant::now() + self.poll_interval;
        loop {
            let deadline = rec.next_deadline().map(tokio::time::Instant::from_std);
            let poll_at = watch
                .is_degraded()
                .then(|| tokio::time::Instant::from_std(next_poll));
            tokio::select! {
                biased;
                () = self.intake.rt.shutdown.cancelled() => break,
                () = self.lost.cancelled() => break,
                () = watch.lost_wake.notified() => {}
                hint = hints.recv() => match hint {
                    Some(h) => {
                        let now = Instant::now();
                        rec.hint(h, now, &mut changes);
                        let mut more = 0;
                        while let Ok(h) = hints.try_recv() {
                            rec.hint(h, now, &mut changes);
                            more += 1;
                            if more >= 4096 {
                                break;
                            }
                        }
                    }
                    None => break,
                },
                () = sleep_until_opt(deadline) => {}
                () = sleep_until_opt(poll_at) => {}
            }
            let current = self.intake.live.current();
            if !Arc::ptr_eq(&current, &version) {
                rec.set_settle_rules(current.settle_rules());
                version = current;
            }
            // Lost events and a due poll share one comparison of the tree.
            let lost = watch.lost.swap(false, Ordering::SeqCst);
            let mut scanned = 0..0;
            let poll = watch.is_degraded() && Instant::now() >= next_poll;
            if lost || poll {
                let scan_started = Instant::now();
                if poll {
                    next_poll = scan_started + self.poll_interval;
                    // The limit may have been raised: watched again, the
                    // comparison below covers the time without.
                    watch.rewatch();
                }
                let polling = watch.is_polling();
                if lost {
                    tracing::warn!(
                        "watch events were lost (queue overflow or watcher error): rescanning the data dir"
                    );
                }
                let before = changes.len();
                let found = rec.scan_all(scan_started, &mut changes);
                scanned = before..changes.len();
                release_free_memory();
                if lost {
                    self.record_gap("overflow: watch events were lost", found, scan_started)
                        .await;
                } else if found > 0 && !polling {
                    self.record_gap(
                        "poll: directories without a watch (the inotify watch limit)",
                        found,
                        scan_started,
                    )
                    .await;
                }
            }
            rec.tick(Instant::now(), &mut changes);
            let settled = rec.take_settled();
            if !changes.is_empty() || !settled.is_empty() {
                let committed = self
                    .process(std::mem::take(&mut changes), scanned, settled)
                    .await;
                self.rederive_until_committed(&mut rec, committed).await;
            }
        }
        drop(watch);
        Ok(())
    }

    /// Records a whole-tree comparison as a gap, in the store and the log.
    async fn record_gap(&self, reason: &str, changes: usize, started: Instant) {
        let scan_ms = started.elapsed().as_millis() as u64;
        crate::metrics::METRICS.gap(changes);
        tracing::info!(
            reason,
            changes,
            scan_ms,
            "gap: the tree was compared with the index"
        );
        if let Err(e) = self
            .intake
            .rt
            .store
            .record_gap(reason, changes, scan_ms, now_ms())
            .await
        {
            tracing::error!(error = %e, "recording the gap failed");
        }
    }
}

/// Hands the runs a previous agent of this node left unfinished (killed,
/// crashed) back to the store, so that claims (here, as room allows, or on
/// another node) take them up with the rest of the backlog, oldest first;
/// then lets the dispatcher claim.
pub async fn resume(intake: &Intake) {
    let rt = &intake.rt;
    let mut wait = Duration::from_millis(100);
    loop {
        match rt.store.release_leases().await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(runs = n, "taking up the runs this node left unfinished");
                }
                intake.dispatcher.open();
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot release the unfinished runs of this node; trying again")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = rt.shutdown.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

impl EventLoop {
    /// After a batch the store refused for good (not a passing outage,
    /// which [`Intake::commit_patiently`] waits out): the reconciler's index
    /// had moved on with it, so it is set back to the stored index and the
    /// tree compared with it again, deriving the lost events anew; again,
    /// further apart, until a batch is committed (or the agent stops).
    async fn rederive_until_committed(&self, rec: &mut Reconciler, mut committed: bool) {
        let rt = &self.intake.rt;
        let mut wait = Duration::from_secs(1);
        while !committed && !rt.shutdown.is_cancelled() && !self.lost.is_cancelled() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = rt.shutdown.cancelled() => return,
                () = self.lost.cancelled() => return,
            }
            wait = (wait * 2).min(Duration::from_secs(30));
            match rt.store.load_index().await {
                Ok(index) => rec.replace_index(index),
                Err(e) => {
                    tracing::error!(error = %e, "reading the stored index failed; trying again");
                    continue;
                }
            }
            let started = Instant::now();
            let mut changes = Vec::new();
            let found = rec.scan_all(started, &mut changes);
            self.record_gap(
                "retry: a batch of events could not be recorded",
                found,
                started,
            )
            .await;
            let scanned = 0..changes.len();
            committed = self.process(changes, scanned, rec.take_settled()).await;
        }
    }

    /// Records the events of `changes` with their runs, and the index
    /// entries `settled` without an event, then hands the runs over. The
    /// changes in `scanned` came from a comparison of the tree. False when
    /// the store refused the batch.
    async fn process(
        &self,
        changes: Vec<Change>,
        scanned: std::ops::Range<usize>,
        settled: Vec<(String, FileMeta)>,
    ) -> bool {
        let rt = &self.intake.rt;
        // First: a change of the same path later in the batch wins.
        let mut index: Vec<IndexOp> = settled
            .into_iter()
            .map(|(path, meta)| IndexOp::Put(path, meta))
            .collect();
        let mut arrivals = Vec::with_capacity(changes.len());
        for (i, c) in changes.into_iter().enumerate() {
            if let Some(old) = &c.old_path {
                index.push(IndexOp::Remove(old.clone()));
            }
            match c.meta {
                Some(m) if c.kind != EventType::Deleted => {
                    index.push(IndexOp::Put(c.path.clone(), m))
                }
                _ => index.push(IndexOp::Remove(c.path.clone())),
            }
            let event = Event {
                id: new_id("evt_"),
                kind: c.kind,
                size: c.meta.map(|m| m.size),
                mtime_ms: c.meta.map(|m| m.mtime_ms()),
                observed_ms: now_ms(),
                cause: rt.causes.take(&c.path),
                actor: rt.actors.take(&c.path),
                source: if scanned.contains(&i) {
                    Source::Scan
                } else {
                    Source::Watch
                },
                path: c.path,
                old_path: c.old_path,
                raw_abs: c.raw,
            };
            tracing::debug!(event = %event.id, kind = %event.kind, path = %event.path, "event");
            arrivals.push(Arrival {
                event,
                target: Target::Matched,
            });
        }
        let mut plan = self.intake.plan(arrivals, index);
        plan.watch_fence = Some(self.fence);
        // While the database is unreachable, wait for it: new hints queue up
        // meanwhile (and past the buffer, a rescan finds their changes).
        if let Err(e) = self.intake.commit_patiently(&plan).await {
            if matches!(e, StoreError::Deposed) {
                // The next watcher's comparison derives these events.
                tracing::warn!(
                    events = plan.events.len(),
                    "another agent was elected the data dir's watcher: this one stops watching, and leaves these events to it"
                );
                self.lost.cancel();
                return true;
            }
            if !rt.shutdown.is_cancelled() {
                tracing::error!(error = %e, events = plan.events.len(), "recording events failed; the tree is compared with the stored index again to derive them anew");
            }
            return rt.shutdown.is_cancelled();
        }
        self.intake.publish(plan).await;
        true
    }
}

/// Gives the allocator's free pages back to the system after a whole-tree
/// walk: its buffers (one arena per walking thread) are gone, and an idle
/// agent should not keep their size resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
