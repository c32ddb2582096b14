//! A fleet on one PostgreSQL, each agent with its own data dir: a run is
//! executed only where its file is, each data dir has its own index, and
//! no agent invents another's events.

use std::collections::BTreeMap;
use std::fs;

use crate::agent::{Agent, Backend};

/// A short shell step that needs the file on this node's disk, then a copy.
const MARK: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: mark}
spec:
  on: [{event: file.created, pattern: /in/*.txt}]
  steps:
    - {name: mark, run: 'test -f {{event.abs_path}} && sleep 0.02'}
    - {name: copy, action: file.copy, with: {from: "{{event.path}}", to: "/copied/{{event.name}}"}}
"#;

fn write_files(agent: &Agent, prefix: &str, range: std::ops::Range<usize>) {
    let dir = agent.path("/in");
    fs::create_dir_all(&dir).unwrap();
    for i in range {
        fs::write(
            dir.join(format!("{prefix}{i:04}.txt")),
            format!("{prefix}{i}"),
        )
        .unwrap();
    }
}

/// Runs on files named `/in/PREFIX*` that succeeded.
pub(crate) fn succeeded(agent: &Agent, prefix: &str) -> usize {
    agent
        .runs()
        .iter()
        .filter(|r| r.path.starts_with(&format!("/in/{prefix}")) && r.status == "succeeded")
        .count()
}

/// Two agents on one PostgreSQL, each with its own data dir (A's config dir
/// holds the workflow, B's is empty: definitions are fleet-wide). Files on
/// both; A stopped cleanly with most of its runs queued, B restarted, A
/// started again, then each killed with `kill -9` mid-burst and started
/// again. Every run runs on the node whose data dir holds its file, none
/// fails, each file has one run and one `file.created` event, and no
/// `file.deleted` is recorded: no file was deleted.
#[test]
fn each_run_runs_where_its_file_is_across_stops_restarts_and_kills() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let workers = ["--workers", "2"];
    let mut a = Agent::start_on(backend.clone(), &[("mark.yaml", MARK)], &workers);
    let mut b = Agent::start_on(backend, &[], &workers);
    write_files(&a, "a", 0..200);
    write_files(&b, "b", 0..40);
    a.wait_until("some of A's runs to succeed", || succeeded(&a, "a") >= 20);
    assert!(a.stop().success());
    assert!(
        succeeded(&a, "a") < 150,
        "most of A's runs were still queued at its stop"
    );
    assert!(b.stop().success());
    b.spawn(&workers);
    a.spawn(&workers);
    write_files(&a, "a", 200..300);
    write_files(&b, "b", 40..100);
    a.wait_until("more of A's runs to succeed", || succeeded(&a, "a") >= 220);
    a.kill9();
    b.kill9();
    a.spawn(&workers);
    b.spawn(&workers);
    a.wait_until("every run to succeed", || {
        succeeded(&a, "a") == 300 && succeeded(&b, "b") == 100
    });
    a.barrier();
    b.barrier();

    let origin = |agent: &Agent| {
        fs::read_to_string(agent.data.join(".nexus/origin"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (origin_a, origin_b) = (origin(&a), origin(&b));
    assert_ne!(origin_a, origin_b, "each data dir has its own identity");
    let node_a = a.data.display().to_string();
    let node_b = b.data.display().to_string();
    // Every attempt of every run, with the node that ran it.
    let attempts: Vec<(String, String, String, Option<String>)> = a.query(async |pool| {
        sqlx::query_as(
            "SELECT r.path, r.origin, r.status, a.node \
             FROM runs r JOIN attempts a ON a.run_id = r.id WHERE r.workflow = 'mark'",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    });
    let mut per_path: BTreeMap<&str, usize> = BTreeMap::new();
    for (path, origin, run_status, node) in &attempts {
        let (want_origin, want_node) = if path.starts_with("/in/a") {
            (&origin_a, &node_a)
        } else {
            (&origin_b, &node_b)
        };
        assert_eq!(origin, want_origin, "{path}'s run carries its data dir");
        assert!(
            node.as_deref()
                .is_some_and(|n| n.ends_with(want_node.as_str())),
            "{path} ran on {node:?}, not on the node of its data dir ({want_node})"
        );
        assert_eq!(run_status, "succeeded", "{path}");
        *per_path.entry(path).or_default() += 1;
    }
    let runs = a.runs();
    let mark: Vec<_> = runs.iter().filter(|r| r.workflow == "mark").collect();
    assert_eq!(mark.len(), 400, "one run per file");
    let mut paths: Vec<(&str, &str)> = mark
        .iter()
        .map(|r| (r.path.as_str(), r.status.as_str()))
        .collect();
    paths.sort();
    paths.dedup_by_key(|p| p.0);
    assert_eq!(paths.len(), 400, "no file ran twice as two runs");
    for i in 0..300 {
        assert_eq!(
            fs::read_to_string(a.path(&format!("/copied/a{i:04}.txt"))).unwrap(),
            format!("a{i}")
        );
    }
    for i in 0..100 {
        assert_eq!(
            fs::read_to_string(b.path(&format!("/copied/b{i:04}.txt"))).unwrap(),
            format!("b{i}")
        );
    }
    let events = a.events();
    let deleted: Vec<_> = events.iter().filter(|e| e.0 == "file.deleted").collect();
    assert!(deleted.is_empty(), "no file was deleted: {deleted:?}");
    let created = events
        .iter()
        .filter(|e| e.0 == "file.created" && e.1.starts_with("/in/"))
        .count();
    assert_eq!(created, 400, "one created event per file");
    let reran = per_path.values().filter(|n| **n > 1).count();
    eprintln!("runs run again after a stop or kill: {reran}");
}

/// An HTTP receiver that holds its first request unanswered (until the
/// caller hangs up) and answers every later one `200 ok`; counts requests.
fn serve_hooks() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let counted = std::sync::Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Held until the caller hangs up.
                    let _ = reader.read_to_end(&mut Vec::new());
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    (port, hits)
}

/// A workflow whose steps are all webhooks runs on any node: its run cut
/// off by A's clean stop is taken up by B, which serves another data dir;
/// `workflows get` says where each workflow runs.
#[test]
fn a_webhook_only_run_is_taken_up_by_any_node() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let (port, hits) = serve_hooks();
    let hook = format!(
        r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {{name: hook}}
spec:
  on: [{{event: file.created, pattern: /h/*.txt}}]
  steps:
    - name: call
      webhook: {{url: "http://127.0.0.1:{port}/{{{{event.name}}}}", method: GET, timeout: 60s}}
"#
    );
    let grace = ["--shutdown-grace", "1s"];
    let mut a = Agent::start_on(
        backend.clone(),
        &[("hook.yaml", &hook), ("mark.yaml", MARK)],
        &grace,
    );
    let b = Agent::start_on(backend, &[], &grace);
    a.write("/h/x.txt", "x");
    a.wait_until("the first request to arrive", || {
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 1
    });
    assert!(a.stop().success());
    let runs = b.wait_runs("hook", 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].attempts),
        ("succeeded", 2),
        "{runs:?}"
    );
    let attempts: Vec<(String, Option<String>)> = b.query(async |pool| {
        sqlx::query_as("SELECT status, node FROM attempts ORDER BY attempt")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    let ran_on = |n: &Option<String>, agent: &Agent| {
        n.as_deref()
            .is_some_and(|n| n.ends_with(&agent.data.display().to_string()))
    };
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts[0].0 == "interrupted" && ran_on(&attempts[0].1, &a),
        "{attempts:?}"
    );
    assert!(
        attempts[1].0 == "succeeded" && ran_on(&attempts[1].1, &b),
        "{attempts:?}"
    );
    let key = b.user_key("ops", "reader");
    let get = b.cli(&key, &["workflows", "get", "hook"]);
    assert!(
        get.stdout.starts_with("# runs on: any node of the fleet"),
        "{get:?}"
    );
    let get = b.cli(&key, &["workflows", "get", "mark"]);
    assert!(
        get.stdout
            .starts_with("# runs on: a node serving the data dir of the run's event"),
        "{get:?}"
    );
}

/// The rows recorded before data dirs had an identity (the empty origin the
/// migration gives them) are taken by the first agent to start: it
/// compares its tree with that index and finds nothing new, and its runs
/// and events are its data dir's.
fn rows_from_before_origins_are_the_first_agents(backend: Backend) {
    let copy = MARK.replace("/in/*.txt", "/old/*.txt");
    let mut agent = Agent::start_on(backend, &[("mark.yaml", &copy)], &[]);
    for i in 0..5 {
        agent.write(&format!("/old/f{i}.txt"), i.to_string());
    }
    agent.wait_runs("mark", 5);
    agent.stop();
    for sql in [
        "UPDATE file_index SET origin = ''",
        "UPDATE events SET origin = ''",
        "UPDATE runs SET origin = ''",
    ] {
        agent.execute(sql);
    }
    agent.spawn(&[]);
    assert!(
        agent
            .log_text()
            .contains("rows recorded before data dirs had an identity are this data dir's now"),
        "{}",
        agent.log_text()
    );
    agent.barrier();
    let events = agent.events();
    let old: Vec<_> = events.iter().filter(|e| e.1.starts_with("/old/")).collect();
    assert_eq!(old.len(), 5, "no event invented: {old:?}");
    let origin = fs::read_to_string(agent.data.join(".nexus/origin")).unwrap();
    let (unmarked, marked): (i64, i64) = agent.query(async |pool| {
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM file_index WHERE origin = '') + \
             (SELECT COUNT(*) FROM events WHERE origin = '') + (SELECT COUNT(*) FROM runs WHERE origin = ''), \
             (SELECT COUNT(*) FROM runs WHERE origin = $1)",
        )
        .bind(origin.trim().to_owned())
        .fetch_one(&pool)
        .await
        .unwrap()
    });
    assert_eq!((unmarked, marked), (0, 5));
}
on_both!(
    rows_from_before_origins_are_taken_by_the_first_agent,
    rows_from_before_origins_are_the_first_agents
);

/// A workflow that logs, on files under `dir`.
fn logging(name: &str, dir: &str) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  on: [{{event: file.created, pattern: \"{dir}/*\"}}]\n  steps: [{{name: say, action: log, with: {{message: \"{name} {{{{event.path}}}}\"}}}}]\n"
    )
}

/// The applied definitions as `(name, source)`.
fn definitions(agent: &Agent) -> Vec<(String, String)> {
    agent.query(async |pool| {
        sqlx::query_as("SELECT name, source FROM definitions ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap()
    })
}

/// Definitions are fleet-wide, and a config dir's source names its data
/// dir: two agents of different data dirs whose config dirs have one path
/// (as on two hosts) and different contents keep both sets, across
/// restarts of each, and each set's runs run.
#[test]
fn config_dirs_of_one_path_on_two_nodes_do_not_prune_each_other() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let (alpha, beta) = (logging("alpha", "/a"), logging("beta", "/b"));
    let mut a = Agent::start_on(backend.clone(), &[("alpha.yaml", alpha.as_str())], &[]);
    let mut b = Agent::new_on(backend, &[("beta.yaml", beta.as_str())]);
    b.config_at = Some(a.config.clone());
    b.spawn(&[]);
    let path = a.config.display().to_string();
    let both = |agent: &Agent| {
        let defs = definitions(agent);
        let names: Vec<&str> = defs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alpha", "beta"], "{defs:?}");
        assert!(
            defs.iter()
                .all(|(_, s)| s.starts_with("dir:") && s.ends_with(&path))
        );
        assert_ne!(defs[0].1, defs[1].1, "one source per data dir");
    };
    both(&a);
    assert!(a.stop().success());
    a.spawn(&[]);
    both(&a);
    assert!(b.stop().success());
    b.spawn(&[]);
    both(&b);
    a.write("/a/x.txt", "x");
    b.write("/b/y.txt", "y");
    let ran = a.wait_runs("alpha", 1);
    assert_eq!(ran[0].status, "succeeded");
    let ran = b.wait_runs("beta", 1);
    assert_eq!(ran[0].status, "succeeded");
}

/// A node that cannot run an applied workflow (the secret it declares has
/// no value among this node's) runs everything else and leaves that
/// workflow's runs to a node that can: released to it by the other's clean
/// stop, they wait, none cancelled; and as its data dir's watcher it still
/// records their runs, for the other node. All run on the node that has
/// the secret when it is back. Both agents on one data dir.
fn a_lacking_node_leaves_the_runs(backend: Backend) {
    let secrets = tempfile::tempdir().unwrap();
    fs::write(secrets.path().join("FLEET_ONLY_TOKEN_7"), "s3cret").unwrap();
    let secrets_dir = secrets.path().display().to_string();
    let quick = ["--workers", "1", "--poll-interval", "500ms"];
    let a_args = [&quick[..], &["--secrets-dir", secrets_dir.as_str()]].concat();
    let mut a = Agent::start_on(backend, &[], &a_args);
    let mut b = Agent::sharing(&a, &[]);
    b.spawn(&quick);
    let definition = a.data.parent().unwrap().join("needs-token.yaml");
    fs::write(
        &definition,
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: needs-token}\nspec:\n  on: [{event: file.created, pattern: /in/*.txt}]\n  secrets: [FLEET_ONLY_TOKEN_7]\n  steps: [{name: slow, run: 'sleep 0.05'}]\n",
    )
    .unwrap();
    let key = a.user_key("ops", "admin");
    let applied = a.cli(&key, &["apply", "-f", &definition.display().to_string()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    // A change of it applied through B, which could not run it, is refused.
    let changed = a.data.parent().unwrap().join("needs-token-2.yaml");
    fs::write(
        &changed,
        fs::read_to_string(&definition)
            .unwrap()
            .replace("sleep 0.05", "sleep 0.06"),
    )
    .unwrap();
    let refused = b.cli(&key, &["apply", "-f", &changed.display().to_string()]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        format!("{}{}", refused.stdout, refused.stderr)
            .contains("declares secret `FLEET_ONLY_TOKEN_7`, which has no value"),
        "{refused:?}"
    );
    b.wait_until("B to load it, lacking its secret", || {
        b.log_text()
            .contains("this node cannot run a workflow that is applied")
    });
    write_files(&a, "s", 0..30);
    a.wait_until("every file's event, and some runs", || {
        let events = a.events();
        events.iter().filter(|e| e.1.starts_with("/in/s")).count() == 30 && succeeded(&a, "s") >= 3
    });
    assert!(a.stop().success());
    let watcher = || {
        b.query(async |pool| {
            sqlx::query_scalar::<_, String>("SELECT node FROM watchers")
                .fetch_one(&pool)
                .await
                .unwrap()
        })
    };
    b.wait_until("B to watch the data dir", || watcher().ends_with("#2"));
    // B, the watcher now, records the runs of files written meanwhile.
    write_files(&a, "t", 0..10);
    b.wait_until("B to record a run of every t file", || {
        b.runs()
            .iter()
            .filter(|r| r.path.starts_with("/in/t") && r.status == "queued")
            .count()
            == 10
    });
    let runs = b.runs();
    assert!(
        runs.iter()
            .all(|r| r.status == "succeeded" || r.status == "queued"),
        "none cancelled or failed: {runs:?}"
    );
    a.spawn(&a_args);
    a.wait_until("every run to succeed", || {
        succeeded(&a, "s") == 30 && succeeded(&a, "t") == 10
    });
    // A is standby now, B still the watcher: what B records while A runs,
    // A is told of (PostgreSQL; SQLite: A's next poll) and runs.
    write_files(&a, "u", 0..10);
    a.wait_until("every u run to succeed", || succeeded(&a, "u") == 10);
    assert!(watcher().ends_with("#2"), "B watched throughout");
    let nodes: Vec<Option<String>> = a.query(async |pool| {
        sqlx::query_scalar("SELECT DISTINCT node FROM attempts")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(nodes.len(), 1, "every attempt on A: {nodes:?}");
    assert!(nodes[0].as_deref().is_some_and(|n| !n.ends_with("#2")));
}
/// One agent restarted without a secret its applied workflow declares:
/// it starts, says which workflow it cannot run, runs the others, and
/// records that one's runs queued; restarted with the secret, it runs them.
#[test]
fn runs_of_a_workflow_whose_secret_is_gone_wait_for_it() {
    let secrets = tempfile::tempdir().unwrap();
    fs::write(secrets.path().join("SOLO_TOKEN_3"), "s3cret").unwrap();
    let with_secret = ["--secrets-dir", secrets.path().to_str().unwrap()];
    let keyed = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: keyed}\nspec:\n  on: [{event: file.created, pattern: /in/*.txt}]\n  secrets: [SOLO_TOKEN_3]\n  steps: [{name: use, run: 'test -n \"$T\"', env: {T: '{{secrets.SOLO_TOKEN_3}}'}}]\n";
    let plain = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: plain}\nspec:\n  on: [{event: file.created, pattern: /in/*.txt}]\n  steps: [{name: note, run: 'true'}]\n";
    let mut a = Agent::start_on(Backend::Sqlite, &[], &with_secret);
    let key = a.user_key("ops", "admin");
    for (name, text) in [("keyed.yaml", keyed), ("plain.yaml", plain)] {
        let file = a.data.parent().unwrap().join(name);
        fs::write(&file, text).unwrap();
        let applied = a.cli(&key, &["apply", "-f", &file.display().to_string()]);
        assert_eq!(applied.code, 0, "{applied:?}");
    }
    assert!(a.stop().success());
    a.spawn(&[]);
    a.wait_until("the agent to say what it cannot run", || {
        a.log_text()
            .contains("this node cannot run a workflow that is applied")
    });
    write_files(&a, "w", 0..5);
    a.wait_until("plain's runs to succeed and keyed's to wait", || {
        let runs = a.runs();
        let of = |w: &str, status: &str| {
            runs.iter()
                .filter(|r| r.workflow == w && r.status == status)
                .count()
        };
        of("plain", "succeeded") == 5 && of("keyed", "queued") == 5
    });
    assert!(a.stop().success());
    a.spawn(&with_secret);
    a.wait_until("keyed's runs to succeed", || {
        a.runs()
            .iter()
            .filter(|r| r.workflow == "keyed" && r.status == "succeeded")
            .count()
            == 5
    });
    assert!(a.runs().iter().all(|r| r.status == "succeeded"));
}

on_both!(
    a_run_of_a_workflow_one_node_lacks_runs_on_the_other,
    a_lacking_node_leaves_the_runs
);
