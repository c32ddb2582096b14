//! Row types and their inserts.

use sqlx::{Any, Transaction};

pub use crate::api::RunStatus;

use super::StoreError;
use crate::events::Event;

/// A run to insert with its event.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub workflow: String,
    pub event: Event,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub queued_ms: i64,
    /// The node that will run it and until when it holds the lease (an
    /// unfinished run); it starts with fence 1.
    pub lease: Option<(String, i64)>,
    /// Any node may run it, not only one serving its origin: every step of
    /// its workflow is a webhook ([`crate::definitions::model::any_node`]).
    pub anywhere: bool,
    /// The run this one re-runs, and where it starts.
    pub rerun: Option<Rerun>,
    /// The backfill that made it.
    pub backfill: Option<String>,
}

/// A run made again for the event of another (`of`); from its failed step,
/// when `from` is given.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerun {
    pub of: String,
    pub from: Option<FromStep>,
    /// The definition revision it runs on, when not the live one.
    pub revision: Option<i64>,
}

/// Where a re-run from the failed step starts: the step's index, and the
/// earlier steps' recorded results (`steps.NAME.*` in its templates).
#[derive(Debug, Clone, PartialEq)]
pub struct FromStep {
    pub idx: usize,
    pub steps: serde_json::Value,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub attempt: u32,
    pub succeeded: bool,
    pub error: Option<String>,
    /// The run's status after this attempt.
    pub next: RunStatus,
    pub at_ms: i64,
    /// When the next attempt is due, for a `retrying` run.
    pub next_attempt_ms: Option<i64>,
}

/// A run found unfinished at start.
#[derive(Debug, Clone)]
pub struct UnfinishedRun {
    pub id: String,
    /// The fencing counter of this node's claim.
    pub fence: i64,
    pub workflow: String,
    pub status: RunStatus,
    pub attempts: u32,
    pub next_attempt_ms: Option<i64>,
    /// The event as this run's workflow saw it.
    pub event: Event,
    /// A re-run from a failed step starts there.
    pub from: Option<FromStep>,
    /// A re-run on its original's revision: that revision.
    pub revision: Option<i64>,
}

/// One step of one attempt, as recorded.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub run_id: String,
    /// The claim it is recorded under: a node that lost the run records
    /// no step over its new holder's.
    pub fence: i64,
    pub attempt: u32,
    pub idx: usize,
    pub name: String,
    pub status: crate::api::StepStatus,
    pub exit_code: Option<i32>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
}

pub(super) async fn insert_runs(
    tx: &mut Transaction<'_, Any>,
    runs: &[NewRun],
    batch: super::Batch,
    origin: &str,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO runs (id, workflow, event_id, event_type, path, old_path, status, reason, chain_depth, queued_ms, finished_ms, owner, lease_until_ms, fence, origin, anywhere, rerun_of, from_step, carried, backfill, revision) VALUES {}",
        batch.values(21, runs.len())
    );
    let mut q = sqlx::query(&sql);
    for r in runs {
        let finished = r.status.is_final().then_some(r.queued_ms);
        q = q
            .bind(&r.id)
            .bind(&r.workflow)
            .bind(&r.event.id)
            .bind(r.event.kind.as_str())
            .bind(&r.event.path)
            .bind(&r.event.old_path)
            .bind(r.status.as_str())
            .bind(&r.reason)
            .bind(i64::from(r.event.chain_depth()))
            .bind(r.queued_ms)
            .bind(finished)
            .bind(r.lease.as_ref().map(|(owner, _)| owner.as_str()))
            .bind(r.lease.as_ref().map(|(_, until)| *until))
            .bind(if r.lease.is_some() { 1i64 } else { 0 })
            .bind(origin)
            .bind(i64::from(r.anywhere))
            .bind(r.rerun.as_ref().map(|x| x.of.as_str()))
            .bind(
                r.rerun
                    .as_ref()
                    .and_then(|x| x.from.as_ref())
                    .map(|f| f.idx as i64),
            )
            .bind(
                r.rerun
                    .as_ref()
                    .and_then(|x| x.from.as_ref())
                    .map(|f| f.steps.to_string()),
            )
            .bind(&r.backfill)
            .bind(r.rerun.as_ref().and_then(|x| x.revision));
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Records steps (one row per run, attempt and step; a later record of the
/// same step replaces the earlier), each only while its claim (fence) is
/// the run's latest.
pub(super) async fn insert_steps(
    tx: &mut Transaction<'_, Any>,
    steps: &[&StepRecord],
    batch: super::Batch,
) -> Result<(), StoreError> {
    // `WHERE`, not `JOIN ... ON`: SQLite reads an `ON` before `ON CONFLICT`
    // as the join's.
    let sql = format!(
        "WITH v (run_id, fence, attempt, idx, name, status, exit_code, started_ms, finished_ms, stdout, stderr, output, error) AS (VALUES {}) \
         INSERT INTO steps (run_id, attempt, idx, name, status, exit_code, started_ms, finished_ms, stdout, stderr, output, error) \
         SELECT v.run_id, v.attempt, v.idx, v.name, v.status, v.exit_code, v.started_ms, v.finished_ms, v.stdout, v.stderr, v.output, v.error \
         FROM v, runs WHERE runs.id = v.run_id AND runs.fence = v.fence \
         ON CONFLICT (run_id, attempt, idx) DO UPDATE SET name = excluded.name, status = excluded.status, \
         exit_code = excluded.exit_code, started_ms = excluded.started_ms, finished_ms = excluded.finished_ms, \
         stdout = excluded.stdout, stderr = excluded.stderr, output = excluded.output, error = excluded.error",
        batch.values(13, steps.len())
    );
    let mut q = sqlx::query(&sql);
    for s in steps {
        q = q
            .bind(&s.run_id)
            .bind(s.fence)
            .bind(i64::from(s.attempt))
            .bind(s.idx as i64)
            .bind(&s.name)
            .bind(s.status.as_str())
            .bind(s.exit_code.map(i64::from))
            .bind(s.started_ms)
            .bind(s.finished_ms)
            .bind(&s.stdout)
            .bind(&s.stderr)
            .bind(&s.output)
            .bind(&s.error);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}
