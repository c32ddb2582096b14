//! The dashboard (issue 16) in a real browser: `tests/ui/dashboard.test.mjs`
//! drives Debian's Chromium with playwright-core against real agents
//! started here (`.ci/run` installs both; elsewhere the test says what is
//! missing and is skipped, never in CI).

use std::path::Path;
use std::process::Command;

use crate::agent::Agent;
use crate::support::{repo, send};

/// Prints the file it was given.
const ECHOER: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: echoer, description: prints each text file}\nspec:\n  on: [{event: file.created, pattern: /in/*.txt}]\n  steps:\n    - {name: show, run: 'cat -- {{event.abs_path}}'}\n";

/// Says it waits, then waits for `/go`.
const LONG: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: long}\nspec:\n  on: [{event: file.created, pattern: /long/*.txt}]\n  steps:\n    - {name: wait, run: 'echo waiting; while [ ! -e go ]; do sleep 0.05; done'}\n";

/// `prepare` leaves a mark; `check` fails until `/fixed` exists.
const FLAKY: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: flaky}\nspec:\n  on: [{event: file.created, pattern: /flaky/*.txt}]\n  retry: {max_attempts: 1}\n  steps:\n    - {name: prepare, run: 'echo once >> marks.log'}\n    - {name: check, run: 'test -e fixed'}\n";

/// The child's exit and its output (read as it comes, so a full pipe never
/// stops it); killed, and the test failed, past `limit`: a hung browser
/// fails rather than hanging the suite.
fn finish_within(mut child: std::process::Child, limit: std::time::Duration) -> (bool, String) {
    use std::io::Read;
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!("the browser test took more than {limit:?}:\n{text}");
    };
    (status.success(), text)
}

/// What the browser test needs, or why it cannot run here.
fn missing() -> Option<String> {
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium (apt-get install chromium)".into());
    }
    if !repo()
        .join("tests/ui/node_modules/playwright-core")
        .exists()
    {
        return Some("playwright-core (cd tests/ui && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node".into());
    }
    None
}

/// Sign in; a file's run appears and finishes live; its stdout; cancel a
/// long run; re-run a failed one from its failed step; pause and see the
/// next file skipped; CSRF and a forged cross-site POST refused; sign
/// out; a reader sees no write action; an expired session returns to
/// sign-in; 390 px wide. Screenshots go to `target/ui-screenshots`.
#[test]
fn the_dashboard_in_a_real_browser() {
    if let Some(what) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {what}: .ci/run installs it"
        );
        eprintln!("skipped: the dashboard's browser test needs {what}");
        return;
    }
    let agent = Agent::start(
        &[
            ("echoer.yaml", ECHOER),
            ("long.yaml", LONG),
            ("flaky.yaml", FLAKY),
        ],
        &[],
    );
    let writer = agent.user_key("ops", "writer");
    let reader = agent.user_key("watcher", "reader");
    let short = Agent::start(&[], &["--session-ttl", "4s"]);
    let short_key = short.user_key("ops", "writer");
    let child = Command::new("node")
        .arg("tests/ui/dashboard.test.mjs")
        .current_dir(repo())
        .env("NEXUS_URL", agent.url())
        .env("WRITER_KEY", &writer)
        .env("READER_KEY", &reader)
        .env("DATA_DIR", &agent.data)
        .env("SHORT_URL", short.url())
        .env("SHORT_KEY", &short_key)
        .env("SHORT_TTL_MS", "4000")
        .env("SCREENSHOTS", repo().join("target/ui-screenshots"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, text) = finish_within(child, std::time::Duration::from_secs(300));
    assert!(ok, "{text}\nagent log:\n{}", agent.log_text());
    eprintln!("{text}");
}

/// Signs in with `key`: the cookie's `name=value` and the CSRF token.
fn sign_in(url: &str, key: &str) -> (String, String) {
    let body = format!("{{\"api_key\": \"{key}\"}}");
    let (status, cookie, answer) = send(
        "POST",
        &format!("{url}/v1/session"),
        &[("content-type", "application/json")],
        Some(&body),
    );
    assert_eq!(status, 201, "{answer}");
    let cookie = cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly; SameSite=Strict; Max-Age=2"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let info: serde_json::Value = serde_json::from_str(&answer).unwrap();
    (pair, info["csrf"].as_str().unwrap().to_owned())
}

/// The server's side of sessions, no browser: a sign-in that is not JSON,
/// or comes from another site's page, is refused; a write with the cookie
/// but not its CSRF token is 403; two session cookies are refused; a
/// followed stream ends when its session does; the cookie is refused once
/// the session's time is over (by the server, whatever the browser keeps),
/// after sign-out, and after its key is revoked.
#[test]
fn sessions_end_on_the_server() {
    let agent = Agent::start(&[], &["--session-ttl", "2s"]);
    let key = agent.user_key("ops", "writer");
    let url = agent.url();
    let session_url = format!("{url}/v1/session");
    let plain = send(
        "POST",
        &session_url,
        &[("content-type", "text/plain")],
        Some(&format!("{{\"api_key\": \"{key}\"}}")),
    );
    assert_eq!(plain.0, 400, "{plain:?}");
    let cross = send(
        "POST",
        &session_url,
        &[
            ("content-type", "application/json"),
            ("sec-fetch-site", "cross-site"),
        ],
        Some(&format!("{{\"api_key\": \"{key}\"}}")),
    );
    assert_eq!(cross.0, 403, "{cross:?}");

    let began = std::time::Instant::now();
    let (cookie, csrf) = sign_in(&url, &key);
    let read = send(
        "GET",
        &format!("{url}/v1/workflows"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(read.0, 200, "{read:?}");
    let pause = format!("{url}/v1/workflows/nope/pause");
    let forged = send("POST", &pause, &[("cookie", &cookie)], None);
    assert_eq!(forged.0, 403, "{forged:?}");
    assert!(forged.2.contains("CSRF"), "{forged:?}");
    let with_token = send(
        "POST",
        &pause,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        None,
    );
    assert_eq!(with_token.0, 404, "past the CSRF check: {with_token:?}");
    let two = format!("{cookie}; nexus_session=0000");
    let doubled = send(
        "GET",
        &format!("{url}/v1/workflows"),
        &[("cookie", &two)],
        None,
    );
    assert_eq!(doubled.0, 401, "{doubled:?}");

    // A stream opened with the session ends with it.
    let stream = send(
        "GET",
        &format!("{url}/v1/events?follow=true"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(
        stream.0, 200,
        "the stream ended (with the session): {stream:?}"
    );
    assert!(
        began.elapsed() >= std::time::Duration::from_secs(2),
        "not before the session's end: {:?}",
        began.elapsed()
    );
    let late = send(
        "GET",
        &format!("{url}/v1/workflows"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(late.0, 401, "{late:?}");
    assert!(late.2.contains("the session has ended"), "{late:?}");

    // Signed out: the session ends and the cookie is cleared.
    let (cookie, _) = sign_in(&url, &key);
    let out = send("DELETE", &session_url, &[("cookie", &cookie)], None);
    assert_eq!(out.0, 204, "{out:?}");
    assert!(out.1.as_deref().unwrap().contains("Max-Age=0"), "{out:?}");
    let after = send(
        "GET",
        &format!("{url}/v1/workflows"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(after.0, 401, "{after:?}");

    // The key revoked: its session ends at the next request.
    let (cookie, _) = sign_in(&url, &key);
    let id = key.strip_prefix("nxk_").unwrap().split('_').next().unwrap();
    let revoked = agent.admin(&["revoke-key", id]);
    assert_eq!(revoked.code, 0, "{revoked:?}");
    let refused = send(
        "GET",
        &format!("{url}/v1/workflows"),
        &[("cookie", &cookie)],
        None,
    );
    assert_eq!(refused.0, 401, "{refused:?}");
    assert!(refused.2.contains("revoked"), "{refused:?}");
}
