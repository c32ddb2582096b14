//! Backfills (issue 15): `nexusd workflows backfill`, a run for every file
//! already in the data dir, against the real binary on both backends.

use std::collections::BTreeMap;
use std::fs;

use serde_json::Value;

use crate::agent::{Agent, Backend};

/// Copies each file under /old/ to /copied/, keeping its name.
const COPY: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: copy}
spec:
  on: [{event: file.created, pattern: "/old/**"}]
  steps:
    - name: copy
      action: file.copy
      with: {from: "{{event.path}}", to: "/copied/{{event.name}}"}
"#;

/// A workflow for files nobody writes: the agent's config dir is never
/// empty.
const ELSEWHERE: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: elsewhere}\nspec:\n  on: [{event: file.created, pattern: /nowhere/*}]\n  steps: [{name: s, action: log, with: {message: x}}]\n";

/// Fails for a file that does not say `ok`.
const CHECK: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: check}
spec:
  on: [{event: file.created, pattern: "/old/*.txt"}]
  steps:
    - name: check
      run: grep -q ok -- {{event.abs_path}}
"#;

/// An agent whose index holds `files` files under /old/ (written while it
/// was stopped, found by its first start) that no workflow took: what a
/// user has before applying a workflow to a directory with files.
fn agent_with_old_files(
    backend: Backend,
    files: usize,
    content: impl Fn(usize) -> String,
) -> Agent {
    let mut agent = Agent::new_on(backend, &[("elsewhere.yaml", ELSEWHERE)]);
    fs::create_dir_all(agent.path("/old")).unwrap();
    for i in 0..files {
        fs::write(agent.path(&format!("/old/f{i:05}.txt")), content(i)).unwrap();
    }
    agent.spawn(&[]);
    agent.wait_until("the files to be in the index", || {
        let n: i64 = agent.query(async |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM file_index WHERE path LIKE '/old/%'")
                .fetch_one(&pool)
                .await
                .unwrap()
        });
        n == files as i64
    });
    assert!(agent.runs().is_empty());
    agent
}

/// Adds `yaml` to the config dir (beside `elsewhere`) and waits until the
/// agent runs it.
fn apply(agent: &Agent, file: &str, yaml: &str) {
    fs::write(agent.config.join(file), yaml).unwrap();
    let line = "definitions reloaded workflows=2";
    agent.wait_until(line, || agent.log_text().contains(line));
}

/// `(runs of the backfill, of them finished)`.
fn counts(agent: &Agent, id: &str) -> (i64, i64) {
    let id = id.to_owned();
    agent.query(async move |pool| {
        sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status IN ('succeeded', 'failed', 'cancelled', 'skipped') THEN 1 ELSE 0 END), 0) FROM runs WHERE backfill = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    })
}

/// 10,000 files already there: a dry run counts them, starting nothing;
/// the backfill gives each one run, exactly once, across a `kill -9` in
/// the middle; files created meanwhile get the watch's run and no second
/// one from the backfill.
fn backfilling_ten_thousand_files_across_a_kill(backend: Backend) {
    const FILES: usize = 10_000;
    let mut agent = agent_with_old_files(backend, FILES, |i| i.to_string());
    let key = agent.user_key("ops", "writer");
    apply(&agent, "copy.yaml", COPY);
    let dry = agent.cli(&key, &["workflows", "backfill", "copy", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout
            .starts_with("workflow/copy: 10000 file(s) would be started\n  /old/f00000.txt\n"),
        "{dry:?}"
    );
    assert!(dry.stdout.ends_with("  ... and 9980 more\n"), "{dry:?}");
    assert!(agent.runs().is_empty(), "a dry run starts nothing");

    let begun = agent.cli(
        &key,
        &["workflows", "backfill", "copy", "--detach", "-o", "json"],
    );
    assert_eq!(begun.code, 0, "{begun:?}");
    let begun: Value = serde_json::from_str(&begun.stdout).unwrap();
    let id = begun["id"].as_str().unwrap().to_owned();
    assert_eq!(begun["files"], FILES);
    assert_eq!(begun["by"], "ops");
    // New files while it goes: the watch starts them.
    for i in 0..5 {
        agent.write(&format!("/old/new{i}.txt"), "new");
    }
    agent.wait_until("the new files' runs", || {
        agent
            .runs()
            .iter()
            .filter(|r| r.path.starts_with("/old/new"))
            .count()
            == 5
    });
    agent.wait_until("a part of the backfill to be done", || {
        counts(&agent, &id).1 >= 1500
    });
    agent.kill9();
    let cut = counts(&agent, &id);
    assert!(
        cut.0 < FILES as i64,
        "the kill came before the end: {cut:?}"
    );
    agent.spawn(&[]);
    agent.wait_until("every file's run to finish", || {
        counts(&agent, &id) == (FILES as i64, FILES as i64)
    });
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in agent.runs().into_iter().filter(|r| r.workflow == "copy") {
        by_path.entry(r.path).or_default().push(r.status);
    }
    assert_eq!(by_path.len(), FILES + 5, "every file has a run");
    let not_once: Vec<_> = by_path
        .iter()
        .filter(|(_, runs)| runs.len() != 1 || runs[0] != "succeeded")
        .collect();
    assert!(
        not_once.is_empty(),
        "files without exactly one succeeded run: {not_once:?}"
    );
    for i in (0..FILES).step_by(97) {
        assert_eq!(
            fs::read_to_string(agent.path(&format!("/copied/f{i:05}.txt"))).unwrap(),
            i.to_string()
        );
    }
    let sources: Vec<(i64, i64)> = agent.query(async |pool| {
        sqlx::query_as("SELECT b, COUNT(*) FROM (SELECT CASE WHEN source = 'backfill' THEN 1 ELSE 0 END AS b FROM events WHERE path LIKE '/old/%') s GROUP BY b ORDER BY b")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    // The first start's (watch or scan, by the files' age), and the new
    // files'; then the backfill's.
    assert_eq!(sources, [(0, FILES as i64 + 5), (1, FILES as i64)]);
    let (status, b) = agent.get_json(&key, &format!("/v1/backfills/{id}"));
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["done"], true, "{b}");
    assert_eq!(b["started"], FILES, "{b}");
    assert_eq!(b["runs"]["succeeded"], FILES, "{b}");
}
on_both!(
    ten_thousand_files_each_once_across_a_kill_9,
    backfilling_ten_thousand_files_across_a_kill
);

/// Followed without a terminal, a backfill prints lines of counts and
/// how it ended; a failed run makes the exit code 1. A `--path` glob
/// narrows it; the run's reason says which backfill and who.
#[test]
fn a_followed_backfill_prints_counts_and_fails_with_its_runs() {
    let agent = agent_with_old_files(Backend::Sqlite, 30, |i| {
        if i == 7 { "bad".into() } else { "ok".into() }
    });
    let key = agent.user_key("ops", "writer");
    apply(&agent, "check.yaml", CHECK);
    let narrow = agent.cli(
        &key,
        &["workflows", "backfill", "check", "--path", "/old/f0001*"],
    );
    assert_eq!(narrow.code, 0, "{narrow:?}");
    assert!(
        narrow.stdout.contains("10 file(s) for workflow/check"),
        "{narrow:?}"
    );
    assert!(
        narrow
            .stdout
            .contains("done: 10 run(s): 10 succeeded, 0 failed, 0 cancelled, 0 skipped"),
        "{narrow:?}"
    );
    assert!(narrow.stderr.contains("/10 runs finished"), "{narrow:?}");
    assert_eq!(agent.runs().len(), 10);
    // On a terminal (`script` gives it one): a progress bar.
    let tty = std::process::Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} workflows backfill check --path '/old/f0002*'",
            env!("CARGO_BIN_EXE_nexusd")
        ))
        .arg("/dev/null")
        .env("NEXUS_URL", agent.url())
        .env("NEXUS_API_KEY", &key)
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(0), "{screen}");
    assert!(screen.contains("/10 runs finished"), "{screen}");
    assert!(screen.contains('█'), "a bar: {screen}");
    assert!(screen.contains("done: 10 run(s): 10 succeeded"), "{screen}");
    assert_eq!(agent.runs().len(), 20);
    let all = agent.cli(&key, &["workflows", "backfill", "check"]);
    assert_eq!(all.code, 1, "one run failed: {all:?}");
    assert!(
        all.stdout
            .contains("done: 30 run(s): 29 succeeded, 1 failed, 0 cancelled, 0 skipped"),
        "{all:?}"
    );
    let decisions: String = agent.query(async |pool| {
        sqlx::query_scalar("SELECT decisions FROM events WHERE source = 'backfill' AND path = '/old/f00003.txt' ORDER BY seq DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert!(
        decisions.contains("by ops: pattern `/old/*.txt` matched"),
        "{decisions}"
    );
}

/// The bad inputs: an unknown workflow (404), a reader's key (403), a glob
/// outside the triggers (an empty plan, said so, exit 0), a bad glob
/// (400), a workflow without a file.created trigger, a paused workflow
/// (409).
#[test]
fn bad_backfills_are_refused_or_have_nothing_to_do() {
    let agent = agent_with_old_files(Backend::Sqlite, 3, |_| "ok".into());
    let key = agent.user_key("ops", "writer");
    let reader = agent.user_key("watcher", "reader");
    apply(&agent, "check.yaml", CHECK);
    let unknown = agent.cli(&key, &["workflows", "backfill", "nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("no workflow or pipeline named `nope`"),
        "{unknown:?}"
    );
    let low = agent.cli(&reader, &["workflows", "backfill", "check"]);
    assert_eq!(low.code, 1, "{low:?}");
    assert!(low.stderr.contains("this needs the writer role"), "{low:?}");
    let outside = agent.cli(
        &key,
        &["workflows", "backfill", "check", "--path", "/elsewhere/**"],
    );
    assert_eq!(outside.code, 0, "{outside:?}");
    assert_eq!(
        outside.stdout,
        "nothing to do: no file in the data dir matches both `check`'s file.created triggers and `/elsewhere/**`\n"
    );
    let bad = agent.cli(
        &key,
        &["workflows", "backfill", "check", "--path", "/old/[*"],
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("`path`"), "{bad:?}");
    let none = agent.cli(&key, &["workflows", "backfill", "elsewhere", "--dry-run"]);
    assert_eq!(none.code, 0, "{none:?}");
    assert!(none.stdout.starts_with("nothing to do"), "{none:?}");
    let paused = agent.cli(&key, &["workflows", "pause", "check"]);
    assert_eq!(paused.code, 0, "{paused:?}");
    let refused = agent.cli(&key, &["workflows", "backfill", "check"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("workflow `check` is paused: resume it, then backfill"),
        "{refused:?}"
    );
    assert!(agent.runs().is_empty(), "nothing was started");
}
