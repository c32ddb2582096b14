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

use super::records::{self, AttemptEnd, RunStatus, StepRecord};
use super::{Store, StoreError};
use crate::api::AttemptStatus;

/// Changes queued at most; a full queue makes run tasks wait.
const QUEUE: usize = 4096;
/// Changes per transaction at most.
const BATCH: usize = 1024;
/// How long a batch is retried while the database is unreachable.
const GIVE_UP: Duration = Duration::from_secs(60);

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

impl Store {
    /// Records changes in one transaction, in order: cut into segments in
    /// which each run has at most one attempt start and nothing after its
    /// attempt's end, and each segment written as a few multi-row
    /// statements (starts, steps, ends, closes), so a batch costs a handful
    /// of round trips, not several per run.
    pub async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        let batch = self.batch();
        let mut tx = self.pool.begin().await?;
        for segment in segments(writes) {
            write_segment(&mut tx, segment, batch).await?;
        }
        tx.commit().await?;
        Ok(())
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
        write_starts(tx, chunk, batch).await?;
    }
    for chunk in steps.chunks(batch.rows) {
        records::insert_steps(tx, chunk, batch).await?;
    }
    for chunk in finished.chunks(batch.rows) {
        write_finishes(tx, chunk, batch).await?;
    }
    for chunk in closed.chunks(batch.rows) {
        write_closes(tx, chunk, batch).await?;
    }
    Ok(())
}

/// Attempts starting: the runs `running` (under their claim), and an
/// attempt row each.
async fn write_starts(
    tx: &mut Transaction<'_, Any>,
    chunk: &[&AttemptStart],
    batch: super::Batch,
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
    let kept = still_held(q.fetch_all(&mut **tx).await?, chunk, |w| &w.run_id);
    if kept.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO attempts (run_id, attempt, status, started_ms) VALUES {} \
         ON CONFLICT (run_id, attempt) DO UPDATE SET status = 'running', error = NULL, finished_ms = NULL, started_ms = excluded.started_ms",
        batch.values(4, kept.len())
    );
    let mut q = sqlx::query(&sql);
    for w in kept {
        q = q
            .bind(&w.run_id)
            .bind(i64::from(w.attempt))
            .bind(AttemptStatus::Running.as_str())
            .bind(w.at_ms);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Attempts ending: the runs to their next state, the attempts closed.
async fn write_finishes(
    tx: &mut Transaction<'_, Any>,
    chunk: &[&AttemptFinish],
    batch: super::Batch,
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
    let kept = still_held(q.fetch_all(&mut **tx).await?, chunk, |w| &w.run_id);
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
    still_held(q.fetch_all(&mut **tx).await?, chunk, |w| &w.run_id);
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
