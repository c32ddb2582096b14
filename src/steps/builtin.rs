//! Built-in file actions, on virtual paths confined beneath the data dir
//! (see [`crate::datadir`]): the state dir is refused, and writes are
//! atomic, so no other workflow ever sees half of one.

use std::io::Write;

use cap_std::fs::{Dir, OpenOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{StepContext, StepOutcome};
use crate::datadir::{Vpath, atomic_write, io_error, make_parent, vpath};
use crate::definitions::model::Action;
use crate::templates::Template;

pub async fn execute(ctx: &StepContext, action: &Action) -> StepOutcome {
    let render = |t: &Template| t.render(&ctx.data).map_err(|e| e.to_string());
    let prepared = match prepare(action, render) {
        Ok(p) => p,
        Err(e) => return StepOutcome::fatal(e),
    };
    // Register the writes first, so the events they cause carry this run.
    let depth = ctx.event.chain_depth() + 1;
    for path in prepared.writes() {
        ctx.causes.register_run(path, &ctx.run_id, depth);
    }
    if let Prepared::Log(message) = &prepared {
        tracing::info!(workflow = %ctx.workflow, run = %ctx.run_id, "{}", ctx.redact(message));
        return StepOutcome::success(json!({"message": ctx.redact(message)}));
    }
    let root = ctx.root.clone();
    let result = tokio::task::spawn_blocking(move || apply(&root, &prepared)).await;
    match result {
        Ok(Ok(output)) => StepOutcome::success(output),
        Ok(Err(e)) => StepOutcome::fatal(e),
        Err(e) => StepOutcome::transient(format!("action task failed: {e}")),
    }
}

/// An action with its templates rendered and its paths checked.
enum Prepared {
    Write { path: Vpath, content: String },
    Append { path: Vpath, content: String },
    Copy { from: Vpath, to: Vpath },
    Move { from: Vpath, to: Vpath },
    Delete { path: Vpath },
    Mkdir { path: Vpath },
    Stats { path: Vpath },
    Log(String),
}

impl Prepared {
    fn writes(&self) -> Vec<&str> {
        match self {
            Prepared::Write { path, .. }
            | Prepared::Append { path, .. }
            | Prepared::Delete { path } => {
                vec![path.virt.as_str()]
            }
            Prepared::Copy { to, .. } => vec![to.virt.as_str()],
            Prepared::Move { from, to } => vec![to.virt.as_str(), from.virt.as_str()],
            _ => Vec::new(),
        }
    }
}

fn prepare(
    action: &Action,
    render: impl Fn(&Template) -> Result<String, String>,
) -> Result<Prepared, String> {
    let path = |t: &Template| render(t).and_then(|p| vpath(&p));
    Ok(match action {
        Action::Write { path: p, content } => Prepared::Write {
            path: path(p)?,
            content: render(content)?,
        },
        Action::Append { path: p, content } => Prepared::Append {
            path: path(p)?,
            content: render(content)?,
        },
        Action::Copy { from, to } => Prepared::Copy {
            from: path(from)?,
            to: path(to)?,
        },
        Action::Move { from, to } => Prepared::Move {
            from: path(from)?,
            to: path(to)?,
        },
        Action::Delete { path: p } => Prepared::Delete { path: path(p)? },
        Action::Mkdir { path: p } => Prepared::Mkdir { path: path(p)? },
        Action::Stats { path: p } => Prepared::Stats { path: path(p)? },
        Action::Log { message } => Prepared::Log(render(message)?),
    })
}

fn apply(root: &Dir, p: &Prepared) -> Result<Value, String> {
    match p {
        Prepared::Write { path, content } => {
            atomic_write(root, path, content.as_bytes())?;
            Ok(json!({"path": path.virt, "bytes": content.len()}))
        }
        Prepared::Append { path, content } => {
            make_parent(root, path)?;
            let mut f = root
                .open_with(&path.rel, OpenOptions::new().append(true).create(true))
                .map_err(|e| io_error(root, "open", path, &e))?;
            f.write_all(content.as_bytes())
                .map_err(|e| io_error(root, "append to", path, &e))?;
            Ok(json!({"path": path.virt, "bytes": content.len()}))
        }
        Prepared::Copy { from, to } => {
            let bytes = root
                .read(&from.rel)
                .map_err(|e| io_error(root, "read", from, &e))?;
            atomic_write(root, to, &bytes)?;
            Ok(json!({"from": from.virt, "to": to.virt, "bytes": bytes.len()}))
        }
        Prepared::Move { from, to } => {
            make_parent(root, to)?;
            root.rename(&from.rel, root, &to.rel)
                .map_err(|e| io_error(root, "move", from, &e))?;
            Ok(json!({"from": from.virt, "to": to.virt}))
        }
        Prepared::Delete { path } => {
            root.remove_file(&path.rel)
                .map_err(|e| io_error(root, "delete", path, &e))?;
            Ok(json!({"path": path.virt}))
        }
        Prepared::Mkdir { path } => {
            root.create_dir_all(&path.rel)
                .map_err(|e| io_error(root, "create directory", path, &e))?;
            Ok(json!({"path": path.virt}))
        }
        Prepared::Stats { path } => {
            let bytes = root
                .read(&path.rel)
                .map_err(|e| io_error(root, "read", path, &e))?;
            Ok(stats(&bytes))
        }
        Prepared::Log(_) => Ok(Value::Null),
    }
}

/// `bytes`, `chars`, `words`, `lines` and `sha256` of a file's content.
pub fn stats(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let digest = Sha256::digest(bytes);
    json!({
        "bytes": bytes.len(),
        "chars": text.chars().count(),
        "words": text.split_whitespace().count(),
        "lines": text.lines().count(),
        "sha256": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_like_the_seed() {
        let s = stats(b"one two\nthree\n");
        assert_eq!(s["bytes"], 14);
        assert_eq!(s["words"], 3);
        assert_eq!(s["lines"], 2);
        assert_eq!(s["chars"], 14);
        assert_eq!(s["sha256"].as_str().unwrap().len(), 64);
    }
}
