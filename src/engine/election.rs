//! Which agent of a data dir watches it: every agent of the data dir (one
//! disk shared by several processes, or a network filesystem mounted on
//! several hosts) runs its runs, one of them, elected, watches it and
//! records its events. The election is the store's watch lock; each win
//! raises a fence that every commit of the watch's events checks, so a
//! watcher that lost its lock (its database session broke) records
//! nothing more, and the next one compares the tree with the stored index:
//! what changed meanwhile becomes events exactly once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Store, WatchLock, WatchLocker};

/// How often a standby agent tries the lock, and the watcher checks it.
const TRY_EVERY: Duration = Duration::from_millis(500);
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Elections of this node as its data dir's watcher.
pub struct Election {
    locker: WatchLocker,
    store: Store,
    node: String,
    /// A standby's complaint about the database, said once until it passes.
    warned: bool,
    /// The last try found the lock held by another agent.
    held_elsewhere: bool,
}

/// One win: watching lasts until `lost` (the lock's session broke, or a
/// commit found the fence moved) or until dropped (the lock given up).
pub struct Term {
    pub fence: i64,
    /// The node that watched before, if another.
    pub previous: Option<String>,
    pub lost: CancellationToken,
    release: CancellationToken,
}

impl Drop for Term {
    fn drop(&mut self) {
        self.release.cancel();
    }
}

impl Election {
    pub fn new(store: Store, state_dir: &std::path::Path, node: &str) -> Election {
        Election {
            locker: WatchLocker::new(store.clone(), state_dir),
            store,
            node: node.to_owned(),
            warned: false,
            held_elsewhere: false,
        }
    }

    /// Whether the last try found another agent watching (else it could
    /// not reach the database, or won).
    pub fn held_elsewhere(&self) -> bool {
        self.held_elsewhere
    }

    /// Tries once: the term when this node is elected now.
    pub async fn attempt(&mut self) -> Option<Term> {
        let taken = self.locker.try_take().await;
        self.held_elsewhere = matches!(taken, Ok(None));
        let mut lock = match taken {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                self.end_quiet_watcher().await;
                return None;
            }
            Err(e) => {
                self.complain(&e);
                return None;
            }
        };
        let (fence, previous) = match self.store.take_watch(&mut lock).await {
            Ok(taken) => taken,
            Err(e) => {
                self.complain(&e);
                lock.release().await;
                return None;
            }
        };
        self.warned = false;
        let lost = CancellationToken::new();
        let release = CancellationToken::new();
        tokio::spawn(keep(lock, lost.clone(), release.clone()));
        Some(Term {
            fence,
            previous: previous.filter(|p| *p != self.node),
            lost,
            release,
        })
    }

    /// Waits until this node is elected; `None` at shutdown.
    pub async fn elected(&mut self, shutdown: &CancellationToken) -> Option<Term> {
        loop {
            if let Some(term) = self.attempt().await {
                return Some(term);
            }
            tokio::select! {
                () = tokio::time::sleep(TRY_EVERY) => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// The watcher holds its lock but went quiet past its lease (hung, or
    /// its host cut off while its session lingers): its session is ended,
    /// and the lock is free at the next try.
    async fn end_quiet_watcher(&mut self) {
        match self.store.watch_holder().await {
            Ok(Some(holder)) if holder.quiet && holder.node != self.node => {
                tracing::warn!(watcher = %holder.node, "the data dir's watcher has not heartbeated for longer than its lease: ending its database session to take over");
                if let Err(e) = self.locker.end_holder_session().await {
                    self.complain(&e);
                }
            }
            Ok(_) => {}
            Err(e) => self.complain(&e),
        }
    }

    fn complain(&mut self, e: &crate::store::StoreError) {
        if !self.warned {
            tracing::warn!(error = %e, "the election of the data dir's watcher cannot reach the database; trying again");
            self.warned = true;
        }
    }
}

/// Holds the lock for a term: checks its session every second (a broken
/// one ends the term) and gives it up when the term is dropped.
async fn keep(mut lock: WatchLock, lost: CancellationToken, release: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = lock.check().await {
                    tracing::warn!(error = %e, "the database session holding this agent's election as watcher broke: it stops watching");
                    lost.cancel();
                    return;
                }
            }
            () = release.cancelled() => {
                lock.release().await;
                return;
            }
        }
    }
}
