//! Running the binary and reading what it printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a command left for its user to see.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `nexusd ARGS` in `dir` with `stdin` as standard input; a run that
/// has not ended after 60 s is killed and reported, so a hang fails loudly.
pub fn nexusd_in(dir: &Path, args: &[&str], stdin: &[u8]) -> Outcome {
    nexusd_env(dir, args, stdin, &[])
}

/// As [`nexusd_in`], with environment variables set (and the client's
/// own ones cleared, so the caller's shell cannot leak in).
pub fn nexusd_env(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexusd"))
        .args(args)
        .env_remove("NEXUS_URL")
        .env_remove("NEXUS_API_KEY")
        .env_remove("DATABASE_URL")
        .env_remove("NEXUS_DATA_DIR")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the nexusd binary starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    // A command that does not read stdin closes it early: that is fine.
    let _ = input.write_all(stdin);
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait works").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nexusd {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output is readable");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `nexusd ARGS` in the fixtures directory.
pub fn nexusd(args: &[&str]) -> Outcome {
    nexusd_in(&fixtures(), args, b"")
}

/// One HTTP request to an agent: its status, its `Set-Cookie` and its body.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Option<String>, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let (url, body) = (url.to_owned(), body.map(str::to_owned));
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    crate::agent::block_on(async move {
        let mut req = reqwest::Client::new().request(method, url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, cookie, resp.text().await.unwrap())
    })
}
