//! A scheduled event (`{"connectionId": "…"}` from EventBridge Scheduler) starts a run; the state
//! machine's first state (`{"plan": {"run": …}}`) plans it; an HTTP API event is routed:
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /connections/{id}` | 200 with the connection's state and next scheduled run; 404 |
//! | `POST /connections/{id}/runs` | 202 with the started run, 409 while another run holds the lock |
//! | `GET /connections/{id}/runs/{runId}` | 200 with the run record, its outcome once finalized and the connection's status; 404 |
//! | `POST /connections/{id}/test` | 200 with the five checks (`passed` tells the verdict) |
//!
//! An id that is not 1–64 ASCII letters, digits, `-` or `_` is answered 400 on every route, before
//! it becomes a key.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use cxone_etm::lambda::{
    PlanInput, PlannedRun, Runtime, ScheduleConfig, StartedRun, Summarized, plan_task, show_run,
    start_run,
};
use cxone_etm::metrics::Summary;
use cxone_etm::pipeline::{ConnectionConfig, HELD, StepError, Trigger, check_key_segment};
use cxone_etm::store::BucketStore;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{Value, json};

/// EventBridge Scheduler's input: the connection to run and, from the template, a starting config.
/// The config in the bucket is the source of truth: the schedule's config is stored when the
/// connection has none, and replaces only one an earlier tick stored (a redeploy with corrected
/// parameters), so a connection changed with `cxone-etm connection put` (its map and scoring
/// included) is never replaced by a scheduled run.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scheduled {
    pub connection_id: String,
    #[serde(default)]
    pub connection: Option<ConnectionConfig>,
}

/// The trigger's event: an HTTP API request (it has a `routeKey` or a `requestContext`), the
/// state machine's plan of a started run (`plan`), or a scheduled run.
#[derive(Debug)]
pub enum TriggerEvent {
    Http(Box<ApiGatewayV2httpRequest>),
    Plan(PlanInput),
    Scheduled(Box<Scheduled>),
}

impl<'de> serde::Deserialize<'de> for TriggerEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let event = Value::deserialize(deserializer)?;
        if event.get("routeKey").is_some() || event.get("requestContext").is_some() {
            serde_json::from_value(event)
                .map(|request| Self::Http(Box::new(request)))
                .map_err(|e| D::Error::custom(format!("HTTP API event: {e}")))
        } else if let Some(plan) = event.get("plan") {
            PlanInput::deserialize(plan)
                .map(Self::Plan)
                .map_err(|e| D::Error::custom(format!("plan event: {e}")))
        } else {
            // The path to what is wrong: a schedule's input is edited by hand (a template).
            serde_path_to_error::deserialize(event)
                .map(|scheduled| Self::Scheduled(Box::new(scheduled)))
                .map_err(|e| {
                    D::Error::custom(format!("scheduled event, at `{}`: {}", e.path(), e.inner()))
                })
        }
    }
}

/// What the trigger answers: the started run or the tick held (a schedule), the planned run (the
/// state machine) or an HTTP response (the API).
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum TriggerAnswer {
    Started(StartedRun),
    Held(HeldTick),
    Planned(PlannedRun),
    Http(ApiGatewayV2httpResponse),
}

/// A schedule's tick refused by design: the connection's run is under way, another start took
/// the lock at the same moment, or the day is outside the schedule's dates.
#[derive(Debug, serde::Serialize)]
pub struct HeldTick {
    /// Why, as the refusal says it.
    pub held: String,
}

impl Summarized for TriggerEvent {
    fn summarize(&self, summary: &mut Summary) {
        summary.scheduled_start = matches!(self, Self::Scheduled(_));
        let id = match self {
            Self::Scheduled(scheduled) => scheduled.connection_id.as_str(),
            Self::Plan(plan) => plan.run.connection_id.as_str(),
            Self::Http(request) => asked(request).id.unwrap_or_default(),
        };
        // An id the steps refuse is not a metric's dimension: whoever may invoke the function
        // could make a custom metric of each.
        summary.connection = match check_key_segment(id) {
            Ok(()) => id.to_string(),
            Err(_) => "(invalid)".to_string(),
        };
    }
}

impl Summarized for TriggerAnswer {
    fn summarize(&self, summary: &mut Summary) {
        match self {
            Self::Started(started) => started.summarize(summary),
            Self::Held(_) => summary.outcome = HELD.into(),
            Self::Planned(planned) => planned.summarize(summary),
            Self::Http(response) => {
                let status = response.status_code;
                summary.outcome = format!("http {status}");
                // A connection (or run) the request did not find, or could not name, is not a
                // metric's dimension: whoever may call the API could make a custom metric of each.
                if matches!(status, 400 | 404) {
                    summary.connection = "(unknown)".to_string();
                }
                // The service's own failure is an error of the invocation, counted and said.
                if status >= 500 {
                    let body = match &response.body {
                        Some(Body::Text(text)) => serde_json::from_str::<Value>(text).ok(),
                        _ => None,
                    };
                    let said = body.as_ref().and_then(|b| b["error"].as_str());
                    summary.error = Some(said.unwrap_or("no error text").to_string());
                }
            }
        }
    }
}

pub async fn handle(
    runtime: &Runtime<impl BucketStore>,
    event: LambdaEvent<TriggerEvent>,
) -> Result<TriggerAnswer, Diagnostic> {
    let scheduled = match event.payload {
        TriggerEvent::Http(request) => {
            // Boxed: the routes' futures are deep (the connection test, a whole plan), and inlined
            // into `main`'s they overflow the compiler's query depth.
            return Ok(TriggerAnswer::Http(
                Box::pin(route(runtime, &request)).await,
            ));
        }
        TriggerEvent::Plan(input) => {
            // Boxed as the routes are: a whole plan.
            return Ok(TriggerAnswer::Planned(
                Box::pin(plan_task(runtime, input)).await?,
            ));
        }
        TriggerEvent::Scheduled(scheduled) => *scheduled,
    };
    let event_schedule = scheduled
        .connection
        .as_ref()
        .and_then(|config| config.schedule.clone());
    if let Some(config) = scheduled.connection {
        let id = &scheduled.connection_id;
        match runtime.register_from_schedule(id, config).await? {
            ScheduleConfig::Stored => {
                tracing::info!(connection = %id, "stored the schedule's config (the stack's parameters): the connection had none");
            }
            ScheduleConfig::Replaced => {
                tracing::info!(connection = %id, "replaced the config an earlier tick stored: the stack's parameters changed since");
            }
            ScheduleConfig::Kept { differs_in } if differs_in.is_empty() => {
                tracing::info!(connection = %id, "the stored config (put with `cxone-etm connection put`) is used: it holds the stack's kind, tenant, region, secret, concurrency and page size, and settings of its own");
            }
            ScheduleConfig::Kept { differs_in } => {
                let differs_in = differs_in.join(", ");
                tracing::warn!(connection = %id, %differs_in, "the stored config holds another {differs_in} than the stack's parameters, and is not the one a tick last stored (it was put with `cxone-etm connection put`, or by a tick of a version before 2026-12-07): the stored config is used; to take the parameters, put a config with them (`cxone-etm connection put`, which keeps its map, engines and filters as you write them)");
            }
            ScheduleConfig::Unchanged => {}
        }
    }
    match start_run(
        runtime,
        &scheduled.connection_id,
        Trigger::Schedule,
        event_schedule,
    )
    .await
    {
        Ok(started) => Ok(TriggerAnswer::Started(started)),
        // Not an error: what Lambda counts as a failed tick (the dropped events the template
        // alarms on, crashes and time-outs included) is then a tick that should have started a
        // run and did not.
        Err(error) if error.is_held() => {
            tracing::info!(connection = %scheduled.connection_id, %error, "the tick is held");
            Ok(TriggerAnswer::Held(HeldTick {
                held: error.to_string(),
            }))
        }
        Err(error) => Err(error.into()),
    }
}

fn answer(status: i64, body: Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.body = Some(Body::Text(body.to_string()));
    response
}

/// An error's answer: 400 only for what the request itself got wrong; what the connection's
/// stored state refuses is a conflict (409), a dependency that refused (the secret, the vendor)
/// a bad gateway (502), anything else the service's own fault (500), or, when it may pass, 503.
/// A refusal while a run is under way (409) is retryable: the same request passes once it ends.
fn failure(error: StepError) -> ApiGatewayV2httpResponse {
    let status = status_of(&error);
    match status {
        500.. => tracing::error!(%error, status, "the API request failed"),
        _ => tracing::info!(%error, status, "the API request was refused"),
    }
    answer(
        status,
        json!({"error": error.to_string(), "retryable": error.is_retryable() || matches!(error, StepError::AlreadyRunning { .. } | StepError::LockTaken { .. })}),
    )
}

fn status_of(error: &StepError) -> i64 {
    match error {
        StepError::BadEvent { .. } => 400,
        StepError::NotConfigured { .. } => 404,
        error if error.is_held() => 409,
        StepError::BadConfig { .. } => 409,
        error if error.is_retryable() => 503,
        StepError::Credential(_) | StepError::Vendor(_) => 502,
        _ => 500,
    }
}

/// The request's path as the routes read it: a stage other than `$default` begins the raw path
/// (`/{stage}/connections/…`), and is left out.
fn route_path(request: &ApiGatewayV2httpRequest) -> &str {
    let raw = request.raw_path.as_deref().unwrap_or_default();
    match request.request_context.stage.as_deref() {
        Some(stage) if stage != "$default" => raw
            .strip_prefix('/')
            .and_then(|rest| rest.strip_prefix(stage))
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(raw),
        _ => raw,
    }
}

/// The template's routes, as API Gateway names them in `routeKey`.
const ROUTES: [&str; 4] = [
    "GET /connections/{id}",
    "POST /connections/{id}/runs",
    "GET /connections/{id}/runs/{runId}",
    "POST /connections/{id}/test",
];

/// The template's route a method and path's segments read as.
fn route_key_of(method: &str, segments: &[&str]) -> Option<&'static str> {
    match (method, segments) {
        ("GET", ["connections", _]) => Some(ROUTES[0]),
        ("POST", ["connections", _, "runs"]) => Some(ROUTES[1]),
        ("GET", ["connections", _, "runs", _]) => Some(ROUTES[2]),
        ("POST", ["connections", _, "test"]) => Some(ROUTES[3]),
        _ => None,
    }
}

/// The route a request asks for, and its connection and run ids.
struct Asked<'a> {
    route: Option<&'a str>,
    id: Option<&'a str>,
    run: Option<&'a str>,
}

/// Behind API Gateway, the route it matched (and authorized) and that route's path parameters:
/// the path it hands over is decoded (an id holding `%2F` would read as more segments, another
/// route's) and cut at a decoded `?`, and a custom domain's API mapping may add a base path. A
/// direct invoke (route key `$default`, or none) is read from its path.
fn asked(request: &ApiGatewayV2httpRequest) -> Asked<'_> {
    if let Some(route) = request
        .route_key
        .as_deref()
        .filter(|key| *key != "$default")
    {
        let parameter = |name: &str| request.path_parameters.get(name).map(String::as_str);
        return Asked {
            route: Some(route),
            id: parameter("id"),
            run: parameter("runId"),
        };
    }
    let method = request.request_context.http.method.as_str();
    let segments: Vec<&str> = route_path(request).trim_matches('/').split('/').collect();
    let route = route_key_of(method, &segments);
    Asked {
        route,
        id: route.and(segments.get(1).copied()),
        run: route
            .filter(|r| r.ends_with("{runId}"))
            .and(segments.get(3).copied()),
    }
}

async fn route(
    runtime: &Runtime<impl BucketStore>,
    request: &ApiGatewayV2httpRequest,
) -> ApiGatewayV2httpResponse {
    let asked = asked(request);
    match (asked.route, asked.id, asked.run) {
        (Some("GET /connections/{id}"), Some(id), _) => match runtime.status(id).await {
            Ok(status) => answer(200, serde_json::to_value(status).expect("serializes")),
            Err(error) => failure(error),
        },
        (Some("POST /connections/{id}/runs"), Some(id), _) => {
            match start_run(runtime, id, Trigger::Api, None).await {
                Ok(started) => answer(202, serde_json::to_value(started).expect("serializes")),
                Err(error) => failure(error),
            }
        }
        (Some("GET /connections/{id}/runs/{runId}"), Some(id), Some(run)) => {
            match show_run(runtime, id, run).await {
                Ok(Some(view)) => answer(200, serde_json::to_value(view).expect("serializes")),
                Ok(None) => answer(
                    404,
                    json!({"error": format!("connection {id} has no run {run}"), "retryable": false}),
                ),
                Err(error) => failure(error),
            }
        }
        (Some("POST /connections/{id}/test"), Some(id), _) => {
            match runtime.check_connection(id).await {
                Ok(report) => answer(200, serde_json::to_value(report).expect("serializes")),
                Err(error) => failure(error),
            }
        }
        // A route of ours whose path parameters did not come: an event built by hand.
        (Some(route), ..) if ROUTES.contains(&route) => answer(
            400,
            json!({"error": format!("route {route} came without the path parameters it names (pathParameters); API Gateway sends them, and an event built by hand must too, or invoke with routeKey $default and the path"), "retryable": false}),
        ),
        (Some(route), ..) => answer(
            404,
            json!({"error": format!("no route {route}; use {}", ROUTES.join(", ")), "retryable": false}),
        ),
        (None, ..) => {
            let method = request.request_context.http.method.as_str();
            let path = route_path(request);
            answer(
                404,
                json!({"error": format!("no route {method} {path}; use {}", ROUTES.join(", ")), "retryable": false}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxone_etm::field_error::FieldError;
    use cxone_etm::secret::SecretRef;

    /// The connection a summary line names is a metric's dimension: an id no step takes is not
    /// one, whichever way the function was invoked.
    #[test]
    fn a_summary_names_only_a_connection_id_the_steps_take() {
        let named = |event: Value| {
            let event: TriggerEvent = serde_json::from_value(event).unwrap();
            let mut summary = Summary::default();
            event.summarize(&mut summary);
            summary.connection
        };
        let long = "a".repeat(65);
        for id in ["../x", "a b", long.as_str(), ""] {
            assert_eq!(named(json!({"connectionId": id})), "(invalid)", "{id}");
            let plan = json!({"plan": {"run": {"connectionId": id, "runId": "r"}}});
            assert_eq!(named(plan), "(invalid)", "{id}");
        }
        assert_eq!(named(json!({"connectionId": "prod-sast"})), "prod-sast");
        let plan = json!({"plan": {"run": {"connectionId": "prod-sast", "runId": "r"}}});
        assert_eq!(named(plan), "prod-sast");
    }

    /// A scheduled event's input is read strictly and its errors say where: a misspelt key is not
    /// dropped (the stored config used without a word), a mistyped value is named by its path.
    #[test]
    fn a_scheduled_event_names_what_is_wrong_and_where() {
        let refused = |event: Value| {
            serde_json::from_value::<TriggerEvent>(event)
                .unwrap_err()
                .to_string()
        };
        let misspelt = refused(json!({"connectionId": "sast", "conection": {}}));
        assert!(
            misspelt.contains("unknown field `conection`")
                && misspelt.contains("expected `connectionId` or `connection`"),
            "{misspelt}"
        );
        let mistyped = refused(json!({"connectionId": "sast", "connection": {
            "id": "sast", "name": "n", "kind": "sast", "secret": "secretsmanager:s",
            "vendor": {"region": "eu", "tenant": "acme", "concurrency": 8.5}}}));
        assert!(
            mistyped.starts_with("scheduled event, at `connection.vendor.concurrency`: invalid type: floating point `8.5`"),
            "{mistyped}"
        );
    }

    /// A held tick's summary line counts neither an error nor a failed start.
    #[test]
    fn a_held_tick_is_summarized_as_no_failure() {
        let mut summary = Summary {
            scheduled_start: true,
            ..Summary::default()
        };
        let held = TriggerAnswer::Held(HeldTick {
            held: "connection c is already running (run r since t)".into(),
        });
        held.summarize(&mut summary);
        let line = cxone_etm::metrics::emf_line("trigger", &summary, 5, 0);
        assert_eq!(line["Outcome"], HELD);
        assert_eq!(
            (&line["StartsFailed"], &line["Errors"]),
            (&json!(0), &json!(0))
        );
    }

    /// An API answer's line names the connection only where the request found it, and counts
    /// the service's own failures as errors, with their text.
    #[test]
    fn an_api_answer_names_only_a_connection_it_found_and_counts_its_own_failures() {
        let line = |status: i64, body: Value| {
            let request: TriggerEvent = serde_json::from_value(json!({
                "version": "2.0", "routeKey": "GET /connections/{id}", "rawPath": "/connections/nope",
                "pathParameters": {"id": "nope"},
                "requestContext": {"http": {"method": "GET", "path": "/connections/nope"}, "stage": "$default"}
            }))
            .unwrap();
            let mut summary = Summary::default();
            request.summarize(&mut summary);
            TriggerAnswer::Http(answer(status, body)).summarize(&mut summary);
            cxone_etm::metrics::emf_line("trigger", &summary, 5, 0)
        };
        let found = line(200, json!({}));
        assert_eq!(
            (&found["ConnectionId"], &found["Errors"]),
            (&json!("nope"), &json!(0))
        );
        for status in [400, 404] {
            let unknown = line(
                status,
                json!({"error": "connection nope is not configured"}),
            );
            assert_eq!(unknown["ConnectionId"], "(unknown)", "{status}");
            assert_eq!(unknown["Errors"], 0, "{status}");
        }
        let failed = line(503, json!({"error": "the state machine refused the start"}));
        assert_eq!(
            (&failed["ConnectionId"], &failed["Errors"]),
            (&json!("nope"), &json!(1))
        );
        assert_eq!(failed["Error"], "the state machine refused the start");
    }

    /// A start refused while a run is under way passes once it ends: retryable. A broken config
    /// does not pass by waiting.
    #[test]
    fn a_start_refused_while_a_run_is_under_way_is_retryable() {
        let retryable = |error: StepError| {
            let response = failure(error);
            let Some(Body::Text(body)) = response.body else {
                panic!("a JSON body")
            };
            let body: Value = serde_json::from_str(&body).unwrap();
            (response.status_code, body["retryable"].as_bool())
        };
        let running = StepError::AlreadyRunning {
            connection_id: "c".into(),
            run_id: "r".into(),
            since: "t".into(),
        };
        let bad_config = StepError::BadConfig {
            source_name: "connections/c/config.json".into(),
            errors: vec![FieldError::new("vendor.tenant", "missing")],
        };
        assert_eq!(retryable(running), (409, Some(true)));
        assert_eq!(retryable(bad_config), (409, Some(false)));
    }

    #[test]
    fn only_what_the_request_got_wrong_is_a_bad_request() {
        let bad_object = StepError::bad_object("connections/c/runs/r/run.json", "not JSON");
        let bad_config = StepError::BadConfig {
            source_name: "connections/c/config.json".into(),
            errors: vec![FieldError::new("vendor.tenant", "missing")],
        };
        let bad_event = StepError::BadEvent {
            what: "connection id".into(),
            problem: "'..' must be 1–64 ASCII letters".into(),
        };
        let not_configured = StepError::NotConfigured {
            connection_id: "c".into(),
            key: "connections/c/config.json".into(),
        };
        let unreadable_secret = "not a reference".parse::<SecretRef>().unwrap_err();
        let cases = [
            (bad_event, 400),
            (not_configured, 404),
            (bad_config, 409),
            (StepError::Credential(unreadable_secret), 502),
            (StepError::StateMachine("throttled".into()), 503),
            (bad_object, 500),
            (StepError::RunFailed("plan: it failed".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(status_of(&error), status, "{error}");
        }
    }
}
