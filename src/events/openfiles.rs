//! Whether some process holds a file open for writing, read from /proc.
//!
//! inotify reports the close of a writer but not that one is still open; a
//! new file whose writer pauses longer than the settle time would otherwise
//! be handed over half-written. This scan runs only on the settle path
//! (files modified but not yet closed), never on the close fast path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// True when a process has `path` open with write access. Processes we may
/// not inspect are skipped; on a system without /proc the answer is false.
pub fn open_for_write(path: &Path) -> bool {
    open_for_write_under(path.parent().unwrap_or(path)).contains(path)
}

/// Every file under `root` that some process holds open with write access:
/// one walk of /proc answers for a whole batch of files.
pub fn open_for_write_under(root: &Path) -> HashSet<PathBuf> {
    let mut found = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for proc_entry in procs.flatten() {
        let pid = proc_entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fd_dir = proc_entry.path().join("fd");
        let Ok(fds) = std::fs::read_dir(&fd_dir) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && target.starts_with(root)
                && fd_writable(&proc_entry.path(), &fd.file_name())
            {
                found.insert(target);
            }
        }
    }
    found
}

fn fd_writable(proc_dir: &Path, fd: &std::ffi::OsStr) -> bool {
    let Ok(info) = std::fs::read_to_string(proc_dir.join("fdinfo").join(fd)) else {
        return false;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sees_our_own_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"x").unwrap();
        assert!(open_for_write(&path));
        drop(f);
        assert!(!open_for_write(&path));
        let _reader = std::fs::File::open(&path).unwrap();
        assert!(!open_for_write(&path));
    }
}
