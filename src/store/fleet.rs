//! The fleet's rows: each agent's node row (taken at start, kept fresh by
//! a heartbeat, listed by `GET /v1/nodes`) and each data dir's elected
//! watcher with its fence.

use sqlx::Row;

use super::{Backend, Store, StoreError};
use crate::api::{Node, NodeState};

/// What an agent says of itself in its node row.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub origin: String,
    pub data_dir: String,
    pub host: String,
    /// Where its pid means something: the boot and the pid namespace (two
    /// containers may share a host name, each with its own pids).
    pub pid_space: String,
    pub pid: i64,
    pub version: String,
    pub listen: String,
    pub lease_ms: i64,
    pub started_ms: i64,
}

/// What changes between heartbeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub watcher: bool,
    pub in_flight: i64,
    pub watch: String,
}

/// A live agent holds the node id asked for.
#[derive(Debug, Clone)]
pub struct NodeInUse {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// Since its last heartbeat.
    pub quiet_ms: i64,
}

impl std::fmt::Display for NodeInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the node id `{}` is in use by a running agent (pid {} on {}, last heartbeat {} ms ago): give each agent its own --node-id",
            self.id, self.pid, self.host, self.quiet_ms
        )
    }
}

/// The elected watcher of a data dir, as its row says.
#[derive(Debug, Clone)]
pub struct WatchHolder {
    pub node: String,
    /// Whether its node row is past its lease (or stopped, or missing).
    pub quiet: bool,
}

impl Store {
    /// Takes the node id `id` for the agent `me`: when no row has it, or
    /// its agent stopped, went quiet for longer than its lease, or ran on
    /// this host in a process that is gone (a `kill -9` restarted at once
    /// is the same node). A compare-and-set on the row read: two agents
    /// starting at once never both get it.
    pub async fn register_node(
        &self,
        id: &str,
        me: &NodeInfo,
    ) -> Result<Result<(), NodeInUse>, StoreError> {
        loop {
            let now = self.now_ms();
            let row = sqlx::query(
                "SELECT host, pid_space, pid, started_ms, heartbeat_ms, lease_ms, stopped_ms FROM nodes WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            let taken = match row {
                None => {
                    let sql = format!("{INSERT_NODE} ON CONFLICT (id) DO NOTHING");
                    bind_node(sqlx::query(&sql), id, me, now)
                        .execute(&self.pool)
                        .await?
                        .rows_affected()
                }
                Some(row) => {
                    let host: String = row.get("host");
                    let pid_space: String = row.get("pid_space");
                    let pid: i64 = row.get("pid");
                    let heartbeat: i64 = row.get("heartbeat_ms");
                    let lease: i64 = row.get("lease_ms");
                    let stopped: Option<i64> = row.get("stopped_ms");
                    // Its process is checked only where its pid is ours to
                    // read; elsewhere only its heartbeat tells.
                    let here = host == me.host && pid_space == me.pid_space;
                    let gone = stopped.is_some()
                        || heartbeat < now - lease
                        || (here && (pid == me.pid || !process_alive(pid)));
                    if !gone {
                        return Ok(Err(NodeInUse {
                            id: id.to_owned(),
                            host,
                            pid,
                            quiet_ms: (now - heartbeat).max(0),
                        }));
                    }
                    let started: i64 = row.get("started_ms");
                    let sql = "UPDATE nodes SET origin = $2, data_dir = $3, host = $4, pid_space = $5, pid = $6, version = $7, listen = $8, \
                               lease_ms = $9, started_ms = $10, heartbeat_ms = $11, stopped_ms = NULL, watcher = 0, in_flight = 0, watch = '' \
                               WHERE id = $1 AND host = $12 AND pid = $13 AND started_ms = $14";
                    bind_node(sqlx::query(sql), id, me, now)
                        .bind(host)
                        .bind(pid)
                        .bind(started)
                        .execute(&self.pool)
                        .await?
                        .rows_affected()
                }
            };
            if taken == 1 {
                return Ok(Ok(()));
            }
        }
    }

    /// Keeps this node's row fresh (made again if it was deleted); false
    /// when another agent has taken the node id meanwhile (this one was
    /// quiet past its lease), which must then stop.
    pub async fn heartbeat(&self, me: &NodeInfo, status: &NodeStatus) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE nodes SET heartbeat_ms = $2, watcher = $3, in_flight = $4, watch = $5 \
             WHERE id = $1 AND pid = $6 AND started_ms = $7 AND host = $8",
        )
        .bind(&*self.node)
        .bind(self.now_ms())
        .bind(i64::from(status.watcher))
        .bind(status.in_flight)
        .bind(&status.watch)
        .bind(me.pid)
        .bind(me.started_ms)
        .bind(&me.host)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let sql = format!("{INSERT_NODE} ON CONFLICT (id) DO NOTHING");
        let made = bind_node(sqlx::query(&sql), &self.node, me, self.now_ms())
            .execute(&self.pool)
            .await?;
        Ok(made.rows_affected() == 1)
    }

    /// Marks this node stopped, at a clean stop.
    pub async fn node_stopped(&self, me: &NodeInfo) -> Result<(), StoreError> {
        let now = self.now_ms();
        sqlx::query(
            "UPDATE nodes SET stopped_ms = $2, heartbeat_ms = $2, watcher = 0, in_flight = 0, watch = '' \
             WHERE id = $1 AND pid = $3 AND started_ms = $4",
        )
        .bind(&*self.node)
        .bind(now)
        .bind(me.pid)
        .bind(me.started_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node that recorded into this database, by origin and id.
    pub async fn list_nodes(&self) -> Result<Vec<Node>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, origin, data_dir, host, pid, version, listen, lease_ms, started_ms, heartbeat_ms, stopped_ms, \
             watcher, in_flight, watch FROM nodes ORDER BY origin, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let now = self.now_ms();
        Ok(rows
            .iter()
            .map(|r| {
                let heartbeat: i64 = r.get("heartbeat_ms");
                let stopped: Option<i64> = r.get("stopped_ms");
                let state = if stopped.is_some() {
                    NodeState::Stopped
                } else if heartbeat < now - r.get::<i64, _>("lease_ms") {
                    NodeState::Lost
                } else {
                    NodeState::Up
                };
                let up = state == NodeState::Up;
                Node {
                    id: r.get("id"),
                    state,
                    origin: r.get("origin"),
                    data_dir: r.get("data_dir"),
                    host: r.get("host"),
                    pid: r.get("pid"),
                    version: r.get("version"),
                    listen: r.get("listen"),
                    started_at: super::timestamp(r.get("started_ms")),
                    heartbeat_at: super::timestamp(Some(heartbeat)),
                    stopped_at: super::timestamp(stopped),
                    watcher: up && r.get::<i64, _>("watcher") != 0,
                    runs_in_flight: if up { r.get("in_flight") } else { 0 },
                    watch: if up { r.get("watch") } else { String::new() },
                }
            })
            .collect())
    }

    /// Records this node as its origin's watcher, raising the fence that
    /// every later commit of its events checks. On PostgreSQL through the
    /// session holding the election's lock: a session that broke since
    /// cannot raise it. Returns the new fence and the node that watched
    /// before (none the first time).
    pub async fn take_watch(
        &self,
        lock: &mut WatchLock,
    ) -> Result<(i64, Option<String>), StoreError> {
        let backend_pid = lock.backend_pid();
        // One statement, which begins with its write: SQLite's deferred
        // transaction could not take the write lock after a read.
        let q = sqlx::query(
            "INSERT INTO watchers (origin, node, fence, since_ms, backend_pid) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (origin) DO UPDATE SET previous = watchers.node, node = excluded.node, \
             fence = watchers.fence + 1, since_ms = excluded.since_ms, backend_pid = excluded.backend_pid \
             RETURNING fence, previous",
        )
        .bind(&*self.origin)
        .bind(&*self.node)
        .bind(self.now_ms())
        .bind(backend_pid);
        let row = match lock {
            WatchLock::Postgres { conn, .. } => q.fetch_one(&mut *conn).await?,
            WatchLock::File(_) => q.fetch_one(&self.pool).await?,
        };
        Ok((row.get("fence"), row.get("previous")))
    }

    /// Who watches this origin, and whether that node has gone quiet.
    pub async fn watch_holder(&self) -> Result<Option<WatchHolder>, StoreError> {
        let row = sqlx::query(
            "SELECT w.node, n.heartbeat_ms, n.lease_ms, n.stopped_ms \
             FROM watchers w LEFT JOIN nodes n ON n.id = w.node WHERE w.origin = $1",
        )
        .bind(&*self.origin)
        .fetch_optional(&self.pool)
        .await?;
        let now = self.now_ms();
        Ok(row.map(|r| {
            let heartbeat: Option<i64> = r.get("heartbeat_ms");
            let lease: Option<i64> = r.get("lease_ms");
            let stopped: Option<i64> = r.get("stopped_ms");
            WatchHolder {
                node: r.get("node"),
                quiet: stopped.is_some()
                    || match (heartbeat, lease) {
                        (Some(h), Some(l)) => h < now - l,
                        _ => true,
                    },
            }
        }))
    }

    /// Inside a commit of events: fails with [`StoreError::Deposed`] unless
    /// `fence` is still this origin's watcher's. PostgreSQL holds the row
    /// shared until the commit, so an election waits for it.
    pub(super) async fn check_watch_fence(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        fence: i64,
    ) -> Result<(), StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        };
        let sql = format!("SELECT fence FROM watchers WHERE origin = $1 AND fence = $2{lock}");
        let row = sqlx::query(&sql)
            .bind(&*self.origin)
            .bind(fence)
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(StoreError::Deposed),
        }
    }
}

const INSERT_NODE: &str = "INSERT INTO nodes (id, origin, data_dir, host, pid_space, pid, version, listen, lease_ms, started_ms, heartbeat_ms) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

fn bind_node<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    id: &'q str,
    me: &'q NodeInfo,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(id)
        .bind(&me.origin)
        .bind(&me.data_dir)
        .bind(&me.host)
        .bind(&me.pid_space)
        .bind(me.pid)
        .bind(&me.version)
        .bind(&me.listen)
        .bind(me.lease_ms)
        .bind(me.started_ms)
        .bind(now)
}

/// Whether process `pid` (of this boot and pid namespace) is alive: it
/// exists and is not a zombie. A pid reused since is taken for alive: the
/// id then waits for the heartbeat to go quiet, never is taken from a
/// live agent.
fn process_alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// This process's pid space: the boot id and the pid namespace.
pub fn pid_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    format!("{} {ns}", boot.trim())
}

/// Takes a data dir's watch lock, the election of its watcher: on
/// PostgreSQL an advisory lock on the origin, held by a session of its own
/// (it goes with the session: a killed agent's is free at once); on SQLite
/// a file lock on `DATA/.nexus/watcher.lock` (every agent of one SQLite
/// file is on its host).
pub struct WatchLocker {
    store: Store,
    file: std::path::PathBuf,
    /// The session that asks (PostgreSQL), kept between tries.
    conn: Option<sqlx::AnyConnection>,
}

/// The watch lock, held.
pub enum WatchLock {
    Postgres {
        conn: sqlx::AnyConnection,
        backend_pid: i64,
    },
    File(std::fs::File),
}

/// The advisory lock's key: the origin, hashed by the server to 64 bits.
const LOCK_KEY: &str = "hashtextextended('nexusd watch ' || $1, 0)";

impl WatchLocker {
    pub fn new(store: Store, state_dir: &std::path::Path) -> WatchLocker {
        WatchLocker {
            store,
            file: state_dir.join("watcher.lock"),
            conn: None,
        }
    }

    /// Tries once to take the lock; `None` while another agent holds it.
    pub async fn try_take(&mut self) -> Result<Option<WatchLock>, StoreError> {
        use sqlx::Connection as _;
        let Some(url) = self.store.url.clone() else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.file)
                .map_err(sqlx::Error::Io)?;
            return match file.try_lock() {
                Ok(()) => Ok(Some(WatchLock::File(file))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(sqlx::Error::Io(e).into()),
            };
        };
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => sqlx::AnyConnection::connect(&url).await?,
        };
        let sql = format!("SELECT pg_try_advisory_lock({LOCK_KEY}), pg_backend_pid()");
        let row = sqlx::query(&sql)
            .bind(&*self.store.origin)
            .fetch_one(&mut conn)
            .await?;
        if row.get::<bool, _>(0) {
            let backend_pid = i64::from(row.get::<i32, _>(1));
            return Ok(Some(WatchLock::Postgres { conn, backend_pid }));
        }
        self.conn = Some(conn);
        Ok(None)
    }

    /// Ends the PostgreSQL session that holds the lock (found in
    /// `pg_locks`, not in a row that may be stale), when its watcher went
    /// quiet past its lease: hung, or cut off from the database while its
    /// session lingers. That frees the lock.
    pub async fn end_holder_session(&self) -> Result<(), StoreError> {
        if self.store.backend == Backend::Postgres {
            // A bigint key shows as classid (high half) and objid (low half).
            let sql = format!(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND CAST(l.classid AS BIGINT) = (({LOCK_KEY}) >> 32) & 4294967295 \
                 AND CAST(l.objid AS BIGINT) = ({LOCK_KEY}) & 4294967295"
            );
            sqlx::query(&sql)
                .bind(&*self.store.origin)
                .execute(&self.store.pool)
                .await?;
        }
        Ok(())
    }
}

impl WatchLock {
    /// The PostgreSQL session holding it.
    pub fn backend_pid(&self) -> Option<i64> {
        match self {
            WatchLock::Postgres { backend_pid, .. } => Some(*backend_pid),
            WatchLock::File(_) => None,
        }
    }

    /// Fails once the lock is no longer held: its session broke.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        if let WatchLock::Postgres { conn, .. } = self {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Gives the lock up (a clean stop): the next agent takes it at once.
    pub async fn release(self) {
        use sqlx::Connection as _;
        if let WatchLock::Postgres { conn, .. } = self {
            let _ = conn.close().await;
        }
    }
}
