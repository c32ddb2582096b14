//! The agent: watch the data dir, turn changes into events, record them with
//! the runs they start, and run those. Long-lived tasks are `_worker`
//! functions supervised by [`serve`], all stopped by one cancellation token.

pub mod causes;
pub mod clock;
pub mod config_dir;
pub mod dispatch;
pub mod intake;
pub mod live;
pub mod registry;
pub mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::causes::{Causes, Recent};
use self::dispatch::Dispatcher;
use self::intake::{Arrival, Intake, Target};
use self::live::LiveHandle;
use self::registry::{Action, Registry, documents_of};
use self::run::{Job, Runtime};
use crate::definitions::{Limits, load_config_dir};
use crate::events::ignore::Ignore;
use crate::events::index::FileMeta;
use crate::events::reconcile::{Change, Hint, Reconciler, Timing};
use crate::events::watcher::{self, Watch};
use crate::events::{Event, EventType, Source, new_id, now_ms};
use crate::store::{IndexOp, RunStatus, Store, Write, Writer};

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
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating the data dir `{}`", opts.data_dir.display()))?;
    let data_dir = opts.data_dir.canonicalize()?;
    let output_dir = data_dir.join(crate::datadir::OUTPUT_DIR);
    std::fs::create_dir_all(&output_dir)
        .with_context(|| format!("creating `{}`", output_dir.display()))?;
    let store = Store::open(opts.database_url.as_deref(), &data_dir).await?;
    tracing::info!(backend = ?store.backend(), "store open");
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
    let writer = Writer::start(store.clone());
    let rt = Arc::new(Runtime {
        store: store.clone(),
        writer: writer.clone(),
        data_dir: data_dir.clone(),
        root: Arc::new(root),
        http: Default::default(),
        causes: Arc::new(Causes::default()),
        actors: Arc::new(Recent::default()),
        output_cap: opts.output_cap,
        node: opts
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id(&data_dir)),
        lease: opts.lease,
        shutdown: shutdown.clone(),
        changes: tokio::sync::broadcast::channel(1024).0,
        clock: Default::default(),
    });
    let checkpoints = tokio::spawn(checkpoint_worker(store.clone(), shutdown.clone()));
    let retention = tokio::spawn(retention_worker(
        store.clone(),
        opts.retention,
        shutdown.clone(),
    ));
    let (dispatcher, dispatch_done) =
        dispatch::start(Arc::clone(&rt), opts.workers, opts.shutdown_grace);
    let dispatch_task = tokio::spawn(dispatch_done);

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "http listening");
    let intake = Intake {
        rt: Arc::clone(&rt),
        live: registry.live().clone(),
        registry: Arc::clone(&registry),
        dispatcher: dispatcher.clone(),
        max_chain_depth: opts.max_chain_depth,
    };
    let api = crate::server::Api {
        registry: Arc::clone(&registry),
        rt: Arc::clone(&rt),
        intake: intake.clone(),
    };
    let server = tokio::spawn(crate::server::http_worker(listener, api, shutdown.clone()));

    tracing::info!(node = %rt.node, "node");
    let wakeups = store.listen(shutdown.clone());
    let leases = tokio::spawn(lease_worker(
        Arc::clone(&rt),
        registry.live().clone(),
        dispatcher.clone(),
        wakeups.clone(),
        opts.poll_interval,
    ));
    let refresh = tokio::spawn(refresh_worker(
        Arc::clone(&registry),
        wakeups,
        opts.poll_interval,
        shutdown.clone(),
    ));
    let config_task = opts.config_dir.clone().map(|dir| {
        tokio::spawn(config_dir::config_worker(
            dir,
            Arc::clone(&registry),
            opts.poll_interval,
            shutdown.clone(),
        ))
    });

    // The index loads while the watches go in (one per directory): both are
    // needed before the comparison of the tree with the index, neither
    // needs the other.
    let watching = {
        let (dir, buffer, ignore) = (data_dir.clone(), opts.event_buffer, ignore.clone());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            watcher::watch(&dir, buffer, ignore).map(|w| (w, started.elapsed()))
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
    let reconciler = Reconciler::new(data_dir.clone(), index, ignore, Timing::default());
    let events = EventsWorker {
        intake,
        poll_interval: opts.poll_interval,
    };
    let result = events.run(reconciler, watch, hints).await;
    shutdown.cancel();
    let _ = dispatch_task.await;
    // What the runs recorded is committed before the last checkpoint.
    writer.flush().await;
    let _ = server.await;
    let _ = checkpoints.await;
    let _ = retention.await;
    let _ = refresh.await;
    let _ = leases.await;
    // Whatever this node leaves unfinished, another node may take up now
    // rather than when the lease runs out.
    match store.release_leases(&rt.node).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "unfinished runs released to other nodes"),
        Err(e) => {
            tracing::warn!(error = %e, "releasing the unfinished runs failed; they wait for their lease to run out")
        }
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
    let opts = config_dir::apply_options(dir);
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

/// Deletes finished runs older than `retention`: at start, then every
/// hour (or every half retention, when that is shorter).
async fn retention_worker(store: Store, retention: Duration, shutdown: CancellationToken) {
    let period = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let cutoff = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match store.delete_finished_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(runs = n, "retention: old runs deleted"),
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Gives the allocator's free pages back to the system after a whole-tree
/// walk: its buffers (one arena per walking thread) are gone, and an idle
/// agent should not keep their size resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The host's name and the data dir: the same agent restarted is the same
/// node, and takes its own unfinished runs back at once.
fn default_node_id(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", data_dir.display())
}

/// Picks up definition and pause changes other nodes made: when one of
/// them says so, and every `poll` in case a notification was lost.
async fn refresh_worker(
    registry: Arc<Registry>,
    wakeups: crate::store::Wakeups,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = wakeups.definitions.notified() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = registry.refresh().await {
            tracing::warn!(error = %e, "checking the store for definition changes failed");
        }
    }
}

/// Checkpoints the SQLite log once a second, off the runs' path.
async fn checkpoint_worker(store: Store, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.checkpoint(false).await {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
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

/// Turns hints into changes, changes into recorded events and runs.
struct EventsWorker {
    intake: Intake,
    /// How often the tree is compared with the index while some directory
    /// has no watch (`--poll-interval`).
    poll_interval: Duration,
}

impl EventsWorker {
    async fn run(
        &self,
        mut rec: Reconciler,
        mut watch: Watch,
        mut hints: mpsc::Receiver<Hint>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut changes: Vec<Change> = Vec::new();
        let mut version = self.intake.live.current();
        rec.set_settle_rules(version.settle_rules());
        let caught_up = rec.scan_all(Instant::now(), &mut changes);
        self.record_gap(
            "start: changes made while nexusd was not running",
            caught_up,
            started,
        )
        .await;
        self.resume().await;
        let scanned = 0..changes.len();
        self.process(std::mem::take(&mut changes), scanned, rec.take_settled())
            .await;
        release_free_memory();
        tracing::info!(
            files = rec.index_len(),
            changes = caught_up,
            ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        // While the watch is degraded: when to compare the tree next.
        let mut next_poll = Instant::now() + self.poll_interval;
        loop {
            let deadline = rec.next_deadline().map(tokio::time::Instant::from_std);
            let poll_at = watch
                .is_degraded()
                .then(|| tokio::time::Instant::from_std(next_poll));
            tokio::select! {
                biased;
                () = self.intake.rt.shutdown.cancelled() => break,
                () = watch.lost_wake.notified() => {}
                hint = hints.recv() => match hint {
                    Some(h) => {
                        let now = Instant::now();
                        rec.hint(h, now, &mut changes);
                        let mut more = 0;
                        while let Ok(h) = hints.try_recv() {
                            rec.hint(h, now, &mut changes);
                            more += 1;
                            if more >= 4096 {
                                break;
                            }
                        }
                    }
                    None => break,
                },
                () = sleep_until_opt(deadline) => {}
                () = sleep_until_opt(poll_at) => {}
            }
            let current = self.intake.live.current();
            if !Arc::ptr_eq(&current, &version) {
                rec.set_settle_rules(current.settle_rules());
                version = current;
            }
            // Lost events and a due poll share one comparison of the tree.
            let lost = watch.lost.swap(false, Ordering::SeqCst);
            let mut scanned = 0..0;
            let poll = watch.is_degraded() && Instant::now() >= next_poll;
            if lost || poll {
                let scan_started = Instant::now();
                if poll {
                    next_poll = scan_started + self.poll_interval;
                    // The limit may have been raised: watched again, the
                    // comparison below covers the time without.
                    watch.rewatch();
                }
                if lost {
                    tracing::warn!(
                        "watch events were lost (queue overflow or watcher error): rescanning the data dir"
                    );
                }
                let before = changes.len();
                let found = rec.scan_all(scan_started, &mut changes);
                scanned = before..changes.len();
                release_free_memory();
                if lost {
                    self.record_gap("overflow: watch events were lost", found, scan_started)
                        .await;
                } else if found > 0 {
                    self.record_gap(
                        "poll: directories without a watch (the inotify watch limit)",
                        found,
                        scan_started,
                    )
                    .await;
                }
            }
            rec.tick(Instant::now(), &mut changes);
            let settled = rec.take_settled();
            if !changes.is_empty() || !settled.is_empty() {
                self.process(std::mem::take(&mut changes), scanned, settled)
                    .await;
            }
        }
        drop(watch);
        Ok(())
    }

    /// Records a whole-tree comparison as a gap, in the store and the log.
    async fn record_gap(&self, reason: &str, changes: usize, started: Instant) {
        let scan_ms = started.elapsed().as_millis() as u64;
        crate::metrics::METRICS.gap(changes);
        tracing::info!(
            reason,
            changes,
            scan_ms,
            "gap: the tree was compared with the index"
        );
        if let Err(e) = self
            .intake
            .rt
            .store
            .record_gap(reason, changes, scan_ms, now_ms())
            .await
        {
            tracing::error!(error = %e, "recording the gap failed");
        }
    }

    /// Claims the runs a previous agent of this node left unfinished
    /// (killed, crashed), and those no node holds any more, and runs them.
    async fn resume(&self) {
        // Until it succeeds: this node's lease renewals would keep runs it
        // failed to claim from every other node.
        let mut wait = Duration::from_millis(100);
        loop {
            let (node, until) = self.intake.rt.lease_now();
            match self
                .intake
                .rt
                .store
                .claim_unfinished(&node, until, now_ms(), true)
                .await
            {
                Ok(runs) => {
                    return take_up(
                        &self.intake.rt,
                        &self.intake.live,
                        &self.intake.dispatcher,
                        runs,
                    )
                    .await;
                }
                Err(e) => tracing::error!(error = %e, "cannot claim unfinished runs; trying again"),
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.intake.rt.shutdown.cancelled() => return,
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// Records the events of `changes` with their runs, and the index
    /// entries `settled` without an event, then hands the runs over. The
    /// changes in `scanned` came from a comparison of the tree.
    async fn process(
        &self,
        changes: Vec<Change>,
        scanned: std::ops::Range<usize>,
        settled: Vec<(String, FileMeta)>,
    ) {
        let rt = &self.intake.rt;
        // First: a change of the same path later in the batch wins.
        let mut index: Vec<IndexOp> = settled
            .into_iter()
            .map(|(path, meta)| IndexOp::Put(path, meta))
            .collect();
        let mut arrivals = Vec::with_capacity(changes.len());
        for (i, c) in changes.into_iter().enumerate() {
            if let Some(old) = &c.old_path {
                index.push(IndexOp::Remove(old.clone()));
            }
            match c.meta {
                Some(m) if c.kind != EventType::Deleted => {
                    index.push(IndexOp::Put(c.path.clone(), m))
                }
                _ => index.push(IndexOp::Remove(c.path.clone())),
            }
            let event = Event {
                id: new_id("evt_"),
                kind: c.kind,
                size: c.meta.map(|m| m.size),
                mtime_ms: c.meta.map(|m| m.mtime_ms()),
                observed_ms: now_ms(),
                cause: rt.causes.take(&c.path),
                actor: rt.actors.take(&c.path),
                source: if scanned.contains(&i) {
                    Source::Scan
                } else {
                    Source::Watch
                },
                path: c.path,
                old_path: c.old_path,
                raw_abs: c.raw,
            };
            tracing::debug!(event = %event.id, kind = %event.kind, path = %event.path, "event");
            arrivals.push(Arrival {
                event,
                target: Target::Matched,
            });
        }
        let plan = self.intake.plan(arrivals, index);
        // While the database is unreachable, wait for it: new hints queue up
        // meanwhile (and past the buffer, a rescan finds their changes).
        if let Err(e) = self.intake.commit_patiently(&plan).await {
            tracing::error!(error = %e, events = plan.events.len(), "recording events failed; their runs are not started (the next start finds the changes again)");
            return;
        }
        self.intake.publish(plan).await;
    }
}

/// Hands claimed unfinished runs to the dispatcher: queued ones as they
/// were, running ones as a new attempt (their interrupted attempt recorded
/// as such), so every recorded event's runs reach a final state.
async fn take_up(
    rt: &Runtime,
    live: &LiveHandle,
    dispatcher: &Dispatcher,
    runs: Vec<crate::store::UnfinishedRun>,
) {
    if runs.is_empty() {
        return;
    }
    let live = live.current();
    let secrets = Arc::clone(&live.secrets);
    let mut jobs = Vec::new();
    for run in runs {
        let Some(workflow) = live.workflows.iter().find(|w| w.name == run.workflow) else {
            rt.writer
                .send(Write::RunClosed {
                    run_id: run.id.clone(),
                    fence: run.fence,
                    status: RunStatus::Cancelled,
                    reason: "workflow removed before the run could finish".to_owned(),
                    at_ms: now_ms(),
                })
                .await;
            continue;
        };
        let mut first_attempt = run.attempts + 1;
        if run.status == "running" {
            if let Err(e) = rt
                .store
                .interrupt_attempt(&run.id, run.attempts, now_ms())
                .await
            {
                tracing::error!(error = %e, "recording failed");
            }
        } else if run.status == "queued" {
            first_attempt = 1;
        }
        tracing::info!(run = %run.id, workflow = %run.workflow, status = %run.status, "resuming an unfinished run");
        jobs.push(Job {
            run_id: run.id,
            workflow: Arc::clone(workflow),
            event: run.event,
            secrets: Arc::clone(&secrets),
            first_attempt,
            not_before_ms: run.next_attempt_ms,
            fence: run.fence,
        });
    }
    dispatcher.submit(jobs).await;
}

/// Keeps this node's leases alive (a third of the lease apart), and takes
/// up runs whose node stopped renewing them (it died, or hangs) or
/// released them (it stopped): looked for at each renewal, every `poll`,
/// and at once when a stopping node says so.
async fn lease_worker(
    rt: Arc<Runtime>,
    live: LiveHandle,
    dispatcher: Dispatcher,
    wakeups: crate::store::Wakeups,
    poll: Duration,
) {
    let mut renew = tokio::time::interval((rt.lease / 3).max(Duration::from_millis(100)));
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = tokio::time::interval(poll);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renewing = tokio::select! {
            _ = renew.tick() => true,
            _ = look.tick() => false,
            () = wakeups.runs.notified() => false,
            () = rt.shutdown.cancelled() => return,
        };
        let (node, until) = rt.lease_now();
        if renewing && let Err(e) = rt.store.renew_leases(&node, until).await {
            tracing::warn!(error = %e, "renewing run leases failed");
            continue;
        }
        match rt
            .store
            .claim_unfinished(&node, until, now_ms(), false)
            .await
        {
            Ok(runs) if !runs.is_empty() => {
                tracing::warn!(
                    runs = runs.len(),
                    "taking up runs whose node stopped renewing their lease"
                );
                take_up(&rt, &live, &dispatcher, runs).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for abandoned runs failed"),
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
