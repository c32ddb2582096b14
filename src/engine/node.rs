//! This agent as a node of the fleet: its node id, taken at start and one
//! running agent's, and its heartbeat into the `nodes` table (what
//! `nexusd nodes list` shows).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use crate::store::{NodeInfo, NodeStatus, Store};

/// How the data dir's watcher sees changes (`--watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchMode {
    /// inotify: told at once of every change on this host.
    Inotify,
    /// The tree compared with the index every `--watch-interval`.
    Poll,
}

/// What this agent does for its data dir, for its heartbeat: a change is
/// reported at once.
#[derive(Default)]
pub struct Role {
    watching: AtomicU8,
    changed: Notify,
}

impl Role {
    pub fn set_watching(&self, watching: bool) {
        if self.watching.swap(u8::from(watching), Ordering::Relaxed) != u8::from(watching) {
            self.changed.notify_one();
        }
    }

    pub fn is_watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed) == 1
    }
}

/// Takes this agent's node id: the one asked for (`--node-id`), which a
/// running agent must not hold; else the host's name and the data dir
/// (the same agent restarted is the same node, and takes its own
/// unfinished runs back at once), then `#2`, `#3`, ... while other agents
/// of this host serve the data dir.
pub async fn register(store: &Store, asked: Option<&str>, me: &NodeInfo) -> anyhow::Result<String> {
    if let Some(id) = asked {
        return match store.register_node(id, me).await? {
            Ok(()) => Ok(id.to_owned()),
            Err(in_use) => Err(anyhow::anyhow!("{in_use}")),
        };
    }
    let base = format!("{}:{}", me.host, me.data_dir);
    for n in 1..=64 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}#{n}")
        };
        if store.register_node(&id, me).await?.is_ok() {
            return Ok(id);
        }
    }
    anyhow::bail!(
        "64 running agents of this host serve `{}` already",
        me.data_dir
    )
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// How the watcher watches, for the heartbeat's account of it.
pub struct Watching {
    pub mode: WatchMode,
    /// `--watch-interval`.
    pub interval: Duration,
    /// `--poll-interval`: how often a degraded watch compares the tree.
    pub poll: Duration,
}

impl Watching {
    fn health(&self, role: &Role) -> String {
        if !role.is_watching() {
            return "standby".to_owned();
        }
        match self.mode {
            WatchMode::Poll => format!("poll every {}", humantime::format_duration(self.interval)),
            WatchMode::Inotify if crate::metrics::METRICS.watch_degraded() => format!(
                "inotify, degraded: the watch limit is reached, some directories are compared every {}",
                humantime::format_duration(self.poll)
            ),
            WatchMode::Inotify => "inotify".to_owned(),
        }
    }
}

/// Keeps this node's row fresh, a third of the lease apart (at most 5 s):
/// its role, its runs in flight, how it watches. When another agent took
/// the node id meanwhile (this one was quiet past its lease: stopped, or
/// cut off), this agent stops, with that error: two agents must not share
/// one.
pub async fn heartbeat_worker(
    store: Store,
    me: NodeInfo,
    role: Arc<Role>,
    dispatcher: Dispatcher,
    watching: Watching,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let period = Duration::from_millis(u64::try_from(me.lease_ms / 3).unwrap_or(0))
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = role.changed.notified() => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        let status = NodeStatus {
            watcher: role.is_watching(),
            in_flight: i64::try_from(dispatcher.in_flight()).unwrap_or(i64::MAX),
            watch: watching.health(&role),
        };
        match store.heartbeat(&me, &status).await {
            Ok(true) => {}
            Ok(false) => {
                shutdown.cancel();
                anyhow::bail!(
                    "another agent took this node's id `{}` while this one was quiet past its lease: stopping",
                    store.node()
                );
            }
            Err(e) => tracing::warn!(error = %e, "the heartbeat could not be recorded"),
        }
    }
}
