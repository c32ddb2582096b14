//! The hot path's writes, grouped: run tasks hand their state changes
//! (attempt started, step recorded, attempt finished, run closed) to one
//! writer, which commits whatever has queued up in one transaction. A run no
//! longer pays a commit per change, and the order of one run's changes is
//! kept (one queue, one writer). The database stays the truth: a change not
//! yet committed when the process dies leaves its run `queued` or `running`
//! there, and the next start runs it again (at least once).

use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::records::{self, AttemptEnd, RunStatus, StepRecord};
use super::{Store, StoreError};

/// Changes queued at most; a full queue makes run tasks wait.
const QUEUE: usize = 4096;
/// Changes per transaction at most.
const BATCH: usize = 1024;
/// How long a batch is retried while the database is unreachable.
const GIVE_UP: Duration = Duration::from_secs(60);

/// One recorded change of a run.
#[derive(Debug, Clone)]
pub enum Write {
    AttemptStarted {
        run_id: String,
        fence: i64,
        attempt: u32,
        at_ms: i64,
    },
    Step(StepRecord),
    /// Ends an attempt and moves the run to `end.next` (`retrying` or final).
    AttemptFinished {
        run_id: String,
        fence: i64,
        end: AttemptEnd,
    },
    /// Ends a run that never started an attempt (`skipped`, `cancelled`).
    RunClosed {
        run_id: String,
        fence: i64,
        status: RunStatus,
        reason: String,
        at_ms: i64,
    },
}

/// Changes to a run are recorded only while the claim that made them is
/// the run's latest (`fence`); a node that lost the run records nothing.
fn lost_lease(run_id: &str, done: &sqlx::any::AnyQueryResult) -> bool {
    if done.rows_affected() == 0 {
        tracing::warn!(
            run = run_id,
            "this node lost the run's lease to another node: the change is not recorded"
        );
        return true;
    }
    false
}

// Nearly every message is a `Write`: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(Write),
    Flush(oneshot::Sender<()>),
}

/// A handle on the writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// Starts the writer task on `store`.
    pub fn start(store: Store) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer_worker(store, rx));
        Writer { tx }
    }

    /// Queues a change; waits only while the queue is full.
    pub async fn send(&self, w: Write) {
        if self.tx.send(Msg::Write(w)).await.is_err() {
            tracing::error!("the store writer stopped; a run change is not recorded");
        }
    }

    /// Waits until everything queued before it is committed (or given up).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn writer_worker(store: Store, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<Write> = Vec::with_capacity(BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Write(w) => batch.push(w),
                Msg::Flush(done) => flushes.push(done),
            }
            next = if batch.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            commit(&store, &batch).await;
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Commits a batch; retries while the database is unreachable, and falls
/// back to one change per transaction when one of them is refused, so one
/// bad change cannot lose the others.
async fn commit(store: &Store, batch: &[Write]) {
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        match store.write(batch).await {
            Ok(()) => return,
            Err(e) if e.is_transient() && started.elapsed() < GIVE_UP => {
                tracing::warn!(error = %e, changes = batch.len(), "the database is unreachable; retrying the run changes");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) if batch.len() > 1 && !e.is_transient() => {
                tracing::warn!(error = %e, "a batch of run changes was refused; recording them one by one");
                for w in batch {
                    if let Err(e) = store.write(std::slice::from_ref(w)).await {
                        tracing::error!(error = %e, change = ?w, "recording a run change failed");
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, changes = batch.len(), "recording run changes failed; their runs will be taken up again at the next start");
                return;
            }
        }
    }
}

impl StoreError {
    /// True when trying again later may succeed: the database is down,
    /// restarting, unreachable or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sql(e) => is_transient(e),
            _ => false,
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P03" || c == "5")
}

impl Store {
    /// Records changes in one transaction, in order.
    pub async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            write_one(&mut tx, w).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn write_one(tx: &mut Transaction<'_, Any>, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::AttemptStarted {
            run_id,
            fence,
            attempt,
            at_ms,
        } => {
            let done = sqlx::query("UPDATE runs SET status = 'running', attempts = $1, started_ms = COALESCE(started_ms, $2) WHERE id = $3 AND fence = $4")
                .bind(i64::from(*attempt))
                .bind(at_ms)
                .bind(run_id)
                .bind(fence)
                .execute(&mut **tx)
                .await?;
            if lost_lease(run_id, &done) {
                return Ok(());
            }
            sqlx::query("INSERT INTO attempts (run_id, attempt, status, started_ms) VALUES ($1, $2, 'running', $3) \
                         ON CONFLICT (run_id, attempt) DO UPDATE SET status = 'running', error = NULL, finished_ms = NULL, started_ms = excluded.started_ms")
                .bind(run_id)
                .bind(i64::from(*attempt))
                .bind(at_ms)
                .execute(&mut **tx)
                .await?;
        }
        Write::Step(s) => records::insert_step(tx, s).await?,
        Write::AttemptFinished { run_id, fence, end } => {
            let owned = sqlx::query("SELECT 1 AS x FROM runs WHERE id = $1 AND fence = $2")
                .bind(run_id)
                .bind(fence)
                .fetch_optional(&mut **tx)
                .await?;
            if owned.is_none() {
                tracing::warn!(run = %run_id, "this node lost the run's lease to another node: the attempt's end is not recorded");
                return Ok(());
            }
            sqlx::query("UPDATE attempts SET status = $1, error = $2, finished_ms = $3 WHERE run_id = $4 AND attempt = $5")
                .bind(if end.succeeded { "succeeded" } else { "failed" })
                .bind(&end.error)
                .bind(end.at_ms)
                .bind(run_id)
                .bind(i64::from(end.attempt))
                .execute(&mut **tx)
                .await?;
            let final_state = end.next.is_final();
            sqlx::query(
                "UPDATE runs SET status = $1, error = $2, next_attempt_ms = $3, \
                 finished_ms = CASE WHEN $4 THEN $5 ELSE NULL END, \
                 duration_ms = CASE WHEN $4 THEN $5 - COALESCE(started_ms, $5) ELSE NULL END WHERE id = $6 AND fence = $7",
            )
            .bind(end.next.as_str())
            .bind(&end.error)
            .bind(end.next_attempt_ms)
            .bind(final_state)
            .bind(end.at_ms)
            .bind(run_id)
            .bind(fence)
            .execute(&mut **tx)
            .await?;
        }
        Write::RunClosed {
            run_id,
            fence,
            status,
            reason,
            at_ms,
        } => {
            let done = sqlx::query("UPDATE runs SET status = $1, reason = $2, finished_ms = $3 WHERE id = $4 AND fence = $5")
                .bind(status.as_str())
                .bind(reason)
                .bind(at_ms)
                .bind(run_id)
                .bind(fence)
                .execute(&mut **tx)
                .await?;
            lost_lease(run_id, &done);
        }
    }
    Ok(())
}
