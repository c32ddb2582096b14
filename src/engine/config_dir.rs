//! `--config-dir`: the definitions directory reconciled continuously. A
//! change to its files is compiled whole; a valid set replaces the live one
//! at once (runs in flight finish on the version they started with), an
//! invalid one is reported with file, line and column and the last good set
//! stays live.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::live::{Live, LiveHandle};
use crate::definitions::{Limits, load_config_dir};

/// Quiet time after a change before reloading, so an editor's save (or a
/// `git pull` touching many files) is one reload.
const DEBOUNCE: Duration = Duration::from_millis(150);

pub async fn config_worker(
    dir: PathBuf,
    secrets_dir: Option<PathBuf>,
    live: LiveHandle,
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
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), "cannot watch the config dir; definitions will not reload");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
        tracing::error!(error = %e, dir = %dir.display(), "cannot watch the config dir; definitions will not reload");
        return;
    }
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
        reload(&dir, secrets_dir.as_deref(), &live).await;
    }
}

async fn reload(dir: &std::path::Path, secrets_dir: Option<&std::path::Path>, live: &LiveHandle) {
    let dir_owned = dir.to_path_buf();
    let load = move || load_config_dir(&dir_owned, &Limits::default());
    let loaded = match tokio::task::spawn_blocking(load).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reloading definitions failed");
            return;
        }
    };
    if loaded.diagnostics.has_errors() {
        for d in loaded.diagnostics.iter() {
            tracing::error!("{d}");
        }
        tracing::error!(dir = %dir.display(), "definitions rejected: the last good set stays live");
        return;
    }
    let count = loaded.set.workflows.len();
    match Live::new(loaded.set, secrets_dir) {
        Ok(next) => {
            live.swap(next);
            tracing::info!(workflows = count, "definitions reloaded");
        }
        Err(e) => tracing::error!(error = %e, "definitions rejected: the last good set stays live"),
    }
}
