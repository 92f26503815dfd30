//! The four steps: plan (list the items, find SAST scans in batches, write the work list), collect
//! (one item: page its scan's results into raw pages, prove completeness), transform (one item:
//! raw pages → ETM batches) and finalize (manifest, commit marker last, state, lock).

use std::collections::{BTreeMap, HashMap};

use futures_util::{StreamExt, TryStreamExt};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{BranchPolicy, Connection, Filters};
use super::lifecycle::{RunState, read_state, release, update_run, write_state};
use super::{RunRef, get_json, gunzip, gzip, item_key, now_rfc3339, put_json};
use crate::ConnectorKind;
use crate::secret::SecretSource;
use crate::store::ObjectStore;
use crate::transform::{
    Collision, Figures, ItemTransformer, Ledger, Rejected, TransformContext, close_all,
};
use crate::vendor::{
    AuthError, Completeness, Counters, CxOneClient, LastScan, LastScanQuery, PageSource,
    VendorConfig, VendorError, counted,
};

/// A step that could not finish. `retryable` tells Step Functions (and the local runner) whether
/// another attempt may succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub retryable: bool,
    pub message: String,
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

/// One line of the work list: a project (SAST) or an environment (DAST) to collect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkItem {
    pub run: RunRef,
    /// The item's key segment in the bucket.
    pub item: String,
    pub vendor_id: String,
    pub name: String,
    pub kind: ConnectorKind,
    /// SAST: the latest completed SAST scan, found by the plan in batches; DAST: found by collect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_id: Option<String>,
    /// The branch of the SAST scan (a change of branch holds closures for one run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_branch: Option<String>,
    /// SAST: also pull the scan's severities before triage (the connection's `original_severity`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_severity: bool,
    /// When the SAST scan was made (for the look-back window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_created: Option<String>,
    /// The project or environment record as the vendor sent it.
    pub record: Value,
    /// The connection's last committed run when this run was planned: its ledgers are what the
    /// findings are reconciled against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Every result arrived (fetched == total) and was transformed.
    Complete,
    /// The item has no completed scan: nothing to ingest, nothing missing.
    NoScan,
    /// Results missing or the total moved: not transformed; previous findings are kept as they were.
    Incomplete,
    /// The vendor refused the item (e.g. 403) or a step failed.
    Failed,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `raw/<item>/collect.json`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectOutcome {
    pub item: String,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_id: Option<String>,
    pub pages: u32,
    /// Pages of severities before triage (`original-<n>.json.gz`), when the item asked for them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub original_pages: u32,
    pub completeness: Completeness,
    /// The vendor traffic of this item alone.
    #[serde(default)]
    pub traffic: ItemTraffic,
}

/// Time and vendor traffic of one item's collection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemTraffic {
    pub duration_ms: u64,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub bytes: u64,
}

/// An object written by the transform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEntry {
    pub key: String,
    pub lines: u64,
    pub findings: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// `etm/<item>/transform.json`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformRecord {
    pub item: String,
    pub figures: Figures,
    pub rejected: Vec<Rejected>,
    pub collisions: Vec<Collision>,
    pub objects: Vec<ObjectEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestItem {
    pub item: String,
    pub vendor_id: String,
    pub name: String,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_id: Option<String>,
    pub records_expected: u64,
    pub records_fetched: u64,
    pub figures: Figures,
    #[serde(default)]
    pub carried_forward: u64,
    #[serde(default)]
    pub traffic: ItemTraffic,
    pub objects: Vec<ObjectEntry>,
    pub rejected: Vec<Rejected>,
    pub collisions: Vec<Collision>,
}

/// `runs/<r>/manifest.json`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: String,
    pub connection_id: String,
    pub run_id: String,
    pub kind: ConnectorKind,
    pub started_at: String,
    pub finished_at: String,
    /// True only when every item is complete (or has no scan) and the item list itself was complete.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub items_by_status: BTreeMap<String, u64>,
    pub totals: Figures,
    /// Open findings of incomplete or failed items, carried forward unchanged.
    #[serde(default)]
    pub carried_forward: u64,
    pub items: Vec<ManifestItem>,
    /// Projects or environments the connection's filters left out (their findings are carried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filtered_items: Vec<FilteredItem>,
    /// Projects or environments of the previous committed run that the tenant no longer lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_items: Vec<DeletedItem>,
}

/// A project or environment the connection's filters left out of this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilteredItem {
    pub item: String,
    pub vendor_id: String,
    pub name: String,
    pub reason: String,
}

/// An asset whose project or environment disappeared since the previous committed run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedItem {
    pub item: String,
    pub vendor_id: String,
    pub open_findings: u64,
    /// True when the connection's policy closed its findings (closure records in `objects`).
    pub closed: bool,
    pub objects: Vec<ObjectEntry>,
}

/// The vendor client with the credential behind it: rebuilt once with a re-read secret when the
/// vendor rejects the credential, so a rotated key is picked up mid-run.
pub struct VendorAccess {
    config: VendorConfig,
    secret: SecretSource,
    client: tokio::sync::RwLock<CxOneClient>,
    /// When the secret was last re-read: at most once a minute, so a refused credential does not
    /// hammer the secret store, while a long-lived process still picks up each later rotation.
    renewed_at: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl VendorAccess {
    pub async fn new(config: VendorConfig, secret: SecretSource) -> Result<Self, StepError> {
        let credential = secret
            .credential()
            .await
            .map_err(|e| StepError::fatal(e.to_string()))?;
        let client = CxOneClient::new(config.clone(), &credential)
            .map_err(|e| StepError::fatal(e.to_string()))?;
        Ok(Self {
            config,
            secret,
            client: tokio::sync::RwLock::new(client),
            renewed_at: tokio::sync::Mutex::new(None),
        })
    }

    /// How many vendor requests may be in flight at once.
    pub fn concurrency(&self) -> usize {
        self.config.concurrency
    }

    pub async fn client(&self) -> CxOneClient {
        self.client.read().await.clone()
    }

    /// After the vendor refused the credential: re-read the secret once and rebuild the client.
    async fn renew(&self) -> bool {
        {
            let mut renewed_at = self.renewed_at.lock().await;
            if renewed_at.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(60)) {
                return false;
            }
            *renewed_at = Some(std::time::Instant::now());
        }
        let Ok(credential) = self.secret.refresh().await else {
            return false;
        };
        match CxOneClient::new(self.config.clone(), &credential) {
            Ok(client) => {
                *self.client.write().await = client;
                tracing::info!("credential re-read after the vendor refused it");
                true
            }
            Err(_) => false,
        }
    }
}

fn credential_refused(error: &VendorError) -> bool {
    matches!(
        error,
        VendorError::Unauthorized { .. }
            | VendorError::Auth(
                AuthError::BadApiKey { .. } | AuthError::BadClientCredentials { .. }
            )
    )
}

/// What collecting one item can fail on: the vendor, or the store its pages go to. A store error
/// stays a store error (transient: the state machine retries the item), never a vendor refusal.
#[derive(Debug, thiserror::Error)]
enum CollectError {
    #[error(transparent)]
    Vendor(#[from] VendorError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// An error that may say the vendor refused the credential (so renewing it may help).
trait MayRefuseCredential {
    fn credential_refused(&self) -> bool;
}

impl MayRefuseCredential for VendorError {
    fn credential_refused(&self) -> bool {
        credential_refused(self)
    }
}

impl MayRefuseCredential for CollectError {
    fn credential_refused(&self) -> bool {
        matches!(self, CollectError::Vendor(e) if credential_refused(e))
    }
}

fn vendor_step_error(error: VendorError) -> StepError {
    if error.is_transient() {
        StepError::retryable(error.to_string())
    } else {
        StepError::fatal(error.to_string())
    }
}

/// Runs `attempt`; when the vendor refused the credential, re-reads the secret once and tries again.
async fn with_renewal<T, E, F, Fut>(vendor: &VendorAccess, attempt: F) -> Result<T, E>
where
    E: MayRefuseCredential,
    F: Fn(CxOneClient) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match attempt(vendor.client().await).await {
        Err(error) if error.credential_refused() && vendor.renew().await => {
            attempt(vendor.client().await).await
        }
        other => other,
    }
}

/// Lists the items, finds each SAST project's latest completed SAST scan (many projects per call)
/// and writes the work list. Moves the run to Processing.
pub async fn plan(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    run: &RunRef,
) -> Result<Vec<WorkItem>, StepError> {
    update_run(store, run, |r| r.state = RunState::Processing).await?;
    write_state(
        store,
        &run.connection_id,
        RunState::Processing,
        None,
        Some(&run.run_id),
        None,
    )
    .await?;
    let previous_run = read_state(store, &run.connection_id)
        .await?
        .and_then(|s| s.last_committed_run);
    let kind = connection.config.kind;
    let filters = &connection.config.filters;
    let listed = match kind {
        ConnectorKind::Sast => {
            let listing = with_renewal(vendor, |c| async move { c.projects().await })
                .await
                .map_err(vendor_step_error)?;
            Listed::from(listing, |p| {
                (p.id.clone(), p.name.clone(), filters.project_excluded(p))
            })
        }
        ConnectorKind::Dast => {
            let listing = with_renewal(vendor, |c| async move { c.dast_environments().await })
                .await
                .map_err(vendor_step_error)?;
            Listed::from(listing, |e| {
                let name = e.domain.clone().or(e.url.clone()).unwrap_or_default();
                (
                    e.environment_id.clone(),
                    name,
                    filters.environment_excluded(e),
                )
            })
        }
    };
    let Listed {
        raw,
        malformed,
        completeness,
        ids,
        names,
        excluded,
    } = listed;
    let selected: Vec<String> = ids
        .iter()
        .zip(&excluded)
        .filter(|(_, reason)| reason.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let scans = match kind {
        ConnectorKind::Sast => latest_scans(vendor, &selected, &connection.config.branches).await?,
        ConnectorKind::Dast => Default::default(),
    };
    let each_branch = connection.config.branches == BranchPolicy::EachBranch;
    let mut items = Vec::with_capacity(selected.len());
    let mut filtered = Vec::new();
    for (((id, name), record), reason) in ids.iter().zip(names).zip(raw).zip(excluded) {
        if let Some(reason) = reason {
            filtered.push(FilteredItem {
                item: item_key(id),
                vendor_id: id.clone(),
                name,
                reason,
            });
            continue;
        }
        let record: Value = serde_json::from_str(&record).unwrap_or(Value::Null);
        let item = |key: String, name: String, record: Value, scan: Option<&LastScan>| WorkItem {
            run: run.clone(),
            item: key,
            vendor_id: id.clone(),
            name,
            kind,
            scan_id: scan.map(|s| s.id.clone()),
            scan_created: scan.and_then(|s| s.created_at.clone()),
            scan_branch: scan.and_then(|s| s.branch.clone()),
            original_severity: kind == ConnectorKind::Sast && connection.config.original_severity,
            record,
            previous_run: previous_run.clone(),
        };
        match scans.get(id).map(Vec::as_slice).unwrap_or_default() {
            branch_scans if each_branch && !branch_scans.is_empty() => {
                for scan in branch_scans {
                    let branch = scan.branch.clone().unwrap_or_default();
                    let (key, name, record) = branch_asset(id, &name, &record, &branch);
                    items.push(item(key, name, record, Some(scan)));
                }
            }
            scans => items.push(item(item_key(id), name, record, scans.first())),
        }
    }
    put_json(store, &run.filtered_list(), &filtered).await?;
    let mut problems = malformed;
    if let Some(problem) = completeness.problem() {
        problems.push(format!("the item list is incomplete: {problem}"));
    }
    let mut body = Vec::new();
    for item in &items {
        serde_json::to_writer(&mut body, item).expect("serializes");
        body.push(b'\n');
    }
    store.put(&run.work_list(), Bytes::from(body)).await?;
    put_json(
        store,
        &format!("{}.problems.json", run.work_list()),
        &problems,
    )
    .await?;
    update_run(store, run, |r| {
        r.items = Some(items.len() as u64);
        r.previous_run = previous_run.clone();
    })
    .await?;
    Ok(items)
}

/// Copies an asset's ledger from the previous committed run into this run unchanged and returns
/// its open findings (0 when there was none).
async fn carry_ledger(
    store: &impl ObjectStore,
    run: &RunRef,
    record: &super::RunRecord,
    item: &str,
) -> Result<u64, StepError> {
    let Some(previous_run) = &record.previous_run else {
        return Ok(0);
    };
    let previous = RunRef {
        connection_id: run.connection_id.clone(),
        run_id: previous_run.clone(),
    };
    let Some(ledger) = get_gzip_json::<Ledger>(store, &previous.ledger(item)).await? else {
        return Ok(0);
    };
    put_gzip_json(store, &run.ledger(item), &ledger).await?;
    Ok(ledger.open_findings())
}

/// A project or environment listing reduced to what the plan needs: id, name and why the
/// filters leave it out, beside the raw records.
struct Listed {
    raw: Vec<String>,
    malformed: Vec<String>,
    completeness: Completeness,
    ids: Vec<String>,
    names: Vec<String>,
    excluded: Vec<Option<String>>,
}

impl Listed {
    fn from<T>(
        listing: crate::vendor::Listing<T>,
        describe: impl Fn(&T) -> (String, String, Option<String>),
    ) -> Self {
        let (mut ids, mut names, mut excluded) = (Vec::new(), Vec::new(), Vec::new());
        for item in &listing.items {
            let (id, name, reason) = describe(item);
            ids.push(id);
            names.push(name);
            excluded.push(reason);
        }
        Self {
            raw: listing.raw,
            malformed: listing.malformed,
            completeness: listing.completeness,
            ids,
            names,
            excluded,
        }
    }
}

/// An asset of its own for one branch of a project: the item key (readable, and unique even where
/// two branch names sanitize alike), its name, and the project record with `id` and `name` made the
/// branch asset's, so any transform map gives each branch its own asset; `projectId` and `branch`
/// keep where it came from.
fn branch_asset(
    project_id: &str,
    name: &str,
    record: &Value,
    branch: &str,
) -> (String, String, Value) {
    let asset_id = format!("{project_id}@{branch}");
    let digest = hex::encode(&Sha256::digest(branch.as_bytes())[..4]);
    let key = format!("{}-{digest}", item_key(&asset_id));
    let asset_name = format!("{name} @ {branch}");
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        fields.insert("projectId".into(), Value::from(project_id));
        fields.insert("branch".into(), Value::from(branch));
        fields.insert("id".into(), Value::from(asset_id));
        fields.insert("name".into(), Value::from(asset_name.clone()));
    }
    (key, asset_name, record)
}

/// Each project's latest completed SAST scans under the branch policy, in batched `last-scan`
/// calls: one scan per project, or under `each_branch` one per branch (the project's branches
/// listed first, then one batched call per branch name across the projects that have it).
async fn latest_scans(
    vendor: &VendorAccess,
    ids: &[String],
    policy: &BranchPolicy,
) -> Result<HashMap<String, Vec<LastScan>>, StepError> {
    let one_each = |scans: HashMap<String, LastScan>| {
        scans
            .into_iter()
            .map(|(id, scan)| (id, vec![scan]))
            .collect()
    };
    let query = |branch: Option<String>, use_main_branch: bool| LastScanQuery {
        branch,
        use_main_branch,
        ..LastScanQuery::completed_sast()
    };
    let ask = |ids: Vec<String>, query: LastScanQuery| async move {
        with_renewal(vendor, |c| {
            let (ids, query) = (ids.clone(), query.clone());
            async move { c.last_scans(&ids, &query).await }
        })
        .await
        .map_err(vendor_step_error)
    };
    match policy {
        BranchPolicy::Any => ask(ids.to_vec(), query(None, false)).await.map(one_each),
        BranchPolicy::Pinned { branch } => ask(ids.to_vec(), query(Some(branch.clone()), false))
            .await
            .map(one_each),
        BranchPolicy::Main { fallback_to_any } => {
            let mut scans = ask(ids.to_vec(), query(None, true)).await?;
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !scans.contains_key(*id))
                .cloned()
                .collect();
            if *fallback_to_any && !missing.is_empty() {
                scans.extend(ask(missing, query(None, false)).await?);
            }
            Ok(one_each(scans))
        }
        BranchPolicy::EachBranch => {
            let listed = futures_util::stream::iter(ids.iter().cloned())
                .map(|id| async move {
                    let branches = with_renewal(vendor, |c| {
                        let id = id.clone();
                        async move { c.project_branches(&id).await }
                    })
                    .await
                    .map_err(vendor_step_error)?;
                    Ok::<_, StepError>((id, branches))
                })
                .buffer_unordered(vendor.concurrency())
                .try_collect::<Vec<_>>()
                .await?;
            let mut by_branch: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (id, branches) in listed {
                for branch in branches {
                    by_branch.entry(branch).or_default().push(id.clone());
                }
            }
            let answers = futures_util::stream::iter(by_branch)
                .map(|(branch, projects)| async move {
                    let found = ask(projects, query(Some(branch.clone()), false)).await?;
                    Ok::<_, StepError>((branch, found))
                })
                .buffer_unordered(vendor.concurrency())
                .try_collect::<Vec<_>>()
                .await?;
            let mut scans: HashMap<String, Vec<LastScan>> = HashMap::new();
            for (branch, found) in answers {
                for (id, mut scan) in found {
                    scan.branch.get_or_insert(branch.clone());
                    scans.entry(id).or_default().push(scan);
                }
            }
            // The same order every run, whatever order the answers came in.
            for branch_scans in scans.values_mut() {
                branch_scans.sort_by(|a, b| a.branch.cmp(&b.branch));
            }
            Ok(scans)
        }
    }
}

/// Reads the work list back (finalize, and the state machine's item reader on AWS).
pub async fn read_work_list(
    store: &impl ObjectStore,
    run: &RunRef,
) -> Result<(Vec<WorkItem>, Vec<String>), StepError> {
    let body = store.get(&run.work_list()).await?.ok_or_else(|| {
        StepError::fatal(format!("{}: the work list is missing", run.work_list()))
    })?;
    let mut items = Vec::new();
    for (n, line) in body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        items.push(
            serde_json::from_slice(line).map_err(|e| {
                StepError::fatal(format!("{} line {}: {e}", run.work_list(), n + 1))
            })?,
        );
    }
    let problems = get_json(store, &format!("{}.problems.json", run.work_list()))
        .await?
        .unwrap_or_default();
    Ok((items, problems))
}

/// Collects one item: its record, every page of its scan's results (written as they arrive), and
/// the completeness verdict in `collect.json`. A vendor refusal becomes the item's Failed outcome;
/// only a transient failure is an error (retryable).
pub async fn collect(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    filters: &Filters,
    item: &WorkItem,
) -> Result<CollectOutcome, StepError> {
    let prefix = item.run.raw_prefix(&item.item);
    store
        .put(
            &format!("{prefix}item.json.gz"),
            gzip(&serde_json::to_vec(&item.record).expect("serializes")),
        )
        .await?;
    let started = std::time::Instant::now();
    let counters = std::sync::Arc::new(Counters::default());
    let result = counted(
        counters.clone(),
        with_renewal(vendor, |client| {
            collect_pages(store, client, item, &prefix, filters)
        }),
    )
    .await;
    let seen = counters.snapshot();
    let traffic = ItemTraffic {
        duration_ms: started.elapsed().as_millis() as u64,
        requests: seen.requests,
        retries: seen.retries,
        rate_limited: seen.rate_limited,
        bytes: seen.bytes,
    };
    let outcome = match result {
        Ok(outcome) => CollectOutcome { traffic, ..outcome },
        Err(CollectError::Store(error)) => return Err(error.into()),
        Err(CollectError::Vendor(error)) if error.is_transient() => {
            return Err(StepError::retryable(error.to_string()));
        }
        Err(CollectError::Vendor(error)) => {
            return record_collect_failure(store, item, &error.to_string(), traffic).await;
        }
    };
    put_json(store, &format!("{prefix}collect.json"), &outcome).await?;
    Ok(outcome)
}

/// Records an item as Failed with the reason, for finalize to report (a refusal, or a transient
/// failure that outlasted every attempt).
pub async fn record_collect_failure(
    store: &impl ObjectStore,
    item: &WorkItem,
    reason: &str,
    traffic: ItemTraffic,
) -> Result<CollectOutcome, StepError> {
    tracing::warn!(item = %item.item, name = %item.name, reason, "item failed");
    let outcome = CollectOutcome {
        item: item.item.clone(),
        status: ItemStatus::Failed,
        reason: Some(reason.to_string()),
        scan_id: item.scan_id.clone(),
        pages: 0,
        original_pages: 0,
        completeness: Completeness::default(),
        traffic,
    };
    let prefix = item.run.raw_prefix(&item.item);
    put_json(store, &format!("{prefix}collect.json"), &outcome).await?;
    Ok(outcome)
}

async fn collect_pages(
    store: &impl ObjectStore,
    client: CxOneClient,
    item: &WorkItem,
    prefix: &str,
    filters: &Filters,
) -> Result<CollectOutcome, CollectError> {
    let (scan_id, created) = match item.kind {
        ConnectorKind::Sast => (item.scan_id.clone(), item.scan_created.clone()),
        ConnectorKind::Dast => client
            .latest_completed_dast_scan(&item.vendor_id)
            .await?
            .map_or((None, None), |s| {
                let created = s.created.or(s.update_time);
                (Some(s.scan_id), created)
            }),
    };
    let too_old = filters.scan_too_old(created.as_deref());
    let (Some(scan_id), None) = (scan_id, &too_old) else {
        // No scan to take: nothing to ingest, and the previous findings are carried, not closed.
        return Ok(CollectOutcome {
            item: item.item.clone(),
            status: ItemStatus::NoScan,
            reason: too_old,
            scan_id: None,
            pages: 0,
            original_pages: 0,
            completeness: Completeness::default(),
            traffic: ItemTraffic::default(),
        });
    };
    let (pages, completeness) = match item.kind {
        ConnectorKind::Sast => store_pages(store, client.results(&scan_id), prefix).await?,
        ConnectorKind::Dast => store_pages(store, client.dast_results(&scan_id), prefix).await?,
    };
    let mut problem = completeness.problem();
    let mut original_pages = 0;
    if item.original_severity && problem.is_none() {
        let original = client.original_severities(&scan_id);
        let (n, original) = store_pages(store, original, &format!("{prefix}original-")).await?;
        original_pages = n;
        problem = original
            .problem()
            .map(|p| format!("severities before triage: {p}"));
    }
    Ok(CollectOutcome {
        item: item.item.clone(),
        status: if problem.is_none() {
            ItemStatus::Complete
        } else {
            ItemStatus::Incomplete
        },
        reason: problem,
        scan_id: Some(scan_id),
        pages,
        original_pages,
        completeness,
        traffic: ItemTraffic::default(),
    })
}

/// Writes every page of a pager as `<prefix><page>.json.gz` as it arrives.
async fn store_pages(
    store: &impl ObjectStore,
    mut pager: impl PageSource,
    prefix: &str,
) -> Result<(u32, Completeness), CollectError> {
    let mut pages = 0;
    while let Some(page) = pager.next_page().await? {
        let key = format!("{prefix}{}.json.gz", page.number);
        store.put(&key, gzip(&page.body)).await?;
        pages += 1;
    }
    Ok((pages, pager.completeness().clone()))
}

/// Transforms one collected item: its raw pages, in order, into `etm/<item>/<page>.ndjson.gz`.
/// Items whose collection is not complete are not transformed (nothing of them is committed).
pub async fn transform(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
) -> Result<TransformRecord, StepError> {
    let raw = item.run.raw_prefix(&item.item);
    let outcome: CollectOutcome = get_json(store, &format!("{raw}collect.json"))
        .await?
        .ok_or_else(|| {
            StepError::retryable(format!(
                "{raw}collect.json is missing: collect has not finished for this item"
            ))
        })?;
    let etm = item.run.etm_prefix(&item.item);
    let mut record = TransformRecord {
        item: item.item.clone(),
        ..TransformRecord::default()
    };
    if outcome.status == ItemStatus::Complete {
        let run_record: super::RunRecord = get_json(store, &item.run.run_record())
            .await?
            .ok_or_else(|| StepError::fatal("the run record is missing"))?;
        // Every line of the run carries the run's start: re-running a step gives the same bytes.
        let context = TransformContext {
            connection_id: item.run.connection_id.clone(),
            run_id: item.run.run_id.clone(),
            produced_at: run_record.started_at,
        };
        let item_json = get_written(store, &format!("{raw}item.json.gz")).await?;
        let mut transformer = ItemTransformer::new(
            &connection.plan,
            &connection.scoring,
            &context,
            connection.options.clone(),
            &item_json,
        )
        .map_err(|e| StepError::fatal(format!("item {}: {e}", item.item)))?;
        let previous = match &item.previous_run {
            Some(previous_run) => {
                let previous = RunRef {
                    connection_id: item.run.connection_id.clone(),
                    run_id: previous_run.clone(),
                };
                get_gzip_json::<Ledger>(store, &previous.ledger(&item.item)).await?
            }
            None => None,
        };
        transformer.reconcile(
            previous.unwrap_or_default(),
            &item.run.run_id,
            item.scan_branch.as_deref(),
        );
        for number in 0..outcome.original_pages {
            let key = format!("{raw}original-{number}.json.gz");
            let page = get_written(store, &key).await?;
            transformer
                .add_original_severities(&page)
                .map_err(|e| StepError::fatal(format!("{key}: {e}")))?;
        }
        for number in 0..outcome.pages {
            let page = get_written(store, &format!("{raw}{number}.json.gz")).await?;
            let before = transformer.figures().findings_out;
            let lines = transformer
                .push_page(&page, number)
                .map_err(|e| StepError::fatal(format!("item {}: {e}", item.item)))?;
            if lines.is_empty() {
                continue;
            }
            let findings = transformer.figures().findings_out - before;
            record.objects.push(
                put_lines(store, &format!("{etm}{number}.ndjson.gz"), &lines, findings).await?,
            );
        }
        let (closures, closed) = transformer.close_absent();
        if !closures.is_empty() {
            record.objects.push(
                put_lines(
                    store,
                    &format!("{etm}closures.ndjson.gz"),
                    &closures,
                    closed,
                )
                .await?,
            );
        }
        let mut done = transformer.finish();
        if let Some(ledger) = done.ledger.take() {
            put_gzip_json(store, &item.run.ledger(&item.item), &ledger).await?;
        }
        record.figures = done.figures;
        record.rejected = done.rejected;
        record.collisions = done.collisions;
    }
    put_json(store, &format!("{etm}transform.json"), &record).await?;
    Ok(record)
}

/// Assets of the previous committed run whose project or environment is no longer listed: their
/// ledgers go forward, closed when the connection's policy says so, else unchanged. Assets the
/// filters left out carry their ledgers forward unchanged; their open findings are the second value.
/// Deletion is decided only from a complete listing: when this run's list was incomplete (a
/// malformed record, a total that moved), an unlisted asset may simply be the one that was not
/// read, so it is carried forward unchanged, never reported deleted or closed.
async fn deleted_items(
    store: &impl ObjectStore,
    connection: &Connection,
    run: &RunRef,
    record: &super::RunRecord,
    work: &[WorkItem],
    filtered: &[FilteredItem],
    listing_complete: bool,
) -> Result<(Vec<DeletedItem>, u64), StepError> {
    let Some(previous_run) = &record.previous_run else {
        return Ok((Vec::new(), 0));
    };
    let left_out: std::collections::HashSet<&str> =
        filtered.iter().map(|f| f.item.as_str()).collect();
    let mut carried = 0;
    let previous = RunRef {
        connection_id: run.connection_id.clone(),
        run_id: previous_run.clone(),
    };
    let prefix = previous.ledger_prefix();
    let listed: std::collections::HashSet<&str> = work.iter().map(|w| w.item.as_str()).collect();
    let mut deleted = Vec::new();
    for key in store.list(&prefix).await? {
        let Some(item) = key
            .strip_prefix(&prefix)
            .and_then(|k| k.strip_suffix(".json.gz"))
        else {
            continue;
        };
        if listed.contains(item) {
            continue;
        }
        let Some(ledger) = get_gzip_json::<Ledger>(store, &key).await? else {
            continue;
        };
        let open_findings = ledger.open_findings();
        if left_out.contains(item) || !listing_complete {
            carried += open_findings;
            put_gzip_json(store, &run.ledger(item), &ledger).await?;
            continue;
        }
        let mut entry = DeletedItem {
            item: item.to_string(),
            vendor_id: ledger.vendor_item_id.clone(),
            open_findings,
            closed: false,
            objects: Vec::new(),
        };
        let ledger = if connection.config.close_deleted_items && open_findings > 0 {
            let context = TransformContext {
                connection_id: run.connection_id.clone(),
                run_id: run.run_id.clone(),
                produced_at: record.started_at.clone(),
            };
            let reason = format!(
                "its {} is no longer listed by the tenant (run {})",
                match (connection.config.kind, &connection.config.branches) {
                    (ConnectorKind::Sast, BranchPolicy::EachBranch) => {
                        "project branch (or its last completed scan)"
                    }
                    (ConnectorKind::Sast, _) => "project",
                    (ConnectorKind::Dast, _) => "environment",
                },
                run.run_id
            );
            let (lines, closed, ledger) = close_all(
                ledger,
                &context,
                connection.config.kind,
                &reason,
                connection.options.max_findings_per_line,
            );
            let key = format!("{}closures.ndjson.gz", run.etm_prefix(item));
            entry
                .objects
                .push(put_lines(store, &key, &lines, closed).await?);
            entry.closed = true;
            ledger
        } else {
            ledger
        };
        put_gzip_json(store, &run.ledger(item), &ledger).await?;
        deleted.push(entry);
    }
    Ok((deleted, carried))
}

/// Writes batch lines as one gzip object and returns its manifest entry.
async fn put_lines(
    store: &impl ObjectStore,
    key: &str,
    lines: &[Vec<u8>],
    findings: u64,
) -> Result<ObjectEntry, StepError> {
    let body = gzip(&lines.concat());
    let entry = ObjectEntry {
        key: key.to_string(),
        lines: lines.len() as u64,
        findings,
        bytes: body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
    };
    store.put(key, body).await?;
    Ok(entry)
}

async fn put_gzip_json<T: Serialize>(
    store: &impl ObjectStore,
    key: &str,
    value: &T,
) -> Result<(), StepError> {
    let body = gzip(&serde_json::to_vec(value).expect("serializes"));
    store.put(key, body).await.map_err(StepError::from)
}

/// A gzip'd object an earlier step wrote, unpacked; without it this step cannot go on.
async fn get_written(store: &impl ObjectStore, key: &str) -> Result<Vec<u8>, StepError> {
    let body = store
        .get(key)
        .await?
        .ok_or_else(|| StepError::fatal(format!("{key} is missing")))?;
    gunzip(key, &body)
}

async fn get_gzip_json<T: serde::de::DeserializeOwned>(
    store: &impl ObjectStore,
    key: &str,
) -> Result<Option<T>, StepError> {
    let Some(body) = store.get(key).await? else {
        return Ok(None);
    };
    let text = gunzip(key, &body)?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| StepError::fatal(format!("{key}: {e}")))
}

/// How many items' outcomes finalize reads at once.
const FINALIZE_READS_AT_ONCE: usize = 16;

/// One item's line in the manifest, from what its collect and transform wrote. Only a complete
/// pull writes the asset's next ledger; for any other item (incomplete, failed, no scan, a step
/// that never finished) the previous one goes forward unchanged, so nothing of it is closed and
/// the next run still knows what is open.
async fn manifest_item(
    store: &impl ObjectStore,
    run: &RunRef,
    record: &super::RunRecord,
    item: &WorkItem,
    ledgers_written: &std::collections::HashSet<String>,
) -> Result<ManifestItem, StepError> {
    let collected: Option<CollectOutcome> = get_json(
        store,
        &format!("{}collect.json", run.raw_prefix(&item.item)),
    )
    .await?;
    let transformed: Option<TransformRecord> = get_json(
        store,
        &format!("{}transform.json", run.etm_prefix(&item.item)),
    )
    .await?;
    let (status, reason) = match (&collected, &transformed) {
        (None, _) => (
            ItemStatus::Failed,
            Some("collect did not finish".to_string()),
        ),
        (Some(c), None) if c.status == ItemStatus::Complete => (
            ItemStatus::Failed,
            Some("transform did not finish".to_string()),
        ),
        (Some(c), _) => (c.status, c.reason.clone()),
    };
    let transformed = transformed.unwrap_or_default();
    let carried_forward = if ledgers_written.contains(&item.item) {
        0
    } else {
        carry_ledger(store, run, record, &item.item).await?
    };
    Ok(ManifestItem {
        item: item.item.clone(),
        vendor_id: item.vendor_id.clone(),
        name: item.name.clone(),
        status,
        reason,
        scan_id: collected.as_ref().and_then(|c| c.scan_id.clone()),
        records_expected: collected.as_ref().map_or(0, |c| c.completeness.expected),
        records_fetched: collected.as_ref().map_or(0, |c| c.completeness.unique),
        figures: transformed.figures,
        carried_forward,
        traffic: collected
            .as_ref()
            .map(|c| c.traffic.clone())
            .unwrap_or_default(),
        objects: transformed.objects,
        rejected: transformed.rejected,
        collisions: transformed.collisions,
    })
}

/// Writes the manifest (every object with its counts and hash, every item's outcome), then the
/// commit marker — last, and only once — then the connection's state; releases the lock.
pub async fn finalize(
    store: &impl ObjectStore,
    connection: &Connection,
    run: &RunRef,
) -> Result<Manifest, StepError> {
    if store.get(&run.commit_marker()).await?.is_some()
        && let Some(manifest) = get_json::<Manifest>(store, &run.manifest()).await?
    {
        // Committed by an earlier attempt that stopped before the end: finish what follows the
        // marker (the run record, the state, the lock), each step safe to repeat.
        after_commit(store, run, &manifest).await?;
        return Ok(manifest);
    }
    let (work, mut problems) = read_work_list(store, run).await?;
    // The work list's problems are the listing's (malformed records, an incomplete list).
    let listing_complete = problems.is_empty();
    let record: super::RunRecord = get_json(store, &run.run_record())
        .await?
        .ok_or_else(|| StepError::fatal("the run record is missing"))?;
    let ledger_prefix = run.ledger_prefix();
    let ledgers_written: std::collections::HashSet<String> = store
        .list(&ledger_prefix)
        .await?
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix(&ledger_prefix)
                .and_then(|k| k.strip_suffix(".json.gz"))
                .map(str::to_string)
        })
        .collect();
    // Each item's outcome is two small reads (and maybe a ledger copy): many at once, as a
    // tenant of thousands of projects would otherwise wait on thousands of S3 round trips in turn.
    let items: Vec<ManifestItem> = futures_util::stream::iter(&work)
        .map(|item| manifest_item(store, run, &record, item, &ledgers_written))
        .buffered(FINALIZE_READS_AT_ONCE)
        .try_collect()
        .await?;
    let mut totals = Figures::default();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for item in &items {
        totals.add(&item.figures);
        let status_name = serde_json::to_value(item.status)
            .expect("serializes")
            .as_str()
            .unwrap_or_default()
            .to_string();
        *by_status.entry(status_name).or_default() += 1;
    }
    let not_whole = items
        .iter()
        .filter(|i| !matches!(i.status, ItemStatus::Complete | ItemStatus::NoScan))
        .count();
    if not_whole > 0 {
        problems.push(format!("{not_whole} of {} items are incomplete or failed; their previous findings stay as they were", items.len()));
    }
    let filtered_items: Vec<FilteredItem> = get_json(store, &run.filtered_list())
        .await?
        .unwrap_or_default();
    let (deleted_items, carried_for_filtered) = deleted_items(
        store,
        connection,
        run,
        &record,
        &work,
        &filtered_items,
        listing_complete,
    )
    .await?;
    let closed_with_deleted: u64 = deleted_items
        .iter()
        .flat_map(|d| &d.objects)
        .map(|o| o.findings)
        .sum();
    if closed_with_deleted > 0 {
        *totals.lifecycle.entry("FIXED".into()).or_default() += closed_with_deleted;
    }
    let carried_forward = items.iter().map(|i| i.carried_forward).sum::<u64>()
        + carried_for_filtered
        + deleted_items
            .iter()
            .filter(|d| !d.closed)
            .map(|d| d.open_findings)
            .sum::<u64>();
    let manifest = Manifest {
        schema_version: "1.0".into(),
        connection_id: run.connection_id.clone(),
        run_id: run.run_id.clone(),
        kind: connection.config.kind,
        started_at: record.started_at,
        finished_at: now_rfc3339(),
        complete: problems.is_empty(),
        problems,
        items_by_status: by_status,
        totals,
        carried_forward,
        items,
        filtered_items,
        deleted_items,
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("serializes");
    let sha = hex::encode(Sha256::digest(&body));
    store.put(&run.manifest(), Bytes::from(body)).await?;
    let marker = serde_json::json!({"runId": run.run_id, "complete": manifest.complete, "manifestSha256": sha, "committedAt": now_rfc3339()});
    if !store
        .put_if_absent(
            &run.commit_marker(),
            Bytes::from(serde_json::to_vec(&marker).expect("serializes")),
        )
        .await?
    {
        tracing::info!(run = %run.run_id, "already committed");
    }
    after_commit(store, run, &manifest).await?;
    Ok(manifest)
}

/// What follows the commit marker: the run record and the connection's state say Processed, and
/// the lock is released. Repeating it changes nothing.
async fn after_commit(
    store: &impl ObjectStore,
    run: &RunRef,
    manifest: &Manifest,
) -> Result<(), StepError> {
    let reason = (!manifest.complete).then(|| manifest.problems.join("; "));
    update_run(store, run, |r| {
        r.state = RunState::Processed;
        r.reason = reason.clone();
        r.finished_at = Some(manifest.finished_at.clone());
    })
    .await?;
    write_state(
        store,
        &run.connection_id,
        RunState::Processed,
        reason,
        Some(&run.run_id),
        Some(&run.run_id),
    )
    .await?;
    release(store, run).await
}
