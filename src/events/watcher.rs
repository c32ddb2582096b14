//! Raw inotify (through notify) on the data dir, turned into [`Hint`]s.
//!
//! The callback runs on notify's thread and must never block: a blocked
//! reader lets the kernel queue overflow. It `try_send`s into a bounded
//! channel; when the channel is full, or notify reports an error or a
//! rescan, it raises the `lost` flag instead, and the consumer compares the
//! whole tree with the index. Nothing is dropped silently. Past the inotify
//! watch limit some directories have no watch: the watch is degraded, and
//! the consumer compares the tree with the index every poll interval.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};

use super::ignore::Ignore;
use super::reconcile::Hint;
use crate::datadir::STATE_DIR;

/// Default capacity of the hint channel between notify's thread and the
/// reconciler (`--event-buffer`).
pub const CHANNEL_CAPACITY: usize = 131_072;

/// A running watch; dropping it stops notify.
pub struct Watch {
    /// None with `--watch poll`: no notifications, the tree is compared
    /// with the index every watch interval.
    watcher: Option<RecommendedWatcher>,
    /// `--watch poll`: the hints' sender, kept so that they never end.
    _idle: Option<mpsc::Sender<Hint>>,
    root: PathBuf,
    /// Set when hints were lost; the consumer must rescan and clear it.
    pub lost: Arc<AtomicBool>,
    /// Woken when `lost` is set.
    pub lost_wake: Arc<Notify>,
    /// Set while some directory has no watch (the inotify watch limit is
    /// reached): the consumer then compares the tree with the index every
    /// poll interval, and tries [`Watch::rewatch`].
    degraded: Arc<AtomicBool>,
    /// Directories that cannot be watched (not readable by the agent),
    /// each named in a warning once.
    unreadable: std::collections::HashSet<PathBuf>,
}

impl Watch {
    /// Whether some directory has no watch (with `--watch poll`, none has).
    pub fn is_degraded(&self) -> bool {
        self.is_polling() || self.degraded.load(Ordering::SeqCst)
    }

    /// `--watch poll`: no directory is watched, all are compared.
    pub fn is_polling(&self) -> bool {
        self.watcher.is_none()
    }

    /// Watches every directory again (the limit may have been raised, or
    /// directories removed); [`Watch::is_degraded`] says how it went.
    pub fn rewatch(&mut self) {
        if let Err(e) = self.watch_tree() {
            tracing::warn!(error = %e, "watching the data dir again failed");
        }
    }

    /// Watches every directory under the root but nexusd's own state
    /// (SQLite's WAL is written at every commit, steps' output files: never
    /// an event, and without a watch the kernel does not queue their writes
    /// for notify to read and drop). At the watch limit, the directories
    /// reached keep their watches and the watch is degraded.
    fn watch_tree(&mut self) -> notify::Result<()> {
        let Some(watcher) = self.watcher.as_mut() else {
            return Ok(());
        };
        let mut result = watcher.watch(&self.root, RecursiveMode::Recursive);
        if result.as_ref().is_err_and(|e| self.skippable(e)) {
            result = self.watch_each();
        }
        // Only a cost if it fails (a state dir that is a symlink has no watch).
        if let Some(watcher) = self.watcher.as_mut()
            && let Err(e) = watcher.unwatch(&self.root.join(STATE_DIR))
        {
            tracing::debug!(error = %e, "the state dir stays watched");
        }
        match result {
            Ok(()) => {
                set_degraded(&self.degraded, false);
                Ok(())
            }
            Err(e) if is_watch_limit(&e) => {
                set_degraded(&self.degraded, true);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A directory below the root that the agent may not read (a mount
    /// point's `lost+found`), or that was removed during the walk: no
    /// reason to watch nothing. The root itself is another matter.
    fn skippable(&self, e: &notify::Error) -> bool {
        let below = !e.paths.contains(&self.root);
        match &e.kind {
            notify::ErrorKind::Io(io) => below && io.kind() == std::io::ErrorKind::PermissionDenied,
            notify::ErrorKind::PathNotFound => below,
            _ => false,
        }
    }

    /// notify's recursive watch stops at the first directory it cannot
    /// watch, leaving those after it without one. Watched one by one,
    /// deepest first (each recursively, so its new subdirectories are
    /// watched as they come), a directory that cannot be watched costs only
    /// itself. Every directory's subtree is walked again: this is the
    /// fallback, not the way.
    fn watch_each(&mut self) -> notify::Result<()> {
        let mut dirs = Vec::new();
        directories(&self.root, 0, &mut dirs);
        dirs.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
        for (_, dir) in dirs {
            let Some(watcher) = self.watcher.as_mut() else {
                return Ok(());
            };
            match watcher.watch(&dir, RecursiveMode::Recursive) {
                Ok(()) => {}
                // Removed meanwhile: nothing to say.
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                Err(e) if self.skippable(&e) => {
                    for path in e.paths {
                        if self.unreadable.insert(path.clone()) {
                            tracing::warn!(dir = %path.display(), "cannot watch a directory the agent may not read: changes inside it are not seen (give the agent read access, or move it out of the data dir)");
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Every directory under `dir` (itself included) with its depth, without
/// following symlinks or entering nexusd's state.
fn directories(dir: &Path, depth: usize, out: &mut Vec<(usize, PathBuf)>) {
    out.push((depth, dir.to_path_buf()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && !(depth == 0 && entry.file_name() == STATE_DIR)
        {
            directories(&entry.path(), depth + 1, out);
        }
    }
}

fn is_watch_limit(e: &notify::Error) -> bool {
    matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
}

/// Records the watch's state, and says so in the log (loudly when some
/// directory goes without a watch) and in `/health` and `/metrics`.
fn set_degraded(flag: &AtomicBool, degraded: bool) {
    if flag.swap(degraded, Ordering::SeqCst) == degraded {
        return;
    }
    crate::metrics::METRICS.set_watch_degraded(degraded);
    if degraded {
        let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
        tracing::error!(
            max_user_watches = %limit,
            "the inotify watch limit is reached: some directories of the data dir have no watch, so the data dir is compared with the index every poll interval instead; raise fs.inotify.max_user_watches (sysctl) to watch them all"
        );
    } else {
        tracing::info!("every directory of the data dir is watched again");
    }
}

/// Starts watching `root` recursively, without following symlinks. Data
/// notifications on files whose names `ignore` matches (an atomic write's
/// temporary file, say) never take a place in the buffer; directory and
/// rename notifications always do.
pub fn watch(
    root: &Path,
    capacity: usize,
    ignore: Ignore,
) -> notify::Result<(Watch, mpsc::Receiver<Hint>)> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let lost = Arc::new(AtomicBool::new(false));
    let lost_wake = Arc::new(Notify::new());
    let degraded = Arc::new(AtomicBool::new(false));
    let (flag, wake) = (Arc::clone(&lost), Arc::clone(&lost_wake));
    let limited = Arc::clone(&degraded);
    let handler = move |res: notify::Result<Event>| {
        let lost = match res {
            Ok(event) if event.need_rescan() => true,
            Ok(event) if ignorable(&event, &ignore) => return,
            Ok(event) => match hint_of(event) {
                Some(hint) => tx.try_send(hint).is_err(),
                None => return,
            },
            Err(e) => {
                // A new directory beyond the watch limit: its files are found
                // by the rescan, its later changes by the polls.
                if is_watch_limit(&e) {
                    set_degraded(&limited, true);
                }
                true
            }
        };
        if lost {
            // Counted once per loss, not per dropped hint.
            if !flag.swap(true, Ordering::SeqCst) {
                crate::metrics::METRICS.watcher_error();
            }
            wake.notify_one();
        }
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let watcher = RecommendedWatcher::new(handler, config)?;
    let mut watch = Watch {
        watcher: Some(watcher),
        _idle: None,
        root: root.to_path_buf(),
        lost,
        lost_wake,
        degraded,
        unreadable: Default::default(),
    };
    watch.watch_tree()?;
    Ok((watch, rx))
}

/// `--watch poll`: no notifications at all (inotify does not see the writes
/// other hosts make on a network filesystem); the consumer compares the
/// tree with the index every watch interval.
pub fn polling(root: &Path) -> (Watch, mpsc::Receiver<Hint>) {
    let (tx, rx) = mpsc::channel(1);
    let watch = Watch {
        watcher: None,
        _idle: Some(tx),
        root: root.to_path_buf(),
        lost: Default::default(),
        lost_wake: Default::default(),
        degraded: Default::default(),
        unreadable: Default::default(),
    };
    (watch, rx)
}

/// A data notification (create, write, close, attributes, removal) of a
/// file, not a directory, whose name is ignored.
fn ignorable(event: &Event, ignore: &Ignore) -> bool {
    use notify::event::RemoveKind;
    let data = matches!(
        event.kind,
        EventKind::Create(CreateKind::File)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_))
            | EventKind::Access(_)
            | EventKind::Remove(RemoveKind::File)
    );
    data && event.paths.len() == 1
        && event.paths[0]
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| ignore.is_ignored(n))
}

fn hint_of(event: Event) -> Option<Hint> {
    let tracker = event.attrs.tracker().unwrap_or(0);
    let mut paths = event.paths.into_iter();
    let first = paths.next()?;
    let hint = match event.kind {
        // inotify marks a directory's creation; IN_MODIFY is for files only.
        EventKind::Create(CreateKind::File) | EventKind::Modify(ModifyKind::Data(_)) => {
            Hint::Written(first)
        }
        EventKind::Create(_) => Hint::Created(first),
        EventKind::Modify(ModifyKind::Metadata(_)) => Hint::Attrib(first),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Hint::RenameFrom(first, tracker),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Hint::RenameTo(first, tracker),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match paths.next() {
            Some(to) => Hint::RenameBoth(first, to, tracker),
            None => Hint::Created(first),
        },
        // A change of unknown kind: compared as a creation (a directory is walked).
        EventKind::Modify(_) => Hint::Created(first),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Hint::Closed(first),
        EventKind::Remove(_) => Hint::Removed(first),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => return None,
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nexus_state_is_not_watched() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR);
        std::fs::create_dir_all(dir.path().join(crate::datadir::OUTPUT_DIR)).unwrap();
        let (_watch, mut hints) = watch(dir.path(), 64, Ignore::defaults()).unwrap();
        std::fs::write(state.join("nexus.db-wal"), "x").unwrap();
        std::fs::write(dir.path().join(crate::datadir::OUTPUT_DIR).join("out"), "x").unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let deadline = std::time::Duration::from_secs(10);
        let first = tokio::time::timeout(deadline, hints.recv())
            .await
            .expect("a hint")
            .unwrap();
        assert_eq!(first, Hint::Written(dir.path().join("a.txt")));
    }
}
