//! `--config-dir`: the definitions directory reconciled continuously. A
//! change to its files is applied through the same path as `nexusd apply`
//! (source: the directory, with prune); a valid set replaces the live one
//! at once (runs in flight finish on the version they started with), an
//! invalid one is reported with file, line and column and the last good set
//! stays live. Where the directory cannot be watched (the inotify watch
//! limit), it is read again every poll interval instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::registry::{Action, ApplyOptions, Registry, documents_of};
use crate::definitions::{Limits, load_config_dir};

/// Quiet time after a change before reloading, so an editor's save (or a
/// `git pull` touching many files) is one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// How the directory applies: as its own source, pruning what left it. The
/// source names the data dir too (`dir:ORIGIN:PATH`): agents of other data
/// dirs whose config dirs have the same path never prune each other's.
pub fn apply_options(dir: &Path, origin: &str) -> ApplyOptions {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    ApplyOptions {
        source: format!("dir:{origin}:{}", dir.display()),
        who: "config-dir".to_owned(),
        prune: true,
        dry_run: false,
    }
}

pub async fn config_worker(
    dir: PathBuf,
    registry: Arc<Registry>,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let handler = move |res: notify::Result<notify::Event>| {
        // Reading the directory to reload it opens its files: those access
        // events are not changes.
        if let Ok(e) = &res
            && matches!(e.kind, notify::EventKind::Access(_))
        {
            return;
        }
        // One pending reload is enough: a full channel means one is queued.
        let _ = tx.try_send(());
    };
    let watching = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::Recursive)?;
        Ok(w)
    });
    let _watcher = match watching {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), every = %humantime::format_duration(poll_interval), "cannot watch the config dir: it is read again at every poll interval instead (past the inotify watch limit, raise fs.inotify.max_user_watches)");
            return poll_worker(dir, registry, poll_interval, shutdown).await;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        // Let a burst of writes finish.
        loop {
            tokio::select! {
                () = tokio::time::sleep(DEBOUNCE) => break,
                got = rx.recv() => if got.is_none() { break },
            }
        }
        reload(&dir, &registry).await;
    }
}

/// Without a watch: reloads when a file's name, size or mtime changed.
async fn poll_worker(
    dir: PathBuf,
    registry: Arc<Registry>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last = fingerprint(&dir);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        let now = fingerprint(&dir);
        if now != last {
            last = now;
            reload(&dir, &registry).await;
        }
    }
}

/// Every file under `dir` with its size and mtime, in order.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                walk(&entry.path(), out);
            } else {
                out.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

async fn reload(dir: &Path, registry: &Registry) {
    let dir_owned = dir.to_path_buf();
    let load = move || load_config_dir(&dir_owned, &Limits::default());
    let loaded = match tokio::task::spawn_blocking(load).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reloading definitions failed");
            return;
        }
    };
    let docs = match documents_of(loaded) {
        Ok(docs) => docs,
        Err(diagnostics) => {
            for d in diagnostics.iter() {
                tracing::error!("{d}");
            }
            tracing::error!(dir = %dir.display(), "definitions rejected: the last good set stays live");
            return;
        }
    };
    match registry
        .apply(docs, &apply_options(dir, registry.origin()))
        .await
    {
        Ok(report) => {
            for line in report.iter().filter(|a| a.action != Action::Unchanged) {
                tracing::info!("{line}");
            }
            let count = registry.live().current().workflows.len();
            tracing::info!(workflows = count, "definitions reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "definitions rejected: the last good set stays live")
        }
    }
}
