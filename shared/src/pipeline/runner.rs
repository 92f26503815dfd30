//! The local runner: the same steps as the state machine, in process, with the same item
//! concurrency cap (the state machine's MaxConcurrency) and one more attempt for a retryable item.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::RunRef;
use super::config::Connection;
use super::lifecycle::{Trigger, begin_run, fail_run};
use super::steps::{
    Manifest, StepError, VendorAccess, WorkItem, collect, finalize, plan, record_collect_failure,
    transform,
};
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
    pub findings_by_severity: BTreeMap<String, u64>,
    pub fixed: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub batches: u64,
    pub duration_ms: u64,
    pub manifest: String,
    pub problems: Vec<String>,
}

impl RunSummary {
    fn from(manifest: &Manifest, run: &RunRef, started: Instant) -> Self {
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
            batches: manifest.items.iter().map(|i| i.objects.len() as u64).sum(),
            duration_ms: started.elapsed().as_millis() as u64,
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
) -> Result<(), StepError> {
    let mut last = None;
    for _attempt in 0..2 {
        match collect(store, vendor, item).await {
            Ok(_) => {
                // Writes the item's transform record whatever its status; only complete items get batches.
                transform(store, connection, item).await?;
                return Ok(());
            }
            Err(error) if error.retryable => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    let error = last.expect("two attempts were made");
    record_collect_failure(
        store,
        item,
        &format!("{}; the item was tried twice", error.message),
    )
    .await?;
    Err(error)
}

/// Runs a connection end to end: lock, plan, collect + transform every item (at most
/// `item_concurrency` at once), finalize. `on_item` is called as each item finishes.
pub async fn run_connection(
    store: &impl ObjectStore,
    connection: &Connection,
    secret: SecretSource,
    trigger: Trigger,
    on_planned: &(dyn Fn(u64) + Sync),
    on_item: &(dyn Fn(&WorkItem) + Sync),
) -> Result<RunSummary, StepError> {
    let started = Instant::now();
    let run = begin_run(store, &connection.config.id, trigger, LOCK_LEASE).await?;
    let result = async {
        let vendor = VendorAccess::new(connection.vendor.clone(), secret).await?;
        let items = plan(store, &vendor, connection, &run).await?;
        on_planned(items.len() as u64);
        let vendor = &vendor;
        let failures: Vec<(String, StepError)> = futures_util::stream::iter(items.iter())
            .map(|item| async move {
                let result = process(store, vendor, connection, item).await;
                on_item(item);
                result.err().map(|e| (item.item.clone(), e))
            })
            .buffer_unordered(connection.config.item_concurrency)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        for (item, error) in &failures {
            tracing::warn!(item, error = %error, "item failed; finalize records it");
        }
        finalize(store, connection, &run).await
    }
    .await;
    match result {
        Ok(manifest) => Ok(RunSummary::from(&manifest, &run, started)),
        Err(error) => {
            tracing::error!(run = %run.run_id, error = %error, "run failed");
            if let Err(also) = fail_run(store, &run, &error.message).await {
                tracing::error!(error = %also, "could not record the failed run");
            }
            Err(error)
        }
    }
}
