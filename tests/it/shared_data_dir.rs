//! Several agents on one data dir (one disk shared by several processes):
//! one of them, elected, watches it and records its events; all of them
//! run its runs. When the watcher dies another takes over and compares the
//! tree with the index, so what changed meanwhile becomes events once.
//! Also the polling watcher (`--watch poll`), one node id per running
//! agent, and an older agent on a database a newer one migrated.

use std::collections::BTreeMap;
use std::fs;

use sqlx::Row;

use crate::agent::{Agent, Backend};
use crate::fleet::succeeded;

/// A short shell step that needs the file on this disk, then a copy; on
/// each creation and update of a file under /in, each event its own run
/// (queued, not coalesced).
const MARK: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: mark}
spec:
  on: [{event: [file.created, file.updated], pattern: /in/*.txt, on_burst: queue}]
  steps:
    - {name: mark, run: 'test -f {{event.abs_path}} && sleep 0.02'}
    - {name: copy, action: file.copy, with: {from: "{{event.path}}", to: "/copied/{{event.name}}"}}
"#;

const WORKERS: [&str; 2] = ["--workers", "2"];

fn write(agent: &Agent, name: &str, content: &str) {
    let dir = agent.path("/in");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), content).unwrap();
}

/// `(type, path)` of every event on a file named `prefix*`.
fn events_of(agent: &Agent, prefix: &str) -> Vec<(String, String)> {
    agent
        .events()
        .into_iter()
        .filter(|(_, p, _)| p.starts_with(&format!("/in/{prefix}")))
        .map(|(t, p, _)| (t, p))
        .collect()
}

/// The node the data dir's watchers table names.
fn watcher(agent: &Agent) -> String {
    agent.query(async |pool| {
        sqlx::query("SELECT node FROM watchers")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0)
    })
}

/// The node id of an agent, from its log.
fn node_of(agent: &Agent) -> String {
    let log = agent.log_text();
    let line = log
        .lines()
        .rfind(|l| l.contains(" node node="))
        .expect("node line");
    line.rsplit("node=").next().unwrap().trim().to_owned()
}

/// Each file named `prefix*` (`n` of them) has exactly one run of each
/// event it had, succeeded, run at most twice (a run in flight at a kill
/// runs again), and its copy.
fn each_file_ran_once(agent: &Agent, prefix: &str, n: usize, kinds: &[&str]) {
    let mut per_file: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for r in agent
        .runs()
        .iter()
        .filter(|r| r.path.starts_with(&format!("/in/{prefix}")))
    {
        assert_eq!(r.status, "succeeded", "{r:?}");
        per_file
            .entry((r.path.clone(), r.event_type.clone()))
            .or_default()
            .push(r.attempts);
    }
    assert_eq!(
        per_file.len(),
        n * kinds.len(),
        "one run per file and event"
    );
    for ((path, kind), attempts) in &per_file {
        assert_eq!(attempts.len(), 1, "{path} {kind}: one run");
        assert!(attempts[0] <= 2, "{path} {kind} ran {} times", attempts[0]);
        assert!(kinds.contains(&kind.as_str()), "{path}: {kind}");
    }
    let events = events_of(agent, prefix);
    let mut counted: BTreeMap<&(String, String), usize> = BTreeMap::new();
    for e in &events {
        *counted.entry(e).or_default() += 1;
    }
    assert!(
        counted.values().all(|n| *n == 1),
        "each change is one event: {counted:?}"
    );
    assert_eq!(events.len(), n * kinds.len(), "{events:?}");
}

/// Three agents on one data dir and one PostgreSQL. The first watches;
/// each file's run runs once, on any of them. The watcher is killed with
/// `kill -9` while files keep arriving: another takes over watching and
/// every file written in the gap gets its run, and one event. Then a
/// rolling restart of all three while files are created and updated:
/// nothing is lost, and each file's update runs after its creation.
#[test]
fn three_agents_share_a_data_dir_through_a_kill_and_a_rolling_restart() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let mut a = Agent::start_on(backend, &[("mark.yaml", MARK)], &WORKERS);
    let mut b = Agent::sharing(&a, &[]);
    b.spawn(&WORKERS);
    let mut c = Agent::sharing(&a, &[]);
    c.spawn(&WORKERS);
    assert_eq!(watcher(&a), node_of(&a), "the first agent watches");
    for standby in [&b, &c] {
        assert!(
            standby
                .log_text()
                .contains("standby: another agent watches this data dir")
        );
    }
    let ids = [node_of(&a), node_of(&b), node_of(&c)];
    assert_eq!(ids[1], format!("{}#2", ids[0]), "one node id per agent");
    assert_eq!(ids[2], format!("{}#3", ids[0]));

    for i in 0..150 {
        write(&a, &format!("f{i:04}.txt"), &format!("f{i}"));
    }
    a.wait_until("every f run to succeed", || succeeded(&a, "f") == 150);
    each_file_ran_once(&a, "f", 150, &["file.created"]);
    let by_node: Vec<(String, i64)> = a.query(async |pool| {
        sqlx::query_as("SELECT node, COUNT(*) FROM attempts GROUP BY node ORDER BY node")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    eprintln!("attempts by node: {by_node:?}");

    // kill -9 the watcher while files keep arriving: the writer goes on
    // past its 50th file only once the watcher is dead.
    let (killed, go_on) = std::sync::mpsc::channel::<()>();
    let writer = {
        let dir = a.path("/in");
        std::thread::spawn(move || {
            for i in 0..200 {
                if i == 50 {
                    go_on.recv().unwrap();
                }
                fs::write(dir.join(format!("g{i:04}.txt")), format!("g{i}")).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    b.wait_until("some g events recorded", || events_of(&b, "g").len() >= 30);
    a.kill9();
    killed.send(()).unwrap();
    writer.join().unwrap();
    b.wait_until("a new watcher", || watcher(&b) != ids[0]);
    b.wait_until("every g run to succeed", || succeeded(&b, "g") == 200);
    each_file_ran_once(&b, "g", 200, &["file.created"]);
    let takeovers: Vec<_> = b
        .gaps()
        .into_iter()
        .filter(|(reason, _)| reason.starts_with("takeover: "))
        .collect();
    assert_eq!(takeovers.len(), 1, "{takeovers:?}");
    assert!(
        takeovers[0].0.contains(&ids[0]),
        "the gap names the watcher that died: {}",
        takeovers[0].0
    );

    // A started again is the same node (its process is gone), standing by.
    a.spawn(&WORKERS);
    assert_eq!(node_of(&a), ids[0]);
    let key = a.user_key("ops", "reader");
    let listed = |agent: &Agent| -> Vec<serde_json::Value> {
        let out = agent.cli(&key, &["nodes", "list", "-o", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["nodes"].as_array().unwrap().clone()
    };
    // The new watcher says so at its next heartbeat.
    a.wait_until("one watcher listed", || {
        listed(&a).iter().filter(|n| n["watcher"] == true).count() == 1
    });
    for agent in [&a, &b, &c] {
        let nodes = listed(agent);
        let mut names: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(nodes.iter().all(|n| n["state"] == "up"), "{nodes:?}");
        let watchers: Vec<_> = nodes.iter().filter(|n| n["watcher"] == true).collect();
        assert_eq!(watchers.len(), 1, "one watcher: {nodes:?}");
        assert_eq!(watchers[0]["watch"], "inotify");
        assert_ne!(
            watchers[0]["id"],
            ids[0].as_str(),
            "A stands by since its restart"
        );
        assert!(nodes.iter().all(|n| n["origin"] == nodes[0]["origin"]));
        assert!(
            nodes
                .iter()
                .all(|n| n["data_dir"] == a.data.display().to_string())
        );
    }
    let table = b.cli(&key, &["nodes", "list"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("NODE "), "{}", table.stdout);
    assert_eq!(
        table.stdout.matches(" standby").count(),
        2,
        "{}",
        table.stdout
    );

    // A rolling restart of all three while files are created, then updated.
    for i in 0..60 {
        write(&a, &format!("h{i:04}.txt"), &format!("h{i}"));
    }
    b.wait_until("the h creations recorded", || {
        events_of(&b, "h").len() == 60
    });
    for i in 0..60 {
        write(&a, &format!("h{i:04}.txt"), &format!("h{i} again"));
    }
    for agent in [&mut a, &mut b, &mut c] {
        assert!(agent.stop().success());
        agent.spawn(&WORKERS);
    }
    b.wait_until("every h run to succeed", || succeeded(&b, "h") == 120);
    each_file_ran_once(&b, "h", 60, &["file.created", "file.updated"]);
    // Per file: its update's first attempt started after its creation's
    // run finished.
    let order: Vec<(String, String, i64, i64)> = b.query(async |pool| {
        sqlx::query_as(
            "SELECT r.path, r.event_type, r.finished_ms, MIN(t.started_ms) \
             FROM runs r JOIN attempts t ON t.run_id = r.id WHERE r.path LIKE '/in/h%' \
             GROUP BY r.id, r.path, r.event_type, r.finished_ms",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    });
    let mut created_done: BTreeMap<String, i64> = BTreeMap::new();
    for (path, kind, finished, _) in &order {
        if kind == "file.created" {
            created_done.insert(path.clone(), *finished);
        }
    }
    for (path, kind, _, started) in &order {
        if kind == "file.updated" {
            assert!(
                *started >= created_done[path],
                "{path}: the update started before the creation's run finished"
            );
        }
    }
    for i in 0..60 {
        assert_eq!(
            fs::read_to_string(b.path(&format!("/copied/h{i:04}.txt"))).unwrap(),
            format!("h{i} again")
        );
    }
}

/// Two agents on one data dir and its SQLite file: the second stands by
/// (the watcher's lock is a file lock in the state dir); killed, the first
/// leaves the lock, the second takes over, and every file written since
/// has one event and one run.
#[test]
fn a_second_agent_on_a_sqlite_data_dir_takes_over_watching() {
    let mut a = Agent::start(&[("mark.yaml", MARK)], &WORKERS);
    let mut b = Agent::sharing(&a, &[]);
    b.spawn(&WORKERS);
    assert!(
        b.log_text()
            .contains("standby: another agent watches this data dir")
    );
    for i in 0..20 {
        write(&a, &format!("f{i:04}.txt"), "f");
    }
    a.wait_until("the f runs", || succeeded(&a, "f") == 20);
    a.kill9();
    for i in 0..20 {
        write(&b, &format!("g{i:04}.txt"), "g");
    }
    b.wait_until("the g runs", || succeeded(&b, "g") == 20);
    each_file_ran_once(&b, "f", 20, &["file.created"]);
    each_file_ran_once(&b, "g", 20, &["file.created"]);
    assert_eq!(watcher(&b), node_of(&b));
    assert!(
        b.log_text()
            .contains("elected the data dir's watcher: taking over")
    );
    assert!(b.is_running());
}

/// `--watch poll`: no inotify at all; the tree is compared with the index
/// every `--watch-interval`, and creations, updates and deletions become
/// events as they would with inotify. The node says how it watches.
#[test]
fn a_polling_watcher_sees_changes_without_inotify() {
    let deleted = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: gone}
spec:
  on: [{event: file.deleted, pattern: /in/*.txt}]
  steps: [{name: say, action: log, with: {message: "gone {{event.path}}"}}]
"#;
    let agent = Agent::start(
        &[("mark.yaml", MARK), ("gone.yaml", deleted)],
        &["--watch", "poll", "--watch-interval", "100ms"],
    );
    write(&agent, "p.txt", "one");
    // The inodes inotify watches (the config dir's, only): none of the
    // data dir's directories.
    let pid = agent.pid();
    let mut watched = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        if fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify")) {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap();
            let watches = info.lines().filter(|l| l.starts_with("inotify "));
            for ino in
                watches.flat_map(|l| l.split_whitespace().filter_map(|w| w.strip_prefix("ino:")))
            {
                watched.push(u64::from_str_radix(ino, 16).unwrap());
            }
        }
    }
    use std::os::unix::fs::MetadataExt;
    for dir in [agent.data.clone(), agent.path("/in")] {
        let ino = fs::metadata(&dir).unwrap().ino();
        assert!(
            !watched.contains(&ino),
            "{} is watched by inotify",
            dir.display()
        );
    }
    assert!(
        watched.len() <= 1,
        "only the config dir is watched: {watched:?}"
    );
    agent.wait_until("the created run", || succeeded(&agent, "p") == 1);
    write(&agent, "p.txt", "two, longer");
    agent.wait_until("the updated run", || succeeded(&agent, "p") == 2);
    fs::remove_file(agent.path("/in/p.txt")).unwrap();
    agent.wait_until("the deleted run", || {
        agent
            .runs()
            .iter()
            .any(|r| r.workflow == "gone" && r.status == "succeeded")
    });
    let kinds: Vec<String> = events_of(&agent, "p").into_iter().map(|(t, _)| t).collect();
    assert_eq!(kinds, ["file.created", "file.updated", "file.deleted"]);
    assert_eq!(
        fs::read_to_string(agent.path("/copied/p.txt")).unwrap(),
        "two, longer"
    );
    let key = agent.user_key("ops", "reader");
    agent.wait_until("the heartbeat to say how it watches", || {
        let out = agent.cli(&key, &["nodes", "list", "-o", "json"]);
        out.stdout.contains("\"watch\": \"poll every 100ms\"")
    });
}

/// A node id is one running agent's: a second agent asking for one in
/// use stops with a message saying so, and changes nothing.
#[test]
fn a_node_id_in_use_is_refused() {
    let a = Agent::start(&[], &["--node-id", "ingest-1"]);
    let b = Agent::sharing(&a, &[]);
    let data = b.data.display().to_string();
    let out = crate::support::nexusd(&[
        "serve",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "ingest-1",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the node id `ingest-1` is in use by a running agent (pid {} on ",
            a.pid()
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("give each agent its own --node-id"));
    assert_eq!(node_of(&a), "ingest-1");
}

/// A rolling upgrade's older agent, on a database a newer nexusd migrated
/// further, does not start: it says so and leaves the database alone.
#[test]
fn an_older_agent_refuses_a_database_a_newer_one_migrated() {
    let mut agent = Agent::start(&[], &[]);
    assert!(agent.stop().success());
    agent.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer nexusd', 1, X'00', 0)",
    );
    let data = agent.data.display().to_string();
    let out = crate::support::nexusd(&["serve", "--data-dir", &data, "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "the database was migrated by a newer nexusd (its schema is version 9999; this nexusd knows up to "
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("): upgrade this agent"),
        "{}",
        out.stderr
    );
    let versions: Vec<i64> = agent.query(async |pool| {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(versions.last(), Some(&9999), "left alone");
}

/// A watcher that hangs (`SIGSTOP`) keeps its database session, and with
/// it the lock: once its heartbeat is older than its lease, the other
/// agent ends that session and takes over, and the files written meanwhile
/// get their events and runs. Woken (`SIGCONT`), the old watcher finds its
/// lock gone, records nothing more, and stands by.
#[test]
fn a_hung_watcher_is_taken_over_after_its_lease() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let args = [
        "--workers",
        "2",
        "--lease",
        "2s",
        "--poll-interval",
        "500ms",
    ];
    let a = Agent::start_on(backend, &[("mark.yaml", MARK)], &args);
    let mut b = Agent::sharing(&a, &[]);
    b.spawn(&args);
    write(&a, "f0000.txt", "f");
    a.wait_until("the first run", || succeeded(&a, "f") == 1);
    unsafe {
        libc::kill(a.pid(), libc::SIGSTOP);
    }
    for i in 1..20 {
        write(&a, &format!("f{i:04}.txt"), "f");
    }
    b.wait_until("B to take over watching", || {
        b.log_text()
            .contains("elected the data dir's watcher: taking over")
    });
    assert!(
        b.log_text()
            .contains("the data dir's watcher has not heartbeated for longer than its lease")
    );
    b.wait_until("every run", || succeeded(&b, "f") == 20);
    unsafe {
        libc::kill(a.pid(), libc::SIGCONT);
    }
    a.wait_until("A to find its lock gone", || {
        a.log_text()
            .contains("this agent is no longer the data dir's watcher")
    });
    for i in 20..30 {
        write(&b, &format!("f{i:04}.txt"), "f");
    }
    b.wait_until("the runs after A woke", || succeeded(&b, "f") == 30);
    each_file_ran_once(&b, "f", 30, &["file.created"]);
    assert_eq!(watcher(&b), node_of(&b));
}
