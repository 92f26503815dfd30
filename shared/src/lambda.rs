//! What the four Lambda functions do, as plain async functions with typed inputs and outputs, so
//! each function's handler only decodes its event and calls one of these. Loaded connections
//! (config, compiled map, credential, vendor client) are cached for the life of the process, that
//! is across warm invocations, as long as the stored config is unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};

use crate::cxone::{ConnectionReport, test_connection_until};
use crate::field_error::FieldError;
use crate::metrics::Summary;
use crate::pipeline::{
    CollectOutcome, Connection, ConnectionConfig, ConnectionStatus, EndedHolder, HolderEnd,
    ItemStatus, Manifest, RunRecord, RunRef, Schedule, StepError, TaskFailure, TimeBudget, Trigger,
    VendorAccess, WorkGroup, begin_run, begin_run_recovering, check_key_segment, collect_group,
    config_key, connection_status, fail_run, finalize, never_started_holder, plan,
    record_event_schedule, record_registration, record_uncollected, record_untransformed,
    schedule_config_key, transform_group,
};
use crate::secret::{SecretRef, SecretSource, SecretsManager};
use crate::store::{BucketStore, S3Store};

/// A function's settings, from its environment, checked at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionEnv {
    pub bucket: String,
    /// Only the trigger starts the state machine.
    pub state_machine_arn: Option<String>,
    /// Items collected at once by the state machine's Distributed Map (the trigger passes it in
    /// the execution's input: `MaxConcurrencyPath`, an integer as the States Language requires).
    pub max_concurrency: u32,
    /// Hosts beyond the regions' a connection may name (`VENDOR_HOSTS`, comma-separated; the
    /// stack's `VendorHosts`): see [`VendorHosts`].
    pub vendor_hosts: VendorHosts,
}

/// The state machine's default when `MAX_CONCURRENCY` is not set.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 10;

impl FunctionEnv {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let bucket = get("BUCKET")
            .filter(|b| !b.trim().is_empty())
            .ok_or("environment variable BUCKET is not set; set it to the data bucket's name")?;
        let max_concurrency = match get("MAX_CONCURRENCY").filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_MAX_CONCURRENCY,
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    format!("environment variable MAX_CONCURRENCY is '{text}'; use a whole number from 1 to 10000")
                })?,
        };
        // The stack's IAM grants name the keys under the bucket's root (`connections/*`): a
        // prefix would put every object where no function may read or write it.
        if get("BUCKET_PREFIX").is_some_and(|prefix| !prefix.trim().is_empty()) {
            return Err("environment variable BUCKET_PREFIX is set, but the functions keep their objects at the data bucket's root, where the stack's IAM grants are (connections/*); unset it".into());
        }
        Ok(Self {
            bucket,
            state_machine_arn: get("STATE_MACHINE_ARN").filter(|a| !a.is_empty()),
            max_concurrency,
            vendor_hosts: VendorHosts::listed(&get("VENDOR_HOSTS").unwrap_or_default())?,
        })
    }
}

/// The hosts beyond the Checkmarx One regions' that a connection's `custom_api_url` and
/// `custom_iam_url` (or the IAM host derived from it) may name on AWS: a private or single-tenant
/// deployment's, as whoever deployed the stack listed them. Whoever may write a config (the
/// bucket, or a scheduled event for a new connection) must not be able to send the credential the
/// functions can read to a host of their own: the API key's realm ties it to an IAM host, but
/// nothing ties the API host, where every request carries the access token, to either.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VendorHosts(Vec<String>);

impl VendorHosts {
    /// From a comma-separated list of hosts (any case; a port, a trailing dot and empty entries
    /// ignored; an IPv6 address with or without its brackets). An entry that is not a host (a
    /// URL, a path, a port that is not a number) is refused: `https://host` would otherwise
    /// allow the host `https`, and the one meant would be refused with no word of why.
    pub fn listed(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                host_of_entry(entry).map(normal_host).ok_or_else(|| {
                    format!(
                        "environment variable VENDOR_HOSTS names '{}', which is not a host; list hosts (a name, `name:port` or an IPv6 address in brackets) separated by commas, with no scheme or path: e.g. cxone.example.com,iam.example.com",
                        entry.escape_debug()
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// What a connection names beyond the regions' hosts and this list.
    fn refused(&self, connection: &Connection) -> Vec<FieldError> {
        let endpoints = &connection.vendor.endpoints;
        if endpoints.region.is_some() {
            return Vec::new();
        }
        let custom_iam = (connection.config.vendor.custom_iam_url.as_deref())
            .is_some_and(|url| !url.trim().is_empty());
        let listed = if self.0.is_empty() {
            "none: the stack's VendorHosts is empty".to_string()
        } else {
            self.0.join(", ")
        };
        let iam = if custom_iam {
            ("vendor.custom_iam_url", "", &endpoints.iam)
        } else {
            (
                "vendor.custom_api_url",
                "the IAM host derived from it, ",
                &endpoints.iam,
            )
        };
        [("vendor.custom_api_url", "", &endpoints.api), iam]
        .into_iter()
        .filter_map(|(field, derived, url)| {
            let host = normal_host(url.host_str().unwrap_or_default());
            (!self.0.contains(&host)).then(|| {
                FieldError::new(
                    field,
                    format!(
                        "{derived}'{host}' is not a host this stack may send the credential to (allowed beyond the regions: {listed}); set `region` for a Checkmarx One region, or deploy the stack with VendorHosts naming the host"
                    ),
                )
            })
        })
        .collect()
    }
}

/// A connection loaded from the bucket, with its vendor client.
pub struct LoadedConnection {
    pub connection: Connection,
    pub vendor: VendorAccess,
    /// The config's stored bytes.
    config: bytes::Bytes,
}

/// How long one attempt of a Step Functions call may wait for its answer (StartExecution answers
/// in well under a second), and the call with its retries: short of API Gateway's 30 s.
const START_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// The API's connection test answers within this, the secret's read included: the HTTP API ends a
/// request at 30 s, and the trigger reads the connection's config first.
const CONNECTION_TEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(25);

/// The state machine port: Step Functions, or [`RecordedStarts`] where no AWS is at hand.
pub trait StateMachine: Send + Sync {
    /// Starts an execution named `name` with `input`; answers its ARN.
    fn start_execution<'a>(
        &'a self,
        name: &'a str,
        input: String,
    ) -> BoxFuture<'a, Result<String, StepError>>;

    /// The execution named `name`, if it was started.
    fn execution_named<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FoundExecution>, StepError>>;

    /// Whether the last Lambda task the execution's own states started (its plan, its finalize;
    /// not the Map's children) had not answered when its history ends: an execution stopped or
    /// timed out does not stop an invocation under way.
    fn task_left_running<'a>(&'a self, arn: &'a str) -> BoxFuture<'a, Result<bool, StepError>>;
}

/// An execution looked up by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundExecution {
    pub arn: String,
    /// Its status as Step Functions names it: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED,
    /// PENDING_REDRIVE.
    pub status: String,
    /// When it ended (seconds since the epoch).
    pub stopped_at: Option<i64>,
}

impl FoundExecution {
    /// Whether it runs no more states, unless it is redriven (RedriveExecution, within 14 days):
    /// a redriven run no longer holding its lock stops at its plan or finalize (`LostLock`), and
    /// its collects and transforms write only under its own keys. A redrive pending is running; a
    /// status this code does not know is taken as running, so no run is taken for ended that is
    /// not.
    pub fn has_ended(&self) -> bool {
        matches!(
            self.status.as_str(),
            "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "ABORTED"
        )
    }
}

/// The template's state machine, through the AWS SDK.
pub struct StepFunctions {
    pub client: aws_sdk_sfn::Client,
    pub state_machine_arn: String,
}

impl StateMachine for StepFunctions {
    fn start_execution<'a>(
        &'a self,
        name: &'a str,
        input: String,
    ) -> BoxFuture<'a, Result<String, StepError>> {
        Box::pin(async move {
            let output = self
                .client
                .start_execution()
                .state_machine_arn(&self.state_machine_arn)
                .name(name)
                .input(input)
                .send()
                .await
                .map_err(|e| {
                    StepError::StateMachine(aws_sdk_sfn::error::DisplayErrorContext(&e).to_string())
                })?;
            Ok(output.execution_arn().to_string())
        })
    }

    fn execution_named<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FoundExecution>, StepError>> {
        Box::pin(async move {
            // `arn:…:stateMachine:<machine>` names its executions `arn:…:execution:<machine>:<name>`.
            let arn = format!(
                "{}:{name}",
                self.state_machine_arn
                    .replacen(":stateMachine:", ":execution:", 1)
            );
            match self
                .client
                .describe_execution()
                .execution_arn(&arn)
                .send()
                .await
            {
                Ok(found) => Ok(Some(FoundExecution {
                    arn,
                    status: found.status().as_str().to_string(),
                    stopped_at: found.stop_date().map(|at| at.secs()),
                })),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_execution_does_not_exist()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(StepError::StateMachine(
                    aws_sdk_sfn::error::DisplayErrorContext(&e).to_string(),
                )),
            }
        })
    }

    fn task_left_running<'a>(&'a self, arn: &'a str) -> BoxFuture<'a, Result<bool, StepError>> {
        Box::pin(async move {
            // The newest 100 events (the execution's own states are a handful; its Map's
            // children keep histories of their own).
            let history = self
                .client
                .get_execution_history()
                .execution_arn(arn)
                .reverse_order(true)
                .max_results(100)
                .send()
                .await
                .map_err(|e| {
                    StepError::StateMachine(aws_sdk_sfn::error::DisplayErrorContext(&e).to_string())
                })?;
            Ok(task_may_run(history.events()))
        })
    }
}

/// Whether a Lambda task among `events` may still be running: the last one (the task event of
/// the highest id, whatever their order) started and not answered, or any answered by Step
/// Functions rather than by the function (a state's timeout, a failed call to Lambda: the
/// invocation goes on, while Step Functions retries the task) within [`LONGEST_INVOCATION`] of the
/// newest event (one older has ended; an invocation throttled never ran). A failure the function
/// returned (its error type), or Lambda's ending it (`Sandbox.Timedout`, `Runtime.*`), ends it.
/// No task event among them: it may.
fn task_may_run(events: &[aws_sdk_sfn::types::HistoryEvent]) -> bool {
    use aws_sdk_sfn::types::HistoryEventType as Event;
    let newest = events.iter().map(|e| e.timestamp().secs()).max();
    let recent = |event: &aws_sdk_sfn::types::HistoryEvent| {
        newest.is_none_or(|newest| {
            newest - event.timestamp().secs() < LONGEST_INVOCATION.as_secs() as i64
        })
    };
    let tasks: Vec<(i64, bool, bool)> = events
        .iter()
        .filter_map(|event| {
            // (its id, whether its task may run while nothing later answers it, whether it may
            // run whatever comes later)
            let (pending, unanswered) = match event.r#type() {
                Event::TaskSucceeded | Event::TaskStartFailed => (false, false),
                Event::TaskFailed => {
                    let error = event
                        .task_failed_event_details()
                        .and_then(|failed| failed.error());
                    let lost = error.is_none_or(|error| {
                        (error.starts_with("Lambda.") || error.starts_with("States."))
                            && error != "Lambda.TooManyRequestsException"
                    });
                    (lost, lost)
                }
                Event::TaskSubmitFailed | Event::TaskTimedOut => (true, true),
                Event::TaskScheduled | Event::TaskStarted | Event::TaskSubmitted => (true, false),
                _ => return None,
            };
            // An invocation begun longer ago than one lasts has ended.
            let recent = recent(event);
            let (pending, unanswered) = (pending && recent, unanswered && recent);
            Some((event.id(), pending, unanswered))
        })
        .collect();
    let last_pending = tasks
        .iter()
        .max_by_key(|(id, ..)| *id)
        .is_none_or(|(_, pending, _)| *pending);
    last_pending || tasks.iter().any(|(.., unanswered)| *unanswered)
}

/// An execution a [`RecordedStarts`] was asked to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStart {
    pub name: String,
    pub input: String,
}

/// How a recorded execution ended.
#[derive(Clone, Debug)]
struct RecordedEnd {
    status: String,
    stopped_at: i64,
    task_running: bool,
}

/// Keeps the executions it is asked to start, or refuses the next one as Step Functions may
/// (throttled, access denied), or starts it and loses the answer (every retry of the call cut
/// off); for tests that run without AWS.
#[derive(Debug, Default)]
pub struct RecordedStarts {
    starts: std::sync::Mutex<Vec<RecordedStart>>,
    refusal: std::sync::Mutex<Option<String>>,
    answer_lost: std::sync::atomic::AtomicBool,
    /// Executions ended by [`end`](Self::end).
    ended: std::sync::Mutex<HashMap<String, RecordedEnd>>,
    lookup_refusal: std::sync::Mutex<Option<String>>,
}

impl RecordedStarts {
    pub fn starts(&self) -> Vec<RecordedStart> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next start fails with `problem` (and starts nothing).
    pub fn refuse_next(&self, problem: impl Into<String>) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem.into());
    }

    /// The next start starts its execution, then fails as a call whose answer never came.
    pub fn lose_next_answer(&self) {
        self.answer_lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The execution named `name` ends with `status` (an operator stopped it: ABORTED), `ago`
    /// before now, with every task answered or one still running.
    pub fn end(&self, name: &str, status: &str, ago: std::time::Duration, task_running: bool) {
        let end = RecordedEnd {
            status: status.to_string(),
            stopped_at: jiff::Timestamp::now().as_second() - ago.as_secs() as i64,
            task_running,
        };
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), end);
    }

    fn end_of(&self, name: &str) -> Option<RecordedEnd> {
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.get(name).cloned()
    }

    /// The next lookup of an execution fails with `problem`.
    pub fn refuse_next_lookup(&self, problem: impl Into<String>) {
        *self
            .lookup_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(problem.into());
    }
}

impl StateMachine for RecordedStarts {
    fn start_execution<'a>(
        &'a self,
        name: &'a str,
        input: String,
    ) -> BoxFuture<'a, Result<String, StepError>> {
        let refusal = self
            .refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let answer = match refusal {
            Some(problem) => Err(StepError::StateMachine(problem)),
            None => {
                self.starts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(RecordedStart {
                        name: name.to_string(),
                        input,
                    });
                if self
                    .answer_lost
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    Err(StepError::StateMachine(
                        "dispatch failure: timeout: the answer never came (StartExecution)".into(),
                    ))
                } else {
                    Ok(recorded_arn(name))
                }
            }
        };
        Box::pin(std::future::ready(answer))
    }

    fn execution_named<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<FoundExecution>, StepError>> {
        let refusal = self
            .lookup_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let started = self.starts().iter().any(|start| start.name == name);
        let end = self.end_of(name);
        let answer = match refusal {
            Some(problem) => Err(StepError::StateMachine(problem)),
            None => Ok(started.then(|| FoundExecution {
                arn: recorded_arn(name),
                status: end.as_ref().map_or("RUNNING", |e| &e.status).to_string(),
                stopped_at: end.map(|e| e.stopped_at),
            })),
        };
        Box::pin(std::future::ready(answer))
    }

    fn task_left_running<'a>(&'a self, arn: &'a str) -> BoxFuture<'a, Result<bool, StepError>> {
        let name = arn.rsplit(':').next().unwrap_or_default();
        let running = self.end_of(name).is_none_or(|end| end.task_running);
        Box::pin(std::future::ready(Ok(running)))
    }
}

fn recorded_arn(name: &str) -> String {
    format!("arn:aws:states:memory:000000000000:execution:recorded:{name}")
}

/// What a config may ask of a run on one machine but not of the functions on AWS, checked before
/// anything in it is read: a credential from the function's environment or files
/// (`env:AWS_SECRET_ACCESS_KEY` would hand the role's own keys to whatever host the config names),
/// and a CA bundle from anywhere but what was deployed with it (`/dev/zero`, `/proc/...`).
pub fn refused_on_aws(config: &ConnectionConfig) -> Vec<FieldError> {
    let mut refused = Vec::new();
    if let Ok(SecretRef::Env(_) | SecretRef::File(_)) = config.secret.parse::<SecretRef>() {
        refused.push(FieldError::new(
            "secret",
            "on AWS the credential is read from Secrets Manager only: give the secret's ARN (or secretsmanager:NAME), not env: or file:",
        ));
    }
    let packaged = |path: &std::path::Path| {
        let deployed = path.starts_with("/opt") || path.starts_with("/var/task");
        deployed
            && path
                .components()
                .all(|c| c != std::path::Component::ParentDir)
    };
    if config
        .vendor
        .ca_bundle
        .as_deref()
        .is_some_and(|path| !packaged(path))
    {
        refused.push(FieldError::new(
            "vendor.ca_bundle",
            "on AWS a CA bundle is read only from what was deployed with the function: a file of a Lambda layer (/opt/...) or of the package (/var/task/...); give such a path, or remove ca_bundle",
        ));
    }
    refused
}

/// The host an entry of [`VendorHosts::listed`] names, if it is one: a name, an IPv4 or IPv6
/// address, with a port or without.
fn host_of_entry(entry: &str) -> Option<&str> {
    let (host, port) = match entry.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']')?;
            match after {
                "" => (address, None),
                _ => (address, Some(after.strip_prefix(':')?)),
            }
        }
        None if entry.matches(':').count() == 1 => {
            let (host, port) = entry.split_once(':')?;
            (host, Some(port))
        }
        None => (entry, None),
    };
    let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    let address = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
    let host_ok = !host.is_empty()
        && (host.chars().all(name) || (host.contains(':') && host.chars().all(address)));
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    (host_ok && port_ok).then_some(host)
}

/// A host as [`VendorHosts`] compares it: lower case, without a trailing dot, an IPv6 address
/// without brackets.
fn normal_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `config` validated for the functions: what they refuse ([`refused_on_aws`]) before anything
/// in it is read, and a host `hosts` does not allow.
fn validated_on_aws(
    config: ConnectionConfig,
    hosts: &VendorHosts,
) -> Result<Connection, Vec<FieldError>> {
    let refused = refused_on_aws(&config);
    if !refused.is_empty() {
        return Err(refused);
    }
    let connection = config.validate()?;
    match hosts.refused(&connection) {
        refused if refused.is_empty() => Ok(connection),
        refused => Err(refused),
    }
}

/// What the four functions share for the life of the process: the store, the Secrets Manager and
/// state machine ports, and the connections loaded so far. Generic over the store so the same
/// tasks run on S3 in Lambda and on a memory store in tests.
pub struct Runtime<S> {
    pub store: S,
    secrets_manager: Arc<dyn SecretsManager>,
    state_machine: Option<Arc<dyn StateMachine>>,
    max_concurrency: u32,
    vendor_hosts: VendorHosts,
    /// How long the API's connection test may take ([`CONNECTION_TEST_LIMIT`]).
    connection_test_limit: std::time::Duration,
    /// Per connection: what was loaded from its config's bytes last.
    connections: tokio::sync::Mutex<HashMap<String, Arc<LoadedConnection>>>,
}

impl Runtime<S3Store> {
    /// Clients from the Lambda's own AWS configuration.
    pub async fn from_env(env: &FunctionEnv) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store = S3Store::from_sdk_config(&config, &env.bucket, "");
        let state_machine = env.state_machine_arn.clone().map(|arn| {
            // An answer that never comes must fail the call while the API's caller still waits
            // (API Gateway gives up at 30 s), for the start to be looked up by name.
            let timeouts = aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(START_ATTEMPT_TIMEOUT)
                .operation_timeout(START_TIMEOUT)
                .build();
            let sfn = aws_sdk_sfn::config::Builder::from(&config)
                .timeout_config(timeouts)
                .build();
            Arc::new(StepFunctions {
                client: aws_sdk_sfn::Client::from_conf(sfn),
                state_machine_arn: arn,
            }) as Arc<dyn StateMachine>
        });
        Self::new(
            store,
            Arc::new(crate::secret::secrets_manager_client(&config)),
            state_machine,
        )
        .with_max_concurrency(env.max_concurrency)
        .with_vendor_hosts(env.vendor_hosts.clone())
    }
}

impl<S: BucketStore> Runtime<S> {
    pub fn new(
        store: S,
        secrets_manager: Arc<dyn SecretsManager>,
        state_machine: Option<Arc<dyn StateMachine>>,
    ) -> Self {
        Self {
            store,
            secrets_manager,
            state_machine,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            vendor_hosts: VendorHosts::default(),
            connection_test_limit: CONNECTION_TEST_LIMIT,
            connections: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// How long the connection test may take, the secret's read included (25 s by default: API
    /// Gateway ends a request at 30 s).
    pub fn with_connection_test_limit(self, connection_test_limit: std::time::Duration) -> Self {
        Self {
            connection_test_limit,
            ..self
        }
    }

    /// The hosts beyond the regions' a connection may name (none by default).
    pub fn with_vendor_hosts(self, vendor_hosts: VendorHosts) -> Self {
        Self {
            vendor_hosts,
            ..self
        }
    }

    /// The Distributed Map's concurrency the trigger hands the state machine.
    pub fn with_max_concurrency(self, max_concurrency: u32) -> Self {
        Self {
            max_concurrency,
            ..self
        }
    }

    /// Stores the config a schedule carries (the stack's parameters) as
    /// `connections/<id>/config.json` when the connection has none, or replaces the one an
    /// earlier tick stored when the parameters changed since (a redeploy that corrects the tenant,
    /// region or secret). A config put otherwise (`cxone-etm connection put`, a custom map and
    /// scoring) is the source of truth: never replaced by a schedule.
    pub async fn register_from_schedule(
        &self,
        id: &str,
        config: ConnectionConfig,
    ) -> Result<ScheduleConfig, StepError> {
        if config.id != id {
            return Err(StepError::BadEvent {
                what: "schedule".into(),
                problem: format!(
                    "the event names connection '{id}' but carries the config of '{}'",
                    config.id
                ),
            });
        }
        let body =
            bytes::Bytes::from(serde_json::to_vec_pretty(&config).expect("configs serialize"));
        let kept = |stored: &[u8]| ScheduleConfig::Kept {
            differs_in: where_it_points_otherwise(stored, &config),
        };
        let connection =
            validated_on_aws(config.clone(), &self.vendor_hosts).map_err(|errors| {
                StepError::BadConfig {
                    source_name: format!("connection '{id}'"),
                    errors,
                }
            })?;
        let (key, from_schedule) = (config_key(id), schedule_config_key(id));
        // The schedule's copy first where the config is new: a tick cut off between the two
        // writes leaves a config equal to the event's, whose copy the next tick writes.
        let Some((stored, version)) = self.store.get_versioned(&key).await? else {
            self.store.put(&from_schedule, body.clone()).await?;
            if self.store.put_if_absent(&key, body).await? {
                record_registration(&self.store, id, connection.schedule.is_some()).await?;
                return Ok(ScheduleConfig::Stored);
            }
            let put = self.store.get(&key).await?.unwrap_or_default();
            return Ok(kept(&put));
        };
        let copy = self.store.get(&from_schedule).await?;
        if stored == body {
            if copy.as_ref() != Some(&body) {
                self.store.put(&from_schedule, body).await?;
            }
            return Ok(ScheduleConfig::Unchanged);
        }
        // Replaced only while it is still the config read: a `cxone-etm connection put` landing
        // since stands.
        if copy.as_ref() != Some(&stored)
            || !self
                .store
                .put_if_unchanged(&key, body.clone(), &version)
                .await?
        {
            return Ok(kept(&stored));
        }
        self.store.put(&from_schedule, body).await?;
        Ok(ScheduleConfig::Replaced)
    }

    /// The stored config of connection `id` (`connections/<id>/config.json`): its bytes, and the
    /// connection checked and compiled from them.
    async fn stored(&self, id: &str) -> Result<(bytes::Bytes, Connection), StepError> {
        // An id from an API path or an event, checked before it becomes a key.
        checked_id("connection id", id)?;
        let key = config_key(id);
        let text = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| StepError::NotConfigured {
                connection_id: id.to_string(),
                key: key.clone(),
            })?;
        self.compiled(id, &key, text)
    }

    /// The config `run` began with ([`RunRef::config`]); for a run begun before runs kept
    /// theirs, the stored one.
    async fn run_config(&self, run: &RunRef) -> Result<(bytes::Bytes, Connection), StepError> {
        checked_run(run)?;
        match self.store.get(&run.config()).await? {
            Some(text) => self.compiled(&run.connection_id, &run.config(), text),
            None => self.stored(&run.connection_id).await,
        }
    }

    /// Connection `id` checked and compiled from the config bytes stored at `key`.
    fn compiled(
        &self,
        id: &str,
        key: &str,
        text: bytes::Bytes,
    ) -> Result<(bytes::Bytes, Connection), StepError> {
        let bad_config = |errors: Vec<FieldError>| StepError::BadConfig {
            source_name: key.to_string(),
            errors,
        };
        // The same reading as every other config document: field paths named, trailing text refused.
        let document = std::str::from_utf8(&text)
            .map_err(|e| bad_config(vec![FieldError::document(format!("not UTF-8 ({e})"))]))?;
        let config = ConnectionConfig::parse(document).map_err(&bad_config)?;
        let connection = validated_on_aws(config, &self.vendor_hosts).map_err(bad_config)?;
        if connection.config.id != id {
            return Err(bad_config(vec![FieldError::new(
                "id",
                format!(
                    "'{}' is not the connection stored under this key ('{id}'); delete {key}, or put a config whose id is '{id}'",
                    connection.config.id
                ),
            )]));
        }
        Ok((text, connection))
    }

    /// Where the connection's credential is read, through this function's Secrets Manager port.
    async fn secret_source(&self, connection: &Connection) -> SecretSource {
        match &connection.secret {
            SecretRef::SecretsManager(secret_id) => {
                SecretSource::with_secrets_manager(secret_id.clone(), self.secrets_manager.clone())
            }
            other => SecretSource::new(other.clone()).await,
        }
    }

    /// The connection `id` with its vendor client, from its stored config.
    pub async fn connection(&self, id: &str) -> Result<Arc<LoadedConnection>, StepError> {
        let (text, connection) = self.stored(id).await?;
        self.loaded(id, text, connection).await
    }

    /// The connection of `run` with its vendor client, from the config the run began with.
    pub async fn run_connection(&self, run: &RunRef) -> Result<Arc<LoadedConnection>, StepError> {
        let (text, connection) = self.run_config(run).await?;
        self.loaded(&run.connection_id, text, connection).await
    }

    /// The connection of `run` as it began, without its credential (for steps that call no
    /// vendor).
    pub async fn run_connection_config(&self, run: &RunRef) -> Result<Connection, StepError> {
        Ok(self.run_config(run).await?.1)
    }

    /// A connection with its vendor client, loaded once per process for the same config bytes.
    /// The config is read on every invocation (one small GET): a warm instance takes a changed
    /// config (`cxone-etm connection put`) for the next run at once, and keeps its vendor client
    /// and token while the config is the same.
    async fn loaded(
        &self,
        id: &str,
        text: bytes::Bytes,
        connection: Connection,
    ) -> Result<Arc<LoadedConnection>, StepError> {
        let mut cache = self.connections.lock().await;
        if let Some(loaded) = cache.get(id).filter(|loaded| loaded.config == text) {
            return Ok(loaded.clone());
        }
        let secret = self.secret_source(&connection).await;
        let vendor = VendorAccess::new(connection.vendor.clone(), secret).await?;
        let loaded = Arc::new(LoadedConnection {
            connection,
            vendor,
            config: text,
        });
        cache.insert(id.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// Connection `id`'s state and next scheduled run.
    pub async fn status(&self, id: &str) -> Result<ConnectionStatus, StepError> {
        let (_, connection) = self.stored(id).await?;
        connection_status(&self.store, &connection, jiff::Timestamp::now()).await
    }

    /// The five checks of connection `id`: always a report, whatever the credential (a secret
    /// that cannot be read, a key issued for another tenant) — those fail the credential check —
    /// and within its limit ([`CONNECTION_TEST_LIMIT`]), however slow the tenant or Secrets Manager.
    pub async fn check_connection(&self, id: &str) -> Result<ConnectionReport, StepError> {
        let (_, connection) = self.stored(id).await?;
        // The secret's read counts in the limit: Secrets Manager's client may wait longer.
        let started = tokio::time::Instant::now();
        let read = async {
            let source = self.secret_source(&connection).await;
            source.credential().await.map_err(|e| e.to_string())
        };
        // Four fifths of the limit: the checks before the credential's (network, TLS) keep time
        // to answer, so the report gets to the credential's and says what kept it.
        let limit = self.connection_test_limit;
        let for_the_secret = limit * 4 / 5;
        let credential = tokio::time::timeout_at(started + for_the_secret, read)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the secret was not given within {} s (of the {} s this test may take)",
                    for_the_secret.as_secs_f64(),
                    limit.as_secs_f64()
                ))
            });
        Ok(test_connection_until(
            &connection.vendor,
            credential,
            connection.run_calls(),
            started,
            limit,
        )
        .await)
    }
}

/// What [`Runtime::register_from_schedule`] did with the config a schedule's tick carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleConfig {
    /// The connection had none: stored.
    Stored,
    /// The stored config was the one an earlier tick stored, and the stack's parameters changed
    /// since: replaced.
    Replaced,
    /// The stored config is the parameters' own.
    Unchanged,
    /// The stored config was put otherwise (`cxone-etm connection put`) and differs from the
    /// stack's parameters: kept, the source of truth. `differs_in`: which of the settings the
    /// stack's parameters give (`kind`, `tenant`, `region`, `secret`, `concurrency`,
    /// `results_page_size`) it holds otherwise (a redeploy meant for it that it does not take);
    /// empty where it differs in settings the stack does not give alone (a map, engines,
    /// filters), as a put config is meant to.
    Kept { differs_in: Vec<&'static str> },
}

/// Whether two secret references name one secret: an ARN's partition, region and account where
/// both are ARNs, and the name either gives, an ARN's with or without the six characters Secrets
/// Manager adds to a full ARN (a name, or a partial ARN beside a full one, carries none).
fn same_secret(a: &str, b: &str) -> bool {
    let ((a_at, a_name), (b_at, b_name)) = (secret_place(a), secret_place(b));
    if let (Some(a_at), Some(b_at)) = (a_at, b_at)
        && a_at != b_at
    {
        return false;
    }
    let unsuffixed = |at: Option<&str>, name| at.map(|_| without_arn_suffix(name));
    a_name == b_name
        || unsuffixed(a_at, a_name) == Some(b_name)
        || unsuffixed(b_at, b_name) == Some(a_name)
}

/// Where an ARN places a secret (`arn:PARTITION:secretsmanager:REGION:ACCOUNT`), if it is one
/// (as itself or after `secretsmanager:`), and the name it gives.
fn secret_place(secret: &str) -> (Option<&str>, &str) {
    let secret = secret.strip_prefix("secretsmanager:").unwrap_or(secret);
    match secret.split_once(":secret:") {
        Some((at, name)) if at.starts_with("arn:") => (Some(at), name),
        _ => (None, secret),
    }
}

/// A name without the `-` and six letters or digits a full ARN ends in.
fn without_arn_suffix(name: &str) -> &str {
    name.rsplit_once('-')
        .filter(|(_, suffix)| {
            suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map_or(name, |(name, _)| name)
}

/// Which settings the stack's parameters give (`stack`) the stored config (`stored`, its bytes)
/// holds otherwise: the kind, tenant, region (or its own URLs), secret (an ARN and
/// `secretsmanager:NAME` may name one secret: [`same_secret`]), the vendor's concurrency and
/// SAST's page size; case aside where the vendor reads none. A config that cannot be read is said to differ in all of them.
fn where_it_points_otherwise(stored: &[u8], stack: &ConnectionConfig) -> Vec<&'static str> {
    const ALL: [&str; 6] = [
        "kind",
        "tenant",
        "region",
        "secret",
        "concurrency",
        "results_page_size",
    ];
    let Ok(stored) = serde_json::from_slice::<ConnectionConfig>(stored) else {
        return ALL.to_vec();
    };
    let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    };
    let (ours, theirs) = (&stored.vendor, &stack.vendor);
    [
        ("kind", stored.kind == stack.kind),
        ("tenant", ours.tenant.eq_ignore_ascii_case(&theirs.tenant)),
        (
            "region",
            same(&ours.region, &theirs.region)
                && same(&ours.custom_api_url, &theirs.custom_api_url)
                && same(&ours.custom_iam_url, &theirs.custom_iam_url),
        ),
        ("secret", same_secret(&stored.secret, &stack.secret)),
        ("concurrency", ours.concurrency == theirs.concurrency),
        // The stack gives a page size to its SAST connection alone (DAST pages its own way).
        (
            "results_page_size",
            stack.kind != crate::ConnectorKind::Sast
                || ours.results_page_size == theirs.results_page_size,
        ),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(field, _)| field)
    .collect()
}

/// What the trigger hands the state machine and answers its caller. The state machine plans the
/// run itself (its first state, [`plan_task`]), so the counts are there only where the trigger
/// planned at once: with no state machine to start (`cargo lambda watch`, tests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedRun {
    pub run: RunRef,
    pub bucket: String,
    /// The work list's key in the bucket (the plan writes it; the Distributed Map reads it).
    pub work_list_key: String,
    /// The Distributed Map's MaxConcurrency (`MaxConcurrencyPath`).
    pub max_concurrency: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<PlannedRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_arn: Option<String>,
}

/// What a run's plan wrote: its items and the work list's lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRun {
    pub run: RunRef,
    pub items: u64,
    /// The work list's lines: the Distributed Map's children, each a group of items.
    pub child_executions: u64,
}

/// The state machine's first state: plan the run the trigger started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanInput {
    pub run: RunRef,
}

/// Trigger: lock, register, and start the state machine, which plans the run as its first state:
/// the answer comes before any vendor call (an API caller waits at most 30 s; listing a tenant of
/// thousands of projects can take longer). Without a state machine the run is planned at once.
/// A scheduled run passes the schedule its event carries: it is what fires the connection (the
/// template's, with the dates of the stack's last update), so its dates apply, not the stored
/// config's.
pub async fn start_run(
    runtime: &Runtime<impl BucketStore>,
    connection_id: &str,
    trigger: Trigger,
    event_schedule: Option<Schedule>,
) -> Result<StartedRun, StepError> {
    let loaded = runtime.connection(connection_id).await?;
    let event_schedule = event_schedule.and_then(|s| s.parse().ok().map(|parsed| (s, parsed)));
    let window = event_schedule
        .as_ref()
        .map(|(_, parsed)| parsed)
        .or(loaded.connection.schedule.as_ref());
    if trigger == Trigger::Schedule
        && let Some(problem) = window.and_then(|s| s.refuses(jiff::Timestamp::now()))
    {
        return Err(StepError::OutsideSchedule {
            connection_id: connection_id.to_string(),
            problem,
        });
    }
    let run = take_lock(runtime, connection_id, trigger).await?;
    let started = async {
        // The run's steps read the config it began with, whatever is put meanwhile.
        runtime
            .store
            .put(&run.config(), loaded.config.clone())
            .await?;
        if let Some((schedule, _)) = event_schedule {
            record_event_schedule(&runtime.store, connection_id, schedule).await?;
        }
        let mut started = StartedRun {
            work_list_key: runtime.store.full_key(&run.work_list()),
            max_concurrency: runtime.max_concurrency,
            bucket: runtime.store.bucket().to_string(),
            run: run.clone(),
            planned: None,
            execution_arn: None,
        };
        match &runtime.state_machine {
            Some(state_machine) => {
                let input = serde_json::to_string(&started).expect("serializes");
                let name = execution_name(&run);
                let arn = match state_machine.start_execution(&name, input).await {
                    Ok(arn) => arn,
                    // The call may have started the execution and lost only its answer: then
                    // the run is under way, and failing it would leave its execution running.
                    Err(error) => match state_machine.execution_named(&name).await {
                        Ok(Some(found)) => {
                            tracing::warn!(run = %run.run_id, %error, status = %found.status, "the start's answer was lost; its execution was found by name");
                            found.arn
                        }
                        Ok(None) => return Err(error),
                        Err(lookup) => {
                            tracing::warn!(run = %run.run_id, %lookup, "the start failed, and whether it started its execution cannot be told");
                            return Err(error);
                        }
                    },
                };
                started.execution_arn = Some(arn);
            }
            None => started.planned = Some(plan_run(runtime, &loaded, &run).await?),
        }
        Ok::<_, StepError>(started)
    }
    .await;
    if let Err(error) = &started
        && let Err(unrecorded) = fail_run(&runtime.store, &run, &error.to_string()).await
    {
        // The start's own error is answered; this one would leave its lock unexplained.
        tracing::error!(run = %run.run_id, %unrecorded, "could not record the run failed: its lock stays until it is taken over");
    }
    started
}

/// A Lambda invocation runs at most 15 minutes (every function's Timeout is at most Lambda's
/// limit), and a minute more for the clocks: this long after an execution ended, no task it
/// started can still write; this long after a trigger took a lock, it has started the run's
/// execution or never will.
const LONGEST_INVOCATION: std::time::Duration = std::time::Duration::from_secs(16 * 60);

/// Takes the connection's lock for a new run ([`begin_run`]). While another run holds it, asks
/// Step Functions about that run's execution: one that ended without releasing the lock (stopped
/// by an operator, timed out: no Catch runs then) would keep every start refused until the lease
/// ran out, so its lock is taken over and its run marked Failed, once no task of it can still be
/// running. So is the lock of a run whose execution was never started, once the trigger that
/// took it has ended (cut off or dead between its lock and its start). Anything else keeps the
/// refusal: an execution running, one not found while its trigger may still start it, a local
/// run's lock, a lookup that fails.
async fn take_lock(
    runtime: &Runtime<impl BucketStore>,
    connection_id: &str,
    trigger: Trigger,
) -> Result<RunRef, StepError> {
    let lease = crate::pipeline::LOCK_LEASE;
    let refused = match begin_run(&runtime.store, connection_id, trigger, lease).await {
        Err(refused @ StepError::AlreadyRunning { .. }) => refused,
        taken => return taken,
    };
    let (Some(state_machine), StepError::AlreadyRunning { run_id, .. }) =
        (&runtime.state_machine, &refused)
    else {
        return Err(refused);
    };
    let holder = RunRef {
        connection_id: connection_id.to_string(),
        run_id: run_id.clone(),
    };
    let Some(ended) = ended_holder(&runtime.store, state_machine.as_ref(), holder).await else {
        return Err(refused);
    };
    tracing::warn!(connection = connection_id, holder = %ended.run_id, end = %ended.end, "the run holding the lock runs no more; its lock is taken over");
    begin_run_recovering(&runtime.store, connection_id, trigger, lease, &ended).await
}

/// `holder`, when it runs no more and no task it started can still be running: its execution
/// has ended and every task it started had answered, or it ended [`LONGEST_INVOCATION`] ago (a plan or
/// finalize still running could otherwise commit beside the next run, or delete its lock); or it
/// has no execution, and the trigger that took its lock has ended ([`never_started_holder`]).
async fn ended_holder(
    store: &impl BucketStore,
    state_machine: &dyn StateMachine,
    holder: RunRef,
) -> Option<EndedHolder> {
    let found = match state_machine
        .execution_named(&execution_name(&holder))
        .await
    {
        Ok(Some(found)) if found.has_ended() => found,
        Ok(Some(_)) => return None,
        Ok(None) => {
            return never_started_holder(store, holder, LONGEST_INVOCATION)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "whether the run holding the lock was ever started cannot be told");
                    None
                });
        }
        Err(lookup) => {
            tracing::warn!(holder = %holder.run_id, %lookup, "whether the run holding the lock still runs cannot be told");
            return None;
        }
    };
    let quiet_from = found
        .stopped_at
        .map(|at| at + LONGEST_INVOCATION.as_secs() as i64);
    if quiet_from.is_none_or(|at| at > jiff::Timestamp::now().as_second()) {
        match state_machine.task_left_running(&found.arn).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(holder = %holder.run_id, status = %found.status, quiet_from, "the run holding the lock ended while a task of it ran; its lock is taken over once that task cannot be running");
                return None;
            }
            Err(lookup) => {
                tracing::warn!(holder = %holder.run_id, %lookup, "whether a task of the ended run holding the lock still runs cannot be told");
                return None;
            }
        }
    }
    Some(EndedHolder {
        run_id: holder.run_id,
        end: HolderEnd::ExecutionEnded(found.status),
    })
}

/// The state machine's first state: plans the run the trigger started (see [`plan`]). A plan that
/// fails for good is caught by the state machine, which marks the run Failed and releases its lock
/// (finalize with [`FinalizeInput::failure`]).
pub async fn plan_task(
    runtime: &Runtime<impl BucketStore>,
    input: PlanInput,
) -> Result<PlannedRun, StepError> {
    checked_run(&input.run)?;
    let loaded = runtime.run_connection(&input.run).await?;
    plan_run(runtime, &loaded, &input.run).await
}

async fn plan_run(
    runtime: &Runtime<impl BucketStore>,
    loaded: &LoadedConnection,
    run: &RunRef,
) -> Result<PlannedRun, StepError> {
    let groups = plan(
        &runtime.store,
        &loaded.vendor,
        &loaded.connection,
        run,
        runtime.max_concurrency as usize,
    )
    .await?;
    Ok(PlannedRun {
        run: run.clone(),
        // The parts of a split scan are one item.
        items: groups
            .iter()
            .flat_map(|g| &g.items)
            .filter(|i| i.part.as_ref().is_none_or(|p| p.index == 0))
            .count() as u64,
        child_executions: groups.len() as u64,
    })
}

/// StartExecution's name for a run: `<connection>-<run>`, unique per run, within the 80 characters
/// and the characters Step Functions allows. A connection id too long to fit is cut and followed
/// by 8 hex digits of its SHA-256, so two long ids never share a name.
pub fn execution_name(run: &RunRef) -> String {
    const LIMIT: usize = 80;
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let (connection, run_id) = (clean(&run.connection_id), clean(&run.run_id));
    let whole = format!("{connection}-{run_id}");
    if whole.len() <= LIMIT {
        return whole;
    }
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(run.connection_id.as_bytes())[..4]);
    let room = LIMIT.saturating_sub(run_id.len() + digest.len() + 2);
    format!(
        "{}-{digest}-{run_id}",
        &connection[..room.min(connection.len())]
    )
}

/// Trigger (API): a run's record, its manifest's headline once committed, and its connection's
/// status.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub run: RunRecord,
    /// Whether its commit marker is written: only then is its manifest the run's.
    pub committed: bool,
    /// The connection's status; absent when its config can no longer be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_by_status: Option<std::collections::BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<u64>,
}

/// An id from outside (an API path, an event) that is to become a key segment.
fn checked_id(what: &str, id: &str) -> Result<(), StepError> {
    check_key_segment(id).map_err(|problem| StepError::BadEvent {
        what: what.to_string(),
        problem,
    })
}

/// A run named by an event or an API path, both its ids checked before they become keys.
fn checked_run(run: &RunRef) -> Result<(), StepError> {
    checked_id("connection id", &run.connection_id)?;
    checked_id("run id", &run.run_id)
}

/// A group's run: every item of a group is of one run, whose ids are checked.
fn group_run(group: &WorkGroup) -> Result<Option<&RunRef>, StepError> {
    let Some(first) = group.items.first() else {
        return Ok(None);
    };
    if let Some(other) = group.items.iter().find(|item| item.run != first.run) {
        return Err(StepError::BadEvent {
            what: "group".into(),
            problem: format!(
                "its items are of runs {} and {}; a group is one run's",
                first.run.run_id, other.run.run_id
            ),
        });
    }
    checked_run(&first.run)?;
    // A part the plan could not have made (an event built by hand): its count sizes what the
    // join reads and holds.
    if let Some(problem) = group.items.iter().find_map(|item| {
        Some(format!(
            "item {}: {}",
            item.item,
            item.part.as_ref()?.problem()?
        ))
    }) {
        return Err(StepError::BadEvent {
            what: "group".into(),
            problem,
        });
    }
    Ok(Some(&first.run))
}

pub async fn show_run(
    runtime: &Runtime<impl BucketStore>,
    connection_id: &str,
    run_id: &str,
) -> Result<Option<RunView>, StepError> {
    let run = RunRef {
        connection_id: connection_id.to_string(),
        run_id: run_id.to_string(),
    };
    checked_run(&run)?;
    let Some(record) = runtime.store.get(&run.run_record()).await? else {
        return Ok(None);
    };
    let record: RunRecord =
        serde_json::from_slice(&record).map_err(|e| StepError::bad_object(&run.run_record(), e))?;
    // A manifest is the run's only once its commit marker is written: finalize writes it before
    // the marker, and a finalize cut off between the two leaves one that was never committed.
    let committed = runtime.store.get(&run.commit_marker()).await?.is_some();
    let manifest: Option<Manifest> = match committed {
        true => (runtime.store.get(&run.manifest()).await?)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
        false => None,
    };
    Ok(Some(RunView {
        run: record,
        committed,
        connection: runtime.status(connection_id).await.ok(),
        complete: manifest.as_ref().map(|m| m.complete),
        items_by_status: manifest.as_ref().map(|m| m.items_by_status.clone()),
        findings: manifest.map(|m| m.totals.findings_out),
    }))
}

/// One item's collect: its status and what it fetched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectTaskOutput {
    pub item: String,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub records: u64,
    /// Vendor requests retried while collecting this item.
    #[serde(default)]
    pub retries: u64,
}

/// Collect's answer for a child's group: each finished item, in order. The state machine keeps
/// the group (its input) for transform, which reads each item's outcome from the bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectGroupOutput {
    pub items: Vec<CollectTaskOutput>,
}

/// Collects a child's group of items, one after another (see [`collect_group`]).
pub async fn collect_task(
    runtime: &Runtime<impl BucketStore>,
    group: WorkGroup,
    time: TimeBudget,
) -> Result<CollectGroupOutput, StepError> {
    let Some(run) = group_run(&group)? else {
        return Ok(CollectGroupOutput { items: Vec::new() });
    };
    let loaded = runtime.run_connection(run).await?;
    let (done, unfinished) = collect_group(
        &runtime.store,
        &loaded.vendor,
        &loaded.connection,
        &group.items,
        time.items_before(group.deadlines.map(|d| d.collect_before)),
    )
    .await;
    if let Some(error) = unfinished {
        return Err(error);
    }
    let items = done
        .into_iter()
        .map(|outcome: CollectOutcome| CollectTaskOutput {
            records: outcome.records_fetched(),
            status: outcome.status,
            reason: outcome.reason,
            retries: outcome.traffic.retries,
            item: outcome.item,
        })
        .collect();
    Ok(CollectGroupOutput { items })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformTaskOutput {
    pub item: String,
    pub findings: u64,
    pub rejected: u64,
    pub objects: u64,
    /// Why the item could not be transformed (see [`transform`](crate::pipeline::transform)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// The invocation's time for a group's items: until its deadline (milliseconds since the epoch in
/// the Lambda context; 0, as in a hand-made context, is no deadline).
pub fn time_budget(context: &lambda_runtime::Context) -> TimeBudget {
    let deadline = (context.deadline > 0)
        .then(|| std::time::UNIX_EPOCH + std::time::Duration::from_millis(context.deadline));
    TimeBudget::until(deadline)
}

/// Transform's answer for a child's group: each transformed item, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformGroupOutput {
    pub items: Vec<TransformTaskOutput>,
}

/// Transforms a child's group of items, one after another (see [`transform_group`]).
pub async fn transform_task(
    runtime: &Runtime<impl BucketStore>,
    group: WorkGroup,
    time: TimeBudget,
) -> Result<TransformGroupOutput, StepError> {
    let Some(run) = group_run(&group)? else {
        return Ok(TransformGroupOutput { items: Vec::new() });
    };
    // The group's collect failed for good: each item it left without an outcome says why (else
    // finalize could say only that its collect did not finish).
    if let Some(failure) = &group.collect_error {
        record_uncollected(&runtime.store, &group.items, failure).await?;
    }
    // The group's transform failed for good: each item it left says why, and none is tried
    // again (what failed it, out of memory or of time, would fail it again). Nothing else is
    // read, the run's config neither, whose read may be what failed it.
    let done = match &group.transform_error {
        Some(failure) => record_untransformed(&runtime.store, &group.items, failure).await?,
        None => {
            // The transform calls no vendor: it reads the config, never the credential, so a
            // secret deleted or broken during the run cannot fail the run's transforms.
            let connection = runtime.run_connection_config(run).await?;
            let time = time.items_before(group.deadlines.map(|d| d.transform_before));
            let (done, unfinished) =
                transform_group(&runtime.store, &connection, &group.items, time).await;
            if let Some(error) = unfinished {
                return Err(error);
            }
            done
        }
    };
    let items = done
        .into_iter()
        .map(|record| TransformTaskOutput {
            findings: record.figures.findings_out,
            rejected: record.figures.rejected,
            objects: record.objects.len() as u64,
            item: record.item,
            failed: record.failed,
        })
        .collect();
    Ok(TransformGroupOutput { items })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeInput {
    pub run: RunRef,
    /// The plan's or finalize's own failure, caught by the state machine once its retries are
    /// spent: the run is then marked Failed with it and its lock released (else the connection
    /// would answer "already running" until the lease ran out), and nothing is committed. A run
    /// whose commit marker was written before the failure is finished instead (Processed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<TaskFailure>,
    /// The step whose `failure` it is.
    #[serde(default)]
    pub failed_step: FailedStep,
}

/// The run-wide steps whose failure ends a run: the items' failures are finalize's to report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailedStep {
    Plan,
    #[default]
    Finalize,
}

impl FailedStep {
    fn name(self) -> &'static str {
        match self {
            FailedStep::Plan => "plan",
            FailedStep::Finalize => "finalize",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeOutput {
    pub run: RunRef,
    pub complete: bool,
    pub items_by_status: std::collections::BTreeMap<String, u64>,
    pub findings: u64,
    /// DAST environments whose last login failed (their findings held open, not closed).
    #[serde(default, skip_serializing_if = "crate::pipeline::is_zero_u64")]
    pub failed_logins: u64,
    pub manifest_key: String,
}

pub async fn finalize_task(
    runtime: &Runtime<impl BucketStore>,
    input: FinalizeInput,
) -> Result<FinalizeOutput, StepError> {
    checked_run(&input.run)?;
    let manifest = match &input.failure {
        Some(failure) => {
            let reason = failure.reason(input.failed_step.name());
            // A step that failed after the commit marker (finalize's process dying, say) leaves
            // a committed run: `fail_run` finishes it, and the execution succeeds.
            match fail_run(&runtime.store, &input.run, &reason).await? {
                Some(manifest) => manifest,
                None => return Err(StepError::RunFailed(reason)),
            }
        }
        None => {
            // Finalize calls no vendor either (see `transform_task`): a secret deleted or broken
            // during the run cannot keep a run from committing or releasing its lock.
            let connection = runtime.run_connection_config(&input.run).await?;
            finalize(&runtime.store, &connection, &input.run).await?
        }
    };
    Ok(FinalizeOutput {
        complete: manifest.complete,
        items_by_status: manifest.items_by_status,
        findings: manifest.totals.findings_out,
        failed_logins: manifest.totals.failed_logins,
        manifest_key: runtime.store.full_key(&input.run.manifest()),
        run: input.run,
    })
}

/// What an invocation's event names (its connection, run and item) and what its answer counted,
/// written into the invocation's summary line.
pub trait Summarized {
    fn summarize(&self, summary: &mut Summary);
}

/// The error type of an invocation whose handler panicked outside any one item's step (a panic
/// in an item's step fails that item alone): the state machine tries it once more, as a process
/// that died (lambda_runtime would name it after the panic's Rust type, which no retrier names).
pub const PANICKED: &str = "Panicked";

/// Runs one invocation of `function` over its typed event and prints its summary line (EMF
/// metrics included) whether it succeeded, failed or panicked.
pub async fn invoke<I, O, F>(
    function: &'static str,
    event: LambdaEvent<I>,
    handler: impl FnOnce(LambdaEvent<I>) -> F,
) -> Result<O, Diagnostic>
where
    I: Summarized,
    O: Summarized,
    F: std::future::Future<Output = Result<O, Diagnostic>>,
{
    let invocation = crate::metrics::Invocation::start(function);
    let mut summary = Summary::default();
    event.payload.summarize(&mut summary);
    // Boxed: the handlers' futures are deep, and one more layer around them overflows the
    // compiler's query depth.
    let step = Box::pin(handler(event));
    let result = std::panic::AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(Diagnostic {
                error_type: PANICKED.into(),
                error_message: cut_to_size(format!(
                    "the {function} function stopped on a defect ({}): report it with this invocation's log",
                    crate::pipeline::panic_said(&*panic)
                )),
            })
        });
    match &result {
        Ok(answer) => answer.summarize(&mut summary),
        Err(diagnostic) => {
            summary.outcome = diagnostic.error_type.clone();
            summary.error = Some(diagnostic.error_message.clone());
        }
    }
    if summary.connection.is_empty() {
        summary.connection = "(unknown)".into();
    }
    if summary.outcome.is_empty() {
        summary.outcome = "ok".into();
    }
    invocation.finish(&summary);
    result
}

/// Names the event's run in the summary line. An id the step refuses is not made a metric's
/// dimension (whoever may invoke the function could make a custom metric of each); the step's
/// error, which quotes it, is the line's `Error`.
fn name_run(summary: &mut Summary, run: &RunRef) {
    let checked = |id: &str| match check_key_segment(id) {
        Ok(()) => id.to_string(),
        Err(_) => "(invalid)".to_string(),
    };
    summary.connection = checked(&run.connection_id);
    summary.run = Some(checked(&run.run_id));
}

impl Summarized for WorkGroup {
    fn summarize(&self, summary: &mut Summary) {
        if let Some(first) = self.items.first() {
            name_run(summary, &first.run);
        }
        if let [only] = self.items.as_slice() {
            summary.item = Some(only.item.clone());
        }
        summary.items = self.items.len() as u64;
    }
}

impl Summarized for CollectGroupOutput {
    fn summarize(&self, summary: &mut Summary) {
        summary.items = self.items.len() as u64;
        summary.retries = self.items.iter().map(|i| i.retries).sum();
    }
}

impl Summarized for TransformGroupOutput {
    fn summarize(&self, summary: &mut Summary) {
        summary.items = self.items.len() as u64;
        summary.findings = self.items.iter().map(|i| i.findings).sum();
        summary.rejected = self.items.iter().map(|i| i.rejected).sum();
        let mut failed = self
            .items
            .iter()
            .filter_map(|i| Some((&i.item, i.failed.as_deref()?)));
        if let Some((item, why)) = failed.next() {
            summary.outcome = "failed".into();
            summary.error = Some(format!(
                "{} of the group's items could not be transformed; {item}: {why}",
                1 + failed.count()
            ));
        }
    }
}

impl Summarized for FinalizeInput {
    fn summarize(&self, summary: &mut Summary) {
        name_run(summary, &self.run);
    }
}

impl Summarized for FinalizeOutput {
    fn summarize(&self, summary: &mut Summary) {
        name_run(summary, &self.run);
        summary.outcome = if self.complete { "complete" } else { "partial" }.into();
        summary.run_partial = Some(!self.complete);
        summary.failed_logins = Some(self.failed_logins);
        summary.items = self.items_by_status.values().sum();
        summary.findings = self.findings;
    }
}

impl Summarized for StartedRun {
    fn summarize(&self, summary: &mut Summary) {
        name_run(summary, &self.run);
        if let Some(planned) = &self.planned {
            planned.summarize(summary);
        }
    }
}

impl Summarized for PlannedRun {
    fn summarize(&self, summary: &mut Summary) {
        name_run(summary, &self.run);
        summary.items = self.items;
    }
}

/// The most of an error's text a task's failure carries: Step Functions puts it into the state
/// (a Catch's `ResultPath`), which must stay under 256 KiB (a config refused for many fields, each
/// named, can say a lot).
const ERROR_MESSAGE_CHARS: usize = 8_000;

/// Step Functions retries the error types its Retry lists name: `OutOfTime` (the invocation's time
/// ran short after progress: as often as a group needs), `RateLimited` (the vendor asked for a
/// wait longer than the client's budget: minutes apart), `Retryable` (a later attempt may
/// succeed: a few times), never `Fatal`.
impl From<StepError> for Diagnostic {
    fn from(error: StepError) -> Self {
        Diagnostic {
            error_type: error.error_type().into(),
            error_message: cut_to_size(error.to_string()),
        }
    }
}

/// `message`, cut to [`ERROR_MESSAGE_CHARS`].
fn cut_to_size(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(ERROR_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push_str(" … (cut)");
    }
    message
}

/// What the functions log, from `RUST_LOG` (INFO where it is unset or does not parse). The Lambda
/// runtime logs each event whole at TRACE: an API request's with its headers (the caller's
/// `authorization` and `x-amz-security-token`). That one line stays off at any level asked.
fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::filter::Targets {
    const WHOLE_EVENT: &str = "lambda_runtime::layers::api_response";
    let asked = rust_log
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    // Lowered where TRACE is asked, never raised: `off` or `error` stays so.
    if asked.would_enable(WHOLE_EVENT, &tracing::Level::TRACE) {
        asked.with_target(WHOLE_EVENT, tracing::Level::DEBUG)
    } else {
        asked
    }
}

/// JSON logs to stdout (the Lambda log format), level from `RUST_LOG` (default `info`).
///
/// `RUST_LOG` takes `level` or `target=level,…` (no span filters: the plain target filter keeps the
/// regex engine out of the function binaries); anything unreadable falls back to `info`.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let format = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(format)
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics outside any item's step fails its invocation `Panicked` (retried once
    /// by the state machine, as a process that died), saying what the panic said; before, the
    /// runtime named it after the panic's Rust type, which no retrier names.
    #[tokio::test]
    async fn a_handler_that_panics_fails_its_invocation_panicked() {
        let event = || {
            let input: FinalizeInput = serde_json::from_value(
                serde_json::json!({"run": {"connectionId": "c", "runId": "r"}}),
            )
            .unwrap();
            LambdaEvent::new(input, lambda_runtime::Context::default())
        };
        let failed = invoke("finalize", event(), |_| async {
            if std::hint::black_box(true) {
                panic!("an index past the end");
            }
            Err::<FinalizeOutput, Diagnostic>(StepError::RunFailed("never".into()).into())
        })
        .await
        .expect_err("the panic is the invocation's failure");
        assert_eq!(failed.error_type, PANICKED);
        assert_eq!(
            failed.error_message,
            "the finalize function stopped on a defect (a panic: an index past the end): report it with this invocation's log"
        );
    }

    /// A put config is compared with the stack's parameters on what the stack gives it: a secret
    /// named by its ARN or by `secretsmanager:NAME` is one secret; another concurrency, tenant or
    /// a config that does not read is said.
    #[test]
    fn a_put_config_is_said_to_differ_only_in_what_the_stack_gives() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cxone/sast-AbCdEf";
        for same in [
            arn,
            "secretsmanager:cxone/sast",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cxone/sast",
        ] {
            assert!(same_secret(same, arn) && same_secret(arn, same), "{same}");
        }
        for other in [
            // Another account's or region's secret of the same name.
            "arn:aws:secretsmanager:eu-west-1:999999999999:secret:cxone/sast-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:cxone/sast",
            // A partial ARN of a secret whose own name ends in six characters.
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cxone/sast-prod01",
            "secretsmanager:cxone/sast-prod01",
        ] {
            assert!(!same_secret(other, arn), "{other}");
        }
        // An ARN after `secretsmanager:` is an ARN; two names are compared whole.
        assert!(same_secret(&format!("secretsmanager:{arn}"), arn));
        assert!(!same_secret(
            "secretsmanager:cxone/sast-prod01",
            "secretsmanager:cxone/sast"
        ));
        let stack = ConnectionConfig::new(
            "sast",
            crate::ConnectorKind::Sast,
            crate::cxone::VendorSettings::for_region("eu", "acme"),
            arn,
        );
        let put = |change: &dyn Fn(&mut ConnectionConfig)| {
            let mut config = stack.clone();
            change(&mut config);
            where_it_points_otherwise(&serde_json::to_vec(&config).unwrap(), &stack)
        };
        let none: [&str; 0] = [];
        assert_eq!(
            put(&|c| {
                c.secret = "secretsmanager:cxone/sast".into();
                c.vendor.tenant = "ACME".into();
                c.close_deleted_items = true;
            }),
            none
        );
        assert_eq!(
            put(&|c| {
                c.secret = "secretsmanager:cxone/other".into();
                c.vendor.concurrency = 4;
            }),
            ["secret", "concurrency"]
        );
        assert_eq!(where_it_points_otherwise(b"{", &stack).len(), 6);
        // The stack gives DAST no page size: a DAST config's own is not a difference.
        let dast_stack = ConnectionConfig {
            kind: crate::ConnectorKind::Dast,
            ..stack.clone()
        };
        let mut dast_put = dast_stack.clone();
        dast_put.vendor.results_page_size = 50;
        assert_eq!(
            where_it_points_otherwise(&serde_json::to_vec(&dast_put).unwrap(), &dast_stack),
            none
        );
    }

    #[test]
    fn the_runtimes_whole_event_is_never_logged_whatever_rust_log_asks() {
        use tracing::Level;
        for asked in [
            "trace",
            "lambda_runtime=trace",
            "info,lambda_runtime::layers=trace",
        ] {
            let filter = log_filter(Some(asked));
            assert!(
                !filter.would_enable("lambda_runtime::layers::api_response", &Level::TRACE),
                "{asked}"
            );
            assert!(
                filter.would_enable("lambda_runtime::layers::api_response", &Level::ERROR),
                "{asked}: its errors are still logged"
            );
        }
        let trace = log_filter(Some("trace"));
        assert!(trace.would_enable("cxone_etm::cxone::transport", &Level::TRACE));
        for quiet in ["off", "error", "lambda_runtime=off"] {
            let filter = log_filter(Some(quiet));
            assert!(
                !filter.would_enable("lambda_runtime::layers::api_response", &Level::WARN),
                "{quiet} stays so"
            );
        }
        let unset = log_filter(None);
        assert!(unset.would_enable("cxone_etm", &Level::INFO));
        assert!(!unset.would_enable("cxone_etm", &Level::DEBUG));
    }

    /// A step event naming a run whose ids the step refuses names no metric dimension: whoever
    /// may invoke collect, transform or finalize could otherwise make a custom metric of each id.
    /// Before, the ids went into the summary line before the step refused them.
    #[test]
    fn a_step_event_naming_a_hostile_run_makes_no_metric_dimension() {
        let named = |connection: &str, run: &str| {
            let run = serde_json::json!({"connectionId": connection, "runId": run});
            let mut summary = Summary::default();
            let finalize: FinalizeInput =
                serde_json::from_value(serde_json::json!({ "run": run })).unwrap();
            finalize.summarize(&mut summary);
            let from_finalize = (summary.connection.clone(), summary.run.clone());
            let group: WorkGroup = serde_json::from_value(serde_json::json!({"items": [{
                "run": run, "item": "i", "vendorId": "p", "name": "n", "kind": "sast", "record": {}
            }]}))
            .unwrap();
            let mut summary = Summary::default();
            group.summarize(&mut summary);
            assert_eq!((summary.connection, summary.run), from_finalize.clone());
            from_finalize
        };
        assert_eq!(
            named("demo sast", "../20261122T000000Z-000001"),
            ("(invalid)".to_string(), Some("(invalid)".to_string()))
        );
        assert_eq!(
            named("demo-sast", "20261122T000000Z-000001"),
            (
                "demo-sast".to_string(),
                Some("20261122T000000Z-000001".to_string())
            )
        );
    }

    /// A history of `(id, type, error of a TaskFailed)`, in the order given.
    fn history(events: &[(i64, &str, Option<&str>)]) -> Vec<aws_sdk_sfn::types::HistoryEvent> {
        use aws_sdk_sfn::types::{HistoryEvent, HistoryEventType, TaskFailedEventDetails};
        events
            .iter()
            .map(|&(id, kind, error)| {
                let details = error.map(|e| {
                    TaskFailedEventDetails::builder()
                        .resource_type("lambda")
                        .resource("invoke")
                        .error(e)
                        .build()
                        .unwrap()
                });
                HistoryEvent::builder()
                    .id(id)
                    .r#type(HistoryEventType::from(kind))
                    // Three seconds an id: a reading of ids for times would tell otherwise.
                    .timestamp(aws_sdk_sfn::primitives::DateTime::from_secs(3 * id))
                    .set_task_failed_event_details(details)
                    .build()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_task_of_a_history_may_run_unless_the_function_answered() {
        let plan_answered = [
            (1, "ExecutionStarted", None),
            (2, "TaskStateEntered", None),
            (3, "TaskScheduled", None),
            (4, "TaskStarted", None),
            (5, "TaskSucceeded", None),
            (6, "TaskStateExited", None),
            (7, "MapStateEntered", None),
            (8, "MapRunStarted", None),
            (9, "ExecutionAborted", None),
        ];
        let mut events = history(&plan_answered);
        assert!(!task_may_run(&events), "stopped during the Map");
        events.reverse();
        assert!(!task_may_run(&events), "newest first, the same");

        let finalize_running = [
            (5, "TaskSucceeded", None),
            (9, "TaskScheduled", None),
            (10, "TaskStarted", None),
            (11, "ExecutionAborted", None),
        ];
        assert!(
            task_may_run(&history(&finalize_running)),
            "stopped while finalize ran"
        );
        let function_failed = [
            (10, "TaskStarted", None),
            (11, "TaskFailed", Some("Retryable")),
            (12, "ExecutionAborted", None),
        ];
        assert!(
            !task_may_run(&history(&function_failed)),
            "the function answered with its error"
        );
        let killed = [
            (10, "TaskStarted", None),
            (11, "TaskFailed", Some("Sandbox.Timedout")),
        ];
        assert!(
            !task_may_run(&history(&killed)),
            "Lambda ended the invocation"
        );
        for error in ["Lambda.ServiceException", "States.Timeout"] {
            let unanswered = [(10, "TaskStarted", None), (11, "TaskFailed", Some(error))];
            assert!(
                task_may_run(&history(&unanswered)),
                "{error}: the invocation may go on"
            );
        }
        // A finalize whose answer was lost, retried; the retry answered with its error: the first
        // attempt's invocation may still be at work (found by a review: the lock was taken over).
        let lost_then_answered = [
            (10, "TaskStarted", None),
            (11, "TaskFailed", Some("Lambda.ServiceException")),
            (13, "TaskStarted", None),
            (14, "TaskFailed", Some("Retryable")),
            (15, "ExecutionAborted", None),
        ];
        assert!(
            task_may_run(&history(&lost_then_answered)),
            "an earlier attempt may go on"
        );
        // One lost longer ago than an invocation lasts has ended; one throttled never ran.
        let long_ago = [
            (10, "TaskStarted", None),
            (11, "TaskFailed", Some("Lambda.ServiceException")),
            (13, "TaskStarted", None),
            (14, "TaskSucceeded", None),
            (11 + 6 * 60, "ExecutionAborted", None),
        ];
        assert!(!task_may_run(&history(&long_ago)), "ended long since");
        let started_long_ago = [
            (10, "TaskStarted", None),
            (11 + 6 * 60, "ExecutionTimedOut", None),
        ];
        assert!(
            !task_may_run(&history(&started_long_ago)),
            "begun longer ago than an invocation lasts"
        );
        let throttled = [
            (10, "TaskStarted", None),
            (11, "TaskFailed", Some("Lambda.TooManyRequestsException")),
            (13, "TaskStarted", None),
            (14, "TaskSucceeded", None),
            (15, "ExecutionAborted", None),
        ];
        assert!(!task_may_run(&history(&throttled)), "never ran");
        let timed_out = [(10, "TaskStarted", None), (11, "TaskTimedOut", None)];
        assert!(
            task_may_run(&history(&timed_out)),
            "a state's timeout stops no Lambda"
        );
        let no_task = [(1, "ExecutionStarted", None), (2, "ExecutionAborted", None)];
        assert!(task_may_run(&history(&no_task)), "nothing tells: it may");
    }

    #[test]
    fn a_transform_group_with_items_that_could_not_be_transformed_says_so_in_its_summary() {
        let item = |item: &str, failed: Option<&str>| TransformTaskOutput {
            item: item.into(),
            findings: if failed.is_some() { 0 } else { 7 },
            rejected: 0,
            objects: 1,
            failed: failed.map(str::to_string),
        };
        let mut summary = Summary::default();
        TransformGroupOutput {
            items: vec![item("a", None), item("b", None)],
        }
        .summarize(&mut summary);
        assert_eq!((summary.outcome.as_str(), summary.error), ("", None));
        assert_eq!(summary.findings, 14);
        let mut summary = Summary::default();
        TransformGroupOutput {
            items: vec![
                item("a", None),
                item("b", Some("page 3: not a page object")),
                item("c", Some("missing")),
            ],
        }
        .summarize(&mut summary);
        assert_eq!(summary.outcome, "failed");
        assert_eq!(
            summary.error.as_deref(),
            Some("2 of the group's items could not be transformed; b: page 3: not a page object")
        );
    }

    #[test]
    fn a_vendor_hosts_entry_that_is_not_a_host_is_refused_naming_it() {
        for entry in [
            "https://cxone.example.com",
            "cxone.example.com/api",
            "cxone.example.com:https",
            "user@cxone.example.com",
            "[2001:db8::1]443",
            "[2001:db8::1",
            ":443",
            "cxone example.com",
        ] {
            let listed = format!("iam.example.com, {entry}");
            let error = VendorHosts::listed(&listed).unwrap_err();
            assert!(
                error.contains(&format!(
                    "VENDOR_HOSTS names '{entry}', which is not a host"
                )),
                "{entry}: {error}"
            );
            let env = FunctionEnv::from_vars(|name: &str| match name {
                "BUCKET" => Some("data".to_string()),
                "VENDOR_HOSTS" => Some(listed.clone()),
                _ => None,
            });
            assert_eq!(env.unwrap_err(), error, "the functions do not start on it");
        }
    }

    #[test]
    fn vendor_hosts_match_whatever_the_case_port_trailing_dot_or_brackets() {
        use crate::cxone::VendorSettings;
        let hosts = VendorHosts::listed(
            " CX.Example.com:8443 , iam.example.com., [2001:db8::1]:443, 2001:db8::2 ,,",
        )
        .unwrap();
        let expected = [
            "cx.example.com",
            "iam.example.com",
            "2001:db8::1",
            "2001:db8::2",
        ];
        assert_eq!(hosts, VendorHosts(expected.map(String::from).to_vec()));
        let connection = |vendor: VendorSettings| {
            ConnectionConfig::new("c", crate::ConnectorKind::Sast, vendor, "secretsmanager:x")
                .validate()
                .unwrap_or_else(|e| panic!("{e:?}"))
        };
        let custom = |api: &str, iam: Option<&str>| {
            let mut vendor = VendorSettings::for_custom(api, iam.unwrap_or_default(), "acme");
            vendor.custom_iam_url = iam.map(String::from);
            connection(vendor)
        };
        let allowed = custom("https://cx.example.com.", Some("https://IAM.example.com"));
        assert_eq!(hosts.refused(&allowed), vec![]);
        // With no IAM URL, the derived IAM host (`ast.` → `iam.`) is checked too.
        let derived = hosts.refused(&custom("https://ast.other.example", None));
        let described: Vec<String> = derived.iter().map(|e| e.to_string()).collect();
        assert_eq!(derived.len(), 2, "{described:?}");
        assert!(described[0].contains("'ast.other.example' is not a host"));
        assert!(described[1].contains("derived from it, 'iam.other.example'"));
        assert!(
            described
                .iter()
                .all(|d| d.contains("vendor.custom_api_url"))
        );
        // A region's hosts need no listing.
        let region = connection(VendorSettings::for_region("EU", "acme"));
        assert_eq!(VendorHosts::default().refused(&region), vec![]);
    }

    #[test]
    fn function_settings_name_what_is_missing() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(
            FunctionEnv::from_vars(vars(&[]))
                .unwrap_err()
                .contains("BUCKET is not set")
        );
        let env = FunctionEnv::from_vars(vars(&[
            ("BUCKET", "data"),
            ("STATE_MACHINE_ARN", "arn:aws:states:x"),
        ]))
        .unwrap();
        assert_eq!(
            (env.bucket.as_str(), env.state_machine_arn.as_deref()),
            ("data", Some("arn:aws:states:x"))
        );
        let error =
            FunctionEnv::from_vars(vars(&[("BUCKET", "data"), ("BUCKET_PREFIX", "team-a/")]))
                .unwrap_err();
        assert!(
            error.contains("BUCKET_PREFIX is set") && error.contains("unset it"),
            "{error}"
        );
        assert_eq!(env.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(
            env.vendor_hosts,
            VendorHosts::default(),
            "none unless listed"
        );
        let env = FunctionEnv::from_vars(vars(&[
            ("BUCKET", "data"),
            ("VENDOR_HOSTS", " CxOne.Example.com , ,iam.example.com"),
        ]));
        assert_eq!(
            env.unwrap().vendor_hosts,
            VendorHosts(vec!["cxone.example.com".into(), "iam.example.com".into()])
        );
        let env = FunctionEnv::from_vars(vars(&[("BUCKET", "data"), ("MAX_CONCURRENCY", "25")]));
        assert_eq!(env.unwrap().max_concurrency, 25);
        for bad in ["0", "ten", "10001"] {
            let pairs: &'static [(&'static str, &'static str)] = match bad {
                "0" => &[("BUCKET", "data"), ("MAX_CONCURRENCY", "0")],
                "ten" => &[("BUCKET", "data"), ("MAX_CONCURRENCY", "ten")],
                _ => &[("BUCKET", "data"), ("MAX_CONCURRENCY", "10001")],
            };
            let error = FunctionEnv::from_vars(vars(pairs)).unwrap_err();
            assert!(
                error.contains("MAX_CONCURRENCY") && error.contains(bad),
                "{error}"
            );
        }
    }

    #[test]
    fn execution_names_fit_step_functions_for_every_connection_id() {
        let run = |connection: &str| RunRef {
            connection_id: connection.to_string(),
            run_id: "20261201T150318Z-1a2b3c".to_string(),
        };
        assert_eq!(execution_name(&run("sast")), "sast-20261201T150318Z-1a2b3c");
        let long_a = "a".repeat(64);
        let long_b = format!("{}b", "a".repeat(63));
        let (a, b) = (execution_name(&run(&long_a)), execution_name(&run(&long_b)));
        for name in [&a, &b] {
            assert!(name.len() <= 80, "{name} has {} characters", name.len());
            assert!(name.ends_with("-20261201T150318Z-1a2b3c"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{name}"
            );
        }
        assert_ne!(a, b, "two long ids that share their first characters");
    }
}
