//! Collect: one item's record and every page of its scan's results, written as they arrive, and
//! the completeness verdict. A vendor refusal is the item's Failed outcome; only a transient
//! failure is an error (retryable).

use super::access::{MayRefuseCredential, VendorAccess, credential_refused, with_renewal};
use super::config::Connection;
use super::documents::{
    CollectOutcome, CollectProgress, ItemStatus, ItemTraffic, ScanPull, WorkItem,
};
use super::error::StepError;
use super::objects::{Once, get_json, get_packed_page, get_page, put_json, put_json_once};
use super::split::PartFingerprints;
use crate::cxone::{
    Completeness, Counters, CxOneClient, PageSource, ResultsPager, ScanRange, VendorError, counted,
};
use crate::layout::RunRef;
use crate::mapping::IdTally;
use crate::packing::{pack_page, page_checksum};
use crate::store::ObjectStore;
use crate::{ConnectorKind, Engine};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::ops::Range;
use std::time::{Duration, SystemTime};

/// The least time left in the invocation for a collect to ask for another page of its main scan:
/// with less, it stops between two pages, its progress stored, for the next attempt to go on.
const LEAST_TIME_FOR_A_PAGE: Duration = Duration::from_secs(60);

/// What collecting one item can fail on: the vendor, or the store its pages go to. A store error
/// stays a store error (transient: the state machine retries the item), never a vendor refusal.
#[derive(Debug, thiserror::Error)]
enum CollectError {
    #[error(transparent)]
    Vendor(#[from] VendorError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The store failed with the main scan's progress (reading it or its pages again, or
    /// writing it), with the pages read again for the identities of repeated ids, or with the
    /// DAST scan an earlier attempt chose.
    #[error(transparent)]
    Progress(StepError),
    /// The invocation's time ran short between two pages of the main scan.
    #[error("collect stopped after {pages} pages")]
    Paused {
        pages: u32,
        left_secs: u64,
        started_over: bool,
    },
}

impl MayRefuseCredential for CollectError {
    fn credential_refused(&self) -> bool {
        matches!(self, CollectError::Vendor(e) if credential_refused(e))
    }

    fn secret_unread(refused: String, problem: String) -> Self {
        CollectError::Vendor(VendorError::secret_unread(refused, problem))
    }
}

/// Collects one item: its record, every page of its scan's results (written as they arrive), and
/// the completeness verdict in `collect.json`. A vendor refusal becomes the item's Failed outcome;
/// only a transient failure is an error (retryable). A project's main scan goes on from where an
/// earlier attempt of the run stopped, and stops between two pages when less than a minute is
/// left before `deadline` (the invocation's; `None`: no limit).
pub async fn collect(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    item: &WorkItem,
    deadline: Option<SystemTime>,
) -> Result<CollectOutcome, StepError> {
    let started = std::time::Instant::now();
    let counters = std::sync::Arc::new(Counters::default());
    let result = counted(
        counters.clone(),
        with_renewal(vendor, |client| {
            collect_pages(store, client, item, connection, deadline)
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
        Ok(outcome) => CollectOutcome {
            traffic,
            record: item.record.clone(),
            part: item.part.clone(),
            ..outcome
        },
        Err(CollectError::Store(error)) => return Err(error.into()),
        Err(CollectError::Progress(error)) => return Err(error),
        Err(CollectError::Paused {
            pages,
            left_secs,
            started_over,
        }) => {
            tracing::info!(item = %item.item, pages, left_secs, started_over, "collect paused");
            return Err(StepError::CollectPaused {
                pages,
                left_secs,
                started_over,
            });
        }
        Err(CollectError::Vendor(error)) if error.is_transient() => {
            return Err(error.into());
        }
        Err(CollectError::Vendor(error)) => {
            return record_collect_failure(store, item, &error.to_string(), traffic).await;
        }
    };
    record_outcome(store, item, outcome).await
}

/// Records an item as Failed with the reason, for finalize to report (a refusal, or a transient
/// failure that outlasted every attempt).
pub async fn record_collect_failure(
    store: &impl ObjectStore,
    item: &WorkItem,
    reason: &str,
    traffic: ItemTraffic,
) -> Result<CollectOutcome, StepError> {
    tracing::warn!(item = %item.item, name = ?item.name, reason, "item failed");
    let outcome = CollectOutcome {
        item: item.item.clone(),
        status: ItemStatus::Failed,
        reason: Some(reason.to_string()),
        scan_id: item.scan_id.clone(),
        pages: 0,
        original_pages: 0,
        page_checksums: Vec::new(),
        original_checksums: Vec::new(),
        completeness: Completeness::default(),
        other_pulls: Vec::new(),
        repeated_ids: Vec::new(),
        sent_twice_ids: Vec::new(),
        traffic,
        record: item.record.clone(),
        part: item.part.clone(),
    };
    record_outcome(store, item, outcome).await
}

/// Writes the item's outcome only where none is, and answers the one that stands: an attempt of
/// the item that ran on while a retry of it finished (Step Functions retries an invocation whose
/// answer it lost) must not replace the outcome the transform may already have reconciled.
async fn record_outcome(
    store: &impl ObjectStore,
    item: &WorkItem,
    outcome: CollectOutcome,
) -> Result<CollectOutcome, StepError> {
    let key = item.collect_outcome_key();
    match put_json_once(store, &key, &outcome).await {
        Ok(Once::Written) => Ok(outcome),
        Ok(Once::Standing(earlier)) => {
            tracing::warn!(item = %item.item, status = ?earlier.status, "another attempt recorded the item's outcome first; it stands");
            Ok(earlier)
        }
        // One that cannot be read was reconciled by no transform: this one replaces it.
        Err(StepError::BadObject { problem, .. }) => {
            tracing::warn!(item = %item.item, problem, "the item's recorded outcome cannot be read; replaced");
            put_json(store, &key, &outcome).await?;
            Ok(outcome)
        }
        Err(error) => Err(error),
    }
}

async fn collect_pages(
    store: &impl ObjectStore,
    client: CxOneClient,
    item: &WorkItem,
    connection: &Connection,
    deadline: Option<SystemTime>,
) -> Result<CollectOutcome, CollectError> {
    let filters = &connection.config.filters;
    let (run, key) = (&item.run, item.item.as_str());
    let (scan_id, created) = match item.kind {
        ConnectorKind::Sast | ConnectorKind::Sca => {
            (item.scan_id.clone(), item.scan_created.clone())
        }
        ConnectorKind::Dast => dast_scan(store, &client, item)
            .await?
            .map_or((None, None), |s| (Some(s.scan_id), s.created)),
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
            page_checksums: Vec::new(),
            original_checksums: Vec::new(),
            completeness: Completeness::default(),
            other_pulls: Vec::new(),
            repeated_ids: Vec::new(),
            sent_twice_ids: Vec::new(),
            traffic: ItemTraffic::default(),
            record: Value::Null,
            part: None,
        });
    };
    let mut ids = IdTally::new(&connection.plans.iter().collect::<Vec<_>>());
    if let Some(part) = &item.part {
        ids = ids.keyed(part.fingerprint_key);
    }
    let main_engines = item.main_engines(connection.engines());
    // Only the records of the engines a scan delivers are this item's findings.
    let (mut page_checksums, completeness, mut problem, record_fingerprints) = match item.kind {
        ConnectorKind::Sast | ConnectorKind::Sca => {
            let main = MainScan {
                item,
                scan_id: &scan_id,
                engines: &main_engines,
            };
            store_results_pages(store, &client, &main, deadline, &mut ids).await?
        }
        ConnectorKind::Dast => {
            let pager = client.dast_results(&scan_id, &item.vendor_id);
            let mut tally = |page: &[u8]| ids.add_page(page, &main_engines);
            let (checksums, completeness) =
                store_pages(store, pager, |n| run.raw_page(key, n), &mut tally).await?;
            let problem = completeness.problem();
            (checksums, completeness, problem, None)
        }
    };
    let pages = page_checksums.len() as u32;
    // Of a split scan, only the last part pulls the rest of the item: the other parts' outcomes
    // are their page ranges alone.
    let whole_item = item.part.as_ref().is_none_or(|part| part.is_last());
    // Engines whose latest scan is another: their pages follow the main scan's.
    let mut other_pulls = Vec::new();
    let first_page = item.part.as_ref().map_or(0, |part| part.first_page);
    let mut next_page = first_page.saturating_add(pages);
    for other in item.other_scans.iter().filter(|_| whole_item) {
        if problem.is_some() {
            break;
        }
        let first_page = next_page;
        if let Some(too_old) = filters.scan_too_old(other.created.as_deref()) {
            // Nothing of these engines this run: their findings are carried, not closed.
            other_pulls.push(ScanPull {
                scan_id: other.scan_id.clone(),
                engines: other.engines.clone(),
                branch: other.branch.clone(),
                first_page,
                pages: 0,
                completeness: Completeness::default(),
                not_taken: Some(too_old),
            });
            continue;
        }
        let pager = client.results(&other.scan_id);
        let (checksums, completeness) = store_pages(
            store,
            pager,
            |n| run.raw_page(key, first_page + n),
            &mut |page: &[u8]| ids.add_page(page, &other.engines),
        )
        .await?;
        let n = checksums.len() as u32;
        page_checksums.extend(checksums);
        next_page += n;
        problem = completeness.problem().map(|p| {
            format!(
                "scan {} ({}): {p}",
                other.scan_id,
                engine_names(&other.engines)
            )
        });
        other_pulls.push(ScanPull {
            scan_id: other.scan_id.clone(),
            engines: other.engines.clone(),
            branch: other.branch.clone(),
            first_page,
            pages: n,
            completeness,
            not_taken: None,
        });
    }
    let mut original_checksums = Vec::new();
    let sast_scan = if main_engines.contains(&Engine::Sast) {
        Some(scan_id.clone())
    } else {
        other_pulls
            .iter()
            .find(|o| o.engines.contains(&Engine::Sast) && o.not_taken.is_none())
            .map(|o| o.scan_id.clone())
    };
    let original_severity = item.original_severity && whole_item;
    if let (true, None, Some(sast_scan)) = (original_severity, &problem, sast_scan) {
        let pager = client.original_severities(&sast_scan);
        let (checksums, original) =
            store_pages(store, pager, |n| run.original_page(key, n), &mut |_| {}).await?;
        original_checksums = checksums;
        problem = original
            .problem()
            .map(|p| format!("severities before triage: {p}"));
    }
    if problem.is_none() {
        let main = first_page..first_page.saturating_add(pages);
        let stored = stored_pages(run, key, main, &main_engines, &other_pulls);
        read_identities(store, &stored, &mut ids)
            .await
            .map_err(CollectError::Progress)?;
    }
    let repeats = match (&item.part, record_fingerprints, &problem) {
        (Some(part), Some(records), None) => {
            // What the join compares with the other parts' (see `split::PartFingerprints`).
            let (repeats, ids) = ids.into_repeats_and_fingerprints();
            let fingerprints = PartFingerprints { records, ids };
            store
                .put(&run.part_fingerprints(key, part.index), fingerprints.pack())
                .await?;
            repeats
        }
        // A whole pull's id fingerprints are not kept: sorting them would be work for nothing.
        _ => ids.repeats(),
    };
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
        original_pages: original_checksums.len() as u32,
        page_checksums,
        original_checksums,
        completeness,
        other_pulls,
        repeated_ids: repeats.told_apart,
        sent_twice_ids: repeats.sent_twice,
        traffic: ItemTraffic::default(),
        record: Value::Null,
        part: None,
    })
}

/// Every page an item stored, with the engines whose records in it are the item's findings: the
/// main scan's pages (`main`), then those of each other scan pulled.
pub(super) fn stored_pages<'a>(
    run: &RunRef,
    key: &str,
    main: Range<u32>,
    main_engines: &'a [Engine],
    other_pulls: &'a [ScanPull],
) -> Vec<(String, &'a [Engine])> {
    let others = other_pulls
        .iter()
        .filter(|pull| pull.not_taken.is_none())
        .flat_map(|pull| {
            let pages = pull.first_page..pull.first_page.saturating_add(pull.pages);
            pages.map(|number| (number, pull.engines.as_slice()))
        });
    main.map(|number| (number, main_engines))
        .chain(others)
        .map(|(number, engines)| (run.raw_page(key, number), engines))
        .collect()
}

/// The DAST scan a run takes for an environment.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DastScan {
    scan_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
}

/// The DAST scan this run pulls for the item: the one an earlier attempt of the run chose, or
/// the environment's latest completed scan, recorded (a conditional write) before any page is.
/// Two attempts of one item can run at once (Step Functions retries an invocation whose answer
/// it lost while it still runs), and both store the pages under the same keys: were a newer scan
/// to complete between them, one collect's proof would hold the other's pages, and findings the
/// newer scan still has would close.
async fn dast_scan(
    store: &impl ObjectStore,
    client: &CxOneClient,
    item: &WorkItem,
) -> Result<Option<DastScan>, CollectError> {
    let key = item.run.dast_scan(&item.item);
    if let Some(earlier) = get_json(store, &key)
        .await
        .map_err(CollectError::Progress)?
    {
        return Ok(Some(earlier));
    }
    let Some(latest) = client.latest_completed_dast_scan(&item.vendor_id).await? else {
        return Ok(None);
    };
    let latest = DastScan {
        scan_id: latest.scan_id,
        created: latest.created.or(latest.update_time),
    };
    // Another attempt may have chosen meanwhile: its choice stands.
    match put_json_once(store, &key, &latest)
        .await
        .map_err(CollectError::Progress)?
    {
        Once::Written => Ok(Some(latest)),
        Once::Standing(earlier) => Ok(Some(earlier)),
    }
}

/// The second pass of [`IdTally`], where an id came more than once: the item's stored pages read
/// again for the identity fields of those ids' records.
pub(super) async fn read_identities(
    store: &impl ObjectStore,
    pages: &[(String, &[Engine])],
    ids: &mut IdTally,
) -> Result<(), StepError> {
    if !ids.needs_identities() {
        return Ok(());
    }
    for (page_key, engines) in pages {
        ids.add_identities(&get_page(store, page_key).await?, engines);
    }
    Ok(())
}

fn engine_names(engines: &[Engine]) -> String {
    engines
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An item's main scan: the one whose pull goes on across attempts.
struct MainScan<'a> {
    item: &'a WorkItem,
    scan_id: &'a str,
    /// The engines whose records in it are the item's findings (their ids are tallied).
    engines: &'a [Engine],
}

impl MainScan<'_> {
    fn progress_key(&self) -> String {
        self.item.collect_progress_key()
    }

    /// The key of the `number`th page this pull stores: a part's pages keep the scan's numbers.
    fn page_key(&self, number: u32) -> String {
        let first = self.item.part.as_ref().map_or(0, |part| part.first_page);
        self.item
            .run
            .raw_page(&self.item.item, first.saturating_add(number))
    }

    /// The pages, offset meaning and fingerprint key of a split scan's part.
    fn range(&self) -> Option<ScanRange> {
        self.item.part.as_ref().map(|part| ScanRange {
            first: part.first_page,
            count: part.pages,
            semantics: part.semantics,
            fingerprint_key: part.fingerprint_key,
        })
    }

    /// A pager from the first page of this pull (the scan's, or its part's).
    fn new_pager(&self, client: &CxOneClient) -> ResultsPager {
        match self.range() {
            Some(range) => client.results_part(self.scan_id, range),
            None => client.results(self.scan_id),
        }
    }

    /// The pager going on from the progress an earlier attempt of this run left, and the pages
    /// it had stored, read again (their records known as seen, their ids tallied); a new pager
    /// where there is no progress. A progress that cannot be used (another scan or page size, a
    /// page missing or unreadable, pages that do not hold what it counted) is
    /// [`Resume::Unusable`]: the pull starts over, slower, never short. A store that fails to
    /// answer is an error the next attempt retries, the progress kept.
    async fn resume(
        &self,
        store: &impl ObjectStore,
        client: &CxOneClient,
        ids: &mut IdTally,
    ) -> Result<(ResultsPager, Vec<u32>), Resume> {
        let progress = match get_json::<CollectProgress>(store, &self.progress_key()).await? {
            Some(progress) if progress.scan_id == self.scan_id => progress,
            Some(other) => {
                let problem = format!("its progress is of scan {}", other.scan_id);
                return Err(Resume::Unusable(problem));
            }
            None => return Ok((self.new_pager(client), Vec::new())),
        };
        let pages = progress.pages;
        let mut pager = client
            .resume_results(self.scan_id, self.range(), progress.pager)
            .map_err(Resume::Unusable)?;
        // Room for the pages a progress names only as they are found: a damaged one may name
        // four thousand million.
        let mut checksums = Vec::new();
        for number in 0..pages {
            let packed = get_packed_page(store, &self.page_key(number)).await?;
            let checksum = packed.checksum().ok_or_else(|| {
                Resume::Unusable(format!("stored page {number} carries no checksum"))
            })?;
            checksums.push(checksum);
            let page = packed.unpack()?;
            ids.add_page(&page, self.engines);
            pager
                .remember(Bytes::from(page))
                .map_err(|e| Resume::Unusable(format!("stored page {number}: {e}")))?;
        }
        if !pager.remembers_all() {
            return Err(Resume::Unusable(format!(
                "its {pages} stored pages do not hold the distinct records its progress counted"
            )));
        }
        tracing::info!(item = %self.item.item, pages, "collect goes on from its progress");
        Ok((pager, checksums))
    }

    /// Forgets what an earlier attempt got, for a pull from the first page. The old progress
    /// stays until the first new page's replaces it (collect may not delete): were this attempt
    /// cut off before, the next finds the same old progress and pages, and decides as this one.
    fn start_over(&self, client: &CxOneClient, ids: &mut IdTally, why: &str) -> ResultsPager {
        tracing::warn!(item = %self.item.item, why, "collect starts over");
        ids.restart();
        self.new_pager(client)
    }
}

/// Why a main scan's pull does not go on from an earlier attempt's progress.
enum Resume {
    /// The store did not answer: the next attempt tries again.
    Store(StepError),
    /// The progress or its pages cannot be trusted: the pull starts over.
    Unusable(String),
}

impl From<StepError> for Resume {
    /// A store that fails is the store's; anything else read wrong is the progress's.
    fn from(error: StepError) -> Self {
        match error {
            StepError::Store(_) => Resume::Store(error),
            other => Resume::Unusable(other.to_string()),
        }
    }
}

/// Pulls the item's main scan from where an earlier attempt stopped (see [`MainScan::resume`]):
/// writes every page as it arrives, after its ids are tallied, and the progress after each page
/// but the last. With less than two of [`LEAST_TIME_FOR_A_PAGE`] left before `deadline` it asks
/// for no page ahead; with less than one, it stops between two pages. A resumed pull that finds the
/// scan's total moved since the pages it stored starts over, as a pull from the start would have
/// been the only one to see the data whole.
async fn store_results_pages(
    store: &impl ObjectStore,
    client: &CxOneClient,
    main: &MainScan<'_>,
    deadline: Option<SystemTime>,
    ids: &mut IdTally,
) -> Result<(Vec<u32>, Completeness, Option<String>, Option<Vec<u64>>), CollectError> {
    let mut started_over = false;
    let (mut pager, mut stored) = match main.resume(store, client, ids).await {
        Ok(resumed) => resumed,
        Err(Resume::Unusable(problem)) => {
            started_over = true;
            (main.start_over(client, ids, &problem), Vec::new())
        }
        Err(Resume::Store(error)) => return Err(CollectError::Progress(error)),
    };
    let mut resumed = !stored.is_empty();
    let time_left = || deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default());
    loop {
        if time_left().is_some_and(|left| left < 2 * LEAST_TIME_FOR_A_PAGE) {
            // Pages requested ahead would be dropped when the pull stops.
            pager.stop_reading_ahead();
        }
        let Some(page) = pager.next_page().await? else {
            break;
        };
        if resumed && !pager.completeness().totals_seen.is_empty() {
            let why = "the scan's total moved since the pages stored";
            pager = main.start_over(client, ids, why);
            (resumed, started_over) = (false, true);
            stored.clear();
            continue;
        }
        ids.add_page(&page.body, main.engines);
        stored.push(store_page(store, &main.page_key(page.number), &page.body).await?);
        let progress = CollectProgress {
            scan_id: main.scan_id.to_string(),
            pages: stored.len() as u32,
            pager: pager.progress(),
        };
        // After the last page (most scans have one) the outcome follows at once: no progress.
        if progress.pager.done {
            continue;
        }
        put_json(store, &main.progress_key(), &progress)
            .await
            .map_err(CollectError::Progress)?;
        if let Some(left) = time_left().filter(|left| *left < LEAST_TIME_FOR_A_PAGE) {
            return Err(CollectError::Paused {
                pages: stored.len() as u32,
                left_secs: left.as_secs(),
                started_over,
            });
        }
    }
    let (completeness, problem) = (pager.completeness().clone(), pager.problem());
    // A part's records, for the join; a whole pull's set is dropped with its pager.
    let fingerprints = main.item.part.is_some().then(|| pager.into_fingerprints());
    Ok((stored, completeness, problem, fingerprints))
}

/// Writes every page of a pager, as it arrives, under the key `key_of` gives its number, after
/// `read` has seen it; answers their checksums, in order.
async fn store_pages(
    store: &impl ObjectStore,
    mut pager: impl PageSource,
    key_of: impl Fn(u32) -> String,
    read: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(Vec<u32>, Completeness), CollectError> {
    let mut checksums = Vec::new();
    while let Some(page) = pager.next_page().await? {
        read(&page.body);
        checksums.push(store_page(store, &key_of(page.number), &page.body).await?);
    }
    Ok((checksums, pager.completeness().clone()))
}

/// Stores a page packed, and answers its checksum (see [`page_checksum`]).
async fn store_page(store: &impl ObjectStore, key: &str, page: &[u8]) -> Result<u32, CollectError> {
    let packed = pack_page(page);
    let checksum = page_checksum(&packed).expect("pack_page ends every page with its checksum");
    store.put(key, packed).await?;
    Ok(checksum)
}
