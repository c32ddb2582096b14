//! The agent put together: the store, the definitions, the engine's
//! workers, the HTTP server and the event loop, each a task supervised here
//! and all stopped by one cancellation token (SIGINT, SIGTERM). The one
//! module that knows every layer; none of them knows it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::definitions::{Limits, load_config_dir};
use crate::engine::election::Election;
use crate::engine::event_loop::{EventLoop, resume};
use crate::engine::intake::Intake;
use crate::engine::node::{Role, Watching, heartbeat_worker, hostname, register};
use crate::engine::registry::{Action, Registry, documents_of};
use crate::engine::run::Runtime;
use crate::engine::{config_dir, dispatch, leases, workers};
use crate::events::causes::{Causes, Recent};
use crate::events::ignore::Ignore;
use crate::events::reconcile::{Reconciler, Timing};
use crate::events::watcher;
use crate::store::{NodeInfo, Store, Writer};

pub use crate::engine::node::WatchMode;

/// How the agent runs (`nexusd serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_chain_depth: u32,
    pub ignore: Vec<String>,
    pub secrets_dir: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub output_cap: usize,
    pub event_buffer: usize,
    /// `postgres://...` to record in PostgreSQL; `None` for the SQLite file.
    pub database_url: Option<String>,
    /// Finished runs older than this are deleted.
    pub retention: Duration,
    /// This agent's name in run leases; by default the host and the data dir.
    pub node_id: Option<String>,
    /// How long a claim on a run holds without renewal.
    pub lease: Duration,
    /// How often to look for other agents' changes when no notification
    /// came (PostgreSQL's LISTEN/NOTIFY wakes agents at once).
    pub poll_interval: Duration,
    /// How the data dir's watcher sees changes.
    pub watch: WatchMode,
    /// With [`WatchMode::Poll`]: how often the tree is compared.
    pub watch_interval: Duration,
    /// Serve the dashboard at `/`.
    pub ui: bool,
    pub session_ttl: Duration,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating the data dir `{}`", opts.data_dir.display()))?;
    let data_dir = opts.data_dir.canonicalize()?;
    let output_dir = data_dir.join(crate::datadir::OUTPUT_DIR);
    std::fs::create_dir_all(&output_dir)
        .with_context(|| format!("creating `{}`", output_dir.display()))?;
    let origin = crate::datadir::origin(&data_dir).map_err(anyhow::Error::msg)?;
    let opened = Store::open(opts.database_url.as_deref(), &data_dir).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let me = NodeInfo {
        origin: origin.clone(),
        data_dir: data_dir.display().to_string(),
        host: hostname(),
        pid_space: crate::store::pid_space(),
        pid: i64::from(std::process::id()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen: listener.local_addr()?.to_string(),
        lease_ms: i64::try_from(opts.lease.as_millis()).unwrap_or(i64::MAX),
        started_ms: opened.now_ms(),
    };
    let node = register(&opened, opts.node_id.as_deref(), &me).await?;
    let store = opened.serving(&origin, &node);
    tracing::info!(backend = ?store.backend(), %origin, "store open");
    let taken = store.adopt_rows_without_origin().await?;
    if taken > 0 {
        tracing::info!(
            rows = taken,
            "rows recorded before data dirs had an identity are this data dir's now"
        );
    }
    let registry = Arc::new(Registry::open(store.clone(), opts.secrets_dir.clone()).await?);
    if let Some(dir) = &opts.config_dir {
        apply_config_dir_at_start(&registry, dir).await?;
    }
    tracing::info!(
        workflows = registry.live().current().workflows.len(),
        "definitions loaded"
    );
    let ignore = Ignore::new(&opts.ignore).map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_worker(shutdown.clone()));

    let root = cap_std::fs::Dir::open_ambient_dir(&data_dir, cap_std::ambient_authority())
        .with_context(|| format!("opening the data dir `{}`", data_dir.display()))?;
    let writer = Writer::start(store.clone(), shutdown.clone());
    let rt = Arc::new(Runtime {
        store: store.clone(),
        writer: writer.clone(),
        data_dir: data_dir.clone(),
        root: Arc::new(root),
        http: Default::default(),
        causes: Arc::new(Causes::default()),
        actors: Arc::new(Recent::default()),
        output_cap: opts.output_cap,
        node,
        lease: opts.lease,
        shutdown: shutdown.clone(),
        changes: tokio::sync::broadcast::channel(1024).0,
        clock: Default::default(),
        logs: Default::default(),
    });
    let checkpoints = tokio::spawn(workers::checkpoint_worker(store.clone(), shutdown.clone()));
    let retention = tokio::spawn(workers::retention_worker(
        store.clone(),
        opts.retention,
        shutdown.clone(),
    ));
    let (dispatcher, dispatch_done) = dispatch::start(
        Arc::clone(&rt),
        registry.live().clone(),
        opts.workers,
        opts.shutdown_grace,
    );
    let dispatch_task = tokio::spawn(dispatch_done);

    tracing::info!(listen = %listener.local_addr()?, "http listening");
    let intake = Intake {
        rt: Arc::clone(&rt),
        live: registry.live().clone(),
        registry: Arc::clone(&registry),
        dispatcher: dispatcher.clone(),
        max_chain_depth: opts.max_chain_depth,
        ready: CancellationToken::new(),
        backfills: Default::default(),
    };
    let api = crate::server::Api {
        registry: Arc::clone(&registry),
        rt: Arc::clone(&rt),
        intake: intake.clone(),
        ui: opts.ui,
        session_ttl: opts.session_ttl,
    };
    let server = tokio::spawn(crate::server::http_worker(listener, api, shutdown.clone()));

    tracing::info!(node = %rt.node, "node");
    let wakeups = store.listen(shutdown.clone());
    let leases = tokio::spawn(leases::lease_worker(
        Arc::clone(&rt),
        dispatcher.clone(),
        wakeups.clone(),
        opts.poll_interval,
    ));
    let refresh = tokio::spawn(workers::refresh_worker(
        Arc::clone(&registry),
        wakeups,
        opts.poll_interval,
        shutdown.clone(),
    ));
    let role = Arc::new(Role::default());
    let heartbeat = tokio::spawn(heartbeat_worker(
        store.clone(),
        me.clone(),
        Arc::clone(&role),
        dispatcher.clone(),
        Watching {
            mode: opts.watch,
            interval: opts.watch_interval,
            poll: opts.poll_interval,
        },
        shutdown.clone(),
    ));
    let backfills = tokio::spawn(crate::engine::backfills::backfill_worker(
        intake.clone(),
        opts.poll_interval,
    ));
    let config_task = opts.config_dir.clone().map(|dir| {
        tokio::spawn(config_dir::config_worker(
            dir,
            Arc::clone(&registry),
            opts.poll_interval,
            shutdown.clone(),
        ))
    });

    resume(&intake).await;
    let mut election = Election::new(
        store.clone(),
        &data_dir.join(crate::datadir::STATE_DIR),
        &rt.node,
    );
    let mut term = election.attempt().await;
    if term.is_none() && !shutdown.is_cancelled() {
        if election.held_elsewhere() {
            tracing::info!(
                "standby: another agent watches this data dir; this one runs its runs, and watches it when elected"
            );
        }
        tracing::info!(role = "standby", "ready");
        intake.ready.cancel();
    }
    let mut result = Ok(());
    loop {
        let term = match term.take() {
            Some(t) => t,
            None => match election.elected(&shutdown).await {
                Some(t) => t,
                None => break,
            },
        };
        let start_reason = match &term.previous {
            Some(node) => {
                tracing::info!(previous = %node, "elected the data dir's watcher: taking over from another agent");
                format!(
                    "takeover: changes made while no agent watched the data dir (its watcher was {node})"
                )
            }
            None => "start: changes made while nexusd was not running".to_owned(),
        };
        role.set_watching(true);
        let watched = watch_data_dir(&store, &data_dir, &opts, &ignore).await;
        let (reconciler, watch, hints) = match watched {
            Ok(w) => w,
            // The database away (often why the last watcher lost its
            // session): the lock goes back, and the election goes on.
            Err(e)
                if term.lost.is_cancelled()
                    || shutdown.is_cancelled()
                    || e.downcast_ref::<crate::store::StoreError>()
                        .is_some_and(|s| s.is_transient()) =>
            {
                tracing::warn!(error = %e, "starting to watch was cut short; electing again");
                role.set_watching(false);
                drop(term);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let events = EventLoop {
            intake: intake.clone(),
            poll_interval: match opts.watch {
                WatchMode::Inotify => opts.poll_interval,
                WatchMode::Poll => opts.watch_interval,
            },
            fence: term.fence,
            lost: term.lost.clone(),
            start_reason,
        };
        result = events.run(reconciler, watch, hints).await;
        role.set_watching(false);
        if shutdown.is_cancelled() || result.is_err() {
            break;
        }
        tracing::warn!(
            "this agent is no longer the data dir's watcher: it runs runs, and watches again when elected"
        );
    }
    shutdown.cancel();
    let _ = dispatch_task.await;
    // What the runs recorded is committed before the last checkpoint.
    writer.flush().await;
    let _ = server.await;
    let _ = checkpoints.await;
    let _ = retention.await;
    let _ = refresh.await;
    let _ = leases.await;
    let _ = backfills.await;
    if let Ok(Err(e)) = heartbeat.await
        && result.is_ok()
    {
        result = Err(e);
    }
    // Whatever this node leaves unfinished, another node may take up now
    // rather than when the lease runs out.
    match store.release_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "unfinished runs released to other nodes"),
        Err(e) => {
            tracing::warn!(error = %e, "releasing the unfinished runs failed; they wait for their lease to run out")
        }
    }
    if let Err(e) = store.node_stopped(&me).await {
        tracing::warn!(error = %e, "recording this node's stop failed");
    }
    if let Err(e) = store.checkpoint(true).await {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    if let Some(t) = config_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    result
}

/// Applies the config dir before anything runs; an invalid one stops the
/// start (the operator is there to see it), unlike a later reload.
async fn apply_config_dir_at_start(
    registry: &Registry,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let loaded = load_config_dir(dir, &Limits::default());
    for w in loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity != crate::definitions::Severity::Error)
    {
        tracing::warn!("{w}");
    }
    let docs = match documents_of(loaded) {
        Ok(docs) => docs,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            anyhow::bail!(
                "the definitions in `{}` are invalid: fix the errors above",
                dir.display()
            );
        }
    };
    let opts = config_dir::apply_options(dir, registry.origin());
    match registry.apply(docs, &opts).await {
        Ok(report) => {
            for line in report.iter().filter(|a| a.action != Action::Unchanged) {
                tracing::info!("{line}");
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("applying `{}`: {e}", dir.display())),
    }
}

/// Watches the data dir (inotify, or the polls of `--watch poll`) while the
/// stored index loads: both are needed before the comparison of the tree
/// with the index, neither needs the other.
async fn watch_data_dir(
    store: &Store,
    data_dir: &std::path::Path,
    opts: &ServeOptions,
    ignore: &Ignore,
) -> anyhow::Result<(
    Reconciler,
    watcher::Watch,
    tokio::sync::mpsc::Receiver<crate::events::reconcile::Hint>,
)> {
    let watching = {
        let (dir, buffer, ignore, mode) = (
            data_dir.to_path_buf(),
            opts.event_buffer,
            ignore.clone(),
            opts.watch,
        );
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match mode {
                WatchMode::Inotify => watcher::watch(&dir, buffer, ignore),
                WatchMode::Poll => Ok(watcher::polling(&dir)),
            }
            .map(|w| (w, started.elapsed()))
        })
    };
    let index_started = Instant::now();
    let index = store.load_index().await?;
    let index_ms = index_started.elapsed().as_millis() as u64;
    let ((watch, hints), watch_time) = watching.await?.context("watching the data dir")?;
    tracing::info!(
        files = index.len(),
        index_ms,
        watch_ms = watch_time.as_millis() as u64,
        "index loaded, data dir watched"
    );
    let reconciler = Reconciler::new(
        data_dir.to_path_buf(),
        index,
        ignore.clone(),
        Timing::default(),
    );
    Ok((reconciler, watch, hints))
}

async fn signal_worker(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}
