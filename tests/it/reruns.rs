//! Re-runs (issue 15): `nexusd runs rerun`, whole or from the failed step,
//! one run or a workflow's by state, against the real binary on both
//! backends.

use std::fs;

use crate::agent::{Agent, Backend, RunRow};

/// `mark` has a side effect (a line in `marks.log`) and says `marked`;
/// `check` fails until the file `ok` exists, and writes what `mark` said.
const TWO_STEPS: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: twostep}
spec:
  on: [{event: file.created, pattern: /r/*.txt}]
  steps:
    - name: mark
      run: 'echo once >> marks.log; echo marked'
    - name: check
      run: 'test -e ok && echo "$PREV" > seen.txt'
      env: {PREV: '{{steps.mark.stdout}}'}
"#;

fn run(agent: &Agent, id: &str) -> RunRow {
    agent
        .runs()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no run {id}"))
}

fn marks(agent: &Agent) -> usize {
    fs::read_to_string(agent.path("/marks.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A failed run re-run from its failed step: the step before it does not
/// run again (its side effect happens once) and its recorded stdout is
/// what the failed step sees; the runs link both ways. A whole re-run runs
/// every step. Refusals: a run that did not fail, from its failed step; a
/// file changed since; an unknown id; a reader.
fn rerunning_from_the_failed_step(backend: Backend) {
    let agent = Agent::start_on(backend, &[("two.yaml", TWO_STEPS)], &[]);
    let key = agent.user_key("ops", "writer");
    let reader = agent.user_key("watcher", "reader");
    agent.write("/r/a.txt", "a");
    let failed = agent.wait_runs("twostep", 1).remove(0);
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert_eq!(marks(&agent), 1);
    let denied = agent.cli(&reader, &["runs", "rerun", &failed.id]);
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(denied.stderr.contains("not allowed"), "{denied:?}");
    let from_failed = |id: &str| {
        let out = agent.cli(&key, &["runs", "rerun", id, "--from-failed", "-o", "json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let answer: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(answer[0]["rerun_of"], id, "{answer}");
        assert_eq!(answer[0]["from_step"], "check", "{answer}");
        answer[0]["run"].as_str().unwrap().to_owned()
    };
    // Still broken: the re-run fails at `check` again; re-run from there
    // once more, `mark`'s result carried through both.
    let first = from_failed(&failed.id);
    agent.wait_until("the first re-run to fail", || {
        run(&agent, &first).status == "failed"
    });
    fs::write(agent.path("/ok"), "").unwrap();
    let again = from_failed(&first);
    agent.wait_until("the re-run to succeed", || {
        run(&agent, &again).status == "succeeded"
    });
    assert_eq!(marks(&agent), 1, "`mark` did not run again");
    assert_eq!(
        fs::read_to_string(agent.path("/seen.txt")).unwrap(),
        "marked\n"
    );
    let steps: Vec<String> = agent.steps(&again).into_iter().map(|s| s.name).collect();
    assert_eq!(steps, ["check"], "only the failed step ran");
    let shown = agent.cli(&key, &["runs", "get", &failed.id]);
    assert!(
        shown.stdout.contains(&format!("re-runs:   {first}")),
        "{shown:?}"
    );
    let shown = agent.cli(&key, &["runs", "get", &again]);
    assert!(
        shown.stdout.contains(&format!("re-run of: {first}")),
        "{shown:?}"
    );
    // It succeeded: not from a failed step; whole, every step runs.
    let refused = agent.cli(&key, &["runs", "rerun", &again, "--from-failed"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("is `succeeded`: --from-failed re-runs a failed run"),
        "{refused:?}"
    );
    let whole = agent.cli(&key, &["runs", "rerun", &again]);
    assert_eq!(whole.code, 0, "{whole:?}");
    agent.wait_until("a second mark", || marks(&agent) == 2);
    // The file changed since the failed run: refused from its failed step.
    fs::remove_file(agent.path("/ok")).unwrap();
    agent.write("/r/b.txt", "b");
    let b = agent
        .wait_runs("twostep", 5)
        .into_iter()
        .find(|r| r.path == "/r/b.txt")
        .unwrap();
    assert_eq!(b.status, "failed");
    agent.write("/r/b.txt", "b, longer now");
    let changed = agent.cli(&key, &["runs", "rerun", &b.id, "--from-failed"]);
    assert_eq!(changed.code, 1, "{changed:?}");
    assert!(
        changed
            .stderr
            .contains("the file `/r/b.txt` changed since run"),
        "{changed:?}"
    );
    let unknown = agent.cli(&key, &["runs", "rerun", "run_nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("no run `run_nope`"), "{unknown:?}");
}
on_both!(
    a_failed_run_rerun_from_its_failed_step_runs_the_earlier_ones_once,
    rerunning_from_the_failed_step
);

/// Bulk: a dry run lists a workflow's failed runs and starts none; then
/// each is re-run from its failed step; none matching has nothing to do.
fn rerunning_failed_runs_in_bulk(backend: Backend) {
    let agent = Agent::start_on(backend, &[("two.yaml", TWO_STEPS)], &[]);
    let key = agent.user_key("ops", "writer");
    for name in ["a", "b", "c"] {
        agent.write(&format!("/r/{name}.txt"), name);
    }
    let failed = agent.wait_runs("twostep", 3);
    assert!(failed.iter().all(|r| r.status == "failed"), "{failed:?}");
    assert_eq!(marks(&agent), 3);
    let bulk = |extra: &[&str]| {
        let mut args = vec!["runs", "rerun", "--workflow", "twostep"];
        args.extend_from_slice(extra);
        agent.cli(&key, &args)
    };
    let dry = bulk(&[
        "--status",
        "failed",
        "--since",
        "1h",
        "--from-failed",
        "--dry-run",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("3 run(s) would be re-run"), "{dry:?}");
    assert!(
        dry.stdout.contains("would re-run from step `check`"),
        "{dry:?}"
    );
    assert_eq!(agent.runs().len(), 3, "a dry run starts none");
    fs::write(agent.path("/ok"), "").unwrap();
    let done = bulk(&["--from-failed"]);
    assert_eq!(done.code, 0, "{done:?}");
    assert!(done.stdout.contains("3 run(s) re-run"), "{done:?}");
    agent.wait_until("three re-runs to succeed", || {
        agent
            .runs()
            .iter()
            .filter(|r| r.status == "succeeded")
            .count()
            == 3
    });
    assert_eq!(marks(&agent), 3, "no `mark` ran again");
    let none = bulk(&["--status", "cancelled"]);
    assert_eq!(none.code, 0, "{none:?}");
    assert!(
        none.stdout
            .contains("nothing to do: no run of `twostep` matches"),
        "{none:?}"
    );
    let unfinished = bulk(&["--status", "queued"]);
    assert_ne!(unfinished.code, 0, "{unfinished:?}");
    assert!(
        unfinished.stderr.contains("has not finished"),
        "{unfinished:?}"
    );
    let future = bulk(&["--since", "yesterday-ish"]);
    assert_ne!(future.code, 0, "{future:?}");
    assert!(
        future.stderr.contains("is neither a duration"),
        "{future:?}"
    );
}
on_both!(
    failed_runs_rerun_in_bulk_after_a_dry_run,
    rerunning_failed_runs_in_bulk
);

/// Says which revision it is, then waits while `/hold` exists.
const VERSIONED: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: versioned}
spec:
  on: [{event: file.created, pattern: /v/*.txt}]
  steps:
    - name: say
      run: 'echo first >> said.log; while [ -e hold ]; do sleep 0.02; done'
"#;

fn said(agent: &Agent) -> Vec<String> {
    fs::read_to_string(agent.path("/said.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `--same-revision` runs the steps of the revision live when the run was
/// queued, the plain re-run today's; and so does a node that takes the
/// re-run up after a `kill -9`.
fn rerunning_on_the_original_revision(backend: Backend) {
    let mut agent = Agent::start_on(backend, &[("v.yaml", VERSIONED)], &["--workers", "1"]);
    let key = agent.user_key("ops", "writer");
    agent.write("/v/a.txt", "a");
    let first = agent.wait_runs("versioned", 1).remove(0);
    assert_eq!(first.status, "succeeded", "{first:?}");
    fs::write(
        agent.config.join("v.yaml"),
        VERSIONED.replace("echo first", "echo second"),
    )
    .unwrap();
    let line = "definitions reloaded workflows=1";
    agent.wait_until(line, || agent.log_text().contains(line));
    let same = agent.cli(&key, &["runs", "rerun", &first.id, "--same-revision"]);
    assert_eq!(same.code, 0, "{same:?}");
    assert!(same.stdout.contains(", on revision 1)"), "{same:?}");
    agent.wait_runs("versioned", 2);
    let live = agent.cli(&key, &["runs", "rerun", &first.id, "-o", "json"]);
    assert_eq!(live.code, 0, "{live:?}");
    assert!(live.stdout.contains("\"revision\": null"), "{live:?}");
    agent.wait_runs("versioned", 3);
    assert_eq!(said(&agent), ["first", "first", "second"]);

    // Held behind a run that waits (one worker), then the agent killed:
    // the re-run is taken up from the store, on revision 1 still.
    agent.write("/hold", "");
    agent.write("/v/b.txt", "b");
    agent.wait_until("b's run to wait", || said(&agent).len() == 4);
    let queued = agent.cli(
        &key,
        &["runs", "rerun", &first.id, "--same-revision", "-o", "json"],
    );
    assert_eq!(queued.code, 0, "{queued:?}");
    let answer: serde_json::Value = serde_json::from_str(&queued.stdout).unwrap();
    let id = answer[0]["run"].as_str().unwrap().to_owned();
    assert_eq!(run(&agent, &id).status, "queued");
    agent.kill9();
    fs::remove_file(agent.path("/hold")).unwrap();
    agent.spawn(&["--workers", "1"]);
    agent.wait_until("the held re-run to succeed", || {
        run(&agent, &id).status == "succeeded"
    });
    let lines = said(&agent);
    assert_eq!(
        lines.iter().filter(|l| *l == "first").count(),
        3,
        "{lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("first"), "{lines:?}");
    let reason = run(&agent, &id);
    assert_eq!(reason.attempts, 1, "{reason:?}");
}
on_both!(
    a_rerun_on_the_same_revision_runs_its_steps_even_after_a_kill,
    rerunning_on_the_original_revision
);
