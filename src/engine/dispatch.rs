//! Starting runs in order: per (workflow, path) one at a time and in event
//! order; across paths in parallel, up to the workflow's `concurrency` and
//! the agent's `--workers`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::run::{Job, Runtime, execute};
use crate::events::now_ms;
use crate::store::{RunStatus, Write};

type Key = (String, String);

enum Msg {
    Submit(Vec<Job>),
    /// A run ended: its key, the old path's key a move held, its id.
    Done(Key, Option<Key>, String),
}

/// A handle to submit runs.
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Msg>,
}

impl Dispatcher {
    /// Hands runs over, in event order. Waits when the dispatcher is busy,
    /// which slows the event loop rather than losing anything.
    pub async fn submit(&self, jobs: Vec<Job>) {
        if !jobs.is_empty() && self.tx.send(Msg::Submit(jobs)).await.is_err() {
            tracing::warn!("dispatcher stopped; runs stay queued");
        }
    }
}

/// Starts the dispatcher; the returned future ends after shutdown, when
/// running runs have finished or `grace` has passed (they are then recorded
/// `cancelled`).
pub fn start(
    rt: Arc<Runtime>,
    workers: usize,
    grace: Duration,
) -> (Dispatcher, impl Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(1024);
    let worker = dispatch_worker(rt, rx, tx.clone(), workers.max(1), grace);
    (Dispatcher { tx }, worker)
}

struct State {
    waiting: HashMap<Key, VecDeque<(u64, Job)>>,
    /// Arrival numbers, so a move can wait for what came before it on its
    /// old path.
    next_seq: u64,
    /// Waiting moves by the key of the path they left: later runs there
    /// wait for them.
    moves_from: HashMap<Key, std::collections::BTreeSet<u64>>,
    /// Keys with waiting runs, oldest first.
    order: VecDeque<Key>,
    running_keys: HashSet<Key>,
    running_per_workflow: HashMap<String, u32>,
    /// Run ids in flight, for an honest record at shutdown.
    /// Runs executing now, with their fence.
    in_flight: HashMap<String, i64>,
}

async fn dispatch_worker(
    rt: Arc<Runtime>,
    mut rx: mpsc::Receiver<Msg>,
    tx: mpsc::Sender<Msg>,
    workers: usize,
    grace: Duration,
) {
    let mut state = State {
        waiting: HashMap::new(),
        next_seq: 0,
        moves_from: HashMap::new(),
        order: VecDeque::new(),
        running_keys: HashSet::new(),
        running_per_workflow: HashMap::new(),
        in_flight: HashMap::new(),
    };
    let mut tasks: JoinSet<String> = JoinSet::new();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Submit(jobs)) => {
                    for job in jobs {
                        enqueue(&rt, &mut state, job).await;
                    }
                }
                Some(Msg::Done(key, old_key, run_id)) => {
                    state.running_keys.remove(&key);
                    if let Some(old) = old_key {
                        state.running_keys.remove(&old);
                    }
                    state.in_flight.remove(&run_id);
                    if let Some(n) = state.running_per_workflow.get_mut(&key.0) {
                        *n = n.saturating_sub(1);
                    }
                }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = rt.shutdown.cancelled() => break,
        }
        start_ready(&rt, &mut state, &mut tasks, &tx, workers);
    }
    drain(&rt, state, tasks, grace).await;
}

/// Queues a run behind the others of its key. With coalescing (the
/// default), a burst keeps at most one run waiting per key: a newer event
/// supersedes the waiting run, which is recorded `skipped`.
async fn enqueue(rt: &Runtime, state: &mut State, job: Job) {
    let key = (job.workflow.name.clone(), job.event.path.clone());
    if !state.waiting.contains_key(&key) {
        state.order.push_back(key.clone());
    }
    let queue = state.waiting.entry(key).or_default();
    if job.workflow.coalesces() {
        let superseded: Vec<(u64, Job)> = queue.drain(..).collect();
        for (seq, old) in superseded {
            if let Some(from) = old_key(&old)
                && let Some(seqs) = state.moves_from.get_mut(&from)
            {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    state.moves_from.remove(&from);
                }
            }
            let reason = format!(
                "superseded by run {} (a newer event on the same path)",
                job.run_id
            );
            tracing::debug!(run = %old.run_id, superseded_by = %job.run_id, "run superseded");
            rt.writer
                .send(Write::RunClosed(crate::store::RunClose {
                    run_id: old.run_id.clone(),
                    fence: old.fence,
                    status: RunStatus::Skipped,
                    reason: reason.clone(),
                    at_ms: now_ms(),
                }))
                .await;
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
        state.running_keys.insert(key.clone());
        let old = old_key(&job);
        if let Some(old) = &old {
            state.running_keys.insert(old.clone());
            if let Some(seqs) = state.moves_from.get_mut(old) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    state.moves_from.remove(old);
                }
            }
        }
        *state.running_per_workflow.entry(key.0.clone()).or_default() += 1;
        state.in_flight.insert(job.run_id.clone(), job.fence);
        let (rt, tx) = (Arc::clone(rt), tx.clone());
        tasks.spawn(async move {
            execute(&rt, &job).await;
            let _ = tx.send(Msg::Done(key, old, job.run_id.clone())).await;
            job.run_id
        });
    }
}

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
    if !tasks.is_empty() {
        tasks.abort_all();
        while let Some(done) = tasks.join_next().await {
            if let Ok(run_id) = done {
                state.in_flight.remove(&run_id);
            }
        }
        for (run_id, fence) in &state.in_flight {
            tracing::warn!(run = %run_id, "run cancelled at shutdown after the grace period");
            rt.writer
                .send(Write::RunClosed(crate::store::RunClose {
                    run_id: run_id.clone(),
                    fence: *fence,
                    status: RunStatus::Cancelled,
                    reason: "shutdown".to_owned(),
                    at_ms: now_ms(),
                }))
                .await;
        }
    }
}
