//! Steps on the real agent: hostile file names, path escapes, webhooks,
//! timeouts and retries.

use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use crate::agent::Agent;

fn workflow(name: &str, pattern: &str, steps: &str) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  on:\n    - event: file.created\n      pattern: \"{pattern}\"\n  steps:\n{steps}"
    )
}

#[test]
fn hostile_file_names_never_run_as_code() {
    let hook = Receiver::start(200);
    let steps = format!(
        "    - name: bare\n      run: printf '%s' {{{{event.name}}}}\n    - name: quoted\n      run: printf '%s' \"{{{{event.name}}}}\"\n    - name: env\n      run: printf '%s' \"$NEXUS_FILE\"\n    - name: hex\n      run: printf '%s' {{{{event.name}}}} | od -An -tx1 | tr -d ' \\\\n'\n    - name: hook\n      webhook:\n        url: {}/hook\n        body: {{name: \"{{{{event.name}}}}\"}}\n",
        hook.url
    );
    let agent = Agent::start(&[("w.yaml", &workflow("names", "/in/*", &steps))], &[]);
    let names: Vec<&[u8]> = vec![
        b"$(touch P1).txt",
        b"`touch P2`.txt",
        b"x;touch P3;.txt",
        b"q'uo\"te.txt",
        b"-n.txt",
        b"a b.txt",
        b"new\nline.txt",
        b"{{event.path}}.txt",
        b"not-utf8-\xff\xfe.txt",
    ];
    std::fs::create_dir_all(agent.path("/in")).unwrap();
    for name in &names {
        std::fs::write(
            agent.path("/in").join(std::ffi::OsStr::from_bytes(name)),
            "x",
        )
        .unwrap();
    }
    let runs = agent.wait_runs("names", names.len());
    for run in &runs {
        assert_eq!(run.status, "succeeded", "{run:?}");
        let steps = agent.steps(&run.id);
        let name = names
            .iter()
            .find(|n| {
                nexusd::events::encode_path(std::ffi::OsStr::from_bytes(n)).0
                    == run.path.trim_start_matches("/in/")
            })
            .unwrap_or_else(|| panic!("no name for {}", run.path));
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            steps[3].stdout.split_whitespace().collect::<String>(),
            hex,
            "exact bytes: {run:?}"
        );
        if let Ok(text) = std::str::from_utf8(name) {
            assert_eq!(steps[0].stdout, text, "unquoted: {run:?}");
            assert_eq!(steps[1].stdout, text, "double-quoted: {run:?}");
            assert_eq!(steps[2].stdout, agent.path(&run.path).display().to_string());
        }
    }
    for marker in ["P1", "P2", "P3"] {
        assert!(
            !agent.path(marker).exists() && !agent.path(&format!("/in/{marker}")).exists(),
            "{marker} was created"
        );
    }
    let mut bodies: Vec<String> = hook
        .requests()
        .iter()
        .map(|r| r.body["name"].as_str().unwrap().to_owned())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = names
        .iter()
        .map(|n| nexusd::events::encode_path(std::ffi::OsStr::from_bytes(n)).0)
        .collect();
    expected.sort();
    assert_eq!(bodies, expected);
}

#[test]
fn built_in_paths_cannot_leave_the_data_dir() {
    let outside = tempfile::tempdir().unwrap();
    let marker = format!("nexus-escape-{}", std::process::id());
    let steps = format!(
        "    - name: up\n      action: file.write\n      with: {{path: \"/../../{{{{event.name}}}}\", content: x}}\n      continue_on_error: true\n    - name: link\n      action: file.write\n      with: {{path: \"/out/{{{{event.name}}}}\", content: x}}\n      continue_on_error: true\n    - name: root\n      action: file.write\n      with: {{path: \"/rootlink/tmp/{marker}\", content: x}}\n      continue_on_error: true\n    - name: absolute\n      action: file.write\n      with: {{path: /etc/{marker}, content: x}}\n      continue_on_error: true\n    - name: state\n      action: file.copy\n      with: {{from: /.nexus/nexus.db, to: /stolen.db}}\n"
    );
    let agent = Agent::start(&[("w.yaml", &workflow("escape", "/in/*", &steps))], &[]);
    std::os::unix::fs::symlink(outside.path(), agent.path("/out")).unwrap();
    std::os::unix::fs::symlink("/", agent.path("/rootlink")).unwrap();
    agent.write("/in/pwned.txt", "x");
    let run = &agent.wait_runs("escape", 1)[0];
    assert_eq!(run.status, "failed");
    let steps = agent.steps(&run.id);
    let errors: Vec<&str> = steps
        .iter()
        .map(|s| s.error.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        errors[0],
        "path `/../../pwned.txt` leaves the data dir (`..` is not allowed)"
    );
    assert_eq!(
        errors[1],
        "cannot write `/out/pwned.txt`: it resolves outside the data dir"
    );
    assert_eq!(
        errors[2],
        format!("cannot write `/rootlink/tmp/{marker}`: it resolves outside the data dir")
    );
    assert!(!std::path::Path::new("/tmp").join(&marker).exists());
    // An absolute virtual path is rooted at the data dir, never at `/`.
    assert_eq!(errors[3], "");
    assert!(agent.path(&format!("/etc/{marker}")).exists());
    assert!(!std::path::Path::new("/etc").join(&marker).exists());
    assert_eq!(
        errors[4],
        "path `/.nexus/nexus.db` is inside `/.nexus`, nexusd's own state"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!agent.path("/stolen.db").exists());
}

#[test]
fn webhooks_are_signed_json_with_an_idempotency_key_and_a_500_fails() {
    let ok = Receiver::start(200);
    let broken = Receiver::start(500);
    let yaml = format!(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: hooks}}\nspec:\n  on: [{{event: file.created, pattern: /in/*}}]\n  secrets: [HOOK_KEY]\n  steps:\n    - name: good\n      webhook:\n        url: \"{}/files/{{{{event.name}}}}?via=nexus\"\n        headers: {{X-Team: docs}}\n        body: {{file: \"{{{{event.path}}}}\", n: 3}}\n        secret: HOOK_KEY\n    - name: bad\n      webhook:\n        url: {}/fail\n",
        ok.url, broken.url
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("HOOK_KEY"),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
    )
    .unwrap();
    let agent = Agent::start(
        &[("w.yaml", &yaml)],
        &["--secrets-dir", dir.path().to_str().unwrap()],
    );
    agent.write("/in/a b.txt", "x");
    let run = &agent.wait_runs("hooks", 1)[0];
    assert_eq!(run.status, "failed");
    assert_eq!(
        run.error
            .as_deref()
            .map(|e| e.ends_with("answered 500 Internal Server Error")),
        Some(true),
        "{run:?}"
    );
    let got = ok.requests();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "/files/a%20b.txt?via=nexus");
    assert_eq!(req.body, serde_json::json!({"file": "/in/a b.txt", "n": 3}));
    assert_eq!(req.header("x-team"), "docs");
    assert_eq!(req.header("idempotency-key"), format!("{}:good", run.id));
    let (id, ts) = (req.header("webhook-id"), req.header("webhook-timestamp"));
    let expected = nexusd::steps::webhook::sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        &id,
        ts.parse().unwrap(),
        &req.raw_body,
    );
    assert_eq!(req.header("webhook-signature"), expected);
    assert_eq!(broken.requests().len(), 1);
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let marker = format!("{}", std::process::id() as u64 * 1000 + 7);
    let steps = format!(
        "    - name: slow\n      run: sleep 100.{marker} & sleep 100.{marker}; wait\n      timeout: 500ms\n"
    );
    let agent = Agent::start(&[("w.yaml", &workflow("slow", "/in/*", &steps))], &[]);
    agent.write("/in/x", "x");
    let run = &agent.wait_runs("slow", 1)[0];
    assert_eq!(
        run.error.as_deref(),
        Some("step `slow` failed: timed out after 500ms")
    );
    agent.wait_until("every sleep to be gone", || {
        !processes_with(&format!("100.{marker}"))
    });
}

#[test]
fn failures_are_retried_with_each_attempt_recorded() {
    let steps = "    - name: flaky\n      run: |\n        n=$(cat \"$NEXUS_FILE.count\" 2>/dev/null || echo 0)\n        echo $((n+1)) > \"$NEXUS_FILE.count\"\n        [ \"$NEXUS_ATTEMPT\" -ge 3 ]\n";
    let yaml = workflow("flaky", "/in/*.txt", steps).replace(
        "  steps:",
        "  retry: {max_attempts: 3, backoff: 100ms, multiplier: 2}\n  steps:",
    );
    let agent = Agent::start(&[("w.yaml", &yaml)], &[]);
    agent.write("/in/a.txt", "x");
    let run = &agent.wait_runs("flaky", 1)[0];
    assert_eq!(
        (run.status.as_str(), run.attempts),
        ("succeeded", 3),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read_to_string(agent.path("/in/a.txt.count"))
            .unwrap()
            .trim(),
        "3"
    );
    let steps = agent.steps(&run.id);
    let statuses: Vec<&str> = steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(statuses, ["failed", "failed", "succeeded"]);
    assert!(steps.iter().all(|s| s.name == "flaky"));
}

fn processes_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}

/// A local webhook receiver (axum), recording what it gets.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    _rt: tokio::runtime::Runtime,
}

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    raw_body: Vec<u8>,
    body: serde_json::Value,
}

impl Received {
    fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&got);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let store = Arc::clone(&store);
            async move {
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                let raw = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap()
                    .to_vec();
                let body = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
                store.lock().unwrap().push(Received {
                    path,
                    headers,
                    raw_body: raw,
                    body,
                });
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        });
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got, _rt: rt }
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}
