//! What the API and the CLI read: runs with their attempts and steps, and
//! per-workflow statistics.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{RunStatus, Store, StoreError};
use crate::api::{
    AttemptResult, AttemptStatus, Decision, EventRecord, EventType, Run, RunDetail, RunError,
    RunEvent, Stats, StepResult, StepStatus,
};

/// Which runs a listing covers.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// A workflow's name; with `stages`, a pipeline's: its stages' runs.
    pub workflow: Option<String>,
    pub stages: bool,
    pub status: Option<RunStatus>,
    /// Only runs whose event is on this path.
    pub path: Option<String>,
    pub limit: i64,
}

const RUN_COLUMNS: &str = "r.id, r.workflow, r.status, r.reason, r.attempts, r.chain_depth, r.queued_ms, r.started_ms, \
     r.finished_ms, r.duration_ms, r.error, r.event_id, r.event_type, r.path, r.old_path, r.origin, r.owner, r.rerun_of, r.from_step";

/// A time in RFC 3339 with milliseconds, as the API shows times.
pub fn timestamp(ms: Option<i64>) -> Option<String> {
    let ms = u64::try_from(ms?).ok()?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    Some(humantime::format_rfc3339_millis(t).to_string())
}

/// `column` names the workflow `name` or, with `stages`, one of its
/// stages (a pipeline's runs are its stages', named `PIPELINE/STAGE`): the
/// condition, on placeholders from `$first`, and what to bind to them. The
/// SQL spelling of [`crate::definitions::names::is_or_stage_of`]; a plain
/// workflow is one equality, which the index on the column serves.
fn membership(column: &str, name: &str, stages: bool, first: usize) -> (String, Vec<String>) {
    if stages {
        (
            format!("({column} = ${first} OR {column} LIKE ${})", first + 1),
            vec![name.to_owned(), format!("{name}/%")],
        )
    } else {
        (format!("{column} = ${first}"), vec![name.to_owned()])
    }
}

/// A stored status; one this agent does not know (a newer one's) reads as
/// `queued`.
fn status_of(r: &AnyRow) -> RunStatus {
    RunStatus::parse(&r.get::<String, _>("status")).unwrap_or(RunStatus::Queued)
}

/// A stored event type; one this agent does not know reads as a creation.
fn event_type(r: &AnyRow, column: &str) -> EventType {
    r.get::<String, _>(column)
        .parse()
        .unwrap_or(EventType::Created)
}

/// An event as it was taken in, from a row with its columns (`path`,
/// `old_path`, `size`, `mtime_ms`, `observed_ms`, `cause_run_id`,
/// `chain_depth`, `actor`, `source`) and its id and type in `id` and `kind`.
pub(super) fn event_row(r: &AnyRow, id: &str, kind: &str) -> crate::events::Event {
    let cause: Option<String> = r.get("cause_run_id");
    let depth: i64 = r.get("chain_depth");
    crate::events::Event {
        id: r.get(id),
        kind: event_type(r, kind),
        path: r.get("path"),
        old_path: r.get("old_path"),
        size: r.get::<Option<i64>, _>("size").map(|s| s.max(0) as u64),
        mtime_ms: r.get("mtime_ms"),
        observed_ms: r.get("observed_ms"),
        cause: cause.map(|run_id| crate::events::Cause {
            run_id,
            depth: u32::try_from(depth).unwrap_or(0),
        }),
        raw_abs: None,
        actor: r.get("actor"),
        source: crate::events::Source::parse(&r.get::<String, _>("source")),
    }
}

fn run_row(r: &AnyRow) -> Run {
    Run {
        id: r.get("id"),
        workflow: r.get("workflow"),
        status: status_of(r),
        reason: r.get("reason"),
        attempts: r.get("attempts"),
        chain_depth: r.get("chain_depth"),
        event: RunEvent {
            id: r.get("event_id"),
            kind: event_type(r, "event_type"),
            path: r.get("path"),
            old_path: r.get("old_path"),
            caused_by_run: None,
            actor: None,
            source: None,
        },
        origin: r.get("origin"),
        node: r.get("owner"),
        queued_at: timestamp(r.get("queued_ms")),
        started_at: timestamp(r.get("started_ms")),
        finished_at: timestamp(r.get("finished_ms")),
        duration_ms: r.get("duration_ms"),
        error: r.get("error"),
        rerun_of: r.get("rerun_of"),
    }
}

fn step_row(s: &AnyRow) -> StepResult {
    StepResult {
        name: s.get("name"),
        status: StepStatus::parse(&s.get::<String, _>("status")),
        exit_code: s.get("exit_code"),
        started_at: timestamp(s.get("started_ms")),
        finished_at: timestamp(s.get("finished_ms")),
        stdout: s.get("stdout"),
        stderr: s.get("stderr"),
        output: s
            .get::<Option<String>, _>("output")
            .map(|o| serde_json::from_str::<Value>(&o).unwrap_or(Value::String(o))),
        error: s.get("error"),
    }
}

impl Store {
    /// Runs, newest first.
    pub async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs r WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(w) = &f.workflow {
            let (condition, values) = membership("r.workflow", w, f.stages, binds.len() + 1);
            sql += &format!(" AND {condition}");
            binds.extend(values);
        }
        if let Some(s) = &f.status {
            binds.push(s.as_str().to_owned());
            sql += &format!(" AND r.status = ${}", binds.len());
        }
        if let Some(p) = &f.path {
            binds.push(p.clone());
            sql += &format!(" AND r.path = ${}", binds.len());
        }
        sql += &format!(
            " ORDER BY r.queued_ms DESC, r.id DESC LIMIT {}",
            f.limit.clamp(1, 10_000)
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(run_row).collect())
    }

    /// One run with its attempts and the steps of each.
    pub async fn run_detail(&self, id: &str) -> Result<Option<RunDetail>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, e.cause_run_id, e.actor, e.source FROM runs r LEFT JOIN events e ON e.id = r.event_id WHERE r.id = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut run = run_row(&row);
        run.event.caused_by_run = row.get("cause_run_id");
        run.event.actor = row.get("actor");
        run.event.source = row.get("source");
        let attempts = sqlx::query(
            "SELECT attempt, status, error, started_ms, finished_ms, node FROM attempts WHERE run_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let steps = sqlx::query(
            "SELECT attempt, idx, name, status, exit_code, started_ms, finished_ms, stdout, stderr, output, error \
             FROM steps WHERE run_id = $1 ORDER BY attempt, idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let last_attempt = attempts.last().map(|a| a.get::<i64, _>("attempt"));
        let attempt_log = attempts
            .iter()
            .map(|a| {
                let n: i64 = a.get("attempt");
                AttemptResult {
                    attempt: n,
                    status: AttemptStatus::parse(&a.get::<String, _>("status")),
                    node: a.get("node"),
                    error: a.get("error"),
                    started_at: timestamp(a.get("started_ms")),
                    finished_at: timestamp(a.get("finished_ms")),
                    steps: steps
                        .iter()
                        .filter(|s| s.get::<i64, _>("attempt") == n)
                        .map(step_row)
                        .collect(),
                }
            })
            .collect();
        // `steps` are those of the last attempt, the run's outcome.
        let steps = steps
            .iter()
            .filter(|s| Some(s.get::<i64, _>("attempt")) == last_attempt)
            .map(step_row)
            .collect();
        let reruns = sqlx::query("SELECT id FROM runs WHERE rerun_of = $1 ORDER BY queued_ms, id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(Some(RunDetail {
            from_step: row.get("from_step"),
            run,
            attempt_log,
            steps,
            reruns,
        }))
    }

    /// Counts and durations of a workflow's (or pipeline's) runs.
    pub async fn run_stats(&self, workflow: &str, stages: bool) -> Result<Stats, StoreError> {
        let (filter, binds) = membership("workflow", workflow, stages, 1);
        let sql = format!("SELECT status, COUNT(*) AS n FROM runs WHERE {filter} GROUP BY status");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let (mut total, mut succeeded, mut failed, mut skipped) = (0i64, 0i64, 0i64, 0i64);
        for r in &rows {
            let n: i64 = r.get("n");
            total += n;
            match status_of(r) {
                RunStatus::Succeeded => succeeded = n,
                RunStatus::Failed => failed = n,
                RunStatus::Skipped => skipped = n,
                _ => {}
            }
        }
        // Durations of finished runs that ran, newest 10,000: the average
        // and the 95th percentile.
        let sql = format!(
            "SELECT duration_ms FROM runs WHERE {filter} AND duration_ms IS NOT NULL \
             AND status IN ('succeeded', 'failed') ORDER BY finished_ms DESC LIMIT 10000"
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let mut durations: Vec<i64> = q
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.get("duration_ms"))
            .collect();
        durations.sort_unstable();
        let avg = (!durations.is_empty())
            .then(|| durations.iter().sum::<i64>() as f64 / durations.len() as f64);
        let p95 = (!durations.is_empty()).then(|| {
            let i = ((durations.len() as f64) * 0.95).ceil() as usize;
            durations[i.clamp(1, durations.len()) - 1]
        });
        let ran = succeeded + failed;
        Ok(Stats {
            workflow: workflow.to_owned(),
            total,
            succeeded,
            failed,
            skipped,
            success_rate: (ran > 0)
                .then(|| ((succeeded as f64 / ran as f64) * 10_000.0).round() / 10_000.0),
            avg_duration_ms: avg.map(|a| (a * 10.0).round() / 10.0),
            p95_duration_ms: p95,
            errors: failed,
        })
    }

    /// The failed attempts of a workflow's runs, newest first.
    pub async fn run_errors(
        &self,
        workflow: &str,
        stages: bool,
        limit: i64,
    ) -> Result<Vec<RunError>, StoreError> {
        let (filter, binds) = membership("r.workflow", workflow, stages, 1);
        let sql = format!(
            "SELECT r.id, r.workflow, r.path, a.attempt, a.error, a.finished_ms FROM attempts a JOIN runs r ON r.id = a.run_id \
             WHERE {filter} AND a.status = 'failed' ORDER BY a.finished_ms DESC LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| RunError {
                run: r.get("id"),
                workflow: r.get("workflow"),
                path: r.get("path"),
                attempt: r.get("attempt"),
                error: r.get("error"),
                at: timestamp(r.get("finished_ms")),
            })
            .collect())
    }
}

/// Which events a listing covers.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub path: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Events, newest first, each with its decision log; a decision that
    /// started a run shows the run's current status.
    /// One recorded event as it was taken in, and the data dir it happened
    /// in (what a replay matches again).
    pub async fn event_by_id(
        &self,
        id: &str,
    ) -> Result<Option<(crate::events::Event, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, type, path, old_path, size, mtime_ms, observed_ms, cause_run_id, chain_depth, actor, source, origin \
             FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (event_row(&r, "id", "type"), r.get("origin"))))
    }

    pub async fn list_events(&self, f: &EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        let mut sql = "SELECT id, type, path, old_path, size, observed_ms, cause_run_id, chain_depth, actor, source, origin, node, decisions \
                       FROM events WHERE 1 = 1"
            .to_owned();
        let mut n = 0;
        if f.path.is_some() {
            n += 1;
            sql += &format!(" AND path = ${n}");
        }
        if f.since_ms.is_some() {
            n += 1;
            sql += &format!(" AND observed_ms >= ${n}");
        }
        sql += &format!(" ORDER BY seq DESC LIMIT {}", f.limit.clamp(1, 10_000));
        let mut q = sqlx::query(&sql);
        if let Some(p) = &f.path {
            q = q.bind(p);
        }
        if let Some(t) = f.since_ms {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut events: Vec<EventRecord> = rows
            .iter()
            .map(|r| EventRecord {
                id: r.get("id"),
                kind: event_type(r, "type"),
                path: r.get("path"),
                old_path: r.get("old_path"),
                size: r.get("size"),
                observed_at: timestamp(r.get("observed_ms")),
                caused_by_run: r.get("cause_run_id"),
                chain_depth: r.get("chain_depth"),
                actor: r.get("actor"),
                source: r.get("source"),
                origin: r.get("origin"),
                node: r.get("node"),
                decisions: r
                    .get::<Option<String>, _>("decisions")
                    .and_then(|d| serde_json::from_str::<Vec<Decision>>(&d).ok())
                    .unwrap_or_default(),
            })
            .collect();
        // The runs' statuses now (a queued run may have finished, or been
        // superseded).
        let ids: Vec<String> = events
            .iter()
            .flat_map(|e| e.decisions.iter().filter_map(|d| d.run.clone()))
            .collect();
        let mut now: std::collections::HashMap<String, (RunStatus, Option<String>)> =
            std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, status, reason FROM runs WHERE id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                now.insert(r.get("id"), (status_of(&r), r.get("reason")));
            }
        }
        for d in events.iter_mut().flat_map(|e| e.decisions.iter_mut()) {
            if let Some((status, reason)) = d.run.as_ref().and_then(|id| now.get(id)) {
                d.run_status = Some(*status);
                if reason.is_some() {
                    d.reason.clone_from(reason);
                }
            }
        }
        Ok(events)
    }
}

impl Store {
    /// Unfinished runs by state, for the metrics.
    pub async fn queue_depth(&self) -> Result<Vec<(RunStatus, i64)>, StoreError> {
        let sql = format!(
            "SELECT status, COUNT(*) AS n FROM runs WHERE status IN {} GROUP BY status",
            RunStatus::UNFINISHED_SQL
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let status = RunStatus::parse(&r.get::<String, _>("status")).ok()?;
                Some((status, r.get("n")))
            })
            .collect())
    }
}
