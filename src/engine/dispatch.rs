//! Starting runs in order: per (workflow, path) one at a time and in event
//! order; across paths in parallel, up to the workflow's `concurrency` and
//! the agent's `--workers`.
//!
//! The dispatcher holds at most [`capacity`] runs in memory (waiting,
//! running, or waiting out a retry's backoff, which takes no worker slot).
//! Past it, the intake records new runs unclaimed ("spilled"), and the
//! dispatcher claims them from the store, oldest first, as room frees up:
//! a backlog of any size costs the agent what its capacity costs, and
//! survives anything, being in the store. Every run it holds is registered
//! with its claim (fence) and a stop token: the lease worker renews exactly
//! these, and a run whose lease was lost is stopped at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::live::LiveHandle;
use super::run::{Job, Next, Runtime, execute};
use crate::store::{RunClose, RunStatus, UnfinishedRun, Write};

type Key = (String, String);

/// Runs held in memory at most, for `workers` workers: enough that a burst
/// coalesces and workers never wait on a claim, few enough that a backlog
/// costs little (a job is well under a kilobyte).
pub fn capacity(workers: usize) -> usize {
    (workers.saturating_mul(16)).max(1024)
}

enum Msg {
    Submit(Vec<Job>),
    /// A run's task ended: how, and the keys it held.
    Ended(Key, Option<Key>, Box<Job>, Next),
}

/// A handle to submit runs and to manage the runs this node holds.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Wakes the dispatcher to claim runs from the store.
    claim: Notify,
    /// Wakes the lease worker to renew at once: runs were cancelled.
    recheck: Notify,
    /// Wakes those waiting for room (a backfill): a run ended.
    freed: Notify,
}

struct Inner {
    /// Claims wait for [`Dispatcher::open`]: until this node handed back
    /// what a previous agent of it left, a claim would skip those runs and
    /// take newer ones before them.
    open: bool,
    /// The runs this node holds, by id.
    runs: HashMap<String, Held>,
    /// Room promised to plans being committed.
    reserved: usize,
    /// Unclaimed runs may wait in the store: new runs go there too (behind
    /// them, in order) until a claim comes back short.
    backlog: bool,
    /// Plans recording their runs unclaimed right now, and how many ever
    /// did: a claim that began before one of them cannot tell the backlog
    /// is gone.
    spilling: usize,
    spills: u64,
    /// Runs were stopped (cancelled, or lost): retries they left parked
    /// are dropped at the dispatcher's next turn, freeing their keys.
    stopped: bool,
}

/// A run this node holds.
struct Held {
    /// The fencing counter of the claim.
    fence: i64,
    /// When its lease was last known good (a claim or renewal sent then):
    /// by the database's clock it lasts at least `lease` from here.
    confirmed: Instant,
    /// Cancelled when the run must stop: its lease is lost.
    stop: CancellationToken,
}

/// How a plan's queued runs go in: held here (room reserved), or recorded
/// unclaimed for a later claim.
pub enum Admission {
    Held(Reservation),
    Spilled(SpillTicket),
}

/// Room for a plan's runs; given back when dropped unused (its commit
/// failed).
pub struct Reservation {
    shared: Arc<Shared>,
    n: usize,
    /// When the plan's leases were computed.
    at: Instant,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.n > 0 {
            self.shared.inner.lock().unwrap().reserved -= self.n;
        }
    }
}

/// A plan recording its runs unclaimed; when dropped (committed, or not),
/// the dispatcher looks at the store again.
pub struct SpillTicket {
    shared: Arc<Shared>,
}

impl Drop for SpillTicket {
    fn drop(&mut self) {
        self.shared.inner.lock().unwrap().spilling -= 1;
        self.shared.claim.notify_one();
    }
}

impl Dispatcher {
    /// Decides where a plan's `n` queued runs go: held here when there is
    /// room and no backlog waits in the store; else into the store.
    pub fn admit(&self, n: usize) -> Admission {
        let mut inner = self.shared.inner.lock().unwrap();
        let held = inner.runs.len() + inner.reserved;
        if n == 0 || (!inner.backlog && held + n <= self.shared.capacity) {
            inner.reserved += n;
            return Admission::Held(Reservation {
                shared: Arc::clone(&self.shared),
                n,
                at: Instant::now(),
            });
        }
        inner.backlog = true;
        inner.spilling += 1;
        inner.spills += 1;
        Admission::Spilled(SpillTicket {
            shared: Arc::clone(&self.shared),
        })
    }

    /// Hands a committed plan's runs over, in event order. Waits when the
    /// dispatcher is busy, which slows the intake rather than losing
    /// anything.
    pub async fn submit(&self, mut room: Reservation, mut jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        {
            let mut inner = self.shared.inner.lock().unwrap();
            inner.reserved -= room.n;
            room.n = 0;
            for job in &mut jobs {
                job.stop = hold(&mut inner, job, room.at);
            }
        }
        if self.tx.send(Msg::Submit(jobs)).await.is_err() {
            tracing::warn!("dispatcher stopped; runs stay queued");
        }
    }

    /// Lets claims begin (at start, once this node's previous runs are
    /// released to the store), and looks.
    pub fn open(&self) {
        self.shared.inner.lock().unwrap().open = true;
        self.look();
    }

    /// Looks at the store for claimable runs (another node's, released or
    /// abandoned), as room allows.
    pub fn look(&self) {
        self.shared.inner.lock().unwrap().backlog = true;
        self.shared.claim.notify_one();
    }

    /// Has the lease worker renew this node's leases at once: a run it
    /// holds may have been cancelled, and stops when the renewal misses it.
    pub fn recheck(&self) {
        self.shared.recheck.notify_one();
    }

    /// Until [`Dispatcher::recheck`] is called.
    pub async fn rechecked(&self) {
        self.shared.recheck.notified().await;
    }

    /// Waits until `n` more runs would leave this node half its capacity
    /// free (for the watch's runs) and no backlog waits in the store: the
    /// pace of a backfill, which so never buries the new files' runs. A
    /// backlog that does not clear holds it back a second at most.
    pub async fn room_for(&self, n: usize) {
        loop {
            let freed = self.shared.freed.notified();
            let (full, backlog) = {
                let inner = self.shared.inner.lock().unwrap();
                let held = inner.runs.len() + inner.reserved;
                (held + n > self.shared.capacity / 2, inner.backlog)
            };
            if !full && !backlog {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), freed).await;
            if !full {
                return;
            }
        }
    }

    /// How many runs this node holds (running, or waiting in memory).
    pub fn in_flight(&self) -> usize {
        self.shared.inner.lock().unwrap().runs.len()
    }

    /// The runs this node holds, with the fence of each claim.
    pub fn held(&self) -> Vec<(String, i64)> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .runs
            .iter()
            .map(|(id, h)| (id.clone(), h.fence))
            .collect()
    }

    /// After a renewal sent at `sent` of the runs `asked`: those `kept`
    /// hold their lease anew; the others are lost (another node claimed
    /// them, or they were released) and stop at once.
    pub fn renewed(&self, asked: &[(String, i64)], kept: &HashSet<String>, sent: Instant) {
        let mut inner = self.shared.inner.lock().unwrap();
        for (id, fence) in asked {
            let Some(held) = inner.runs.get_mut(id).filter(|h| h.fence == *fence) else {
                continue;
            };
            if kept.contains(id) {
                held.confirmed = held.confirmed.max(sent);
            } else {
                tracing::warn!(run = %id, "this node lost the run (it was cancelled, or another node holds it now): stopping it");
                held.stop.cancel();
                inner.runs.remove(id);
                inner.stopped = true;
            }
        }
        if inner.stopped {
            drop(inner);
            self.shared.claim.notify_one();
        }
    }

    /// Stops the runs whose lease may have run out (not renewed for
    /// `lease`, the database away): another node may be running them now.
    pub fn expire(&self, lease: Duration) {
        expire(&self.shared, lease);
    }
}

fn expire(shared: &Shared, lease: Duration) {
    let mut inner = shared.inner.lock().unwrap();
    let before = inner.runs.len();
    inner.runs.retain(|id, held| {
        let live = held.confirmed.elapsed() < lease;
        if !live {
            tracing::warn!(run = %id, "the run's lease ran out unrenewed: stopping it (it is claimed again)");
            held.stop.cancel();
        }
        live
    });
    if inner.runs.len() < before {
        inner.stopped = true;
    }
}

/// Registers a run as held under its claim; returns its stop token.
fn hold(inner: &mut Inner, job: &Job, confirmed: Instant) -> CancellationToken {
    let stop = CancellationToken::new();
    let held = Held {
        fence: job.fence,
        confirmed,
        stop: stop.clone(),
    };
    if let Some(old) = inner.runs.insert(job.run_id.clone(), held) {
        // A claim of a run this node lost: the old copy must not go on.
        old.stop.cancel();
    }
    stop
}

/// Starts the dispatcher; the returned future ends after shutdown, when
/// running runs have finished or `grace` has passed (they are then killed
/// and their attempts recorded `interrupted`, to run again at the next
/// start).
pub fn start(
    rt: Arc<Runtime>,
    live: LiveHandle,
    workers: usize,
    grace: Duration,
) -> (Dispatcher, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(1024);
    let shared = Arc::new(Shared {
        capacity: capacity(workers.max(1)),
        // Until the first claim comes back short, a backlog may wait.
        inner: Mutex::new(Inner {
            open: false,
            runs: HashMap::new(),
            reserved: 0,
            backlog: true,
            spilling: 0,
            spills: 0,
            stopped: false,
        }),
        claim: Notify::new(),
        recheck: Notify::new(),
        freed: Notify::new(),
    });
    let dispatcher = Dispatcher {
        tx: tx.clone(),
        shared: Arc::clone(&shared),
    };
    let worker = dispatch_worker(rt, live, shared, rx, tx, workers.max(1), grace);
    (dispatcher, worker)
}

/// A run whose task ended with a retry due, or a job not due yet: its keys
/// stay held (later runs of its path wait), no worker slot is taken.
struct Parked {
    key: Key,
    old: Option<Key>,
    job: Job,
}

#[derive(Default)]
struct State {
    waiting: HashMap<Key, VecDeque<(u64, Job)>>,
    /// Arrival numbers, so a move can wait for what came before it on its
    /// old path.
    next_seq: u64,
    /// Waiting moves by the key of the path they left: later runs there
    /// wait for them.
    moves_from: HashMap<Key, BTreeSet<u64>>,
    /// Keys with waiting runs, oldest first.
    order: VecDeque<Key>,
    running_keys: HashSet<Key>,
    running_per_workflow: HashMap<String, u32>,
    /// Runs executing now (each takes a worker slot), with their fence.
    in_flight: HashMap<String, i64>,
    /// Runs waiting out a retry's backoff, by when it is due.
    parked: BTreeMap<(i64, u64), Parked>,
    /// Retries due, started before new runs.
    due: VecDeque<Parked>,
    /// After a failed claim: when to try again.
    claim_again: Option<tokio::time::Instant>,
    /// Workflows of claimed runs that this node's live definitions lack
    /// though they are applied (its definitions are behind, or it cannot
    /// load them), with the live set that lacked them: claims leave their
    /// runs to other nodes until the set changes.
    lacking: HashSet<String>,
    lacking_in: Option<Arc<super::live::Live>>,
}

async fn dispatch_worker(
    rt: Arc<Runtime>,
    live: LiveHandle,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Msg>,
    tx: mpsc::Sender<Msg>,
    workers: usize,
    grace: Duration,
) {
    let mut state = State::default();
    let mut tasks: JoinSet<String> = JoinSet::new();
    loop {
        let next_due = state.parked.first_key_value().map(|((at, _), _)| {
            let wait = (*at - rt.clock.now_ms()).max(0).unsigned_abs();
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Submit(jobs)) => {
                    for job in jobs {
                        enqueue(&rt, &shared, &mut state, job).await;
                    }
                }
                Some(Msg::Ended(key, old, job, next)) => ended(&rt, &shared, &mut state, key, old, *job, next),
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = shared.claim.notified() => {}
            () = sleep_until_opt(next_due) => {}
            () = sleep_until_opt(state.claim_again) => state.claim_again = None,
            () = rt.shutdown.cancelled() => break,
        }
        if std::mem::take(&mut shared.inner.lock().unwrap().stopped) {
            drop_stopped_retries(&mut state);
        }
        let now = rt.clock.now_ms();
        while let Some(entry) = state.parked.first_entry() {
            if entry.key().0 > now {
                break;
            }
            state.due.push_back(entry.remove());
        }
        if state.claim_again.is_none() {
            claim(&rt, &live, &shared, &mut state).await;
        }
        start_ready(&rt, &mut state, &mut tasks, &tx, workers);
    }
    // Tasks ending now need not wait to be heard.
    drop(rx);
    drain(&rt, state, tasks, grace).await;
}

/// A run's task ended: its worker slot is free; a retry is parked (its
/// keys still held), anything else lets its keys go.
fn ended(
    rt: &Runtime,
    shared: &Shared,
    state: &mut State,
    key: Key,
    old: Option<Key>,
    mut job: Job,
    next: Next,
) {
    if state.in_flight.get(&job.run_id) == Some(&job.fence) {
        state.in_flight.remove(&job.run_id);
    }
    if let Some(n) = state.running_per_workflow.get_mut(&key.0) {
        *n = n.saturating_sub(1);
    }
    if let Next::Retry { attempt, at_ms } = next
        && !job.stop.is_cancelled()
    {
        job.first_attempt = attempt;
        job.not_before_ms = Some(at_ms);
        park(state, Parked { key, old, job });
        return;
    }
    state.running_keys.remove(&key);
    if let Some(old) = old {
        state.running_keys.remove(&old);
    }
    release(shared, &job);
    if matches!(next, Next::Stopped) {
        tracing::debug!(run = %job.run_id, node = %rt.node, "run stopped");
    }
}

fn park(state: &mut State, parked: Parked) {
    state.next_seq += 1;
    let at = parked.job.not_before_ms.unwrap_or(0);
    state.parked.insert((at, state.next_seq), parked);
}

/// Claims runs from the store while a backlog may wait there and room
/// allows (a quarter of the capacity at least, so claims come in
/// batches): queued ones as they were, running ones as a new attempt
/// (their interrupted attempt recorded as such).
async fn claim(rt: &Runtime, live: &LiveHandle, shared: &Shared, state: &mut State) {
    let (want, spills, quiet) = {
        let inner = shared.inner.lock().unwrap();
        if !inner.backlog || !inner.open {
            return;
        }
        let held = inner.runs.len() + inner.reserved;
        let free = shared.capacity.saturating_sub(held);
        if free == 0 || (free < shared.capacity / 4 && held > 0) {
            return;
        }
        (free, inner.spills, inner.spilling == 0)
    };
    // Before taking runs whose lease ran out: none of them may still run
    // here.
    expire(shared, rt.lease);
    let sent = Instant::now();
    let lease_ms = i64::try_from(rt.lease.as_millis()).unwrap_or(i64::MAX);
    let current = live.current();
    if !state
        .lacking_in
        .as_ref()
        .is_some_and(|l| Arc::ptr_eq(l, &current))
    {
        // What this version cannot run, known from the start; what it
        // lacks altogether, learned from the claims.
        state.lacking = current.lacking.keys().cloned().collect();
        state.lacking_in = Some(Arc::clone(&current));
    }
    let lacking: Vec<String> = state.lacking.iter().cloned().collect();
    let runs = match rt.store.claim_unfinished(lease_ms, want, &lacking).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, "claiming unfinished runs failed; trying again");
            state.claim_again = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            return;
        }
    };
    tracing::debug!(
        claimed = runs.len(),
        room = want,
        "looked for claimable runs"
    );
    // A short claim leaves no backlog, unless runs wait behind an older
    // run of their path that another node holds: new runs queue behind
    // them (in the store) until they are claimed.
    let held_back = runs.len() < want && rt.store.unclaimed_waiting(&lacking).await.unwrap_or(true);
    {
        let mut inner = shared.inner.lock().unwrap();
        if runs.len() < want && !held_back && quiet && inner.spills == spills && inner.spilling == 0
        {
            inner.backlog = false;
        }
    }
    if runs.is_empty() {
        return;
    }
    tracing::info!(runs = runs.len(), "taking up runs claimed from the store");
    for mut job in take_up(rt, &current, &mut state.lacking, runs).await {
        job.stop = hold(&mut shared.inner.lock().unwrap(), &job, sent);
        enqueue(rt, shared, state, job).await;
    }
    // More may wait: look again once this round's runs are under way.
    shared.claim.notify_one();
}

/// Jobs for claimed runs: a running one's interrupted attempt recorded;
/// one whose workflow this node lacks left to the others, unless the
/// workflow is deleted: then it is recorded `cancelled`.
async fn take_up(
    rt: &Runtime,
    live: &super::live::Live,
    lacking: &mut HashSet<String>,
    runs: Vec<UnfinishedRun>,
) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(runs.len());
    let mut left = Vec::new();
    for run in runs {
        if live.lacks(&run.workflow).is_some() {
            lacking.insert(run.workflow.clone());
            left.push((run.id, run.fence));
            continue;
        }
        let Some(workflow) = live.workflows.iter().find(|w| w.name == run.workflow) else {
            let applied = lacking.contains(&run.workflow)
                || match rt.store.definition_exists(&run.workflow).await {
                    Ok(applied) => applied,
                    Err(e) => {
                        tracing::warn!(workflow = %run.workflow, error = %e, "cannot tell whether a workflow is still applied; its run is left");
                        true
                    }
                };
            if applied {
                if lacking.insert(run.workflow.clone()) {
                    tracing::warn!(workflow = %run.workflow, "this node's definitions lack a workflow that is applied (they are behind, or it cannot load it): its runs are left to other nodes");
                }
                left.push((run.id, run.fence));
                continue;
            }
            rt.writer
                .send(Write::RunClosed(RunClose {
                    run_id: run.id.clone(),
                    fence: run.fence,
                    status: RunStatus::Cancelled,
                    reason: "workflow removed before the run could finish".to_owned(),
                    at_ms: rt.clock.now_ms(),
                }))
                .await;
            continue;
        };
        // A re-run on its original's revision runs that revision's steps.
        let workflow = match run.revision {
            None => Arc::clone(workflow),
            Some(n) => match super::registry::workflow_at(&rt.store, &run.workflow, n).await {
                Ok(Ok(w)) => Arc::new(w),
                // Unreadable now: left, for a later claim.
                Err(e) => {
                    tracing::warn!(run = %run.id, error = %e, "reading the revision a re-run runs on failed; the run is left");
                    left.push((run.id, run.fence));
                    continue;
                }
                Ok(Err(e)) => {
                    rt.writer
                        .send(Write::RunClosed(RunClose {
                            run_id: run.id.clone(),
                            fence: run.fence,
                            status: RunStatus::Failed,
                            reason: e,
                            at_ms: rt.clock.now_ms(),
                        }))
                        .await;
                    continue;
                }
            },
        };
        let first_attempt = match run.status {
            RunStatus::Queued => 1,
            _ => run.attempts + 1,
        };
        if run.status == RunStatus::Running
            && let Err(e) = rt
                .store
                .interrupt_attempt(
                    &run.id,
                    run.fence,
                    "the agent stopped during this attempt (killed, or its node lost the run)",
                    rt.clock.now_ms(),
                )
                .await
        {
            tracing::error!(error = %e, "recording failed");
        }
        tracing::debug!(run = %run.id, workflow = %run.workflow, status = %run.status, "resuming an unfinished run");
        jobs.push(Job {
            run_id: run.id,
            workflow,
            event: run.event,
            secrets: Arc::clone(&live.secrets),
            first_attempt,
            not_before_ms: run.next_attempt_ms,
            fence: run.fence,
            stop: CancellationToken::new(),
            first_started: None,
            from: run.from.map(Arc::new),
        });
    }
    if let Err(e) = rt.store.leave_runs(&left).await {
        tracing::warn!(runs = left.len(), error = %e, "giving runs back failed; they wait for their leases to run out");
    }
    jobs
}

/// Queues a run behind the others of its key. With coalescing (the
/// default), a burst keeps at most one run waiting per key: a newer event
/// supersedes the waiting run, which is recorded `skipped`.
async fn enqueue(rt: &Runtime, shared: &Shared, state: &mut State, job: Job) {
    let key = (job.workflow.name.clone(), job.event.path.clone());
    if !state.waiting.contains_key(&key) {
        state.order.push_back(key.clone());
    }
    let queue = state.waiting.entry(key).or_default();
    if job.workflow.coalesces() {
        let superseded: Vec<(u64, Job)> = queue.drain(..).collect();
        for (seq, old) in superseded {
            if let Some(from) = old_key(&old) {
                forget_move(&mut state.moves_from, &from, seq);
            }
            let reason = format!(
                "superseded by run {} (a newer event on the same path)",
                job.run_id
            );
            tracing::debug!(run = %old.run_id, superseded_by = %job.run_id, "run superseded");
            rt.writer
                .send(Write::RunClosed(RunClose {
                    run_id: old.run_id.clone(),
                    fence: old.fence,
                    status: RunStatus::Skipped,
                    reason: reason.clone(),
                    at_ms: rt.clock.now_ms(),
                }))
                .await;
            release(shared, &old);
            let mut change = super::run::RunChange::new(
                &old.run_id,
                &old.workflow.name,
                &old.event.path,
                RunStatus::Skipped,
            );
            change.reason = Some(reason.clone());
            rt.changed(change);
        }
    }
    state.next_seq += 1;
    if let Some(old) = old_key(&job) {
        state
            .moves_from
            .entry(old)
            .or_default()
            .insert(state.next_seq);
    }
    queue.push_back((state.next_seq, job));
}

/// This node no longer holds a run (ended, or superseded), unless a newer
/// claim of it replaced this one.
fn release(shared: &Shared, job: &Job) {
    let mut inner = shared.inner.lock().unwrap();
    if inner
        .runs
        .get(&job.run_id)
        .is_some_and(|h| h.fence == job.fence)
    {
        inner.runs.remove(&job.run_id);
        drop(inner);
        shared.freed.notify_waiters();
    }
}

/// A move `seq` no longer waits (started, or superseded): runs queued on
/// the path it left (`from`) stop waiting for it.
fn forget_move(moves_from: &mut HashMap<Key, BTreeSet<u64>>, from: &Key, seq: u64) {
    if let Some(seqs) = moves_from.get_mut(from) {
        seqs.remove(&seq);
        if seqs.is_empty() {
            moves_from.remove(from);
        }
    }
}

/// The other key a move holds: its workflow and the path it left.
fn old_key(job: &Job) -> Option<Key> {
    job.event
        .old_path
        .as_ref()
        .filter(|old| **old != job.event.path)
        .map(|old| (job.workflow.name.clone(), old.clone()))
}

fn start_ready(
    rt: &Arc<Runtime>,
    state: &mut State,
    tasks: &mut JoinSet<String>,
    tx: &mpsc::Sender<Msg>,
    workers: usize,
) {
    // Retries due first: their keys are held already.
    let mut later = VecDeque::new();
    while state.in_flight.len() < workers
        && let Some(p) = state.due.pop_front()
    {
        if p.job.stop.is_cancelled() {
            drop_keys(state, &p.key, p.old.as_ref());
            continue;
        }
        let limit = p.job.workflow.concurrency.unwrap_or(u32::MAX);
        if state
            .running_per_workflow
            .get(&p.key.0)
            .copied()
            .unwrap_or(0)
            >= limit
        {
            later.push_back(p);
            continue;
        }
        spawn(rt, state, tasks, tx, p);
    }
    later.append(&mut state.due);
    state.due = later;
    let mut i = 0;
    while i < state.order.len() && state.in_flight.len() < workers {
        let key = state.order[i].clone();
        let front = state.waiting.get(&key).and_then(|q| q.front());
        let limit = front.map(|(_, j)| j.workflow.concurrency.unwrap_or(u32::MAX));
        // A move holds its old path too: it waits for that path's running
        // run and for runs queued there before it.
        let old_busy = front.is_some_and(|(seq, j)| {
            old_key(j).is_some_and(|old| {
                state.running_keys.contains(&old)
                    || state
                        .waiting
                        .get(&old)
                        .and_then(|q| q.front())
                        .is_some_and(|(s, _)| s < seq)
            })
        });
        // ... and runs on its old path queued after it wait for it.
        let behind_a_move = front.is_some_and(|(seq, _)| {
            state
                .moves_from
                .get(&key)
                .and_then(|seqs| seqs.first())
                .is_some_and(|first| first < seq)
        });
        let busy = old_busy
            || behind_a_move
            || state.running_keys.contains(&key)
            || limit
                .is_some_and(|l| state.running_per_workflow.get(&key.0).copied().unwrap_or(0) >= l);
        if busy {
            i += 1;
            continue;
        }
        let Some((seq, job)) = state.waiting.get_mut(&key).and_then(VecDeque::pop_front) else {
            state.order.remove(i);
            continue;
        };
        if state.waiting.get(&key).is_some_and(VecDeque::is_empty) {
            state.waiting.remove(&key);
            state.order.remove(i);
        } else {
            i += 1;
        }
        let old = old_key(&job);
        if let Some(old) = &old {
            forget_move(&mut state.moves_from, old, seq);
        }
        if job.stop.is_cancelled() {
            continue;
        }
        state.running_keys.insert(key.clone());
        if let Some(old) = &old {
            state.running_keys.insert(old.clone());
        }
        let parked = Parked { key, old, job };
        if parked
            .job
            .not_before_ms
            .is_some_and(|t| t > rt.clock.now_ms())
        {
            // A retry taken up before it is due waits without a slot.
            park(state, parked);
            continue;
        }
        spawn(rt, state, tasks, tx, parked);
    }
}

/// Retries waiting out their backoff whose run was stopped: dropped, their
/// keys free for the path's next runs.
fn drop_stopped_retries(state: &mut State) {
    let stopped: Vec<(i64, u64)> = state
        .parked
        .iter()
        .filter(|(_, p)| p.job.stop.is_cancelled())
        .map(|(k, _)| *k)
        .collect();
    for k in stopped {
        if let Some(p) = state.parked.remove(&k) {
            drop_keys(state, &p.key, p.old.as_ref());
        }
    }
}

fn drop_keys(state: &mut State, key: &Key, old: Option<&Key>) {
    state.running_keys.remove(key);
    if let Some(old) = old {
        state.running_keys.remove(old);
    }
}

/// Starts a run's task on a worker slot (its keys already held).
fn spawn(
    rt: &Arc<Runtime>,
    state: &mut State,
    tasks: &mut JoinSet<String>,
    tx: &mpsc::Sender<Msg>,
    p: Parked,
) {
    let Parked { key, old, mut job } = p;
    *state.running_per_workflow.entry(key.0.clone()).or_default() += 1;
    state.in_flight.insert(job.run_id.clone(), job.fence);
    let (rt, tx) = (Arc::clone(rt), tx.clone());
    tasks.spawn(async move {
        job.first_started.get_or_insert_with(Instant::now);
        let stop = job.stop.clone();
        // A lost lease drops the attempt where it is: its steps' process
        // groups are killed, its request aborted, nothing more recorded.
        let next = tokio::select! {
            next = execute(&rt, &job) => next,
            () = stop.cancelled() => Next::Stopped,
        };
        let run_id = job.run_id.clone();
        let _ = tx.send(Msg::Ended(key, old, Box::new(job), next)).await;
        run_id
    });
}

/// At shutdown: running runs get `grace` to finish; then they are killed
/// (dropping a step kills its process group), and their attempts recorded
/// `interrupted`. Their leases are released by the agent, so they run
/// again at the next start, or on another node.
async fn drain(rt: &Runtime, mut state: State, mut tasks: JoinSet<String>, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(run_id))) => {
                state.in_flight.remove(&run_id);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if tasks.is_empty() {
        return;
    }
    tasks.abort_all();
    while let Some(done) = tasks.join_next().await {
        if let Ok(run_id) = done {
            state.in_flight.remove(&run_id);
        }
    }
    // An attempt start still queued is recorded before it is interrupted.
    rt.writer.flush().await;
    for (run_id, fence) in &state.in_flight {
        tracing::warn!(run = %run_id, "run interrupted at shutdown after the grace period; it runs again at the next start");
        if let Err(e) = rt
            .store
            .interrupt_attempt(
                run_id,
                *fence,
                "the agent stopped and --shutdown-grace ran out during this attempt",
                rt.clock.now_ms(),
            )
            .await
        {
            tracing::error!(error = %e, run = %run_id, "recording the interrupted attempt failed");
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
