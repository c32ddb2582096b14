//! The hot path's writes, grouped: run tasks hand their state changes
//! (attempt started, step recorded, attempt finished, run closed) to one
//! writer, which commits whatever has queued up in one transaction. A run no
//! longer pays a commit per change, and the order of one run's changes is
//! kept (one queue, one writer). The database stays the truth: a change not
//! yet committed when the process dies leaves its run `queued` or `running`
//! there, and the next start runs it again (at least once).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::records::{self, AttemptEnd, RunStatus, StepRecord};
use super::{Store, StoreError};
use crate::api::AttemptStatus;

/// Changes queued at most; a full queue makes run tasks wait.
const QUEUE: usize = 4096;
/// Changes per transaction at most.
const BATCH: usize = 1024;
/// How long, once the agent is stopping, a batch is still retried while
/// the database is unreachable. Until then it is retried as long as it
/// takes: a change not recorded leaves its run unfinished in the store, run
/// again at the next start.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One recorded change of a run.
#[derive(Debug, Clone)]
pub enum Write {
    AttemptStarted(AttemptStart),
    Step(StepRecord),
    AttemptFinished(AttemptFinish),
    RunClosed(RunClose),
}

/// A run starts an attempt: `running`.
#[derive(Debug, Clone)]
pub struct AttemptStart {
    pub run_id: String,
    /// The claim the change is made under (see [`still_held`]).
    pub fence: i64,
    pub attempt: u32,
    pub at_ms: i64,
}

/// Ends an attempt and moves the run to `end.next` (`retrying` or final).
#[derive(Debug, Clone)]
pub struct AttemptFinish {
    pub run_id: String,
    pub fence: i64,
    pub end: AttemptEnd,
}

/// Ends a run that never started an attempt (`skipped`, `cancelled`).
#[derive(Debug, Clone)]
pub struct RunClose {
    pub run_id: String,
    pub fence: i64,
    pub status: RunStatus,
    pub reason: String,
    pub at_ms: i64,
}

// Nearly every message is a `Write`: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// A change, and who waits for its commit (told whether it was
    /// recorded: false when the run's claim is no longer this node's).
    Write(Write, Option<oneshot::Sender<bool>>),
    Flush(oneshot::Sender<()>),
    Renew(Renewal),
}

/// A lease renewal, made by the writer between its transactions: run
/// changes and renewals of the same runs then never wait on each other's
/// row locks (which PostgreSQL would end as a deadlock).
struct Renewal {
    held: Vec<(String, i64)>,
    lease_ms: i64,
    done: oneshot::Sender<Result<HashSet<String>, StoreError>>,
}

/// A handle on the writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// Starts the writer task on `store`; once `stopping` is cancelled, an
    /// unreachable database is waited for [`STOP_WAIT`] at most.
    pub fn start(store: Store, stopping: CancellationToken) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer_worker(store, rx, stopping));
        Writer { tx }
    }

    /// Queues a change; waits only while the queue is full (the database
    /// is slow or away: run tasks slow down, nothing is dropped).
    pub async fn send(&self, w: Write) {
        if self.tx.send(Msg::Write(w, None)).await.is_err() {
            tracing::error!("the store writer stopped; a run change is not recorded");
        }
    }

    /// Queues a change and waits for its commit: true once it is recorded,
    /// false when the run's claim is no longer this node's (another node
    /// took the run) or the writer stopped.
    pub async fn record(&self, w: Write) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Write(w, Some(done))).await.is_err() {
            return false;
        }
        wait.await.unwrap_or(false)
    }

    /// Renews this node's leases on the runs `held` (see
    /// [`Store::renew_leases`]) once the changes queued before are
    /// committed; returns the runs it still holds.
    pub async fn renew(
        &self,
        held: Vec<(String, i64)>,
        lease_ms: i64,
    ) -> Result<HashSet<String>, StoreError> {
        let (done, wait) = oneshot::channel();
        let renewal = Renewal {
            held,
            lease_ms,
            done,
        };
        if self.tx.send(Msg::Renew(renewal)).await.is_err() {
            return Err(StoreError::Sql(sqlx::Error::PoolClosed));
        }
        wait.await
            .unwrap_or(Err(StoreError::Sql(sqlx::Error::PoolClosed)))
    }

    /// Waits until everything queued before it is committed (or given up).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn writer_worker(store: Store, mut rx: mpsc::Receiver<Msg>, stopping: CancellationToken) {
    let mut batch: Vec<Write> = Vec::with_capacity(BATCH);
    let mut acks: Vec<(usize, oneshot::Sender<bool>)> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut renewals: Vec<Renewal> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Write(w, ack) => {
                    if let Some(ack) = ack {
                        acks.push((batch.len(), ack));
                    }
                    batch.push(w);
                }
                Msg::Flush(done) => flushes.push(done),
                Msg::Renew(r) => renewals.push(r),
            }
            next = if batch.len() < BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            let refused = commit(&store, &batch, &stopping).await;
            for (i, ack) in acks.drain(..) {
                let _ = ack.send(!refused.contains(run_of(&batch[i])));
            }
            batch.clear();
        }
        for r in renewals.drain(..) {
            let kept = store.renew_leases(&r.held, r.lease_ms).await;
            let _ = r.done.send(kept);
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Commits a batch, and returns the runs whose changes were not recorded.
/// Waits out an unreachable or busy database; when the batch is refused,
/// records its changes one by one, so one bad change cannot lose the
/// others; a change that can never be recorded (a bug) is logged and its
/// run's lease released, so that the run is taken up again, not forgotten.
async fn commit(store: &Store, batch: &[Write], stopping: &CancellationToken) -> HashSet<String> {
    match retrying(store, batch, stopping).await {
        Ok(refused) => refused,
        Err(e) if batch.len() > 1 && !e.is_transient() => {
            tracing::warn!(error = %e, "a batch of run changes was refused; recording them one by one");
            let mut refused = HashSet::new();
            for w in batch {
                match retrying(store, std::slice::from_ref(w), stopping).await {
                    Ok(r) => refused.extend(r),
                    Err(e) => {
                        give_up(store, w, &e).await;
                        refused.insert(run_of(w).to_owned());
                    }
                }
            }
            refused
        }
        Err(e) => {
            for w in batch {
                give_up(store, w, &e).await;
            }
            batch.iter().map(|w| run_of(w).to_owned()).collect()
        }
    }
}

/// One transaction, tried again while the error is transient (until
/// [`STOP_WAIT`] after the agent began stopping).
async fn retrying(
    store: &Store,
    batch: &[Write],
    stopping: &CancellationToken,
) -> Result<HashSet<String>, StoreError> {
    let mut wait = Duration::from_millis(50);
    let mut stop_seen: Option<std::time::Instant> = None;
    loop {
        match store.write(batch).await {
            Err(e) if e.is_transient() => {
                if stopping.is_cancelled()
                    && stop_seen
                        .get_or_insert_with(std::time::Instant::now)
                        .elapsed()
                        >= STOP_WAIT
                {
                    return Err(e);
                }
                tracing::warn!(error = %e, changes = batch.len(), "the database is unreachable or busy; retrying the run changes");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// A change not recorded: at a stop with the database away, its run stays
/// unfinished in the store and runs again at the next start; refused for
/// good, its lease is released so that a claim takes the run up again.
async fn give_up(store: &Store, w: &Write, e: &StoreError) {
    if e.is_transient() {
        tracing::error!(error = %e, run = run_of(w), "the database stayed away while stopping: a run change is not recorded; the run runs again at the next start");
        return;
    }
    tracing::error!(error = %e, change = ?w, "a run change can never be recorded; the run's lease is released so that it is taken up again");
    if let Err(e) = store.release_lease(run_of(w), fence_of(w)).await {
        tracing::error!(error = %e, run = run_of(w), "releasing the lease failed; the run is taken up when it runs out");
    }
}

impl Store {
    /// Records changes in one transaction, in order: cut into segments in
    /// which each run has at most one attempt start and nothing after its
    /// attempt's end, and each segment written as a few multi-row
    /// statements (starts, steps, ends, closes), so a batch costs a handful
    /// of round trips, not several per run.
    /// Returns the runs whose changes the fence refused (another node
    /// holds them now).
    pub async fn write(&self, writes: &[Write]) -> Result<HashSet<String>, StoreError> {
        let batch = self.batch();
        let mut refused = HashSet::new();
        let mut tx = self.pool.begin().await?;
        for segment in segments(writes) {
            write_segment(&mut tx, segment, batch, &self.node, &mut refused).await?;
        }
        tx.commit().await?;
        Ok(refused)
    }
}

fn fence_of(w: &Write) -> i64 {
    match w {
        Write::AttemptStarted(w) => w.fence,
        Write::AttemptFinished(w) => w.fence,
        Write::RunClosed(w) => w.fence,
        Write::Step(s) => s.fence,
    }
}

fn run_of(w: &Write) -> &str {
    match w {
        Write::AttemptStarted(w) => &w.run_id,
        Write::AttemptFinished(w) => &w.run_id,
        Write::RunClosed(w) => &w.run_id,
        Write::Step(s) => &s.run_id,
    }
}

/// Cuts `writes` where the order between statements of different kinds
/// would matter: a run starting a second attempt, or changing after its
/// attempt ended or it closed.
fn segments(writes: &[Write]) -> Vec<&[Write]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut started: HashSet<&str> = HashSet::new();
    let mut ended: HashSet<&str> = HashSet::new();
    for (i, w) in writes.iter().enumerate() {
        let run = run_of(w);
        let cut =
            ended.contains(run) || (matches!(w, Write::AttemptStarted(_)) && started.contains(run));
        if cut {
            out.push(&writes[start..i]);
            start = i;
            started.clear();
            ended.clear();
        }
        match w {
            Write::AttemptStarted(_) => {
                started.insert(run);
            }
            Write::AttemptFinished(_) | Write::RunClosed(_) => {
                ended.insert(run);
            }
            Write::Step(_) => {}
        }
    }
    if start < writes.len() {
        out.push(&writes[start..]);
    }
    out
}

/// Writes one segment: its changes grouped by kind, each kind as a few
/// multi-row statements.
async fn write_segment(
    tx: &mut Transaction<'_, Any>,
    seg: &[Write],
    batch: super::Batch,
    node: &str,
    refused: &mut HashSet<String>,
) -> Result<(), StoreError> {
    let mut started = Vec::new();
    let mut steps: Vec<&StepRecord> = Vec::new();
    // A later record of the same step replaces the earlier.
    let mut step_at: HashMap<(&str, u32, usize), usize> = HashMap::new();
    let mut finished = Vec::new();
    let mut closed = Vec::new();
    for w in seg {
        match w {
            Write::AttemptStarted(w) => started.push(w),
            Write::Step(s) => match step_at.entry((&s.run_id, s.attempt, s.idx)) {
                std::collections::hash_map::Entry::Occupied(e) => steps[*e.get()] = s,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(steps.len());
                    steps.push(s);
                }
            },
            Write::AttemptFinished(w) => finished.push(w),
            Write::RunClosed(w) => closed.push(w),
        }
    }
    for chunk in started.chunks(batch.rows) {
        write_starts(tx, chunk, batch, node, refused).await?;
    }
    for chunk in steps.chunks(batch.rows) {
        records::insert_steps(tx, chunk, batch).await?;
    }
    for chunk in finished.chunks(batch.rows) {
        write_finishes(tx, chunk, batch, refused).await?;
    }
    for chunk in closed.chunks(batch.rows) {
        write_closes(tx, chunk, batch, refused).await?;
    }
    Ok(())
}

/// Attempts starting: the runs `running` (under their claim), and an
/// attempt row each, with the node that runs it.
async fn write_starts(
    tx: &mut Transaction<'_, Any>,
    chunk: &[&AttemptStart],
    batch: super::Batch,
    node: &str,
    refused: &mut HashSet<String>,
) -> Result<(), StoreError> {
    let sql = format!(
        "WITH v (id, fence, attempts, at_ms) AS (VALUES {}) \
         UPDATE runs SET status = 'running', attempts = v.attempts, started_ms = COALESCE(runs.started_ms, v.at_ms) \
         FROM v WHERE runs.id = v.id AND runs.fence = v.fence RETURNING runs.id",
        batch.values(4, chunk.len())
    );
    let mut q = sqlx::query(&sql);
    for w in chunk {
        q = q
            .bind(&w.run_id)
            .bind(w.fence)
            .bind(i64::from(w.attempt))
            .bind(w.at_ms);
    }
    let kept = still_held(q.fetch_all(&mut **tx).await?, chunk, |w| &w.run_id, refused);
    if kept.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO attempts (run_id, attempt, status, started_ms, node) VALUES {} \
         ON CONFLICT (run_id, attempt) DO UPDATE SET status = 'running', error = NULL, finished_ms = NULL, \
         started_ms = excluded.started_ms, node = excluded.node",
        batch.values(5, kept.len())
    );
    let mut q = sqlx::query(&sql);
    for w in kept {
        q = q
            .bind(&w.run_id)
            .bind(i64::from(w.attempt))
            .bind(AttemptStatus::Running.as_str())
            .bind(w.at_ms)
            .bind(node);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Attempts ending: the runs to their next state, the attempts closed.
async fn write_finishes(
    tx: &mut Transaction<'_, Any>,
    chunk: &[&AttemptFinish],
    batch: super::Batch,
    refused: &mut HashSet<String>,
) -> Result<(), StoreError> {
    let sql = format!(
        "WITH v (id, fence, status, error, next_ms, fin, at_ms) AS (VALUES {}) \
         UPDATE runs SET status = v.status, error = v.error, next_attempt_ms = v.next_ms, \
         finished_ms = CASE WHEN v.fin THEN v.at_ms ELSE NULL END, \
         duration_ms = CASE WHEN v.fin THEN v.at_ms - COALESCE(runs.started_ms, v.at_ms) ELSE NULL END \
         FROM v WHERE runs.id = v.id AND runs.fence = v.fence RETURNING runs.id",
        batch.values(7, chunk.len())
    );
    let mut q = sqlx::query(&sql);
    for w in chunk {
        q = q
            .bind(&w.run_id)
            .bind(w.fence)
            .bind(w.end.next.as_str())
            .bind(&w.end.error)
            .bind(w.end.next_attempt_ms)
            .bind(w.end.next.is_final())
            .bind(w.end.at_ms);
    }
    let kept = still_held(q.fetch_all(&mut **tx).await?, chunk, |w| &w.run_id, refused);
    if kept.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "WITH v (run_id, attempt, status, error, at_ms) AS (VALUES {}) \
         UPDATE attempts SET status = v.status, error = v.error, finished_ms = v.at_ms \
         FROM v WHERE attempts.run_id = v.run_id AND attempts.attempt = v.attempt",
        batch.values(5, kept.len())
    );
    let mut q = sqlx::query(&sql);
    for w in kept {
        q = q
            .bind(&w.run_id)
            .bind(i64::from(w.end.attempt))
            .bind(
                if w.end.succeeded {
                    AttemptStatus::Succeeded
                } else {
                    AttemptStatus::Failed
                }
                .as_str(),
            )
            .bind(&w.end.error)
            .bind(w.end.at_ms);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Runs closed without an attempt.
async fn write_closes(
    tx: &mut Transaction<'_, Any>,
    chunk: &[&RunClose],
    batch: super::Batch,
    refused: &mut HashSet<String>,
) -> Result<(), StoreError> {
    let sql = format!(
        "WITH v (id, fence, status, reason, at_ms) AS (VALUES {}) \
         UPDATE runs SET status = v.status, reason = v.reason, finished_ms = v.at_ms \
         FROM v WHERE runs.id = v.id AND runs.fence = v.fence RETURNING runs.id",
        batch.values(5, chunk.len())
    );
    let mut q = sqlx::query(&sql);
    for w in chunk {
        q = q
            .bind(&w.run_id)
            .bind(w.fence)
            .bind(w.status.as_str())
            .bind(&w.reason)
            .bind(w.at_ms);
    }
    still_held(q.fetch_all(&mut **tx).await?, chunk, |w| &w.run_id, refused);
    Ok(())
}

/// The changes of `chunk` whose run the fenced update just touched (its
/// `RETURNING` ids): changes to a run are recorded only while the claim that
/// made them is the run's latest; a node that lost the run records nothing,
/// and says so.
fn still_held<'a, T>(
    returned: Vec<sqlx::any::AnyRow>,
    chunk: &'a [&'a T],
    run_of: impl Fn(&T) -> &str,
    refused: &mut HashSet<String>,
) -> Vec<&'a T> {
    use sqlx::Row;
    let accepted: HashSet<String> = returned.iter().map(|r| r.get::<String, _>(0)).collect();
    chunk
        .iter()
        .copied()
        .filter(|w| {
            let run_id = run_of(w);
            let held = accepted.contains(run_id);
            if !held {
                refused.insert(run_id.to_owned());
                tracing::warn!(
                    run = run_id,
                    "this node lost the run's lease to another node: the change is not recorded"
                );
            }
            held
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(run: &str, attempt: u32) -> Write {
        Write::AttemptStarted(AttemptStart {
            run_id: run.into(),
            fence: 1,
            attempt,
            at_ms: 0,
        })
    }

    fn finished(run: &str, attempt: u32) -> Write {
        Write::AttemptFinished(AttemptFinish {
            run_id: run.into(),
            fence: 1,
            end: AttemptEnd {
                attempt,
                succeeded: false,
                error: None,
                next: RunStatus::Retrying,
                at_ms: 0,
                next_attempt_ms: None,
            },
        })
    }

    #[test]
    fn segments_cut_where_one_run_would_change_twice() {
        let writes = vec![
            started("a", 1),
            started("b", 1),
            finished("a", 1),
            finished("b", 1),
            started("a", 2),
            started("c", 1),
            finished("c", 1),
        ];
        let lens: Vec<usize> = segments(&writes).iter().map(|s| s.len()).collect();
        assert_eq!(lens, [4, 3]);
        let twice = vec![started("a", 1), started("a", 2)];
        let lens: Vec<usize> = segments(&twice).iter().map(|s| s.len()).collect();
        assert_eq!(lens, [1, 1]);
    }
}
