//! Intake: the one way in for events from every source (the watch, the
//! comparisons of the tree with the index, `workflows trigger`). A batch of
//! arrivals becomes a [`Plan`] (event rows with their decisions, index
//! changes, runs and the jobs to dispatch) without touching the database;
//! [`Intake::commit`] records a plan in one transaction and [`Intake::publish`]
//! counts it, tells the followers and hands its jobs over.

use std::sync::Arc;
use std::time::Duration;

use super::dispatch::{Admission, Dispatcher};
use super::live::{Live, LiveHandle};
use super::registry::Registry;
use super::run::{Job, RunChange, Runtime};
use crate::api::{Decision, DecisionKind};
use crate::definitions::model::Workflow;
use crate::events::{Event, EventType, new_id, now_ms};
use crate::store::{BackfillStep, IndexOp, NewRun, RunStatus, StoreError};

/// One event to take in, and which workflows it is for.
#[derive(Clone)]
pub struct Arrival {
    pub event: Event,
    pub target: Target,
}

/// Which workflows an arrival starts.
#[derive(Clone)]
pub enum Target {
    /// Those the matcher finds for the event (a change of a file).
    Matched,
    /// This one, whatever its patterns say, for this reason (a trigger).
    Workflow(Arc<Workflow>, String),
}

/// What a batch of arrivals commits and then dispatches.
#[derive(Default)]
pub struct Plan {
    /// Each event with what every workflow near it decided.
    pub events: Vec<(Event, Vec<Decision>)>,
    /// What the file index learns; a later change of a path wins.
    pub index: Vec<IndexOp>,
    pub runs: Vec<NewRun>,
    /// The queued runs, to hand to the dispatcher once committed.
    pub jobs: Vec<Job>,
    /// Where the queued runs go: held by this node, or (past the
    /// dispatcher's capacity) recorded unclaimed, for a later claim.
    pub admission: Option<Admission>,
    /// The watch's plans: the fence of this node's election as its data
    /// dir's watcher, which the commit checks. None for a trigger.
    pub watch_fence: Option<i64>,
    /// A backfill's page: the backfill moves on with it, or it is refused.
    pub backfill: Option<BackfillStep>,
}

impl Plan {
    /// Records the queued runs unclaimed, to be claimed from the store as
    /// room frees up, instead of handing them to the dispatcher.
    fn spill(&mut self) {
        for run in &mut self.runs {
            run.lease = None;
        }
        self.jobs.clear();
    }
}

/// What a plan is made against: the live definitions, the pauses, the loop
/// guard and this node's lease.
pub struct Rules<'a> {
    pub live: &'a Live,
    pub is_paused: &'a dyn Fn(&Workflow) -> bool,
    pub max_chain_depth: u32,
    pub lease: (String, i64),
}

/// Plans a batch: for each arrival, its runs (queued, or skipped because
/// the workflow is paused or the event's chain is too deep) and the
/// decision of every workflow near it.
pub fn plan(rules: &Rules<'_>, arrivals: Vec<Arrival>, index: Vec<IndexOp>) -> Plan {
    let mut plan = Plan {
        index,
        ..Plan::default()
    };
    for Arrival { event, target } in arrivals {
        let mut decisions = Vec::new();
        let starts: Vec<(Arc<Workflow>, EventType, String)> = match target {
            Target::Workflow(w, why) => vec![(w, event.kind, why)],
            Target::Matched => {
                let verdict = rules
                    .live
                    .decide(event.kind, &event.path, event.old_path.as_deref());
                for (w, reason) in &verdict.misses {
                    decisions.push(Decision {
                        workflow: rules.live.workflows[*w].name.clone(),
                        decision: DecisionKind::NotMatched,
                        run: None,
                        reason: Some(reason.to_string()),
                        run_status: None,
                    });
                }
                verdict
                    .starts
                    .into_iter()
                    .map(|s| {
                        let w = Arc::clone(&rules.live.workflows[s.workflow]);
                        (w, s.sees, s.reason.to_string())
                    })
                    .collect()
            }
        };
        let mut started = Vec::with_capacity(starts.len());
        for (workflow, sees, why) in starts {
            let mut ev = event.clone();
            ev.kind = sees;
            if sees == EventType::Deleted && event.kind == EventType::Moved {
                ev.path = event.old_path.clone().unwrap_or_default();
            }
            let run_id = new_id("run_");
            let depth = ev.chain_depth();
            let skipped = if (rules.is_paused)(&workflow) {
                tracing::info!(workflow = %workflow.name, path = %ev.path, "paused: run skipped");
                Some("paused".to_owned())
            } else if depth > rules.max_chain_depth {
                let cause = ev.cause.as_ref().map(|c| c.run_id.as_str()).unwrap_or("?");
                tracing::warn!(workflow = %workflow.name, path = %ev.path, depth, cause, "loop: run skipped");
                Some(format!(
                    "loop: chain depth {depth} exceeds --max-chain-depth {} (caused by run {cause})",
                    rules.max_chain_depth
                ))
            } else {
                None
            };
            // A workflow this node cannot run: its run is recorded for the
            // nodes that can (unclaimed), not dispatched here.
            let elsewhere = rules.live.lacks(&workflow.name);
            let status = if skipped.is_some() {
                RunStatus::Skipped
            } else if let Some(lacks) = elsewhere {
                tracing::debug!(workflow = %workflow.name, path = %ev.path, reason = %lacks, "run left to a node that can run it");
                RunStatus::Queued
            } else {
                plan.jobs.push(Job {
                    run_id: run_id.clone(),
                    workflow: Arc::clone(&workflow),
                    event: ev.clone(),
                    secrets: Arc::clone(&rules.live.secrets),
                    first_attempt: 1,
                    not_before_ms: None,
                    fence: 1,
                    stop: Default::default(),
                    first_started: None,
                    from: None,
                });
                RunStatus::Queued
            };
            started.push(Decision {
                workflow: workflow.name.clone(),
                decision: if skipped.is_some() {
                    DecisionKind::Skipped
                } else {
                    DecisionKind::Run
                },
                run: Some(run_id.clone()),
                reason: Some(match (&skipped, elsewhere) {
                    (Some(skipped), _) => skipped.clone(),
                    (None, Some(_)) => format!("{why}; left to a node that can run it"),
                    (None, None) => why,
                }),
                run_status: None,
            });
            plan.runs.push(NewRun {
                id: run_id,
                workflow: workflow.name.clone(),
                event: ev,
                lease: (!status.is_final() && elsewhere.is_none()).then(|| rules.lease.clone()),
                anywhere: workflow.any_node,
                rerun: None,
                backfill: None,
                status,
                reason: skipped,
                queued_ms: now_ms(),
            });
        }
        // The runs first, then the workflows that did not run.
        started.append(&mut decisions);
        plan.events.push((event, started));
    }
    plan
}

/// The intake of one agent: plans against its live definitions and pauses,
/// commits to its store, dispatches to its workers.
#[derive(Clone)]
pub struct Intake {
    pub rt: Arc<Runtime>,
    pub live: LiveHandle,
    pub registry: Arc<Registry>,
    pub dispatcher: Dispatcher,
    pub max_chain_depth: u32,
    /// Cancelled once this node is ready: its index compared with the
    /// tree (its data dir's watcher), or standing by.
    pub ready: tokio_util::sync::CancellationToken,
    /// Wakes the backfill worker: a backfill was begun.
    pub backfills: Arc<tokio::sync::Notify>,
}

impl Intake {
    /// Plans a batch against the definitions and pauses live now.
    pub fn plan(&self, arrivals: Vec<Arrival>, index: Vec<IndexOp>) -> Plan {
        self.plan_against(&self.live.current(), arrivals, index)
    }

    /// Plans a batch against `live`: the version a caller already chose
    /// its workflows from (a trigger), so that they and their secrets agree.
    pub fn plan_against(&self, live: &Live, arrivals: Vec<Arrival>, index: Vec<IndexOp>) -> Plan {
        let is_paused = |w: &Workflow| self.registry.is_paused(w);
        let rules = Rules {
            live,
            is_paused: &is_paused,
            max_chain_depth: self.max_chain_depth,
            lease: self.rt.lease_now(),
        };
        let mut plan = plan(&rules, arrivals, index);
        let admission = self.dispatcher.admit(plan.jobs.len());
        if matches!(admission, Admission::Spilled(_)) {
            plan.spill();
        }
        plan.admission = Some(admission);
        plan
    }

    /// Records a plan in one transaction: its events, their runs and the
    /// index changes together, or none of them.
    pub async fn commit(&self, plan: &Plan) -> Result<(), StoreError> {
        let store = &self.rt.store;
        match &plan.backfill {
            Some(step) => {
                store
                    .commit_backfill_step(step, &plan.events, &plan.runs)
                    .await
            }
            None => {
                store
                    .commit_events(&plan.events, &plan.index, &plan.runs, plan.watch_fence)
                    .await
            }
        }
    }

    /// Commits a plan, waiting out a database that is unreachable (until
    /// shutdown): the watch's way, where the changes cannot be refused. An
    /// event given up on is not lost either: the stored index does not have
    /// its change, so the next start finds it again.
    pub async fn commit_patiently(&self, plan: &Plan) -> Result<(), StoreError> {
        let mut wait = Duration::from_millis(50);
        loop {
            match self.commit(plan).await {
                Err(e) if e.is_transient() && !self.rt.shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, events = plan.events.len(), "the database is unreachable; retrying the events");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.rt.shutdown.cancelled() => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                done => return done,
            }
        }
    }

    /// After the commit: counts the events and runs, tells the followers
    /// of each run's first state, and hands the queued runs over.
    pub async fn publish(&self, plan: Plan) {
        for (e, _) in &plan.events {
            crate::metrics::METRICS.event(e.kind);
        }
        for r in &plan.runs {
            let mut change = RunChange::new(&r.id, &r.workflow, &r.event.path, r.status);
            change.reason = r.reason.clone();
            self.rt.changed(change);
        }
        if let Some(Admission::Held(room)) = plan.admission {
            self.dispatcher.submit(room, plan.jobs).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Cause, Source};

    fn live(yaml: &str) -> Live {
        let loaded = crate::definitions::load_text(
            std::path::Path::new("t.yaml"),
            yaml.as_bytes(),
            &Default::default(),
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        Live::new(loaded.set, None)
    }

    fn workflow(name: &str, events: &str, pattern: &str) -> String {
        format!(
            "---\napiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  on: [{{event: {events}, pattern: \"{pattern}\"}}]\n  steps: [{{name: s, action: log, with: {{message: x}}}}]\n"
        )
    }

    fn event(kind: EventType, path: &str, old: Option<&str>) -> Event {
        Event {
            id: new_id("evt_"),
            kind,
            path: path.into(),
            old_path: old.map(Into::into),
            size: Some(1),
            mtime_ms: Some(1),
            observed_ms: 1,
            cause: None,
            raw_abs: None,
            actor: None,
            source: Source::Watch,
        }
    }

    fn rules<'a>(live: &'a Live, is_paused: &'a dyn Fn(&Workflow) -> bool) -> Rules<'a> {
        Rules {
            live,
            is_paused,
            max_chain_depth: 2,
            lease: ("node".into(), 99),
        }
    }

    fn matched(event: Event) -> Arrival {
        Arrival {
            event,
            target: Target::Matched,
        }
    }

    #[test]
    fn a_change_starts_the_matching_workflows_and_says_why_the_others_do_not() {
        let live = live(&format!(
            "{}{}{}",
            workflow("a", "file.created", "/in/*.txt"),
            workflow("u", "file.updated", "/in/*.txt"),
            workflow("far", "file.created", "/elsewhere/*"),
        ));
        let never = |_: &Workflow| false;
        let plan = plan(
            &rules(&live, &never),
            vec![matched(event(EventType::Created, "/in/x.txt", None))],
            vec![],
        );
        assert_eq!(plan.runs.len(), 1);
        assert_eq!(plan.runs[0].workflow, "a");
        assert_eq!(plan.runs[0].status, RunStatus::Queued);
        assert_eq!(plan.runs[0].lease, Some(("node".into(), 99)));
        assert_eq!(plan.jobs.len(), 1);
        let decisions = &plan.events[0].1;
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        assert_eq!(decisions[0].decision, DecisionKind::Run);
        assert_eq!(decisions[0].run.as_deref(), Some(plan.runs[0].id.as_str()));
        assert_eq!(
            decisions[0].reason.as_deref(),
            Some("pattern `/in/*.txt` matched")
        );
        assert_eq!(decisions[1].workflow, "u");
        assert_eq!(decisions[1].decision, DecisionKind::NotMatched);
        assert_eq!(
            decisions[1].reason.as_deref(),
            Some("event type file.created not listed (triggers on file.updated)")
        );
    }

    #[test]
    fn paused_and_looping_runs_are_recorded_skipped_and_not_dispatched() {
        let live = live(&format!(
            "{}{}",
            workflow("a", "file.created", "/in/*.txt"),
            workflow("quiet", "file.created", "/in/*.txt"),
        ));
        let paused = |w: &Workflow| w.name == "quiet";
        let mut deep = event(EventType::Created, "/in/deep.txt", None);
        deep.cause = Some(Cause {
            run_id: "run_x".into(),
            depth: 3,
        });
        let plan = plan(
            &rules(&live, &paused),
            vec![
                matched(event(EventType::Created, "/in/x.txt", None)),
                matched(deep),
            ],
            vec![],
        );
        let statuses: Vec<(&str, RunStatus, Option<&str>)> = plan
            .runs
            .iter()
            .map(|r| (r.workflow.as_str(), r.status, r.reason.as_deref()))
            .collect();
        assert_eq!(statuses[0], ("a", RunStatus::Queued, None));
        assert_eq!(statuses[1], ("quiet", RunStatus::Skipped, Some("paused")));
        assert_eq!(statuses[2].1, RunStatus::Skipped);
        assert!(
            statuses[2].2.unwrap().starts_with(
                "loop: chain depth 3 exceeds --max-chain-depth 2 (caused by run run_x)"
            )
        );
        assert_eq!(plan.jobs.len(), 1);
        assert!(plan.runs[1].lease.is_none());
        assert_eq!(plan.events[0].1[1].decision, DecisionKind::Skipped);
        assert_eq!(plan.events[0].1[1].reason.as_deref(), Some("paused"));
    }

    /// A workflow whose secret has no value on this node still gets its
    /// run, recorded unclaimed for a node that can run it; the others run
    /// here as before.
    #[test]
    fn a_workflow_this_node_lacks_gets_its_run_left_to_the_others() {
        let live = live(&format!(
            "{}---\napiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: keyed}}\nspec:\n  on: [{{event: file.created, pattern: \"/in/*.txt\"}}]\n  secrets: [NEXUS_TEST_NO_SUCH_SECRET_41]\n  steps: [{{name: s, action: log, with: {{message: x}}}}]\n",
            workflow("a", "file.created", "/in/*.txt"),
        ));
        assert!(
            live.lacks("keyed").is_some_and(|why| why
                .contains("declares secret `NEXUS_TEST_NO_SUCH_SECRET_41`, which has no value")),
            "{:?}",
            live.lacking
        );
        let never = |_: &Workflow| false;
        let plan = plan(
            &rules(&live, &never),
            vec![matched(event(EventType::Created, "/in/x.txt", None))],
            vec![],
        );
        let runs: Vec<(&str, RunStatus, bool)> = plan
            .runs
            .iter()
            .map(|r| (r.workflow.as_str(), r.status, r.lease.is_some()))
            .collect();
        assert_eq!(
            runs,
            [
                ("a", RunStatus::Queued, true),
                ("keyed", RunStatus::Queued, false)
            ]
        );
        assert_eq!(plan.jobs.len(), 1);
        assert_eq!(plan.jobs[0].workflow.name, "a");
        let keyed = &plan.events[0].1[1];
        assert_eq!(keyed.decision, DecisionKind::Run);
        assert!(
            keyed
                .reason
                .as_deref()
                .is_some_and(|r| r.ends_with("; left to a node that can run it")),
            "{keyed:?}"
        );
    }

    #[test]
    fn a_move_across_a_pattern_edge_is_a_creation_or_a_deletion_for_it() {
        let live = live(&format!(
            "{}{}{}",
            workflow("into-out", "file.created", "/out/*"),
            workflow("gone-from-in", "file.deleted", "/in/*"),
            workflow("moves", "[file.moved, file.created]", "/**/*"),
        ));
        let never = |_: &Workflow| false;
        let plan = plan(
            &rules(&live, &never),
            vec![matched(event(EventType::Moved, "/out/a", Some("/in/a")))],
            vec![],
        );
        let runs: Vec<(&str, EventType, &str)> = plan
            .runs
            .iter()
            .map(|r| (r.workflow.as_str(), r.event.kind, r.event.path.as_str()))
            .collect();
        assert_eq!(
            runs,
            [
                ("into-out", EventType::Created, "/out/a"),
                ("gone-from-in", EventType::Deleted, "/in/a"),
                ("moves", EventType::Moved, "/out/a"),
            ]
        );
        let reasons: Vec<&str> = plan.events[0]
            .1
            .iter()
            .map(|d| d.reason.as_deref().unwrap())
            .collect();
        assert_eq!(
            reasons,
            [
                "moved in: pattern `/out/*` matched the new path (seen as file.created)",
                "moved out: pattern `/in/*` matched the old path (seen as file.deleted)",
                "pattern `/**/*` matched",
            ]
        );
    }

    #[test]
    fn a_trigger_starts_its_workflow_whatever_the_patterns_say() {
        let live = live(&workflow("a", "file.created", "/in/*.txt"));
        let never = |_: &Workflow| false;
        let mut ev = event(EventType::Created, "/elsewhere/f", None);
        ev.source = Source::Api;
        let plan = plan(
            &rules(&live, &never),
            vec![Arrival {
                event: ev,
                target: Target::Workflow(
                    Arc::clone(&live.workflows[0]),
                    "triggered through the API by wendy".into(),
                ),
            }],
            vec![],
        );
        assert_eq!(plan.runs.len(), 1);
        assert_eq!(plan.jobs.len(), 1);
        let d = &plan.events[0].1;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].decision, DecisionKind::Run);
        assert_eq!(
            d[0].reason.as_deref(),
            Some("triggered through the API by wendy")
        );
    }
}
