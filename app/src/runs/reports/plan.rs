//! What a group of status reports does to its runs and stages, decided without the
//! database: pass one refuses and finds repeats, pass two applies each new report in order.
//!
//! A stage's `running` starts the run, its `failed` fails the run, and the last stage's
//! `completed` completes it, as the seed did. A report that would move a status backwards
//! is recorded in the run's history but changes nothing (`applied: false`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::db::{ReportedEvents, ReportedRun, ReportedStage};
use super::{Report, Step};
use crate::error::AppError;
use crate::runs::StatusUpdateAck;
use crate::status::{Change, RunStatus};

/// What pass one decided for a report.
pub(super) enum Plan {
    /// Settled already: refused, or its run is busy.
    Settled(Step),
    /// A repeat of an event id earlier in the same group.
    Repeat,
    /// To apply, if its event is new.
    Apply { event_id: String, at: DateTime<Utc> },
}

/// A fresh event id for a report that came without one.
fn new_event_id() -> String {
    format!(
        "{}report-{:032x}",
        crate::runs::OWN_EVENT_PREFIX,
        rand::random::<u128>()
    )
}

/// The locked runs and their stages, as the reports change them.
pub(super) struct State {
    runs: HashMap<i64, ReportedRun>,
    stages: Vec<ReportedStage>,
    stage_index: HashMap<(i64, String), usize>,
    changed_runs: HashSet<i64>,
    changed_stages: HashSet<usize>,
}

impl State {
    /// The runs locked for the group and the stages read with them.
    pub(super) fn new(runs: Vec<ReportedRun>, stages: Vec<ReportedStage>) -> Self {
        let stage_index = stages
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.run_id, s.name.clone()), i))
            .collect();
        Self {
            runs: runs.into_iter().map(|run| (run.id, run)).collect(),
            stages,
            stage_index,
            changed_runs: HashSet::new(),
            changed_stages: HashSet::new(),
        }
    }

    /// Pass one: refusals, repeats within the group, and the events to record. A report
    /// about a run not locked is refused when `wait` (there is no such run), else busy.
    pub(super) fn check(
        &self,
        reports: &[(i64, &Report)],
        wait: bool,
        now: DateTime<Utc>,
    ) -> (Vec<Plan>, ReportedEvents) {
        // Pass one: refusals, repeats within the group, and the events to record.
        let mut events = ReportedEvents::default();
        let mut seen = HashSet::new();
        let mut plans = Vec::with_capacity(reports.len());
        for (run_id, report) in reports {
            let update = &report.update;
            let Some(run) = self.runs.get(run_id) else {
                plans.push(Plan::Settled(if wait {
                    Step::Refused(AppError::not_found("Run"))
                } else {
                    Step::Busy
                }));
                continue;
            };
            if update
                .pipeline_id
                .is_some_and(|pipeline_id| pipeline_id != run.pipeline_id)
            {
                plans.push(Plan::Settled(Step::Refused(AppError::not_found(
                    "Run of this pipeline",
                ))));
                continue;
            }
            if let Err(error) = report.caller.may_report_on(run.id) {
                plans.push(Plan::Settled(Step::Refused(error)));
                continue;
            }
            if let Some(name) = &update.stage_name
                && !self.stage_index.contains_key(&(run.id, name.clone()))
            {
                plans.push(Plan::Settled(Step::Refused(AppError::not_found(&format!(
                    "Stage '{name}'"
                )))));
                continue;
            }
            let event_id = update.event_id.clone().unwrap_or_else(new_event_id);
            if !seen.insert((run.id, event_id.clone())) {
                plans.push(Plan::Repeat);
                continue;
            }
            let at = update.timestamp.map_or(now, |t| t.min(now));
            events.run_ids.push(run.id);
            events.event_ids.push(event_id.clone());
            events.kinds.push(if update.stage_name.is_some() {
                "stage_status"
            } else {
                "run_status"
            });
            events.stage_names.push(update.stage_name.clone());
            events.statuses.push(report.status.as_str());
            events.messages.push(update.error_message.clone());
            events.occurred_at.push(at);
            events.request_ids.push(report.caller.meta.request_id.clone());
            plans.push(Plan::Apply { event_id, at });
        }
        (plans, events)
    }

    /// Pass two: each report whose event is `fresh` (recorded now, not before) applied in
    /// order to the runs and stages as they stand; the others are duplicates.
    pub(super) fn settle(
        &mut self,
        reports: &[(i64, &Report)],
        plans: Vec<Plan>,
        fresh: &HashSet<(i64, String)>,
    ) -> Vec<Step> {
        // Pass two: each new report applied in order to the runs and stages as they stand.
        let mut steps = Vec::with_capacity(reports.len());
        for ((run_id, report), plan) in reports.iter().zip(plans) {
            let at = match plan {
                Plan::Settled(step) => {
                    steps.push(step);
                    continue;
                }
                Plan::Apply { ref event_id, at } if fresh.contains(&(*run_id, event_id.clone())) => at,
                Plan::Repeat | Plan::Apply { .. } => {
                    let status = self.runs[run_id].status;
                    steps.push(Step::Done {
                        ack: StatusUpdateAck {
                            success: true,
                            run_id: *run_id,
                            pipeline_id: self.runs[run_id].pipeline_id,
                            applied: false,
                            duplicate: true,
                            run_status: status,
                        },
                        before: status,
                        outcome: "duplicate",
                    });
                    continue;
                }
            };
            let update = &report.update;
            let status = report.status;
            let run = self
                .runs
                .get_mut(run_id)
                .expect("planned reports have a locked run");
            let before = run.status;
            let newer = |last: Option<DateTime<Utc>>| last.is_none_or(|last| at >= last);
            let applied = match &update.stage_name {
                Some(name) => {
                    let index = self.stage_index[&(*run_id, name.clone())];
                    let stage = &mut self.stages[index];
                    let change = stage.status.on_report(status, newer(stage.reported_at));
                    if change != Change::Stale {
                        stage.status = status;
                        stage.started_at = started(stage.started_at, status, at);
                        if status.is_terminal() {
                            stage.ended_at = Some(at);
                        }
                        stage.message = update.error_message.clone().or(stage.message.take());
                        stage.records_processed = update.records_processed.or(stage.records_processed);
                        stage.reported_at = Some(stage.reported_at.map_or(at, |last| last.max(at)));
                        self.changed_stages.insert(index);
                    }
                    let records = update.records_processed.filter(|_| change != Change::Stale);
                    let all_completed = || {
                        self.stages
                            .iter()
                            .filter(|s| s.run_id == *run_id)
                            .all(|s| matches!(s.status, RunStatus::Completed | RunStatus::Skipped))
                    };
                    let follow = match (change, status) {
                        (Change::Move, RunStatus::Running) => Some(RunStatus::Running),
                        (Change::Move, RunStatus::Failed) => Some(RunStatus::Failed),
                        (Change::Move, RunStatus::Completed) if all_completed() => Some(RunStatus::Completed),
                        _ => None,
                    };
                    if let Some(next) = follow.filter(|next| run.status.may_become(*next)) {
                        let error = update
                            .error_message
                            .as_deref()
                            .filter(|_| next == RunStatus::Failed);
                        run.move_to(next, error, records, at);
                        self.changed_runs.insert(*run_id);
                    } else if let Some(records) = records {
                        run.records_processed = run.records_processed.max(records);
                        self.changed_runs.insert(*run_id);
                    }
                    change != Change::Stale
                }
                None => {
                    let change = run.status.on_report(status, newer(run.reported_at));
                    if change != Change::Stale {
                        run.move_to(
                            status,
                            update.error_message.as_deref(),
                            update.records_processed,
                            at,
                        );
                        self.changed_runs.insert(*run_id);
                    }
                    change != Change::Stale
                }
            };
            steps.push(Step::Done {
                ack: StatusUpdateAck {
                    success: true,
                    run_id: *run_id,
                    pipeline_id: self.runs[run_id].pipeline_id,
                    applied,
                    duplicate: false,
                    run_status: self.runs[run_id].status,
                },
                before,
                outcome: if applied { "applied" } else { "stale" },
            });
        }
        steps
    }

    /// The runs and stages that changed, to write back.
    pub(super) fn changed(&self) -> (Vec<&ReportedRun>, Vec<&ReportedStage>) {
        let runs = self.changed_runs.iter().map(|id| &self.runs[id]).collect();
        let stages = self.changed_stages.iter().map(|i| &self.stages[*i]).collect();
        (runs, stages)
    }
}

/// When a stage or run started, once `status` is reported at `at`.
fn started(started_at: Option<DateTime<Utc>>, status: RunStatus, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if status == RunStatus::Running {
        started_at.or(Some(at))
    } else {
        started_at
    }
}

impl ReportedRun {
    /// Moves the run to `status` as reported at `at`, stamping start and end times; records
    /// processed (a running total) are only ever raised, an earlier error is kept unless a
    /// new one is given. Reports, cancels and Prefect's states all move a run this way (the
    /// dispatcher's own moves, to `scheduled` or `failed` on submission, are its SQL).
    pub fn move_to(
        &mut self,
        status: RunStatus,
        error: Option<&str>,
        records: Option<i64>,
        at: DateTime<Utc>,
    ) {
        self.status = status;
        self.started_at = started(self.started_at, status, at);
        if status.is_terminal() {
            self.ended_at = Some(at);
        }
        if let Some(error) = error {
            self.error_message = Some(error.to_owned());
        }
        if let Some(records) = records {
            self.records_processed = self.records_processed.max(records);
        }
        self.reported_at = Some(self.reported_at.map_or(at, |last| last.max(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::{AuthMethod, Caller, Principal, RequestMeta, Role};
    use crate::runs::StatusUpdate;

    fn run(id: i64, status: RunStatus) -> ReportedRun {
        ReportedRun {
            id,
            pipeline_id: 1,
            status,
            started_at: None,
            ended_at: None,
            error_message: None,
            records_processed: 0,
            reported_at: None,
        }
    }

    fn stage(id: i64, run_id: i64, name: &str, status: RunStatus) -> ReportedStage {
        ReportedStage {
            id,
            run_id,
            name: name.to_owned(),
            status,
            started_at: None,
            ended_at: None,
            message: None,
            records_processed: None,
            reported_at: None,
        }
    }

    fn report(run_id: i64, stage: Option<&str>, status: RunStatus, event_id: &str) -> Report {
        Report {
            caller: Caller {
                principal: Principal {
                    actor: format!("run:{run_id}"),
                    role: Role::Operator,
                    via: AuthMethod::RunCallback,
                    run_scope: Some(run_id),
                    key_id: None,
                    scope: Default::default(),
                    budget: Default::default(),
                },
                meta: RequestMeta::default(),
            },
            update: StatusUpdate {
                pipeline_id: None,
                run_id: Some(run_id),
                stage_name: stage.map(str::to_owned),
                status: status.as_str().to_owned(),
                error_message: (status == RunStatus::Failed).then(|| "boom".to_owned()),
                records_processed: Some(5),
                event_id: Some(event_id.to_owned()),
                timestamp: None,
            },
            status,
        }
    }

    /// Plans and settles `reports` as if every checked event were new.
    fn apply(state: &mut State, reports: &[Report], wait: bool) -> Vec<Step> {
        let pairs: Vec<(i64, &Report)> = reports.iter().map(|r| (r.update.run_id.unwrap(), r)).collect();
        let (plans, events) = state.check(&pairs, wait, Utc::now());
        let fresh = events
            .run_ids
            .iter()
            .copied()
            .zip(events.event_ids.iter().cloned())
            .collect();
        state.settle(&pairs, plans, &fresh)
    }

    fn acked(step: &Step) -> (bool, bool, RunStatus) {
        match step {
            Step::Done { ack, .. } => (ack.applied, ack.duplicate, ack.run_status),
            Step::Refused(e) => panic!("refused: {e}"),
            Step::Busy => panic!("busy"),
        }
    }

    #[test]
    fn a_failed_stage_fails_its_run_and_a_repeat_in_the_group_changes_nothing() {
        let mut state = State::new(
            vec![run(7, RunStatus::Running)],
            vec![stage(1, 7, "load", RunStatus::Running)],
        );
        let failed = report(7, Some("load"), RunStatus::Failed, "e1");
        let again = report(7, Some("load"), RunStatus::Failed, "e1");
        let steps = apply(&mut state, &[failed, again], true);
        assert_eq!(acked(&steps[0]), (true, false, RunStatus::Failed));
        assert_eq!(acked(&steps[1]), (false, true, RunStatus::Failed));
        let (runs, stages) = state.changed();
        assert_eq!(runs[0].error_message.as_deref(), Some("boom"));
        assert!(runs[0].ended_at.is_some());
        assert_eq!((stages.len(), stages[0].status), (1, RunStatus::Failed));
    }

    #[test]
    fn the_last_stage_completing_completes_the_run_and_nothing_moves_back() {
        let mut state = State::new(
            vec![run(7, RunStatus::Running)],
            vec![
                stage(1, 7, "extract", RunStatus::Completed),
                stage(2, 7, "load", RunStatus::Running),
            ],
        );
        let done = report(7, Some("load"), RunStatus::Completed, "e1");
        let back = report(7, Some("extract"), RunStatus::Running, "e2");
        let steps = apply(&mut state, &[done, back], true);
        assert_eq!(acked(&steps[0]), (true, false, RunStatus::Completed));
        assert_eq!(acked(&steps[1]), (false, false, RunStatus::Completed));
        let (_, stages) = state.changed();
        assert!(stages.iter().all(|s| s.status == RunStatus::Completed));
    }

    #[test]
    fn refusals_are_decided_before_anything_changes() {
        let mut state = State::new(vec![run(7, RunStatus::Running)], Vec::new());
        let mut other_run = report(7, None, RunStatus::Completed, "e1");
        other_run.caller.principal.run_scope = Some(8);
        let unknown_stage = report(7, Some("nope"), RunStatus::Running, "e2");
        let not_locked = report(9, None, RunStatus::Running, "e3");
        let pairs: Vec<(i64, &Report)> = [&other_run, &unknown_stage, &not_locked]
            .into_iter()
            .map(|r| (r.update.run_id.unwrap(), r))
            .collect();
        let (plans, events) = state.check(&pairs, false, Utc::now());
        assert!(events.event_ids.is_empty(), "no event is recorded for a refusal");
        let steps = state.settle(&pairs, plans, &HashSet::new());
        assert!(matches!(steps[0], Step::Refused(AppError::Forbidden { .. })));
        assert!(matches!(steps[1], Step::Refused(AppError::NotFound { .. })));
        assert!(
            matches!(steps[2], Step::Busy),
            "a run held elsewhere is sent on alone"
        );
        assert_eq!(state.changed().0.len(), 0);
    }
}
