//! Backfills: a run for every file already in a data dir that one
//! workflow's `file.created` triggers match. A backfill is a row; the files
//! are read from the index in path order, a page at a time, and each
//! page's events and runs are committed together with the path the page
//! ended at, only while the backfill still stood where the page began.
//! So a backfill taken up again (after a crash, by any node serving its
//! origin) goes on from there, and no file is started twice.

use std::collections::HashSet;

use sqlx::Row;

use super::{IndexOp, NewRun, RunStatus, Store, StoreError};
use crate::api::{Decision, DecisionKind};
use crate::events::Event;

/// A backfill as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRow {
    pub id: String,
    pub workflow: String,
    pub origin: String,
    /// The `--path` glob, when given.
    pub glob: Option<String>,
    pub actor: String,
    pub created_ms: i64,
    /// The files it found to start when it was made.
    pub planned: i64,
    /// The last path it went past (`""`: none yet).
    pub after: String,
    /// The runs it started so far.
    pub started: i64,
    pub finished_ms: Option<i64>,
    /// Why it stopped short (its workflow was deleted).
    pub error: Option<String>,
}

/// A file of the index, as a backfill reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedFile {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// One page of a backfill to commit: from where it began to where it
/// ended, with the runs it started.
#[derive(Debug, Clone)]
pub struct BackfillStep {
    pub id: String,
    pub from: String,
    pub to: String,
    pub started: i64,
}

const COLUMNS: &str = "id, workflow, origin, path_glob, actor, created_ms, planned, after_path, started, finished_ms, error";

fn row_of(row: &sqlx::any::AnyRow) -> BackfillRow {
    BackfillRow {
        id: row.get("id"),
        workflow: row.get("workflow"),
        origin: row.get("origin"),
        glob: row.get("path_glob"),
        actor: row.get("actor"),
        created_ms: row.get("created_ms"),
        planned: row.get("planned"),
        after: row.get("after_path"),
        started: row.get("started"),
        finished_ms: row.get("finished_ms"),
        error: row.get("error"),
    }
}

impl Store {
    /// Records a new backfill of this store's origin.
    pub async fn create_backfill(
        &self,
        id: &str,
        workflow: &str,
        glob: Option<&str>,
        actor: &str,
        planned: i64,
    ) -> Result<BackfillRow, StoreError> {
        let created_ms = self.now_ms();
        sqlx::query(
            "INSERT INTO backfills (id, workflow, origin, path_glob, actor, created_ms, planned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(workflow)
        .bind(&*self.origin)
        .bind(glob)
        .bind(actor)
        .bind(created_ms)
        .bind(planned)
        .execute(&self.pool)
        .await?;
        Ok(BackfillRow {
            id: id.to_owned(),
            workflow: workflow.to_owned(),
            origin: self.origin.to_string(),
            glob: glob.map(str::to_owned),
            actor: actor.to_owned(),
            created_ms,
            planned,
            after: String::new(),
            started: 0,
            finished_ms: None,
            error: None,
        })
    }

    pub async fn backfill(&self, id: &str) -> Result<Option<BackfillRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM backfills WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(row_of))
    }

    /// The newest backfills (of every origin), newest first.
    pub async fn backfills(&self, limit: i64) -> Result<Vec<BackfillRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM backfills ORDER BY created_ms DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// This origin's backfills not finished yet, oldest first.
    pub async fn unfinished_backfills(&self) -> Result<Vec<BackfillRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM backfills WHERE origin = $1 AND finished_ms IS NULL ORDER BY created_ms, id"
        ))
        .bind(&*self.origin)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_of).collect())
    }

    /// Records a backfill finished (with why, when it stopped short).
    pub async fn finish_backfill(&self, id: &str, error: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE backfills SET finished_ms = $1, error = $2 WHERE id = $3 AND finished_ms IS NULL")
            .bind(self.now_ms())
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many of a backfill's runs are in each state.
    pub async fn backfill_counts(&self, id: &str) -> Result<Vec<(RunStatus, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs WHERE backfill = $1 GROUP BY status",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Vec::new();
        for row in &rows {
            let status: String = row.get("status");
            if let Ok(s) = RunStatus::parse(&status) {
                counts.push((s, row.get("n")));
            }
        }
        Ok(counts)
    }

    /// Up to `limit` files of this origin's index after `after`, in path
    /// order.
    pub async fn index_page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<IndexedFile>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT path, size, mtime_ns FROM file_index WHERE origin = $1 AND path > $2 ORDER BY path LIMIT {limit}"
        ))
        .bind(&*self.origin)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| IndexedFile {
                path: r.get("path"),
                size: r.get::<i64, _>("size") as u64,
                mtime_ns: r.get("mtime_ns"),
            })
            .collect())
    }

    /// Which of `paths` (of this origin) had an event since `since_ms`,
    /// other than a backfill's, that started a run of `workflow` (its
    /// decision log says so): the watch's runs of files created meanwhile.
    pub async fn started_since(
        &self,
        paths: &[&str],
        workflow: &str,
        since_ms: i64,
    ) -> Result<HashSet<String>, StoreError> {
        let batch = self.batch();
        let mut found = HashSet::new();
        for chunk in paths.chunks(batch.rows) {
            let n = chunk.len();
            let sql = format!(
                "SELECT path, decisions FROM events WHERE path IN ({}) AND observed_ms >= ${} AND origin = ${} \
                 AND source <> 'backfill' AND decisions IS NOT NULL",
                batch.list(n),
                n + 1,
                n + 2
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = q.bind(*p);
            }
            let rows = q
                .bind(since_ms)
                .bind(&*self.origin)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let decisions: Vec<Decision> =
                    serde_json::from_str(&row.get::<String, _>("decisions")).unwrap_or_default();
                if decisions
                    .iter()
                    .any(|d| d.workflow == workflow && d.decision == DecisionKind::Run)
                {
                    found.insert(row.get("path"));
                }
            }
        }
        Ok(found)
    }

    /// Commits one page of a backfill: its events and runs, and the
    /// backfill moved on to `step.to`, in one transaction; only while the
    /// backfill still stands at `step.from` and is not finished (else
    /// [`StoreError::Conflict`]: another node took the page).
    pub async fn commit_backfill_step(
        &self,
        step: &BackfillStep,
        events: &[(Event, Vec<Decision>)],
        runs: &[NewRun],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The backfill's row first: SQLite's transaction begins with a
        // write, and PostgreSQL holds the row until the commit.
        let moved = sqlx::query(
            "UPDATE backfills SET after_path = $1, started = started + $2 \
             WHERE id = $3 AND after_path = $4 AND finished_ms IS NULL",
        )
        .bind(&step.to)
        .bind(step.started)
        .bind(&step.id)
        .bind(&step.from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Err(StoreError::Conflict(format!(
                "backfill `{}` is no longer at `{}`",
                step.id, step.from
            )));
        }
        self.write_events(&mut tx, events, &[] as &[IndexOp], runs)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
