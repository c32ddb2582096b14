//! Live output (issue 15): `nexusd runs logs ID [--follow]`, a running
//! shell step's lines as they are written, then the stored output, against
//! the real binary on both backends.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::agent::{Agent, Backend};

/// Says it is ready, waits for `/go`, then prints a line every 100 ms,
/// each with the time it was written (ns); a secret, a line of 10,000
/// bytes and a line on stderr last.
const TICKER: &str = r#"
apiVersion: nexus/v1
kind: Workflow
metadata: {name: ticker}
spec:
  on: [{event: file.created, pattern: /t/*.txt}]
  secrets: [TOKEN]
  steps:
    - name: tick
      run: |
        echo ready
        while [ ! -e go ]; do sleep 0.01; done
        for i in 1 2 3 4 5 6 7 8 9 10; do echo "line $i $(date +%s%N)"; sleep 0.1; done
        echo "token {{secrets.TOKEN}}"
        head -c 10000 /dev/zero | tr '\0' x; echo
        echo oops >&2
"#;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A follower sees each line within 200 ms of its being written, the
/// secret redacted, the long line cut, the stderr line as such, and the
/// end with the run's status (exit 0: it succeeded); afterwards the stored
/// output has the same lines. A reader may read logs; an unknown run is
/// refused.
fn following_a_running_step(backend: Backend) {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("TOKEN"), "hunter2-sekrit").unwrap();
    let agent = Agent::start_on(
        backend,
        &[("ticker.yaml", TICKER)],
        &["--secrets-dir", secrets.path().to_str().unwrap()],
    );
    let reader = agent.user_key("watcher", "reader");
    agent.write("/t/a.txt", "a");
    let mut id = String::new();
    agent.wait_until("the run to be running", || {
        match agent.runs().into_iter().find(|r| r.status == "running") {
            Some(r) => {
                id = r.id;
                true
            }
            None => false,
        }
    });
    let mut follower = Command::new(env!("CARGO_BIN_EXE_nexusd"))
        .args(["runs", "logs", &id, "--follow", "-o", "json"])
        .env("NEXUS_URL", agent.url())
        .env("NEXUS_API_KEY", &reader)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["line"], "ready", "{first}");
    assert_eq!(first["step"], "tick");
    assert_eq!(first["stream"], "stdout");
    // The follower is there: the lines from now on are live.
    agent.write("/go", "");
    let mut got: Vec<Value> = Vec::new();
    let mut late = Vec::new();
    let mut worst = Duration::ZERO;
    for line in lines {
        let line = line.unwrap();
        let arrived = now_ns();
        let v: Value = serde_json::from_str(&line).unwrap();
        let text = v["line"].as_str().unwrap().to_owned();
        if let Some(rest) = text.strip_prefix("line ") {
            let written: u128 = rest.split(' ').nth(1).unwrap().parse().unwrap();
            let delay = Duration::from_nanos((arrived.saturating_sub(written)) as u64);
            worst = worst.max(delay);
            if delay > Duration::from_millis(200) {
                late.push((text.clone(), delay));
            }
        }
        got.push(v);
    }
    let out = follower.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(late.is_empty(), "lines later than 200 ms: {late:?}");
    eprintln!("the latest line reached the follower {worst:?} after it was written");
    let texts: Vec<&str> = got.iter().map(|v| v["line"].as_str().unwrap()).collect();
    assert_eq!(
        texts.iter().filter(|t| t.starts_with("line ")).count(),
        10,
        "{texts:?}"
    );
    assert!(!texts.contains(&"token hunter2-sekrit"), "{texts:?}");
    assert!(texts.contains(&"token ***"), "{texts:?}");
    let long = texts.iter().find(|t| t.starts_with("xxx")).unwrap();
    assert!(long.starts_with(&"x".repeat(4096)), "{long}");
    assert!(
        long.ends_with(" [nexusd: 5904 more bytes of this line cut]"),
        "{}",
        &long[4090..]
    );
    let oops = got.iter().find(|v| v["line"] == "oops").unwrap();
    assert_eq!(oops["stream"], "stderr");
    assert!(stderr.contains(&format!("run {id} succeeded")), "{stderr}");

    // Afterwards: the stored output.
    let stored = agent.cli(&reader, &["runs", "logs", &id, "-o", "json"]);
    assert_eq!(stored.code, 0, "{stored:?}");
    let stored: Vec<Value> = stored
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stored[0]["line"], "ready");
    assert_eq!(
        stored
            .iter()
            .filter(|v| v["line"].as_str().unwrap().starts_with("line "))
            .count(),
        10
    );
    assert!(stored.iter().any(|v| v["line"] == "token ***"));
    let table = agent.cli(&reader, &["runs", "logs", &id]);
    assert!(table.stdout.starts_with("tick | ready\n"), "{table:?}");
    assert_eq!(table.stderr, "tick | oops\n", "{table:?}");
    let unknown = agent.cli(&reader, &["runs", "logs", "run_nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("no run `run_nope`"), "{unknown:?}");
}
on_both!(
    a_followers_lines_arrive_within_200_ms,
    following_a_running_step
);
