//! `spec.on_failure` (issue 15): steps that run once after a run's last
//! attempt failed, against the real binary on both backends.

use std::fs;

use crate::agent::{Agent, Backend};

/// Two attempts of `work`, which fails unless `ok` exists; `on_failure`
/// appends what it saw to `failures.log`, then a step of its own fails.
const FLAKY: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: flaky}
spec:
  on: [{event: file.created, pattern: /f/*.txt}]
  retry: {max_attempts: 2, backoff: 10ms}
  steps:
    - name: work
      run: 'test -e ok || { echo broken >&2; exit 4; }'
  on_failure:
    - name: note
      run: 'printf "%s|%s|%s|%s\n" "$FILE" "$STEP" "$ATTEMPTS" "$ERROR" >> failures.log'
      env:
        FILE: '{{event.path}}'
        STEP: '{{run.failed_step}}'
        ATTEMPTS: '{{run.attempts}}'
        ERROR: '{{run.error}}'
    - name: also-fails
      run: 'exit 9'
    - name: never
      run: 'echo never >> never.log'
"#;

/// After the last of two failed attempts, the `on_failure` steps run once,
/// see the run's error, its failed step and attempts; the failure of one
/// of them ends them and changes nothing more: the run stays failed with
/// its own error, nothing loops. A run that succeeds runs none of them.
fn on_failure_steps_run_once_after_the_last_attempt(backend: Backend) {
    let agent = Agent::start_on(backend, &[("flaky.yaml", FLAKY)], &[]);
    agent.write("/f/a.txt", "a");
    let runs = agent.wait_runs("flaky", 1);
    let failed = &runs[0];
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert_eq!(failed.attempts, 2, "{failed:?}");
    let error = failed.error.clone().unwrap();
    assert!(error.starts_with("step `work` failed: "), "{error}");
    let log = fs::read_to_string(agent.path("/failures.log")).unwrap();
    assert_eq!(
        log,
        format!("/f/a.txt|work|2|{error}\n"),
        "once, after attempt 2"
    );
    assert!(
        !agent.path("/never.log").exists(),
        "ended by the failed one"
    );
    let steps: Vec<(String, String)> = agent
        .steps(&failed.id)
        .into_iter()
        .map(|s| (s.name, s.status))
        .collect();
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["work", "work", "note", "also-fails"],
        "each attempt's work, then the on_failure steps of the last: {steps:?}"
    );
    assert_eq!(steps[3].1, "failed");
    // A success: none of them.
    fs::write(agent.path("/ok"), "").unwrap();
    agent.write("/f/b.txt", "b");
    let runs = agent.wait_runs("flaky", 2);
    let b = runs.iter().find(|r| r.path == "/f/b.txt").unwrap();
    assert_eq!(b.status, "succeeded", "{b:?}");
    agent.barrier();
    assert_eq!(
        fs::read_to_string(agent.path("/failures.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    let names: Vec<String> = agent.steps(&b.id).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["work"]);
}
on_both!(
    on_failure_steps_run_once_after_the_last_failed_attempt,
    on_failure_steps_run_once_after_the_last_attempt
);
