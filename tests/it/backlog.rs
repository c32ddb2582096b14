//! No run lost at scale: a backlog past any claim's size, a clean stop past
//! `--shutdown-grace`, a database error a retry gets past, a node whose
//! clock is wrong, and an answer too big to hold.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};

use crate::agent::{Agent, Backend, process_gone};
use crate::durability::{postgres_and_url, second_node_env};

/// The step of the first phase: it never ends, so every run behind it waits.
const BLOCKED: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: backlog}
spec:
  on: [{event: file.created, pattern: /b/*.txt}]
  steps:
    - {name: work, run: 'exec sleep 600'}
"#;

/// The same workflow, quick, for the start after the kill.
const QUICK: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: backlog}
spec:
  on: [{event: file.created, pattern: /b/*.txt}]
  steps:
    - {name: work, action: log, with: {message: "{{event.path}}"}}
"#;

fn count(agent: &Agent, sql: &'static str) -> i64 {
    agent.query(async move |pool| {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

/// `kill -9` with 30,000 unfinished runs (many times what the agent holds
/// in memory), then a start: every run reaches `succeeded` exactly once,
/// except the one in flight at the kill (one worker), which ran twice, its
/// first attempt recorded `interrupted`.
fn kill_9_with_30000_unfinished_runs(backend: Backend) {
    const FILES: usize = 30_000;
    let mut agent = Agent::start_on(backend, &[("backlog.yaml", BLOCKED)], &["--workers", "1"]);
    let dir = agent.path("/b");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..FILES {
        fs::write(dir.join(format!("f{i:05}.txt")), "x").unwrap();
    }
    agent.wait_until("every file's run to be recorded", || {
        count(&agent, "SELECT COUNT(*) FROM runs") >= FILES as i64
    });
    agent.wait_until("the first run to be running", || {
        count(&agent, "SELECT COUNT(*) FROM runs WHERE status = 'running'") == 1
    });
    agent.kill9();
    fs::write(agent.config.join("backlog.yaml"), QUICK).unwrap();
    agent.spawn(&[]);
    agent.wait_until("every run to finish", || {
        count(
            &agent,
            "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running', 'retrying')",
        ) == 0
    });
    let runs = agent.runs();
    let mut by_path: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.workflow == "backlog") {
        by_path
            .entry(r.path.as_str())
            .or_default()
            .push((r.status.as_str(), r.attempts));
    }
    assert_eq!(by_path.len(), FILES, "every file has its run");
    let wrong: Vec<_> = by_path
        .iter()
        .filter(|(_, runs)| runs.len() != 1 || runs[0].0 != "succeeded")
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "files without exactly one succeeded run: {wrong:?}"
    );
    let twice: Vec<_> = by_path.iter().filter(|(_, r)| r[0].1 != 1).collect();
    assert!(
        twice.len() == 1 && twice[0].1[0].1 == 2,
        "only the run in flight ran twice: {twice:?}"
    );
    assert_eq!(
        count(
            &agent,
            "SELECT COUNT(*) FROM attempts WHERE status = 'interrupted'"
        ),
        twice.len() as i64
    );
    assert_eq!(
        count(
            &agent,
            "SELECT COUNT(*) FROM attempts WHERE status = 'succeeded'"
        ),
        FILES as i64
    );
}
on_both!(
    kill_9_with_30000_unfinished_runs_loses_none,
    kill_9_with_30000_unfinished_runs
);

/// SIGTERM while a run's step outlasts `--shutdown-grace`: the step is
/// killed, its attempt recorded `interrupted`, the run left unfinished; at
/// the next start it runs again, to success.
fn a_run_cut_off_by_a_clean_stop_runs_again(backend: Backend) {
    let workflow = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: long}
spec:
  on: [{event: file.created, pattern: /t/*.txt}]
  steps:
    - name: work
      run: 'test -e go || { echo $$ > step.pid; exec sleep 60; }'
"#;
    let grace = ["--shutdown-grace", "1s"];
    let mut agent = Agent::start_on(backend, &[("long.yaml", workflow)], &grace);
    agent.write("/t/x.txt", "x");
    let pid = agent.wait_line("/step.pid");
    assert!(agent.stop().success());
    // SIGKILL to its group is delivered, not waited for.
    agent.wait_until("the step to be killed", || process_gone(&pid));
    let attempts = |agent: &Agent| -> Vec<(i64, String, Option<String>)> {
        agent.query(async |pool| {
            sqlx::query_as("SELECT attempt, status, error FROM attempts ORDER BY attempt")
                .fetch_all(&pool)
                .await
                .unwrap()
        })
    };
    let cut = attempts(&agent);
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0].1, "interrupted", "{cut:?}");
    assert!(
        cut[0]
            .2
            .as_deref()
            .is_some_and(|e| e.contains("--shutdown-grace")),
        "{cut:?}"
    );
    let runs = agent.runs();
    assert_eq!(runs[0].status, "running", "left to run again: {runs:?}");
    fs::write(agent.path("/go"), "").unwrap();
    agent.spawn(&grace);
    let done = agent.wait_runs("long", 1);
    assert_eq!(
        (done[0].status.as_str(), done[0].attempts),
        ("succeeded", 2)
    );
    let after = attempts(&agent);
    let statuses: Vec<&str> = after.iter().map(|a| a.1.as_str()).collect();
    assert_eq!(statuses, ["interrupted", "succeeded"]);
}
on_both!(
    a_run_cut_off_by_a_clean_stop_runs_again_at_the_next_start,
    a_run_cut_off_by_a_clean_stop_runs_again
);

/// A deadlock (40P01) once in the intake's commit and once in the
/// writer's (triggers in the test database): both are retried, nothing is
/// lost and nothing recorded twice.
#[test]
fn a_deadlock_once_loses_nothing_and_duplicates_nothing() {
    let Some((backend, _)) = postgres_and_url() else {
        return;
    };
    let workflow = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: copy}
spec:
  on: [{event: file.created, pattern: /d/*.txt}]
  steps:
    - {name: copy, action: file.copy, with: {from: "{{event.path}}", to: "/copied/{{event.name}}"}}
"#;
    let agent = Agent::start_on(backend, &[("copy.yaml", workflow)], &[]);
    agent.query(async |pool| {
        for table in ["events", "steps"] {
            for sql in [
                format!("CREATE SEQUENCE fail_{table}"),
                format!(
                    "CREATE FUNCTION fail_{table}() RETURNS trigger AS $$ BEGIN \
                     IF nextval('fail_{table}') = 1 THEN \
                     RAISE EXCEPTION 'injected deadlock on {table}' USING ERRCODE = '40P01'; \
                     END IF; RETURN NULL; END $$ LANGUAGE plpgsql"
                ),
                format!(
                    "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                     FOR EACH STATEMENT EXECUTE FUNCTION fail_{table}()"
                ),
            ] {
                sqlx::query(&sql).execute(&pool).await.unwrap();
            }
        }
    });
    const FILES: usize = 20;
    for i in 0..FILES {
        agent.write(&format!("/d/f{i}.txt"), i.to_string());
    }
    let runs = agent.wait_runs("copy", FILES);
    assert!(runs.iter().all(|r| r.status == "succeeded"), "{runs:?}");
    agent.barrier();
    let runs = agent.runs();
    assert_eq!(runs.iter().filter(|r| r.workflow == "copy").count(), FILES);
    for i in 0..FILES {
        assert_eq!(agent.wait_file(&format!("/copied/f{i}.txt")), i.to_string());
    }
    let events = agent.events();
    let created: Vec<_> = events
        .iter()
        .filter(|(kind, path, _)| kind == "file.created" && path.starts_with("/d/"))
        .collect();
    assert_eq!(created.len(), FILES, "one event per file: {created:?}");
    assert_eq!(count(&agent, "SELECT COUNT(*) FROM steps"), FILES as i64);
    let log = agent.log_text();
    assert_eq!(log.matches("injected deadlock").count(), 2, "{log}");
}

/// A node whose clock is an hour ahead (libfaketime) cannot take a live
/// node's run: lease times are the database's. Once the live node is
/// killed, the same node takes the run when its lease runs out.
#[test]
fn a_node_whose_clock_is_an_hour_ahead_cannot_take_a_live_nodes_runs() {
    let Some((backend, url)) = postgres_and_url() else {
        return;
    };
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    if !std::path::Path::new(lib).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libfaketime is required in CI (the faketime package)"
        );
        eprintln!("SKIPPED: no {lib}");
        return;
    }
    let workflow = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: held}
spec:
  on: [{event: file.created, pattern: /h/*.txt}]
  steps:
    - name: work
      run: '[ "$NEXUS_ATTEMPT" -ge 2 ] || { echo $$ > a.pid; exec sleep 60; }'
"#;
    let lease = ["--lease", "2s", "--poll-interval", "200ms"];
    let mut a = Agent::start_on(
        backend,
        &[("held.yaml", workflow)],
        &[&lease[..], &["--node-id", "a"]].concat(),
    );
    a.write("/h/x.txt", "x");
    a.wait_file("/a.pid");
    let (mut b, b_log) = second_node_env(
        &a,
        &url,
        &[&lease[..], &["--node-id", "b"]].concat(),
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME", "+1h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("NEXUS_LOG", "info,nexusd=debug"),
        ],
    );
    let skewed = fs::read_to_string(&b_log).unwrap();
    assert!(
        skewed.lines().next().is_some_and(|l| {
            let hour = |s: &str| s.get(11..13).and_then(|h| h.parse::<u32>().ok());
            hour(l) != hour(&a.log_text())
        }),
        "node b's clock is not ahead: {skewed}"
    );
    let looks = || {
        fs::read_to_string(&b_log)
            .unwrap_or_default()
            .matches("looked for claimable runs")
            .count()
    };
    // Past a lease and more of b's looks: none took the run.
    a.wait_until("node b to look for claimable runs ten times", || {
        looks() >= 10
    });
    let owner = |a: &Agent| -> (String, i64) {
        a.query(async |pool| {
            sqlx::query_as("SELECT owner, attempts FROM runs")
                .fetch_one(&pool)
                .await
                .unwrap()
        })
    };
    assert_eq!(
        owner(&a),
        ("a".to_owned(), 1),
        "{}",
        fs::read_to_string(&b_log).unwrap()
    );
    a.kill9();
    a.wait_until("node b to take the run once a's lease ran out", || {
        a.runs()
            .iter()
            .any(|r| r.status == "succeeded" && r.attempts == 2)
    });
    assert_eq!(owner(&a).0, "b");
    let _ = b.kill();
    let _ = b.wait();
}

/// An HTTP receiver that answers every request with a body of `len`
/// bytes (`None`: an endless chunked one), until the client hangs up.
fn serve_big_answers() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let chunk = vec![b'x'; 64 * 1024];
                if first.contains("/endless") {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let head = format!("{:x}\r\n", chunk.len());
                    while stream.write_all(head.as_bytes()).is_ok()
                        && stream.write_all(&chunk).is_ok()
                        && stream.write_all(b"\r\n").is_ok()
                    {}
                } else {
                    let len: usize = 300 * 1024 * 1024;
                    let _ = stream.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
                    );
                    let mut sent = 0;
                    while sent < len && stream.write_all(&chunk).is_ok() {
                        sent += chunk.len();
                    }
                }
            });
        }
    });
    (port, handle)
}

fn rss_kb(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A receiver answering 300 MB, and one answering an endless chunked
/// body: each step succeeds with the answer cut at the output cap (and
/// says so), and the agent's memory stays within a few MB of its idle
/// figure: the rest is never read.
#[test]
fn a_huge_or_endless_answer_is_cut_at_the_output_cap() {
    let (port, _server) = serve_big_answers();
    let workflow = format!(
        r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {{name: hook}}
spec:
  on: [{{event: file.created, pattern: /w/*.txt}}]
  steps:
    - name: call
      webhook: {{url: "http://127.0.0.1:{port}/{{{{event.stem}}}}", method: GET, timeout: 60s}}
"#
    );
    let agent = Agent::start(&[("hook.yaml", &workflow)], &["--output-cap", "65536"]);
    agent.barrier();
    let idle = rss_kb(agent.pid());
    agent.write("/w/big.txt", "b");
    agent.write("/w/endless.txt", "e");
    let mut peak = idle;
    agent.wait_until("both webhook runs to finish", || {
        peak = peak.max(rss_kb(agent.pid()));
        agent
            .runs()
            .iter()
            .filter(|r| r.workflow == "hook" && r.status != "queued" && r.status != "running")
            .count()
            == 2
    });
    let runs: Vec<_> = agent
        .runs()
        .into_iter()
        .filter(|r| r.workflow == "hook")
        .collect();
    for run in &runs {
        assert_eq!(run.status, "succeeded", "{runs:?}");
        let steps = agent.steps(&run.id);
        assert!(
            steps[0].stdout.contains("cut after 65536 bytes"),
            "{}: {:?}",
            run.path,
            &steps[0].stdout[steps[0].stdout.len().saturating_sub(200)..]
        );
    }
    assert!(
        peak < idle + 16 * 1024,
        "resident memory grew from {idle} kB idle to {peak} kB"
    );
}

/// How long the outage tests keep the database away: two minutes, as the
/// issue that asked for them measured; shorter (`NEXUS_TEST_OUTAGE_SECS`)
/// only outside CI, while working on them.
fn outage() -> std::time::Duration {
    let secs = match std::env::var("NEXUS_TEST_OUTAGE_SECS") {
        Ok(s) if std::env::var("CI").as_deref() != Ok("true") => s.parse().unwrap(),
        _ => 120,
    };
    std::time::Duration::from_secs(secs)
}

/// The burst's workflow: a shell step (its attempt is committed before it
/// starts) and a copy the test checks.
const BURST: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: burst}
spec:
  on: [{event: file.created, pattern: /o/*.txt}]
  steps:
    - {name: check, run: 'true'}
    - {name: copy, action: file.copy, with: {from: "{{event.path}}", to: "/copied/{{event.name}}"}}
"#;

/// A 5,000-file burst with the database away for [`outage`] in its middle:
/// half the files are written before `away` takes the database, the other
/// half while it is away, then `back` returns it. Every file gets exactly
/// one succeeded run and its copy; the agent's resident memory while the
/// database is away stays within 8 MB of what it was when it went (the
/// watch's buffer and the writer's queue are bounded; what they cannot
/// hold is found by comparing the tree with the stored index once the
/// database is back).
fn a_burst_across_an_outage(agent: &Agent, away: impl FnOnce(), back: impl FnOnce()) {
    const FILES: usize = 5000;
    let dir = agent.path("/o");
    fs::create_dir_all(&dir).unwrap();
    let write = |range: std::ops::Range<usize>| {
        for i in range {
            fs::write(dir.join(format!("f{i:04}.txt")), i.to_string()).unwrap();
        }
    };
    write(0..FILES / 2);
    agent.wait_until("some of the burst's runs to succeed", || {
        count(
            agent,
            "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'",
        ) >= 200
    });
    away();
    let before = rss_kb(agent.pid());
    write(FILES / 2..FILES);
    let until = std::time::Instant::now() + outage();
    let mut peak = before;
    while std::time::Instant::now() < until {
        peak = peak.max(rss_kb(agent.pid()));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    back();
    agent.wait_until("every file's run to succeed", || {
        count(
            agent,
            "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'",
        ) >= FILES as i64
    });
    agent.barrier();
    let runs = agent.runs();
    let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.workflow == "burst") {
        by_path.entry(&r.path).or_default().push(&r.status);
    }
    assert_eq!(by_path.len(), FILES, "every file has its run");
    let wrong: Vec<_> = by_path
        .iter()
        .filter(|(_, s)| s[..] != ["succeeded"])
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "files without exactly one succeeded run: {wrong:?}"
    );
    for i in 0..FILES {
        assert_eq!(
            fs::read_to_string(agent.path(&format!("/copied/f{i:04}.txt"))).unwrap(),
            i.to_string()
        );
    }
    let created = agent
        .events()
        .into_iter()
        .filter(|(kind, path, _)| kind == "file.created" && path.starts_with("/o/"))
        .count();
    assert_eq!(created, FILES, "one created event per file, none twice");
    eprintln!("resident memory: {before} kB when the database went, {peak} kB at most while away");
    assert!(
        peak < before + 8 * 1024,
        "resident memory grew from {before} kB to {peak} kB while the database was away"
    );
}

/// PostgreSQL (the test's own server) stopped for two minutes in the
/// middle of a 5,000-file burst: nothing lost, nothing run twice, memory
/// bounded meanwhile.
#[test]
fn a_two_minute_postgresql_outage_during_a_burst_loses_nothing() {
    let Some(pg) = crate::durability::OwnPostgres::start() else {
        return;
    };
    let agent = Agent::start_on(Backend::Postgres(pg.url()), &[("burst.yaml", BURST)], &[]);
    a_burst_across_an_outage(&agent, || pg.pg_ctl("stop"), || pg.pg_ctl("start"));
    assert!(
        agent.log_text().contains("the database is unreachable"),
        "the outage was noticed"
    );
}

/// The agent's SQLite database held locked (`BEGIN EXCLUSIVE`) by another
/// process for two minutes in the middle of a 5,000-file burst: the same.
#[test]
fn a_sqlite_database_locked_for_two_minutes_during_a_burst_loses_nothing() {
    let agent = Agent::start(&[("burst.yaml", BURST)], &[]);
    let db = agent.data.join(".nexus/nexus.db");
    let holder = std::cell::RefCell::new(None);
    let lock = || {
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n\
                      c.execute('BEGIN EXCLUSIVE')\n\
                      print('locked', flush=True)\n\
                      sys.stdin.read()\n\
                      c.execute('COMMIT')\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        *holder.borrow_mut() = Some(child);
    };
    let unlock = || {
        let mut child = holder.borrow_mut().take().unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    };
    a_burst_across_an_outage(&agent, lock, unlock);
    assert!(
        agent.log_text().contains("database is locked"),
        "the lock was noticed"
    );
}
