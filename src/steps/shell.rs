//! `run` steps: `sh -c` (or bash) in the data dir, placeholders passed as
//! environment variables, the environment scrubbed, output captured with a
//! cap, the child in its own process group so a timeout kills everything it
//! started, and `PR_SET_PDEATHSIG` so children die with the agent (both set
//! by `spawn`, which starts the shell without forking the agent).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::capture::{read_tail_to, with_cut_note};
use super::spawn;
use super::{StepContext, StepOutcome, StepStatus};
use crate::api::LogStream;
use crate::datadir::OUTPUT_DIR;
use crate::definitions::model::{RunStep, Shell, Step};
use crate::events::abs_path;

/// Variables kept from the agent's own environment.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

pub async fn execute(
    ctx: &StepContext,
    step: &Step,
    run: &RunStep,
    timeout: Option<Duration>,
) -> StepOutcome {
    let vars = match render_vars(ctx, run) {
        Ok(v) => v,
        Err(e) => return StepOutcome::fatal(format!("step `{}`: {e}", step.name)),
    };
    let mut env_extra = Vec::new();
    for (name, template) in &step.env {
        match template.render(&ctx.data) {
            Ok(v) => env_extra.push((name.clone(), v)),
            Err(e) => {
                return StepOutcome::fatal(format!("step `{}`: env `{name}`: {e}", step.name));
            }
        }
    }
    // The file is the script's to create (`>> $NEXUS_OUTPUT`), in a
    // directory the agent made at start: creating and deleting one per step
    // would cost an inode each, for nothing.
    let output_file = ctx
        .data_dir
        .join(OUTPUT_DIR)
        .join(format!("{}-{}-{}.out", ctx.run_id, ctx.attempt, step.name));
    let e = &ctx.event;
    let file = e
        .raw_abs
        .clone()
        .unwrap_or_else(|| abs_path(&ctx.data_dir, &e.path));
    let attempt = ctx.attempt.to_string();
    let mut env: BTreeMap<OsString, OsString> = INHERITED
        .iter()
        .filter_map(|key| Some(((*key).into(), std::env::var_os(key)?)))
        .collect();
    let fixed: [(&str, &OsStr); 8] = [
        ("NEXUS_EVENT_TYPE", e.kind.as_str().as_ref()),
        ("NEXUS_EVENT_PATH", e.path.as_ref()),
        ("NEXUS_FILE", file.as_os_str()),
        (
            "NEXUS_OLD_PATH",
            e.old_path.as_deref().unwrap_or("").as_ref(),
        ),
        ("NEXUS_RUN_ID", ctx.run_id.as_ref()),
        ("NEXUS_ATTEMPT", attempt.as_ref()),
        ("NEXUS_WORKFLOW", ctx.workflow.as_ref()),
        ("NEXUS_OUTPUT", output_file.as_os_str()),
    ];
    for (k, v) in fixed {
        env.insert(k.into(), v.to_owned());
    }
    for (k, v) in vars {
        env.insert(k.into(), v);
    }
    for (k, v) in env_extra {
        env.insert(k.into(), v.into());
    }
    let spec = spawn::Spec {
        program: shell_program(run.shell),
        args: vec!["-c".as_ref(), run.script.as_ref()],
        env: env
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
            .collect(),
        cwd: &ctx.data_dir,
    };
    let outcome = spawn_and_wait(ctx, &step.name, &spec, timeout).await;
    let file_outputs = match std::fs::read_to_string(&output_file) {
        Ok(text) => {
            let _ = std::fs::remove_file(&output_file);
            text
        }
        Err(_) => String::new(),
    };
    finish(ctx, outcome, &file_outputs)
}

/// The shell's absolute path, found on `PATH` once (`execve` takes a
/// path, not a name to look up).
fn shell_program(shell: Shell) -> &'static Path {
    static SH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    static BASH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let (cell, name) = match shell {
        Shell::Sh => (&SH, "sh"),
        Shell::Bash => (&BASH, "bash"),
    };
    cell.get_or_init(|| on_path(name).unwrap_or_else(|| PathBuf::from(name)))
}

/// The first file called `name` in a directory of the agent's `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The placeholders' values. For a name that is not UTF-8, the placeholders
/// that are exactly a path field of the event get the exact bytes, which a
/// rendered (escaped) string could not carry.
fn render_vars(
    ctx: &StepContext,
    run: &RunStep,
) -> Result<Vec<(String, OsString)>, crate::templates::TemplateError> {
    let mut out = Vec::new();
    for (name, template) in &run.vars {
        let exact = ctx.event.raw_abs.as_ref().and_then(|abs| {
            let rel = abs.strip_prefix(&ctx.data_dir).ok()?;
            match template.source() {
                "{{event.abs_path}}" => Some(abs.as_os_str().to_owned()),
                "{{event.path}}" => Some(Path::new("/").join(rel).into_os_string()),
                "{{event.name}}" => abs.file_name().map(|n| n.to_owned()),
                _ => None,
            }
        });
        let value = match exact {
            Some(v) => v,
            None => OsString::from(template.render(&ctx.data)?),
        };
        out.push((name.clone(), value));
    }
    Ok(out)
}

struct Raw {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    error: Option<String>,
    timed_out: bool,
}

async fn spawn_and_wait(
    ctx: &StepContext,
    step: &str,
    spec: &spawn::Spec<'_>,
    timeout: Option<Duration>,
) -> Raw {
    let mut child = match spawn::spawn(spec) {
        Ok(c) => c,
        Err(e) => {
            return Raw {
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                error: Some(format!(
                    "cannot start the shell `{}`: {e}",
                    spec.program.display()
                )),
                timed_out: false,
            };
        }
    };
    let cap = ctx.output_cap;
    let read = |s, stream| tokio::spawn(read_tail_to(s, cap, ctx.sink(step, stream)));
    let out = child.stdout.take().map(|s| read(s, LogStream::Stdout));
    let err = child.stderr.take().map(|s| read(s, LogStream::Stderr));
    let waited = match timeout {
        Some(limit) => tokio::time::timeout(limit, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    let (exit_code, timed_out) = match waited {
        Some(status) => (status.ok().flatten(), false),
        None => {
            child.kill_group();
            (child.wait().await.ok().flatten(), true)
        }
    };
    // Whatever the command left running in its group goes with it, so the
    // pipes close and nothing outlives the step. (If this future is dropped
    // instead, at shutdown past its grace, dropping the child does the same.)
    child.kill_group();
    let collect = |h: Option<tokio::task::JoinHandle<(Vec<u8>, u64)>>| async move {
        match h {
            Some(h) => h
                .await
                .map(|(b, d)| with_cut_note(&b, d))
                .unwrap_or_default(),
            None => String::new(),
        }
    };
    let stdout = collect(out).await;
    let stderr = collect(err).await;
    let error = if timed_out {
        Some(format!(
            "timed out after {}",
            humantime::format_duration(timeout.unwrap_or_default())
        ))
    } else {
        match exit_code {
            Some(0) => None,
            Some(code) => Some(format!("exit code {code}")),
            None => Some("killed by a signal".to_owned()),
        }
    };
    Raw {
        exit_code,
        stdout,
        stderr,
        error,
        timed_out,
    }
}

fn finish(ctx: &StepContext, raw: Raw, file_outputs: &str) -> StepOutcome {
    let mut output = Map::new();
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(raw.stdout.trim()) {
        output.extend(obj);
    }
    for (k, v) in parse_output_file(file_outputs) {
        output.insert(k, Value::String(v));
    }
    let ok = raw.error.is_none();
    StepOutcome {
        status: if ok {
            StepStatus::Succeeded
        } else {
            StepStatus::Failed
        },
        exit_code: raw.exit_code,
        stdout: ctx.redact(&raw.stdout),
        stderr: ctx.redact(&raw.stderr),
        output: Value::Object(output),
        error: raw.error,
        retryable: !ok || raw.timed_out,
        retry_after: None,
    }
}

/// `key=value` lines, as GitHub's `$GITHUB_OUTPUT` (later keys win).
fn parse_output_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_become_keys() {
        let got = parse_output_file("rows=12\nname=a=b\n\nnoequals\n=x\n");
        assert_eq!(got.get("rows").map(String::as_str), Some("12"));
        assert_eq!(got.get("name").map(String::as_str), Some("a=b"));
        assert_eq!(got.len(), 2);
    }
}
