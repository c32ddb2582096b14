//! The store's upkeep and other nodes' changes: background tasks that
//! each wake on a timer (or a notification) until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use crate::events::now_ms;
use crate::store::Store;

/// Deletes finished runs older than `retention`: at start, then every
/// hour (or every half retention, when that is shorter); on one node of
/// the fleet at a time.
pub async fn retention_worker(store: Store, retention: Duration, shutdown: CancellationToken) {
    let period = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match store.delete_finished_before(cutoff).await {
                    Ok(None) => tracing::debug!("retention: another node is at it"),
                    Ok(Some(0)) => {}
                    Ok(Some(n)) => tracing::info!(runs = n, "retention: old runs deleted"),
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Picks up definition and pause changes other nodes made: when one of
/// them says so, and every `poll` in case a notification was lost.
pub async fn refresh_worker(
    registry: Arc<Registry>,
    wakeups: crate::store::Wakeups,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = wakeups.definitions.notified() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = registry.refresh().await {
            tracing::warn!(error = %e, "checking the store for definition changes failed");
        }
    }
}

/// Checkpoints the SQLite log once a second, off the runs' path.
pub async fn checkpoint_worker(store: Store, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.checkpoint(false).await {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}
