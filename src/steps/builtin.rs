//! Built-in file actions. Every path is virtual and resolved beneath the
//! data dir through a cap-std `Dir` (as `openat2(RESOLVE_BENEATH)` does):
//! `..`, absolute escapes and symlinks that leave the tree fail, and
//! `.nexus` is refused. Writes go to a temporary file that is renamed into
//! place, so no other workflow ever sees half of one.

use std::io::Write;
use std::path::PathBuf;

use cap_std::fs::{Dir, OpenOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{StepContext, StepOutcome};
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

/// A virtual path and its relative form beneath the root.
pub(crate) struct Vpath {
    pub virt: String,
    pub rel: PathBuf,
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

/// Checks a virtual path and makes it relative to the root.
pub(crate) fn vpath(text: &str) -> Result<Vpath, String> {
    if text.contains('\0') {
        return Err(format!("path `{}` holds a NUL byte", text.escape_debug()));
    }
    if !text.starts_with('/') {
        return Err(format!(
            "path `{text}` must be absolute within the data dir (start with `/`)"
        ));
    }
    let segments: Vec<&str> = text
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if segments.contains(&"..") {
        return Err(format!(
            "path `{text}` leaves the data dir (`..` is not allowed)"
        ));
    }
    if segments.first() == Some(&".nexus") {
        return Err(format!(
            "path `{text}` is inside `/.nexus`, nexusd's own state"
        ));
    }
    if segments.is_empty() {
        return Err(format!(
            "path `{text}` names the data dir itself, not a file"
        ));
    }
    Ok(Vpath {
        virt: format!("/{}", segments.join("/")),
        rel: segments.iter().collect(),
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

pub(crate) fn make_parent(root: &Dir, path: &Vpath) -> Result<(), String> {
    match path.rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => root
            .create_dir_all(parent)
            .map_err(|e| io_error(root, "create the directory of", path, &e)),
        None => Ok(()),
    }
}

pub(crate) fn atomic_write(root: &Dir, path: &Vpath, bytes: &[u8]) -> Result<(), String> {
    let name = path
        .rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot name ending in `.tmp` is on the watcher's ignore list.
    let tmp_name = format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple());
    let tmp = path.rel.with_file_name(tmp_name);
    let create = || root.open_with(&tmp, OpenOptions::new().write(true).create_new(true));
    // The directory usually exists: it is made only when the create says not.
    let file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_parent(root, path)?;
            create()
        }
        other => other,
    };
    let write = |mut f: cap_std::fs::File| -> std::io::Result<()> {
        f.write_all(bytes)?;
        // No fsync: the rename makes the write atomic for readers, and a run
        // cut short by a crash is run again (at least once), which rewrites it.
        drop(f);
        root.rename(&tmp, root, &path.rel)
    };
    file.and_then(write).map_err(|e| {
        let _ = root.remove_file(&tmp);
        io_error(root, "write", path, &e)
    })
}

pub(crate) fn io_error(root: &Dir, what: &str, path: &Vpath, e: &std::io::Error) -> String {
    let reason = e.to_string();
    let reason = reason
        .split(" (os error")
        .next()
        .unwrap_or(&reason)
        .to_lowercase();
    // cap-std refuses a path that leads out of the root (a symlink out).
    if reason.contains("outside") || reason.contains("escape") || leaves_root(root, &path.rel) {
        return format!(
            "cannot {what} `{}`: it resolves outside the data dir",
            path.virt
        );
    }
    format!("cannot {what} `{}`: {reason}", path.virt)
}

/// True when a component of `rel` is a symlink whose target is outside the root.
fn leaves_root(root: &Dir, rel: &std::path::Path) -> bool {
    let mut prefix = PathBuf::new();
    for part in rel.components() {
        prefix.push(part);
        let is_link = root
            .symlink_metadata(&prefix)
            .is_ok_and(|m| m.file_type().is_symlink());
        if is_link && root.canonicalize(&prefix).is_err() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_paths_stay_beneath_the_root() {
        assert_eq!(vpath("/a//b/./c.txt").unwrap().virt, "/a/b/c.txt");
        for bad in [
            "../../etc/passwd",
            "/a/../../etc/passwd",
            "/.nexus/nexus.db",
            "/",
            "/a\0b",
            "relative",
        ] {
            assert!(vpath(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stats_count_like_the_seed() {
        let s = stats(b"one two\nthree\n");
        assert_eq!(s["bytes"], 14);
        assert_eq!(s["words"], 3);
        assert_eq!(s["lines"], 2);
        assert_eq!(s["chars"], 14);
        assert_eq!(s["sha256"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), data.path().join("out")).unwrap();
        let root = Dir::open_ambient_dir(data.path(), cap_std::ambient_authority()).unwrap();
        let p = Prepared::Write {
            path: vpath("/out/pwned.txt").unwrap(),
            content: "x".into(),
        };
        let err = apply(&root, &p).unwrap_err();
        assert!(err.contains("outside the data dir"), "{err}");
        assert!(!outside.path().join("pwned.txt").exists());
    }
}
