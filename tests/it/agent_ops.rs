//! Operating the agent: health, live reload of the config dir, the loop
//! guard, moves across a workflow's scope, and shutdown.

use std::fs;
use std::time::Duration;

use crate::agent::Agent;

fn workflow(name: &str, event: &str, pattern: &str, steps: &str) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  on:\n    - event: {event}\n      pattern: \"{pattern}\"\n  steps:\n{steps}"
    )
}

/// Waits until the agent says it reloaded its config dir to `workflows`.
fn wait_for_reload(agent: &Agent, workflows: usize) {
    let line = format!("definitions reloaded workflows={workflows}");
    agent.wait_until(&line, || agent.log_text().contains(&line));
}

const LOG_STEP: &str =
    "    - {name: s, action: log, with: {message: \"{{event.type}} {{event.path}}\"}}\n";

#[test]
fn health_answers_with_the_version() {
    let agent = Agent::start(&[], &[]);
    let body: serde_json::Value = serde_json::from_str(&agent.get_public("/health")).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})
    );
}

#[test]
fn the_config_dir_is_reconciled_and_a_bad_change_keeps_the_last_good_set() {
    let agent = Agent::start(&[], &[]);
    fs::write(
        agent.config.join("a.yaml"),
        workflow("late", "file.created", "/in/*", LOG_STEP),
    )
    .unwrap();
    wait_for_reload(&agent, 1);
    agent.write("/in/1", "x");
    agent.wait_runs("late", 1);
    fs::write(
        agent.config.join("a.yaml"),
        workflow("late", "file.changed", "/in/*", LOG_STEP),
    )
    .unwrap();
    agent.wait_until("the rejection", || {
        agent.log_text().contains("definitions rejected")
    });
    assert!(
        agent
            .log_text()
            .contains("a.yaml:6:14: error: unknown event type `file.changed`"),
        "{}",
        agent.log_text()
    );
    agent.write("/in/2", "x");
    let runs = agent.wait_runs("late", 2);
    assert_eq!(runs.len(), 2, "the last good definition still runs");
    fs::remove_file(agent.config.join("a.yaml")).unwrap();
    wait_for_reload(&agent, 0);
    agent.write("/in/3", "x");
    agent.barrier();
    assert_eq!(agent.runs().len(), 2, "a removed workflow stops triggering");
}

#[test]
fn with_no_inotify_watch_at_all_the_data_and_config_dirs_are_polled() {
    let mut agent = Agent::new_on(crate::agent::Backend::Sqlite, &[]);
    agent.watch_limit = Some(0);
    agent.spawn(&["--poll-interval", "1s"]);
    let log = agent.log_text();
    assert!(
        log.contains("cannot watch the config dir")
            && log.contains("the inotify watch limit is reached"),
        "{log}"
    );
    fs::write(
        agent.config.join("a.yaml"),
        workflow("polled", "file.created", "/in/*", LOG_STEP),
    )
    .unwrap();
    wait_for_reload(&agent, 1);
    agent.write("/in/1", "x");
    let runs = agent.wait_runs("polled", 1);
    assert_eq!(runs[0].path, "/in/1");
}

#[test]
fn a_workflow_feeding_itself_stops_at_the_chain_depth() {
    let steps = "    - name: again\n      action: file.append\n      with: {path: \"{{event.path}}\", content: x}\n";
    let agent = Agent::start(
        &[(
            "loop.yaml",
            &workflow(
                "feedback",
                "[file.created, file.updated]",
                "**/*.log",
                steps,
            ),
        )],
        &["--max-chain-depth", "3"],
    );
    agent.write("/app.log", "start");
    agent.wait_until("a run skipped as a loop", || {
        agent.runs().iter().any(|r| r.status == "skipped")
    });
    agent.barrier();
    let runs = agent.runs();
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "skipped"
        ]
    );
    let reason = runs[4].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("loop: chain depth 4 exceeds --max-chain-depth 3 (caused by run run_"),
        "{reason}"
    );
    assert_eq!(
        fs::read_to_string(agent.path("/app.log")).unwrap(),
        "startxxxx"
    );
    assert!(agent.log_text().contains("loop: run skipped"));
}

#[test]
fn moves_across_a_scope_are_creates_and_deletes_for_it() {
    let defs = [(
        "in.yaml",
        workflow(
            "inbox",
            "[file.created, file.deleted, file.moved]",
            "/inbox/*",
            LOG_STEP,
        ),
    )];
    let refs: Vec<(&str, &str)> = defs.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let agent = Agent::start(&refs, &[]);
    agent.write("/elsewhere/a", "a");
    agent.barrier();
    fs::create_dir_all(agent.path("/inbox")).unwrap();
    fs::rename(agent.path("/elsewhere/a"), agent.path("/inbox/a")).unwrap();
    agent.wait_runs("inbox", 1);
    fs::rename(agent.path("/inbox/a"), agent.path("/inbox/b")).unwrap();
    agent.wait_runs("inbox", 2);
    fs::rename(agent.path("/inbox/b"), agent.path("/elsewhere/b")).unwrap();
    let runs = agent.wait_runs("inbox", 3);
    let seen: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.event_type.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("file.created", "/inbox/a"),
            ("file.moved", "/inbox/b"),
            ("file.deleted", "/inbox/b")
        ]
    );
}

#[test]
fn shutdown_lets_steps_finish_within_the_grace_and_interrupts_the_rest() {
    let steps = "    - name: nap\n      run: sleep 0.5\n";
    let mut agent = Agent::start(
        &[(
            "w.yaml",
            &workflow("nap", "file.created", "/short/*", steps),
        )],
        &[],
    );
    agent.write("/short/a", "x");
    agent.wait_until("the run to start", || {
        agent.runs().iter().any(|r| r.status == "running")
    });
    assert!(agent.stop().success());
    assert_eq!(
        agent.runs()[0].status,
        "succeeded",
        "finished within the grace"
    );

    let long = "    - name: nap\n      run: sleep 30\n";
    fs::write(
        agent.config.join("w.yaml"),
        workflow("nap", "file.created", "/long/*", long),
    )
    .unwrap();
    agent.spawn(&["--shutdown-grace", "200ms"]);
    agent.write("/long/b", "x");
    agent.wait_until("the run to start", || {
        agent.runs().iter().any(|r| r.status == "running")
    });
    let started = std::time::Instant::now();
    assert!(agent.stop().success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let run = agent
        .runs()
        .into_iter()
        .find(|r| r.path == "/long/b")
        .unwrap();
    // Cut off, not cancelled: its attempt is recorded interrupted and the
    // run left unfinished, to run again at the next start.
    assert_eq!(run.status, "running");
    let attempts: Vec<String> = agent.query(async |pool| {
        sqlx::query_scalar("SELECT a.status FROM attempts a JOIN runs r ON r.id = a.run_id WHERE r.path = '/long/b'")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(attempts, ["interrupted"]);
}

crate::on_both!(
    runs_cut_off_by_kill_9_are_finished_after_a_restart,
    resume_after_kill_9
);

fn resume_after_kill_9(backend: crate::agent::Backend) {
    let steps = "    - name: work\n      run: '[ \"$NEXUS_ATTEMPT\" -ge 2 ] || [ \"$(basename \"$NEXUS_FILE\")\" != a ] || sleep 30'\n";
    let mut agent = Agent::start_on(
        backend,
        &[("w.yaml", &workflow("work", "file.created", "/q/*", steps))],
        &["--workers", "1"],
    );
    agent.write("/q/a", "x");
    agent.wait_until("the first run to start", || {
        agent.runs().iter().any(|r| r.status == "running")
    });
    agent.write("/q/b", "x");
    agent.write("/q/c", "x");
    agent.wait_until("three runs recorded", || agent.runs().len() == 3);
    agent.kill9();
    let statuses: Vec<String> = agent.runs().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["running", "queued", "queued"]);
    agent.spawn(&["--workers", "1"]);
    let runs = agent.wait_runs("work", 3);
    let got: Vec<(&str, &str, i64)> = runs
        .iter()
        .map(|r| (r.path.as_str(), r.status.as_str(), r.attempts))
        .collect();
    assert_eq!(
        got,
        [
            ("/q/a", "succeeded", 2),
            ("/q/b", "succeeded", 1),
            ("/q/c", "succeeded", 1)
        ]
    );
    assert!(agent.log_text().contains("resuming an unfinished run"));
}

#[test]
fn a_burst_on_one_path_keeps_one_run_waiting_unless_told_to_queue() {
    let nap = "    - name: nap\n      run: sleep 0.3\n";
    let coalesce = workflow("coalesce", "[file.created, file.updated]", "/c/*", nap);
    let queue = workflow("queue", "[file.created, file.updated]", "/q/*", nap).replace(
        "pattern: \"/q/*\"",
        "pattern: \"/q/*\"\n      on_burst: queue",
    );
    let agent = Agent::start(&[("c.yaml", &coalesce), ("q.yaml", &queue)], &[]);
    fs::create_dir_all(agent.path("/c")).unwrap();
    fs::create_dir_all(agent.path("/q")).unwrap();
    agent.barrier();
    agent.write("/c/x", "0");
    agent.write("/q/x", "0");
    agent.wait_until("both first runs to start", || {
        agent
            .runs()
            .iter()
            .filter(|r| r.status == "running")
            .count()
            == 2
    });
    for i in 1..=4 {
        agent.write("/c/x", "n".repeat(i));
        agent.write("/q/x", "n".repeat(i));
        // One event per write: wait for it before the next write.
        agent.wait_until("the writes' events", || {
            let events = agent.events();
            ["/c/x", "/q/x"]
                .iter()
                .all(|p| events.iter().filter(|(_, e, _)| e == p).count() == i + 1)
        });
    }
    let queued = agent.wait_runs("queue", 5);
    assert!(queued.iter().all(|r| r.status == "succeeded"), "{queued:?}");
    let runs = agent.wait_runs("coalesce", 5);
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["succeeded", "skipped", "skipped", "skipped", "succeeded"]
    );
    assert!(
        runs[1]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("superseded by run run_"),
        "{:?}",
        runs[1]
    );
}

crate::on_both!(
    a_retry_waits_out_its_backoff_across_a_restart,
    retry_across_restart
);

fn retry_across_restart(backend: crate::agent::Backend) {
    let steps = "    - name: second-time\n      run: '[ \"$NEXUS_ATTEMPT\" -ge 2 ]'\n";
    let yaml = workflow("later", "file.created", "/r/*", steps).replace(
        "  steps:",
        "  retry: {max_attempts: 2, backoff: 2s}\n  steps:",
    );
    let mut agent = Agent::start_on(backend, &[("w.yaml", &yaml)], &[]);
    agent.write("/r/a", "x");
    agent.wait_until("the first attempt to fail", || {
        agent.runs().iter().any(|r| r.status == "retrying")
    });
    assert!(agent.stop().success());
    assert_eq!(
        agent.runs()[0].status,
        "retrying",
        "the retry is not lost at shutdown"
    );
    agent.spawn(&[]);
    let run = &agent.wait_runs("later", 1)[0];
    assert_eq!((run.status.as_str(), run.attempts), ("succeeded", 2));
    let id = run.id.clone();
    let times: Vec<(i64, Option<i64>)> = agent.query(async move |pool| {
        sqlx::query_as(
            "SELECT started_ms, finished_ms FROM attempts WHERE run_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .unwrap()
    });
    let gap = times[1].0 - times[0].1.unwrap();
    assert!(
        gap >= 1800,
        "attempt 2 started {gap} ms after attempt 1 ended, before its backoff (2 s ± 10%)"
    );
}

crate::on_both!(finished_runs_past_the_retention_are_deleted, retention);

/// An agent with one workflow, `kept`, logging each file created under /k.
fn kept_agent(backend: crate::agent::Backend) -> Agent {
    Agent::start_on(
        backend,
        &[(
            "w.yaml",
            &workflow("kept", "file.created", "/k/*", LOG_STEP),
        )],
        &[],
    )
}

fn retention(backend: crate::agent::Backend) {
    let mut agent = kept_agent(backend);
    agent.write("/k/a", "x");
    let run = agent.wait_runs("kept", 1)[0].clone();
    assert!(agent.stop().success());
    agent.spawn(&["--retention", "1ms"]);
    agent.wait_until("the old run to be deleted", || agent.runs().is_empty());
    let id = run.id.clone();
    let leftovers: i64 = agent.query(async move |pool| {
        sqlx::query_scalar("SELECT COUNT(*) FROM steps WHERE run_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert_eq!(leftovers, 0);
    assert!(agent.log_text().contains("retention: old runs deleted"));
}

/// Retention runs on one node of a fleet at a time (an advisory lock):
/// while another session holds it, the agent deletes nothing; once it is
/// free, the agent deletes every old run, more than one batch of them.
#[test]
fn retention_runs_on_one_node_of_the_fleet_at_a_time() {
    use sqlx::Connection as _;
    const FILES: usize = 2100;
    let Some(backend) = crate::agent::Backend::postgres() else {
        return;
    };
    let crate::agent::Backend::Postgres(url) = backend.clone() else {
        unreachable!()
    };
    let mut agent = kept_agent(backend);
    std::fs::create_dir_all(agent.path("/k")).unwrap();
    for i in 0..FILES {
        std::fs::write(agent.path(&format!("/k/f{i:04}")), "x").unwrap();
    }
    agent.wait_runs("kept", FILES);
    assert!(agent.stop().success());
    let other = crate::agent::block_on(async {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('nexusd retention', 0))")
            .execute(&mut c)
            .await
            .unwrap();
        c
    });
    agent.spawn(&["--retention", "1ms"]);
    agent.wait_until("the retention to find another node at it", || {
        agent
            .log_text()
            .contains("retention: another node is at it")
    });
    assert_eq!(agent.runs().len(), FILES, "nothing deleted meanwhile");
    crate::agent::block_on(other.close()).unwrap();
    // The runs go first, their events in the same pass after them: the
    // pass is over when its line is logged.
    agent.wait_until("the old runs to be deleted", || {
        agent.log_text().contains("retention: old runs deleted")
    });
    assert!(agent.runs().is_empty());
    let left: (i64, i64) = agent.query(async |pool| {
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM attempts), (SELECT COUNT(*) FROM events WHERE path LIKE '/k/%')")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert_eq!(left, (0, 0));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let agent = Agent::start(&[], &["--log-format", "json"]);
    let log = agent.log_text();
    let ready = log
        .lines()
        .find(|l| l.contains("\"ready\""))
        .expect("a ready line");
    let line: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(line["fields"]["message"], "ready");
    assert_eq!(line["level"], "INFO");
}
