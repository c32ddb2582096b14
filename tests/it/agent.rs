//! A real `nexusd serve` on a temp data dir, and ways to wait on what it does.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;

/// Where the agent records: the SQLite file, or a fresh PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// A fresh PostgreSQL database of its own, or `None` (said loudly) when
    /// no server answers outside CI. In CI (`CI=true`) it must answer.
    pub fn postgres() -> Option<Backend> {
        let base = std::env::var("NEXUS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("nexus_t_{}", unique());
        let created = block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&base)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await?;
            pool.close().await;
            Ok::<(), sqlx::Error>(())
        });
        match created {
            Ok(()) => {
                let at = base.rfind('/').unwrap();
                Some(Backend::Postgres(format!("{}/{name}", &base[..at])))
            }
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL at {base} is required in CI: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: PostgreSQL test: no server at {base} ({e})");
                None
            }
        }
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A running agent; killed (SIGTERM, then SIGKILL) when dropped.
pub struct Agent {
    pub data: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub backend: Backend,
    /// Runs the agent in a user namespace of its own whose inotify watch
    /// limit is this (`/proc/sys/user/max_inotify_watches`).
    pub watch_limit: Option<u32>,
    /// Runs the agent in a mount namespace of its own where its config dir
    /// is mounted at this path, given as its `--config-dir`: two agents'
    /// config dirs of one path, as on two hosts.
    pub config_at: Option<PathBuf>,
    /// Runs the agent as `nobody`, where permissions count (the tests run
    /// as root): see [`Agent::hand_over_to_nobody`].
    as_nobody: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// One recorded run, as the `runs` table holds it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub workflow: String,
    pub status: String,
    pub event_type: String,
    pub path: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub reason: Option<String>,
}

/// One recorded step.
#[derive(Debug, Clone)]
pub struct StepRow {
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub error: Option<String>,
}

impl Agent {
    /// Starts an agent whose config dir holds `definitions` (file name, YAML).
    pub fn start(definitions: &[(&str, &str)], extra: &[&str]) -> Agent {
        Agent::start_on(Backend::Sqlite, definitions, extra)
    }

    /// The same, recording in `backend`.
    pub fn start_on(backend: Backend, definitions: &[(&str, &str)], extra: &[&str]) -> Agent {
        let mut agent = Agent::new_on(backend, definitions);
        agent.spawn(extra);
        agent
    }

    /// Its directories made, not started yet ([`Agent::spawn`] starts it).
    pub fn new_on(backend: Backend, definitions: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("config");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&config).unwrap();
        for (name, yaml) in definitions {
            fs::write(config.join(name), yaml).unwrap();
        }
        let data = data.canonicalize().unwrap();
        let log = dir.path().join("agent.log");
        Agent {
            data,
            config,
            log,
            backend,
            watch_limit: None,
            config_at: None,
            as_nobody: false,
            child: None,
            _dir: dir,
        }
    }

    /// Another agent on `other`'s data dir and database, with a config dir
    /// (holding `definitions`) and a log of its own; not started yet.
    pub fn sharing(other: &Agent, definitions: &[(&str, &str)]) -> Agent {
        let mut agent = Agent::new_on(other.backend.clone(), definitions);
        agent.data = other.data.clone();
        agent
    }

    /// Whether the agent's process still runs (it was not stopped here).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Starts an agent on the repository's `workflows.example/`.
    pub fn examples_on(backend: Backend) -> Agent {
        let mut defs = Vec::new();
        for entry in fs::read_dir(crate::support::repo().join("workflows.example")).unwrap() {
            let path = entry.unwrap().path();
            defs.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&path).unwrap(),
            ));
        }
        let refs: Vec<(&str, &str)> = defs.iter().map(|(n, y)| (n.as_str(), y.as_str())).collect();
        Agent::start_on(backend, &refs, &[])
    }

    pub fn spawn(&mut self, extra: &[&str]) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut args = vec![
            "serve".to_owned(),
            "--data-dir".to_owned(),
            self.data.display().to_string(),
            "--config-dir".to_owned(),
            self.config_at
                .as_ref()
                .unwrap_or(&self.config)
                .display()
                .to_string(),
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        if let Backend::Postgres(url) = &self.backend {
            args.extend(["--database-url".to_owned(), url.clone()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let bin = env!("CARGO_BIN_EXE_nexusd");
        let mut command = match self.watch_limit {
            _ if self.config_at.is_some() => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$0\" \"$@\"")
                    .arg(bin)
                    .arg(&self.config)
                    .arg(self.config_at.as_ref().unwrap());
                c
            }
            _ if self.as_nobody => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", bin]);
                c
            }
            Some(limit) => {
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-root-user", "sh", "-c"])
                    .arg(format!(
                        "echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
                    ))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(&args)
            .env("NEXUS_LOG", "info,nexusd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let readies = |log: String| {
            log.matches(" ready ").count() + log.matches("\"message\":\"ready\"").count()
        };
        let ready_count = readies(self.log_text());
        self.wait_until("the agent to be ready", || {
            readies(self.log_text()) > ready_count
        });
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the agent to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the agent runs");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the agent runs").id() as i32
    }

    /// Kills the agent with SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the agent runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The listen address the agent logged last (a restart picks a new port).
    pub fn http_addr(&self) -> String {
        let log = self.log_text();
        let line = log
            .lines()
            .rfind(|l| l.contains("http listening"))
            .expect("listen line");
        line.rsplit("listen=").next().unwrap().trim().to_owned()
    }

    /// The agent's API root, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    /// From now on the agent runs as `nobody`, and its directories (as
    /// they are now) are nobody's.
    pub fn hand_over_to_nobody(&mut self) {
        let chown = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(self.data.parent().unwrap())
            .status()
            .unwrap();
        assert!(chown.success());
        self.as_nobody = true;
    }

    /// The body of `GET PATH` on the agent's public routes.
    pub fn get_public(&self, path: &str) -> String {
        let url = format!("{}{path}", self.url());
        let _ = rustls::crypto::ring::default_provider().install_default();
        block_on(async move { reqwest::get(url).await.unwrap().text().await.unwrap() })
    }

    /// Runs `nexusd admin ARGS` on the agent's database.
    pub fn admin(&self, args: &[&str]) -> crate::support::Outcome {
        let mut all = vec!["admin", "--data-dir"];
        let data = self.data.display().to_string();
        all.push(&data);
        if let Backend::Postgres(url) = &self.backend {
            all.extend(["--database-url", url.as_str()]);
        }
        all.extend(args);
        crate::support::nexusd_in(&self.data, &all, b"")
    }

    /// Makes a user with `role` and returns a fresh key of theirs.
    pub fn user_key(&self, user: &str, role: &str) -> String {
        let made = self.admin(&["create-user", user, "--role", role]);
        assert!(
            made.code == 0 || made.stderr.contains("already exists"),
            "{made:?}"
        );
        let key = self.admin(&["create-user-key", user]);
        assert_eq!(key.code, 0, "{key:?}");
        key.stdout.trim().to_owned()
    }

    /// Runs a client command (`nexusd ARGS`) against this agent with `key`,
    /// in `cwd`, with `stdin`.
    pub fn cli_in(
        &self,
        key: &str,
        cwd: &std::path::Path,
        args: &[&str],
        stdin: &[u8],
    ) -> crate::support::Outcome {
        crate::support::nexusd_env(
            cwd,
            args,
            stdin,
            &[("NEXUS_URL", self.url().as_str()), ("NEXUS_API_KEY", key)],
        )
    }

    /// Runs a client command against this agent with `key`.
    pub fn cli(&self, key: &str, args: &[&str]) -> crate::support::Outcome {
        self.cli_in(key, &self.data, args, b"")
    }

    /// `GET PATH` on the agent with `key`: the status and the JSON answer.
    pub fn get_json(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {key}");
        let (status, _, body) = crate::support::send(
            "GET",
            &format!("{}{path}", self.url()),
            &[("authorization", &auth)],
            None,
        );
        (status, serde_json::from_str(&body).unwrap())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.data.join(rel.trim_start_matches('/'))
    }

    /// Writes a file under the data dir, creating its directories.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// Writes a new file under `dir` at each poll until one of its runs is
    /// recorded `skipped` as paused: how a test sees a pause reach this
    /// agent, whenever it does.
    pub fn wait_for_a_paused_run(&self, dir: &str) {
        let mut n = 0;
        self.wait_until("a run skipped as paused", || {
            n += 1;
            self.write(&format!("{dir}/p{n}.txt"), "p");
            self.runs()
                .iter()
                .any(|r| r.status == "skipped" && r.reason.as_deref() == Some("paused"))
        });
    }

    /// Polls `cond` every 10 ms until it holds; fails after 60 s with the log.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; agent log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a file to hold a whole line (a step's `echo $$ > FILE`
    /// creates it empty, then writes) and returns it, trimmed.
    pub fn wait_line(&self, rel: &str) -> String {
        let p = self.path(rel);
        self.wait_until(&format!("a line in {rel}"), || {
            fs::read_to_string(&p).is_ok_and(|c| c.ends_with('\n'))
        });
        fs::read_to_string(p).unwrap().trim().to_owned()
    }

    /// Waits for a file to exist and returns its content.
    pub fn wait_file(&self, rel: &str) -> String {
        let p = self.path(rel);
        self.wait_until(&format!("file {rel}"), || p.exists());
        fs::read_to_string(p).unwrap()
    }

    /// Runs `f` against the agent's database, read only for SQLite.
    pub fn query<T>(&self, f: impl AsyncFnOnce(sqlx::AnyPool) -> T) -> T {
        self.on_database("ro", f)
    }

    /// Runs SQL that changes the agent's database (its process stopped).
    pub fn execute(&self, sql: &'static str) {
        self.on_database("rw", async |pool| {
            sqlx::query(sql).execute(&pool).await.unwrap();
        })
    }

    /// Runs `f` against the agent's database, the SQLite file opened in
    /// `mode`.
    fn on_database<T>(&self, mode: &str, f: impl AsyncFnOnce(sqlx::AnyPool) -> T) -> T {
        sqlx::any::install_default_drivers();
        let url = match &self.backend {
            Backend::Sqlite => format!(
                "sqlite://{}?mode={mode}",
                self.data.join(".nexus/nexus.db").display()
            ),
            Backend::Postgres(url) => url.clone(),
        };
        block_on(async move {
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            let out = f(pool.clone()).await;
            pool.close().await;
            out
        })
    }

    pub fn runs(&self) -> Vec<RunRow> {
        self.query(async |pool| {
            sqlx::query("SELECT id, workflow, status, event_type, path, attempts, error, reason FROM runs ORDER BY queued_ms, id")
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| RunRow {
                    id: r.get("id"),
                    workflow: r.get("workflow"),
                    status: r.get("status"),
                    event_type: r.get("event_type"),
                    path: r.get("path"),
                    attempts: r.get("attempts"),
                    error: r.get("error"),
                    reason: r.get("reason"),
                })
                .collect()
        })
    }

    pub fn steps(&self, run_id: &str) -> Vec<StepRow> {
        let run_id = run_id.to_owned();
        self.query(async move |pool| {
            sqlx::query("SELECT name, status, exit_code, stdout, error FROM steps WHERE run_id = $1 ORDER BY attempt, idx")
                .bind(run_id)
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| StepRow {
                    name: r.get("name"),
                    status: r.get("status"),
                    exit_code: r.get("exit_code"),
                    stdout: r.get::<Option<String>, _>("stdout").unwrap_or_default(),
                    error: r.get("error"),
                })
                .collect()
        })
    }

    /// Every recorded gap as `(reason, changes)`, oldest first.
    pub fn gaps(&self) -> Vec<(String, i64)> {
        self.query(async |pool| {
            sqlx::query_as("SELECT reason, changes FROM gaps ORDER BY at_ms")
                .fetch_all(&pool)
                .await
                .unwrap()
        })
    }

    /// Every recorded event as `(type, path, old_path)`, in order.
    pub fn events(&self) -> Vec<(String, String, Option<String>)> {
        self.query(async |pool| {
            sqlx::query("SELECT type, path, old_path FROM events ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get("type"), r.get("path"), r.get("old_path")))
                .collect()
        })
    }

    /// Waits until `n` runs of `workflow` reached a final state, and returns them.
    pub fn wait_runs(&self, workflow: &str, n: usize) -> Vec<RunRow> {
        let finished = |r: &RunRow| {
            ["succeeded", "failed", "skipped", "cancelled"].contains(&r.status.as_str())
        };
        let mut got = Vec::new();
        self.wait_until(&format!("{n} finished runs of {workflow}"), || {
            got = self
                .runs()
                .into_iter()
                .filter(|r| r.workflow == workflow && finished(r))
                .collect();
            got.len() >= n
        });
        got
    }

    /// Writes a sentinel file and waits for its event: every hint the
    /// watcher delivered before it has been reconciled by then.
    pub fn barrier(&self) {
        let name = format!("/barrier-{}", unique());
        self.write(&name, "b");
        self.wait_until("the barrier event", || {
            self.events().iter().any(|(_, p, _)| *p == name)
        });
    }
}

/// A name no other test of this or another run uses: the time, the process
/// and a counter (tests run in parallel threads).
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}_{}_{n}", std::process::id())
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Backend::Postgres(url) = &self.backend {
            let (base, name) = url.rsplit_once('/').unwrap();
            let base = format!("{base}/test");
            let name = name.to_owned();
            let _ = block_on(async move {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&base)
                    .await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await
            });
        }
    }
}

/// True once process `pid` has ended: gone, or a zombie. Read from its
/// state (the command line is empty for a moment while a live process
/// execs, which a busy machine makes long enough to see).
pub fn process_gone(pid: &str) -> bool {
    assert!(pid.parse::<u32>().is_ok(), "not a pid: {pid:?}");
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}
