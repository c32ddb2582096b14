//! Run leases: this node's kept alive, and runs whose node stopped
//! renewing them (it died, hangs, or stopped) looked for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dispatch::Dispatcher;
use super::run::Runtime;

/// Renews the leases of exactly the runs this node holds, a third of the
/// lease apart and at once after a cancel: a run the renewal no longer
/// finds this node's (cancelled, or another node claimed it) stops at once, and so does every run whose lease ran
/// out unrenewed while the database was away. Asks the dispatcher to look
/// for runs whose node stopped renewing them (it died, or hangs) or
/// released them (it stopped): at each renewal, every `poll`, and at once
/// when a stopping node says so.
pub async fn lease_worker(
    rt: Arc<Runtime>,
    dispatcher: Dispatcher,
    wakeups: crate::store::Wakeups,
    poll: Duration,
) {
    let mut renew = tokio::time::interval((rt.lease / 3).max(Duration::from_millis(100)));
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(poll);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_ms = i64::try_from(rt.lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let renewing = tokio::select! {
            _ = renew.tick() => true,
            // A cancel (here, or told by another node): a held run that
            // was cancelled is missing from the renewal, and stops.
            () = dispatcher.rechecked() => true,
            () = wakeups.cancels.notified() => true,
            _ = look.tick() => false,
            () = wakeups.runs.notified() => false,
            () = rt.shutdown.cancelled() => return,
        };
        if renewing {
            // A node that was stopped (SIGSTOP), or whose database was
            // away, past its lease stops those runs before anything else.
            dispatcher.expire(rt.lease);
            if let Err(e) = rt.store.sync_clock().await {
                tracing::warn!(error = %e, "reading the database's clock failed");
            }
            let held = dispatcher.held();
            let sent = Instant::now();
            // The writer renews between its transactions; behind a batch
            // waiting out an outage, the renewal is given up on, and the
            // next tick stops what has run out.
            let renewal = rt.writer.renew(held.clone(), lease_ms);
            match tokio::time::timeout(rt.lease / 3, renewal).await {
                Ok(Ok(kept)) => dispatcher.renewed(&held, &kept, sent),
                Err(_) => {
                    tracing::warn!(
                        "renewing run leases is waiting on the database; runs stop when their lease runs out"
                    );
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "renewing run leases failed; runs stop when their lease runs out");
                    continue;
                }
            }
        }
        dispatcher.look();
    }
}
