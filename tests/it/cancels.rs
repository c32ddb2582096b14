//! Cancels (issue 15): `nexusd runs cancel`, one run or a workflow's runs
//! by state, against the real binary on both backends.

use std::fs;

use crate::agent::{Agent, Backend, RunRow, process_gone};

/// A step that starts a grandchild (a background `sleep`), says both pids,
/// and waits for it.
const LONG: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: long}
spec:
  on: [{event: file.created, pattern: /t/*.txt}]
  steps:
    - name: work
      run: 'sleep 300 & echo $! > grandchild.pid; echo $$ > step.pid; wait'
"#;

/// Waits on a file: a run on /q/ stays running until `/go` exists, and
/// the others queue behind it (one worker).
const GATED: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: gated}
spec:
  on: [{event: file.created, pattern: /q/*.txt}]
  steps:
    - name: wait
      run: 'while [ ! -e go ]; do sleep 0.02; done'
"#;

fn run_of(agent: &Agent, path: &str) -> RunRow {
    agent
        .runs()
        .into_iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no run for {path}"))
}

fn attempts(agent: &Agent, run: &str) -> Vec<(String, Option<String>)> {
    let run = run.to_owned();
    agent.query(async move |pool| {
        sqlx::query_as("SELECT status, error FROM attempts WHERE run_id = $1 ORDER BY attempt")
            .bind(run)
            .fetch_all(&pool)
            .await
            .unwrap()
    })
}

/// Cancel of a running shell step: its whole process group is killed (the
/// grandchild too), the run and its attempt are recorded `cancelled` with
/// who did it, and nothing the node still had in hand overwrites that. A
/// second cancel, an unknown id and a reader's key are refused.
fn cancelling_a_running_step_kills_its_grandchildren(backend: Backend) {
    let agent = Agent::start_on(backend, &[("long.yaml", LONG)], &[]);
    let writer = agent.user_key("ops", "writer");
    let reader = agent.user_key("watcher", "reader");
    agent.write("/t/x.txt", "x");
    let grandchild = agent.wait_line("/grandchild.pid");
    let step = agent.wait_line("/step.pid");
    let run = run_of(&agent, "/t/x.txt");
    let denied = agent.cli(&reader, &["runs", "cancel", &run.id]);
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(denied.stderr.contains("not allowed"), "{denied:?}");
    assert!(!process_gone(&step), "a reader's cancel changes nothing");
    let done = agent.cli(&writer, &["runs", "cancel", &run.id]);
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(
        done.stdout.trim(),
        format!("{}: cancelled (was running)", run.id)
    );
    agent.wait_until("the step and its grandchild to be killed", || {
        process_gone(&step) && process_gone(&grandchild)
    });
    let after = run_of(&agent, "/t/x.txt");
    assert_eq!(after.status, "cancelled", "{after:?}");
    assert_eq!(after.reason.as_deref(), Some("by ops"), "{after:?}");
    assert_eq!(
        attempts(&agent, &run.id),
        [("cancelled".to_owned(), Some("cancelled by ops".to_owned()))]
    );
    // The node stopped it without a word of its own in the record.
    agent.wait_until("the node to stop the run", || {
        agent.log_text().contains("this node lost the run")
    });
    agent.barrier();
    assert_eq!(run_of(&agent, "/t/x.txt").status, "cancelled");
    let again = agent.cli(&writer, &["runs", "cancel", &run.id]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("run `{}` is already `cancelled`", run.id)),
        "{again:?}"
    );
    let unknown = agent.cli(&writer, &["runs", "cancel", "run_nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("no run `run_nope`"), "{unknown:?}");
    let shown = agent.cli(&writer, &["runs", "get", &run.id]);
    assert!(shown.stdout.contains("reason:    by ops"), "{shown:?}");
}
on_both!(
    a_running_step_cancelled_is_killed_with_its_grandchildren,
    cancelling_a_running_step_kills_its_grandchildren
);

/// Bulk cancel of a workflow's queued runs: a dry run lists them and
/// cancels none; `--path` narrows; cancelled queued runs never start, the
/// running one goes on to succeed; a filter matching nothing has nothing
/// to do; a final state is refused.
fn cancelling_queued_runs_in_bulk(backend: Backend) {
    let agent = Agent::start_on(backend, &[("gated.yaml", GATED)], &["--workers", "1"]);
    let key = agent.user_key("ops", "writer");
    for name in ["a", "b", "c"] {
        agent.write(&format!("/q/{name}.txt"), name);
    }
    // One runs (whichever event came first), the other two queue.
    let mut running = String::new();
    let mut queued: Vec<String> = Vec::new();
    agent.wait_until("one run running, two queued", || {
        let runs = agent.runs();
        let of = |status: &str| -> Vec<String> {
            runs.iter()
                .filter(|r| r.status == status)
                .map(|r| r.path.clone())
                .collect()
        };
        let (now, waiting) = (of("running"), of("queued"));
        if now.len() == 1 && waiting.len() == 2 {
            running = now[0].clone();
            queued = waiting;
            true
        } else {
            false
        }
    });
    let bulk = |extra: &[&str]| {
        let mut args = vec!["runs", "cancel", "--workflow", "gated"];
        args.extend_from_slice(extra);
        agent.cli(&key, &args)
    };
    let dry = bulk(&["--status", "queued,retrying", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("2 run(s) would cancel"), "{dry:?}");
    assert_eq!(
        run_of(&agent, &queued[0]).status,
        "queued",
        "a dry run cancels none"
    );
    let narrow = bulk(&["--status", "queued", "--path", &queued[0], "-o", "json"]);
    assert_eq!(narrow.code, 0, "{narrow:?}");
    let answer: serde_json::Value = serde_json::from_str(&narrow.stdout).unwrap();
    let first = run_of(&agent, &queued[0]);
    assert_eq!(answer["runs"][0]["run"], first.id.as_str(), "{answer}");
    assert_eq!(answer["runs"][0]["was"], "queued", "{answer}");
    assert_eq!(answer["runs"].as_array().unwrap().len(), 1, "{answer}");
    let rest = bulk(&["--status", "queued"]);
    assert_eq!(rest.code, 0, "{rest:?}");
    assert!(rest.stdout.contains("1 run(s) cancelled"), "{rest:?}");
    let none = bulk(&["--status", "retrying"]);
    assert_eq!(none.code, 0, "{none:?}");
    assert!(
        none.stdout
            .contains("nothing to do: no run of `gated` matches"),
        "{none:?}"
    );
    let final_state = bulk(&["--status", "succeeded"]);
    assert_ne!(final_state.code, 0, "{final_state:?}");
    assert!(
        final_state
            .stderr
            .contains("is final and cannot be cancelled"),
        "{final_state:?}"
    );
    fs::write(agent.path("/go"), "").unwrap();
    agent.wait_runs("gated", 3);
    agent.wait_until("the running one to succeed", || {
        run_of(&agent, &running).status == "succeeded"
    });
    agent.barrier();
    for path in &queued {
        let r = run_of(&agent, path);
        assert_eq!(r.status, "cancelled", "{r:?}");
        assert_eq!(r.attempts, 0, "never started: {r:?}");
        assert!(attempts(&agent, &r.id).is_empty(), "{r:?}");
    }
}
on_both!(
    queued_runs_cancelled_in_bulk_never_start,
    cancelling_queued_runs_in_bulk
);

/// A run running on one node, cancelled through another node's API: the
/// node that runs it is told and kills its step (PostgreSQL: at once;
/// SQLite, which tells no one: at its next lease renewal).
fn a_cancel_through_another_node(backend: Backend) {
    // On PostgreSQL a lease renewal would come too late for the test's
    // wait: the node hears of the cancel.
    let lease = match backend {
        Backend::Sqlite => ["--lease", "3s"],
        Backend::Postgres(_) => ["--lease", "300s"],
    };
    let a = Agent::start_on(backend, &[("long.yaml", LONG)], &lease);
    let mut b = Agent::sharing(&a, &[]);
    b.spawn(&lease);
    b.wait_until("B to be standby", || {
        b.log_text()
            .contains("standby: another agent watches this data dir")
    });
    let key = a.user_key("ops", "writer");
    a.write("/t/x.txt", "x");
    let step = a.wait_line("/step.pid");
    let grandchild = a.wait_line("/grandchild.pid");
    let run = run_of(&a, "/t/x.txt");
    let done = b.cli(&key, &["runs", "cancel", &run.id]);
    assert_eq!(done.code, 0, "{done:?}");
    a.wait_until("A to kill the step", || {
        process_gone(&step) && process_gone(&grandchild)
    });
    assert_eq!(run_of(&a, "/t/x.txt").status, "cancelled");
    assert!(a.log_text().contains("this node lost the run"));
}
on_both!(
    a_run_cancelled_through_another_node_stops_where_it_runs,
    a_cancel_through_another_node
);

/// A retrying run cancelled during its backoff never runs again, and its
/// path's next run does not wait for that backoff to end.
fn cancelling_a_retrying_run(backend: Backend) {
    let workflow = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: patient}
spec:
  on: [{event: [file.created, file.updated], pattern: /p/*.txt}]
  retry: {max_attempts: 3, backoff: 10m}
  steps:
    - name: try
      run: 'grep -q fixed p/x.txt'
"#;
    let agent = Agent::start_on(backend, &[("patient.yaml", workflow)], &[]);
    let key = agent.user_key("ops", "writer");
    agent.write("/p/x.txt", "broken");
    agent.wait_until("the run to wait out its backoff", || {
        agent.runs().first().is_some_and(|r| r.status == "retrying")
    });
    let retrying = agent.runs().remove(0);
    let done = agent.cli(&key, &["runs", "cancel", &retrying.id]);
    assert_eq!(done.code, 0, "{done:?}");
    assert!(done.stdout.contains("cancelled (was retrying)"), "{done:?}");
    agent.write("/p/x.txt", "fixed");
    agent.wait_until("the path's next run to succeed", || {
        agent.runs().iter().any(|r| r.status == "succeeded")
    });
    let first = run_of_id(&agent, &retrying.id);
    assert_eq!(first.status, "cancelled", "{first:?}");
    assert_eq!(first.attempts, 1, "never tried again: {first:?}");
}
on_both!(
    a_retrying_run_cancelled_frees_its_path,
    cancelling_a_retrying_run
);

fn run_of_id(agent: &Agent, id: &str) -> RunRow {
    agent.runs().into_iter().find(|r| r.id == id).unwrap()
}

/// A running webhook cancelled has its request aborted: the receiver,
/// which never answers, sees the connection closed (long before the
/// step's timeout), and the run and its attempt are recorded cancelled.
fn cancelling_a_running_webhook(backend: Backend) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let yaml = format!(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: hook}}\nspec:\n  on: [{{event: file.created, pattern: /h/*.txt}}]\n  steps:\n    - name: call\n      timeout: 10m\n      webhook: {{url: \"http://{}/slow\"}}\n",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        tx.send(String::from_utf8_lossy(&head).into_owned())
            .unwrap();
        // Never answers; tells when the agent closes the connection.
        let mut rest = [0u8; 1024];
        while conn.read(&mut rest).is_ok_and(|n| n > 0) {}
        tx.send("closed".to_owned()).unwrap();
    });
    let agent = Agent::start_on(backend, &[("hook.yaml", &yaml)], &[]);
    let writer = agent.user_key("ops", "writer");
    agent.write("/h/a.txt", "a");
    let head = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    assert!(head.starts_with("POST /slow "), "{head}");
    let run = run_of(&agent, "/h/a.txt");
    assert_eq!(run.status, "running", "{run:?}");
    let done = agent.cli(&writer, &["runs", "cancel", &run.id]);
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap(),
        "closed",
        "the request was aborted"
    );
    let after = run_of(&agent, "/h/a.txt");
    assert_eq!(after.status, "cancelled", "{after:?}");
    assert_eq!(after.reason.as_deref(), Some("by ops"), "{after:?}");
    assert_eq!(
        attempts(&agent, &run.id),
        [("cancelled".to_owned(), Some("cancelled by ops".to_owned()))]
    );
}
on_both!(
    a_running_webhook_cancelled_has_its_request_aborted,
    cancelling_a_running_webhook
);
