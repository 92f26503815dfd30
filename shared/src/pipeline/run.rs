//! A run's states, and only here are they changed: the per-connection run lock (a conditional
//! write, so two runs of one connection never overlap; a lock past its lease is recovered), the
//! connection's state (Registered → Scheduled → Processing → Processed, or Failed with the reason)
//! and the run record. The steps ask this module to move a run on.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::commits;
use super::config::Connection;
use super::documents::{ItemDeadlines, Manifest};
use super::error::StepError;
use super::now_rfc3339;
use super::objects::{get_json, put_json, sha256_hex};
use super::schedule::Schedule;
use crate::ConnectorKind;
use crate::layout::{RunRef, commit_claim_key, is_run_id, lock_key, lock_takeover_key, state_key};
use crate::store::ObjectStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    Registered,
    Scheduled,
    Processing,
    Processed,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Api,
    Local,
}

/// `connections/<c>/state.json`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDocument {
    pub state: RunState,
    /// Processed: whether the committed run is complete or partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// Failed: why; Processed and partial: what was not whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_committed_run: Option<String>,
    /// When the schedule last started a run (a rate schedule's next run counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_run_at: Option<String>,
    /// The schedule the last scheduled event carried (on AWS, the template's: what fires, with
    /// the dates of the stack's last update). It is the connection's schedule; the stored
    /// config's applies only where no scheduled event has come (a local store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_schedule: Option<Schedule>,
    pub updated_at: String,
}

impl StateDocument {
    /// A connection's state before any run.
    pub fn fresh(state: RunState) -> Self {
        Self {
            state,
            outcome: None,
            reason: None,
            last_run: None,
            last_committed_run: None,
            last_scheduled_run_at: None,
            event_schedule: None,
            updated_at: String::new(),
        }
    }
}

/// A committed run took every item whole, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Complete,
    Partial,
}

/// `connections/<c>/runs/<r>/run.json`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub connection_id: String,
    pub run_id: String,
    pub trigger: Trigger,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// The last committed run when this one was planned (what it reconciles against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run: Option<String>,
    /// What the run pulled (recorded by the plan; runs planned before name none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<VendorScope>,
}

/// What a run's ledgers hold: one tenant's projects, or its DAST environments. A run reconciles
/// only against a committed run of the same scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorScope {
    pub tenant: String,
    pub kind: ConnectorKind,
    /// The IAM host of the region the connection names (a tenant name can be taken in two
    /// regions); none for a custom deployment's URLs, which may move while the tenant stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_host: Option<String>,
}

impl VendorScope {
    /// The scope a run of `connection` pulls.
    pub fn of(connection: &Connection) -> Self {
        let named_region = connection.config.vendor.region.is_some();
        Self {
            tenant: connection.vendor.tenant.clone(),
            kind: connection.config.kind,
            region_host: named_region
                .then(|| {
                    connection
                        .vendor
                        .endpoints
                        .iam
                        .host_str()
                        .map(str::to_string)
                })
                .flatten(),
        }
    }

    /// Whether runs of the two reconcile against each other: the same tenant, in the same region
    /// where both name one, and assets of the same sort (SAST and SCA connections both pull
    /// projects).
    pub fn reconciles_with(&self, other: &Self) -> bool {
        let same_region = match (&self.region_host, &other.region_host) {
            (Some(this), Some(that)) => this == that,
            _ => true,
        };
        // A tenant's realm is its name lower-cased: `Acme` and `acme` are one.
        self.tenant.eq_ignore_ascii_case(&other.tenant)
            && same_region
            && self.kind.on_projects() == other.kind.on_projects()
    }

    /// The tenant, and its region's host where it names one, for a message.
    pub fn tenant_named(&self) -> String {
        match &self.region_host {
            Some(host) => format!("'{}' at {host}", self.tenant),
            None => format!("'{}'", self.tenant),
        }
    }

    /// What the scope's assets are, for a message.
    pub fn assets(&self) -> &'static str {
        match self.kind.on_projects() {
            true => "projects",
            false => "DAST environments",
        }
    }
}

/// `connections/<c>/lock`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lock {
    run_id: String,
    acquired_at: String,
    /// Unix seconds after which the holder is presumed crashed.
    expires_at: i64,
    /// A local runner's host and process id: a runner on the same host can see at once that the
    /// holder is gone instead of waiting out the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_holder: Option<LocalHolder>,
    /// What started the holder, in the lock itself: its run record is written after the lock.
    /// (Locks written before this field name none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trigger: Option<Trigger>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LocalHolder {
    host: String,
    pid: u32,
}

impl LocalHolder {
    /// This process, where the host can be named (Linux); elsewhere the lease alone applies.
    fn current() -> Option<Self> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
        Some(Self {
            host: host.trim().to_string(),
            pid: std::process::id(),
        })
    }

    /// True when the holder ran on this host and its process no longer exists.
    fn is_gone(&self) -> bool {
        Self::current().is_some_and(|me| {
            me.host == self.host && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
        })
    }
}

impl Lock {
    /// Taken more than `age` ago (or at a time that cannot be read).
    fn acquired_before(&self, age: Duration) -> bool {
        taken_before(&self.acquired_at, age).unwrap_or(true)
    }

    fn is_stale(&self) -> bool {
        self.expires_at <= unix_now()
            || self.local_holder.as_ref().is_some_and(LocalHolder::is_gone)
    }
}

/// Whether `at` (RFC 3339) is more than `age` ago; `None` when it cannot be read.
fn taken_before(at: &str, age: Duration) -> Option<bool> {
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some(time::OffsetDateTime::now_utc() - at > time::Duration::seconds(age.as_secs() as i64))
}

fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(bytes)[..4])
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A unique run id that sorts in start order to the millisecond: `20261122T204900Z-1a2b3c`, the
/// suffix's first 10 bits the millisecond within the second, the other 14 random.
fn new_run_id() -> String {
    run_id_at(time::OffsetDateTime::now_utc(), rand::random::<u32>())
}

fn run_id_at(now: time::OffsetDateTime, random: u32) -> String {
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let millis = u32::from(now.millisecond());
    format!("{stamp}-{:06x}", (millis << 14) | (random & 0x3FFF))
}

pub async fn read_state(
    store: &impl ObjectStore,
    connection_id: &str,
) -> Result<Option<StateDocument>, StepError> {
    get_json(store, &state_key(connection_id)).await
}

/// The state document as the runs read it: one left empty or cut off (on a directory store, a
/// power loss can leave it so) is none, and written afresh, rather than a reason to refuse every
/// later run: the commit markers say which run committed last. A whole JSON document this
/// version cannot read (a newer binary's, met by an older one during a rollback) is refused,
/// never written over.
async fn read_state_or_none(
    store: &impl ObjectStore,
    connection_id: &str,
) -> Result<Option<StateDocument>, StepError> {
    match read_state(store, connection_id).await {
        Err(StepError::BadObject { key, problem }) => {
            let bytes = store.get(&key).await?.unwrap_or_default();
            if serde_json::from_slice::<serde_json::Value>(&bytes).is_ok() {
                return Err(StepError::BadObject {
                    key,
                    problem: format!(
                        "{problem}: a JSON document this version does not read (a newer version's?); run the version that wrote it, or move the file aside and this one writes it afresh (the commit markers name the last committed run)"
                    ),
                });
            }
            let error = StepError::BadObject { key, problem };
            tracing::warn!(%error, "the connection's state is not a whole JSON document (empty or cut off): it is written afresh, the commit markers naming the last committed run");
            Ok(None)
        }
        read => read,
    }
}

/// Changes the connection's state document (a fresh one, Registered, when there is none).
async fn update_state(
    store: &impl ObjectStore,
    connection_id: &str,
    change: impl FnOnce(&mut StateDocument),
) -> Result<(), StepError> {
    let mut document = read_state_or_none(store, connection_id)
        .await?
        .unwrap_or_else(|| StateDocument::fresh(RunState::Registered));
    change(&mut document);
    document.updated_at = now_rfc3339();
    put_json(store, &state_key(connection_id), &document).await
}

/// A run moved the connection to `state`: the reason and the outcome are this run's (none unless
/// given). A run that is no longer the connection's last (a late repeat of a step, after the lock
/// was released and another run began) changes nothing of it, but that a run it names committed
/// (its marker written) is the last committed run while no run has claimed the commit after it.
async fn write_state(
    store: &impl ObjectStore,
    run: &RunRef,
    state: RunState,
    outcome: Option<RunOutcome>,
    reason: Option<String>,
) -> Result<(), StepError> {
    let committed =
        state == RunState::Processed && store.get(&run.commit_marker()).await?.is_some();
    // The newest commit (run ids can sort out of time order: a laptop's clock).
    let newest = committed
        && store
            .get(&commit_claim_key(&run.connection_id, Some(&run.run_id)))
            .await?
            .is_none();
    update_state(store, &run.connection_id, |doc| {
        if doc.last_run.as_ref().is_some_and(|last| *last != run.run_id) {
            tracing::warn!(run = %run.run_id, last_run = ?doc.last_run, "a later run began: the state stays its");
            // A run that committed after a later one began (an attempt of its finalize ran on
            // after its lock was released) is still the last committed run, for the runs after
            // to reconcile against.
            if newest {
                doc.last_committed_run = Some(run.run_id.clone());
            }
            return;
        }
        doc.state = state;
        doc.outcome = outcome;
        doc.reason = reason;
        doc.last_run = Some(run.run_id.clone());
        if state == RunState::Processed {
            doc.last_committed_run = Some(run.run_id.clone());
        }
    })
    .await
}

/// A scheduled event started a run: the schedule it carries is what fires the connection.
pub async fn record_event_schedule(
    store: &impl ObjectStore,
    connection_id: &str,
    schedule: Schedule,
) -> Result<(), StepError> {
    update_state(store, connection_id, |doc| {
        doc.event_schedule = Some(schedule)
    })
    .await
}

/// A connection was stored: until its first run it is Registered, or Scheduled when a schedule
/// will start its runs. A connection that has run keeps its state (the last run's).
pub async fn record_registration(
    store: &impl ObjectStore,
    connection_id: &str,
    scheduled: bool,
) -> Result<(), StepError> {
    update_state(store, connection_id, |doc| {
        if doc.last_run.is_none() {
            doc.state = if scheduled {
                RunState::Scheduled
            } else {
                RunState::Registered
            };
        }
    })
    .await
}

async fn update_run(
    store: &impl ObjectStore,
    run: &RunRef,
    change: impl FnOnce(&mut RunRecord),
) -> Result<RunRecord, StepError> {
    let mut record = read_run(store, run).await?;
    change(&mut record);
    put_json(store, &run.run_record(), &record).await?;
    Ok(record)
}

/// The run record; a run without one was never begun.
pub(crate) async fn read_run(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<RunRecord, StepError> {
    get_json(store, &run.run_record())
        .await?
        .ok_or_else(|| StepError::bad_object(&run.run_record(), "the run record is missing"))
}

/// A run whose plan has begun.
pub(crate) struct PlanStart {
    /// The connection's last committed run, which this run reconciles against.
    pub previous_run: Option<String>,
    /// When the trigger began the run, before it started the execution.
    pub started_at: jiff::Timestamp,
}

/// The plan has begun: the run and the connection are Processing.
pub(crate) async fn start_processing(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<PlanStart, StepError> {
    let record = update_run(store, run, |r| r.state = RunState::Processing).await?;
    write_state(store, run, RunState::Processing, None, None).await?;
    let recorded = read_state(store, &run.connection_id)
        .await?
        .and_then(|s| s.last_committed_run);
    let previous_run = newest_commit_from(store, &run.connection_id, recorded).await?;
    // Every line of the run carries this time and the items' deadlines count from it: a run
    // without it is not planned.
    let started_at = record.started_at.parse().map_err(|_| {
        StepError::bad_object(
            &run.run_record(),
            format!(
                "startedAt {:?} is not an RFC 3339 time (the trigger writes it when it begins the run); start a new run",
                record.started_at
            ),
        )
    })?;
    Ok(PlanStart {
        previous_run,
        started_at,
    })
}

/// The plan is written: the run record holds its item count, the run it reconciles against and
/// what it pulled.
pub(crate) async fn record_plan(
    store: &impl ObjectStore,
    run: &RunRef,
    items: u64,
    previous_run: Option<String>,
    scope: VendorScope,
) -> Result<(), StepError> {
    update_run(store, run, |r| {
        r.items = Some(items);
        r.previous_run = previous_run;
        r.scope = Some(scope);
    })
    .await
    .map(|_| ())
}

/// Takes the connection's run lock and registers a new run (state Scheduled). Refuses, naming the
/// run that holds it, while another run is under way; recovers a lock whose lease ran out.
pub async fn begin_run(
    store: &impl ObjectStore,
    connection_id: &str,
    trigger: Trigger,
    lease: Duration,
) -> Result<RunRef, StepError> {
    acquire_lock(store, connection_id, trigger, lease, None).await
}

/// A run that holds its connection's lock but runs no more, and no task of it can still be
/// running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedHolder {
    pub run_id: String,
    pub end: HolderEnd,
}

/// How a run holding its lock came to run no more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderEnd {
    /// Its execution ended without releasing the lock (stopped, timed out: no Catch runs); the
    /// status as Step Functions names it (ABORTED, TIMED_OUT, …).
    ExecutionEnded(String),
    /// The trigger that took its lock ended (cut off, its process dead) before it started the
    /// run's execution, and never will.
    NeverStarted,
}

/// The reason an abandoned run's record gives.
impl std::fmt::Display for HolderEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ExecutionEnded(status) => {
                write!(
                    f,
                    "its execution ended ({status}) without releasing the lock"
                )
            }
            Self::NeverStarted => {
                f.write_str("the trigger that took its lock ended without starting its execution")
            }
        }
    }
}

/// `holder`, of which no execution was found, when none will ever run: it still holds its
/// connection's lock, taken more than `longest_start` ago (the trigger that took it has ended),
/// by a trigger of the state machine (the schedule or the API), not by a local run (`cxone-etm
/// run` starts no execution, and may hold its lock for hours). The lock names its trigger; a lock
/// written before it did is judged by the run record, and kept when there is none. A time that
/// cannot be read keeps the lock.
pub async fn never_started_holder(
    store: &impl ObjectStore,
    holder: RunRef,
    longest_start: Duration,
) -> Result<Option<EndedHolder>, StepError> {
    let lock = get_json::<Lock>(store, &lock_key(&holder.connection_id)).await?;
    let Some(lock) = lock.filter(|lock| lock.run_id == holder.run_id) else {
        // Released or taken anew since: the start goes the ordinary way.
        return Ok(None);
    };
    if taken_before(&lock.acquired_at, longest_start) != Some(true) {
        return Ok(None);
    }
    let trigger = match lock.trigger {
        Some(trigger) => Some(trigger),
        None => get_json::<RunRecord>(store, &holder.run_record())
            .await?
            .map(|record| record.trigger),
    };
    let started_by_a_trigger = matches!(trigger, Some(Trigger::Schedule | Trigger::Api));
    Ok(started_by_a_trigger.then_some(EndedHolder {
        run_id: holder.run_id,
        end: HolderEnd::NeverStarted,
    }))
}

/// [`begin_run`], also recovering the lock while `ended` holds it, as one whose lease ran out:
/// exactly one of the starts racing for it wins; a lock taken anew since is refused as usual.
pub async fn begin_run_recovering(
    store: &impl ObjectStore,
    connection_id: &str,
    trigger: Trigger,
    lease: Duration,
    ended: &EndedHolder,
) -> Result<RunRef, StepError> {
    acquire_lock(store, connection_id, trigger, lease, Some(ended)).await
}

async fn acquire_lock(
    store: &impl ObjectStore,
    connection_id: &str,
    trigger: Trigger,
    lease: Duration,
    ended: Option<&EndedHolder>,
) -> Result<RunRef, StepError> {
    // A state this version cannot read is refused before the lock is taken or a run folder
    // written: each start would otherwise leave both.
    read_state_or_none(store, connection_id).await?;
    let run = RunRef {
        connection_id: connection_id.to_string(),
        run_id: new_run_id(),
    };
    let lock = Lock {
        run_id: run.run_id.clone(),
        acquired_at: now_rfc3339(),
        expires_at: unix_now() + lease.as_secs() as i64,
        local_holder: (trigger == Trigger::Local)
            .then(LocalHolder::current)
            .flatten(),
        trigger: Some(trigger),
    };
    let body = Bytes::from(serde_json::to_vec(&lock).expect("serializes"));
    let key = lock_key(connection_id);
    if !store.put_if_absent(&key, body.clone()).await? {
        let held = store.get(&key).await?;
        // A lock that cannot be read (a crash between creating and writing it, on a store without
        // atomic writes) names no live holder: it is stale like one whose lease ran out.
        let holder: Option<Lock> = held
            .as_ref()
            .and_then(|bytes| serde_json::from_slice(bytes).ok());
        let has_ended = |holder: &Lock| ended.is_some_and(|ended| ended.run_id == holder.run_id);
        match holder {
            // This write's own bytes (a retry of it that landed met them): the lock is this run's.
            _ if held.as_ref() == Some(&body) => {}
            Some(holder) if !holder.is_stale() && !has_ended(&holder) => {
                return Err(StepError::AlreadyRunning {
                    connection_id: connection_id.to_string(),
                    run_id: holder.run_id,
                    since: holder.acquired_at,
                });
            }
            _ if held.is_none() => {
                // Released between the two calls: take it the ordinary way, or be refused.
                if !store.put_if_absent(&key, body.clone()).await?
                    && store.get(&key).await? != Some(body)
                {
                    return Err(StepError::LockTaken {
                        connection_id: connection_id.to_string(),
                        detail: "another trigger took the lock first".into(),
                    });
                }
            }
            stale => {
                let stale_id = match (&stale, &held) {
                    (Some(lock), _) => lock.run_id.clone(),
                    (None, bytes) => format!(
                        "unreadable-{}",
                        short_hash(bytes.as_deref().unwrap_or_default())
                    ),
                };
                tracing::warn!(
                    connection = connection_id,
                    stale_run = %stale_id,
                    "recovering a stale run lock"
                );
                // Exactly one runner takes over a given stale lock: the one whose takeover record
                // is written first (a conditional write); the others are refused. Deleting the
                // stale lock and creating a new one would let a slower runner delete the winner's.
                let takeover = lock_takeover_key(connection_id, &stale_id);
                if !take_over(store, &takeover, &body).await? {
                    return Err(StepError::LockTaken {
                        connection_id: connection_id.to_string(),
                        detail: format!(
                            "another trigger took over the stale lock of run {stale_id} first"
                        ),
                    });
                }
                store.put(&key, body).await?;
                if let Some(stale) = stale {
                    let why = match ended.filter(|_| has_ended(&stale)) {
                        Some(ended) => ended.end.to_string(),
                        None => "its runner stopped before the commit".to_string(),
                    };
                    abandon(store, connection_id, &stale.run_id, &run.run_id, &why).await?;
                }
            }
        }
    }
    let record = RunRecord {
        connection_id: connection_id.to_string(),
        run_id: run.run_id.clone(),
        trigger,
        state: RunState::Scheduled,
        reason: None,
        started_at: now_rfc3339(),
        finished_at: None,
        items: None,
        previous_run: None,
        scope: None,
    };
    put_json(store, &run.run_record(), &record).await?;
    // The state names the last committed run, but the commit markers decide: a run that committed
    // and then could not write the state (a crash, a failed write) is the last committed one.
    let committed = last_committed_run(store, connection_id).await?;
    update_state(store, connection_id, |doc| {
        doc.state = RunState::Scheduled;
        doc.outcome = None;
        doc.reason = None;
        doc.last_run = Some(run.run_id.clone());
        // The newer of the two: a run that committed after a later one began may have recorded
        // itself since the markers were read (run ids sort by their start). Either is a commit
        // the claims lead on from: the plan follows them to the newest, whatever this says.
        doc.last_committed_run = committed.max(doc.last_committed_run.take());
        if trigger == Trigger::Schedule {
            doc.last_scheduled_run_at = Some(record.started_at.clone());
        }
    })
    .await?;
    Ok(run)
}

/// The connection's last committed run, as the commit markers say: the state's last run when it
/// has a `_COMMITTED` marker, else its last committed run (when that has one); with no state, the
/// newest run with a marker. Runs of a connection are serialized by the lock and the state's
/// last run is always the newest, so only it can have committed unrecorded, or a run that
/// committed after a later one began, which [`write_state`] records. What the state shows, and
/// where the plan starts following the commit claims (see [`newest_commit_from`]).
pub async fn last_committed_run(
    store: &impl ObjectStore,
    connection_id: &str,
) -> Result<Option<String>, StepError> {
    let named: Vec<String> = read_state_or_none(store, connection_id)
        .await?
        .map(|state| {
            [state.last_run, state.last_committed_run]
                .into_iter()
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    for run_id in named {
        let run = RunRef {
            connection_id: connection_id.to_string(),
            run_id,
        };
        if store.get(&run.commit_marker()).await?.is_some() {
            return Ok(Some(run.run_id));
        }
    }
    // A state that names no committed run: a connection that never committed, or one whose state
    // was lost (deleted by hand, say) and written again since (a config put, a run that failed).
    // Its runs' markers say which committed last; else every open finding would be sent NEW again
    // and none fixed since closed.
    newest_committed(store, connection_id).await
}

/// How many runs' commit markers are asked for at once.
const MARKERS_READ_AT_ONCE: usize = 16;

/// The newest of the connection's runs with a commit marker, by its run folders.
async fn newest_committed(
    store: &impl ObjectStore,
    connection_id: &str,
) -> Result<Option<String>, StepError> {
    let mut runs = store
        .list_folders(&format!("connections/{connection_id}/runs/"))
        .await?;
    // Only run ids (they sort by their start): a folder put there by hand is no run.
    runs.retain(|name| is_run_id(name));
    for newest_first in runs.rchunks(MARKERS_READ_AT_ONCE) {
        let markers = futures_util::future::try_join_all(newest_first.iter().map(|run_id| {
            let run = RunRef {
                connection_id: connection_id.to_string(),
                run_id: run_id.clone(),
            };
            async move { store.get(&run.commit_marker()).await }
        }))
        .await?;
        if let Some((run_id, _)) = newest_first
            .iter()
            .zip(markers)
            .rev()
            .find(|(_, marker)| marker.is_some())
        {
            return Ok(Some(run_id.clone()));
        }
    }
    Ok(None)
}

/// The connection's newest commit, followed from `from` (a committed run; `None`: before the first
/// commit) through the commit claims (see [`commits`]): the state can name an older one (it is
/// written without a condition, and a run's begin can write back a state it read before another
/// run committed). A run that claimed its commit and has no marker (its finalize stopped between
/// the two writes) is finished on the way.
pub(crate) async fn newest_commit_from(
    store: &impl ObjectStore,
    connection_id: &str,
    from: Option<String>,
) -> Result<Option<String>, StepError> {
    let mut newest = from;
    let mut passed: std::collections::HashSet<String> = newest.iter().cloned().collect();
    while let Some((next, claim)) =
        commits::next_commit(store, connection_id, newest.as_deref()).await?
    {
        let key = commit_claim_key(connection_id, newest.as_deref());
        if !passed.insert(next.run_id.clone()) {
            return Err(StepError::bad_object(
                &key,
                format!(
                    "names run {}, which an earlier commit claim names too: the claims under connections/{connection_id}/commits/ loop, and no run writes such claims; delete those written by hand",
                    next.run_id
                ),
            ));
        }
        if store.get(&next.commit_marker()).await?.is_none() {
            let Some(marker) = commits::write_marker_from_claim(store, &next, claim).await? else {
                return Err(StepError::bad_object(
                    &key,
                    format!(
                        "names run {claimant} as the commit after {before}, but that run's manifest ({manifest}) is gone, so no run can reconcile against it. If the run was deleted on purpose, delete this claim too: the next run then reconciles against {before}",
                        claimant = next.run_id,
                        before = newest
                            .as_deref()
                            .map_or("no earlier run".to_string(), |r| format!("run {r}")),
                        manifest = next.manifest(),
                    ),
                ));
            };
            // Its marker stands: the run is committed whatever its record says, and a record or
            // manifest damaged since must not stop this run (a store error fails the plan, which
            // is tried again).
            match finish_after_marker(store, &next, &marker).await {
                Err(e @ StepError::BadObject { .. }) => {
                    tracing::warn!(run = %next.run_id, error = %e, "a run that claimed its commit could not be marked Processed");
                }
                other => {
                    other?;
                }
            }
        }
        newest = Some(next.run_id);
    }
    Ok(newest)
}

/// The commit marker of `run` where it committed: its `_COMMITTED` marker, or else its claim on
/// the commit after the run it reconciled against (the claim is the commit; its finalize stopped
/// before the marker, which is then written from it). `None` for a run not committed.
async fn commit_marker_of(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<Option<Bytes>, StepError> {
    /// What of the run's `plan.json` names the run it reconciles against.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct PlannedBase {
        previous_run: Option<String>,
    }
    if let Some(marker) = store.get(&run.commit_marker()).await? {
        return Ok(Some(marker));
    }
    // Finalize claims against the plan's run (the run record, written without a condition, can
    // lag it). A run without a readable plan never reached its claim.
    let Some(plan) = store.get(&run.plan()).await? else {
        return Ok(None);
    };
    let Ok(base) = serde_json::from_slice::<PlannedBase>(&plan) else {
        return Ok(None);
    };
    match commits::next_commit(store, &run.connection_id, base.previous_run.as_deref()).await {
        Ok(Some((claimant, claim))) if claimant.run_id == run.run_id => {
            commits::write_marker_from_claim(store, run, claim).await
        }
        // A claim written by hand names no run: the next plan says so.
        Ok(_) | Err(StepError::BadObject { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records that a run whose lock was taken over will never finish (its runner stopped, or its
/// execution ended without releasing the lock): Failed where it has neither a commit marker nor a
/// commit claim, so nothing of it was committed; a run that committed is finished instead.
async fn abandon(
    store: &impl ObjectStore,
    connection_id: &str,
    stale_run: &str,
    by: &str,
    why: &str,
) -> Result<(), StepError> {
    let stale = RunRef {
        connection_id: connection_id.to_string(),
        run_id: stale_run.to_string(),
    };
    match commit_marker_of(store, &stale).await {
        Ok(Some(marker)) => {
            // Committed, its finalize stopped after the claim or the marker: finished as far as
            // its objects allow, for its record and the state; the runs after follow its claim.
            if let Err(e) = finish_after_marker(store, &stale, &marker).await {
                tracing::warn!(run = %stale.run_id, error = %e, "a committed run whose lock was taken over could not be marked Processed");
            }
            return Ok(());
        }
        Ok(None) => {}
        Err(e) => {
            // Whether it committed is not known (its marker's write refused, say): not marked
            // Failed, and the lock, already this run's, is not left to a run that failed to
            // begin. A claim of it is finished by the next plan.
            tracing::warn!(run = %stale.run_id, error = %e, "whether a run whose lock was taken over committed could not be read; its record is left as it is");
            return Ok(());
        }
    }
    if let Some(mut record) = get_json::<RunRecord>(store, &stale.run_record()).await? {
        // A run Failed already (its failure recorded, the lock's release failed) keeps its reason.
        record.reason = Some(match (record.state, record.reason.take()) {
            (RunState::Failed, Some(reason)) => format!("{reason}; run {by} recovered the lock"),
            _ => format!("abandoned: {why}; run {by} recovered the lock"),
        });
        record.state = RunState::Failed;
        record.finished_at.get_or_insert_with(now_rfc3339);
        put_json(store, &stale.run_record(), &record).await?;
    }
    Ok(())
}

/// How long a takeover record may stand with the stale lock not yet replaced before its writer is
/// presumed gone (it stopped between the two writes): a trigger's invocation ends within 15 minutes.
const TAKEOVER_GRACE: Duration = Duration::from_secs(20 * 60);

/// Takeovers of one stale lock tried before giving up: each is one orphaned record.
const MAX_TAKEOVERS: u32 = 16;

/// Writes the takeover record of a stale lock (`key`, then `key.1`, `key.2`, … past records whose
/// writers stopped before replacing the lock: without them, one failed write of the lock after
/// its takeover refused the connection every run for good). Whether this runner won.
async fn take_over(store: &impl ObjectStore, key: &str, body: &Bytes) -> Result<bool, StepError> {
    for attempt in 0..MAX_TAKEOVERS {
        let key = match attempt {
            0 => key.to_string(),
            n => format!("{key}.{n}"),
        };
        if store.put_if_absent(&key, body.clone()).await? {
            return Ok(true);
        }
        let Some(earlier) = store.get(&key).await? else {
            // Refused for another runner's write in flight (S3 answers 409): that runner may
            // win it, so this one does not go on to the next record.
            return Ok(false);
        };
        // This write's own record, landed before a retry of it was refused.
        if earlier == *body {
            return Ok(true);
        }
        // A record that cannot be read names no writer that may still be at work.
        let earlier: Option<Lock> = serde_json::from_slice(&earlier).ok();
        if earlier.is_some_and(|takeover| !takeover.acquired_before(TAKEOVER_GRACE)) {
            return Ok(false);
        }
    }
    Ok(false)
}

/// Refuses a run that no longer holds its connection's lock: after its lease ran out, or its
/// execution ended (a redriven run), another run took the lock over (and marked this one
/// abandoned), or has finished and released it since; or the run's start failed and released it.
pub(crate) async fn ensure_holds_lock(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<(), StepError> {
    let holder: Option<Lock> = get_json(store, &lock_key(&run.connection_id)).await?;
    match holder {
        Some(lock) if lock.run_id == run.run_id => Ok(()),
        other => Err(StepError::LostLock {
            connection_id: run.connection_id.clone(),
            run_id: run.run_id.clone(),
            holder: other.map_or_else(
                || "no run holds it".to_string(),
                |lock| format!("run {} holds it", lock.run_id),
            ),
        }),
    }
}

/// Releases the lock if this run holds it.
async fn release(store: &impl ObjectStore, run: &RunRef) -> Result<(), StepError> {
    let key = lock_key(&run.connection_id);
    let holder: Option<Lock> = get_json(store, &key).await?;
    if holder.is_some_and(|l| l.run_id == run.run_id) {
        store.delete(&key).await?;
    }
    Ok(())
}

/// A run with a commit marker and its manifest: finishes what follows the marker (the run and the
/// connection Processed, with the reason when the run is partial; the lock released), each step
/// safe to repeat, and answers the manifest. `None` for a run not committed.
pub(crate) async fn finish_committed(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<Option<Manifest>, StepError> {
    let Some(marker) = commit_marker_of(store, run).await? else {
        return Ok(None);
    };
    finish_after_marker(store, run, &marker).await
}

/// What follows the commit `marker` found, from the run's manifest; `None` for a marker without
/// its manifest (deleted since).
async fn finish_after_marker(
    store: &impl ObjectStore,
    run: &RunRef,
    marker: &[u8],
) -> Result<Option<Manifest>, StepError> {
    let key = run.manifest();
    let Some(stored) = store.get(&key).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&stored)
        .map_err(|e| StepError::bad_object(&key, format!("unreadable ({e})")))?;
    restore_committed_manifest(store, run, marker, &stored, &manifest).await?;
    mark_committed(store, run, &manifest).await?;
    Ok(Some(manifest))
}

/// The commit marker's fields a manifest is checked against.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitMarker {
    manifest_sha256: String,
    committed_at: String,
}

/// Puts back the manifest the commit `marker`'s hash names where `stored` (what `manifest.json`
/// holds) is another: two finalize attempts at once (Step Functions retried one whose answer it
/// lost) both write `manifest.json`, and only the first marker stands. Their manifests differ
/// only in `finishedAt`, which each attempt also gives its marker as `committedAt`: `candidate`
/// (this attempt's, or the one stored) with the marker's time is the committed one, byte for
/// byte. Left as it is, and said, where even that does not match (the attempts decided
/// otherwise), or the marker cannot be read.
pub(crate) async fn restore_committed_manifest(
    store: &impl ObjectStore,
    run: &RunRef,
    marker: &[u8],
    stored: &[u8],
    candidate: &Manifest,
) -> Result<(), StepError> {
    let Ok(marker) = serde_json::from_slice::<CommitMarker>(marker) else {
        tracing::error!(run = %run.run_id, "the commit marker cannot be read; the manifest is not checked against it");
        return Ok(());
    };
    if sha256_hex(stored) == marker.manifest_sha256 {
        return Ok(());
    }
    let mut candidate = candidate.clone();
    candidate.finished_at = marker.committed_at;
    let body = serde_json::to_vec_pretty(&candidate).expect("serializes");
    if sha256_hex(&body) == marker.manifest_sha256 {
        tracing::warn!(run = %run.run_id, "another finalize attempt's manifest stood beside the commit marker; the committed one is put back");
        store.put(&run.manifest(), Bytes::from(body)).await?;
    } else {
        tracing::error!(run = %run.run_id, "the stored manifest is not the one the commit marker's hash names, and cannot be made again");
    }
    Ok(())
}

/// The most problems a partial run's reason names one by one; the manifest lists them all. A
/// tenant of thousands of projects can have a problem for each, and the reason is what `status`
/// shows.
const PROBLEMS_NAMED: usize = 5;

/// Why a run is partial, in a line: its first problems, and how many more the manifest holds.
fn partial_reason(problems: &[String], manifest_key: &str) -> String {
    let named: Vec<&str> = problems
        .iter()
        .take(PROBLEMS_NAMED)
        .map(String::as_str)
        .collect();
    let more = match problems.len().saturating_sub(PROBLEMS_NAMED) {
        0 => return named.join("; "),
        1 => "1 more problem".to_string(),
        n => format!("{n} more problems"),
    };
    format!(
        "{}; and {more}, each in the manifest's `problems` ({manifest_key})",
        named.join("; ")
    )
}

/// What follows the commit marker: the run and the connection are Processed (with the reason
/// when the run is partial), and the lock is released. Repeating it changes nothing.
pub(crate) async fn mark_committed(
    store: &impl ObjectStore,
    run: &RunRef,
    manifest: &Manifest,
) -> Result<(), StepError> {
    let reason = (!manifest.complete).then(|| partial_reason(&manifest.problems, &run.manifest()));
    update_run(store, run, |r| {
        r.state = RunState::Processed;
        r.reason = reason.clone();
        r.finished_at = Some(manifest.finished_at.clone());
    })
    .await?;
    let outcome = if reason.is_none() {
        RunOutcome::Complete
    } else {
        RunOutcome::Partial
    };
    write_state(store, run, RunState::Processed, Some(outcome), reason).await?;
    release(store, run).await
}

/// Marks the run and the connection Failed with the reason, and releases the lock. A run with a
/// commit marker (or its claim: see [`commits`]) is committed whatever failed after it (writing
/// the marker or the state, finalize's process dying): it is marked Processed, as finalize would
/// have, and its manifest answered. A run already Failed keeps its reason.
pub async fn fail_run(
    store: &impl ObjectStore,
    run: &RunRef,
    reason: &str,
) -> Result<Option<Manifest>, StepError> {
    if let Some(marker) = commit_marker_of(store, run).await? {
        tracing::error!(run = %run.run_id, reason, "a step after the commit failed; the run is committed: finishing it");
        let finished = finish_after_marker(store, run, &marker).await;
        // The lock goes whatever happened: the next start finds the last committed run by its
        // marker.
        release(store, run).await?;
        return finished;
    }
    let record = read_run(store, run).await?;
    if record.state == RunState::Failed {
        // Failed already (finalize records a run with nothing to commit, or an attempt died
        // between the record and the state): its reason stands, and the state says it too.
        write_state(store, run, RunState::Failed, None, record.reason).await?;
        return release(store, run).await.map(|()| None);
    }
    update_run(store, run, |r| {
        r.state = RunState::Failed;
        r.reason = Some(reason.to_string());
        r.finished_at = Some(now_rfc3339());
    })
    .await?;
    write_state(store, run, RunState::Failed, None, Some(reason.to_string())).await?;
    release(store, run).await.map(|()| None)
}

/// A run's items are collected only until this long after the trigger began the run, and
/// transformed only until [`TRANSFORM_ITEMS_WITHIN`]: a collect invocation started just before may
/// take its whole Timeout (15 minutes), the transform of its group after it, and finalize its own
/// with a retry, all before the execution's `TimeoutSeconds` (5 h 30 min from its start, which
/// comes after the run's), with minutes to spare for the transient retries' waits and children
/// still queued (not for the throttle retrier's: about 30 minutes on average).
/// An execution cut off there runs no finalize: the run would commit nothing.
/// scripts/check-infra.py checks these sums, and their margins, against the template.
pub const COLLECT_ITEMS_WITHIN: Duration = Duration::from_secs(4 * 3600 + 15 * 60);
/// See [`COLLECT_ITEMS_WITHIN`].
pub const TRANSFORM_ITEMS_WITHIN: Duration = Duration::from_secs(4 * 3600 + 35 * 60);

impl ItemDeadlines {
    /// The deadlines of a run the trigger began at `started`.
    pub fn from_run_start(started: jiff::Timestamp) -> Self {
        let after = |within: Duration| started.checked_add(within).unwrap_or(jiff::Timestamp::MAX);
        Self {
            collect_before: after(COLLECT_ITEMS_WITHIN),
            transform_before: after(TRANSFORM_ITEMS_WITHIN),
        }
    }
}

/// Refuses an item's start from `moment` on (the run's deadline for the step; `None`: none).
pub(crate) fn run_allows_start(moment: Option<jiff::Timestamp>) -> Result<(), StepError> {
    match moment {
        Some(moment) if jiff::Timestamp::now() >= moment => Err(StepError::RunTimeSpent {
            deadline: moment.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_partial_runs_reason_names_its_first_problems_and_counts_the_rest() {
        let problems: Vec<String> = (1..=12).map(|n| format!("project p{n}: doubt")).collect();
        assert_eq!(
            partial_reason(&problems[..2], "m.json"),
            "project p1: doubt; project p2: doubt"
        );
        assert_eq!(
            partial_reason(&problems[..PROBLEMS_NAMED], "m.json")
                .matches("doubt")
                .count(),
            PROBLEMS_NAMED
        );
        let long = partial_reason(&problems, "runs/r/manifest.json");
        assert!(long.starts_with("project p1: doubt; "), "{long}");
        assert!(
            long.contains("project p5: doubt; and 7 more problems"),
            "{long}"
        );
        assert!(long.ends_with("(runs/r/manifest.json)"), "{long}");
        assert!(!long.contains("p6"), "{long}");
        let one_more = partial_reason(&problems[..PROBLEMS_NAMED + 1], "m.json");
        assert!(
            one_more.contains("; and 1 more problem, each"),
            "{one_more}"
        );
    }

    #[test]
    fn runs_reconcile_within_one_tenant_region_and_sort_of_asset() {
        let scope = |tenant: &str, kind, region_host: Option<&str>| VendorScope {
            tenant: tenant.into(),
            kind,
            region_host: region_host.map(str::to_string),
        };
        let eu = scope("acme", ConnectorKind::Sast, Some("eu.iam.checkmarx.net"));
        for (other, reconciles) in [
            (
                scope("acme", ConnectorKind::Sca, Some("eu.iam.checkmarx.net")),
                true,
            ),
            (scope("acme", ConnectorKind::Sast, None), true),
            // One realm: the tenant's name lower-cased.
            (
                scope("Acme", ConnectorKind::Sast, Some("eu.iam.checkmarx.net")),
                true,
            ),
            (
                scope("acme", ConnectorKind::Sast, Some("iam.checkmarx.net")),
                false,
            ),
            (
                scope("globex", ConnectorKind::Sast, Some("eu.iam.checkmarx.net")),
                false,
            ),
            (
                scope("acme", ConnectorKind::Dast, Some("eu.iam.checkmarx.net")),
                false,
            ),
        ] {
            assert_eq!(eu.reconciles_with(&other), reconciles, "{other:?}");
            assert_eq!(other.reconciles_with(&eu), reconciles, "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_second_trigger_is_refused_and_a_stale_lock_is_recovered() {
        let store = MemoryStore::default();
        let first = begin_run(&store, "c1", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        let state = read_state(&store, "c1").await.unwrap().unwrap();
        assert_eq!(
            (state.state, state.last_run.as_deref()),
            (RunState::Scheduled, Some(first.run_id.as_str()))
        );
        let refused = begin_run(&store, "c1", Trigger::Schedule, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StepError::AlreadyRunning { run_id, .. } if *run_id == first.run_id),
            "{refused}"
        );
        assert!(!refused.is_retryable());

        fail_run(&store, &first, "collect failed").await.unwrap();
        assert_eq!(
            read_state(&store, "c1")
                .await
                .unwrap()
                .unwrap()
                .reason
                .as_deref(),
            Some("collect failed")
        );
        let second = begin_run(&store, "c1", Trigger::Api, Duration::ZERO)
            .await
            .unwrap();
        // `second` crashed holding a lock whose lease is already over: the next trigger recovers it.
        let third = begin_run(&store, "c1", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_ne!(second.run_id, third.run_id);
    }

    /// A run whose execution ended without releasing its lock: of the starts that find it so,
    /// exactly one takes the lock over; a start that finds the lock taken anew since is refused
    /// as usual, never taking a live run's lock for the ended one's.
    #[tokio::test]
    async fn an_ended_holder_gives_its_lock_to_one_start_and_never_a_live_runs() {
        let store = std::sync::Arc::new(MemoryStore::default());
        let lease = Duration::from_secs(3600);
        let stopped = begin_run(&*store, "c4", Trigger::Api, lease).await.unwrap();
        let ended = EndedHolder {
            run_id: stopped.run_id.clone(),
            end: HolderEnd::ExecutionEnded("ABORTED".into()),
        };
        let starts: Vec<_> = (0..8)
            .map(|_| {
                let (store, ended) = (store.clone(), ended.clone());
                tokio::spawn(async move {
                    begin_run_recovering(&*store, "c4", Trigger::Api, lease, &ended).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for start in starts {
            match start.await.unwrap() {
                Ok(run) => won.push(run),
                Err(refused) => assert!(
                    matches!(
                        refused,
                        StepError::LockTaken { .. } | StepError::AlreadyRunning { .. }
                    ),
                    "{refused}"
                ),
            }
        }
        assert_eq!(won.len(), 1, "exactly one start takes the lock over");
        let record = read_run(&*store, &stopped).await.unwrap();
        assert_eq!(record.state, RunState::Failed);
        assert!(
            record.reason.as_deref().is_some_and(
                |r| r.contains("its execution ended (ABORTED)") && r.contains(&won[0].run_id)
            ),
            "{:?}",
            record.reason
        );
        // The lock is the winner's now: the same ended holder takes nothing more.
        let refused = begin_run_recovering(&*store, "c4", Trigger::Api, lease, &ended)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StepError::AlreadyRunning { run_id, .. } if *run_id == won[0].run_id),
            "{refused}"
        );
    }

    /// A holder with no execution is one that will never run only while it still holds the lock,
    /// taken longer ago than the longest start, by the schedule or the API: never a local run's,
    /// even one whose record is not written yet. A lock that names no trigger (written before
    /// locks did) is judged by the run record, and kept without one.
    #[tokio::test]
    async fn a_holder_with_no_execution_never_started_only_once_its_trigger_has_ended() {
        let store = MemoryStore::default();
        let hour = Duration::from_secs(3600);
        let holder = RunRef {
            connection_id: "c6".into(),
            run_id: "20261122T000000Z-hold".into(),
        };
        let record = |trigger| RunRecord {
            connection_id: holder.connection_id.clone(),
            run_id: holder.run_id.clone(),
            trigger,
            state: RunState::Scheduled,
            reason: None,
            started_at: "2026-11-22T00:00:00Z".into(),
            finished_at: None,
            items: None,
            previous_run: None,
            scope: None,
        };
        let never = |run_id: &str, acquired_at: &str, trigger: Option<Trigger>| {
            let lock = Lock {
                run_id: run_id.into(),
                acquired_at: acquired_at.into(),
                expires_at: unix_now() + 3600,
                local_holder: None,
                trigger,
            };
            let (store, holder) = (&store, holder.clone());
            async move {
                put_json(store, &lock_key("c6"), &lock).await.unwrap();
                never_started_holder(store, holder, hour)
                    .await
                    .unwrap()
                    .map(|ended| ended.end)
            }
        };
        let long_ago = "2026-11-22T00:00:00Z";
        let id = holder.run_id.clone();
        let never_started = Some(HolderEnd::NeverStarted);
        // No run record yet: the lock's trigger decides.
        assert_eq!(
            never(&id, long_ago, Some(Trigger::Api)).await,
            never_started
        );
        assert_eq!(
            never(&id, long_ago, Some(Trigger::Schedule)).await,
            never_started
        );
        assert_eq!(never(&id, long_ago, Some(Trigger::Local)).await, None);
        assert_eq!(never(&id, &now_rfc3339(), Some(Trigger::Api)).await, None);
        assert_eq!(never(&id, "yesterday", Some(Trigger::Api)).await, None);
        assert_eq!(
            never("another-run", long_ago, Some(Trigger::Api)).await,
            None
        );
        // A lock that names no trigger.
        assert_eq!(never(&id, long_ago, None).await, None);
        put_json(&store, &holder.run_record(), &record(Trigger::Api))
            .await
            .unwrap();
        assert_eq!(never(&id, long_ago, None).await, never_started);
        put_json(&store, &holder.run_record(), &record(Trigger::Local))
            .await
            .unwrap();
        assert_eq!(never(&id, long_ago, None).await, None);
    }

    /// A run marked Failed whose state was not written (its attempt died between the two) is
    /// failed again by the retry: the state says Failed with the record's reason, the lock goes.
    #[tokio::test]
    async fn failing_a_run_again_writes_the_state_an_earlier_attempt_left_behind() {
        let store = MemoryStore::default();
        let run = begin_run(&store, "c8", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        start_processing(&store, &run).await.unwrap();
        update_run(&store, &run, |r| {
            r.state = RunState::Failed;
            r.reason = Some("plan failed (Fatal): 403".into());
        })
        .await
        .unwrap();
        fail_run(&store, &run, "plan failed (Runtime.ExitError): killed")
            .await
            .unwrap();
        let state = read_state(&store, "c8").await.unwrap().unwrap();
        assert_eq!(state.state, RunState::Failed);
        assert_eq!(state.reason.as_deref(), Some("plan failed (Fatal): 403"));
        assert!(store.get(&lock_key("c8")).await.unwrap().is_none());
    }

    /// A run already Failed whose lock stayed (its failure recorded, the release failed) keeps
    /// its reason when the lock is taken over.
    #[tokio::test]
    async fn a_failed_run_whose_lock_is_taken_over_keeps_its_reason() {
        let store = MemoryStore::default();
        let lease = Duration::from_secs(3600);
        let failed = begin_run(&store, "c5", Trigger::Api, lease).await.unwrap();
        update_run(&store, &failed, |r| {
            r.state = RunState::Failed;
            r.reason = Some("plan failed (Fatal): 403".into());
        })
        .await
        .unwrap();
        let ended = EndedHolder {
            run_id: failed.run_id.clone(),
            end: HolderEnd::ExecutionEnded("FAILED".into()),
        };
        let next = begin_run_recovering(&store, "c5", Trigger::Api, lease, &ended)
            .await
            .unwrap();
        let reason = read_run(&store, &failed).await.unwrap().reason.unwrap();
        assert_eq!(
            reason,
            format!(
                "plan failed (Fatal): 403; run {} recovered the lock",
                next.run_id
            )
        );
    }

    /// A runner that wrote the takeover record of a stale lock and then stopped before it wrote
    /// the lock (a failed write, a trigger cut off) refuses the next runner only while it might
    /// still be at work: after the grace, the next takeover record is taken.
    #[tokio::test]
    async fn a_takeover_whose_runner_stopped_before_the_lock_does_not_block_for_good() {
        let store = MemoryStore::default();
        let stale = begin_run(&store, "c3", Trigger::Api, Duration::ZERO)
            .await
            .unwrap();
        let takeover_key = lock_takeover_key("c3", &stale.run_id);
        let takeover = |minutes_ago: i64| Lock {
            run_id: "20261205T000000Z-000000".into(),
            acquired_at: (time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
            expires_at: unix_now() + 3600,
            local_holder: None,
            trigger: Some(Trigger::Api),
        };
        put_json(&store, &takeover_key, &takeover(1)).await.unwrap();
        let refused = begin_run(&store, "c3", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StepError::LockTaken { detail, .. } if detail.contains(&stale.run_id)),
            "{refused}"
        );

        put_json(&store, &takeover_key, &takeover(30))
            .await
            .unwrap();
        let next = begin_run(&store, "c3", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        let lock: Lock = get_json(&store, &lock_key("c3")).await.unwrap().unwrap();
        assert_eq!(lock.run_id, next.run_id);
        assert!(
            store
                .get(&format!("{takeover_key}.1"))
                .await
                .unwrap()
                .is_some(),
            "the next takeover record was taken"
        );
    }

    /// A store whose conditional write of `key` is refused as one in flight is (S3's 409): nothing
    /// written, and nothing there to read yet.
    struct InFlight {
        inner: MemoryStore,
        key: String,
    }

    impl ObjectStore for InFlight {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), crate::store::StoreError> {
            self.inner.put(key, body).await
        }
        async fn put_if_absent(
            &self,
            key: &str,
            body: Bytes,
        ) -> Result<bool, crate::store::StoreError> {
            if key == self.key {
                return Ok(false);
            }
            self.inner.put_if_absent(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, crate::store::StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), crate::store::StoreError> {
            self.inner.delete(key).await
        }
    }

    /// A takeover record refused for another runner's write in flight: that runner may win it, so
    /// this one is refused rather than taking the next record (both would have held the lock:
    /// two runs reconciling against the same committed run, and the state naming either).
    #[tokio::test]
    async fn a_takeover_record_another_runner_is_writing_refuses_this_one() {
        let inner = MemoryStore::default();
        let stale = begin_run(&inner, "c6", Trigger::Api, Duration::ZERO)
            .await
            .unwrap();
        let store = InFlight {
            inner,
            key: lock_takeover_key("c6", &stale.run_id),
        };
        let refused = begin_run(&store, "c6", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StepError::LockTaken { detail, .. } if detail.contains(&stale.run_id)),
            "{refused}"
        );
        let lock: Lock = get_json(&store, &lock_key("c6")).await.unwrap().unwrap();
        assert_eq!(lock.run_id, stale.run_id, "the lock is not taken");
        assert_eq!(
            store.list(&format!("{}.", store.key)).await.unwrap(),
            Vec::<String>::new(),
            "no next takeover record"
        );
    }

    /// A store on which `late` commits (its marker, then the state naming it the last committed
    /// run, as its late finalize's `write_state` does) the moment a starting run has found its
    /// marker absent.
    struct CommitsLate {
        inner: MemoryStore,
        late: RunRef,
        landed: std::sync::atomic::AtomicBool,
    }

    impl ObjectStore for CommitsLate {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), crate::store::StoreError> {
            self.inner.put(key, body).await
        }
        async fn put_if_absent(
            &self,
            key: &str,
            body: Bytes,
        ) -> Result<bool, crate::store::StoreError> {
            self.inner.put_if_absent(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, crate::store::StoreError> {
            let answer = self.inner.get(key).await?;
            let marker = self.late.commit_marker();
            if key == marker && !self.landed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.inner.put(&marker, Bytes::from_static(b"{}")).await?;
                let late = self.late.run_id.clone();
                update_state(&self.inner, &self.late.connection_id, |doc| {
                    doc.last_committed_run = Some(late);
                })
                .await
                .expect("the late commit records itself");
            }
            Ok(answer)
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), crate::store::StoreError> {
            self.inner.delete(key).await
        }
    }

    /// A run that commits after its lock was released (a late finalize attempt), recorded between
    /// a new run's read of the markers and its write of the state: the new run keeps the newer of
    /// the two. Before, it wrote back the older one the markers had named, and the run after
    /// reconciled against it, sending again what the late run had sent.
    #[tokio::test]
    async fn a_run_beginning_as_an_older_one_commits_late_keeps_the_newer_committed_run() {
        let inner = MemoryStore::default();
        let lease = Duration::from_secs(3600);
        let first = begin_run(&inner, "c7", Trigger::Api, lease).await.unwrap();
        inner
            .put(&first.commit_marker(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        update_state(&inner, "c7", |doc| {
            doc.last_committed_run = Some(first.run_id.clone());
        })
        .await
        .unwrap();
        release(&inner, &first).await.unwrap();
        // Run ids sort to the millisecond: the later run begins in a later one.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let late = begin_run(&inner, "c7", Trigger::Api, lease).await.unwrap();
        fail_run(&inner, &late, "its lock was released")
            .await
            .unwrap();
        let store = CommitsLate {
            inner,
            late: late.clone(),
            landed: false.into(),
        };
        let next = begin_run(&store, "c7", Trigger::Api, lease).await.unwrap();
        assert!(store.landed.load(std::sync::atomic::Ordering::SeqCst));
        let state = read_state(&store, "c7").await.unwrap().unwrap();
        assert_eq!(state.last_run.as_deref(), Some(next.run_id.as_str()));
        assert_eq!(
            state.last_committed_run.as_deref(),
            Some(late.run_id.as_str()),
            "the late run, newer than {}",
            first.run_id
        );
    }

    /// Writes `run`'s commit claim on `previous` and, where `marked`, its marker.
    async fn committed(store: &MemoryStore, run: &str, previous: Option<&str>, marked: bool) {
        let claim = Bytes::from(format!(r#"{{"runId":"{run}"}}"#));
        let key = commit_claim_key("c9", previous);
        assert!(store.put_if_absent(&key, claim.clone()).await.unwrap());
        if marked {
            let run = RunRef {
                connection_id: "c9".into(),
                run_id: run.into(),
            };
            store.put(&run.commit_marker(), claim).await.unwrap();
        }
    }

    /// The claims lead from any committed run, or from none, to the newest commit, whatever order
    /// the run ids sort in (the second run's clock was a year behind the first's).
    #[tokio::test]
    async fn the_claims_lead_to_the_newest_commit_whatever_order_run_ids_sort_in() {
        let store = MemoryStore::default();
        let (first, second, third) = (
            "20271201T000000Z-000001",
            "20261201T000000Z-000002",
            "20261201T010000Z-000003",
        );
        committed(&store, first, None, true).await;
        committed(&store, second, Some(first), true).await;
        committed(&store, third, Some(second), true).await;
        for from in [None, Some(first), Some(second), Some(third)] {
            let newest = newest_commit_from(&store, "c9", from.map(str::to_string))
                .await
                .unwrap();
            assert_eq!(newest.as_deref(), Some(third), "from {from:?}");
        }
        let other = MemoryStore::default();
        assert_eq!(
            newest_commit_from(&other, "c9", Some(first.into()))
                .await
                .unwrap()
                .as_deref(),
            Some(first),
            "a connection whose runs committed before the claims: the state's run"
        );
    }

    /// A late state write of a committed run (an attempt of its finalize that ran on after the
    /// next run began) names it the last committed run only while no run has claimed the commit
    /// after it, whatever order the run ids sort in (the older run's clock was a year ahead).
    #[tokio::test]
    async fn a_late_state_write_names_a_run_last_committed_only_while_no_commit_follows_it() {
        let store = MemoryStore::default();
        let (older, newer) = ("20271201T000000Z-000001", "20261201T000000Z-000002");
        let late = |run_id: &str| RunRef {
            connection_id: "c9".into(),
            run_id: run_id.into(),
        };
        let processed = |run_id: &'static str| {
            let run = late(run_id);
            let store = &store;
            async move {
                write_state(
                    store,
                    &run,
                    RunState::Processed,
                    Some(RunOutcome::Complete),
                    None,
                )
                .await
                .unwrap();
                read_state(store, "c9").await.unwrap().unwrap()
            }
        };
        committed(&store, older, None, true).await;
        let running = begin_run(&store, "c9", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        committed(&store, newer, Some(older), true).await;
        let state = processed(newer).await;
        assert_eq!(state.last_committed_run.as_deref(), Some(newer));
        let state = processed(older).await;
        assert_eq!(
            (state.last_committed_run.as_deref(), state.last_run),
            (Some(newer), Some(running.run_id)),
            "the run after it committed: it is not the newest"
        );
    }

    /// A run planned against `base` whose finalize wrote its manifest and claimed its commit, and
    /// stopped before the marker; its run record, written back by an overlapping plan attempt,
    /// names no run to reconcile against.
    async fn claimed_without_marker(store: &MemoryStore, run: &RunRef, base: &str) {
        let plan =
            serde_json::json!({"attempt": "0123456789abcdef", "previousRun": base, "problems": []});
        put_json(store, &run.plan(), &plan).await.unwrap();
        let manifest = Manifest {
            schema_version: "1.0".into(),
            connection_id: run.connection_id.clone(),
            run_id: run.run_id.clone(),
            kind: ConnectorKind::Sast,
            started_at: now_rfc3339(),
            finished_at: now_rfc3339(),
            complete: true,
            problems: Vec::new(),
            items_by_status: Default::default(),
            totals: Default::default(),
            totals_by_engine: Default::default(),
            carried_forward: 0,
            items: Vec::new(),
            filtered_items: Vec::new(),
            deleted_items: Vec::new(),
        };
        let body = serde_json::to_vec_pretty(&manifest).unwrap();
        store
            .put(&run.manifest(), body.clone().into())
            .await
            .unwrap();
        let marker = serde_json::json!({"runId": run.run_id, "complete": true, "manifestSha256": sha256_hex(&body), "committedAt": manifest.finished_at});
        let claim = commit_claim_key(&run.connection_id, Some(base));
        put_json(store, &claim, &marker).await.unwrap();
    }

    /// A run whose finalize claimed its commit and stopped before the marker, its lock then taken
    /// over: the takeover finds the claim by the plan's base (not the run record's), writes the
    /// marker from it and marks the run Processed, not abandoned.
    #[tokio::test]
    async fn a_run_that_claimed_its_commit_is_not_abandoned_when_its_lock_is_taken_over() {
        let store = MemoryStore::default();
        let stale = begin_run(&store, "c9", Trigger::Api, Duration::ZERO)
            .await
            .unwrap();
        claimed_without_marker(&store, &stale, "20261201T000000Z-000001").await;
        begin_run(&store, "c9", Trigger::Api, Duration::from_secs(3600))
            .await
            .expect("the stale lock is taken over");
        assert!(store.get(&stale.commit_marker()).await.unwrap().is_some());
        let record = read_run(&store, &stale).await.unwrap();
        assert_eq!(record.state, RunState::Processed, "{:?}", record.reason);
    }

    /// The same takeover with the stale run's marker refused for a write in flight: whether it
    /// committed cannot be read, so it is not marked Failed, and the run that takes over its
    /// lock still begins (its lock is not left to a run that failed to begin).
    #[tokio::test]
    async fn a_takeover_that_cannot_read_whether_the_run_committed_still_begins() {
        let inner = MemoryStore::default();
        let stale = begin_run(&inner, "c9", Trigger::Api, Duration::ZERO)
            .await
            .unwrap();
        claimed_without_marker(&inner, &stale, "20261201T000000Z-000001").await;
        let store = InFlight {
            inner,
            key: stale.commit_marker(),
        };
        let next = begin_run(&store, "c9", Trigger::Api, Duration::from_secs(3600))
            .await
            .expect("the stale lock is taken over");
        let lock: Lock = get_json(&store, &lock_key("c9")).await.unwrap().unwrap();
        assert_eq!(lock.run_id, next.run_id);
        assert_eq!(
            read_run(&store, &stale).await.unwrap().state,
            RunState::Scheduled
        );
    }

    /// The marker of a run that claimed its commit, refused for another write in flight (S3's
    /// 409, that write never landing): the run's failure path answers a retryable error and
    /// neither marks it Failed nor Processed; once the store takes the write, it commits.
    #[tokio::test]
    async fn a_claimed_runs_marker_refused_for_a_write_in_flight_is_not_taken_as_written() {
        let inner = MemoryStore::default();
        let run = begin_run(&inner, "c9", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        claimed_without_marker(&inner, &run, "20261201T000000Z-000001").await;
        let store = InFlight {
            inner,
            key: run.commit_marker(),
        };
        let refused = fail_run(&store, &run, "finalize failed").await.unwrap_err();
        assert!(
            refused.is_retryable() && refused.to_string().contains("_COMMITTED"),
            "{refused}"
        );
        assert!(store.get(&run.commit_marker()).await.unwrap().is_none());
        assert_eq!(
            read_run(&store, &run).await.unwrap().state,
            RunState::Scheduled
        );
        let committed = fail_run(&store.inner, &run, "finalize failed")
            .await
            .unwrap()
            .expect("the committed run's manifest");
        assert_eq!(committed.run_id, run.run_id);
        assert_eq!(
            read_run(&store.inner, &run).await.unwrap().state,
            RunState::Processed
        );
    }

    /// Claims that loop (written by hand), and a claim whose run's manifest is gone, are refused
    /// with the claim's key and what to do, not followed for ever nor skipped.
    #[tokio::test]
    async fn claims_that_loop_or_name_a_run_without_its_manifest_are_refused_with_what_to_do() {
        let store = MemoryStore::default();
        let (first, second) = ("20261201T000000Z-000001", "20261201T010000Z-000002");
        committed(&store, first, None, true).await;
        committed(&store, second, Some(first), true).await;
        committed(&store, first, Some(second), true).await;
        let refused = newest_commit_from(&store, "c9", None).await.unwrap_err();
        assert!(
            matches!(&refused, StepError::BadObject { key, problem } if *key == commit_claim_key("c9", Some(second)) && problem.contains("loop")),
            "{refused}"
        );

        let store = MemoryStore::default();
        committed(&store, first, None, true).await;
        committed(&store, second, Some(first), false).await;
        let refused = newest_commit_from(&store, "c9", Some(first.into()))
            .await
            .unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains(&commit_claim_key("c9", Some(first)))
                && message.contains("manifest")
                && message.contains("delete this claim")
                && message.ends_with(&format!("reconciles against run {first}")),
            "{message}"
        );
        let second = RunRef {
            connection_id: "c9".into(),
            run_id: second.into(),
        };
        assert!(
            store.get(&second.commit_marker()).await.unwrap().is_none(),
            "no marker for a run with nothing to commit"
        );
    }

    #[tokio::test]
    async fn a_lock_held_by_a_local_runner_that_died_is_recovered_at_once() {
        let store = MemoryStore::default();
        let crashed = begin_run(&store, "c2", Trigger::Local, Duration::from_secs(3600))
            .await
            .unwrap();
        let mut lock: Lock = get_json(&store, &lock_key("c2")).await.unwrap().unwrap();
        let holder = lock
            .local_holder
            .clone()
            .expect("a local run names its process");
        assert_eq!(holder.pid, std::process::id());
        let refused = begin_run(&store, "c2", Trigger::Local, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StepError::AlreadyRunning { .. }),
            "{refused}"
        );

        // The same lock, as if its process had exited: no process has pid u32::MAX.
        lock.local_holder = Some(LocalHolder {
            pid: u32::MAX,
            ..holder
        });
        put_json(&store, &lock_key("c2"), &lock).await.unwrap();
        let next = begin_run(&store, "c2", Trigger::Local, Duration::from_secs(3600))
            .await
            .unwrap();
        let record: RunRecord = get_json(&store, &crashed.run_record())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.state, RunState::Failed);
        assert!(
            record.reason.unwrap().contains(&next.run_id),
            "the abandoned run names the run that recovered its lock"
        );
    }

    /// Eight runners find the same stale lock at once, twenty times over, on a directory and in
    /// memory: exactly one takes it over each time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_of_many_racing_runners_takes_over_a_stale_lock() {
        let dir = std::env::temp_dir().join(format!("cxone-etm-lock-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let local = std::sync::Arc::new(Jittery(crate::store::LocalStore::new(&dir)));
        let memory = std::sync::Arc::new(Jittery(MemoryStore::default()));
        for trial in 0..20 {
            let connection = format!("race-{trial}");
            let on_disk = race(local.clone(), &connection).await;
            let in_memory = race(memory.clone(), &connection).await;
            assert_eq!(
                (on_disk, in_memory),
                (1, 1),
                "trial {trial}: runners that took the lock"
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }

    /// A store whose every call first waits a random moment, as calls to S3 do, so racing
    /// runners interleave between their reads and writes.
    struct Jittery<S>(S);

    async fn jitter() {
        tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 2000)).await;
    }

    impl<S: ObjectStore> ObjectStore for Jittery<S> {
        async fn put(&self, key: &str, body: Bytes) -> Result<(), crate::store::StoreError> {
            jitter().await;
            self.0.put(key, body).await
        }
        async fn put_if_absent(
            &self,
            key: &str,
            body: Bytes,
        ) -> Result<bool, crate::store::StoreError> {
            jitter().await;
            self.0.put_if_absent(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, crate::store::StoreError> {
            jitter().await;
            self.0.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::store::StoreError> {
            jitter().await;
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), crate::store::StoreError> {
            jitter().await;
            self.0.delete(key).await
        }
    }

    async fn race<S: ObjectStore + 'static>(store: std::sync::Arc<S>, connection: &str) -> usize {
        // A lease of 0 s: the first run's lock is stale at once, as if it had crashed.
        begin_run(&*store, connection, Trigger::Api, Duration::from_secs(0))
            .await
            .unwrap();
        let runners: Vec<_> = (0..8)
            .map(|_| {
                let (store, connection) = (store.clone(), connection.to_string());
                tokio::spawn(async move {
                    begin_run(
                        &*store,
                        &connection,
                        Trigger::Api,
                        Duration::from_secs(3600),
                    )
                    .await
                    .is_ok()
                })
            })
            .collect();
        let mut winners = 0;
        for runner in runners {
            winners += usize::from(runner.await.unwrap());
        }
        winners
    }

    #[test]
    fn run_ids_of_one_second_sort_in_start_order() {
        let second = time::macros::datetime!(2026-12-01 15:46:19 UTC);
        let ids: Vec<String> = [0u32, 1, 499, 998, 999]
            .iter()
            .zip([u32::MAX, 0, 7, u32::MAX, 0])
            .map(|(ms, random)| {
                run_id_at(
                    second + time::Duration::milliseconds(i64::from(*ms)),
                    random,
                )
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert!(
            ids.iter()
                .all(|id| id.len() == "20261201T154619Z-1a2b3c".len())
        );
        assert!(ids.iter().all(|id| is_run_id(id)) && is_run_id(&new_run_id()));
        for not_a_run in [
            "backup-20261201",
            "20261201T154619Z-1a2b3",
            "20261201T154619Z-1A2B3C",
            "20261201T154619Z_1a2b3c",
            "2026120xT154619Z-1a2b3c",
        ] {
            assert!(!is_run_id(not_a_run), "{not_a_run}");
        }
    }

    /// A step of an old run that comes late (its lock taken over, a newer run begun) leaves the
    /// newer run's state alone; a run already Failed keeps its reason.
    #[tokio::test]
    async fn a_late_step_of_an_old_run_does_not_overwrite_the_newer_runs_state() {
        let store = MemoryStore::default();
        let old = begin_run(&store, "c3", Trigger::Api, Duration::ZERO)
            .await
            .unwrap();
        let new = begin_run(&store, "c3", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap();
        // The takeover marked the old run Failed; its late failure keeps that reason.
        fail_run(&store, &old, "late failure").await.unwrap();
        let record = read_run(&store, &old).await.unwrap();
        assert!(record.reason.unwrap().contains("abandoned"));
        // A late state write of the old run, which has no marker, changes nothing.
        write_state(
            &store,
            &old,
            RunState::Processed,
            Some(RunOutcome::Complete),
            None,
        )
        .await
        .unwrap();
        let state = read_state(&store, "c3").await.unwrap().unwrap();
        assert_eq!(
            (state.state, state.last_run.as_deref()),
            (RunState::Scheduled, Some(new.run_id.as_str()))
        );
        assert_eq!(
            state.last_committed_run, None,
            "the old run committed nothing"
        );
        assert!(
            store.get(&lock_key("c3")).await.unwrap().is_some(),
            "the newer run keeps its lock"
        );
    }

    #[tokio::test]
    async fn an_unreadable_lock_does_not_block_its_connection() {
        let store = MemoryStore::default();
        // What a crash between creating and writing the lock left on a store without atomic writes.
        store.put(&lock_key("c1"), Bytes::new()).await.unwrap();
        let run = begin_run(&store, "c1", Trigger::Api, Duration::from_secs(3600))
            .await
            .expect("an empty lock names no live holder");
        let refused = begin_run(&store, "c1", Trigger::Api, Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains(&run.run_id), "{refused}");
    }
}
