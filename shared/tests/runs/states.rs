//! A connection's states as a user sees them (`state.json` through `connection_status`), step by
//! step through its life: stored without a schedule, given one, a run under way, a complete run,
//! a partial run, and a run whose every item failed.

use std::sync::Mutex;

use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Endpoint, FaultSpec, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::pipeline::{
    ConnectionStatus, RunOutcome, RunRef, RunState, Schedule, StepError, Trigger,
    connection_status, lock_key, record_registration, run_connection, state_key,
};
use cxone_etm::secret::{Credential, SecretSource};
use cxone_etm::store::ObjectStore;

enum Step {
    /// `connection put` of the connection as it is now.
    Store,
    /// The connection gets a schedule and is stored again.
    Schedule(&'static str),
    /// A run with this credential, the emulator's results endpoint drifting or not.
    Run {
        trigger: Trigger,
        credential: fn(&cxone_emulator::Emulator) -> Credential,
        drifting_totals: bool,
    },
}

struct Expected {
    state: RunState,
    outcome: Option<RunOutcome>,
    reason: Option<&'static str>,
    /// Text the next-run time or note holds.
    next_run: &'static str,
    committed: bool,
}

fn refused_results(emulator: &cxone_emulator::Emulator) -> Credential {
    Credential::ApiKey(emulator.credentials.api_key_no_results.clone().into())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_shows_each_state_of_its_life() {
    let emulator = emulator(TenantShape {
        projects: 3,
        project_results: vec![25],
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("states");
    let mut c = connection(&emulator, "states", ConnectorKind::Sast);
    c.vendor.results_page_size = 10;

    let steps: Vec<(&str, Step, Expected)> = vec![
        (
            "a fresh connection",
            Step::Store,
            Expected {
                state: RunState::Registered,
                outcome: None,
                reason: None,
                next_run: "no schedule: runs start on demand",
                committed: false,
            },
        ),
        (
            "a scheduled wait",
            Step::Schedule("cron(0 2 * * ? *)"),
            Expected {
                state: RunState::Scheduled,
                outcome: None,
                reason: None,
                next_run: "(Europe/Berlin)",
                committed: false,
            },
        ),
        (
            "a complete run",
            Step::Run {
                trigger: Trigger::Api,
                credential: api_key,
                drifting_totals: false,
            },
            Expected {
                state: RunState::Processed,
                outcome: Some(RunOutcome::Complete),
                reason: None,
                next_run: "(Europe/Berlin)",
                committed: true,
            },
        ),
        (
            "a partial run",
            Step::Run {
                trigger: Trigger::Api,
                credential: api_key,
                drifting_totals: true,
            },
            Expected {
                state: RunState::Processed,
                outcome: Some(RunOutcome::Partial),
                reason: Some("items are incomplete or failed"),
                next_run: "(Europe/Berlin)",
                committed: true,
            },
        ),
        (
            "a failed run",
            Step::Run {
                trigger: Trigger::Api,
                credential: refused_results,
                drifting_totals: false,
            },
            Expected {
                state: RunState::Failed,
                outcome: None,
                reason: Some("nothing was committed: every item failed (3 failed); the first, "),
                next_run: "(Europe/Berlin)",
                committed: false,
            },
        ),
        (
            "a rate schedule before its first scheduled run",
            Step::Schedule("rate(1 day)"),
            Expected {
                state: RunState::Failed,
                outcome: None,
                reason: Some("nothing was committed"),
                next_run: "the first scheduled run sets the time",
                committed: false,
            },
        ),
        (
            "a scheduled run",
            Step::Run {
                trigger: Trigger::Schedule,
                credential: api_key,
                drifting_totals: false,
            },
            Expected {
                state: RunState::Processed,
                outcome: Some(RunOutcome::Complete),
                reason: None,
                // A day after the run's start: checked to the second below.
                next_run: "(Europe/Berlin)",
                committed: true,
            },
        ),
    ];

    let mut last_committed = None;
    for (name, step, expected) in steps {
        let mut states_while_running = Vec::new();
        match step {
            Step::Store => record_registration(&store, "states", c.schedule.is_some())
                .await
                .unwrap(),
            Step::Schedule(expression) => {
                c.config.schedule = Some(Schedule {
                    expression: expression.into(),
                    timezone: "Europe/Berlin".into(),
                    start_date: "2026-01-01".into(),
                    end_date: None,
                });
                c = c.config.clone().validate().unwrap();
                record_registration(&store, "states", true).await.unwrap();
            }
            Step::Run {
                trigger,
                credential,
                drifting_totals,
            } => {
                emulator.set_fault(
                    Endpoint::Results,
                    FaultSpec {
                        total_drift: if drifting_totals { 2 } else { 0 },
                        ..FaultSpec::default()
                    },
                );
                let seen = Mutex::new(Vec::new());
                let state_file = dir.join(state_key("states"));
                let result = run_connection(
                    &store,
                    &c,
                    SecretSource::provided(credential(&emulator)),
                    trigger,
                    &|_| {},
                    &|_| seen.lock().unwrap().push(read_state_file(&state_file)),
                )
                .await;
                states_while_running = seen.into_inner().unwrap();
                match (&result, expected.state) {
                    (Err(StepError::NothingCommitted(_)), RunState::Failed) => {}
                    (Ok(_), RunState::Processed) => {}
                    (other, _) => panic!("{name}: the run ended {:?}", other.as_ref().err()),
                }
            }
        }
        let status = connection_status(&store, &c, jiff::Timestamp::now())
            .await
            .unwrap();
        check(name, &status, &expected);
        assert!(
            states_while_running
                .iter()
                .all(|s| *s == RunState::Processing),
            "{name}: while items ran the connection was {states_while_running:?}"
        );
        if let Some(run_id) = status.state.last_run.clone() {
            let run = RunRef {
                connection_id: "states".into(),
                run_id,
            };
            let marker = store.get(&run.commit_marker()).await.unwrap();
            assert_eq!(
                marker.is_some(),
                expected.committed,
                "{name}: commit marker"
            );
            assert!(
                store.get(&lock_key("states")).await.unwrap().is_none(),
                "{name}: the lock is released"
            );
            if expected.committed {
                last_committed = Some(run.run_id.clone());
            }
        }
        assert_eq!(
            status.state.last_committed_run, last_committed,
            "{name}: the last committed run is the last that committed"
        );
    }
    // A rate schedule counts from its last scheduled run: a day after the run above started.
    let status = connection_status(&store, &c, jiff::Timestamp::now())
        .await
        .unwrap();
    let started: jiff::Timestamp = status.state.last_scheduled_run_at.unwrap().parse().unwrap();
    assert_eq!(
        status.next_run_at,
        Some((started + jiff::SignedDuration::from_hours(24)).to_string())
    );
    std::fs::remove_dir_all(dir).ok();
}

fn read_state_file(path: &std::path::Path) -> RunState {
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("state.json exists")).unwrap();
    serde_json::from_value(document["state"].clone()).unwrap()
}

fn check(name: &str, status: &ConnectionStatus, expected: &Expected) {
    assert_eq!(status.state.state, expected.state, "{name}: state");
    assert_eq!(status.state.outcome, expected.outcome, "{name}: outcome");
    match expected.reason {
        Some(reason) => assert!(
            status
                .state
                .reason
                .as_deref()
                .is_some_and(|r| r.contains(reason)),
            "{name}: reason {:?}",
            status.state.reason
        ),
        None => assert_eq!(status.state.reason, None, "{name}: no reason"),
    }
    let next = [
        &status.next_run_local,
        &status.next_run_note,
        &status.next_run_at,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect::<Vec<_>>()
    .join(" | ");
    assert!(next.contains(expected.next_run), "{name}: next run {next}");
    let text = status.to_text();
    assert!(
        text.contains(&format!("{:?}", expected.state)),
        "{name}: the text names the state: {text}"
    );
}
