//! Wake-ups between agents on one PostgreSQL: LISTEN/NOTIFY, with the
//! polls as the fallback (a notification sent while a listener was
//! reconnecting is lost, so a reconnect wakes everything once).
//!
//! Three channels: `nexus_definitions` (an apply, delete, rollback, pause
//! or resume committed), `nexus_runs` (runs wait to be claimed: a stopping
//! node released its own, or a commit left some unclaimed) and
//! `nexus_cancels` (runs were cancelled). Notifications are sent inside the transaction that
//! makes the change, so PostgreSQL delivers them only once it committed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Backend, Store};

pub const DEFINITIONS: &str = "nexus_definitions";
pub const RUNS: &str = "nexus_runs";
pub const CANCELS: &str = "nexus_cancels";

/// What other agents told this one. Each `Notify` keeps one permit, so a
/// wake-up that comes while its worker is busy is not lost.
#[derive(Clone, Default)]
pub struct Wakeups {
    pub definitions: Arc<Notify>,
    pub runs: Arc<Notify>,
    /// Runs were cancelled: a node holding one stops it.
    pub cancels: Arc<Notify>,
}

impl Store {
    /// On PostgreSQL, listens on both channels until `shutdown`; on SQLite
    /// (one agent per database file) nothing ever wakes.
    pub fn listen(&self, shutdown: CancellationToken) -> Wakeups {
        let wakeups = Wakeups::default();
        if let (Backend::Postgres, Some(url)) = (self.backend, self.url.clone()) {
            tokio::spawn(listen_worker(url, wakeups.clone(), shutdown));
        }
        wakeups
    }
}

async fn listen_worker(url: Arc<str>, wakeups: Wakeups, shutdown: CancellationToken) {
    loop {
        let Some(mut listener) = listening(&url, &shutdown).await else {
            return;
        };
        // Listening now; what was committed before, while this agent was
        // not listening, is for the workers to look for once.
        wake_all(&wakeups);
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                () = shutdown.cancelled() => return,
            };
            match received {
                Ok(Some(n)) if n.channel() == DEFINITIONS => wakeups.definitions.notify_one(),
                Ok(Some(n)) if n.channel() == RUNS => wakeups.runs.notify_one(),
                Ok(Some(n)) if n.channel() == CANCELS => wakeups.cancels.notify_one(),
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::info!("the listening connection was lost; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other agents' changes failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A listener on both channels, retried every second until it is up;
/// `None` at shutdown.
async fn listening(url: &str, shutdown: &CancellationToken) -> Option<PgListener> {
    loop {
        let connected = async {
            let mut l = PgListener::connect(url).await?;
            l.listen_all([DEFINITIONS, RUNS, CANCELS]).await?;
            Ok::<_, sqlx::Error>(l)
        };
        tokio::select! {
            l = connected => match l {
                Ok(l) => return Some(l),
                Err(e) => tracing::warn!(error = %e, "cannot listen for other agents' changes; polling meanwhile"),
            },
            () = shutdown.cancelled() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

fn wake_all(w: &Wakeups) {
    w.definitions.notify_one();
    w.runs.notify_one();
    w.cancels.notify_one();
}

/// `NOTIFY channel` as part of the caller's transaction, on PostgreSQL.
pub(super) async fn notify_in<'c, E>(
    backend: Backend,
    conn: E,
    channel: &str,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    if backend == Backend::Postgres {
        sqlx::query(&format!("NOTIFY {channel}"))
            .execute(conn)
            .await?;
    }
    Ok(())
}
