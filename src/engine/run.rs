//! One run: its attempts, each attempt's steps, and what is recorded.

pub use crate::api::RunChange;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::definitions::model::{RetryPolicy, Step, StepKind, Workflow};
use crate::events::Event;
use crate::events::causes::{Causes, Recent};
use crate::steps::{self, StepContext, StepOutcome, StepStatus};
use crate::store::{AttemptEnd, RunStatus, StepRecord, Store, Write, Writer};

/// What every run shares.
pub struct Runtime {
    pub store: Store,
    /// Run state changes go through here, committed in groups.
    pub writer: Writer,
    pub data_dir: PathBuf,
    pub root: Arc<cap_std::fs::Dir>,
    pub http: crate::steps::webhook::LazyClient,
    pub causes: Arc<Causes>,
    /// This node's name in run leases.
    pub node: String,
    /// How long a claim on a run holds without renewal.
    pub lease: Duration,
    /// API users' file writes awaiting their events.
    pub actors: Arc<Recent<String>>,
    pub output_cap: usize,
    pub shutdown: CancellationToken,
    /// Run state changes, for live followers.
    pub changes: tokio::sync::broadcast::Sender<std::sync::Arc<RunChange>>,
    /// The time attempts are recorded at and retries wait on.
    pub clock: super::clock::Clock,
    /// The live output of the runs running here.
    pub logs: Arc<crate::steps::live::LiveLogs>,
}

impl Runtime {
    /// A lease for a run claimed now: this node, until when.
    /// Its end is by the database's clock.
    pub fn lease_now(&self) -> (String, i64) {
        let ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        (self.node.clone(), self.store.now_ms().saturating_add(ms))
    }

    /// Announces a run's new state.
    pub fn changed(&self, change: RunChange) {
        crate::metrics::METRICS.run(&change.workflow, change.status, change.duration_ms);
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(std::sync::Arc::new(change));
        }
    }
}

/// A run to execute: the workflow version it started with and its event
/// (with the type this workflow sees).
#[derive(Clone)]
pub struct Job {
    pub run_id: String,
    pub workflow: Arc<Workflow>,
    pub event: Event,
    pub secrets: Arc<Vec<(String, String)>>,
    /// The attempt to start with (above 1 when resumed after a restart).
    pub first_attempt: u32,
    /// Not before this time (a retry resumed after a restart), Unix ms.
    pub not_before_ms: Option<i64>,
    /// The fencing counter of this node's claim on the run.
    pub fence: i64,
    /// Cancelled when this node lost the run's lease: it stops at once.
    pub stop: CancellationToken,
    /// When its first attempt here started, for its duration.
    pub first_started: Option<std::time::Instant>,
    /// A re-run from a failed step: each attempt starts at that step, with
    /// the earlier steps' recorded results.
    pub from: Option<Arc<crate::store::FromStep>>,
}

/// How an attempt left its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// In a final state.
    Done,
    /// `retrying`: attempt `attempt` is due at `at_ms`.
    Retry { attempt: u32, at_ms: i64 },
    /// Stopped without a record: this node lost the run.
    Stopped,
}

/// Why an attempt failed, and whether another could succeed.
struct Failure {
    error: String,
    /// The step that failed (none: the run timed out).
    step: Option<String>,
    retryable: bool,
    retry_after: Option<Duration>,
    policy: Option<Box<RetryPolicy>>,
}

/// Executes one attempt of a run: recorded as started (committed before
/// its first step when it has effects outside the agent), its steps, and
/// its end: the run's final state, or
/// `retrying` with the next attempt's time (the dispatcher waits for it
/// without a worker slot).
pub async fn execute(rt: &Runtime, job: &Job) -> Next {
    let attempt = job.first_attempt.max(1);
    let started = job.first_started.unwrap_or_else(std::time::Instant::now);
    let change = |status: RunStatus, attempt: u32, error: Option<&str>| {
        let mut c = RunChange::new(&job.run_id, &job.workflow.name, &job.event.path, status);
        c.attempt = attempt;
        c.error = error.map(str::to_owned);
        if status.is_final() {
            c.duration_ms = Some(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
        }
        rt.changed(c);
    };
    let finish = |end: AttemptEnd| {
        rt.writer
            .send(Write::AttemptFinished(crate::store::AttemptFinish {
                run_id: job.run_id.clone(),
                fence: job.fence,
                end,
            }))
    };
    let start = Write::AttemptStarted(crate::store::AttemptStart {
        run_id: job.run_id.clone(),
        fence: job.fence,
        attempt,
        at_ms: rt.clock.now_ms(),
    });
    // Steps with effects outside the agent (a command, a request) begin only
    // once their attempt is committed: a crash cannot leave an effect with
    // no attempt behind it, nor run it again under the same number. The
    // built-in file actions, the agent's own atomic writes under the data
    // dir, do not wait: that commit per run would cost a burst of them
    // three quarters of its throughput (see docs/benchmarks.md).
    let effects = job
        .workflow
        .steps
        .iter()
        .any(|s| !matches!(s.kind, StepKind::Action(_)));
    if !effects {
        rt.writer.send(start).await;
    } else if !rt.writer.record(start).await {
        tracing::warn!(run = %job.run_id, "the run's attempt could not be recorded under this node's claim: not running it");
        return Next::Stopped;
    }
    change(RunStatus::Running, attempt, None);
    tracing::info!(run = %job.run_id, workflow = %job.workflow.name, path = %job.event.path, attempt, "run started");
    // Open while the attempt runs (its on_failure steps too).
    let _log = rt.logs.open(&job.run_id);
    let result = match job.workflow.timeout {
        Some(limit) => tokio::time::timeout(limit, run_attempt(rt, job, attempt))
            .await
            .unwrap_or_else(|_| {
                Err(Failure {
                    error: format!("run timed out after {}", humantime::format_duration(limit)),
                    step: None,
                    retryable: true,
                    retry_after: None,
                    policy: None,
                })
            }),
        None => run_attempt(rt, job, attempt).await,
    };
    let failure = match result {
        Ok(()) => {
            let end = AttemptEnd {
                attempt,
                succeeded: true,
                error: None,
                next: RunStatus::Succeeded,
                at_ms: rt.clock.now_ms(),
                next_attempt_ms: None,
            };
            finish(end).await;
            change(RunStatus::Succeeded, attempt, None);
            tracing::info!(run = %job.run_id, workflow = %job.workflow.name, "run succeeded");
            return Next::Done;
        }
        Err(f) => f,
    };
    let policy = failure.policy.as_deref().unwrap_or(&job.workflow.retry);
    // At a stop too: the retry is recorded due, and taken up at the next
    // start.
    let again = failure.retryable && attempt < policy.max_attempts;
    let next = if again {
        RunStatus::Retrying
    } else {
        RunStatus::Failed
    };
    if !again {
        run_on_failure(rt, job, attempt, &failure).await;
    }
    let delay = retry_delay(policy, attempt, jitter(&job.run_id, attempt))
        .max(failure.retry_after.unwrap_or_default());
    let at_ms = rt.clock.now_ms();
    let due = at_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let end = AttemptEnd {
        attempt,
        succeeded: false,
        error: Some(failure.error.clone()),
        next,
        at_ms,
        next_attempt_ms: again.then_some(due),
    };
    finish(end).await;
    change(next, attempt, Some(&failure.error));
    tracing::warn!(run = %job.run_id, workflow = %job.workflow.name, attempt, error = %failure.error, "attempt failed");
    if again {
        Next::Retry {
            attempt: attempt + 1,
            at_ms: due,
        }
    } else {
        Next::Done
    }
}

/// Delay before attempt `attempt + 1`: `backoff * multiplier^(attempt-1)`,
/// capped by `max_backoff`, scaled by `jitter` (within ±10%).
pub fn retry_delay(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = policy.backoff.as_secs_f64() * policy.multiplier.powi(exp);
    let capped = base.min(policy.max_backoff.as_secs_f64());
    Duration::from_secs_f64((capped * (1.0 + jitter.clamp(-0.1, 0.1))).max(0.0))
}

/// A deterministic jitter in ±10% from the run id, so retries of many runs
/// spread out without a random source.
fn jitter(run_id: &str, attempt: u32) -> f64 {
    let h = run_id.bytes().fold(u64::from(attempt), |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    ((h % 2001) as f64 / 10_000.0) - 0.1
}

/// What the steps of one attempt share: its records' keys and the
/// template data (`event`, `workflow`, `run`, `steps`, `secrets`).
fn context(rt: &Runtime, job: &Job, attempt: u32) -> StepContext {
    let secrets: Map<String, Value> = job
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    StepContext {
        data_dir: rt.data_dir.clone(),
        root: Arc::clone(&rt.root),
        run_id: job.run_id.clone(),
        fence: job.fence,
        attempt,
        workflow: job.workflow.name.clone(),
        event: job.event.clone(),
        secrets: job.secrets.to_vec(),
        redactions: Arc::new(crate::steps::secret_patterns(
            &job.secrets
                .iter()
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
        )),
        http: rt.http.clone(),
        causes: Arc::clone(&rt.causes),
        output_cap: rt.output_cap,
        log: rt.logs.get(&job.run_id),
        data: json!({
            "event": job.event.template_fields(&rt.data_dir),
            "workflow": {"name": job.workflow.name},
            "run": {"id": job.run_id, "attempt": attempt},
            "steps": {},
            "secrets": secrets,
        }),
    }
}

async fn run_attempt(rt: &Runtime, job: &Job, attempt: u32) -> Result<(), Failure> {
    let mut ctx = context(rt, job, attempt);
    let first = match &job.from {
        Some(from) => {
            ctx.data["steps"] = from.steps.clone();
            from.idx
        }
        None => 0,
    };
    for (idx, step) in job.workflow.steps.iter().enumerate().skip(first) {
        let started = rt.clock.now_ms();
        let outcome = run_step(&ctx, step).await;
        record(rt, &ctx, idx, step, &outcome, started).await;
        ctx.data["steps"][step.name.as_str()] = outcome.template_fields();
        if outcome.status == StepStatus::Failed && !step.continue_on_error {
            let policy = step.retry.clone();
            let effective = policy.as_ref().unwrap_or(&job.workflow.retry);
            let listed = matches!(step.kind, StepKind::Run(_))
                && outcome
                    .exit_code
                    .is_some_and(|c| effective.non_retryable_exit_codes.contains(&c));
            return Err(Failure {
                error: format!(
                    "step `{}` failed: {}",
                    step.name,
                    outcome.error.as_deref().unwrap_or("unknown error")
                ),
                step: Some(step.name.clone()),
                retryable: outcome.retryable && !listed,
                retry_after: outcome.retry_after,
                policy: policy.map(Box::new),
            });
        }
    }
    Ok(())
}

/// After the last attempt failed: the workflow's `on_failure` steps, once,
/// recorded as steps of that attempt after its own, with `run.error`,
/// `run.failed_step` and `run.attempts`. Their own failure is recorded and
/// ends them; the run stays failed with its error.
async fn run_on_failure(rt: &Runtime, job: &Job, attempt: u32, failure: &Failure) {
    if job.workflow.on_failure.is_empty() {
        return;
    }
    let mut ctx = context(rt, job, attempt);
    ctx.data["run"]["error"] = json!(failure.error);
    ctx.data["run"]["failed_step"] = json!(failure.step);
    ctx.data["run"]["attempts"] = json!(attempt);
    let after = job.workflow.steps.len();
    for (j, step) in job.workflow.on_failure.iter().enumerate() {
        let started = rt.clock.now_ms();
        let outcome = run_step(&ctx, step).await;
        record(rt, &ctx, after + j, step, &outcome, started).await;
        ctx.data["steps"][step.name.as_str()] = outcome.template_fields();
        if outcome.status == StepStatus::Failed && !step.continue_on_error {
            tracing::warn!(run = %job.run_id, step = %step.name, error = outcome.error.as_deref().unwrap_or(""), "an on_failure step failed");
            break;
        }
    }
}

async fn run_step(ctx: &StepContext, step: &Step) -> StepOutcome {
    if let Some(condition) = &step.condition {
        match condition.render(&ctx.data) {
            Ok(text) if is_falsy(&text) => {
                return StepOutcome {
                    status: StepStatus::Skipped,
                    ..StepOutcome::success(Value::Object(Map::new()))
                };
            }
            Ok(_) => {}
            Err(e) => return StepOutcome::fatal(format!("step `{}`: `if`: {e}", step.name)),
        }
    }
    match &step.kind {
        StepKind::Run(run) => steps::shell::execute(ctx, step, run, step.timeout).await,
        StepKind::Webhook(hook) => steps::webhook::execute(ctx, step, hook, step.timeout).await,
        StepKind::Action(action) => match step.timeout {
            Some(limit) => tokio::time::timeout(limit, steps::builtin::execute(ctx, action))
                .await
                .unwrap_or_else(|_| StepOutcome::transient("timed out")),
            None => steps::builtin::execute(ctx, action).await,
        },
    }
}

/// An `if:` that renders empty, `false` or `0` skips its step.
fn is_falsy(text: &str) -> bool {
    matches!(text.trim(), "" | "false" | "0")
}

async fn record(
    rt: &Runtime,
    ctx: &StepContext,
    idx: usize,
    step: &Step,
    o: &StepOutcome,
    started: i64,
) {
    let rec = StepRecord {
        run_id: ctx.run_id.clone(),
        fence: ctx.fence,
        attempt: ctx.attempt,
        idx,
        name: step.name.clone(),
        status: o.status,
        exit_code: o.exit_code,
        started_ms: Some(started),
        finished_ms: Some(rt.clock.now_ms()),
        stdout: Some(o.stdout.clone()),
        stderr: Some(o.stderr.clone()),
        output: Some(ctx.redact(&o.output.to_string())),
        error: o.error.as_deref().map(|e| ctx.redact(e)),
    };
    rt.writer.send(Write::Step(rec)).await;
}

#[cfg(test)]
mod tests {
    use super::super::clock::Clock;
    use super::*;
    use crate::events::now_ms;

    #[test]
    fn delays_grow_by_the_multiplier_and_stop_at_the_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_secs(5),
            multiplier: 1.5,
            max_backoff: Duration::from_secs(10),
            non_retryable_exit_codes: vec![],
        };
        assert_eq!(retry_delay(&p, 1, 0.0), Duration::from_secs(5));
        assert_eq!(retry_delay(&p, 2, 0.0), Duration::from_millis(7500));
        assert_eq!(retry_delay(&p, 3, 0.0), Duration::from_secs(10));
        assert_eq!(retry_delay(&p, 1, 0.1), Duration::from_millis(5500));
        for a in 0..50 {
            let j = jitter("run_x", a);
            assert!((-0.1..=0.1).contains(&j));
        }
    }

    /// Where the manual clock starts, Unix ms.
    const T0: i64 = 1_700_000_000_000;

    /// Attempts at 0, after `backoff`, after `backoff × multiplier` more,
    /// each delay within its ±10% jitter, on a manual clock (it moves only
    /// when the run waits, so the times recorded are exact); every attempt
    /// recorded with its error. (That the wait survives a restart is
    /// `a_retry_waits_out_its_backoff_across_a_restart`, on both backends.)
    #[tokio::test]
    async fn attempts_follow_the_backoff_on_an_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        let yaml = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: r}\nspec:\n  on: [{event: file.created, pattern: /x}]\n  retry: {max_attempts: 3, backoff: 300ms, multiplier: 3}\n  steps:\n    - {name: fail, run: 'echo no >&2; exit 1'}\n";
        let loaded = crate::definitions::load_text(
            std::path::Path::new("t.yaml"),
            yaml.as_bytes(),
            &Default::default(),
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let workflow = Arc::new(loaded.set.workflows[0].clone());
        let rt = Runtime {
            writer: Writer::start(store.clone(), CancellationToken::new()),
            store: store.clone(),
            data_dir: dir.path().to_path_buf(),
            root: Arc::new(
                cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())
                    .unwrap(),
            ),
            http: Default::default(),
            causes: Arc::new(Causes::default()),
            actors: Arc::new(Recent::default()),
            output_cap: 1024,
            node: "node-test".into(),
            lease: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
            changes: tokio::sync::broadcast::channel(64).0,
            clock: Clock::manual(T0),
            logs: Default::default(),
        };
        let event = Event {
            id: "evt_1".into(),
            kind: crate::events::EventType::Created,
            path: "/x".into(),
            old_path: None,
            size: Some(0),
            mtime_ms: Some(0),
            observed_ms: now_ms(),
            cause: None,
            raw_abs: None,
            actor: None,
            source: Default::default(),
        };
        let run = crate::store::NewRun {
            id: "run_1".into(),
            workflow: "r".into(),
            event: event.clone(),
            status: RunStatus::Queued,
            reason: None,
            queued_ms: now_ms(),
            lease: Some(("node-test".into(), now_ms() + 30_000)),
            anywhere: false,
            rerun: None,
            backfill: None,
        };
        store
            .commit_events(&[(event.clone(), vec![])], &[], &[run], None)
            .await
            .unwrap();
        let job = Job {
            run_id: "run_1".into(),
            workflow,
            event,
            secrets: Arc::new(Vec::new()),
            first_attempt: 1,
            not_before_ms: None,
            fence: 1,
            stop: CancellationToken::new(),
            first_started: None,
            from: None,
        };
        let mut job = job;
        // The dispatcher's part: each retry at its time (the manual clock
        // moves to it).
        while let Next::Retry { attempt, at_ms } = execute(&rt, &job).await {
            let wait = (at_ms - rt.clock.now_ms()).max(0).unsigned_abs();
            rt.clock.sleep(Duration::from_millis(wait)).await;
            job.first_attempt = attempt;
        }
        rt.writer.flush().await;
        let attempts: Vec<(i64, i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT attempt, started_ms, finished_ms, status, error FROM attempts WHERE run_id = 'run_1' ORDER BY attempt",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(attempts.len(), 3, "{attempts:?}");
        let starts: Vec<i64> = attempts.iter().map(|a| a.1 - T0).collect();
        assert_eq!(starts[0], 0, "the first attempt at once");
        let within = |got: i64, want: i64| {
            assert!(
                (want * 9 / 10..=want * 11 / 10).contains(&got),
                "{got} ms, expected {want} ms ± 10%"
            );
        };
        within(starts[1] - starts[0], 300);
        within(starts[2] - starts[1], 900);
        // Failed attempts end when they start: the manual clock moves
        // only while the run waits.
        for a in &attempts[..2] {
            assert_eq!(a.2, a.1, "{attempts:?}");
        }
        assert!(
            attempts
                .iter()
                .all(|a| a.3 == "failed"
                    && a.4.as_deref().is_some_and(|e| e.contains("exit code 1"))),
            "{attempts:?}"
        );
        let status: (String, i64) =
            sqlx::query_as("SELECT status, attempts FROM runs WHERE id = 'run_1'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(status, ("failed".to_owned(), 3));
    }

    #[test]
    fn conditions_are_falsy_only_when_empty_false_or_zero() {
        for t in ["", " false\n", "0"] {
            assert!(is_falsy(t), "{t:?}");
        }
        for t in ["true", "1", "no"] {
            assert!(!is_falsy(t), "{t:?}");
        }
    }
}
