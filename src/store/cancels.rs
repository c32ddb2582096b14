//! Cancels: a user stops runs that have not finished. The run is recorded
//! `cancelled` at once, wherever it is (queued in the store, held by a
//! node, running there), its claim's fence raised so that whatever its
//! node still writes for it is refused; the node that holds it finds it
//! gone at its next lease renewal (told at once through `nexus_cancels`)
//! and stops it, killing its step.

use sqlx::Row;

use super::{RunStatus, Store, StoreError, notify};

/// What a cancel did to one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled; its state before.
    Cancelled(RunStatus),
    /// Already final: left as it was.
    Final(RunStatus),
    Missing,
}

/// One run a cancel was asked for.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub id: String,
    /// Its workflow and path (empty: no such run).
    pub workflow: String,
    pub path: String,
    pub outcome: CancelOutcome,
}

impl Cancel {
    /// Its state before, when the cancel cancelled it.
    pub fn was(&self) -> Option<RunStatus> {
        match self.outcome {
            CancelOutcome::Cancelled(was) => Some(was),
            _ => None,
        }
    }
}

/// Runs per cancel transaction.
const PER_TRANSACTION: usize = 500;

impl Store {
    /// Cancels the unfinished runs among `ids`, recorded with the reason
    /// `by USER` (their running attempt `cancelled` too), and tells the
    /// nodes. Returns each id's outcome, in the order given.
    pub async fn cancel_runs(&self, ids: &[String], by: &str) -> Result<Vec<Cancel>, StoreError> {
        let reason = format!("by {by}");
        let mut outcomes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PER_TRANSACTION) {
            let mut wait = std::time::Duration::from_millis(20);
            let mut tries = 0;
            loop {
                match self.cancel_chunk(chunk, &reason).await {
                    Ok(done) => {
                        outcomes.extend(done);
                        break;
                    }
                    // Behind the writer (SQLite's busy snapshot; a
                    // PostgreSQL deadlock): again, a few times.
                    Err(e) if e.is_transient() && tries < 5 => {
                        tries += 1;
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(outcomes)
    }

    async fn cancel_chunk(
        &self,
        chunk: &[String],
        reason: &str,
    ) -> Result<Vec<Cancel>, StoreError> {
        let mut outcomes = Vec::with_capacity(chunk.len());
        let now = self.now_ms();
        let mut tx = self.pool.begin().await?;
        // A write first: SQLite takes its write lock now (waiting out
        // the writer) rather than failing at the update below, and
        // PostgreSQL locks the rows.
        let sql = format!(
            "UPDATE runs SET fence = fence WHERE id IN ({})",
            self.batch().list(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut *tx).await?;
        // Their states before, locked until the commit.
        let sql = format!(
            "SELECT id, status, workflow, path FROM runs WHERE id IN ({})",
            self.batch().list(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        let before: std::collections::HashMap<String, (RunStatus, String, String)> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                let status: String = r.get(1);
                let status = RunStatus::parse(&status).unwrap_or(RunStatus::Failed);
                (r.get(0), (status, r.get(2), r.get(3)))
            })
            .collect();
        let open: Vec<&String> = chunk
            .iter()
            .filter(|id| before.get(*id).is_some_and(|(s, ..)| !s.is_final()))
            .collect();
        if !open.is_empty() {
            let first = 4;
            let list: Vec<String> = (first..first + open.len())
                .map(|i| format!("${i}"))
                .collect();
            let sql = format!(
                "UPDATE runs SET status = 'cancelled', reason = $1, finished_ms = $2, \
                     duration_ms = $3 - COALESCE(started_ms, $3), next_attempt_ms = NULL, \
                     lease_until_ms = 0, fence = fence + 1 \
                     WHERE id IN ({}) AND status IN {}",
                list.join(", "),
                RunStatus::UNFINISHED_SQL
            );
            let mut q = sqlx::query(&sql).bind(reason).bind(now).bind(now);
            for id in &open {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
            let list: Vec<String> = (3..3 + open.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE attempts SET status = 'cancelled', error = $1, finished_ms = $2 \
                     WHERE run_id IN ({}) AND status = 'running'",
                list.join(", ")
            );
            let mut q = sqlx::query(&sql)
                .bind(format!("cancelled {reason}"))
                .bind(now);
            for id in &open {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
            notify::notify_in(self.backend, &mut *tx, notify::CANCELS).await?;
        }
        tx.commit().await?;
        for id in chunk {
            outcomes.push(match before.get(id) {
                None => Cancel {
                    id: id.clone(),
                    workflow: String::new(),
                    path: String::new(),
                    outcome: CancelOutcome::Missing,
                },
                Some((s, workflow, path)) => Cancel {
                    id: id.clone(),
                    workflow: workflow.clone(),
                    path: path.clone(),
                    outcome: if s.is_final() {
                        CancelOutcome::Final(*s)
                    } else {
                        CancelOutcome::Cancelled(*s)
                    },
                },
            });
        }
        Ok(outcomes)
    }

    /// The runs of `workflow` (with `stages`, a pipeline's: its stages') in
    /// `statuses` (and finished since then, when given), oldest first:
    /// their id, path and state.
    pub async fn runs_in_states(
        &self,
        workflow: &str,
        stages: bool,
        statuses: &[RunStatus],
        finished_since_ms: Option<i64>,
    ) -> Result<Vec<(String, String, RunStatus)>, StoreError> {
        let states: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (4..4 + states.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, path, status FROM runs WHERE (workflow = $1 OR ($2 = 1 AND substr(workflow, 1, length($1) + 1) = $1 || '/')) \
             AND COALESCE(finished_ms, 0) >= $3 AND status IN ({}) ORDER BY queued_ms, id",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(workflow)
            .bind(i64::from(stages))
            .bind(finished_since_ms.unwrap_or(0));
        for s in &states {
            q = q.bind(*s);
        }
        Ok(q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let status: String = r.get(2);
                (
                    r.get(0),
                    r.get(1),
                    RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                )
            })
            .collect())
    }
}
