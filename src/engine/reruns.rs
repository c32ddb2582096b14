//! Re-runs: a run made again for the event of another, through the intake
//! like any run (a new event, source `api`, its actor the user), on the
//! live revision of its workflow. From the failed step, the earlier steps
//! are not run again: their recorded results stand for them.

use std::sync::Arc;

use serde_json::{Value, json};

use super::intake::{Arrival, Intake, Target};
use crate::api::{RerunAnswer, RerunRequest};
use crate::definitions::model::Workflow;
use crate::events::{Event, EventType, new_id, now_ms};
use crate::store::{FromStep, Rerun, RunStatus, StoreError};

/// Why an operation on a run or an event (a re-run, a replay) cannot be done.
#[derive(Debug)]
pub enum OpError {
    NotFound(String),
    /// The request is malformed (a bad glob).
    Invalid(String),
    /// Not in a state it can be re-run from, or not from its failed step.
    Conflict(String),
    Store(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::NotFound(m) | OpError::Invalid(m) | OpError::Conflict(m) => f.write_str(m),
            OpError::Store(e) => write!(f, "{e}"),
        }
    }
}

/// What a re-run would be: the workflow it runs on and where it starts.
pub struct RerunPlan {
    original: crate::store::UnfinishedRun,
    /// The live version its workflow was chosen from, planned against.
    live: Arc<super::live::Live>,
    workflow: Arc<Workflow>,
    from: Option<(FromStep, String)>,
    /// On its original's revision: that revision.
    revision: Option<i64>,
}

impl RerunPlan {
    /// The failed step it starts at, by name.
    pub fn from_step(&self) -> Option<&str> {
        self.from.as_ref().map(|(_, name)| name.as_str())
    }
}

/// Checks that run `id` can be re-run (from its failed step, with
/// `from_failed`; on the revision it ran on, with `same_revision`) and
/// says how.
pub async fn prepare(intake: &Intake, id: &str, how: &RerunRequest) -> Result<RerunPlan, OpError> {
    let store = &intake.rt.store;
    let Some(original) = store.run_with_event(id).await? else {
        return Err(OpError::NotFound(format!("no run `{id}`")));
    };
    if !original.status.is_final() {
        return Err(OpError::Conflict(format!(
            "run `{id}` is `{}`: only a finished run can be re-run (cancel it first)",
            original.status
        )));
    }
    if how.from_failed && original.status != RunStatus::Failed {
        return Err(OpError::Conflict(format!(
            "run `{id}` is `{}`: --from-failed re-runs a failed run from the step that failed",
            original.status
        )));
    }
    let live = intake.live.current();
    let Some(workflow) = live
        .workflows
        .iter()
        .find(|w| w.name == original.workflow)
        .map(Arc::clone)
    else {
        return Err(OpError::NotFound(format!(
            "workflow `{}` is not applied: its runs cannot be re-run",
            original.workflow
        )));
    };
    let detail = store
        .run_detail(id)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no run `{id}`")))?;
    let (workflow, revision) = if how.same_revision {
        let (w, n) = revision_of(intake, &original, &workflow).await?;
        (w, Some(n))
    } else {
        (workflow, None)
    };
    // Its file is in its data dir: a re-run is recorded here, for this
    // node's data dir (a workflow any node may run has no file to read).
    if detail.run.origin != store.origin() && !workflow.any_node {
        return Err(OpError::Conflict(format!(
            "run `{id}` is of another data dir (origin {}): re-run it through an agent serving that data dir",
            detail.run.origin
        )));
    }
    let from = if how.from_failed {
        Some(from_failed_step(intake, &original, &detail, &workflow).await?)
    } else {
        None
    };
    Ok(RerunPlan {
        original,
        live,
        workflow,
        from,
        revision,
    })
}

/// The workflow as the revision it ran on had it: the one a re-run on
/// its original's revision was given, else the revision live when it was
/// queued (the newest applied before then). Refused when that revision
/// declares a secret this node has no value for.
async fn revision_of(
    intake: &Intake,
    original: &crate::store::UnfinishedRun,
    live: &Workflow,
) -> Result<(Arc<Workflow>, i64), OpError> {
    let id = &original.id;
    let definition = live.pipeline.as_deref().unwrap_or(&live.name);
    let store = &intake.rt.store;
    let n = match original.revision {
        Some(n) => n,
        None => match store.revision_when_queued(definition, id).await? {
            Some(rev) => rev.revision,
            None => {
                return Err(OpError::Conflict(format!(
                    "no revision of `{definition}` was live when run `{id}` was queued: re-run it on the live one"
                )));
            }
        },
    };
    let workflow = super::registry::workflow_at(store, &live.name, n)
        .await?
        .map_err(OpError::Conflict)?;
    let secrets = &intake.live.current().secrets;
    if let Some(missing) = workflow
        .secrets
        .iter()
        .find(|s| !secrets.iter().any(|(name, _)| name == *s))
    {
        return Err(OpError::Conflict(format!(
            "revision {n} of `{definition}` declares secret `{missing}`, which has no value here (the live definitions do not declare it): re-run it on the live one"
        )));
    }
    Ok((Arc::new(workflow), n))
}

/// Where a re-run of a failed run starts: its failed step, found by name in
/// the live revision, with each earlier step's recorded result. Refused
/// when the file changed since the run's event (its size or modification
/// time), or when the live revision's steps do not line up.
async fn from_failed_step(
    intake: &Intake,
    original: &crate::store::UnfinishedRun,
    detail: &crate::api::RunDetail,
    workflow: &Workflow,
) -> Result<(FromStep, String), OpError> {
    let (id, event) = (original.id.as_str(), &original.event);
    // The last failed step of its own (an `on_failure` step is recorded
    // after them).
    let Some(failed) = detail.steps.iter().rev().find(|s| {
        s.status == crate::api::StepStatus::Failed
            && workflow.steps.iter().any(|w| w.name == s.name)
    }) else {
        return Err(OpError::Conflict(format!(
            "run `{id}` has no failed step recorded (it failed before one, or timed out): re-run it whole"
        )));
    };
    let Some(idx) = workflow.steps.iter().position(|s| s.name == failed.name) else {
        return Err(OpError::Conflict(format!(
            "the revision of `{}` it re-runs on has no step `{}`: re-run it whole",
            workflow.name, failed.name
        )));
    };
    let mut steps = serde_json::Map::new();
    // A re-run from a failed step did not run the steps before it: their
    // results are the ones it carried.
    let carried = original.from.as_ref().and_then(|f| f.steps.as_object());
    for step in &workflow.steps[..idx] {
        let Some(done) = detail.steps.iter().find(|s| s.name == step.name) else {
            if let Some(fields) = carried.and_then(|c| c.get(&step.name)) {
                steps.insert(step.name.clone(), fields.clone());
                continue;
            }
            return Err(OpError::Conflict(format!(
                "step `{}`, before `{}` in the revision it re-runs on, has no result in run `{id}`: re-run it whole",
                step.name, failed.name
            )));
        };
        let text = |t: &Option<String>| {
            let t = t.as_deref().unwrap_or("");
            Value::String(t.strip_suffix('\n').unwrap_or(t).to_owned())
        };
        steps.insert(
            step.name.clone(),
            json!({
                "stdout": text(&done.stdout),
                "stderr": text(&done.stderr),
                "exit_code": done.exit_code,
                "status": done.status.as_str(),
                "output": done.output,
            }),
        );
    }
    if let Some(why) = changed_since(intake, event).await {
        return Err(OpError::Conflict(format!(
            "the file `{}` changed since run `{id}` ({why}): re-run it whole",
            event.path
        )));
    }
    Ok((
        FromStep {
            idx,
            steps: Value::Object(steps),
        },
        failed.name.clone(),
    ))
}

/// How the event's file differs from what the event saw, if it does.
async fn changed_since(intake: &Intake, event: &Event) -> Option<String> {
    if event.kind == EventType::Deleted {
        return None;
    }
    let rel = crate::datadir::vpath(&event.path).ok()?.rel;
    let root = Arc::clone(&intake.rt.root);
    let meta = tokio::task::spawn_blocking(move || root.metadata(&rel))
        .await
        .ok()?;
    let Ok(meta) = meta else {
        return Some("it is gone".to_owned());
    };
    if event.size.is_some_and(|s| s != meta.len()) {
        return Some(format!(
            "its size was {} bytes, now {}",
            event.size.unwrap_or(0),
            meta.len()
        ));
    }
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match (event.mtime_ms, mtime_ms) {
        (Some(then), Some(now)) if then != now => Some("it was modified".to_owned()),
        _ => None,
    }
}

/// Starts a prepared re-run: a new event for the same file, as the
/// original's workflow saw it, and its run, linked to the original.
pub async fn start(intake: &Intake, plan: RerunPlan, user: &str) -> Result<RerunAnswer, OpError> {
    let RerunPlan {
        original,
        live,
        workflow,
        from,
        revision,
    } = plan;
    let e = &original.event;
    let event = Event {
        id: new_id("evt_"),
        kind: e.kind,
        path: e.path.clone(),
        old_path: e.old_path.clone(),
        size: e.size,
        mtime_ms: e.mtime_ms,
        observed_ms: now_ms(),
        cause: e.cause.clone(),
        raw_abs: None,
        actor: Some(user.to_owned()),
        source: crate::events::Source::Api,
    };
    let from_name = from.as_ref().map(|(_, name)| name.clone());
    let mut why = format!("re-run of run {} by {user}", original.id);
    if let Some(step) = &from_name {
        why.push_str(&format!(", from step `{step}`"));
    }
    if let Some(n) = revision {
        why.push_str(&format!(", on revision {n}"));
    }
    let mut plan = intake.plan_against(
        &live,
        vec![Arrival {
            event,
            target: Target::Workflow(Arc::clone(&workflow), why),
        }],
        vec![],
    );
    let from = from.map(|(f, _)| f);
    if let Some(run) = plan.runs.first_mut() {
        run.rerun = Some(Rerun {
            of: original.id.clone(),
            from: from.clone(),
            revision,
        });
    }
    if let Some(job) = plan.jobs.first_mut() {
        job.from = from.map(Arc::new);
    }
    intake.commit(&plan).await?;
    let run = plan.runs[0].clone();
    intake.publish(plan).await;
    tracing::info!(run = %run.id, rerun_of = %original.id, workflow = %workflow.name, user, "re-run");
    Ok(RerunAnswer {
        run: run.id,
        rerun_of: original.id,
        workflow: workflow.name.clone(),
        status: run.status,
        from_step: from_name,
        revision,
    })
}
