//! The dashboard (issue 16) in a real browser: `tests/ui/dashboard.test.mjs`
//! drives Debian's Chromium with playwright-core against real agents
//! started here (`.ci/run` installs both; elsewhere the test says what is
//! missing and is skipped, never in CI).

use std::path::Path;
use std::process::Command;

use crate::agent::Agent;
use crate::support::repo;

/// Prints the file it was given.
const ECHOER: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: echoer, description: prints each text file}\nspec:\n  on: [{event: file.created, pattern: /in/*.txt}]\n  steps:\n    - {name: show, run: 'cat -- {{event.abs_path}}'}\n";

/// Says it waits, then waits for `/go`.
const LONG: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: long}\nspec:\n  on: [{event: file.created, pattern: /long/*.txt}]\n  steps:\n    - {name: wait, run: 'echo waiting; while [ ! -e go ]; do sleep 0.05; done'}\n";

/// `prepare` leaves a mark; `check` fails until `/fixed` exists.
const FLAKY: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: flaky}\nspec:\n  on: [{event: file.created, pattern: /flaky/*.txt}]\n  retry: {max_attempts: 1}\n  steps:\n    - {name: prepare, run: 'echo once >> marks.log'}\n    - {name: check, run: 'test -e fixed'}\n";

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
    let short = Agent::start(&[], &["--session-ttl", "2s"]);
    let short_key = short.user_key("ops", "writer");
    let out = Command::new("node")
        .arg("tests/ui/dashboard.test.mjs")
        .current_dir(repo())
        .env("NEXUS_URL", agent.url())
        .env("WRITER_KEY", &writer)
        .env("READER_KEY", &reader)
        .env("DATA_DIR", &agent.data)
        .env("SHORT_URL", short.url())
        .env("SHORT_KEY", &short_key)
        .env("SCREENSHOTS", repo().join("target/ui-screenshots"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{text}\nagent log:\n{}",
        agent.log_text()
    );
    eprintln!("{text}");
}
