//! The promise: no event lost across `kill -9`, whatever is in flight.

use std::collections::BTreeMap;
use std::fs;

use crate::agent::{Agent, Backend, process_gone};

const COPY: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: copy}
spec:
  on: [{event: file.created, pattern: /burst/*.txt}]
  steps:
    - name: copy
      action: file.copy
      with: {from: "{{event.path}}", to: "/copied/{{event.name}}"}
"#;

/// kill -9 of the real binary three times during a 2,000-file burst, then a
/// clean start: every file has exactly one run, `succeeded`, and its copy;
/// a run cut short by a kill ran again as a later attempt.
fn kill_9_during_a_burst(backend: Backend) {
    const FILES: usize = 2000;
    let mut agent = Agent::start_on(backend, &[("copy.yaml", COPY)], &[]);
    fs::create_dir_all(agent.path("/burst")).unwrap();
    let dir = agent.path("/burst");
    let writer = std::thread::spawn(move || {
        for i in 0..FILES {
            fs::write(dir.join(format!("f{i:04}.txt")), format!("{i}")).unwrap();
        }
    });
    for kill in 1..=3 {
        // Kill once this round's agent has done some of the work.
        let before = agent
            .runs()
            .iter()
            .filter(|r| r.status == "succeeded")
            .count();
        agent.wait_until(&format!("progress before kill {kill}"), || {
            let done = agent
                .runs()
                .iter()
                .filter(|r| r.status == "succeeded")
                .count();
            done > before + 50 || done >= FILES
        });
        agent.kill9();
        agent.spawn(&[]);
    }
    writer.join().unwrap();
    agent.wait_until("every file's run to succeed", || {
        agent
            .runs()
            .iter()
            .filter(|r| r.status == "succeeded")
            .count()
            >= FILES
    });
    agent.stop();
    agent.spawn(&[]);
    agent.barrier();
    let mut by_path: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for r in agent.runs().into_iter().filter(|r| r.workflow == "copy") {
        by_path
            .entry(r.path)
            .or_default()
            .push((r.status, r.attempts));
    }
    assert_eq!(by_path.len(), FILES, "every file has its run");
    let twice: Vec<_> = by_path
        .iter()
        .filter(|(_, runs)| runs.len() != 1 || runs[0].0 != "succeeded")
        .collect();
    assert!(
        twice.is_empty(),
        "files without exactly one succeeded run: {twice:?}"
    );
    for i in 0..FILES {
        assert_eq!(
            fs::read_to_string(agent.path(&format!("/copied/f{i:04}.txt"))).unwrap(),
            i.to_string()
        );
    }
    let rerun = by_path.values().filter(|runs| runs[0].1 > 1).count();
    eprintln!("runs taken up again after a kill: {rerun}");
    let events: Vec<_> = agent
        .events()
        .into_iter()
        .filter(|(kind, path, _)| kind == "file.created" && path.starts_with("/burst/"))
        .collect();
    assert_eq!(
        events.len(),
        FILES,
        "one created event per file, none twice"
    );
}
on_both!(kill_9_three_times_during_a_burst, kill_9_during_a_burst);

/// A PostgreSQL server of the test's own (`initdb`, `pg_ctl`) on a spare
/// port, so restarting it leaves the machine's server alone. Stopped on drop.
pub(crate) struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl OwnPostgres {
    pub(crate) fn start() -> Option<OwnPostgres> {
        let bin = fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .find(|b| b.join("initdb").exists())
        });
        let Some(bin) = bin else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "initdb is required in CI (the PostgreSQL server packages)"
            );
            eprintln!("SKIPPED: PostgreSQL restart test: no initdb under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres { dir, bin, port };
        pg.ctl(&["initdb", "-D", &pg.data(), "-A", "trust", "-U", "postgres"]);
        pg.pg_ctl("start");
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("pgdata").display().to_string()
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs a PostgreSQL program, as the `postgres` user when we are root
    /// (the server refuses to run as root).
    fn command(&self, args: &[&str]) -> std::process::Command {
        let program = self.bin.join(args[0]);
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        cmd.args(&args[1..]);
        cmd
    }

    /// Runs a PostgreSQL program and asserts that it succeeded.
    fn ctl(&self, args: &[&str]) {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn pg_ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        let data = self.data();
        let mut args = vec!["pg_ctl", "-D", &data, "-w", "-l", &log, "-o", &opts, action];
        if action != "start" {
            args.extend(["-m", "fast"]);
        }
        self.ctl(&args);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command(&["pg_ctl", "-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// PostgreSQL restarts while 500 runs are in flight: every run reaches a
/// final state, and none succeeds twice.
#[test]
fn a_postgresql_restart_loses_no_run() {
    const FILES: usize = 500;
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let sleepy = COPY.replace(
        "    - name: copy\n      action: file.copy",
        "    - name: wait\n      run: 'sleep 0.02'\n    - name: copy\n      action: file.copy",
    );
    let agent = Agent::start_on(Backend::Postgres(pg.url()), &[("copy.yaml", &sleepy)], &[]);
    fs::create_dir_all(agent.path("/burst")).unwrap();
    for i in 0..FILES {
        fs::write(agent.path(&format!("/burst/f{i:04}.txt")), format!("{i}")).unwrap();
    }
    agent.wait_until("some runs to succeed", || {
        agent
            .runs()
            .iter()
            .filter(|r| r.status == "succeeded")
            .count()
            >= 50
    });
    pg.pg_ctl("restart");
    agent.wait_until("every run to reach a final state", || {
        let runs = agent.runs();
        runs.len() >= FILES && runs.iter().all(|r| r.status == "succeeded")
    });
    let mut paths: Vec<String> = agent.runs().into_iter().map(|r| r.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), FILES, "one run per file");
    assert_eq!(agent.runs().len(), FILES, "no file ran twice");
    for i in 0..FILES {
        assert!(agent.path(&format!("/copied/f{i:04}.txt")).exists());
    }
    // The listener's connection always breaks; a write breaks only if one
    // was in the middle of a statement (the pool checks a connection before
    // handing it out, and waits for a new one while the server is down).
    let log = agent.log_text();
    assert!(
        [
            "the database is unreachable",
            "the listening connection was lost",
            "listening for other agents' changes failed"
        ]
        .iter()
        .any(|m| log.contains(m)),
        "the restart was noticed"
    );
}

/// Per-file order with 10% random failures (retried) and random durations:
/// per path, runs start in event order and never overlap; different paths
/// run side by side.
fn per_file_order(backend: Backend) {
    const PATHS: usize = 8;
    const VERSIONS: usize = 6;
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("order.log");
    let workflow = format!(
        r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {{name: ordered}}
spec:
  on: [{{event: [file.created, file.updated], pattern: /o/*.txt, on_burst: queue}}]
  concurrency: 4
  retry: {{max_attempts: 5, backoff: 10ms, multiplier: 1}}
  steps:
    - name: work
      run: |
        n=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
        echo "begin {{{{event.path}}}} {{{{event.id}}}}" >> {log}
        sleep 0.0$((n % 4))
        echo "end {{{{event.path}}}} {{{{event.id}}}}" >> {log}
        [ $((n % 10)) -ne 0 ]
"#,
        log = log.display()
    );
    let agent = Agent::start_on(backend, &[("o.yaml", &workflow)], &[]);
    fs::create_dir_all(agent.path("/o")).unwrap();
    for v in 0..VERSIONS {
        for p in 0..PATHS {
            fs::write(agent.path(&format!("/o/p{p}.txt")), format!("v{v}")).unwrap();
        }
        // Let each version's close reach the watcher as its own event.
        agent.barrier();
    }
    let events: Vec<(String, String)> = agent.query(async |pool| {
        use sqlx::Row;
        sqlx::query("SELECT id, path FROM events WHERE path LIKE '/o/%' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get("id"), r.get("path")))
            .collect()
    });
    assert!(events.len() >= PATHS * 2, "{events:?}");
    agent.wait_runs("ordered", events.len());
    let text = fs::read_to_string(&log).unwrap();
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut started: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut most_open = 0;
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (what, path, id) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        match what {
            "begin" => {
                assert!(
                    !open.contains_key(path),
                    "two runs of {path} at once: {line}\n{text}"
                );
                open.insert(path.to_owned(), id.to_owned());
                most_open = most_open.max(open.len());
                let ids = started.entry(path.to_owned()).or_default();
                if ids.last().map(String::as_str) != Some(id) {
                    ids.push(id.to_owned());
                }
            }
            _ => assert_eq!(open.remove(path).as_deref(), Some(id), "{line}"),
        }
    }
    for p in 0..PATHS {
        let path = format!("/o/p{p}.txt");
        let expected: Vec<String> = events
            .iter()
            .filter(|(_, ep)| *ep == path)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(started[&path], expected, "start order of {path}");
    }
    assert!(most_open > 1, "different paths ran side by side");
    let retried = agent.runs().iter().filter(|r| r.attempts > 1).count();
    eprintln!("runs: {}, retried: {retried}", events.len());
}
on_both!(per_file_order_holds_under_random_failures, per_file_order);

/// The test's PostgreSQL database, and its URL for a second agent.
pub(crate) fn postgres_and_url() -> Option<(Backend, String)> {
    let backend = Backend::postgres()?;
    let Backend::Postgres(url) = backend.clone() else {
        unreachable!()
    };
    Some((backend, url))
}

/// Another agent on `a`'s data dir, definitions and PostgreSQL (`url`),
/// started after `a`'s files were recorded; returns once it is ready.
pub(crate) fn second_node(
    a: &Agent,
    url: &str,
    extra: &[&str],
) -> (std::process::Child, std::path::PathBuf) {
    second_node_env(a, url, extra, &[])
}

/// The same, with variables set in its environment.
pub(crate) fn second_node_env(
    a: &Agent,
    url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, std::path::PathBuf) {
    let log = a.log.with_file_name("b.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nexusd"))
        .args([
            "serve",
            "--data-dir",
            a.data.to_str().unwrap(),
            "--config-dir",
            a.config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            url,
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    a.wait_until("the second node to be ready", || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains(" ready "))
    });
    (child, log)
}

/// A node that stops cleanly hands its unfinished runs over: it releases
/// their leases and says so (NOTIFY), and another node takes them up at
/// once, not when the lease would have run out. Leases and polls of an
/// hour here: only the notification can move the run within the test.
#[test]
fn a_stopping_node_hands_its_unfinished_runs_over_at_once() {
    let Some((backend, url)) = postgres_and_url() else {
        return;
    };
    let workflow = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: handover}
spec:
  on: [{event: file.created, pattern: /h/*.txt}]
  retry: {max_attempts: 3, backoff: 10s}
  steps:
    - name: work
      run: '[ "$NEXUS_ATTEMPT" -ge 2 ] || exit 1'
"#;
    let slow = ["--lease", "1h", "--poll-interval", "1h"];
    let mut a = Agent::start_on(
        backend,
        &[("handover.yaml", workflow)],
        &[&slow[..], &["--node-id", "a"]].concat(),
    );
    a.write("/h/x.txt", "x");
    a.wait_until("the first attempt to fail", || {
        a.runs().iter().any(|r| r.status == "retrying")
    });
    let (mut b, b_log) = second_node(&a, &url, &[&slow[..], &["--node-id", "b"]].concat());
    assert!(a.stop().success());
    assert!(
        a.log_text().contains("unfinished runs released"),
        "{}",
        a.log_text()
    );
    a.wait_until("node b to finish the run", || {
        a.runs()
            .iter()
            .any(|r| r.status == "succeeded" && r.attempts == 2)
    });
    let b_text = fs::read_to_string(&b_log).unwrap();
    assert!(b_text.contains("taking up runs claimed"), "{b_text}");
    let runs = a.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let _ = b.kill();
    let _ = b.wait();
}

/// Notifications survive a PostgreSQL restart: the listener reconnects
/// and looks at everything once (what was sent meanwhile is lost), so a
/// pause applied through one node right after the restart reaches the
/// other, whose poll is an hour away.
#[test]
fn wake_ups_survive_a_postgresql_restart() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let backend = Backend::Postgres(pg.url());
    let one = Agent::start_on(backend.clone(), &[("copy.yaml", COPY)], &[]);
    let two = Agent::start_on(backend, &[], &["--poll-interval", "1h"]);
    let key = one.user_key("root", "admin");
    pg.pg_ctl("restart");
    one.wait_until("the pause to be recorded after the restart", || {
        one.cli(&key, &["workflows", "pause", "copy"]).code == 0
    });
    two.wait_for_a_paused_run("/burst");
}

/// A stale worker: agent A is stopped (SIGSTOP) past its lease while its
/// run's step is running; agent B on the same PostgreSQL takes the run up
/// and completes it; A, continued (SIGCONT), kills its copy of the step at
/// once (its lease ran out unrenewed) and records nothing over B's result:
/// A's attempt reads `interrupted` (as B recorded it), B's `succeeded`.
#[test]
fn a_stale_worker_stops_its_copy_and_records_nothing_over_the_other_nodes_result() {
    let Some((backend, url)) = postgres_and_url() else {
        return;
    };
    let workflow = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: slow}
spec:
  on: [{event: file.created, pattern: /s/*.txt}]
  steps:
    - name: work
      run: '[ "$NEXUS_ATTEMPT" -ge 2 ] || { echo $$ > a.pid; exec sleep 30; }'
"#;
    let lease = ["--lease", "1s"];
    let a = Agent::start_on(
        backend,
        &[("slow.yaml", workflow)],
        &[&lease[..], &["--node-id", "a"]].concat(),
    );
    a.write("/s/x.txt", "x");
    let pid = a.wait_line("/a.pid");
    unsafe {
        libc::kill(a.pid(), libc::SIGSTOP);
    }
    let (mut b, b_log) = second_node(&a, &url, &["--node-id", "b", "--lease", "1s"]);
    a.wait_until("node b to complete the run", || {
        a.runs()
            .iter()
            .any(|r| r.status == "succeeded" && r.attempts == 2)
    });
    assert!(
        !process_gone(&pid),
        "node a's copy of the step still runs while a is stopped"
    );
    unsafe {
        libc::kill(a.pid(), libc::SIGCONT);
    }
    let continued = std::time::Instant::now();
    a.wait_until("node a to kill its copy of the step", || process_gone(&pid));
    assert!(
        continued.elapsed() < std::time::Duration::from_secs(3),
        "killed {:?} after SIGCONT: more than a renewal period",
        continued.elapsed()
    );
    a.wait_until("node a to say it stopped the run", || {
        let log = a.log_text();
        log.contains("lease ran out unrenewed") || log.contains("this node lost the run")
    });
    a.barrier();
    let runs = a.runs();
    let slow: Vec<_> = runs.iter().filter(|r| r.workflow == "slow").collect();
    assert_eq!(slow.len(), 1, "{runs:?}");
    assert_eq!(
        (slow[0].status.as_str(), slow[0].attempts),
        ("succeeded", 2),
        "{runs:?}"
    );
    let run_id = slow[0].id.clone();
    let attempts: Vec<(i64, String)> = a.query(async move |pool| {
        sqlx::query_as("SELECT attempt, status FROM attempts WHERE run_id = $1 ORDER BY attempt")
            .bind(run_id)
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(
        attempts,
        [(1, "interrupted".to_owned()), (2, "succeeded".to_owned())]
    );
    assert!(
        fs::read_to_string(&b_log)
            .unwrap()
            .contains("taking up runs claimed from the store")
    );
    let _ = b.kill();
    let _ = b.wait();
}

/// A step's process dies with the agent: after `kill -9` nothing it started
/// keeps running.
#[test]
fn steps_die_with_a_killed_agent() {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("pid");
    let workflow = format!(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: long}}\nspec:\n  on: [{{event: file.created, pattern: /l/*.txt}}]\n  steps:\n    - name: wait\n      run: 'echo $$ > {}; exec sleep 60'\n",
        pid_file.display()
    );
    let mut agent = Agent::start(&[("long.yaml", &workflow)], &[]);
    agent.write("/l/a.txt", "a");
    agent.wait_until("the step to start", || {
        fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    });
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    assert!(!process_gone(&pid));
    agent.kill9();
    agent.wait_until("the step's process to die", || process_gone(&pid));
}

/// Three agents started at once on an empty PostgreSQL database: the
/// migrations run once, and all three come up.
#[test]
fn agents_starting_at_once_on_an_empty_database_migrate_it_once() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let agents: Vec<Agent> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let backend = backend.clone();
                scope.spawn(move || Agent::start_on(backend, &[], &["--node-id", &format!("n{i}")]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let versions: Vec<i64> = agents[0].query(async |pool| {
        use sqlx::Row;
        sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("version"))
            .collect()
    });
    let mut unique = versions.clone();
    unique.dedup();
    assert_eq!(versions, unique, "each migration recorded once");
    assert_eq!(versions.first(), Some(&1));
    assert_eq!(
        versions.len(),
        fs::read_dir(crate::support::repo().join("migrations/postgres"))
            .unwrap()
            .count()
    );
}

/// A move holds both its paths: its run waits for the run still working on
/// the path it left, and later runs on that path wait for it.
#[test]
fn a_move_waits_for_the_run_on_the_path_it_left() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("order.log");
    let workflow = format!(
        r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {{name: mv}}
spec:
  on: [{{event: [file.created, file.moved], pattern: /mv/*.txt, on_burst: queue}}]
  concurrency: 8
  steps:
    - name: work
      run: |
        echo "begin {{{{event.type}}}} {{{{event.path}}}}" >> {log}
        if [ "{{{{event.type}}}}" = file.created ]; then sleep 0.5; fi
        echo "end {{{{event.type}}}} {{{{event.path}}}}" >> {log}
"#,
        log = log.display()
    );
    let agent = Agent::start(&[("mv.yaml", &workflow)], &[]);
    agent.write("/mv/a.txt", "a");
    agent.wait_until("the created run to begin", || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("begin file.created /mv/a.txt"))
    });
    fs::rename(agent.path("/mv/a.txt"), agent.path("/mv/b.txt")).unwrap();
    agent.wait_runs("mv", 2);
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "begin file.created /mv/a.txt",
            "end file.created /mv/a.txt",
            "begin file.moved /mv/b.txt",
            "end file.moved /mv/b.txt",
        ],
        "{text}"
    );
}
