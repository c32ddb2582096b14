//! The data dir: virtual paths (absolute, `/`-separated, rooted at the
//! data dir), the state directory nexusd keeps inside it, and file access
//! confined beneath it through a cap-std `Dir` (as
//! `openat2(RESOLVE_BENEATH)` does: `..`, absolute escapes and symlinks that
//! leave the tree fail). Writes go to a temporary file that is renamed into
//! place, so no reader ever sees half of one. The built-in file actions and
//! the file API both work through here.

use std::io::Write;
use std::path::PathBuf;

use cap_std::fs::{Dir, OpenOptions};

/// The state dir's name, the one place it is spelled.
macro_rules! state_dir {
    () => {
        ".nexus"
    };
}

/// nexusd's own state inside the data dir (the SQLite database, step
/// output files): never watched, never an event, never a step's path.
pub const STATE_DIR: &str = state_dir!();

/// The state dir's virtual path.
pub const STATE_VPATH: &str = concat!("/", state_dir!());

/// Where shell steps' output files go, relative to the data dir.
pub const OUTPUT_DIR: &str = concat!(state_dir!(), "/tmp");

/// The SQLite database, relative to the state dir.
pub const DATABASE_FILE: &str = "nexus.db";

/// The data dir's identity (its origin), relative to the state dir.
pub const ORIGIN_FILE: &str = "origin";

/// The data dir's identity: the id in `STATE_DIR/origin`, made the first
/// time any agent serves the data dir. Agents starting at once on one data
/// dir (one disk, or a network filesystem) agree on it: each writes its
/// own candidate and links it into place, and the one link that wins is
/// what every agent reads. Events, runs and index rows carry it.
pub fn origin(data_dir: &std::path::Path) -> Result<String, String> {
    let state = data_dir.join(STATE_DIR);
    let path = state.join(ORIGIN_FILE);
    let shown = path.display();
    std::fs::create_dir_all(&state).map_err(|e| format!("creating `{}`: {e}", state.display()))?;
    let read = || match std::fs::read_to_string(&path) {
        Ok(text) => Some(checked_origin(&text).map_err(|why| damaged(&shown, &why))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!(
            "reading the data dir's identity `{shown}`: {e}"
        ))),
    };
    if let Some(known) = read() {
        return known;
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let candidate = state.join(format!(".{ORIGIN_FILE}.{id}.tmp"));
    let made = std::fs::write(&candidate, format!("{id}\n"))
        .and_then(|()| std::fs::File::open(&candidate)?.sync_all())
        .and_then(|()| std::fs::hard_link(&candidate, &path));
    let _ = std::fs::remove_file(&candidate);
    match made {
        Ok(()) => Ok(id),
        // Another agent's link won: its id is the data dir's.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read().unwrap_or_else(|| Err(format!("the data dir's identity `{shown}` vanished")))
        }
        Err(e) => Err(format!("making the data dir's identity `{shown}`: {e}")),
    }
}

fn damaged(path: &impl std::fmt::Display, why: &str) -> String {
    format!(
        "the data dir's identity `{path}` is damaged ({why}); restore it (deleting it gives the data dir a new identity, and then every file in it is new to nexusd: a `file.created` event each)"
    )
}

/// An origin id: one line of 1 to 64 letters, digits, `-` or `_`.
fn checked_origin(text: &str) -> Result<String, String> {
    let id = text.strip_suffix('\n').unwrap_or(text);
    if id.is_empty() {
        return Err("it is empty".to_owned());
    }
    if id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "expected one line of up to 64 letters, digits, `-` or `_`, found `{}`",
            id.chars().take(80).collect::<String>().escape_debug()
        ));
    }
    Ok(id.to_owned())
}

/// True for the state dir's virtual path and every path inside it.
pub fn is_state_path(virt: &str) -> bool {
    virt.strip_prefix(STATE_VPATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A virtual path and its relative form beneath the root.
pub struct Vpath {
    pub virt: String,
    pub rel: PathBuf,
}

/// Checks a virtual path and makes it relative to the root.
pub fn vpath(text: &str) -> Result<Vpath, String> {
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
    if segments.first() == Some(&STATE_DIR) {
        return Err(format!(
            "path `{text}` is inside `/{STATE_DIR}`, nexusd's own state"
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

pub fn make_parent(root: &Dir, path: &Vpath) -> Result<(), String> {
    match path.rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => root
            .create_dir_all(parent)
            .map_err(|e| io_error(root, "create the directory of", path, &e)),
        None => Ok(()),
    }
}

pub fn atomic_write(root: &Dir, path: &Vpath, bytes: &[u8]) -> Result<(), String> {
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

pub fn io_error(root: &Dir, what: &str, path: &Vpath, e: &std::io::Error) -> String {
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
    fn the_state_dir_is_named_once() {
        assert_eq!(STATE_VPATH, format!("/{STATE_DIR}"));
        assert!(OUTPUT_DIR.starts_with(&format!("{STATE_DIR}/")));
        let inside = format!("{STATE_VPATH}/{DATABASE_FILE}");
        assert!(is_state_path(STATE_VPATH) && is_state_path(&inside));
        assert!(!is_state_path(&format!("{STATE_VPATH}2/a")));
        assert!(!is_state_path(&format!("/a{STATE_VPATH}/b")));
    }

    #[test]
    fn virtual_paths_stay_beneath_the_root() {
        assert_eq!(vpath("/a//b/./c.txt").unwrap().virt, "/a/b/c.txt");
        let database = format!("{STATE_VPATH}/{DATABASE_FILE}");
        for bad in [
            "../../etc/passwd",
            "/a/../../etc/passwd",
            &database,
            STATE_VPATH,
            "/",
            "/a\0b",
            "relative",
        ] {
            assert!(vpath(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), data.path().join("out")).unwrap();
        let root = Dir::open_ambient_dir(data.path(), cap_std::ambient_authority()).unwrap();
        let err = atomic_write(&root, &vpath("/out/pwned.txt").unwrap(), b"x").unwrap_err();
        assert!(err.contains("outside the data dir"), "{err}");
        assert!(!outside.path().join("pwned.txt").exists());
    }

    #[test]
    fn a_data_dir_keeps_one_identity_whoever_makes_it() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_path_buf();
        let ids: Vec<String> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || origin(&dir).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        assert_eq!(origin(&dir).unwrap(), ids[0], "read back, not made anew");
        let state: Vec<_> = std::fs::read_dir(dir.join(STATE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(state, [ORIGIN_FILE], "no candidate left behind");
    }

    #[test]
    fn a_damaged_identity_is_refused_and_says_what_to_do() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join(STATE_DIR)).unwrap();
        let file = data.path().join(STATE_DIR).join(ORIGIN_FILE);
        for bad in ["", "a b\n", "../x", &"x".repeat(65)] {
            std::fs::write(&file, bad).unwrap();
            let err = origin(data.path()).unwrap_err();
            assert!(
                err.contains("is damaged") && err.contains("restore it"),
                "{err}"
            );
            assert_eq!(std::fs::read_to_string(&file).unwrap(), bad, "left alone");
        }
    }
}
