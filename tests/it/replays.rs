//! Replays (issue 15): `nexusd events replay`, a recorded event matched
//! again against today's definitions, against the real binary on both
//! backends.

use std::fs;

use serde_json::Value;

use crate::agent::{Agent, Backend};
use crate::support::nexusd;

const CSV: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: csv}\nspec:\n  on: [{event: file.created, pattern: /in/*.csv}]\n  steps: [{name: note, action: log, with: {message: '{{event.path}}'}}]\n";
const TXT: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: txt}\nspec:\n  on: [{event: file.created, pattern: /in/*.txt}]\n  steps: [{name: note, action: log, with: {message: '{{event.path}}'}}]\n";

/// `(workflow, matched, sees, reason)` of each result, by workflow.
fn lines(results: &Value) -> Vec<(String, bool, Value, String)> {
    let mut out: Vec<_> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["workflow"].as_str().unwrap().to_owned(),
                r["matched"].as_bool().unwrap(),
                r["sees"].clone(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn event_id(agent: &Agent, path: &str) -> String {
    let path = path.to_owned();
    agent.query(async move |pool| {
        sqlx::query_scalar("SELECT id FROM events WHERE path = $1 ORDER BY seq LIMIT 1")
            .bind(path)
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

/// A dry run says what `test-match` says of the same event and the same
/// definitions, and starts nothing; it follows today's definitions; a
/// replay takes the event in again (source `api`, the user its actor) and
/// its runs run. An unknown event and a reader's key are refused.
fn replaying_an_event(backend: Backend) {
    let agent = Agent::start_on(backend, &[("csv.yaml", CSV), ("txt.yaml", TXT)], &[]);
    let key = agent.user_key("ops", "writer");
    let reader = agent.user_key("watcher", "reader");
    agent.write("/in/a.csv", "a");
    agent.wait_runs("csv", 1);
    let id = event_id(&agent, "/in/a.csv");
    let dry = agent.cli(&key, &["events", "replay", &id, "--dry-run", "-o", "json"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let dry: Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(dry[0]["replayed_as"], Value::Null);
    let offline = nexusd(&[
        "test-match",
        "-f",
        agent.config.to_str().unwrap(),
        "--event",
        "file.created",
        "--path",
        "/in/a.csv",
        "-o",
        "json",
    ]);
    assert_eq!(offline.code, 0, "{offline:?}");
    let offline: Value = serde_json::from_str(&offline.stdout).unwrap();
    assert_eq!(lines(&dry[0]["results"]), lines(&offline["results"]));
    // The API's test-match (what the dashboard's Why page asks) agrees.
    let (status, online) =
        agent.get_json(&reader, "/v1/test-match?event=file.created&path=/in/a.csv");
    assert_eq!(status, 200, "{online}");
    assert_eq!(lines(&online["results"]), lines(&offline["results"]));
    for bad in [
        "/v1/test-match?event=file.changed&path=/in/a.csv",
        "/v1/test-match?event=file.moved&path=/in/a.csv",
        "/v1/test-match?event=file.created&path=/in/a.csv&old_path=/x",
    ] {
        let (status, body) = agent.get_json(&reader, bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(agent.runs().len(), 1, "a dry run starts nothing");
    // Today's definitions: `txt` takes csv files too now.
    let wider = agent.data.parent().unwrap().join("txt-wider.yaml");
    fs::write(
        &wider,
        TXT.replace("pattern: /in/*.txt", "pattern: [/in/*.txt, /in/*.csv]"),
    )
    .unwrap();
    let admin = agent.user_key("boss", "admin");
    let applied = agent.cli(&admin, &["apply", "-f", wider.to_str().unwrap()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let denied = agent.cli(&reader, &["events", "replay", &id]);
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(denied.stderr.contains("not allowed"), "{denied:?}");
    let done = agent.cli(&key, &["events", "replay", &id, "-o", "json"]);
    assert_eq!(done.code, 0, "{done:?}");
    let done: Value = serde_json::from_str(&done.stdout).unwrap();
    let new_event = done[0]["replayed_as"].as_str().unwrap().to_owned();
    let results = done[0]["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .all(|r| r["matched"] == true && r["run"].is_string()),
        "both run now: {done}"
    );
    agent.wait_runs("txt", 1);
    agent.wait_runs("csv", 2);
    let (source, actor): (String, Option<String>) = agent.query(async move |pool| {
        sqlx::query_as("SELECT source, actor FROM events WHERE id = $1")
            .bind(new_event)
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert_eq!((source.as_str(), actor.as_deref()), ("api", Some("ops")));
    let table = agent.cli(&key, &["events", "replay", &id, "--dry-run"]);
    assert!(
        table.stdout.contains("(dry run: nothing started)"),
        "{table:?}"
    );
    assert!(
        table
            .stdout
            .contains("csv       run       pattern `/in/*.csv` matched"),
        "{table:?}"
    );
    let unknown = agent.cli(&key, &["events", "replay", "evt_nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no event `evt_nope`"),
        "{unknown:?}"
    );
}
on_both!(
    an_event_replayed_matches_todays_definitions,
    replaying_an_event
);
