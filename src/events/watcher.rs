//! Raw inotify (through notify) on the data dir, turned into [`Hint`]s.
//!
//! The callback runs on notify's thread and must never block: a blocked
//! reader lets the kernel queue overflow. It `try_send`s into a bounded
//! channel; when the channel is full, or notify reports an error or a
//! rescan, it raises the `lost` flag instead, and the consumer compares the
//! whole tree with the index. Nothing is dropped silently.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};

use super::ignore::Ignore;
use super::reconcile::Hint;

/// Default capacity of the hint channel between notify's thread and the
/// reconciler (`--event-buffer`).
pub const CHANNEL_CAPACITY: usize = 131_072;

/// A running watch; dropping it stops notify.
pub struct Watch {
    _watcher: RecommendedWatcher,
    /// Set when hints were lost; the consumer must rescan and clear it.
    pub lost: Arc<AtomicBool>,
    /// Woken when `lost` is set.
    pub lost_wake: Arc<Notify>,
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
    let (flag, wake) = (Arc::clone(&lost), Arc::clone(&lost_wake));
    let handler = move |res: notify::Result<Event>| {
        let lost = match res {
            Ok(event) if event.need_rescan() => true,
            Ok(event) if ignorable(&event, &ignore) => return,
            Ok(event) => match hint_of(event) {
                Some(hint) => tx.try_send(hint).is_err(),
                None => return,
            },
            Err(_) => true,
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
    let mut watcher = RecommendedWatcher::new(handler, config)?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    // nexusd's own state (SQLite's WAL is written for every commit, steps'
    // output files) is never an event: without a watch there, the kernel
    // does not queue its writes for notify to read and drop.
    // Only a cost if it fails (a `.nexus` that is a symlink has no watch).
    let state = root.join(".nexus");
    if let Err(e) = watcher.unwatch(&state) {
        tracing::debug!(error = %e, "`.nexus` stays watched");
    }
    Ok((
        Watch {
            _watcher: watcher,
            lost,
            lost_wake,
        },
        rx,
    ))
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
        std::fs::create_dir_all(dir.path().join(".nexus/tmp")).unwrap();
        let (_watch, mut hints) = watch(dir.path(), 64, Ignore::defaults()).unwrap();
        std::fs::write(dir.path().join(".nexus/nexus.db-wal"), "x").unwrap();
        std::fs::write(dir.path().join(".nexus/tmp/out"), "x").unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        let deadline = std::time::Duration::from_secs(10);
        let first = tokio::time::timeout(deadline, hints.recv())
            .await
            .expect("a hint")
            .unwrap();
        assert_eq!(first, Hint::Written(dir.path().join("a.txt")));
    }
}
