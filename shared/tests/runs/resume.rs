//! A collect cut off midway (its invocation's time running short, a store failing, the function
//! stopped) goes on from the pages it stored: none of them asked of the vendor again, nothing
//! short, and the same pages and verdict as a collect never cut off. A progress it cannot trust
//! makes it start over.

use std::time::{Duration, SystemTime};

use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Emulator, EmulatorConfig, OffsetMode, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::pipeline::{
    CollectOutcome, Connection, ItemStatus, StepError, VendorAccess, WorkItem, collect,
};
use cxone_etm::store::{LocalStore, ObjectStore, StoreError};

const PAGE: u32 = 10;

async fn tenant(mode: OffsetMode) -> Emulator {
    emulator_with(EmulatorConfig {
        shape: TenantShape {
            projects: 1,
            project_results: vec![96],
            scans_per_project: 1,
            // Ids that repeat are told apart by what the collect tallied: a resumed collect must
            // tally the pages it did not fetch again.
            repeated_result_ids_percent: 50,
            ..TenantShape::default()
        },
        results_offset: mode,
        ..EmulatorConfig::default()
    })
    .await
}

/// A run planned in its own store, its one item, and what collects it.
struct Planned {
    store: LocalStore,
    dir: std::path::PathBuf,
    vendor: VendorAccess,
    connection: Connection,
    item: WorkItem,
}

async fn planned(emulator: &Emulator, name: &str) -> Planned {
    let (store, dir) = temp_store(name);
    let mut connection = connection(emulator, name, ConnectorKind::Sast);
    connection.vendor.results_page_size = PAGE;
    let (_, vendor, work) = planned_run(&store, &connection, emulator, 1).await;
    let item = work.into_iter().find(|i| i.scan_id.is_some()).unwrap();
    Planned {
        store,
        dir,
        vendor,
        connection,
        item,
    }
}

impl Drop for Planned {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A run planned and collected whole, never cut off: what a resumed collect must match.
async fn collected_whole(emulator: &Emulator, name: &str) -> (Planned, CollectOutcome) {
    let whole = planned(emulator, name).await;
    let outcome = whole.collect(&whole.store, None).await.unwrap();
    (whole, outcome)
}

/// A run planned and its collect cut off three times, short of time: three pages stored, with
/// their progress.
async fn cut_after_three_pages(emulator: &Emulator, name: &str) -> Planned {
    let cut = planned(emulator, name).await;
    for _ in 0..3 {
        cut.collect(&cut.store, one_more_page()).await.unwrap_err();
    }
    cut
}

impl Planned {
    async fn collect(
        &self,
        store: &impl ObjectStore,
        deadline: Option<SystemTime>,
    ) -> Result<CollectOutcome, StepError> {
        collect(store, &self.vendor, &self.connection, &self.item, deadline).await
    }

    /// Changes the JSON of the item's stored progress.
    async fn edit_progress(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let key = self.item.run.collect_progress(&self.item.item);
        let stored = self.store.get(&key).await.unwrap().expect("a progress");
        let mut progress = serde_json::from_slice(&stored).unwrap();
        change(&mut progress);
        let progress = serde_json::to_vec(&progress).unwrap();
        self.store.put(&key, progress.into()).await.unwrap();
    }

    /// As if the scan had held `earlier` results when the three stored pages were read.
    async fn move_the_total(&self, earlier: u64) {
        for n in 0..3 {
            self.edit_page(n, |page| page["totalCount"] = earlier.into())
                .await;
        }
        self.edit_progress(|progress| {
            progress["pager"]["completeness"]["expected"] = earlier.into()
        })
        .await;
    }

    /// Changes the JSON of a stored raw page, packed again as collect packs it.
    async fn edit_page(&self, number: u32, change: impl FnOnce(&mut serde_json::Value)) {
        let key = self.item.run.raw_page(&self.item.item, number);
        let packed = self.store.get(&key).await.unwrap().expect("a page");
        let page = cxone_etm::packing::unpack(&key, &packed).unwrap();
        let mut page = serde_json::from_slice(&page).unwrap();
        change(&mut page);
        let page = cxone_etm::packing::pack_page(&serde_json::to_vec(&page).unwrap());
        self.store.put(&key, page).await.unwrap();
    }

    async fn pages(&self, count: u32) -> Vec<bytes::Bytes> {
        let mut pages = Vec::new();
        for n in 0..count {
            let key = self.item.run.raw_page(&self.item.item, n);
            pages.push(self.store.get(&key).await.unwrap().expect("page stored"));
        }
        pages
    }
}

/// A deadline 59 s away: under the minute a collect wants for another page, so it stops after
/// the next page it stores.
fn one_more_page() -> Option<SystemTime> {
    Some(SystemTime::now() + Duration::from_secs(59))
}

/// What a collect found, without its traffic (which differs by attempt).
fn verdict(outcome: &CollectOutcome) -> (ItemStatus, u32, String, [Vec<String>; 2]) {
    (
        outcome.status,
        outcome.pages,
        format!("{:?}", outcome.completeness),
        [outcome.repeated_ids.clone(), outcome.sent_twice_ids.clone()],
    )
}

#[tokio::test]
async fn a_collect_whose_time_runs_short_stops_between_pages_and_the_next_attempt_goes_on() {
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let emulator = tenant(mode).await;
        let (whole, uncut) = collected_whole(&emulator, "resume-whole").await;
        assert_eq!(uncut.status, ItemStatus::Complete, "{mode:?}");
        assert!(
            uncut.repeated_ids.len() >= 3,
            "{mode:?}: the tenant repeats ids: {:?}",
            uncut.repeated_ids
        );
        // Progress is written after each page but the last, which the outcome follows at once.
        let progress = whole
            .store
            .get(&whole.item.run.collect_progress(&whole.item.item))
            .await
            .unwrap()
            .expect("a progress");
        let progress: serde_json::Value = serde_json::from_slice(&progress).unwrap();
        assert_eq!(progress["pages"], uncut.pages - 1, "{mode:?}");
        assert_eq!(progress["pager"]["done"], false, "{mode:?}");

        let cut = planned(&emulator, "resume-cut").await;
        // Twice cut off: after the first page, then after the second (the offset probe).
        for stored in [1, 2] {
            let error = cut.collect(&cut.store, one_more_page()).await.unwrap_err();
            assert!(
                matches!(error, StepError::CollectPaused { pages, left_secs, started_over: false }
                    if pages == stored && left_secs < 60),
                "{mode:?}: {error}"
            );
            assert!(error.is_retryable(), "the state machine retries it");
            let message = error.to_string();
            assert!(
                message.contains(&format!("goes on from page {stored}")),
                "{message}"
            );
            let outcome_key = cut.item.run.collect_outcome(&cut.item.item);
            assert!(
                cut.store.get(&outcome_key).await.unwrap().is_none(),
                "{mode:?}: a paused item has no outcome yet"
            );
        }
        let resumed = cut.collect(&cut.store, None).await.unwrap();
        assert_eq!(verdict(&resumed), verdict(&uncut), "{mode:?}");
        // Counted by the attempt itself (a request an attempt that stopped started ahead may
        // reach the emulator late): every request of a whole collect (results pages, then the
        // severities before triage) but the two pages stored.
        assert_eq!(
            resumed.traffic.requests,
            uncut.traffic.requests - 2,
            "{mode:?}: the two pages stored are not asked for again"
        );
        assert_eq!(
            cut.pages(resumed.pages).await,
            whole.pages(uncut.pages).await,
            "{mode:?}: the same pages"
        );
    }
}

/// Fails the first write (or read) of one raw page, as a store throttling or a function stopped
/// would.
#[derive(Clone)]
struct FailsOnce {
    inner: LocalStore,
    page: String,
    reads: bool,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FailsOnce {
    fn fails(&self, key: &str, read: bool) -> Result<(), StoreError> {
        if read == self.reads
            && key.ends_with(&self.page)
            && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Failed {
                location: key.to_string(),
                problem: "SlowDown".into(),
            });
        }
        Ok(())
    }
}

impl ObjectStore for FailsOnce {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.fails(key, false)?;
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: bytes::Bytes) -> Result<bool, StoreError> {
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.fails(key, true)?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

/// The store fails once at raw page `page` (its write, or its read when `reads`): the collect
/// fails retryable, and the next one goes on to the verdict and pages of the `whole` collect,
/// asking the vendor for all but the `kept` pages stored before.
async fn fails_once_then_goes_on(
    cut: &Planned,
    (whole, uncut): (&Planned, &CollectOutcome),
    page: u32,
    reads: bool,
    kept: u64,
) {
    let failing = FailsOnce {
        inner: cut.store.clone(),
        page: format!("/raw/{}/{page}.json.zst", cut.item.item),
        reads,
        failed: Default::default(),
    };
    let error = cut.collect(&failing, None).await.unwrap_err();
    assert!(
        matches!(error, StepError::Store(_)) && error.is_retryable(),
        "{error}"
    );
    let resumed = cut.collect(&failing, None).await.unwrap();
    assert_eq!(verdict(&resumed), verdict(uncut));
    assert_eq!(
        resumed.traffic.requests,
        uncut.traffic.requests - kept,
        "the {kept} pages stored are not asked for again"
    );
    assert_eq!(
        cut.pages(resumed.pages).await,
        whole.pages(uncut.pages).await
    );
}

#[tokio::test]
async fn a_collect_stopped_by_a_failing_store_goes_on_from_its_last_stored_page() {
    let emulator = tenant(OffsetMode::Page).await;
    let (whole, uncut) = collected_whole(&emulator, "resume-store-whole").await;

    let cut = planned(&emulator, "resume-store-cut").await;
    // Pages 0 to 4 are stored with their progress: only 5 on are asked for again.
    fails_once_then_goes_on(&cut, (&whole, &uncut), 5, false, 5).await;
}

#[tokio::test]
async fn a_progress_its_pages_do_not_bear_out_makes_the_collect_start_over() {
    let emulator = tenant(OffsetMode::Page).await;
    let (whole, uncut) = collected_whole(&emulator, "resume-bad-whole").await;

    for (case, damage) in [
        ("a stored page missing", "missing"),
        ("a stored page that is not a page", "garbage"),
        ("a stored page of other records", "other"),
        ("a stored page of another total", "total"),
        ("a progress that is not JSON", "progress"),
        ("a progress of another scan", "scan"),
        ("a progress naming pages never stored", "pages"),
    ] {
        let cut = cut_after_three_pages(&emulator, "resume-bad-cut").await;
        let (run, item) = (&cut.item.run, &cut.item.item);
        let page1 = run.raw_page(item, 1);
        match damage {
            "missing" => cut.store.delete(&page1).await.unwrap(),
            "garbage" => cut.store.put(&page1, "{}".into()).await.unwrap(),
            "other" => {
                let page0 = cut
                    .store
                    .get(&run.raw_page(item, 0))
                    .await
                    .unwrap()
                    .unwrap();
                cut.store.put(&page1, page0).await.unwrap();
            }
            "total" => {
                let other_total = uncut.completeness.expected + 1;
                cut.edit_page(1, |page| page["totalCount"] = other_total.into())
                    .await
            }
            "progress" => cut
                .store
                .put(&run.collect_progress(item), "{".into())
                .await
                .unwrap(),
            "pages" => {
                cut.edit_progress(|progress| progress["pages"] = u32::MAX.into())
                    .await
            }
            field => {
                assert_eq!(field, "scan");
                cut.edit_progress(|progress| progress["scanId"] = "another-scan".into())
                    .await
            }
        }
        let outcome = cut.collect(&cut.store, None).await.unwrap();
        assert_eq!(verdict(&outcome), verdict(&uncut), "{case}");
        assert_eq!(
            outcome.traffic.requests, uncut.traffic.requests,
            "{case}: every page asked for again"
        );
        assert_eq!(
            cut.pages(outcome.pages).await,
            whole.pages(uncut.pages).await,
            "{case}"
        );
    }
}

/// The scan's total moved between two attempts: the pages stored are of the scan as it was, so
/// the pull that goes on from them could never be proven whole; it starts over and the data is
/// read whole again, as a first attempt would have.
#[tokio::test]
async fn a_pull_resumed_over_a_total_that_moved_starts_over() {
    let emulator = tenant(OffsetMode::Page).await;
    let (whole, uncut) = collected_whole(&emulator, "resume-moved-whole").await;

    let cut = cut_after_three_pages(&emulator, "resume-moved-cut").await;
    cut.move_the_total(uncut.completeness.expected - 1).await;

    let outcome = cut.collect(&cut.store, None).await.unwrap();
    assert_eq!(verdict(&outcome), verdict(&uncut));
    assert!(
        outcome.traffic.requests > uncut.traffic.requests,
        "the page that showed the new total, then every page again: {} requests",
        outcome.traffic.requests
    );
    assert_eq!(
        cut.pages(outcome.pages).await,
        whole.pages(uncut.pages).await
    );
}

/// A pull that starts over (the scan's total moved) and is cut short says so: it got no further
/// than the attempt before, so its group is not retried as one out of time after progress (a
/// total that moves at every attempt would start over until the run's deadline). The next
/// attempt goes on from the page it stored, and that pause is progress again.
#[tokio::test]
async fn a_pull_that_starts_over_and_is_cut_short_says_it_started_over() {
    let emulator = tenant(OffsetMode::Page).await;
    let (_, uncut) = collected_whole(&emulator, "resume-restart-whole").await;
    let cut = cut_after_three_pages(&emulator, "resume-restart-cut").await;
    cut.move_the_total(uncut.completeness.expected - 1).await;
    for (pages, started_over) in [(1, true), (2, false)] {
        let error = cut.collect(&cut.store, one_more_page()).await.unwrap_err();
        assert!(
            matches!(error, StepError::CollectPaused { pages: p, started_over: s, .. }
                if p == pages && s == started_over),
            "{error}"
        );
    }
}

/// The connection's page size changed between two attempts: offsets of the old size mean other
/// records at the new one, so the pull starts over at the new size and is whole.
#[tokio::test]
async fn a_pull_resumed_at_another_page_size_starts_over() {
    let emulator = tenant(OffsetMode::Page).await;
    let (_, uncut) = collected_whole(&emulator, "resume-size-whole").await;

    let cut = cut_after_three_pages(&emulator, "resume-size-cut").await;
    let mut connection = cut.connection.clone();
    connection.vendor.results_page_size = 2 * PAGE;
    let vendor = VendorAccess::new(
        connection.vendor.clone(),
        cxone_etm::secret::SecretSource::provided(api_key(&emulator)),
    )
    .await
    .unwrap();
    let outcome = collect(&cut.store, &vendor, &connection, &cut.item, None)
        .await
        .unwrap();
    assert_eq!(outcome.status, ItemStatus::Complete, "{:?}", outcome.reason);
    assert_eq!(outcome.completeness.unique, uncut.completeness.unique);
    assert_eq!(outcome.repeated_ids, uncut.repeated_ids);
    assert_eq!(
        outcome.pages,
        uncut.pages.div_ceil(2),
        "pages of the new size"
    );
}

/// The store fails to give back a stored page while a pull is resumed: that is the store's
/// passing fault, not a progress to throw away; the attempt fails retryable and the next one
/// goes on from the same progress.
#[tokio::test]
async fn a_store_that_fails_while_a_pull_is_resumed_keeps_its_progress() {
    let emulator = tenant(OffsetMode::Page).await;
    let (whole, uncut) = collected_whole(&emulator, "resume-read-whole").await;

    let cut = cut_after_three_pages(&emulator, "resume-read-cut").await;
    fails_once_then_goes_on(&cut, (&whole, &uncut), 1, true, 3).await;
}

/// The store fails to give back a page read again, every page stored, for the identities of the
/// records whose ids repeat: the attempt fails retryable, and the next goes on from the progress
/// of the page before the last to the same verdict.
#[tokio::test]
async fn a_store_that_fails_while_repeated_ids_are_read_again_keeps_the_pull() {
    let emulator = tenant(OffsetMode::Page).await;
    let (whole, uncut) = collected_whole(&emulator, "resume-identities-whole").await;
    assert!(
        !uncut.repeated_ids.is_empty() && uncut.pages > 4,
        "{uncut:?}"
    );
    let fresh = planned(&emulator, "resume-identities-cut").await;
    let kept = u64::from(uncut.pages - 1);
    fails_once_then_goes_on(&fresh, (&whole, &uncut), 4, true, kept).await;
}

/// A collect stopped between a page's write and its progress's (the function killed there, or
/// the store failing the second write) leaves the progress one page behind the pages: the next
/// attempt asks again for that one page only, writes it over the one stored, and ends as a
/// collect never cut off.
#[tokio::test]
async fn a_collect_stopped_between_a_page_and_its_progress_asks_again_for_that_page_only() {
    let emulator = tenant(OffsetMode::Item).await;
    let (whole, uncut) = collected_whole(&emulator, "resume-lag-whole").await;
    let cut = cut_after_three_pages(&emulator, "resume-lag-cut").await;
    let failing = FailsOnce {
        inner: cut.store.clone(),
        page: format!("/raw/{}/progress.json", cut.item.item),
        reads: false,
        failed: Default::default(),
    };
    let error = cut.collect(&failing, None).await.unwrap_err();
    assert!(
        matches!(error, StepError::Store(_)) && error.is_retryable(),
        "{error}"
    );
    let page_three = cut.item.run.raw_page(&cut.item.item, 3);
    assert!(
        cut.store.get(&page_three).await.unwrap().is_some(),
        "page 3 stored"
    );
    let progress = cut.item.run.collect_progress(&cut.item.item);
    let progress: serde_json::Value =
        serde_json::from_slice(&cut.store.get(&progress).await.unwrap().unwrap()).unwrap();
    assert_eq!(progress["pages"], 3, "its progress not");

    let resumed = cut.collect(&cut.store, None).await.unwrap();
    assert_eq!(verdict(&resumed), verdict(&uncut));
    assert_eq!(
        resumed.traffic.requests,
        uncut.traffic.requests - 3,
        "pages 0 to 2 are not asked for again; page 3 is"
    );
    assert_eq!(
        cut.pages(resumed.pages).await,
        whole.pages(uncut.pages).await
    );
}
