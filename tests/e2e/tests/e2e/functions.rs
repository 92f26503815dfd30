//! Every sample event in `events/` fed through its function's handler, over memory ports (store,
//! secrets, state machine) and the emulator; and a whole run driven through the four handlers the
//! way the state machine drives them.

use std::path::PathBuf;
use std::time::Duration;

use cxone_emulator::{Endpoint, FaultSpec};
use cxone_etm::lambda::{Runtime, ScheduleConfig};
use cxone_etm::pipeline::{
    ConnectionConfig, RunRecord, RunRef, RunState, Trigger, WorkGroup, WorkItem, config_key,
    read_state, read_work_list, write_plan,
};
use cxone_etm::store::{BucketStore, ObjectStore, StoreError, Version};

use crate::{call, trigger};
use cxone_etm::lambda::VendorHosts;
use cxone_etm_e2e::{emulator_host, fixture, vendor_settings};
use serde_json::{Value, json};

fn event(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The sample API event `sample` sent to `method` `path`, as API Gateway hands it over: the raw
/// path, the template route it matches (`routeKey`) and that route's path parameters.
fn api_event(sample: &str, method: &str, path: &str) -> Value {
    let mut request = event(sample);
    request["rawPath"] = json!(path);
    request["requestContext"]["http"]["method"] = json!(method);
    request["requestContext"]["http"]["path"] = json!(path);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (route, parameters) = match segments.as_slice() {
        ["connections", id] => ("/connections/{id}".to_string(), json!({"id": id})),
        ["connections", id, "runs", run] => (
            "/connections/{id}/runs/{runId}".to_string(),
            json!({"id": id, "runId": run}),
        ),
        ["connections", id, last] => (format!("/connections/{{id}}/{last}"), json!({"id": id})),
        _ => panic!("no route of the template takes {path}"),
    };
    let key = json!(format!("{method} {route}"));
    request["routeKey"] = key.clone();
    request["requestContext"]["routeKey"] = key;
    request["pathParameters"] = parameters;
    request
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("a text body")).unwrap()
}

#[tokio::test]
async fn the_sample_events_run_a_whole_connection_through_the_four_handlers() {
    let f = fixture().await;
    let started = trigger(&f.runtime, event("trigger-schedule.json"))
        .await
        .expect("scheduled trigger");
    let run: RunRef = serde_json::from_value(started["run"].clone()).unwrap();
    // The trigger answers before any vendor call: the state machine plans (its first state).
    assert!(started.get("planned").is_none(), "{started}");
    assert!(!is_stored(&f, &run.work_list()).await);
    // The state machine was started once, named for the run, with the run as its input (what the
    // Distributed Map reads: the bucket, the work list's key and the concurrency).
    let starts = f.starts.starts();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].name, format!("demo-sast-{}", run.run_id));
    assert!(
        started["executionArn"]
            .as_str()
            .unwrap()
            .ends_with(&starts[0].name),
        "{started}"
    );
    let input: Value = serde_json::from_str(&starts[0].input).unwrap();
    assert_eq!(input["workListKey"], run.work_list().as_str());
    assert_eq!(input["bucket"], "memory");
    assert_eq!(input["maxConcurrency"], 10);
    // The state machine's first state: the plan, in the trigger's function, with the run.
    let planned = plan(&f, &input).await;
    assert_eq!(planned["items"], 10);
    assert_eq!(planned["run"], started["run"]);

    let refused = trigger(&f.runtime, event("trigger-api-start-run.json"))
        .await
        .unwrap();
    assert_eq!(
        refused["statusCode"], 409,
        "a second trigger while the run holds the lock"
    );
    assert!(
        body(&refused)["error"]
            .as_str()
            .unwrap()
            .contains(&run.run_id)
    );

    // The Distributed Map: each work list line (a group of items) through collect, then the
    // same group through transform, as the state machine passes it.
    let work = f
        .runtime
        .store
        .get(&run.work_list())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started["workListKey"], run.work_list().as_str());
    let findings = collect_and_transform(&f, &work).await;
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({"run": run}),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], true);
    assert_eq!(finalized["findings"].as_u64().unwrap(), findings);
    assert_eq!(
        findings,
        f.emulator.expected().totals.by_type[&cxone_emulator::ResultType::Sast]
    );

    // The show-run sample names a run that does not exist; the same route with the real id shows it.
    let missing = trigger(&f.runtime, event("trigger-api-show-run.json"))
        .await
        .unwrap();
    assert_eq!(missing["statusCode"], 404);
    let show = api_event(
        "trigger-api-show-run.json",
        "GET",
        &format!("/connections/demo-sast/runs/{}", run.run_id),
    );
    let shown = trigger(&f.runtime, show.clone()).await.unwrap();
    assert_eq!(shown["statusCode"], 200);
    // Invoked directly (route key `$default`) for an API with a named stage (not `$default`):
    // the stage at the raw path's start.
    let mut staged = show.clone();
    staged["routeKey"] = json!("$default");
    staged["requestContext"]["stage"] = json!("prod");
    staged["rawPath"] = json!(format!("/prod/connections/demo-sast/runs/{}", run.run_id));
    let answer = |request: Value| async { trigger(&f.runtime, request).await.unwrap() };
    assert_eq!(answer(staged.clone()).await["body"], shown["body"]);
    staged["rawPath"] = json!(format!("/prodx/connections/demo-sast/runs/{}", run.run_id));
    assert_eq!(answer(staged).await["statusCode"], 404);
    assert_eq!(body(&shown)["run"]["state"], "Processed");
    assert_eq!(body(&shown)["committed"], true);
    assert_eq!(body(&shown)["complete"], true);
    assert_eq!(body(&shown)["connection"]["outcome"], "complete");
    // A manifest without its commit marker (a finalize cut off between the two) is not shown as
    // the run's.
    let marker = f.runtime.store.get(&run.commit_marker()).await.unwrap();
    f.runtime.store.delete(&run.commit_marker()).await.unwrap();
    let shown = trigger(&f.runtime, show.clone()).await.unwrap();
    assert_eq!(body(&shown)["committed"], false, "{shown}");
    assert!(body(&shown).get("complete").is_none(), "{shown}");
    assert!(body(&shown).get("findings").is_none(), "{shown}");
    f.runtime
        .store
        .put(&run.commit_marker(), marker.unwrap())
        .await
        .unwrap();

    let status = trigger(&f.runtime, event("trigger-api-show-connection.json"))
        .await
        .unwrap();
    assert_eq!(status["statusCode"], 200);
    let status = body(&status);
    assert_eq!(
        (
            &status["state"],
            &status["outcome"],
            &status["lastCommittedRun"]
        ),
        (&json!("Processed"), &json!("complete"), &json!(run.run_id)),
        "{status}"
    );

    let tested = trigger(&f.runtime, event("trigger-api-test-connection.json"))
        .await
        .unwrap();
    assert_eq!(tested["statusCode"], 200);
    assert_eq!(body(&tested)["passed"], true, "{}", body(&tested));

    let started = trigger(&f.runtime, event("trigger-api-start-run.json"))
        .await
        .unwrap();
    assert_eq!(
        started["statusCode"],
        202,
        "the lock was released by finalize: {}",
        body(&started)
    );
}

/// Stores `run`'s record as the trigger's start (Scheduled) or a plan (Processing, its items) leaves it.
async fn store_run_record(
    f: &cxone_etm_e2e::Fixture,
    run: &RunRef,
    state: RunState,
    items: Option<u64>,
) {
    store_run_record_of(f, run, Trigger::Api, state, items).await
}

async fn store_run_record_of(
    f: &cxone_etm_e2e::Fixture,
    run: &RunRef,
    trigger: Trigger,
    state: RunState,
    items: Option<u64>,
) {
    let record = RunRecord {
        connection_id: run.connection_id.clone(),
        run_id: run.run_id.clone(),
        trigger,
        state,
        reason: None,
        started_at: "2026-11-22T00:00:00Z".into(),
        finished_at: None,
        items,
        previous_run: None,
        scope: None,
    };
    let body = serde_json::to_vec(&record).unwrap();
    f.runtime
        .store
        .put(&run.run_record(), body.into())
        .await
        .unwrap();
}

/// Whether the fixture's store holds `key`.
async fn is_stored(f: &cxone_etm_e2e::Fixture, key: &str) -> bool {
    f.runtime.store.get(key).await.unwrap().is_some()
}

/// `run`'s record as stored.
async fn stored_run_record(f: &cxone_etm_e2e::Fixture, run: &RunRef) -> RunRecord {
    let body = f.runtime.store.get(&run.run_record()).await.unwrap();
    serde_json::from_slice(&body.expect("the run record is stored")).unwrap()
}

/// Gives `run` its connection's lock, as the trigger's start leaves it.
async fn hold_lock(f: &cxone_etm_e2e::Fixture, run: &RunRef) {
    hold_lock_since(f, run, "2026-11-22T00:00:00Z", Trigger::Api).await
}

/// `run` holds its connection's lock, taken by `trigger` at `acquired_at` (RFC 3339), its lease
/// unending.
async fn hold_lock_since(
    f: &cxone_etm_e2e::Fixture,
    run: &RunRef,
    acquired_at: &str,
    trigger: Trigger,
) {
    let lock = json!({"runId": run.run_id, "acquiredAt": acquired_at, "expiresAt": i64::MAX, "trigger": trigger});
    let key = format!("connections/{}/lock", run.connection_id);
    f.runtime
        .store
        .put(&key, serde_json::to_vec(&lock).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_plan_sample_event_plans_the_run_it_names() {
    let f = fixture().await;
    let sample = event("trigger-plan.json");
    let run: RunRef = serde_json::from_value(sample["plan"]["run"].clone()).unwrap();
    // The run as the trigger's start leaves it: Scheduled, holding the lock.
    store_run_record(&f, &run, RunState::Scheduled, None).await;
    // Not while the run does not hold the lock (its start failed, the lock released): the run
    // and the connection are left as they are.
    let refused = trigger(&f.runtime, sample.clone()).await.unwrap_err();
    assert_eq!(refused.error_type, "Fatal");
    assert!(
        refused.error_message.contains("no longer holds"),
        "{}",
        refused.error_message
    );
    assert!(!is_stored(&f, &run.work_list()).await);
    assert!(
        read_state(&f.runtime.store, "demo-sast")
            .await
            .unwrap()
            .is_none()
    );
    let unmoved = stored_run_record(&f, &run).await;
    assert_eq!(unmoved.state, RunState::Scheduled);
    hold_lock(&f, &run).await;
    let planned = trigger(&f.runtime, sample).await.expect("plan");
    assert_eq!(planned["items"], 10, "{planned}");
    let (items, _) = read_work_list(&f.runtime.store, &run).await.unwrap();
    assert_eq!(items.len(), 10);
    let record = stored_run_record(&f, &run).await;
    assert_eq!(
        (record.state, record.items),
        (RunState::Processing, Some(10))
    );
}

/// The vendor refuses the project listing: the trigger has started the run all the same (it calls
/// no vendor), the plan fails Fatal, and the state machine's Catch hands its error to finalize,
/// which marks the run Failed with it and releases the lock.
#[tokio::test]
async fn a_plan_that_fails_for_good_fails_the_run_and_releases_its_lock() {
    let f = fixture().await;
    f.emulator.set_fault(
        Endpoint::Projects,
        FaultSpec {
            forbidden_rate: 1.0,
            ..Default::default()
        },
    );
    f.emulator.reset_traffic();
    let started = trigger(&f.runtime, event("trigger-api-start-run.json"))
        .await
        .unwrap();
    assert_eq!(started["statusCode"], 202, "{}", body(&started));
    let traffic = f.emulator.traffic();
    assert!(traffic.requests.is_empty(), "no vendor call: {traffic:?}");
    let started = body(&started);
    let error = trigger(&f.runtime, json!({"plan": {"run": started["run"]}}))
        .await
        .unwrap_err();
    f.emulator.clear_faults();
    assert_eq!(error.error_type, "Fatal", "{error:?}");
    assert!(
        error.error_message.contains("403"),
        "{}",
        error.error_message
    );
    // What Step Functions' Catch puts at `ResultPath` for a Lambda task's error.
    let caught = json!({
        "Error": error.error_type,
        "Cause": json!({"errorType": error.error_type, "errorMessage": error.error_message}).to_string(),
    });
    let released = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({"run": started["run"], "failure": caught, "failedStep": "plan"}),
    )
    .await
    .unwrap_err();
    assert!(
        released
            .error_message
            .contains("the run is marked Failed (unless it had committed) and its lock, if it still held it, released"),
        "{}",
        released.error_message
    );
    let run: RunRef = serde_json::from_value(started["run"].clone()).unwrap();
    let state = read_state(&f.runtime.store, "demo-sast")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.state, RunState::Failed);
    let reason = state.reason.unwrap();
    assert!(
        reason.starts_with("plan failed (Fatal): ") && reason.contains("403"),
        "{reason}"
    );
    assert!(!is_stored(&f, &run.commit_marker()).await);
    // The lock went with the failed run: the next start is accepted.
    let again = trigger(&f.runtime, event("trigger-api-start-run.json"))
        .await
        .unwrap();
    assert_eq!(again["statusCode"], 202, "{}", body(&again));
}

#[tokio::test]
async fn the_step_sample_events_run_as_they_are() {
    let f = fixture().await;
    // The samples name run 20261122T000000Z-000001 of demo-sast and the first project of the default tenant.
    let group = event("collect.json");
    assert_eq!(
        event("transform.json"),
        group,
        "transform takes the group collect took"
    );
    let item = &group["items"][0];
    assert_eq!(
        item["vendorId"],
        f.emulator.expected().projects[0].id.as_str(),
        "the sample matches the emulator's default tenant"
    );
    let run: RunRef = serde_json::from_value(item["run"].clone()).unwrap();
    store_run_record(&f, &run, RunState::Processing, Some(1)).await;
    let planned: WorkGroup = serde_json::from_value(group.clone()).unwrap();
    write_plan(&f.runtime.store, &run, vec![planned], &[], None, Vec::new())
        .await
        .unwrap();
    // The run holds its connection's lock, as the trigger's start leaves it: finalize commits
    // only a run that still does.
    hold_lock(&f, &run).await;

    // Two 503s on the item's results: retried, and counted in collect's answer (and its metrics).
    f.emulator.set_fault(
        cxone_emulator::Endpoint::Results,
        cxone_emulator::FaultSpec {
            server_error_rate: 1.0,
            max: Some(2),
            ..Default::default()
        },
    );
    let collected = call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        event("collect.json"),
    )
    .await
    .expect("collect");
    f.emulator.clear_faults();
    assert_eq!(collected["items"][0]["status"], "complete");
    assert_eq!(collected["items"][0]["retries"], 2, "{collected}");
    let transformed = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        event("transform.json"),
    )
    .await
    .expect("transform");
    assert!(transformed["items"][0]["objects"].as_u64().unwrap() >= 1);
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        event("finalize.json"),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], true);
    assert!(is_stored(&f, &run.commit_marker()).await);
}

#[tokio::test]
async fn bad_inputs_are_refused_and_unknown_connections_are_not_found() {
    let f = fixture().await;
    // A task input that is not a work item never reaches the handler: the runtime decodes the
    // event into the handler's payload type first, and the state machine's Catch takes the error.
    let refused = crate::decoded::<WorkItem>(json!({"item": 3})).unwrap_err();
    assert!(
        refused.to_string().contains("invalid type: integer `3`"),
        "{refused}"
    );
    let error = trigger(&f.runtime, json!({"connectionId": "nobody"}))
        .await
        .unwrap_err();
    assert_eq!(error.error_type, "Fatal");
    assert!(
        error
            .error_message
            .contains("connection 'nobody' is not configured")
            && error.error_message.contains("cxone-etm connection put"),
        "says what to do: {}",
        error.error_message
    );
    // A stored config that does not read names the field that is wrong, as `cxone-etm` does.
    f.runtime
        .store
        .put(&config_key("broken"), br#"{"id": 3}"#.to_vec().into())
        .await
        .unwrap();
    let error = trigger(&f.runtime, json!({"connectionId": "broken"}))
        .await
        .unwrap_err();
    assert_eq!(error.error_type, "Fatal");
    assert!(
        error.error_message.contains("config field `id`"),
        "{}",
        error.error_message
    );
    // A route of ours without the path parameters API Gateway sends: an event built by hand.
    let mut bare = api_event(
        "trigger-api-start-run.json",
        "POST",
        "/connections/demo-sast/runs",
    );
    bare.as_object_mut().unwrap().remove("pathParameters");
    let answer = trigger(&f.runtime, bare).await.unwrap();
    assert_eq!(answer["statusCode"], 400, "{answer}");
    let error = body(&answer)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("came without the path parameters it names"),
        "{error}"
    );
    assert!(f.starts.starts().is_empty(), "nothing started");
    let api = api_event(
        "trigger-api-start-run.json",
        "POST",
        "/connections/nobody/runs",
    );
    assert_eq!(trigger(&f.runtime, api).await.unwrap()["statusCode"], 404);
    // A path no route of the template matches reaches the function only through a catch-all
    // route (`$default`) or a direct invoke.
    let mut wrong = event("trigger-api-test-connection.json");
    wrong["rawPath"] = json!("/elsewhere");
    wrong["routeKey"] = json!("$default");
    let answer = trigger(&f.runtime, wrong).await.unwrap();
    assert_eq!(answer["statusCode"], 404);
    assert!(
        body(&answer)["error"]
            .as_str()
            .unwrap()
            .contains("POST /connections/{id}/runs")
    );
}

#[tokio::test]
async fn scheduled_events_store_the_template_config_replace_only_their_own_and_respect_the_schedule_dates()
 {
    let f = fixture().await;
    let mut config = serde_json::to_value(ConnectionConfig::new(
        "from-template",
        cxone_etm::ConnectorKind::Dast,
        vendor_settings(&f.emulator),
        "env:UNUSED_BECAUSE_OAUTH_IS_IN_SECRETS_MANAGER",
    ))
    .unwrap();
    let arn = f
        .runtime
        .connection("demo-sast")
        .await
        .unwrap()
        .connection
        .config
        .secret
        .clone();
    config["secret"] = json!(arn);
    config["schedule"] =
        json!({"expression": "rate(1 day)", "timezone": "UTC", "start_date": "2026-01-01"});
    let schedule = |id: &str, config: &serde_json::Value| {
        let mut config = config.clone();
        config["id"] = json!(id);
        json!({"connectionId": id, "connection": config})
    };
    let stored_schedule = |id: &'static str| {
        let store = &f.runtime.store;
        async move {
            let bytes = store.get(&config_key(id)).await.unwrap().expect("stored");
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["schedule"].clone()
        }
    };
    let started = trigger(&f.runtime, schedule("from-template", &config))
        .await
        .expect("the template's config is stored and run");
    let status = f.runtime.status("from-template").await.unwrap();
    assert_eq!(
        status.state.state,
        cxone_etm::pipeline::RunState::Scheduled,
        "handed to the state machine, not planned yet"
    );
    let planned = plan(&f, &started).await;
    assert_eq!(
        planned["items"], 3,
        "the DAST environments of the default tenant"
    );
    // Planned: Processing; the rate schedule's next run is a day after this scheduled run began.
    let status = f.runtime.status("from-template").await.unwrap();
    assert_eq!(
        status.state.state,
        cxone_etm::pipeline::RunState::Processing
    );
    let began: jiff::Timestamp = status.state.last_scheduled_run_at.unwrap().parse().unwrap();
    assert_eq!(
        status.next_run_at,
        Some((began + jiff::SignedDuration::from_hours(24)).to_string())
    );

    // A later tick with other parameters (the stack redeployed) replaces the config an earlier
    // tick stored.
    let mut changed = config.clone();
    changed["schedule"]["start_date"] = json!("2016-01-01");
    assert_held(
        trigger(&f.runtime, schedule("from-template", &changed)).await,
        "the schedule ended on 2021-01-01",
    );
    assert_eq!(
        stored_schedule("from-template").await["start_date"],
        "2016-01-01"
    );
    // One put otherwise (as `cxone-etm connection put` puts it) is never replaced.
    let store = &f.runtime.store;
    let key = config_key("from-template");
    let parameters_own = store.get(&key).await.unwrap().unwrap();
    let mut put = changed.clone();
    put["id"] = json!("from-template");
    put["schedule"]["start_date"] = json!("2017-01-01");
    let put = serde_json::to_vec_pretty(&put).unwrap();
    store.put(&key, put.into()).await.unwrap();
    assert_held(
        trigger(&f.runtime, schedule("from-template", &config)).await,
        "already running",
    );
    assert_eq!(
        stored_schedule("from-template").await["start_date"],
        "2017-01-01"
    );
    // Nor is one stored before ticks kept their copy of what they stored.
    let copy = cxone_etm::pipeline::schedule_config_key("from-template");
    store.delete(&copy).await.unwrap();
    assert_held(
        trigger(&f.runtime, schedule("from-template", &config)).await,
        "already running",
    );
    assert_eq!(
        stored_schedule("from-template").await["start_date"],
        "2017-01-01"
    );
    // Unless it is the parameters' own: then the copy is written (as after a tick cut off
    // between the config and its copy), and the next change of parameters replaces it.
    store.put(&key, parameters_own.clone()).await.unwrap();
    assert_held(
        trigger(&f.runtime, schedule("from-template", &changed)).await,
        "the schedule ended on 2021-01-01",
    );
    assert_eq!(
        store.get(&copy).await.unwrap(),
        Some(parameters_own.clone())
    );
    assert_held(
        trigger(&f.runtime, schedule("from-template", &config)).await,
        "already running",
    );
    assert_eq!(
        stored_schedule("from-template").await["start_date"],
        "2026-01-01"
    );
    // A config put that the parameters then come to equal: the copy follows it.
    store.put(&key, parameters_own.clone()).await.unwrap();
    assert_held(
        trigger(&f.runtime, schedule("from-template", &changed)).await,
        "the schedule ended on 2021-01-01",
    );
    assert_eq!(store.get(&copy).await.unwrap(), Some(parameters_own));
    assert_held(
        trigger(&f.runtime, schedule("from-template", &config)).await,
        "already running",
    );
    assert_eq!(
        stored_schedule("from-template").await["start_date"],
        "2026-01-01"
    );

    let ended = trigger(&f.runtime, schedule("ended", &changed)).await;
    assert_held(ended, "the schedule ended on 2021-01-01");

    // A schedule's config is checked as a stored one: no credential from the function's own
    // environment, and nothing stored.
    let mut borrowing = config.clone();
    borrowing["secret"] = json!("env:AWS_SECRET_ACCESS_KEY");
    let refused = trigger(&f.runtime, schedule("borrowing", &borrowing))
        .await
        .unwrap_err();
    assert_eq!(refused.error_type, "Fatal");
    assert!(
        refused.error_message.contains("config field `secret`")
            && refused.error_message.contains("Secrets Manager only"),
        "{}",
        refused.error_message
    );
    assert!(!is_stored(&f, &config_key("borrowing")).await);

    let mut later = config.clone();
    later["schedule"]["start_date"] = json!("2099-01-01");
    let early = trigger(&f.runtime, schedule("not-yet", &later)).await;
    assert_held(early, "the schedule starts on 2099-01-01");

    // A connection stored without a schedule (as `connection put` of a plain config leaves it):
    // the schedule its events carry (the template's) sets the dates and the next run.
    let mut demo = serde_json::to_value(
        &f.runtime
            .connection("demo-sast")
            .await
            .unwrap()
            .connection
            .config,
    )
    .unwrap();
    assert!(demo.get("schedule").is_none());
    demo["schedule"] =
        json!({"expression": "rate(1 day)", "timezone": "UTC", "start_date": "2099-01-01"});
    let early = trigger(&f.runtime, schedule("demo-sast", &demo)).await;
    assert_held(early, "starts on 2099-01-01");
    demo["schedule"]["start_date"] = json!("2026-01-01");
    trigger(&f.runtime, schedule("demo-sast", &demo))
        .await
        .expect("within the event's schedule");
    let status = f.runtime.status("demo-sast").await.unwrap();
    let began: jiff::Timestamp = status.state.last_scheduled_run_at.unwrap().parse().unwrap();
    assert_eq!(
        status.next_run_at,
        Some((began + jiff::SignedDuration::from_hours(24)).to_string())
    );

    let mismatch = trigger(
        &f.runtime,
        json!({"connectionId": "other", "connection": config}),
    )
    .await
    .unwrap_err();
    assert!(
        mismatch
            .error_message
            .contains("carries the config of 'from-template'")
    );
}

/// Triggers the schedule's start of `demo-sast`.
async fn scheduled_start(f: &cxone_etm_e2e::Fixture) -> Result<Value, lambda_runtime::Diagnostic> {
    trigger(&f.runtime, event("trigger-schedule.json")).await
}

/// A schedule's tick refused by design is held: answered (not failed, so that Lambda does not
/// count it dropped), saying why, naming `naming` (the run that holds the lock, or the date).
fn assert_held(answer: Result<Value, lambda_runtime::Diagnostic>, naming: &str) {
    let answer = answer.expect("a tick refused by design is held, not failed");
    let held = answer["held"].as_str().expect("the answer says why");
    assert!(held.contains(naming), "{held}");
}

/// Starts the first run of `demo-sast`: the run, and its execution's name.
async fn first_run(f: &cxone_etm_e2e::Fixture) -> (RunRef, String) {
    let started = scheduled_start(f).await.expect("the first run started");
    let run: RunRef = serde_json::from_value(started["run"].clone()).unwrap();
    let name = cxone_etm::lambda::execution_name(&run);
    (run, name)
}

/// The last run of `demo-sast` failed at its start: the connection's state and the run's record
/// are Failed. The run.
async fn last_run_failed(f: &cxone_etm_e2e::Fixture) -> RunRef {
    let state = read_state(&f.runtime.store, "demo-sast")
        .await
        .unwrap()
        .expect("the connection's state was written");
    assert_eq!(state.state, RunState::Failed);
    let failed = RunRef {
        connection_id: "demo-sast".into(),
        run_id: state.last_run.expect("names the failed run"),
    };
    assert_eq!(stored_run_record(f, &failed).await.state, RunState::Failed);
    failed
}

#[tokio::test]
async fn a_state_machine_that_refuses_the_start_fails_the_run_and_frees_the_connection() {
    let f = fixture().await;
    f.starts
        .refuse_next("ThrottlingException: Rate exceeded (StartExecution)");
    let refused = scheduled_start(&f).await.unwrap_err();
    assert_eq!(refused.error_type, "Retryable", "{refused:?}");
    assert!(
        refused.error_message.contains("starting the state machine")
            && refused.error_message.contains("Rate exceeded"),
        "{}",
        refused.error_message
    );
    assert!(f.starts.starts().is_empty());
    let failed = last_run_failed(&f).await;
    let reason = stored_run_record(&f, &failed).await.reason.unwrap();
    assert!(reason.contains("Rate exceeded"), "{reason}");

    // The lock went with the failed run: the scheduler's retry starts a new run.
    let started = scheduled_start(&f).await.expect("the retry starts");
    assert_ne!(started["run"]["runId"], json!(failed.run_id));
    assert_eq!(f.starts.starts().len(), 1);
}

/// StartExecution started the execution, but no answer came back (every retry of the call cut
/// off): the trigger finds the execution by its name, and the run goes on under its lock.
#[tokio::test]
async fn a_start_whose_answer_is_lost_finds_its_execution_by_name_and_the_run_goes_on() {
    let f = fixture().await;
    f.starts.lose_next_answer();
    let started = trigger(&f.runtime, event("trigger-schedule.json"))
        .await
        .expect("the run started");
    let starts = f.starts.starts();
    assert_eq!(starts.len(), 1);
    assert!(
        started["executionArn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!(":{}", starts[0].name))),
        "{started}"
    );
    let state = read_state(&f.runtime.store, "demo-sast")
        .await
        .unwrap()
        .expect("the connection's state was written");
    assert_eq!(state.state, RunState::Scheduled, "not failed");
    let run = RunRef {
        connection_id: "demo-sast".into(),
        run_id: started["run"]["runId"].as_str().unwrap().into(),
    };
    assert_eq!(stored_run_record(&f, &run).await.state, RunState::Scheduled);
    // The lock is the run's: a second trigger is refused.
    let refused = trigger(&f.runtime, event("trigger-schedule.json")).await;
    assert_held(refused, "already");
}

/// The start's answer was lost and the lookup by name fails too: whether the execution started
/// cannot be told, so the trigger fails the run and releases its lock, for the scheduler's retry
/// to start anew (an execution that did start stops at its plan: `LostLock`).
#[tokio::test]
async fn a_lost_start_whose_lookup_fails_too_fails_the_run_and_frees_the_connection() {
    let f = fixture().await;
    f.starts.lose_next_answer();
    f.starts
        .refuse_next_lookup("ThrottlingException: Rate exceeded (DescribeExecution)");
    let refused = scheduled_start(&f).await.unwrap_err();
    assert_eq!(refused.error_type, "Retryable", "{refused:?}");
    assert!(
        refused.error_message.contains("the answer never came"),
        "{}",
        refused.error_message
    );
    let failed = last_run_failed(&f).await;
    let next = scheduled_start(&f)
        .await
        .expect("the lock went with the failed run");
    assert_ne!(next["run"]["runId"], json!(failed.run_id));
    assert_eq!(f.starts.starts().len(), 2);
}

/// An operator stopped a run's execution (StopExecution), or it timed out: no Catch runs then,
/// so its lock stays. The next start finds that execution ended, takes the lock over and marks
/// the run Failed, where before every start was refused until the lease ended (6 hours).
#[tokio::test]
async fn a_run_whose_execution_was_stopped_gives_its_lock_to_the_next_start() {
    let f = fixture().await;
    let (stopped, name) = first_run(&f).await;
    // Stopped during its Map: its last task (the plan) had answered.
    f.starts.end(&name, "ABORTED", Duration::ZERO, false);
    let next = scheduled_start(&f).await.expect("the next run starts");
    let next: RunRef = serde_json::from_value(next["run"].clone()).unwrap();
    assert_ne!(next.run_id, stopped.run_id);
    assert_eq!(f.starts.starts().len(), 2);
    let record = stored_run_record(&f, &stopped).await;
    assert_eq!(record.state, RunState::Failed);
    let reason = record.reason.unwrap();
    assert!(
        reason.contains("its execution ended (ABORTED)") && reason.contains(&next.run_id),
        "{reason}"
    );
    assert_eq!(
        stored_run_record(&f, &next).await.state,
        RunState::Scheduled
    );
    // The lock is the next run's, whose execution runs: a third start is refused.
    assert_held(scheduled_start(&f).await, &next.run_id);
}

/// An execution that ended while a task of it ran (its finalize, say: stopping or timing out an
/// execution does not stop an invocation under way) keeps its lock until that task cannot be
/// running any more: its finalize could otherwise commit beside the next run, or delete its lock.
#[tokio::test]
async fn a_run_that_ended_while_its_task_ran_keeps_its_lock_until_that_task_cannot_run() {
    let f = fixture().await;
    let (holder, name) = first_run(&f).await;
    f.starts
        .end(&name, "TIMED_OUT", Duration::from_secs(10 * 60), true);
    assert_held(scheduled_start(&f).await, &holder.run_id);
    assert_eq!(
        stored_run_record(&f, &holder).await.state,
        RunState::Scheduled
    );
    // Past the longest invocation (15 minutes) since it ended, the lock is the next start's.
    f.starts
        .end(&name, "TIMED_OUT", Duration::from_secs(17 * 60), true);
    let next = scheduled_start(&f).await.expect("the next run starts");
    assert_ne!(next["run"]["runId"], json!(holder.run_id));
    let reason = stored_run_record(&f, &holder).await.reason.unwrap();
    assert!(
        reason.contains("its execution ended (TIMED_OUT)"),
        "{reason}"
    );
}

/// The lock is taken over only from an execution known to have ended: one running, one whose
/// redrive is pending, one not found (a local run holds the lock) or a lookup that fails leave
/// the start refused, the holder's run as it was.
#[tokio::test]
async fn a_holder_whose_execution_may_still_run_keeps_its_lock() {
    let f = fixture().await;
    let (holder, name) = first_run(&f).await;
    let refused_by_holder = |answer| assert_held(answer, &holder.run_id);
    refused_by_holder(scheduled_start(&f).await);
    f.starts
        .end(&name, "PENDING_REDRIVE", Duration::from_secs(3600), false);
    refused_by_holder(scheduled_start(&f).await);
    f.starts.end(&name, "ABORTED", Duration::ZERO, false);
    f.starts
        .refuse_next_lookup("AccessDeniedException: not authorized (DescribeExecution)");
    refused_by_holder(scheduled_start(&f).await);
    assert_eq!(f.starts.starts().len(), 1);
    assert_eq!(
        stored_run_record(&f, &holder).await.state,
        RunState::Scheduled
    );

    // A run of `cxone-etm run` against the same bucket has no execution at all, and may hold
    // its lock for hours.
    let local = RunRef {
        connection_id: "demo-sast".into(),
        run_id: "20261122T000000Z-10ca1".into(),
    };
    hold_lock_since(&f, &local, "2026-11-22T00:00:00Z", Trigger::Local).await;
    store_run_record_of(&f, &local, Trigger::Local, RunState::Processing, None).await;
    assert_held(scheduled_start(&f).await, &local.run_id);
    assert_eq!(f.starts.starts().len(), 1);
}

/// A trigger that took its lock and was cut off (or died) before it started the run's execution
/// leaves a lock no execution will release. Once the trigger cannot be running any more (longer
/// ago than the longest invocation), the next start takes the lock over and fails the run; a
/// younger lock is refused, as its trigger may still start the execution.
#[tokio::test]
async fn a_run_whose_trigger_died_before_its_start_gives_its_lock_to_the_next_start() {
    let f = fixture().await;
    let ago = |minutes: i64| {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_mins(minutes))
            .unwrap()
            .to_string()
    };
    let orphan = RunRef {
        connection_id: "demo-sast".into(),
        run_id: "20261122T000000Z-dead1".into(),
    };
    store_run_record(&f, &orphan, RunState::Scheduled, None).await;
    hold_lock_since(&f, &orphan, &ago(10), Trigger::Schedule).await;
    assert_held(scheduled_start(&f).await, &orphan.run_id);
    assert_eq!(
        stored_run_record(&f, &orphan).await.state,
        RunState::Scheduled
    );
    assert!(f.starts.starts().is_empty());

    hold_lock_since(&f, &orphan, &ago(17), Trigger::Schedule).await;
    let next = scheduled_start(&f).await.expect("the next run starts");
    assert_ne!(next["run"]["runId"], json!(orphan.run_id));
    let record = stored_run_record(&f, &orphan).await;
    assert_eq!(record.state, RunState::Failed);
    let reason = record.reason.unwrap();
    assert!(
        reason.contains("the trigger that took its lock ended without starting its execution"),
        "{reason}"
    );
    assert_eq!(f.starts.starts().len(), 1);

    // Cut off between the lock and the run record: no record at all, the lock names its trigger.
    let recordless = RunRef {
        connection_id: "demo-sast".into(),
        run_id: "20261122T000000Z-dead2".into(),
    };
    f.runtime
        .store
        .delete(&format!("connections/{}/lock", recordless.connection_id))
        .await
        .unwrap();
    hold_lock_since(&f, &recordless, &ago(17), Trigger::Api).await;
    scheduled_start(&f).await.expect("the next run starts");
    assert_eq!(f.starts.starts().len(), 2);

    // A local run's lock, its record not written yet (a runner paused between the two writes):
    // never taken this way.
    let local = RunRef {
        connection_id: "demo-sast".into(),
        run_id: "20261122T000000Z-10ca2".into(),
    };
    hold_lock_since(&f, &local, &ago(17), Trigger::Local).await;
    assert_held(scheduled_start(&f).await, &local.run_id);
}

/// A stored config may not ask the functions for their own environment or files: a credential
/// from `env:` or `file:` (`env:AWS_SECRET_ACCESS_KEY` would hand the role's keys to whatever host
/// the config names) and a CA bundle from anywhere but a layer or the package (`/dev/zero` would
/// read until it runs out of memory) are refused, naming the field, before anything is read or
/// sent.
#[tokio::test]
async fn a_stored_config_cannot_send_the_functions_own_credentials_or_read_their_files() {
    let f = fixture().await;
    let stored = f.runtime.store.get(&config_key("demo-sast")).await.unwrap();
    let demo: serde_json::Value = serde_json::from_slice(&stored.unwrap()).unwrap();
    for (secret, ca_bundle, field, says) in [
        (
            json!("env:AWS_SECRET_ACCESS_KEY"),
            None,
            "secret",
            "Secrets Manager only",
        ),
        (
            json!("file:/proc/self/environ"),
            None,
            "secret",
            "Secrets Manager only",
        ),
        (
            demo["secret"].clone(),
            Some("/dev/zero"),
            "vendor.ca_bundle",
            "a file of a Lambda layer (/opt/...)",
        ),
    ] {
        let mut config = demo.clone();
        config["id"] = json!("borrowed");
        config["secret"] = secret.clone();
        if let Some(path) = ca_bundle {
            config["vendor"]["ca_bundle"] = json!(path);
        }
        let error = refused_before_anything_is_sent(&f, &config).await;
        assert!(
            error.contains(&format!("config field `{field}`")) && error.contains(says),
            "{secret} {ca_bundle:?}: {error}"
        );
    }
}

/// Stores `config` under its id and asks the API's connection test of it: refused (409) before
/// anything reaches the vendor. Answers the error the API gave.
async fn refused_before_anything_is_sent(f: &cxone_etm_e2e::Fixture, config: &Value) -> String {
    let id = config["id"].as_str().unwrap();
    f.runtime
        .store
        .put(&config_key(id), serde_json::to_vec(config).unwrap().into())
        .await
        .unwrap();
    f.emulator.reset_traffic();
    let path = format!("/connections/{id}/test");
    let request = api_event("trigger-api-test-connection.json", "POST", &path);
    let answer = trigger(&f.runtime, request).await.unwrap();
    assert_eq!(answer["statusCode"], 409, "{answer}");
    assert_eq!(
        f.emulator.traffic().requests.values().sum::<u64>(),
        0,
        "nothing is sent"
    );
    body(&answer)["error"].as_str().unwrap().to_string()
}

/// A config that names a vendor host the stack was not deployed to allow (`VendorHosts`) is
/// refused, naming the field and the parameter, before the secret is read or anything sent: from
/// the bucket (the API's connection test), and inline in a scheduled event for a connection with
/// no config, which is not stored. Before, whoever could write a config, or invoke the trigger,
/// could point `custom_api_url` at a host of their own beside the real IAM host: the API key passes
/// its realm check there, and every request carried the access token to their host.
#[tokio::test]
async fn a_config_naming_a_host_the_stack_does_not_allow_is_refused_before_anything_is_sent() {
    let f = fixture().await;
    let stored = f.runtime.store.get(&config_key("demo-sast")).await.unwrap();
    let demo: Value = serde_json::from_slice(&stored.unwrap()).unwrap();
    let foreign = "https://cxone.elsewhere.example";
    for (field, vendor) in [
        ("vendor.custom_api_url", json!({"custom_api_url": foreign})),
        ("vendor.custom_iam_url", json!({"custom_iam_url": foreign})),
        // With no IAM URL, the one derived from the API host receives the secret.
        (
            "vendor.custom_api_url",
            json!({"custom_api_url": "https://ast.elsewhere.example", "custom_iam_url": null}),
        ),
    ] {
        let mut config = demo.clone();
        config["id"] = json!("elsewhere");
        for (name, value) in vendor.as_object().unwrap() {
            config["vendor"][name] = value.clone();
        }
        let error = refused_before_anything_is_sent(&f, &config).await;
        assert!(
            error.contains(&format!("config field `{field}`"))
                && error.contains("elsewhere.example")
                && error.contains("VendorHosts"),
            "{vendor}: {error}"
        );
    }

    // Inline in a scheduled event, for a connection with no config: refused, not stored.
    let mut config = demo.clone();
    config["id"] = json!("registered-elsewhere");
    config["vendor"]["custom_api_url"] = json!(foreign);
    let mut scheduled = event("trigger-schedule.json");
    scheduled["connectionId"] = json!("registered-elsewhere");
    scheduled["connection"] = config;
    let refused = trigger(&f.runtime, scheduled).await.unwrap_err();
    assert!(
        refused.error_message.contains("vendor.custom_api_url")
            && refused.error_message.contains("VendorHosts"),
        "{}",
        refused.error_message
    );
    assert!(
        !is_stored(&f, &config_key("registered-elsewhere")).await,
        "the config is not stored"
    );
    assert!(f.starts.starts().is_empty());
}

/// A connection id from an API path or a schedule's event is checked before it becomes a key:
/// hostile ones are refused (400) naming the rule, nothing is read or written under them, and a
/// config stored under another connection's key is refused naming both ids.
#[tokio::test]
async fn hostile_connection_ids_are_refused_before_they_become_keys() {
    let f = fixture().await;
    let api = |method: &str, path: &str| {
        let request = api_event("trigger-api-start-run.json", method, path);
        let runtime = &f.runtime;
        async move { trigger(runtime, request).await.unwrap() }
    };
    let keys = || async { f.runtime.store.list("").await.unwrap() };
    let stored_before = keys().await;
    for id in ["..", "a%2Fb", "x%20y", "%2E%2E", &"x".repeat(65)] {
        for (method, path, what) in [
            ("POST", format!("/connections/{id}/runs"), "connection id"),
            ("GET", format!("/connections/{id}"), "connection id"),
            ("POST", format!("/connections/{id}/test"), "connection id"),
            ("GET", format!("/connections/{id}/runs/r1"), "connection id"),
            ("GET", format!("/connections/demo-sast/runs/{id}"), "run id"),
        ] {
            let answer = api(method, &path).await;
            assert_eq!(answer["statusCode"], 400, "{method} {path}: {answer}");
            let error = body(&answer)["error"].as_str().unwrap().to_string();
            assert!(
                error.contains(&format!("{what} input"))
                    && error.contains("must be 1–64 ASCII letters"),
                "{method} {path}: {error}"
            );
        }
    }
    assert_eq!(
        keys().await,
        stored_before,
        "nothing written under a refused id"
    );
    // An id holding '/' (sent as %2F, the path handed over decoded) would read as another
    // route's path: the route API Gateway matched, and authorized, decides, and the id is its
    // path parameter, refused.
    let mut confused = event("trigger-api-show-connection.json");
    let held = "demo-sast/runs/20261122T000000Z-000001";
    confused["rawPath"] = json!(format!("/connections/{held}"));
    confused["pathParameters"] = json!({"id": held});
    let answer = trigger(&f.runtime, confused).await.unwrap();
    assert_eq!(answer["statusCode"], 400, "{answer}");
    let error = body(&answer)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("connection id input") && error.contains("must be 1–64 ASCII letters"),
        "{error}"
    );
    // A well-formed id no connection has is still unknown, not refused.
    let unknown = api("GET", &format!("/connections/{}", "x".repeat(64))).await;
    assert_eq!(unknown["statusCode"], 404, "{unknown}");
    let mut scheduled = event("trigger-schedule.json");
    scheduled["connectionId"] = json!("../demo-sast");
    let refused = trigger(&f.runtime, scheduled).await.unwrap_err();
    assert!(
        refused
            .error_message
            .contains("'../demo-sast' must be 1–64"),
        "{}",
        refused.error_message
    );
    assert!(f.starts.starts().is_empty());

    // demo-sast's config, copied under another connection's key.
    let config = f.runtime.store.get(&config_key("demo-sast")).await.unwrap();
    f.runtime
        .store
        .put(&config_key("copied"), config.unwrap())
        .await
        .unwrap();
    let answer = api("POST", "/connections/copied/runs").await;
    assert_eq!(answer["statusCode"], 409, "{answer}");
    let error = body(&answer)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("'demo-sast' is not the connection stored under this key ('copied'); delete connections/copied/config.json, or put a config whose id is 'copied'"),
        "{error}"
    );
    assert!(!is_stored(&f, "connections/copied/lock").await);
    assert!(f.starts.starts().is_empty());
}

/// The state machine's events name runs too: a plan, a group or a finalize whose run ids are not
/// key segments, or a group whose items are of two runs, is refused before anything is read or
/// written under them.
#[tokio::test]
async fn step_events_naming_hostile_runs_are_refused() {
    let f = fixture().await;
    let stored_before = f.runtime.store.list("").await.unwrap();
    let refused = |error: lambda_runtime::Diagnostic, holds: &str| {
        assert!(
            error.error_message.contains(holds),
            "{holds}: {}",
            error.error_message
        );
    };
    let mut plan = event("trigger-plan.json");
    plan["plan"]["run"]["runId"] = json!("../20261122T000000Z-000001");
    let error = trigger(&f.runtime, plan).await.unwrap_err();
    refused(error, "run id input: '../20261122T000000Z-000001' must be");
    let mut finalize = event("finalize.json");
    finalize["run"]["connectionId"] = json!("demo sast");
    let error = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        finalize,
    )
    .await
    .unwrap_err();
    refused(error, "connection id input: 'demo sast' must be");
    let mut group = event("collect.json");
    let mut other = group["items"][0].clone();
    other["run"]["runId"] = json!("20261122T000000Z-000002");
    group["items"].as_array_mut().unwrap().push(other);
    let error = call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        group.clone(),
    )
    .await
    .unwrap_err();
    refused(error, "a group is one run's");
    let error = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        group,
    )
    .await
    .unwrap_err();
    refused(error, "a group is one run's");
    // A part no plan makes (a count of four thousand million): refused before the join sizes
    // anything by it. Before, the transform asked for room for that many outcomes and aborted.
    for (index, of) in [(0, u32::MAX), (4, 4), (0, 0)] {
        let mut group = event("collect.json");
        group["items"][0]["part"] = json!({"index": index, "of": of, "firstPage": 0,
            "semantics": "pageIndex", "plannedTotal": 0, "fingerprintKey": 0});
        for step in ["collect", "transform"] {
            let error = match step {
                "collect" => call(
                    |e| cxone_etm_collect::handler::handle(&f.runtime, e),
                    group.clone(),
                )
                .await
                .unwrap_err(),
                _ => call(
                    |e| cxone_etm_transform::handler::handle(&f.runtime, e),
                    group.clone(),
                )
                .await
                .unwrap_err(),
            };
            refused(
                error,
                &format!("part {index} of {of}: a scan is split into 1 to 100 parts"),
            );
        }
    }
    assert_eq!(f.runtime.store.list("").await.unwrap(), stored_before);
}

#[tokio::test]
async fn the_test_route_answers_every_mistake_with_the_five_checks() {
    let mut f = fixture().await;
    // A host that does not resolve, as a deployer can list it beside the emulator's: its report is
    // the lookup's failure (a host not listed is refused before any check: the test above).
    let hosts = format!("{},no-such-host.invalid", emulator_host(&f.emulator));
    f.runtime = f
        .runtime
        .with_vendor_hosts(VendorHosts::listed(&hosts).unwrap());
    let test = |id: String| {
        let runtime = &f.runtime;
        async move {
            let path = format!("/connections/{id}/test");
            let request = api_event("trigger-api-test-connection.json", "POST", &path);
            let answer = trigger(runtime, request).await.unwrap();
            assert_eq!(answer["statusCode"], 200, "{id}: a report, not a refusal");
            body(&answer)
        }
    };
    let store = |id: &str, kind: &str, vendor: Value, secret: &str| {
        let config =
            json!({"id": id, "name": id, "kind": kind, "vendor": vendor, "secret": secret});
        let store = &f.runtime.store;
        let key = config_key(id);
        async move {
            store.put(&key, config.to_string().into()).await.unwrap();
        }
    };
    for (n, mistake) in f.emulator.mistakes().into_iter().enumerate() {
        let id = format!("mistake-{n}");
        let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:cxone/{id}-AbCdEf");
        f.secrets.put(&arn, mistake.secret.clone());
        store(&id, mistake.kind, mistake.vendor(), &arn).await;
        if let Err(problem) = mistake.check_report(&test(id).await) {
            panic!("{problem}");
        }
    }
    let vendor = serde_json::to_value(vendor_settings(&f.emulator)).unwrap();
    store(
        "no-secret",
        "sast",
        vendor,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nobody-AbCdEf",
    )
    .await;
    let report = test("no-secret".into()).await;
    let statuses: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pass", "skipped", "fail", "skipped", "skipped"]);
    assert!(
        report["checks"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot read the secret"),
        "{report}"
    );
}

/// The state machine's first state for the run `started` (the trigger's answer or the
/// execution's input) names: the plan, in the trigger's function. Answers the planned run.
async fn plan(f: &cxone_etm_e2e::Fixture, started: &Value) -> Value {
    trigger(&f.runtime, json!({"plan": {"run": started["run"]}}))
        .await
        .expect("plan")
}

/// The Distributed Map: each work list line (a group of items) through collect, then the same
/// group through transform, as the state machine passes it. Answers the findings and rejected
/// records the transforms counted.
async fn collect_and_transform(f: &cxone_etm_e2e::Fixture, work: &[u8]) -> u64 {
    let mut findings = 0;
    for line in work.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let group: Value = serde_json::from_slice(line).unwrap();
        let collected = call(
            |e| cxone_etm_collect::handler::handle(&f.runtime, e),
            group.clone(),
        )
        .await
        .expect("collect");
        assert_eq!(
            collected["items"].as_array().unwrap().len(),
            group["items"].as_array().unwrap().len()
        );
        let transformed = call(
            |e| cxone_etm_transform::handler::handle(&f.runtime, e),
            group,
        )
        .await
        .expect("transform");
        for item in transformed["items"].as_array().unwrap() {
            findings += item["findings"].as_u64().unwrap() + item["rejected"].as_u64().unwrap();
        }
    }
    findings
}

/// A config put while a run is under way applies from the next run: every step of the run reads
/// the config it began with (`runs/<run>/config.json`). Here a config that does not even check is
/// put between the trigger and the plan: the plan, every collect and transform, and finalize run
/// on, and the run commits every project; a config whose filter leaves every project out, put
/// next, is the next run's.
#[tokio::test]
async fn a_config_put_during_a_run_applies_from_the_next_run() {
    let f = fixture().await;
    let trigger = |request: Value| async { trigger(&f.runtime, request).await.expect("trigger") };
    let started = trigger(event("trigger-schedule.json")).await;
    let run: RunRef = serde_json::from_value(started["run"].clone()).unwrap();
    let began = f.runtime.store.get(&config_key("demo-sast")).await.unwrap();
    assert_eq!(
        f.runtime.store.get(&run.config()).await.unwrap(),
        began,
        "the run keeps the config it began with"
    );
    let put_config = |config: Vec<u8>| {
        let store = &f.runtime.store;
        async move {
            store
                .put(&config_key("demo-sast"), config.into())
                .await
                .unwrap()
        }
    };
    put_config(br#"{"id": "demo-sast", "kind": 3}"#.to_vec()).await;

    let planned = plan(&f, &started).await;
    assert_eq!(planned["items"], 10, "{planned}");
    let work = f
        .runtime
        .store
        .get(&run.work_list())
        .await
        .unwrap()
        .unwrap();
    let findings = collect_and_transform(&f, &work).await;
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({"run": run}),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], true, "{finalized}");
    assert_eq!(finalized["findings"].as_u64(), Some(findings));
    assert_eq!(
        findings,
        f.emulator.expected().totals.by_type[&cxone_emulator::ResultType::Sast]
    );

    let refused = trigger(event("trigger-api-start-run.json")).await;
    assert_eq!(
        refused["statusCode"], 409,
        "the broken config is the next run's: {refused}"
    );
    let mut changed: Value = serde_json::from_slice(&began.unwrap()).unwrap();
    changed["filters"]["project_names"] = json!(["no-project-is-named-this"]);
    put_config(serde_json::to_vec(&changed).unwrap()).await;
    let next = trigger(event("trigger-api-start-run.json")).await;
    assert_eq!(next["statusCode"], 202, "{next}");
    let next = body(&next);
    assert_eq!(plan(&f, &next).await["items"], 0, "every project left out");
}

/// A scheduled run of the fixture's connection, started and planned: the plan's answer, the run
/// and its work list's items.
async fn scheduled_run(f: &cxone_etm_e2e::Fixture) -> (Value, RunRef, Vec<WorkItem>) {
    let started = trigger(&f.runtime, event("trigger-schedule.json"))
        .await
        .expect("scheduled trigger");
    let planned = plan(f, &started).await;
    let run: RunRef = serde_json::from_value(started["run"].clone()).unwrap();
    let (items, _) = read_work_list(&f.runtime.store, &run).await.unwrap();
    (planned, run, items)
}

/// A child's group of items where one item's results answer 503 for good: collect finishes the
/// others and fails Retryable naming that one; the state machine's retry, once the vendor
/// answers, collects only it; transform takes the same group; the run is complete and exact.
#[tokio::test]
async fn a_group_finishes_its_other_items_when_one_fails_and_the_retry_redoes_only_that_one() {
    let f = fixture().await;
    let (planned, run, items) = scheduled_run(&f).await;
    // Ten items and ten children at once: a group each, so every child has work.
    assert_eq!(planned["childExecutions"], 10, "{planned}");
    assert_eq!(items.len(), 10);
    let group = json!({ "items": items });
    let failing = &items[2];
    f.emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            server_error_rate: 1.0,
            only_matching: failing.scan_id.clone(),
            ..Default::default()
        },
    );
    let error = call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        group.clone(),
    )
    .await
    .expect_err("one item did not finish");
    assert_eq!(error.error_type, "Retryable");
    assert!(
        error.error_message.starts_with(&format!(
            "1 of the group's items did not finish ({})",
            failing.item
        )),
        "{}",
        error.error_message
    );
    for (n, item) in items.iter().enumerate() {
        let record = f.runtime.store.get(&run.collect_outcome(&item.item)).await;
        assert_eq!(record.unwrap().is_some(), n != 2, "item {n} collected");
    }

    // The retry: the vendor answers again; only the failed item is fetched.
    f.emulator.clear_faults();
    f.emulator.reset_traffic();
    let retried = call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        group.clone(),
    )
    .await
    .expect("the retry finishes the group");
    assert_eq!(retried["items"].as_array().unwrap().len(), 10);
    let traffic = f.emulator.traffic();
    assert_eq!(traffic.requests_to(Endpoint::Results), 1, "{traffic:?}");
    let paths: Vec<String> = f
        .emulator
        .request_log()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert!(
        paths
            .iter()
            .all(|p| p.contains(failing.scan_id.as_deref().unwrap())),
        "only the failed item's scan is fetched again: {paths:?}"
    );

    // Transform takes the group as the state machine passes it after a caught collect error.
    let mut after_catch = group.clone();
    after_catch["collectError"] = json!({"Error": "Retryable", "Cause": "…"});
    let transformed = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        after_catch,
    )
    .await
    .expect("transform");
    assert_eq!(transformed["items"].as_array().unwrap().len(), 10);
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({ "run": run }),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], true, "{finalized}");
    assert_eq!(
        finalized["findings"].as_u64().unwrap(),
        f.emulator.expected().totals.by_type[&cxone_emulator::ResultType::Sast]
    );
}

/// A group whose collect gave up (its retries spent) still has its collected items transformed;
/// the item that was never collected is reported failed, and nothing of it is closed.
#[tokio::test]
async fn items_collected_before_a_group_gave_up_are_transformed_and_the_rest_reported_failed() {
    let f = fixture().await;
    let (_, run, items) = scheduled_run(&f).await;
    let failing = items[7].clone();
    f.emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            server_error_rate: 1.0,
            only_matching: failing.scan_id.clone(),
            ..Default::default()
        },
    );
    let group = json!({ "items": items });
    call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        group.clone(),
    )
    .await
    .expect_err("one item did not finish");
    let mut after_catch = group;
    after_catch["collectError"] = json!({"Error": "Retryable"});
    let transformed = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        after_catch,
    )
    .await
    .expect("transform records the caught failure for the item collect did not finish");
    let done = transformed["items"].as_array().unwrap();
    assert_eq!(done.len(), 10);
    // That item's collect outcome is the caught failure: nothing of it transformed.
    let not_collected: Vec<&Value> = done
        .iter()
        .filter(|i| i["item"] == failing.item.as_str())
        .collect();
    let [not_collected] = not_collected[..] else {
        panic!("{transformed}")
    };
    assert_eq!(
        (&not_collected["findings"], &not_collected["objects"]),
        (&json!(0), &json!(0)),
        "{not_collected}"
    );
    let outcome: Value = serde_json::from_slice(
        &f.runtime
            .store
            .get(&failing.collect_outcome_key())
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (&outcome["status"], &outcome["reason"]),
        (
            &json!("failed"),
            &json!("the group's collect failed (Retryable)")
        )
    );
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({ "run": run }),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], false);
    assert_eq!(finalized["itemsByStatus"]["failed"], 1, "{finalized}");
    let with_scan = items.iter().filter(|i| i.scan_id.is_some()).count() as u64;
    assert_eq!(
        finalized["itemsByStatus"]["complete"].as_u64(),
        Some(with_scan - 1),
        "{finalized}"
    );
}

/// The collect function's answer for `group` in an invocation that ends at `deadline`.
async fn collect_until(
    f: &cxone_etm_e2e::Fixture,
    group: Value,
    deadline: u64,
) -> Result<Value, lambda_runtime::Diagnostic> {
    call(
        |mut e: lambda_runtime::LambdaEvent<WorkGroup>| {
            e.context.deadline = deadline;
            cxone_etm_collect::handler::handle(&f.runtime, e)
        },
        group,
    )
    .await
}

/// A Lambda context's deadline `seconds` from now (milliseconds since the epoch).
fn deadline_in(seconds: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now + std::time::Duration::from_secs(seconds)).as_millis() as u64
}

/// A scan too large for what is left of the invocation: collect stops between two pages, its
/// progress stored, and fails OutOfTime (retried apart from transient errors) saying where it
/// stopped; each next invocation goes on
/// from the page after, and the run commits every result of the scan once.
#[tokio::test]
async fn a_collect_short_of_time_stops_between_pages_and_the_next_invocation_goes_on() {
    let f = fixture().await;
    // Pages of 25 results: every project's scan takes several.
    let key = config_key("demo-sast");
    let stored = f.runtime.store.get(&key).await.unwrap().unwrap();
    let mut config: ConnectionConfig = serde_json::from_slice(&stored).unwrap();
    config.vendor.results_page_size = 25;
    let config = serde_json::to_vec(&config).unwrap();
    f.runtime.store.put(&key, config.into()).await.unwrap();
    let (_, run, items) = scheduled_run(&f).await;
    let item = items.iter().find(|i| i.scan_id.is_some()).unwrap().clone();
    let scan_results = f
        .emulator
        .expected()
        .projects
        .iter()
        .flat_map(|p| &p.scans)
        .find(|s| Some(&s.id) == item.scan_id.as_ref())
        .unwrap()
        .results;
    assert!(
        scan_results > 3 * 25,
        "{scan_results} results: several pages"
    );
    let group = json!({ "items": [item] });
    for stored in 1..=2 {
        let short = deadline_in(30);
        let error = collect_until(&f, group.clone(), short)
            .await
            .expect_err("not enough time for the whole scan");
        assert_eq!(error.error_type, "OutOfTime");
        let message = &error.error_message;
        assert!(
            message.contains(&format!("collect stopped after {stored} pages with "))
                && message.contains(&format!("goes on from page {stored}")),
            "{message}"
        );
        assert!(
            f.runtime
                .store
                .get(&run.collect_progress(&item.item))
                .await
                .unwrap()
                .is_some(),
            "its progress is stored"
        );
    }
    let ample = deadline_in(900);
    let collected = collect_until(&f, group.clone(), ample)
        .await
        .expect("the next invocation finishes the scan");
    assert_eq!(collected["items"][0]["status"], "complete", "{collected}");
    assert_eq!(
        collected["items"][0]["records"], scan_results,
        "{collected}"
    );
    call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        group,
    )
    .await
    .expect("transform");
    let record = f
        .runtime
        .store
        .get(&run.transform_record(&item.item))
        .await
        .unwrap()
        .expect("a transform record");
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(
        record["figures"]["recordsIn"], scan_results,
        "the transform read every record of every page, once: {}",
        record["figures"]
    );
}

/// A group shares one invocation's time: with too little of it left, no item after the first is
/// started (none cut off midway) and the group fails OutOfTime naming them (retried as often as
/// the group needs, apart from transient errors); the next invocation, with its full time,
/// collects them.
#[tokio::test]
async fn no_item_is_started_without_time_to_finish_it_and_the_next_attempt_goes_on() {
    let f = fixture().await;
    let (_, run, items) = scheduled_run(&f).await;
    let group = json!({ "items": items });
    let short = deadline_in(30);
    let error = collect_until(&f, group.clone(), short)
        .await
        .expect_err("no time for a second item");
    assert_eq!(error.error_type, "OutOfTime");
    assert!(
        error
            .error_message
            .starts_with("9 of the group's items did not finish")
            && error
                .error_message
                .contains("not started: the invocation had"),
        "{}",
        error.error_message
    );
    for (n, item) in items.iter().enumerate() {
        let record = f.runtime.store.get(&run.collect_outcome(&item.item)).await;
        assert_eq!(
            record.unwrap().is_some(),
            n == 0,
            "only the first item started"
        );
    }
    let ample = deadline_in(900);
    let collected = collect_until(&f, group, ample)
        .await
        .expect("the next attempt collects every item");
    assert_eq!(collected["items"].as_array().unwrap().len(), 10);
}

/// A group whose first item fails for a reason a retry may mend (503 for good) and whose other
/// items the time left out is retried as the transient error is (`Retryable`, a few attempts),
/// not as time alone (`OutOfTime`, as often as the group needs): an attempt that made no
/// progress must not be repeated until the run's time is spent.
#[tokio::test]
async fn a_group_short_of_time_after_a_transient_failure_is_retried_as_that_failure() {
    let f = fixture().await;
    let (_, run, mut items) = scheduled_run(&f).await;
    // The failing item goes first: the time left counts from it.
    let scanned = items.iter().position(|i| i.scan_id.is_some()).unwrap();
    items.swap(0, scanned);
    let group = json!({ "items": items });
    f.emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            server_error_rate: 1.0,
            only_matching: items[0].scan_id.clone(),
            ..Default::default()
        },
    );
    let error = collect_until(&f, group.clone(), deadline_in(30))
        .await
        .expect_err("the first item fails, no time for the others");
    f.emulator.clear_faults();
    assert_eq!(error.error_type, "Retryable", "{}", error.error_message);
    assert!(
        error.error_message.starts_with(&format!(
            "10 of the group's items did not finish ({}",
            items[0].item
        )),
        "{}",
        error.error_message
    );
    for item in &items {
        let record = f.runtime.store.get(&run.collect_outcome(&item.item)).await;
        assert!(record.unwrap().is_none(), "no item has a record");
    }
}

/// The group of the first line of the run's work list, as the plan wrote it, and when the trigger
/// began the run.
async fn planned_group_and_start(
    f: &cxone_etm_e2e::Fixture,
    run: &RunRef,
) -> (Value, jiff::Timestamp) {
    let record = f
        .runtime
        .store
        .get(&run.run_record())
        .await
        .unwrap()
        .unwrap();
    let record: Value = serde_json::from_slice(&record).unwrap();
    let started = record["startedAt"].as_str().unwrap().parse().unwrap();
    let work = f
        .runtime
        .store
        .get(&run.work_list())
        .await
        .unwrap()
        .unwrap();
    let first = work.split(|b| *b == b'\n').next().unwrap();
    (serde_json::from_slice(first).unwrap(), started)
}

/// A group given `deadlines` for collect and transform, `seconds` from now (negative: past).
fn with_deadlines(items: &[WorkItem], collect_in: i64, transform_in: i64) -> Value {
    let at = |seconds: i64| {
        (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds)).to_string()
    };
    json!({
        "items": items,
        "deadlines": { "collectBefore": at(collect_in), "transformBefore": at(transform_in) },
    })
}

/// Finalizes `run`, which must commit partially, and gives each item of its manifest with whether
/// it is one of `late`.
async fn partial_commit_of(
    f: &cxone_etm_e2e::Fixture,
    run: &RunRef,
    late: &[WorkItem],
) -> Vec<(Value, bool)> {
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({ "run": run }),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], false, "{finalized}");
    let manifest = f.runtime.store.get(&run.manifest()).await.unwrap().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let items = manifest["items"].as_array().unwrap().clone();
    assert!(!items.is_empty());
    items
        .into_iter()
        .map(|item| {
            let is_late = late.iter().any(|l| l.item == item["item"]);
            (item, is_late)
        })
        .collect()
}

/// The plan gives every group the run's deadlines, from the trigger's start of the run: items are
/// collected until 4 h 15 min after it and transformed until 4 h 35 min, so that finalize runs
/// within the execution's 5 h 30 min. A group past its collect deadline starts no item, the first
/// of an invocation neither: each is recorded failed with the reason and the group fails Fatal
/// (no retry); transform and finalize go on, and the run commits the items collected in time and
/// reports the others failed.
#[tokio::test]
async fn items_past_the_runs_collect_deadline_are_not_started_and_reported_failed() {
    let f = fixture().await;
    let (_, run, items) = scheduled_run(&f).await;
    let (planned, started) = planned_group_and_start(&f, &run).await;
    let after = |minutes: i64| (started + jiff::SignedDuration::from_mins(minutes)).to_string();
    assert_eq!(
        planned["deadlines"]["collectBefore"],
        json!(after(255)),
        "{planned}"
    );
    assert_eq!(
        planned["deadlines"]["transformBefore"],
        json!(after(275)),
        "{planned}"
    );

    let (in_time, late) = items.split_at(5);
    collect_until(&f, with_deadlines(in_time, 3600, 3600), deadline_in(900))
        .await
        .expect("collected in time");
    f.emulator.reset_traffic();
    let error = collect_until(&f, with_deadlines(late, -1, 3600), deadline_in(900))
        .await
        .expect_err("the run's time for collecting is spent");
    assert_eq!(error.error_type, "Fatal", "{}", error.error_message);
    let spent = "not started: the run's items start only until";
    assert!(
        error.error_message.contains(spent),
        "{}",
        error.error_message
    );
    for item in late {
        let outcome = f
            .runtime
            .store
            .get(&run.collect_outcome(&item.item))
            .await
            .unwrap();
        let outcome: Value = serde_json::from_slice(&outcome.expect("a recorded outcome")).unwrap();
        assert_eq!(outcome["status"], "failed", "{outcome}");
        assert!(
            outcome["reason"].as_str().unwrap().contains(spent),
            "{outcome}"
        );
    }
    assert_eq!(f.emulator.traffic().requests_to(Endpoint::Results), 0);
    let mut after_catch = with_deadlines(&items, 3600, 3600);
    after_catch["collectError"] = json!({"Error": "Fatal", "Cause": "…"});
    call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        after_catch,
    )
    .await
    .expect("transform");
    for (item, is_late) in partial_commit_of(&f, &run, late).await {
        assert_eq!(item["status"] == "failed", is_late, "{item}");
        if is_late {
            assert!(item["reason"].as_str().unwrap().contains(spent), "{item}");
        }
    }
}

/// A run record whose `startedAt` cannot be read (not written by the trigger) is not planned:
/// every line of the run carries that time and its items' deadlines count from it. The plan
/// fails Fatal naming the field, the key and what to do, before it lists a project, and writes
/// no work list.
#[tokio::test]
async fn a_run_whose_start_cannot_be_read_is_not_planned() {
    let f = fixture().await;
    let started = scheduled_start(&f).await.expect("scheduled trigger");
    let run: RunRef = serde_json::from_value(started["run"].clone()).unwrap();
    let mut record = stored_run_record(&f, &run).await;
    record.started_at = "yesterday".into();
    let body = serde_json::to_vec(&record).unwrap();
    f.runtime
        .store
        .put(&run.run_record(), body.into())
        .await
        .unwrap();
    f.emulator.reset_traffic();
    let error = trigger(&f.runtime, json!({"plan": {"run": started["run"]}}))
        .await
        .expect_err("the run's start cannot be read");
    assert_eq!(error.error_type, "Fatal", "{}", error.error_message);
    for part in [
        run.run_record().as_str(),
        "startedAt \"yesterday\" is not an RFC 3339 time",
        "start a new run",
    ] {
        assert!(
            error.error_message.contains(part),
            "{part}: {}",
            error.error_message
        );
    }
    assert_eq!(f.emulator.traffic().requests_to(Endpoint::Projects), 0);
    assert!(!is_stored(&f, &run.work_list()).await);
}

/// A group collected in time whose transform deadline has passed transforms none of its items
/// that need it, the first of an invocation neither: each is recorded failed with the reason
/// (final, not retried), an item without a scan as before; finalize commits the items
/// transformed in time and reports the others with the reason, nothing of them committed.
#[tokio::test]
async fn items_past_the_runs_transform_deadline_are_recorded_failed_and_not_committed() {
    let f = fixture().await;
    let (_, run, items) = scheduled_run(&f).await;
    collect_until(&f, with_deadlines(&items, 3600, 3600), deadline_in(900))
        .await
        .expect("collected in time");
    let (in_time, late) = items.split_at(5);
    assert!(
        late.iter().any(|i| i.scan_id.is_some()),
        "a late item has findings"
    );
    call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        with_deadlines(in_time, 3600, 3600),
    )
    .await
    .expect("transformed in time");
    let answered = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        with_deadlines(late, 3600, -1),
    )
    .await
    .expect("the late items are recorded, not retried");
    let spent = "not started: the run's items start only until";
    for (item, answer) in late.iter().zip(answered["items"].as_array().unwrap()) {
        let record = f
            .runtime
            .store
            .get(&run.transform_record(&item.item))
            .await
            .unwrap();
        let record: Value = serde_json::from_slice(&record.expect("a record")).unwrap();
        let failed = record["failed"].as_str();
        assert_eq!(failed.is_some(), item.scan_id.is_some(), "{record}");
        assert!(failed.is_none_or(|f| f.contains(spent)), "{record}");
        assert_eq!(answer["failed"].as_str(), failed, "{answered}");
    }
    for (item, is_late) in partial_commit_of(&f, &run, late).await {
        // An item without a scan has nothing to transform: it is reported as such.
        let expected = match (is_late, item["status"] == "no_scan") {
            (_, true) => "no_scan",
            (true, false) => "failed",
            (false, false) => "complete",
        };
        assert_eq!(item["status"], expected, "{item}");
        if expected == "failed" {
            assert!(item["reason"].as_str().unwrap().contains(spent), "{item}");
            assert_eq!(
                item["objects"],
                json!([]),
                "nothing of it committed: {item}"
            );
        }
    }
}

/// Secrets Manager as a stalled service: it takes the read and never answers.
struct SilentSecrets;

impl cxone_etm::secret::SecretsManager for SilentSecrets {
    fn secret_string<'a>(
        &'a self,
        _id: &'a str,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<String, cxone_etm::secret::SecretUnread>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(std::future::pending())
    }
}

/// The API's connection test answers within its limit (25 s: API Gateway ends a request at 30 s;
/// 2 s here) even when Secrets Manager never gives the secret: the read counts in it, and the
/// credential check fails naming it. Before, the read could take the client's 30 s first, then the
/// checks their 25.
#[tokio::test]
async fn a_connection_test_whose_secret_never_comes_answers_within_its_limit() {
    let f = fixture().await;
    let secrets = std::sync::Arc::new(SilentSecrets);
    let runtime = cxone_etm::lambda::Runtime::new(f.runtime.store, secrets, None)
        .with_vendor_hosts(VendorHosts::listed(emulator_host(&f.emulator)).unwrap())
        .with_connection_test_limit(Duration::from_secs(2));
    let started = std::time::Instant::now();
    // Bounded here too, so that a test whose read waits for ever fails rather than hangs.
    let checked = tokio::time::timeout(
        Duration::from_secs(10),
        runtime.check_connection("demo-sast"),
    );
    let report = checked.await.expect("a report within 10 s").unwrap();
    // The limit, and a moment for the report.
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
    assert!(!report.passed);
    let text = report.to_table();
    assert!(
        text.contains("the secret was not given within 1.6 s (of the 2 s this test may take)")
            && text.contains("Secrets Manager reachable from it and not throttling"),
        "{text}"
    );
}

/// A store on which `put` is written over `key` right after the next versioned read of it once
/// `armed`: a user's `cxone-etm connection put` landing between a tick's read of the config and
/// its write.
struct PutAfterRead<S> {
    inner: S,
    key: String,
    put: bytes::Bytes,
    armed: std::sync::atomic::AtomicBool,
}

impl<S: ObjectStore> ObjectStore for PutAfterRead<S> {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_versioned(
        &self,
        key: &str,
    ) -> Result<Option<(bytes::Bytes, Version)>, StoreError> {
        let read = self.inner.get_versioned(key).await?;
        if key == self.key && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.inner.put(key, self.put.clone()).await?;
        }
        Ok(read)
    }
    async fn put_if_unchanged(
        &self,
        key: &str,
        body: bytes::Bytes,
        version: &Version,
    ) -> Result<bool, StoreError> {
        self.inner.put_if_unchanged(key, body, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

impl<S: BucketStore> BucketStore for PutAfterRead<S> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    fn full_key(&self, key: &str) -> String {
        self.inner.full_key(key)
    }
}

/// A config put between a tick's read of the stored config and its write of the stack's changed
/// parameters is never replaced: the tick writes only on the version it read, and keeps the put.
/// Before, the tick wrote over it, and the user's config (a custom map, a filter) was lost until
/// put again. In memory, and on S3 (moto: the ETag and `If-Match` as the deployed trigger writes).
#[tokio::test]
async fn a_config_put_between_a_ticks_read_and_its_write_is_kept() {
    config_put_between_a_ticks_read_and_its_write(cxone_etm::store::MemoryStore::default()).await;
    let moto = cxone_etm_e2e::Moto::start().await;
    let s3 = moto.s3();
    s3.create_bucket().bucket("ticks").send().await.unwrap();
    config_put_between_a_ticks_read_and_its_write(cxone_etm::store::S3Store::new(
        s3, "ticks", "etm",
    ))
    .await;
}

async fn config_put_between_a_ticks_read_and_its_write<S: BucketStore + 'static>(store: S) {
    let f = fixture().await;
    let config = |start_date: &str| {
        let mut config = ConnectionConfig::new(
            "ticked",
            cxone_etm::ConnectorKind::Dast,
            vendor_settings(&f.emulator),
            cxone_etm_e2e::DEMO_SECRET_ARN,
        );
        config.schedule = serde_json::from_value(
            json!({"expression": "rate(1 day)", "timezone": "UTC", "start_date": start_date}),
        )
        .unwrap();
        config
    };
    let mut users = serde_json::to_value(config("2017-01-01")).unwrap();
    users["filters"] = json!({"project_names": ["kept"]});
    let users = bytes::Bytes::from(serde_json::to_vec_pretty(&users).unwrap());
    let store = PutAfterRead {
        inner: store,
        key: config_key("ticked"),
        put: users.clone(),
        armed: false.into(),
    };
    let runtime = Runtime::new(store, f.secrets.clone(), None)
        .with_vendor_hosts(VendorHosts::listed(emulator_host(&f.emulator)).unwrap());
    let stored = runtime.register_from_schedule("ticked", config("2026-01-01"));
    assert!(matches!(stored.await.unwrap(), ScheduleConfig::Stored));
    runtime
        .store
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let redeployed = runtime.register_from_schedule("ticked", config("2016-01-01"));
    // The put points where the stack does, with a filter of its own: kept, nothing to warn of.
    assert!(matches!(
        redeployed.await.unwrap(),
        ScheduleConfig::Kept { differs_in } if differs_in.is_empty()
    ));
    assert_eq!(
        runtime.store.get(&config_key("ticked")).await.unwrap(),
        Some(users.clone()),
        "the put stands"
    );
    // A redeploy onto another tenant and secret: kept, and said where it points otherwise.
    let mut moved = config("2016-01-01");
    moved.vendor.tenant = "another".into();
    moved.secret = format!("{}-moved", cxone_etm_e2e::DEMO_SECRET_ARN);
    let again = runtime.register_from_schedule("ticked", moved);
    assert!(matches!(
        again.await.unwrap(),
        ScheduleConfig::Kept { differs_in } if differs_in == ["tenant", "secret"]
    ));
    assert_eq!(
        runtime.store.get(&config_key("ticked")).await.unwrap(),
        Some(users)
    );
}

/// A store that panics on one key, as a defect one item's data meets would: on writing it
/// (collect's first page of the item) or on reading it (the transform's).
struct PanicsOn<'a, S> {
    inner: &'a S,
    key: String,
    on_read: bool,
}

impl<S: ObjectStore> PanicsOn<'_, S> {
    fn meet(&self, key: &str, reading: bool) {
        if key == self.key && reading == self.on_read {
            panic!("a defect met at {key}");
        }
    }
}

impl<S: ObjectStore> ObjectStore for PanicsOn<'_, S> {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.meet(key, false);
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.meet(key, false);
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.meet(key, true);
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

impl<S: BucketStore> BucketStore for PanicsOn<'_, S> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    fn full_key(&self, key: &str) -> String {
        self.inner.full_key(key)
    }
}

/// One item's collect or transform that panics (a defect its data meets) fails that item alone:
/// the rest of its group is collected and transformed, the item's failure is recorded with what
/// the panic said (a collect's group then fails Fatal, as no retry mends a defect; a transform
/// answers it as any item's failure), and finalize reports the item failed with that reason, its
/// findings carried. Before, the panic ended the invocation (an
/// error type no retrier names): the group's items after it were never collected or
/// transformed, and read "did not finish".
#[tokio::test]
async fn an_items_step_that_panics_fails_that_item_alone() {
    let f = fixture().await;
    let (_, run, items) = scheduled_run(&f).await;
    let panicking = |key: String, on_read: bool| {
        Runtime::new(
            PanicsOn {
                inner: &f.runtime.store,
                key,
                on_read,
            },
            f.secrets.clone(),
            None,
        )
        .with_vendor_hosts(VendorHosts::listed(emulator_host(&f.emulator)).unwrap())
    };
    let store = &f.runtime.store;
    let status = |key: String| async move {
        let record: Value =
            serde_json::from_slice(&store.get(&key).await.unwrap().expect("recorded")).unwrap();
        record
    };
    let defect = |item: &WorkItem| {
        format!(
            "1 of the group's items did not finish ({0}); {0}: the item's step stopped on a defect (a panic: a defect met at {1}); nothing of it is committed and its findings are carried",
            item.item,
            run.raw_page(&item.item, 0)
        )
    };

    // Collect: the middle item of a group of three panics writing its first page.
    let (collected, broken) = (&items[..3], &items[1]);
    let runtime = panicking(run.raw_page(&broken.item, 0), false);
    let error = call(
        |e| cxone_etm_collect::handler::handle(&runtime, e),
        json!({ "items": collected }),
    )
    .await
    .expect_err("the item's collect panicked");
    assert_eq!(error.error_type, "Fatal", "{}", error.error_message);
    assert!(
        error.error_message.starts_with(&defect(broken)),
        "{}",
        error.error_message
    );
    for item in collected {
        let outcome = status(run.collect_outcome(&item.item)).await;
        let failed = item.item == broken.item;
        assert_eq!(
            outcome["status"],
            if failed { "failed" } else { "complete" },
            "{outcome}"
        );
        if failed {
            assert!(
                outcome["reason"]
                    .as_str()
                    .unwrap()
                    .contains("stopped on a defect (a panic: a defect met at"),
                "{outcome}"
            );
        }
    }

    // Transform: of three collected items, the middle one panics reading its first page.
    let (transformed, broken) = (&items[3..6], &items[4]);
    call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        json!({ "items": transformed }),
    )
    .await
    .expect("collected");
    let runtime = panicking(run.raw_page(&broken.item, 0), true);
    // A transform that fails for good is recorded and answered, as any item's failure is.
    let answered = call(
        |e| cxone_etm_transform::handler::handle(&runtime, e),
        json!({ "items": transformed }),
    )
    .await
    .expect("the transform answers for every item");
    let failed: Vec<&str> = answered["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["failed"].as_str())
        .collect();
    assert_eq!(failed.len(), 1, "{answered}");
    assert!(
        failed[0].starts_with(&format!(
            "the item's step stopped on a defect (a panic: a defect met at {})",
            run.raw_page(&broken.item, 0)
        )),
        "{answered}"
    );
    for item in transformed {
        let record = status(run.transform_record(&item.item)).await;
        assert_eq!(
            record["failed"].as_str().is_some(),
            item.item == broken.item,
            "{record}"
        );
    }

    // Finalize names both items' defects; the others delivered.
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({ "run": run }),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], false, "{finalized}");
    let manifest = status(run.manifest()).await;
    let said = manifest.to_string();
    for broken in [&items[1], &items[4]] {
        assert!(
            said.contains(&format!(
                "a defect met at {}",
                run.raw_page(&broken.item, 0)
            )),
            "{said}"
        );
    }
}

/// A group's transform the state machine caught (its retries spent: out of memory, say) is
/// handed to the transform again with the caught error (`transformError`): each item collected
/// whole and left without a record is recorded failed with that reason, nothing is transformed,
/// an item transformed before keeps its record; finalize reports those items failed with the
/// cause, their findings carried. Before, finalize said only "transform did not finish".
#[tokio::test]
async fn a_caught_transform_failure_is_each_untransformed_items_reason() {
    let f = fixture().await;
    let (_, run, items) = scheduled_run(&f).await;
    let group = &items[..3];
    call(
        |e| cxone_etm_collect::handler::handle(&f.runtime, e),
        json!({ "items": group }),
    )
    .await
    .expect("collected");
    call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        json!({ "items": &group[..1] }),
    )
    .await
    .expect("the first item transformed");
    let cause = json!({"errorType": "Runtime.OutOfMemory", "errorMessage": "RequestId: 7 Error: Runtime exited with error: signal: killed"});
    // A part of a split scan is left to finalize: another part's child may be transforming the
    // item they share.
    let mut part = serde_json::to_value(&group[1]).unwrap();
    part["part"] = json!({"index": 0, "of": 2, "firstPage": 0, "pages": 1, "semantics": "pageIndex",
        "plannedTotal": 100, "fingerprintKey": 7});
    // Its part collected whole, as the item was.
    let store = &f.runtime.store;
    let whole = store.get(&run.collect_outcome(&group[1].item)).await;
    let part_outcome = run.part_outcome(&group[1].item, 0);
    store
        .put(&part_outcome, whole.unwrap().unwrap())
        .await
        .unwrap();
    let answered = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        json!({ "items": [part], "transformError": {"Error": "Runtime.OutOfMemory", "Cause": cause.to_string()} }),
    )
    .await
    .expect("nothing to record");
    assert_eq!(answered["items"], json!([]), "{answered}");
    assert!(!is_stored(&f, &run.transform_record(&group[1].item)).await);
    store.delete(&part_outcome).await.unwrap();
    let answered = call(
        |e| cxone_etm_transform::handler::handle(&f.runtime, e),
        json!({ "items": group, "transformError": {"Error": "Runtime.OutOfMemory", "Cause": cause.to_string()} }),
    )
    .await
    .expect("the failure recorded");
    let reason = "the group's transform failed (Runtime.OutOfMemory): RequestId: 7 Error: Runtime exited with error: signal: killed";
    let recorded: Vec<(&str, &str)> = answered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item"].as_str().unwrap(), i["failed"].as_str().unwrap()))
        .collect();
    assert_eq!(
        recorded,
        [
            (group[1].item.as_str(), reason),
            (group[2].item.as_str(), reason)
        ]
    );
    for item in &group[1..] {
        let written = f
            .runtime
            .store
            .list(&run.etm_prefix(&item.item))
            .await
            .unwrap();
        assert_eq!(
            written,
            [run.transform_record(&item.item)],
            "nothing transformed"
        );
    }
    let finalized = call(
        |e| cxone_etm_finalize::handler::handle(&f.runtime, e),
        json!({ "run": run }),
    )
    .await
    .expect("finalize");
    assert_eq!(finalized["complete"], false, "{finalized}");
    let manifest: Value =
        serde_json::from_slice(&f.runtime.store.get(&run.manifest()).await.unwrap().unwrap())
            .unwrap();
    for (n, item) in group.iter().enumerate() {
        let line = manifest["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["item"] == item.item.as_str())
            .unwrap();
        if n == 0 {
            assert_eq!(line["status"], "complete", "{line}");
        } else {
            assert_eq!(line["status"], "failed", "{line}");
            assert_eq!(
                line["reason"],
                format!("transform failed: {reason}"),
                "{line}"
            );
        }
    }
}
