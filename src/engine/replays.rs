//! Replays: a recorded event matched again against today's definitions.
//! A dry run says what would run and why not, as `test-match` does; else
//! the event is taken in again, through the intake like any event (a new
//! event, source `api`, its actor the user), and its runs start.

use crate::api::{ReplayAnswer, ReplayResult};
use crate::events::{Event, new_id, now_ms};

use super::intake::{Arrival, Intake, Target};
use super::reruns::OpError;

/// Replays event `id` (or, with `dry_run`, says what it would do).
pub async fn replay(
    intake: &Intake,
    id: &str,
    dry_run: bool,
    user: &str,
) -> Result<ReplayAnswer, OpError> {
    let store = &intake.rt.store;
    let Some((recorded, origin)) = store.event_by_id(id).await? else {
        return Err(OpError::NotFound(format!("no event `{id}`")));
    };
    if origin != store.origin() {
        return Err(OpError::Conflict(format!(
            "event `{id}` happened in another data dir (origin {origin}): replay it through an agent serving that data dir"
        )));
    }
    let live = intake.live.current();
    let mut results: Vec<ReplayResult> = live
        .lines(recorded.kind, &recorded.path, recorded.old_path.as_deref())
        .into_iter()
        .map(|l| ReplayResult {
            workflow: l.workflow,
            matched: l.matched,
            sees: l.sees,
            reason: l.reason,
            run: None,
            run_status: None,
        })
        .collect();
    if dry_run || !results.iter().any(|r| r.matched) {
        return Ok(ReplayAnswer {
            event: id.to_owned(),
            dry_run,
            replayed_as: None,
            results,
        });
    }
    let event = Event {
        id: new_id("evt_"),
        observed_ms: now_ms(),
        cause: None,
        raw_abs: None,
        actor: Some(user.to_owned()),
        source: crate::events::Source::Api,
        ..recorded
    };
    let new_event = event.id.clone();
    let plan = intake.plan_against(
        &live,
        vec![Arrival {
            event,
            target: Target::Matched,
        }],
        vec![],
    );
    intake.commit(&plan).await?;
    for run in &plan.runs {
        if let Some(r) = results.iter_mut().find(|r| r.workflow == run.workflow) {
            r.run = Some(run.id.clone());
            r.run_status = Some(run.status);
        }
    }
    intake.publish(plan).await;
    tracing::info!(event = %id, replayed_as = %new_event, user, "event replayed");
    Ok(ReplayAnswer {
        event: id.to_owned(),
        dry_run: false,
        replayed_as: Some(new_event),
        results,
    })
}
