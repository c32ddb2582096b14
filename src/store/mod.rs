//! Everything nexusd records: the file index, events, runs, attempts and
//! steps. All SQL lives here, written once for both backends (`$N`
//! placeholders, `ON CONFLICT` upserts) and run through sqlx's `Any` driver:
//! SQLite (WAL) at `DATA/.nexus/nexus.db` by default, PostgreSQL with
//! `--database-url`. Each backend has its own migrations folder with the
//! same version numbers. Times are integer Unix milliseconds, so both
//! compare them alike. A state change and its record share one transaction.

mod backfills;
mod cancels;
mod definitions;
mod fleet;
mod notify;
mod reads;
mod records;
mod users;
mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Executor, Row};

pub use backfills::{BackfillRow, BackfillStep, IndexedFile};
pub use cancels::{Cancel, CancelOutcome};
pub use definitions::{DefinitionWrite, Revision, StoredDefinition};
pub use fleet::{NodeInUse, NodeInfo, NodeStatus, WatchHolder, WatchLock, WatchLocker, pid_space};
pub use notify::Wakeups;
pub use reads::{EventFilter, RunFilter, timestamp};
pub use records::{AttemptEnd, FromStep, NewRun, Rerun, RunStatus, StepRecord, UnfinishedRun};
pub use users::{KeyOwner, User};
pub use writer::{AttemptFinish, AttemptStart, RunClose, Write, Writer};

use crate::events::Event;
use crate::events::index::FileMeta;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at `{path}`: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("this agent is no longer its data dir's watcher: another agent was elected")]
    Deposed,
    #[error(
        "the database was migrated by a newer nexusd (its schema is version {found}; this nexusd knows up to {known}): upgrade this agent"
    )]
    Newer { found: i64, known: i64 },
    /// Another writer changed the row first (a backfill's page).
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// True when the statement broke a unique index.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sql(e) if e.as_database_error().is_some_and(|d| d.is_unique_violation()))
    }

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
        .is_some_and(|c| is_transient_code(&c))
}

/// The error codes a retry can get past: PostgreSQL's connection failures
/// (class 08), a rolled-back transaction (class 40: serialization failure,
/// deadlock), a read-only server (25006, a standby after a failover), a
/// cancelled statement (57014), a server shutting down or starting
/// (57P01-57P03) and short of resources (class 53: disk, memory,
/// connections); SQLite's busy and locked (5, 6, and their extended codes).
fn is_transient_code(code: &str) -> bool {
    // A SQLSTATE has five characters; SQLite's codes are shorter numbers,
    // whose extended codes keep the primary code in the low byte.
    if code.len() < 5 {
        return code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
    }
    ["08", "40", "53"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "25006" | "57014" | "57P01" | "57P02" | "57P03")
}

/// Which database the store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The PostgreSQL URL, for the listener's own connection.
    url: Option<Arc<str>>,
    /// The database's clock minus this machine's, ms ([`Store::now_ms`]).
    clock_offset: Arc<AtomicI64>,
    /// The data dir this agent serves ([`Store::serving`]): the file index
    /// it loads and writes, the origin of the events and runs it records,
    /// the runs it may claim. Empty for the admin commands.
    origin: Arc<str>,
    /// This agent's node id, recorded with its events and attempts.
    node: Arc<str>,
}

/// An index change to persist with the events that caused it.
#[derive(Debug, Clone)]
pub enum IndexOp {
    Put(String, FileMeta),
    Remove(String),
}

impl Store {
    /// Opens the database: PostgreSQL for a `postgres://` URL, else
    /// (creating it if needed) `DATA/.nexus/nexus.db`; then migrates it.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Store::open_postgres(url).await
            }
            Some(other) => Err(StoreError::Open {
                path: redact_url(other),
                source: sqlx::Error::Configuration("expected a postgres:// URL".into()),
            }),
            None => Store::open_sqlite(data_dir).await,
        }
    }

    async fn open_sqlite(data_dir: &Path) -> Result<Store, StoreError> {
        let dir = data_dir.join(crate::datadir::STATE_DIR);
        let path = dir.join(crate::datadir::DATABASE_FILE);
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Checkpoints run in the background (`checkpoint`), not in
                    // whichever commit crosses the WAL threshold: that commit's
                    // run would wait on an fsync.
                    // auto_vacuum takes effect on a new file (before its
                    // first table), so retention can shrink it.
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 0").await?;
                    Ok(())
                })
            })
            .connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .map_err(open_err)?;
        migrate(&pool, sqlx::migrate!("migrations/sqlite")).await?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            url: None,
            clock_offset: Arc::default(),
            origin: "".into(),
            node: "".into(),
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(|source| StoreError::Open {
                path: redact_url(url),
                source,
            })?;
        // Migrations take an advisory lock: nodes starting at once apply them once.
        migrate(&pool, sqlx::migrate!("migrations/postgres")).await?;
        let store = Store {
            pool,
            backend: Backend::Postgres,
            url: Some(url.into()),
            clock_offset: Arc::default(),
            origin: "".into(),
            node: "".into(),
        };
        store.sync_clock().await?;
        Ok(store)
    }

    /// Moves the SQLite write-ahead log into the database file without
    /// blocking writers (a no-op on PostgreSQL). `truncate` also empties the
    /// log, for a clean stop.
    pub async fn checkpoint(&self, truncate: bool) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            let sql = if truncate {
                "PRAGMA wal_checkpoint(TRUNCATE)"
            } else {
                "PRAGMA wal_checkpoint(PASSIVE)"
            };
            sqlx::query(sql).execute(&self.pool).await?;
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This store as the agent `node` serving the data dir `origin` (see
    /// [`crate::datadir::origin`]).
    pub fn serving(mut self, origin: &str, node: &str) -> Store {
        self.origin = origin.into();
        self.node = node.into();
        self
    }

    /// The data dir this store serves.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The node this store records as.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes the rows recorded before data dirs had an identity (an empty
    /// origin) as this origin's: the first agent to start after the upgrade
    /// gets the old index, events and runs. Returns how many rows it took.
    pub async fn adopt_rows_without_origin(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut taken = 0;
        for table in ["file_index", "events", "runs"] {
            let sql = format!("UPDATE {table} SET origin = $1 WHERE origin = ''");
            taken += sqlx::query(&sql)
                .bind(&*self.origin)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(taken)
    }

    /// The file index of this store's origin.
    /// Rows are read as a stream: a large index never sits in memory twice
    /// (as rows and as the map), which would also leave the heap fragmented.
    pub async fn load_index(&self) -> Result<BTreeMap<String, FileMeta>, StoreError> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query(
            "SELECT path, ino, dev, size, mtime_ns, mode, uid, gid, xattrs, hash, racy FROM file_index WHERE origin = $1",
        )
        .bind(&*self.origin)
        .fetch(&self.pool);
        let mut index = BTreeMap::new();
        while let Some(row) = rows.try_next().await? {
            let meta = FileMeta {
                ino: row.get::<i64, _>("ino") as u64,
                dev: row.get::<i64, _>("dev") as u64,
                size: row.get::<i64, _>("size") as u64,
                mtime_ns: row.get("mtime_ns"),
                mode: row.get::<i64, _>("mode") as u32,
                uid: row.get::<i64, _>("uid") as u32,
                gid: row.get::<i64, _>("gid") as u32,
                xattrs: row.get("xattrs"),
                hash: row.get("hash"),
                racy: row.get::<i64, _>("racy") != 0,
            };
            index.insert(row.get("path"), meta);
        }
        Ok(index)
    }

    /// Records a batch of events, the index changes behind them and the runs
    /// they start, in one transaction: nothing acts on an event before it is
    /// committed. With `watch_fence` (the watch's events), only while that
    /// fence is still this origin's watcher's ([`StoreError::Deposed`]). Rows go in as multi-row statements (a round trip per few
    /// hundred rows, not per row).
    pub async fn commit_events(
        &self,
        events: &[(Event, Vec<crate::api::Decision>)],
        index: &[IndexOp],
        runs: &[NewRun],
        watch_fence: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.write_events(&mut tx, events, index, runs).await?;
        // Last, so that SQLite's transaction begins with a write (a read
        // first could not take the write lock once another commit came).
        if let Some(fence) = watch_fence {
            self.check_watch_fence(&mut tx, fence).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::commit_events`]'s writes, in the transaction `tx`.
    pub(crate) async fn write_events(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        events: &[(Event, Vec<crate::api::Decision>)],
        index: &[IndexOp],
        runs: &[NewRun],
    ) -> Result<(), StoreError> {
        let batch = self.batch();
        let rows = batch.rows;
        for chunk in events.chunks(rows) {
            let sql = format!(
                "INSERT INTO events (id, type, path, old_path, size, mtime_ms, observed_ms, cause_run_id, chain_depth, actor, source, decisions, origin, node) VALUES {}",
                batch.values(14, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for (e, decisions) in chunk {
                q = q
                    .bind(&e.id)
                    .bind(e.kind.as_str())
                    .bind(&e.path)
                    .bind(&e.old_path)
                    .bind(e.size.map(|s| s as i64))
                    .bind(e.mtime_ms)
                    .bind(e.observed_ms)
                    .bind(e.cause.as_ref().map(|c| c.run_id.as_str()))
                    .bind(i64::from(e.chain_depth()))
                    .bind(&e.actor)
                    .bind(e.source.as_str())
                    .bind(
                        (!decisions.is_empty())
                            .then(|| serde_json::to_string(decisions).unwrap_or_default()),
                    )
                    .bind(&*self.origin)
                    .bind(&*self.node);
            }
            q.execute(&mut **tx).await?;
        }
        // The last change of each path is its state; one statement may not
        // touch a row twice.
        let mut last: std::collections::HashMap<&str, &IndexOp> = std::collections::HashMap::new();
        for op in index {
            let path = match op {
                IndexOp::Put(p, _) | IndexOp::Remove(p) => p.as_str(),
            };
            last.insert(path, op);
        }
        let mut puts: Vec<(&str, &FileMeta)> = Vec::new();
        let mut removes: Vec<&str> = Vec::new();
        for (path, op) in last {
            match op {
                IndexOp::Put(_, m) => puts.push((path, m)),
                IndexOp::Remove(_) => removes.push(path),
            }
        }
        for chunk in puts.chunks(rows) {
            let sql = format!(
                "INSERT INTO file_index (origin, path, ino, dev, size, mtime_ns, mode, uid, gid, xattrs, hash, racy) VALUES {} \
                 ON CONFLICT (origin, path) DO UPDATE SET ino = excluded.ino, dev = excluded.dev, size = excluded.size, \
                 mtime_ns = excluded.mtime_ns, mode = excluded.mode, uid = excluded.uid, gid = excluded.gid, \
                 xattrs = excluded.xattrs, hash = excluded.hash, racy = excluded.racy",
                batch.values(12, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for (path, m) in chunk {
                q = q
                    .bind(&*self.origin)
                    .bind(*path)
                    .bind(m.ino as i64)
                    .bind(m.dev as i64)
                    .bind(m.size as i64)
                    .bind(m.mtime_ns)
                    .bind(i64::from(m.mode))
                    .bind(i64::from(m.uid))
                    .bind(i64::from(m.gid))
                    .bind(m.xattrs)
                    .bind(m.hash)
                    .bind(i64::from(m.racy));
            }
            q.execute(&mut **tx).await?;
        }
        for chunk in removes.chunks(rows) {
            // The list first: SQLite numbers a bare `?` after a `$N` from 1.
            let sql = format!(
                "DELETE FROM file_index WHERE path IN ({}) AND origin = ${}",
                batch.list(chunk.len()),
                chunk.len() + 1
            );
            let mut q = sqlx::query(&sql);
            for path in chunk {
                q = q.bind(*path);
            }
            q.bind(&*self.origin).execute(&mut **tx).await?;
        }
        for chunk in runs.chunks(rows) {
            records::insert_runs(tx, chunk, batch, &self.origin).await?;
        }
        // Runs recorded for others to claim (past this node's capacity, or
        // of a workflow it cannot run): the other agents are told.
        if runs
            .iter()
            .any(|r| r.lease.is_none() && !r.status.is_final())
        {
            notify::notify_in(self.backend, &mut **tx, notify::RUNS).await?;
        }
        Ok(())
    }

    /// Claims up to `limit` unfinished runs (queued, retrying, or running
    /// when their node died) for `node`, for `lease_ms`: those nobody holds
    /// and those whose lease ran out, oldest first. Only runs of this
    /// store's origin (its files are here) or runs any node may run; and a
    /// run only when every older unfinished run of its workflow, path and
    /// origin is this node's already (it orders them in memory), so a
    /// path's runs keep their order across nodes. Each claim raises the
    /// run's fence. PostgreSQL skips rows another node is claiming at the
    /// same moment. Lease times are the database's clock ([`Store::now_ms`]).
    pub async fn claim_unfinished(
        &self,
        lease_ms: i64,
        limit: usize,
        lacking: &[String],
    ) -> Result<Vec<UnfinishedRun>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        // Few claimable runs among many another node holds (its backlog):
        // found by their lease expiry, all of them, rather than by walking
        // the held ones in claim order. Many: the claim walks them in order.
        let probe = (limit * 2).min(1000);
        let sql = format!(
            "SELECT id FROM runs{} WHERE status IN {} AND COALESCE(lease_until_ms, 0) < $1 \
             AND (origin = $2 OR anywhere = 1){} ORDER BY COALESCE(lease_until_ms, 0) LIMIT {}",
            self.by_lease(),
            RunStatus::UNFINISHED_SQL,
            not_in("workflow", 3, lacking.len()),
            probe + 1
        );
        let mut q = sqlx::query(&sql).bind(now).bind(&*self.origin);
        for name in lacking {
            q = q.bind(name);
        }
        let candidates: Vec<String> = q
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // The list padded (its last id repeated) to a power of two: a few
        // statement texts, each prepared once per connection.
        let mut candidates = candidates;
        let complete = candidates.len() <= probe;
        if complete {
            let last = candidates[candidates.len() - 1].clone();
            candidates.resize(candidates.len().next_power_of_two(), last);
        }
        let among = if complete {
            let first = 6 + lacking.len();
            let list: Vec<String> = (first..first + candidates.len())
                .map(|i| format!("${i}"))
                .collect();
            format!(" AND r.id IN ({})", list.join(", "))
        } else {
            String::new()
        };
        // The workflows this node's definitions lack: left to the others.
        // The claim's own test of the lease is written so that no plan of
        // it goes through the lease index: walking the claim order is
        // right when many runs are claimable, and a generic plan that
        // sorted them all for each claim made a `kill -9`'s recovery on
        // PostgreSQL three times slower.
        let skip = not_in("r.workflow", 6, lacking.len());
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE runs SET owner = $1, lease_until_ms = $2, fence = fence + 1 WHERE id IN (\
             SELECT r.id FROM runs r WHERE r.status IN {unfinished} \
             AND (r.owner IS NULL OR r.lease_until_ms < $3) AND (r.origin = $5 OR r.anywhere = 1){skip}{among} \
             AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.status IN {unfinished} AND o.origin = r.origin \
             AND o.workflow = r.workflow AND o.path = r.path \
             AND (o.queued_ms < r.queued_ms OR (o.queued_ms = r.queued_ms AND o.id < r.id)) \
             AND NOT (COALESCE(o.owner, '') = $1 AND COALESCE(o.lease_until_ms, 0) >= $3)) \
             ORDER BY r.queued_ms, r.id LIMIT $4{lock}) \
             RETURNING id",
            unfinished = RunStatus::UNFINISHED_SQL
        );
        let mut q = sqlx::query(&sql)
            .bind(&*self.node)
            .bind(now.saturating_add(lease_ms))
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(&*self.origin);
        for name in lacking {
            q = q.bind(name);
        }
        if !among.is_empty() {
            for id in &candidates {
                q = q.bind(id);
            }
        }
        let claimed = q.fetch_all(&self.pool).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = claimed.iter().map(|r| r.get("id")).collect();
        self.runs_with_events(&ids).await
    }

    /// The claims' index (runs by lease expiry), named on SQLite: its
    /// planner, without statistics, would rather walk the data dir's
    /// unfinished runs. (Statistics, `ANALYZE`, would cost a `kill -9`'s
    /// recovery three quarters of its speed: they turn the writer's plans.)
    fn by_lease(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "",
            Backend::Sqlite => " INDEXED BY runs_lease",
        }
    }

    /// True when runs of this store's origin wait unclaimed: a claim that
    /// came back short left them because an older run of their path is
    /// another node's (per-path order), so new runs must queue behind them.
    /// Runs of the workflows this node lacks do not count: it leaves them.
    pub async fn unclaimed_waiting(&self, lacking: &[String]) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM runs{} WHERE status IN {} AND origin = $1 \
             AND COALESCE(lease_until_ms, 0) < $2{} ORDER BY COALESCE(lease_until_ms, 0) LIMIT 1) w",
            self.by_lease(),
            RunStatus::UNFINISHED_SQL,
            not_in("workflow", 3, lacking.len())
        );
        let mut q = sqlx::query(&sql).bind(&*self.origin).bind(self.now_ms());
        for name in lacking {
            q = q.bind(name);
        }
        let n: i64 = q.fetch_one(&self.pool).await?.get(0);
        Ok(n > 0)
    }

    /// Renews this node's leases on the runs it holds (`held`: id and the fence
    /// of its claim) for `lease_ms`, and returns those it still holds: a run
    /// missing from the answer was taken by another node (its fence moved)
    /// or finished, and this node must stop it.
    pub async fn renew_leases(
        &self,
        held: &[(String, i64)],
        lease_ms: i64,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let batch = self.batch();
        let until = self.now_ms().saturating_add(lease_ms);
        let mut kept = std::collections::HashSet::with_capacity(held.len());
        for chunk in held.chunks(batch.rows) {
            let sql = format!(
                "WITH v (id, fence) AS (VALUES {}) \
                 UPDATE runs SET lease_until_ms = ${} FROM v \
                 WHERE runs.id = v.id AND runs.fence = v.fence AND runs.owner = ${} AND runs.status IN {} \
                 RETURNING runs.id",
                batch.values(2, chunk.len()),
                chunk.len() * 2 + 1,
                chunk.len() * 2 + 2,
                RunStatus::UNFINISHED_SQL
            );
            let mut q = sqlx::query(&sql);
            for (id, fence) in chunk {
                q = q.bind(id).bind(*fence);
            }
            let rows = q
                .bind(until)
                .bind(&*self.node)
                .fetch_all(&self.pool)
                .await?;
            kept.extend(rows.iter().map(|r| r.get::<String, _>(0)));
        }
        Ok(kept)
    }

    /// Whether the definition a run of `workflow` belongs to is applied (a
    /// pipeline's stage, `PIPELINE/STAGE`, belongs to its pipeline).
    pub async fn definition_exists(&self, workflow: &str) -> Result<bool, StoreError> {
        let name = workflow.split('/').next().unwrap_or(workflow);
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM definitions WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n > 0)
    }

    /// Gives claimed runs back (id and the fence of the claim: this node
    /// cannot run them) and tells the other agents, which may take them
    /// at once.
    pub async fn leave_runs(&self, runs: &[(String, i64)]) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, fence) in runs {
            sqlx::query("UPDATE runs SET lease_until_ms = 0 WHERE id = $1 AND fence = $2")
                .bind(id)
                .bind(*fence)
                .execute(&mut *tx)
                .await?;
        }
        notify::notify_in(self.backend, &mut *tx, notify::RUNS).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives up the lease on one run this node holds under `fence`, so that
    /// it is claimed again (here or elsewhere) at once.
    pub async fn release_lease(&self, run_id: &str, fence: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET lease_until_ms = 0 WHERE id = $1 AND fence = $2")
            .bind(run_id)
            .bind(fence)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Now, by the database's clock (PostgreSQL; SQLite's is this
    /// machine's): lease times compare across nodes whatever their clocks.
    /// The offset from this machine's clock is measured at open and at
    /// each [`Store::sync_clock`].
    pub fn now_ms(&self) -> i64 {
        crate::events::now_ms().saturating_add(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Measures this machine's clock against the database's (PostgreSQL),
    /// taking the middle of the round trip.
    pub async fn sync_clock(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let before = crate::events::now_ms();
        let db: i64 =
            sqlx::query("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
                .fetch_one(&self.pool)
                .await?
                .get(0);
        let after = crate::events::now_ms();
        self.clock_offset
            .store(db - (before + after) / 2, Ordering::Relaxed);
        Ok(())
    }

    /// Gives up this node's leases on its unfinished runs, at a clean stop,
    /// and tells the other agents (PostgreSQL), which take them up at once.
    pub async fn release_leases(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE runs SET lease_until_ms = 0 WHERE owner = $1 AND status IN {}",
            RunStatus::UNFINISHED_SQL
        );
        let done = sqlx::query(&sql)
            .bind(&*self.node)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            notify::notify_in(self.backend, &mut *tx, notify::RUNS).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// A run with its event as its workflow saw it, whatever its state
    /// (what a re-run is made from).
    pub async fn run_with_event(&self, id: &str) -> Result<Option<UnfinishedRun>, StoreError> {
        Ok(self
            .runs_with_events(&[id.to_owned()])
            .await?
            .into_iter()
            .next())
    }

    /// The runs `ids` with their events, oldest first (only these: the
    /// node may hold thousands more in flight).
    async fn runs_with_events(&self, ids: &[String]) -> Result<Vec<UnfinishedRun>, StoreError> {
        let batch = self.batch();
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(batch.rows) {
            let sql = format!(
                "SELECT r.id, r.fence, r.workflow, r.status, r.attempts, r.next_attempt_ms, r.event_type, r.path, r.old_path, \
                 r.queued_ms, r.from_step, r.carried, r.revision, e.id AS event_id, e.size, e.mtime_ms, e.observed_ms, e.cause_run_id, e.chain_depth, e.actor, e.source \
                 FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id IN ({})",
                batch.list(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            rows.extend(q.fetch_all(&self.pool).await?);
        }
        rows.sort_by_cached_key(|r| (r.get::<i64, _>("queued_ms"), r.get::<String, _>("id")));
        Ok(rows
            .into_iter()
            .map(|r| UnfinishedRun {
                id: r.get("id"),
                fence: r.get("fence"),
                workflow: r.get("workflow"),
                status: RunStatus::parse(&r.get::<String, _>("status"))
                    .unwrap_or(RunStatus::Queued),
                attempts: u32::try_from(r.get::<i64, _>("attempts")).unwrap_or(0),
                next_attempt_ms: r.get("next_attempt_ms"),
                event: reads::event_row(&r, "event_id", "event_type"),
                from: r.get::<Option<i64>, _>("from_step").map(|idx| FromStep {
                    idx: usize::try_from(idx).unwrap_or(0),
                    steps: r
                        .get::<Option<String>, _>("carried")
                        .and_then(|c| serde_json::from_str(&c).ok())
                        .unwrap_or_else(|| serde_json::json!({})),
                }),
                revision: r.get("revision"),
            })
            .collect())
    }

    /// Deletes finished runs (with their attempts and steps) that ended
    /// before `cutoff_ms`, events no run refers to any more, old gaps and
    /// the rows of nodes silent since; returns the number of runs deleted,
    /// or `None` when another node of the fleet is at it (PostgreSQL: an
    /// advisory lock, so retention runs on one node at a time). Deletes in
    /// batches, each its own transaction: claims and commits never wait
    /// long behind it. SQLite then gives the pages back.
    pub async fn delete_finished_before(&self, cutoff_ms: i64) -> Result<Option<u64>, StoreError> {
        const KEY: &str = "hashtextextended('nexusd retention', 0)";
        let mut lock = None;
        if self.backend == Backend::Postgres {
            let mut conn = self.pool.acquire().await?;
            let got: bool = sqlx::query(&format!("SELECT pg_try_advisory_lock({KEY})"))
                .fetch_one(&mut *conn)
                .await?
                .get(0);
            if !got {
                return Ok(None);
            }
            lock = Some(conn);
        }
        let deleted = self.delete_in_batches(cutoff_ms).await;
        if let Some(mut conn) = lock {
            let unlocked = sqlx::query(&format!("SELECT pg_advisory_unlock({KEY})"))
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Closed, the session lets the lock go.
                drop(conn.detach());
            }
        }
        deleted.map(Some)
    }

    async fn delete_in_batches(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        const RUNS_PER_BATCH: usize = 2000;
        const EVENTS_PER_BATCH: u64 = 20_000;
        let batch = self.batch();
        let mut runs = 0;
        loop {
            let ids: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT id FROM runs WHERE finished_ms < $1 AND status IN ('succeeded', 'failed', 'cancelled', 'skipped') LIMIT {RUNS_PER_BATCH}"
            ))
            .bind(cutoff_ms)
            .fetch_all(&self.pool)
            .await?;
            if ids.is_empty() {
                break;
            }
            let mut tx = self.pool.begin().await?;
            for chunk in ids.chunks(batch.rows) {
                for (table, column) in [("steps", "run_id"), ("attempts", "run_id"), ("runs", "id")]
                {
                    let sql = format!(
                        "DELETE FROM {table} WHERE {column} IN ({})",
                        batch.list(chunk.len())
                    );
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            runs += ids.len() as u64;
            if ids.len() < RUNS_PER_BATCH {
                break;
            }
        }
        // Events in the order they came (their key), a batch at a time
        // from where the last one ended: no batch reads again what another
        // deleted or kept (an old event a run still refers to).
        let mut after = 0_i64;
        loop {
            let last: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT MAX(seq) FROM (SELECT seq FROM events WHERE seq > $1 AND observed_ms < $2 \
                 ORDER BY seq LIMIT {EVENTS_PER_BATCH}) b"
            ))
            .bind(after)
            .bind(cutoff_ms)
            .fetch_one(&self.pool)
            .await?;
            let Some(last) = last else {
                break;
            };
            sqlx::query(
                "DELETE FROM events WHERE seq > $1 AND seq <= $2 AND observed_ms < $3 \
                 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = events.id)",
            )
            .bind(after)
            .bind(last)
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
            after = last;
        }
        for sql in [
            "DELETE FROM gaps WHERE at_ms < $1",
            "DELETE FROM backfills WHERE finished_ms < $1",
        ] {
            sqlx::query(sql).bind(cutoff_ms).execute(&self.pool).await?;
        }
        sqlx::query("DELETE FROM sessions WHERE expires_ms < $1")
            .bind(self.now_ms())
            .execute(&self.pool)
            .await?;
        // Nodes silent for the whole retention, and past their lease: long
        // gone (a live one's row stays, however short the retention).
        sqlx::query("DELETE FROM nodes WHERE heartbeat_ms < $1 AND heartbeat_ms < $2 - lease_ms")
            .bind(cutoff_ms)
            .bind(self.now_ms())
            .execute(&self.pool)
            .await?;
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await?;
        }
        Ok(runs)
    }

    /// Records a rescan of the whole tree: why, and how many changes it found.
    pub async fn record_gap(
        &self,
        reason: &str,
        changes: usize,
        scan_ms: u64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO gaps (at_ms, reason, changes, scan_ms) VALUES ($1, $2, $3, $4)")
            .bind(at_ms)
            .bind(reason)
            .bind(i64::try_from(changes).unwrap_or(i64::MAX))
            .bind(i64::try_from(scan_ms).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the attempt a run has running as `interrupted`, with `why`,
    /// while `fence` is the run's latest claim: a dead agent's attempt when
    /// its run is taken up, or this agent's own cut off at a clean stop.
    pub async fn interrupt_attempt(
        &self,
        run_id: &str,
        fence: i64,
        why: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE attempts SET status = 'interrupted', error = $1, finished_ms = $2 \
             WHERE run_id = $3 AND status = 'running' \
             AND EXISTS (SELECT 1 FROM runs WHERE runs.id = $3 AND runs.fence = $4)",
        )
        .bind(format!("interrupted: {why}"))
        .bind(at_ms)
        .bind(run_id)
        .bind(fence)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// ` AND column NOT IN ($first, ...)` for `n` values (nothing for none),
/// numbered on both backends: it follows numbered placeholders, after
/// which SQLite would number a bare `?` from 1.
fn not_in(column: &str, first: usize, n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let list: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!(" AND {column} NOT IN ({})", list.join(", "))
}

/// How a backend's multi-row statements are cut and written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch {
    /// Rows per statement.
    pub rows: usize,
    backend: Backend,
}

impl Batch {
    /// `rows` tuples of `cols` placeholders: `($1, $2), ($3, $4), ...` on
    /// PostgreSQL; `(?, ?), (?, ?), ...` on SQLite, where binding a numbered
    /// (named) parameter looks its name up among all of the statement's,
    /// which made a statement's binding quadratic in its rows.
    pub fn values(&self, cols: usize, rows: usize) -> String {
        let mut out = String::with_capacity(rows * cols * 5);
        for r in 0..rows {
            if r > 0 {
                out.push_str(", ");
            }
            out.push('(');
            out.push_str(&self.list_from(r * cols, cols));
            out.push(')');
        }
        out
    }

    /// `n` placeholders, comma-separated, for `IN (...)`.
    pub fn list(&self, n: usize) -> String {
        self.list_from(0, n)
    }

    fn list_from(&self, first: usize, n: usize) -> String {
        let mut out = String::with_capacity(n * 5);
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            match self.backend {
                Backend::Postgres => {
                    out.push('$');
                    out.push_str(&(first + i + 1).to_string());
                }
                Backend::Sqlite => out.push('?'),
            }
        }
        out
    }
}

impl Store {
    /// Rows per multi-row statement: PostgreSQL, many (each statement is a
    /// round trip; well under its 65,535 parameters); SQLite, where a
    /// statement is a function call, enough to spread its preparation, few
    /// enough that the prepared statements cached per row count stay small
    /// (256 rows: no faster, 13 MB more at the peak of a burst).
    pub(crate) fn batch(&self) -> Batch {
        let rows = match self.backend {
            Backend::Postgres => 500,
            Backend::Sqlite => 64,
        };
        Batch {
            rows,
            backend: self.backend,
        }
    }
}

/// Migrates the database to this nexusd's schema. One a newer nexusd
/// migrated further is left alone and the start refused (a rolling
/// upgrade's older agent): this nexusd does not know what the newer
/// columns need. Agents already running keep running through an upgrade:
/// every migration adds, with defaults, and drops nothing they use.
async fn migrate(pool: &AnyPool, migrator: sqlx::migrate::Migrator) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    // No table yet: a new database.
    let found = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .ok()
        .and_then(|r| r.try_get::<Option<i64>, _>(0).ok().flatten());
    if let Some(found) = found.filter(|f| *f > known) {
        return Err(StoreError::Newer { found, known });
    }
    migrator.run(pool).await?;
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    /// An unclaimed queued run of `workflow` on `path`, recorded by `store`
    /// (its origin), queued at `queued_ms`.
    async fn queue(store: &Store, id: &str, path: &str, queued_ms: i64, anywhere: bool) {
        let event = Event {
            id: format!("evt_{id}"),
            kind: EventType::Created,
            path: path.into(),
            old_path: None,
            size: Some(0),
            mtime_ms: Some(0),
            observed_ms: queued_ms,
            cause: None,
            raw_abs: None,
            actor: None,
            source: Default::default(),
        };
        let run = NewRun {
            id: id.into(),
            workflow: "w".into(),
            event: event.clone(),
            status: RunStatus::Queued,
            reason: None,
            queued_ms,
            lease: None,
            anywhere,
            rerun: None,
            backfill: None,
        };
        store
            .commit_events(&[(event, vec![])], &[], &[run], None)
            .await
            .unwrap();
    }

    async fn claim(store: &Store) -> Vec<String> {
        claim_up_to(store, 100).await
    }

    async fn claim_up_to(store: &Store, limit: usize) -> Vec<String> {
        let runs = store.claim_unfinished(60_000, limit, &[]).await.unwrap();
        runs.into_iter().map(|r| r.id).collect()
    }

    /// Claims come oldest first whether the claimable runs are few (found
    /// by their lease) or more than twice the claim (walked in order), and
    /// never include a run another node holds.
    #[tokio::test]
    async fn claims_come_oldest_first_however_many_wait() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(None, dir.path()).await.unwrap();
        let here = opened.clone().serving("here", "x");
        let other = opened.serving("here", "y");
        for i in 0..7 {
            queue(&here, &format!("r{i}"), &format!("/p{i}"), 10 - i, false).await;
        }
        // y takes the oldest two; the five left are more than twice a
        // claim of one, so such a claim walks them in order.
        assert_eq!(claim_up_to(&other, 2).await, ["r6", "r5"]);
        assert_eq!(claim_up_to(&here, 1).await, ["r4"]);
        assert_eq!(claim_up_to(&here, 1).await, ["r3"]);
        // Now few (r2, r1, r0) for a claim of two: found by their lease.
        assert_eq!(claim_up_to(&here, 2).await, ["r2", "r1"]);
        assert_eq!(claim(&here).await, ["r0"]);
        assert!(claim(&here).await.is_empty());
        assert!(!here.unclaimed_waiting(&[]).await.unwrap());
        // Given back, y's runs are claimable again, oldest first; not by
        // a node that lacks their workflow.
        assert_eq!(other.release_leases().await.unwrap(), 2);
        assert!(here.unclaimed_waiting(&[]).await.unwrap());
        let lacks = |w: &str| vec![w.to_owned()];
        assert!(!here.unclaimed_waiting(&lacks("w")).await.unwrap());
        let none = here
            .claim_unfinished(60_000, 100, &lacks("w"))
            .await
            .unwrap();
        assert!(none.is_empty());
        let runs = here
            .claim_unfinished(60_000, 100, &lacks("other"))
            .await
            .unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r6", "r5"]);
    }

    /// A node claims only runs of its own data dir (and runs any node may
    /// run), and a run only once every older unfinished run of its path is
    /// its own: another node's older run holds the path's later ones back.
    #[tokio::test]
    async fn claims_keep_to_their_origin_and_to_each_paths_order() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(None, dir.path()).await.unwrap();
        let here = opened.clone().serving("here", "x");
        let there = opened.clone().serving("there", "y");
        let also_here = opened.serving("here", "z");
        queue(&here, "r1", "/a", 1, false).await;
        queue(&here, "r2", "/a", 2, false).await;
        queue(&here, "r3", "/b", 3, false).await;
        queue(&there, "t1", "/a", 4, false).await;
        queue(&there, "t2", "/c", 5, true).await;
        assert!(here.unclaimed_waiting(&[]).await.unwrap());
        // Of /a only the oldest: r2 waits until r1 is this node's.
        assert_eq!(claim(&here).await, ["r1", "r3", "t2"]);
        assert!(here.unclaimed_waiting(&[]).await.unwrap(), "r2 waits");
        // Another node of the same data dir cannot take r2 past x's r1.
        assert!(claim(&also_here).await.is_empty());
        assert_eq!(claim(&here).await, ["r2"]);
        assert!(!here.unclaimed_waiting(&[]).await.unwrap());
        assert_eq!(claim(&there).await, ["t1"], "its own data dir's only");
    }

    /// A backfill's page is committed with the point it reached, only from
    /// where the backfill stood: a second node planning the same page is
    /// refused and records nothing, and a finished backfill takes no page.
    #[tokio::test]
    async fn a_backfill_page_commits_once_from_where_it_stood() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(None, dir.path()).await.unwrap();
        let x = opened.clone().serving("here", "x");
        let y = opened.serving("here", "y");
        x.create_backfill("bf_1", "w", None, "ops", 2)
            .await
            .unwrap();
        // One unfinished backfill per workflow and data dir.
        let second = y.create_backfill("bf_2", "w", None, "ops", 2).await;
        assert!(
            second.as_ref().is_err_and(StoreError::is_unique_violation),
            "{second:?}"
        );
        let page = |store: &Store, id: &str| {
            let event = Event {
                id: format!("evt_{id}"),
                kind: EventType::Created,
                path: "/a".into(),
                old_path: None,
                size: Some(1),
                mtime_ms: Some(1),
                observed_ms: 1,
                cause: None,
                raw_abs: None,
                actor: Some("ops".into()),
                source: crate::events::Source::Backfill,
            };
            let run = NewRun {
                id: id.into(),
                workflow: "w".into(),
                event: event.clone(),
                status: RunStatus::Queued,
                reason: None,
                queued_ms: 1,
                lease: Some((store.node().to_owned(), i64::MAX)),
                anywhere: false,
                rerun: None,
                backfill: Some("bf_1".into()),
            };
            (vec![(event, vec![])], vec![run])
        };
        let step = BackfillStep {
            id: "bf_1".into(),
            from: String::new(),
            to: "/a".into(),
            started: 1,
        };
        let (events, runs) = page(&x, "r_x");
        x.commit_backfill_step(&step, &events, &runs).await.unwrap();
        let (events, runs) = page(&y, "r_y");
        let refused = y.commit_backfill_step(&step, &events, &runs).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
        let row = y.backfill("bf_1").await.unwrap().unwrap();
        assert_eq!((row.after.as_str(), row.started), ("/a", 1));
        assert_eq!(
            y.backfill_counts("bf_1").await.unwrap(),
            [(RunStatus::Queued, 1)]
        );
        assert_eq!(y.unfinished_backfills().await.unwrap().len(), 1);
        y.finish_backfill("bf_1", None).await.unwrap();
        assert!(x.unfinished_backfills().await.unwrap().is_empty());
        let next = BackfillStep {
            from: "/a".into(),
            to: "/b".into(),
            ..step
        };
        let late = x.commit_backfill_step(&next, &events, &runs).await;
        assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
        y.create_backfill("bf_3", "w", None, "ops", 2)
            .await
            .unwrap();
    }

    /// A re-run from a failed step keeps where it starts and what the steps
    /// before gave: a node that claims it (after a crash) starts it so too.
    #[tokio::test]
    async fn a_rerun_from_its_failed_step_is_claimed_with_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path())
            .await
            .unwrap()
            .serving("here", "x");
        queue(&store, "orig", "/a", 1, false).await;
        let event = store.run_with_event("orig").await.unwrap().unwrap().event;
        let from = FromStep {
            idx: 1,
            steps: serde_json::json!({"mark": {"stdout": "marked", "status": "succeeded"}}),
        };
        let run = NewRun {
            id: "again".into(),
            workflow: "w".into(),
            event: Event {
                id: "evt_again".into(),
                ..event
            },
            status: RunStatus::Queued,
            reason: None,
            queued_ms: 2,
            lease: None,
            anywhere: false,
            rerun: Some(Rerun {
                of: "orig".into(),
                from: Some(from.clone()),
                revision: None,
            }),
            backfill: None,
        };
        let ev = run.event.clone();
        store
            .commit_events(&[(ev, vec![])], &[], &[run], None)
            .await
            .unwrap();
        // The original first (its path's older run), then the re-run.
        let first = store.claim_unfinished(60_000, 10, &[]).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].id.as_str(), &first[0].from), ("orig", &None));
        let then = store.claim_unfinished(60_000, 10, &[]).await.unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!((then[0].id.as_str(), &then[0].from), ("again", &Some(from)));
        let detail = store.run_detail("orig").await.unwrap().unwrap();
        assert_eq!(detail.reruns, ["again"]);
        let detail = store.run_detail("again").await.unwrap().unwrap();
        assert_eq!(detail.run.rerun_of.as_deref(), Some("orig"));
        assert_eq!(detail.from_step, Some(1));
    }

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            ino: size,
            dev: 1,
            size,
            mtime_ns: 1,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            xattrs: 0,
            hash: None,
            racy: false,
        }
    }

    /// Index removals remove exactly their paths (SQLite numbers a bare `?`
    /// after a `$N` from 1: the list must come first).
    #[tokio::test]
    async fn index_removals_remove_their_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path())
            .await
            .unwrap()
            .serving("here", "x");
        let puts: Vec<IndexOp> = ["/a", "/b", "/c"]
            .iter()
            .map(|p| IndexOp::Put((*p).into(), meta(1)))
            .collect();
        store.commit_events(&[], &puts, &[], None).await.unwrap();
        let removes = [IndexOp::Remove("/a".into()), IndexOp::Remove("/c".into())];
        store.commit_events(&[], &removes, &[], None).await.unwrap();
        let left: Vec<String> = store.load_index().await.unwrap().into_keys().collect();
        assert_eq!(left, ["/b"]);
    }

    /// A watcher whose fence moved (another agent was elected) commits
    /// nothing: its batch is refused whole.
    #[tokio::test]
    async fn a_deposed_watcher_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(None, dir.path()).await.unwrap();
        let (x, y) = (
            opened.clone().serving("here", "x"),
            opened.serving("here", "y"),
        );
        let file = || WatchLock::File(tempfile::tempfile().unwrap());
        let (first, before) = x.take_watch(&mut file()).await.unwrap();
        assert_eq!((first, before), (1, None));
        let (second, before) = y.take_watch(&mut file()).await.unwrap();
        assert_eq!((second, before.as_deref()), (2, Some("x")));
        let put = [IndexOp::Put("/late".into(), meta(1))];
        assert!(matches!(
            x.commit_events(&[], &put, &[], Some(first)).await,
            Err(StoreError::Deposed)
        ));
        assert!(x.load_index().await.unwrap().is_empty(), "nothing recorded");
        y.commit_events(&[], &put, &[], Some(second)).await.unwrap();
        assert_eq!(y.load_index().await.unwrap().len(), 1);
    }

    #[test]
    fn transient_codes_are_those_a_retry_gets_past() {
        for code in [
            "08006", "40001", "40P01", "25006", "57014", "57P01", "53300", "5", "6", "517", "261",
        ] {
            assert!(super::is_transient_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "1", "19", "2067", "25P02"] {
            assert!(!super::is_transient_code(code), "{code}");
        }
    }
}
