//! The local runner: the same steps as the state machine, in process, with the same item
//! concurrency cap (the state machine's MaxConcurrency) and one more attempt for a retryable item.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::access::VendorAccess;
use super::collect::{collect, record_collect_failure};
use super::config::Connection;
use super::documents::{Manifest, WorkItem};
use super::error::StepError;
use super::finalize::finalize;
use super::objects::put_json;
use super::plan::plan;
use super::run::{Trigger, begin_run, fail_run};
use super::transform::transform;
use crate::Engine;
use crate::cxone::CounterSnapshot;
use crate::cxone::Severity;
use crate::layout::RunRef;
use crate::secret::SecretSource;
use crate::store::ObjectStore;

/// How long a run may hold its connection's lock before another trigger may take it over.
pub const LOCK_LEASE: Duration = Duration::from_secs(6 * 3600);

/// What a run did, for people and scripts.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub connection_id: String,
    pub run_id: String,
    pub complete: bool,
    pub items: u64,
    pub items_by_status: BTreeMap<String, u64>,
    pub records_in: u64,
    pub findings: u64,
    pub findings_by_severity: BTreeMap<Severity, u64>,
    pub fixed: u64,
    pub rejected: u64,
    pub skipped: u64,
    /// Per engine the connection delivers: what came in, went out and was rejected.
    pub by_engine: BTreeMap<Engine, EngineSummary>,
    pub batches: u64,
    /// The state machine's children this run's work list makes (groups of items): each is
    /// billed its start and its tasks.
    pub child_executions: u64,
    pub duration_ms: u64,
    /// Time per stage; collect and transform are summed over items (they overlap across items).
    pub stage_ms: StageTimes,
    /// What the vendor client did: requests, retries, 429s, re-authentications, bytes.
    pub vendor: CounterSnapshot,
    pub manifest: String,
    pub problems: Vec<String>,
}

/// One engine's part of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineSummary {
    pub records_in: u64,
    pub findings: u64,
    pub rejected: u64,
    pub duplicates: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StageTimes {
    pub plan: u64,
    pub collect: u64,
    pub transform: u64,
    pub finalize: u64,
}

/// Stage clocks shared by the items running at once.
#[derive(Default)]
struct StageClock {
    collect_us: AtomicU64,
    transform_us: AtomicU64,
}

impl StageClock {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

impl RunSummary {
    fn from(
        manifest: &Manifest,
        run: &RunRef,
        started: Instant,
        stage_ms: StageTimes,
        vendor: CounterSnapshot,
        child_executions: u64,
    ) -> Self {
        let t = &manifest.totals;
        Self {
            connection_id: manifest.connection_id.clone(),
            run_id: manifest.run_id.clone(),
            complete: manifest.complete,
            items: manifest.items.len() as u64,
            items_by_status: manifest.items_by_status.clone(),
            records_in: t.records_in,
            findings: t.findings_out,
            findings_by_severity: t.by_severity.clone(),
            fixed: t.fixed,
            rejected: t.rejected,
            skipped: t.skipped(),
            by_engine: manifest
                .totals_by_engine
                .iter()
                .map(|(engine, f)| {
                    let summary = EngineSummary {
                        records_in: f.records_in,
                        findings: f.findings_out,
                        rejected: f.rejected,
                        duplicates: f.duplicates,
                    };
                    (*engine, summary)
                })
                .collect(),
            batches: manifest.items.iter().map(|i| i.objects.len() as u64).sum(),
            child_executions,
            duration_ms: started.elapsed().as_millis() as u64,
            stage_ms,
            vendor,
            manifest: run.manifest(),
            problems: manifest.problems.clone(),
        }
    }
}

/// Collects and transforms one item, with one more attempt when the failure is retryable.
async fn process(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    item: &WorkItem,
    clock: &StageClock,
) -> Result<(), StepError> {
    let mut last = None;
    for _attempt in 0..2 {
        let collecting = Instant::now();
        // The outcome is in the store, where the transform reads it: dropped here, not held
        // through the transform (a large scan's repeated ids are tens of MB).
        let collected = collect(store, vendor, connection, item, None)
            .await
            .map(drop);
        StageClock::add(&clock.collect_us, collecting);
        match collected {
            Ok(()) => {
                // Writes the item's transform record whatever its status; only complete items get batches.
                let transforming = Instant::now();
                let transformed = transform(store, connection, item).await;
                StageClock::add(&clock.transform_us, transforming);
                return match transformed {
                    // A part of a split scan collected before another: that one's transform joins them.
                    Err(StepError::WaitingForPart { .. }) => Ok(()),
                    transformed => transformed.map(|_| ()),
                };
            }
            Err(error) if error.is_retryable() => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    let error = last.expect("two attempts were made");
    record_collect_failure(
        store,
        item,
        &format!("{error}; the item was tried twice"),
        Default::default(),
    )
    .await?;
    Err(error)
}

/// Runs a connection end to end: lock, plan, collect + transform every item (at most
/// `item_concurrency` at once, each item a task of its own so they use every core), finalize.
/// `on_item` is called as each item finishes.
pub async fn run_connection<S: ObjectStore + Clone + 'static>(
    store: &S,
    connection: &Connection,
    secret: SecretSource,
    trigger: Trigger,
    on_planned: &(dyn Fn(u64) + Sync),
    on_item: &(dyn Fn(&WorkItem) + Sync),
) -> Result<RunSummary, StepError> {
    let never = std::future::pending();
    run_connection_until(
        store, connection, secret, trigger, on_planned, on_item, never,
    )
    .await
}

/// [`run_connection`], stopped when `stop` resolves (to what stopped it: the command line's
/// Ctrl-C): the run then fails as any failure does, its record saying so, and its lock goes.
pub async fn run_connection_until<S: ObjectStore + Clone + 'static>(
    store: &S,
    connection: &Connection,
    secret: SecretSource,
    trigger: Trigger,
    on_planned: &(dyn Fn(u64) + Sync),
    on_item: &(dyn Fn(&WorkItem) + Sync),
    stop: impl std::future::Future<Output = &'static str>,
) -> Result<RunSummary, StepError> {
    let started = Instant::now();
    let connection = Arc::new(connection.clone());
    let run = begin_run(store, &connection.config.id, trigger, LOCK_LEASE).await?;
    let clock = Arc::new(StageClock::default());
    let mut stages = StageTimes::default();
    let item_concurrency = connection.config.item_concurrency;
    let mut child_executions = 0;
    let mut vendor_used = None;
    let work =
        async {
            // The config the run began with, as a deployed run keeps it: what ran, whatever is
            // put meanwhile (a local run into a bucket leaves the stored config alone).
            put_json(store, &run.config(), &connection.config).await?;
            let planning = Instant::now();
            let vendor = Arc::new(VendorAccess::new(connection.vendor.clone(), secret).await?);
            vendor_used = Some(vendor.clone());
            let groups = plan(store, &vendor, &connection, &run, item_concurrency).await?;
            child_executions = groups.len() as u64;
            let items: Vec<WorkItem> = groups.into_iter().flat_map(|g| g.items).collect();
            stages.plan = planning.elapsed().as_millis() as u64;
            on_planned(items.len() as u64);
            let failures: Vec<(String, StepError)> = futures_util::stream::iter(items)
            .map(|item| {
                let (store, vendor, connection, clock) =
                    (store.clone(), vendor.clone(), connection.clone(), clock.clone());
                async move {
                    let task = tokio::spawn({
                        let item = item.clone();
                        async move { process(&store, &vendor, &connection, &item, &clock).await }
                    });
                    let result = task.await.unwrap_or_else(|stopped| {
                        Err(match stopped.try_into_panic() {
                            Ok(panic) => StepError::from_panic(panic),
                            Err(cancelled) => StepError::TaskStopped(cancelled.to_string()),
                        })
                    });
                    on_item(&item);
                    result.err().map(|e| (item.item.clone(), e))
                }
            })
            .buffer_unordered(item_concurrency)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
            for (item, error) in &failures {
                tracing::warn!(item, error = %error, "item failed; finalize records it");
            }
            let finalizing = Instant::now();
            let manifest: Result<_, StepError> = finalize(store, &connection, &run).await;
            stages.finalize = finalizing.elapsed().as_millis() as u64;
            manifest
        };
    // Stopped, the run fails as any failure does: its record says why and its lock goes, where
    // the process killed outright leaves its lock for the lease (a start elsewhere, the deployed
    // trigger's, cannot tell the holder is gone). One that committed already is answered so.
    let result = tokio::select! {
        result = work => result,
        by = stop => Err(StepError::RunFailed(format!("stopped by {by}; run it again"))),
    };
    stages.collect = clock.collect_us.load(Ordering::Relaxed) / 1000;
    stages.transform = clock.transform_us.load(Ordering::Relaxed) / 1000;
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(error) => match fail_run(store, &run, &error.to_string()).await {
            // What failed came after the commit marker (finalize marking the run Processed): the
            // run is committed, `fail_run` finished it (and logged the error), and it is answered
            // as committed.
            Ok(Some(manifest)) => manifest,
            Ok(None) => {
                tracing::error!(run = %run.run_id, error = %error, "run failed");
                return Err(error);
            }
            Err(also) => {
                tracing::error!(run = %run.run_id, error = %error, "run failed");
                tracing::error!(error = %also, "could not record the failed run");
                return Err(error);
            }
        },
    };
    // A run with a manifest got as far as its vendor client.
    let counters = match &vendor_used {
        Some(vendor) => vendor.client().await.counters(),
        None => Default::default(),
    };
    Ok(RunSummary::from(
        &manifest,
        &run,
        started,
        stages,
        counters,
        child_executions,
    ))
}
