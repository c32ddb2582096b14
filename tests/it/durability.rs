//! The promise: no event lost across `kill -9`, whatever is in flight.

use std::collections::BTreeMap;
use std::fs;

use crate::agent::{Agent, Backend};

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
