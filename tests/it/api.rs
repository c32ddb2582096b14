//! The HTTP API, its keys and roles, and the CLI client, end to end against
//! the real binary and a real database.

use std::fs;

use serde_json::Value;

use crate::agent::{Agent, Backend, block_on};
use crate::support::repo;

/// One request with an optional key; returns the status and the body.
pub fn http(method: &str, url: &str, key: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse().unwrap(), url).body(body);
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    })
}

/// One series' value in Prometheus text; 0 when it is not there yet.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const WORKFLOW_A: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata:
  name: a
  description: first
spec:
  on:
    - event: file.created
      pattern: /in/*.txt
  steps:
    - name: copy
      action: file.copy
      with:
        from: "{{event.path}}"
        to: "/out/{{event.name}}"
"#;

const WORKFLOW_B: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata:
  name: b
spec:
  on:
    - event: file.created
      pattern: /b/*.txt
  steps:
    - name: note
      action: log
      with:
        message: "{{event.path}}"
"#;

/// The seed tutorial's session, as a user types it: a user and a key,
/// `apply -f workflows.example`, `write`, `history`, `pause`, `write`
/// (skipped), `resume`, `stats`; the pause survives a restart.
fn tutorial_session(backend: Backend) {
    let mut agent = Agent::start_on(backend, &[], &[]);
    let key = agent.user_key("alice", "admin");
    assert!(key.starts_with("nxk_"), "{key}");
    let examples = repo().join("workflows.example");
    let applied = agent.cli(&key, &["apply", "-f", examples.to_str().unwrap()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let mut lines: Vec<&str> = applied.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "pipeline/document-processor created",
            "workflow/backup-important created",
            "workflow/document-analysis created",
            "workflow/safe-processor created",
            "workflow/text-processor created",
        ]
    );

    let wrote = agent.cli_in(
        &key,
        &agent.data,
        &["write", "/workspace/uploads/report.txt", "--input", "-"],
        b"one two three four",
    );
    assert_eq!(wrote.code, 0, "{wrote:?}");
    assert_eq!(
        wrote.stdout.trim(),
        "wrote /workspace/uploads/report.txt (18 bytes)"
    );
    let summary = agent.wait_file("/workspace/uploads/report_summary.txt");
    assert!(summary.contains("Words: 4"), "{summary}");
    agent.wait_runs("text-processor", 1);

    let history = agent.cli(&key, &["workflows", "history", "text-processor"]);
    assert_eq!(history.code, 0, "{history:?}");
    let rows: Vec<&str> = history.stdout.lines().collect();
    assert!(rows[0].starts_with("TIMESTAMP"), "{}", history.stdout);
    assert!(rows[0].contains("FILE") && rows[0].contains("DURATION") && rows[0].contains("STATUS"));
    assert!(
        rows[1].contains("/workspace/uploads/report.txt") && rows[1].contains("succeeded"),
        "{}",
        history.stdout
    );
    assert!(
        rows.iter().all(|r| r.chars().count() <= 80),
        "{}",
        history.stdout
    );

    let paused = agent.cli(&key, &["workflows", "pause", "text-processor"]);
    assert_eq!(
        paused.stdout.trim(),
        "workflow/text-processor paused",
        "{paused:?}"
    );
    agent.write("/workspace/uploads/later.txt", "five six");
    agent.wait_until("the skipped run", || {
        agent.runs().iter().any(|r| {
            r.path == "/workspace/uploads/later.txt"
                && r.status == "skipped"
                && r.reason.as_deref() == Some("paused")
        })
    });
    assert!(!agent.path("/workspace/uploads/later_summary.txt").exists());

    let resumed = agent.cli(&key, &["workflows", "resume", "text-processor"]);
    assert_eq!(
        resumed.stdout.trim(),
        "workflow/text-processor resumed",
        "{resumed:?}"
    );
    let stats = agent.cli(&key, &["workflows", "stats", "text-processor"]);
    assert_eq!(stats.code, 0, "{stats:?}");
    for line in [
        "total:            2",
        "succeeded:        1",
        "skipped:          1",
        "success_rate:     100.0%",
    ] {
        assert!(stats.stdout.contains(line), "{line} in\n{}", stats.stdout);
    }
    let stats = json(
        &agent
            .cli(
                &key,
                &["workflows", "stats", "text-processor", "-o", "json"],
            )
            .stdout,
    );
    assert_eq!(stats["total"], 2);
    assert!(stats["p95_duration_ms"].is_i64(), "{stats}");

    // A pause survives a restart and a re-apply.
    agent.cli(&key, &["workflows", "pause", "text-processor"]);
    agent.stop();
    agent.spawn(&[]);
    let again = agent.cli(&key, &["apply", "-f", examples.to_str().unwrap()]);
    assert!(
        again.stdout.contains("workflow/text-processor unchanged"),
        "{again:?}"
    );
    let list = json(&agent.cli(&key, &["workflows", "list", "-o", "json"]).stdout);
    let tp = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "text-processor")
        .unwrap();
    assert_eq!(tp["status"], "paused", "{tp}");
    agent.write("/workspace/uploads/third.txt", "x");
    agent.wait_until("the second skipped run", || {
        agent
            .runs()
            .iter()
            .any(|r| r.path == "/workspace/uploads/third.txt" && r.status == "skipped")
    });
}
on_both!(tutorial, tutorial_session);

/// `apply` is all or nothing and says what it did per object; `--dry-run`
/// changes nothing; `--prune` removes what left the source; `diff` exits 1
/// on drift; revisions can be read and rolled back to.
fn gitops_session(backend: Backend) {
    let agent = Agent::start_on(backend, &[], &[]);
    let key = agent.user_key("ci", "admin");
    let repo_dir = tempfile::tempdir().unwrap();
    let defs = repo_dir.path().join("defs");
    fs::create_dir_all(&defs).unwrap();
    fs::write(defs.join("a.yaml"), WORKFLOW_A).unwrap();
    fs::write(defs.join("b.yaml"), WORKFLOW_B).unwrap();
    let cli = |args: &[&str]| agent.cli_in(&key, repo_dir.path(), args, b"");
    let revision = |name: &str| -> i64 {
        let got = cli(&["workflows", "get", name, "-o", "json"]);
        assert_eq!(got.code, 0, "{got:?}");
        json(&got.stdout)["revision"].as_i64().unwrap()
    };

    let first = cli(&["apply", "-f", "defs"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout, "workflow/a created\nworkflow/b created\n");
    let second = cli(&["apply", "-f", "defs"]);
    assert_eq!(
        second.stdout,
        "workflow/a unchanged\nworkflow/b unchanged\n"
    );
    assert_eq!(revision("a"), 1);
    let same = cli(&["diff", "-f", "defs"]);
    assert_eq!((same.code, same.stdout.as_str()), (0, ""), "{same:?}");

    // A change, tried first.
    fs::write(defs.join("a.yaml"), WORKFLOW_A.replace("first", "second")).unwrap();
    let dry = cli(&["apply", "-f", "defs", "--dry-run"]);
    assert!(
        dry.stdout.contains("workflow/a configured (dry run)"),
        "{dry:?}"
    );
    assert_eq!(revision("a"), 1);
    let drift = cli(&["diff", "-f", "defs"]);
    assert_eq!(drift.code, 1, "{drift:?}");
    assert!(
        drift.stdout.contains("-  description: first"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("+  description: second"),
        "{}",
        drift.stdout
    );

    // One bad document refuses the whole set, naming file, line and column.
    fs::write(
        defs.join("b.yaml"),
        WORKFLOW_B.replace("file.created", "file.create"),
    )
    .unwrap();
    let refused = cli(&["apply", "-f", "defs"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("defs/b.yaml:8:14"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing was applied"),
        "{}",
        refused.stderr
    );
    assert_eq!(revision("a"), 1);
    // The server refuses it too, with positions, when sent directly.
    let (status, body) = http(
        "POST",
        &format!("{}/v1/apply", agent.url()),
        Some(&key),
        WORKFLOW_B
            .replace("file.created", "file.create")
            .into_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    let err = json(&body);
    assert_eq!(err["error"]["code"], "invalid");
    assert_eq!(err["error"]["diagnostics"][0]["line"], 8, "{body}");
    assert_eq!(revision("b"), 1);
    // As the CLI sends them: files as JSON, each error at its own file.
    let send_json = |body: &str| {
        block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("{}/v1/apply", agent.url()))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    };
    let files = serde_json::json!([
        {"file": "ok.yaml", "text": WORKFLOW_A},
        {"file": "team/bad.yaml", "text": WORKFLOW_B.replace("file.created", "file.create")},
    ]);
    let (status, body) = send_json(&files.to_string());
    assert_eq!(status, 422, "{body}");
    let d = &json(&body)["error"]["diagnostics"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_i64(), d["column"].as_i64()),
        (Some("team/bad.yaml"), Some(8), Some(14)),
        "{body}"
    );
    let (status, body) = send_json(r#"[{"file": "a.yaml"}]"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expected a list of"), "{body}");
    let (status, body) = send_json("[]");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("no definition files"), "{body}");
    assert_eq!(revision("b"), 1);

    fs::write(defs.join("b.yaml"), WORKFLOW_B).unwrap();
    let applied = cli(&["apply", "-f", "defs"]);
    assert_eq!(
        applied.stdout, "workflow/a configured\nworkflow/b unchanged\n",
        "{applied:?}"
    );
    assert_eq!(revision("a"), 2);

    // Prune removes what left this source, and nothing else.
    fs::write(
        repo_dir.path().join("other.yaml"),
        WORKFLOW_B.replace("name: b", "name: c"),
    )
    .unwrap();
    assert_eq!(
        cli(&["apply", "-f", "other.yaml"]).stdout,
        "workflow/c created\n"
    );
    fs::remove_file(defs.join("b.yaml")).unwrap();
    let pruned = cli(&["apply", "-f", "defs", "--prune"]);
    assert_eq!(
        pruned.stdout, "workflow/a unchanged\nworkflow/b pruned\n",
        "{pruned:?}"
    );
    let names: Vec<String> = json(&cli(&["workflows", "list", "-o", "json"]).stdout)["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "c"]);

    // Old revisions stay readable, and can be applied again.
    let old = cli(&["workflows", "get", "a", "--revision", "1"]);
    assert!(old.stdout.contains("description: first"), "{old:?}");
    let back = cli(&["workflows", "rollback", "a", "1"]);
    assert_eq!(back.stdout, "workflow/a configured\n", "{back:?}");
    let now = json(&cli(&["workflows", "get", "a", "-o", "json"]).stdout);
    assert_eq!(now["revision"], 3);
    assert_eq!(now["description"], "first");
    let missing = cli(&["workflows", "get", "a", "--revision", "9"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("`a` has no revision 9"),
        "{missing:?}"
    );

    // The rolled-back workflow runs.
    agent.write("/in/x.txt", "x");
    agent.wait_file("/out/x.txt");
    let deleted = cli(&["workflows", "delete", "c"]);
    assert_eq!(deleted.stdout, "workflow/c deleted\n", "{deleted:?}");
}
on_both!(gitops, gitops_session);

/// The config dir applies through the same path: each change is a revision
/// with the directory as its source.
#[test]
fn the_config_dir_applies_as_a_source_with_revisions() {
    let agent = Agent::start(&[("a.yaml", WORKFLOW_A)], &[]);
    let key = agent.user_key("ops", "reader");
    let get = || {
        json(
            &agent
                .cli(&key, &["workflows", "get", "a", "-o", "json"])
                .stdout,
        )
    };
    let first = get();
    assert_eq!(first["revision"], 1);
    assert!(
        first["source"].as_str().unwrap().starts_with("dir:"),
        "{first}"
    );
    assert_eq!(first["applied_by"], "config-dir");
    fs::write(
        agent.config.join("a.yaml"),
        WORKFLOW_A.replace("first", "second"),
    )
    .unwrap();
    agent.wait_until("the reload", || get()["revision"] == 2);
    assert_eq!(get()["description"], "second");
    // The reader may read, not apply.
    let refused = agent.cli(&key, &["apply", "-f", agent.config.to_str().unwrap()]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("needs the admin role"),
        "{refused:?}"
    );
}

/// Every route with every kind of caller: the status of each cell.
#[test]
fn the_role_matrix_holds_for_every_route() {
    let agent = Agent::start(&[("a.yaml", WORKFLOW_A)], &[]);
    agent.write("/in/seed.txt", "s");
    agent.wait_file("/out/seed.txt");
    let admin = agent.user_key("root", "admin");
    let writer = agent.user_key("wendy", "writer");
    let reader = agent.user_key("rita", "reader");
    let revoked = agent.user_key("rob", "reader");
    let revoke = agent.admin(&["revoke-key", &revoked]);
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let wrong = format!("{}0", &reader[..reader.len() - 1]);
    let wrong = if wrong == reader {
        format!("{}1", &reader[..reader.len() - 1])
    } else {
        wrong
    };
    let run_id = agent.runs()[0].id.clone();

    // (method, path, body, least role, status when allowed)
    let apply_body = WORKFLOW_A.to_owned();
    let routes: Vec<(&str, String, String, &str, u16)> = vec![
        ("GET", "/health".into(), String::new(), "public", 200),
        ("GET", "/v1/workflows".into(), String::new(), "reader", 200),
        (
            "GET",
            "/v1/workflows/a".into(),
            String::new(),
            "reader",
            200,
        ),
        (
            "GET",
            "/v1/workflows/a/runs".into(),
            String::new(),
            "reader",
            200,
        ),
        (
            "GET",
            "/v1/workflows/a/stats".into(),
            String::new(),
            "reader",
            200,
        ),
        (
            "GET",
            "/v1/workflows/a/errors".into(),
            String::new(),
            "reader",
            200,
        ),
        ("GET", "/v1/runs".into(), String::new(), "reader", 200),
        (
            "GET",
            format!("/v1/runs/{run_id}"),
            String::new(),
            "reader",
            200,
        ),
        (
            "GET",
            "/v1/files/in/seed.txt".into(),
            String::new(),
            "reader",
            200,
        ),
        ("GET", "/v1/files".into(), String::new(), "reader", 200),
        ("POST", "/v1/diff".into(), apply_body.clone(), "reader", 200),
        (
            "PUT",
            "/v1/files/m/ROLE.txt".into(),
            "x".into(),
            "writer",
            201,
        ),
        (
            "POST",
            "/v1/files/m/ROLE.log:append".into(),
            "x".into(),
            "writer",
            200,
        ),
        (
            "DELETE",
            "/v1/files/m/ROLE-missing.txt".into(),
            String::new(),
            "writer",
            404,
        ),
        (
            "POST",
            "/v1/workflows/a/pause".into(),
            String::new(),
            "writer",
            200,
        ),
        (
            "POST",
            "/v1/workflows/a/resume".into(),
            String::new(),
            "writer",
            200,
        ),
        (
            "POST",
            "/v1/workflows/a/trigger".into(),
            r#"{"path":"/in/seed.txt"}"#.into(),
            "writer",
            202,
        ),
        ("POST", "/v1/apply".into(), apply_body.clone(), "admin", 200),
        (
            "POST",
            "/v1/workflows/a/rollback?revision=1".into(),
            String::new(),
            "admin",
            200,
        ),
        (
            "DELETE",
            "/v1/workflows/missing".into(),
            String::new(),
            "admin",
            404,
        ),
    ];
    let callers: Vec<(&str, Option<&str>, u8)> = vec![
        ("no key", None, 0),
        ("wrong key", Some(&wrong), 0),
        ("revoked key", Some(&revoked), 0),
        ("not a key", Some("hunter2"), 0),
        ("reader", Some(&reader), 1),
        ("writer", Some(&writer), 2),
        ("admin", Some(&admin), 3),
    ];
    let level = |role: &str| match role {
        "public" => 0,
        "reader" => 1,
        "writer" => 2,
        _ => 3,
    };
    let mut wrong_cells = Vec::new();
    for (who, key, rank) in &callers {
        for (method, path, body, role, ok) in &routes {
            let path = path.replace("ROLE", &who.replace(' ', "-"));
            let expected = if level(role) == 0 {
                *ok
            } else if *rank == 0 {
                401
            } else if *rank < level(role) {
                403
            } else {
                *ok
            };
            let (status, text) = http(
                method,
                &format!("{}{path}", agent.url()),
                *key,
                body.clone().into_bytes(),
            );
            if status != expected {
                wrong_cells.push(format!(
                    "{who:>11} {method} {path}: {status}, expected {expected}: {text}"
                ));
            }
            if status >= 400 {
                let v = json(&text);
                assert!(
                    v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                    "{text}"
                );
            }
        }
    }
    assert!(
        wrong_cells.is_empty(),
        "cells that differ:\n{}",
        wrong_cells.join("\n")
    );
    // Keys are never taken from the query string.
    let (status, _) = http(
        "GET",
        &format!("{}/v1/workflows?api_key={admin}", agent.url()),
        None,
        Vec::new(),
    );
    assert_eq!(status, 401);
}

/// Malformed requests at every route: a 4xx with the error shape, never a 5xx.
#[test]
fn malformed_requests_get_4xx_never_5xx() {
    let agent = Agent::start(&[("a.yaml", WORKFLOW_A)], &[]);
    let key = agent.user_key("root", "admin");
    let url = agent.url();
    let long = "x".repeat(10_000);
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    let laughs = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
    let bodies: Vec<Vec<u8>> = vec![
        b"{{{".to_vec(),
        b"\x00\xff\xfe".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{\"path\": 7}".to_vec(),
        b"{\"path\": \"/in/seed.txt\", \"extra\": 1}".to_vec(),
        deep.into_bytes(),
        laughs.as_bytes().to_vec(),
        b"apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: a}\nspec: {on: [], steps: []}\nx: 1\nx: 2\n".to_vec(),
    ];
    let cases: Vec<(&str, String)> = vec![
        ("POST", "/v1/apply".into()),
        ("POST", "/v1/apply?dry_run=maybe".into()),
        ("POST", "/v1/apply?unknown=1".into()),
        ("POST", "/v1/diff?prune=2".into()),
        ("GET", "/v1/workflows/a/runs?limit=abc".into()),
        ("GET", "/v1/workflows/a/runs?limit=-1".into()),
        (
            "GET",
            "/v1/workflows/a/runs?limit=99999999999999999999999".into(),
        ),
        ("GET", "/v1/workflows/a/runs?status=bogus".into()),
        ("GET", "/v1/runs?status=%ff".into()),
        ("GET", "/v1/runs?workflow=a&workflow=b".into()),
        ("GET", "/v1/workflows/a/errors?limit=0".into()),
        ("GET", format!("/v1/workflows/{long}")),
        ("GET", "/v1/workflows/%ff%fe".into()),
        ("GET", "/v1/workflows/a?revision=x".into()),
        ("POST", "/v1/workflows/a/rollback".into()),
        ("POST", "/v1/workflows/a/rollback?revision=99".into()),
        ("POST", "/v1/workflows/a/trigger".into()),
        ("POST", "/v1/workflows/a/trigger?path=relative".into()),
        ("POST", "/v1/workflows/nope/pause".into()),
        ("GET", "/v1/runs/%00".into()),
        ("GET", "/v1/files/%2e%2e/%2e%2e/etc/passwd".into()),
        ("GET", "/v1/files/in%2Fseed.txt".into()),
        ("PUT", "/v1/files/.nexus/nexus.db".into()),
        ("PUT", "/v1/files/in/a%00b".into()),
        ("POST", "/v1/files/in/seed.txt".into()),
        ("DELETE", "/v1/files/in".into()),
        ("PATCH", "/v1/workflows/a".into()),
        ("GET", "/v1/nowhere".into()),
    ];
    let mut five_hundreds = Vec::new();
    for (method, path) in &cases {
        for body in &bodies {
            let (status, text) = http(method, &format!("{url}{path}"), Some(&key), body.clone());
            if status >= 500 {
                five_hundreds.push(format!("{method} {path}: {status} {text}"));
            }
            if status >= 400 {
                let v = json(&text);
                assert!(v["error"]["code"].is_string(), "{method} {path}: {text}");
            }
        }
    }
    assert!(five_hundreds.is_empty(), "{}", five_hundreds.join("\n"));
    // Over the size limit: 413.
    let big = vec![b'a'; 17 * 1024 * 1024];
    let (status, text) = http(
        "PUT",
        &format!("{url}/v1/files/big.bin"),
        Some(&key),
        big.clone(),
    );
    assert_eq!(status, 413, "{text}");
    assert_eq!(json(&text)["error"]["code"], "payload_too_large");
    let (status, _) = http("POST", &format!("{url}/v1/apply"), Some(&key), big);
    assert_eq!(status, 413);
    // The live set is untouched by all of it.
    let list = json(
        &http(
            "GET",
            &format!("{url}/v1/workflows"),
            Some(&key),
            Vec::new(),
        )
        .1,
    );
    assert_eq!(list["workflows"][0]["name"], "a");
    assert_eq!(list["workflows"][0]["revision"], 1, "{list}");
}

/// The file API: writes trigger workflows and record who made them; paths
/// are confined to the data dir.
fn file_api(backend: Backend) {
    let agent = Agent::start_on(backend, &[("a.yaml", WORKFLOW_A)], &[]);
    let key = agent.user_key("wendy", "writer");
    let url = agent.url();
    let (status, body) = http(
        "PUT",
        &format!("{url}/v1/files/in/doc.txt"),
        Some(&key),
        b"hello".to_vec(),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(agent.wait_file("/out/doc.txt"), "hello");
    let run = agent.wait_runs("a", 1).remove(0);
    let shown = agent.cli(&key, &["runs", "get", &run.id, "-o", "json"]);
    let shown = json(&shown.stdout);
    assert_eq!(shown["event"]["actor"], "wendy", "{shown}");
    assert_eq!(shown["steps"][0]["name"], "copy");
    let (status, body) = http(
        "PUT",
        &format!("{url}/v1/files/in/doc.txt"),
        Some(&key),
        b"again".to_vec(),
    );
    assert_eq!(status, 200, "{body}");

    let cat = agent.cli(&key, &["cat", "/out/doc.txt"]);
    assert_eq!((cat.code, cat.stdout.as_str()), (0, "hello"));
    let (status, _) = http(
        "POST",
        &format!("{url}/v1/files/logs/app.log:append"),
        Some(&key),
        b"one\n".to_vec(),
    );
    assert_eq!(status, 200);
    http(
        "POST",
        &format!("{url}/v1/files/logs/app.log:append"),
        Some(&key),
        b"two\n".to_vec(),
    );
    assert_eq!(
        fs::read_to_string(agent.path("/logs/app.log")).unwrap(),
        "one\ntwo\n"
    );
    let ls = agent.cli(&key, &["ls", "/logs"]);
    assert!(
        ls.stdout.lines().nth(1).unwrap().ends_with("app.log"),
        "{ls:?}"
    );
    let rm = agent.cli(&key, &["rm", "/logs/app.log"]);
    assert_eq!(rm.stdout.trim(), "deleted /logs/app.log", "{rm:?}");
    assert!(!agent.path("/logs/app.log").exists());
    let gone = agent.cli(&key, &["rm", "/logs/app.log"]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("no such file"), "{gone:?}");

    // Escapes: encoded `..`, encoded `/`, the state dir, a symlink out.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), agent.path("/out-link")).unwrap();
    for (method, path) in [
        ("GET", "/v1/files/%2e%2e/%2e%2e/etc/passwd"),
        ("GET", "/v1/files/in%2Fdoc.txt"),
        ("PUT", "/v1/files/.nexus/evil"),
        ("PUT", "/v1/files/out-link/pwned.txt"),
        ("GET", "/v1/files//etc/passwd"),
    ] {
        let (status, body) = http(method, &format!("{url}{path}"), Some(&key), b"x".to_vec());
        assert!(
            status == 400 || status == 404,
            "{method} {path}: {status} {body}"
        );
    }
    assert!(!outside.path().join("pwned.txt").exists());
    assert!(!agent.path("/.nexus/evil").exists());
}
on_both!(
    the_file_api_writes_atomically_confined_and_attributed,
    file_api
);

/// `trigger` runs a workflow for a file now, recorded with the user.
fn trigger(backend: Backend) {
    let agent = Agent::start_on(
        backend,
        &[("a.yaml", WORKFLOW_A), ("b.yaml", WORKFLOW_B)],
        &[],
    );
    let key = agent.user_key("wendy", "writer");
    agent.write("/elsewhere/f.txt", "f");
    agent.barrier();
    let out = agent.cli(
        &key,
        &["workflows", "trigger", "a", "--path", "/elsewhere/f.txt"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("run/run_") && out.stdout.trim().ends_with("queued"),
        "{out:?}"
    );
    assert_eq!(agent.wait_file("/out/f.txt"), "f");
    let missing = agent.cli(&key, &["workflows", "trigger", "a", "--path", "/nope.txt"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no file at `/nope.txt`"),
        "{missing:?}"
    );
    let unknown = agent.cli(
        &key,
        &["workflows", "trigger", "zzz", "--path", "/elsewhere/f.txt"],
    );
    assert!(
        unknown
            .stderr
            .contains("no workflow or pipeline named `zzz`"),
        "{unknown:?}"
    );
    let runs = agent.cli(&key, &["runs", "list", "--workflow", "a", "-o", "json"]);
    let runs = json(&runs.stdout);
    assert_eq!(runs["runs"][0]["event"]["path"], "/elsewhere/f.txt");
    let run = agent.cli(
        &key,
        &[
            "runs",
            "get",
            runs["runs"][0]["id"].as_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(json(&run.stdout)["event"]["actor"], "wendy");
}
on_both!(trigger_runs_a_workflow_for_a_file, trigger);

/// Client errors: one clear line and exit 1; usage errors exit 2.
#[test]
fn client_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::nexusd_env(
        dir.path(),
        &["workflows", "list"],
        b"",
        &[
            ("NEXUS_URL", "http://127.0.0.1:9"),
            ("NEXUS_API_KEY", "nxk_x"),
        ],
    );
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        "error: cannot reach nexusd at http://127.0.0.1:9: connection refused or host unreachable"
    );
    let usage = crate::support::nexusd_env(dir.path(), &["workflows", "frobnicate"], b"", &[]);
    assert_eq!(usage.code, 2);
    let agent = Agent::start(&[], &[]);
    let refused = agent.cli(
        "nxk_0123456789abcdef_000000000000000000000000000000000000000000000000",
        &["workflows", "list"],
    );
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.stderr.trim(),
        "error: the API key was refused: the API key is not valid (set --api-key or NEXUS_API_KEY)"
    );
    let no_user = agent.admin(&["create-user-key", "ghost"]);
    assert_eq!(no_user.code, 1);
    assert!(no_user.stderr.contains("no user `ghost`"), "{no_user:?}");
    let twice = agent.admin(&["create-user", "ann"]);
    assert_eq!(twice.code, 0);
    let twice = agent.admin(&["create-user", "ann"]);
    assert!(
        twice.stderr.contains("user `ann` already exists"),
        "{twice:?}"
    );
    let bad_role = agent.admin(&["create-user", "bob", "--role", "root"]);
    assert_eq!(bad_role.code, 2);
}

/// The decision log: per event, what each workflow near it decided and why.
fn decision_log_scenario(backend: Backend) {
    let ignoring = WORKFLOW_A.replace(
        "      pattern: /in/*.txt",
        "      pattern: /in/*.txt\n      ignore: [\"/in/skip-*.txt\"]",
    );
    let updates = WORKFLOW_B
        .replace("name: b", "name: on-update")
        .replace("file.created", "file.updated")
        .replace("/b/*.txt", "/in/*.txt");
    let paused = WORKFLOW_B
        .replace("name: b", "name: quiet")
        .replace("/b/*.txt", "/in/*.txt");
    let downstream = WORKFLOW_B
        .replace("name: b", "name: downstream")
        .replace("/b/*.txt", "/out/*.txt");
    let agent = Agent::start_on(
        backend,
        &[
            ("a.yaml", &ignoring),
            ("u.yaml", &updates),
            ("q.yaml", &paused),
            ("d.yaml", &downstream),
        ],
        &[],
    );
    let key = agent.user_key("ops", "writer");
    assert_eq!(agent.cli(&key, &["workflows", "pause", "quiet"]).code, 0);
    agent.write("/in/x.txt", "x");
    agent.write("/in/skip-1.txt", "s");
    agent.write("/other.bin", "o");
    agent.wait_runs("downstream", 1);
    agent.barrier();

    let log = agent.cli(&key, &["events", "list", "--path", "/in/x.txt"]);
    assert_eq!(log.code, 0, "{log:?}");
    let text = log.stdout;
    assert!(text.contains("file.created  /in/x.txt"), "{text}");
    let a_run = agent
        .runs()
        .into_iter()
        .find(|r| r.workflow == "a")
        .unwrap()
        .id;
    assert!(
        text.contains(&format!("    a: run {a_run} succeeded")),
        "{text}"
    );
    assert!(
        text.contains(
            "    on-update: not run: event type file.created not listed (triggers on file.updated)"
        ),
        "{text}"
    );
    assert!(
        text.contains("    quiet: run run_") && text.contains(" skipped (paused)"),
        "{text}"
    );

    let skip = agent
        .cli(&key, &["events", "list", "--path", "/in/skip-1.txt"])
        .stdout;
    assert!(
        skip.contains("    a: not run: ignored by `/in/skip-*.txt`"),
        "{skip}"
    );
    let other = agent
        .cli(&key, &["events", "list", "--path", "/other.bin"])
        .stdout;
    assert!(
        other.contains("    no workflow's patterns match this path"),
        "{other}"
    );

    // A run started by another run's write names it.
    let down = agent
        .runs()
        .into_iter()
        .find(|r| r.workflow == "downstream")
        .unwrap();
    let shown = agent.cli(&key, &["runs", "get", &down.id]).stdout;
    assert!(
        shown.contains(&format!("caused by: run {a_run}")),
        "{shown}"
    );
    let since = json(
        &agent
            .cli(&key, &["events", "list", "--since", "1h", "-o", "json"])
            .stdout,
    );
    assert!(since["events"].as_array().unwrap().len() >= 4, "{since}");
    let bad = agent.cli(&key, &["events", "list", "--since", "yesterday-ish"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("bad `since`"), "{bad:?}");
}
on_both!(decision_log, decision_log_scenario);

/// `nexusd runs list --follow -o json` against the agent: the process, and
/// its lines as they come.
fn follow_runs(
    agent: &Agent,
    key: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nexusd"))
        .args(["runs", "list", "--follow", "-o", "json"])
        .env("NEXUS_URL", agent.url())
        .env("NEXUS_API_KEY", key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `runs list --follow` prints runs as they change, from the server's stream.
#[test]
fn runs_follow_streams_run_changes() {
    let mut agent = Agent::start(&[("a.yaml", WORKFLOW_A)], &[]);
    let key = agent.user_key("ops", "reader");
    let (mut child, rx) = follow_runs(&agent, &key);
    // The stream may open in the middle of a run: probes are written until
    // one run's whole life (queued, running, succeeded) came through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let whole = |statuses: &Vec<String>| statuses[..] == ["queued", "running", "succeeded"];
    let mut n = 0;
    while !seen.values().any(whole) {
        assert!(
            std::time::Instant::now() < deadline,
            "no run streamed from queued to succeeded; saw {seen:?}"
        );
        n += 1;
        agent.write(&format!("/in/f{n}.txt"), "x");
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(300)) {
            let change = json(&line);
            assert_eq!(change["workflow"], "a", "{line}");
            let path = change["path"].as_str().unwrap();
            assert!(path.starts_with("/in/f"), "{line}");
            seen.entry(path.to_owned())
                .or_default()
                .push(change["status"].as_str().unwrap().to_owned());
        }
    }
    // An open stream does not hold up a shutdown; the follower then ends.
    assert!(agent.stop().success());
    let ended = child.wait().unwrap();
    assert!(ended.success(), "{ended:?}");
}

/// A run started by `workflows trigger` enters the engine the way a watched
/// file's does: its queued state is streamed, its event and states are
/// counted, and its decision log entry has a watched event's shape.
fn trigger_intake_scenario(backend: Backend) {
    let mut agent = Agent::start_on(backend, &[("b.yaml", WORKFLOW_B)], &[]);
    let key = agent.user_key("wendy", "writer");
    agent.write("/b/watched.txt", "w");
    agent.write("/elsewhere/f.txt", "f");
    agent.wait_runs("b", 1);
    // The file in a new directory may be recorded after a later barrier.
    agent.wait_until("the file's own event", || {
        agent
            .events()
            .iter()
            .any(|(_, p, _)| p == "/elsewhere/f.txt")
    });
    let created = "nexus_events_total{type=\"file.created\"}";
    // Counted after the commit: every recorded creation, once counted.
    let all_counted = || {
        let recorded = agent
            .events()
            .iter()
            .filter(|(t, _, _)| t == "file.created")
            .count();
        value(&agent.get_public("/metrics"), created) == recorded as f64
    };
    agent.wait_until("the recorded events to be counted", all_counted);
    let before = agent.get_public("/metrics");
    let (mut child, rx) = follow_runs(&agent, &key);
    // The stream may open after the first trigger's queued state went by:
    // triggered until one run's whole life came through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let whole = |statuses: &Vec<String>| statuses[..] == ["queued", "running", "succeeded"];
    let mut triggered: u32 = 0;
    while !seen.values().any(whole) {
        assert!(
            std::time::Instant::now() < deadline,
            "no triggered run streamed from queued to succeeded; saw {seen:?}"
        );
        let out = agent.cli(
            &key,
            &["workflows", "trigger", "b", "--path", "/elsewhere/f.txt"],
        );
        assert_eq!(out.code, 0, "{out:?}");
        triggered += 1;
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(300)) {
            let change = json(&line);
            assert_eq!(change["path"], "/elsewhere/f.txt", "{line}");
            seen.entry(change["run"].as_str().unwrap().to_owned())
                .or_default()
                .push(change["status"].as_str().unwrap().to_owned());
        }
    }
    agent.wait_runs("b", 1 + triggered as usize);
    let queued = "nexus_runs_total{workflow=\"b\",status=\"queued\"}";
    let succeeded = "nexus_runs_total{workflow=\"b\",status=\"succeeded\"}";
    agent.wait_until("the counters to count the triggered runs", || {
        let after = agent.get_public("/metrics");
        value(&after, succeeded) - value(&before, succeeded) == f64::from(triggered)
    });
    agent.wait_until("the triggered events to be counted", all_counted);
    let after = agent.get_public("/metrics");
    assert_eq!(
        value(&after, created) - value(&before, created),
        f64::from(triggered),
        "{after}\n{:?}",
        agent.events()
    );
    assert_eq!(
        value(&after, queued) - value(&before, queued),
        f64::from(triggered),
        "{after}"
    );

    let log = |path: &str| {
        let out = agent.cli(&key, &["events", "list", "--path", path, "-o", "json"]);
        assert_eq!(out.code, 0, "{out:?}");
        json(&out.stdout)["events"].as_array().unwrap().clone()
    };
    let watched = log("/b/watched.txt");
    assert_eq!(watched[0]["source"], "watch", "{watched:?}");
    let events = log("/elsewhere/f.txt");
    let api: Vec<&Value> = events.iter().filter(|e| e["source"] == "api").collect();
    assert_eq!(api.len(), triggered as usize, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["source"] == "watch" && e["actor"].is_null()),
        "{events:?}"
    );
    let keys = |d: &Value| -> Vec<String> { d.as_object().unwrap().keys().cloned().collect() };
    let watched_decision = &watched[0]["decisions"][0];
    assert_eq!(watched_decision["decision"], "run");
    assert_eq!(watched_decision["reason"], "pattern `/b/*.txt` matched");
    for e in api {
        assert_eq!(e["actor"], "wendy");
        let d = e["decisions"].as_array().unwrap();
        assert_eq!(d.len(), 1, "{e}");
        assert_eq!(keys(&d[0]), keys(watched_decision), "{e}");
        assert_eq!(d[0]["workflow"], "b");
        assert_eq!(d[0]["decision"], "run");
        assert_eq!(d[0]["reason"], "triggered through the API by wendy");
        assert_eq!(d[0]["run_status"], "succeeded");
    }
    assert!(agent.stop().success());
    assert!(child.wait().unwrap().success());
}
on_both!(
    a_triggered_run_enters_the_engine_as_a_watched_file_does,
    trigger_intake_scenario
);

/// `test-match --event file.moved --old-path A --path B` says what the agent
/// decides for the same move: the move rule is the matcher's, used by both.
#[test]
fn test_match_agrees_with_the_agent_on_a_move() {
    let log_step = "  steps: [{name: s, action: log, with: {message: x}}]\n";
    let workflow = |name: &str, events: &str, pattern: &str| {
        format!(
            "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  on: [{{event: {events}, pattern: \"{pattern}\"}}]\n{log_step}"
        )
    };
    let defs = [
        ("1.yaml", workflow("into-out", "file.created", "/out/*.txt")),
        (
            "2.yaml",
            workflow("gone-from-in", "file.deleted", "/in/*.txt"),
        ),
        ("3.yaml", workflow("moves", "[file.moved]", "/**/*.txt")),
        (
            "4.yaml",
            workflow("created-anywhere", "file.created", "/**/*.txt"),
        ),
        ("5.yaml", workflow("unrelated", "file.created", "/logs/*")),
    ];
    let refs: Vec<(&str, &str)> = defs.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let mut agent = Agent::new_on(Backend::Sqlite, &refs);
    fs::create_dir_all(agent.path("/out")).unwrap();
    agent.spawn(&[]);
    let key = agent.user_key("ops", "reader");
    agent.write("/in/a.txt", "a");
    agent.wait_runs("created-anywhere", 1);
    fs::rename(agent.path("/in/a.txt"), agent.path("/out/a.txt")).unwrap();
    agent.wait_runs("moves", 1);
    agent.wait_runs("gone-from-in", 1);
    agent.wait_runs("into-out", 1);
    agent.barrier();

    let out = agent.cli(
        &key,
        &["events", "list", "--path", "/out/a.txt", "-o", "json"],
    );
    let events = json(&out.stdout);
    let moved = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "file.moved")
        .unwrap_or_else(|| panic!("no move recorded: {events}"));
    assert_eq!(moved["old_path"], "/in/a.txt");
    let mut agent_says: Vec<(String, bool, String)> = moved["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["workflow"].as_str().unwrap().to_owned(),
                d["decision"] == "run",
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    agent_says.sort();

    let offline = crate::support::nexusd(&[
        "test-match",
        "-f",
        agent.config.to_str().unwrap(),
        "--event",
        "file.moved",
        "--old-path",
        "/in/a.txt",
        "--path",
        "/out/a.txt",
        "-o",
        "json",
    ]);
    assert_eq!(offline.code, 0, "{offline:?}");
    let report = json(&offline.stdout);
    let mut test_match_says: Vec<(String, bool, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            !r["reason"]
                .as_str()
                .unwrap()
                .starts_with("no pattern matched")
        })
        .map(|r| {
            (
                r["workflow"].as_str().unwrap().to_owned(),
                r["matched"].as_bool().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    test_match_says.sort();
    assert_eq!(agent_says, test_match_says);
    assert_eq!(
        agent_says,
        [
            (
                "created-anywhere".to_owned(),
                false,
                "event type file.moved not listed (triggers on file.created)".to_owned()
            ),
            (
                "gone-from-in".to_owned(),
                true,
                "moved out: pattern `/in/*.txt` matched the old path (seen as file.deleted)"
                    .to_owned()
            ),
            (
                "into-out".to_owned(),
                true,
                "moved in: pattern `/out/*.txt` matched the new path (seen as file.created)"
                    .to_owned()
            ),
            (
                "moves".to_owned(),
                true,
                "pattern `/**/*.txt` matched".to_owned()
            ),
        ]
    );
    let unrelated = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workflow"] == "unrelated")
        .unwrap();
    assert_eq!(
        unrelated["reason"],
        "no pattern matched (patterns: /logs/*)"
    );
    let without_old = crate::support::nexusd(&[
        "test-match",
        "-f",
        agent.config.to_str().unwrap(),
        "--event",
        "file.moved",
        "--path",
        "/out/a.txt",
    ]);
    assert_eq!(without_old.code, 1);
    assert!(
        without_old
            .stderr
            .contains("`--event file.moved` needs `--old-path`"),
        "{without_old:?}"
    );
    assert!(agent.stop().success());
}

/// `GET /metrics`: Prometheus text whose counters move with the work.
#[test]
fn metrics_count_events_runs_and_durations() {
    let agent = Agent::start(&[("a.yaml", WORKFLOW_A)], &[]);
    let scrape = || {
        let (status, text) = http("GET", &format!("{}/metrics", agent.url()), None, Vec::new());
        assert_eq!(status, 200);
        text
    };
    let before = scrape();
    assert!(before.contains("nexus_build_info{version=\""), "{before}");
    assert!(before.contains("# TYPE nexus_run_duration_seconds histogram"));
    assert_eq!(value(&before, "nexus_workflows"), 1.0);
    agent.write("/in/m.txt", "m");
    agent.wait_runs("a", 1);
    agent.wait_until("the counters to move", || {
        let after = scrape();
        value(&after, "nexus_events_total{type=\"file.created\"}")
            > value(&before, "nexus_events_total{type=\"file.created\"}")
            && value(
                &after,
                "nexus_runs_total{workflow=\"a\",status=\"succeeded\"}",
            ) == 1.0
            && value(&after, "nexus_run_duration_seconds_count") == 1.0
            && value(&after, "nexus_gaps_total") >= 1.0
    });
    let after = scrape();
    assert_eq!(value(&after, "nexus_queue_depth{status=\"queued\"}"), 0.0);
}

/// `workflows errors`, `runs list --status`, and `admin list-users`.
fn errors_scenario(backend: Backend) {
    let failing = WORKFLOW_B.replace("name: b", "name: flaky").replace(
        "    - name: note\n      action: log\n      with:\n        message: \"{{event.path}}\"",
        "    - name: check\n      run: 'echo bad input >&2; exit 3'",
    );
    let agent = Agent::start_on(backend, &[("f.yaml", &failing)], &[]);
    let key = agent.user_key("ops", "reader");
    agent.write("/b/one.txt", "1");
    let run = agent.wait_runs("flaky", 1).remove(0);
    assert_eq!(run.status, "failed");
    let errors = agent.cli(&key, &["workflows", "errors", "flaky"]);
    assert_eq!(errors.code, 0, "{errors:?}");
    let lines: Vec<&str> = errors.stdout.lines().collect();
    assert!(
        lines[0].starts_with("AT") && lines[0].contains("ERROR"),
        "{}",
        errors.stdout
    );
    assert!(
        lines[1].contains("/b/one.txt") && lines[1].contains("exit"),
        "{}",
        errors.stdout
    );
    let failed = json(
        &agent
            .cli(&key, &["runs", "list", "--status", "failed", "-o", "json"])
            .stdout,
    );
    assert_eq!(failed["runs"][0]["id"], run.id.as_str());
    let none = json(
        &agent
            .cli(
                &key,
                &["runs", "list", "--status", "succeeded", "-o", "json"],
            )
            .stdout,
    );
    assert_eq!(none["runs"], serde_json::json!([]));
    let yaml = agent.cli(&key, &["runs", "get", &run.id, "-o", "yaml"]);
    assert!(yaml.stdout.contains("status: failed"), "{yaml:?}");
    let bad = agent.cli(&key, &["runs", "list", "--status", "exploded"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("unknown status `exploded`"), "{bad:?}");
    let users = agent.admin(&["list-users"]);
    assert_eq!(users.code, 0, "{users:?}");
    assert!(
        users
            .stdout
            .lines()
            .any(|l| l.starts_with("ops") && l.contains("reader")),
        "{users:?}"
    );
}
on_both!(errors_and_users, errors_scenario);

/// Two agents on one PostgreSQL: what is applied or paused through one
/// is live on the other at once, woken by a notification (its poll is an
/// hour away).
#[test]
fn a_second_node_picks_up_applies_and_pauses() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let one = Agent::start_on(backend.clone(), &[], &[]);
    let two = Agent::start_on(backend, &[], &["--poll-interval", "1h"]);
    let key = one.user_key("root", "admin");
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), WORKFLOW_A).unwrap();
    let applied = one.cli(
        &key,
        &["apply", "-f", dir.path().join("a.yaml").to_str().unwrap()],
    );
    assert_eq!(applied.stdout, "workflow/a created\n", "{applied:?}");
    two.wait_until("node two to reload", || {
        two.log_text()
            .contains("definitions changed in the store: reloaded")
    });
    two.write("/in/n2.txt", "2");
    assert_eq!(two.wait_file("/out/n2.txt"), "2");
    assert_eq!(one.cli(&key, &["workflows", "pause", "a"]).code, 0);
    two.wait_for_a_paused_run("/in");
}

/// The agent validates what `apply` sends; its errors name the user's
/// files, lines and columns, across files too.
#[test]
fn apply_errors_name_the_files_lines_and_columns() {
    let agent = Agent::start(&[], &[]);
    let key = agent.user_key("ci", "admin");
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("defs")).unwrap();
    fs::write(dir.path().join("defs/x.yaml"), WORKFLOW_A).unwrap();
    fs::write(
        dir.path().join("defs/y.yaml"),
        format!("# a comment\n{WORKFLOW_A}"),
    )
    .unwrap();
    fs::write(dir.path().join("defs/empty.yml"), "# nothing here\n").unwrap();
    let out = agent.cli_in(&key, dir.path(), &["apply", "-f", "defs"], b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("defs/empty.yml:1:1: error: no definitions in this file"),
        "{}",
        out.stderr
    );
    fs::remove_file(dir.path().join("defs/empty.yml")).unwrap();
    let out = agent.cli_in(&key, dir.path(), &["apply", "-f", "defs"], b"");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("defs/y.yaml:6:9: error: duplicate definition name `a` (first defined at defs/x.yaml:5:9)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .ends_with("error: the definitions are invalid: nothing was applied\n"),
        "{}",
        out.stderr
    );
    let list = json(&agent.cli(&key, &["workflows", "list", "-o", "json"]).stdout);
    assert_eq!(list["workflows"], serde_json::json!([]));
}
