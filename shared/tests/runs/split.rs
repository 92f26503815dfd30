//! A scan too large for one worker is split into page ranges collected at once and joined
//! before its transform: the asset commits what a whole pull commits, under either reading of
//! `offset`, and a part that fails, is cut off, or does not add up with the others leaves the
//! asset's findings carried, never closed.

use crate::common::runs::*;
use crate::common::*;
use cxone_emulator::{Emulator, EmulatorConfig, Endpoint, FaultSpec, OffsetMode, TenantShape};
use cxone_etm::ConnectorKind;
use cxone_etm::pipeline::{
    CollectOutcome, Connection, ItemStatus, Manifest, RunRef, VendorAccess, WorkItem, collect,
    finalize, read_work_list, transform,
};
use cxone_etm::store::{LocalStore, ObjectStore};

const PAGE: u32 = 10;
/// Parts of three pages: the 95 results of the large project make four parts (3, 3, 3 and 1 pages).
const SPLIT_ABOVE: u64 = 30;
const LARGE: u64 = 95;

async fn tenant(mode: OffsetMode) -> Emulator {
    emulator_with(EmulatorConfig {
        shape: TenantShape {
            projects: 3,
            project_results: vec![LARGE, 7, 12],
            scans_per_project: 1,
            // Ids that repeat across parts are found only over the union.
            repeated_result_ids_percent: 50,
            ..TenantShape::default()
        },
        results_offset: mode,
        ..EmulatorConfig::default()
    })
    .await
}

fn split_connection(emulator: &Emulator, id: &str) -> Connection {
    let mut c = connection(emulator, id, ConnectorKind::Sast);
    c.config.split_scans_above = SPLIT_ABOVE;
    c.vendor.results_page_size = PAGE;
    c
}

fn run_ref(id: &str, run_id: &str) -> RunRef {
    RunRef {
        connection_id: id.to_string(),
        run_id: run_id.to_string(),
    }
}

async fn outcome(store: &LocalStore, key: &str) -> Option<CollectOutcome> {
    let body = store.get(key).await.unwrap()?;
    Some(serde_json::from_slice(&body).unwrap())
}

/// The large project's item in a run's manifest.
fn large_item(manifest: &Manifest, emulator: &Emulator) -> cxone_etm::pipeline::ManifestItem {
    let id = &emulator.expected().projects[0].id;
    manifest
        .items
        .iter()
        .find(|i| &i.vendor_id == id)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_large_scan_split_into_parts_commits_what_a_whole_pull_commits() {
    for mode in [OffsetMode::Page, OffsetMode::Item] {
        let emulator = tenant(mode).await;
        let (store, dir) = temp_store("split-whole");
        let c = split_connection(&emulator, "split");
        // The first run knows no size: the scan is pulled whole.
        let first = run(&store, &c, api_key(&emulator)).await.unwrap();
        let m1 = manifest(&store, &first.manifest).await;
        let (work, _) = read_work_list(&store, &run_ref("split", &first.run_id))
            .await
            .unwrap();
        assert!(work.iter().all(|i| i.part.is_none()), "{mode:?}");

        let second = run(&store, &c, api_key(&emulator)).await.unwrap();
        assert!(second.complete, "{mode:?}: {:?}", second.problems);
        let run2 = run_ref("split", &second.run_id);
        let (work, _) = read_work_list(&store, &run2).await.unwrap();
        let parts: Vec<_> = work.iter().filter_map(|i| i.part.clone()).collect();
        let ranges: Vec<_> = parts.iter().map(|p| (p.first_page, p.pages)).collect();
        assert_eq!(
            ranges,
            [(0, Some(3)), (3, Some(3)), (6, Some(3)), (9, None)],
            "{mode:?}"
        );
        assert!(parts.iter().all(|p| p.of == 4 && p.planned_total == LARGE));
        // Each part is a child execution of its own; the two small projects share one.
        assert_eq!(second.child_executions, 5, "{mode:?}");
        assert_eq!(second.items, 3, "the parts are one asset");

        let m2 = manifest(&store, &second.manifest).await;
        let (whole, split) = (large_item(&m1, &emulator), large_item(&m2, &emulator));
        assert_eq!(split.status, ItemStatus::Complete, "{mode:?}: {split:?}");
        assert_eq!(
            (split.records_expected, split.records_fetched),
            (LARGE, LARGE)
        );
        assert_eq!(split.figures.findings_out, whole.figures.findings_out);
        // The same figures, but every finding is one the last run reported (none new, none fixed).
        let mut expected = whole.figures.clone();
        expected.lifecycle = split.figures.lifecycle.clone();
        assert_eq!(split.figures, expected, "{mode:?}");
        assert_eq!(
            format!("{:?}", split.figures.lifecycle),
            format!("{{Active: {}}}", whole.figures.findings_out)
        );
        assert_eq!(
            committed_findings(&store, &m1).await,
            committed_findings(&store, &m2).await,
            "{mode:?}"
        );
        // The joined outcome proves the union as a whole pull proves the scan.
        let item = &work.iter().find(|i| i.part.is_some()).unwrap().item;
        let joined = outcome(&store, &run2.collect_outcome(item)).await.unwrap();
        let alone = outcome(
            &store,
            &run_ref("split", &first.run_id).collect_outcome(item),
        )
        .await
        .unwrap();
        assert_eq!(joined.pages, 10, "{mode:?}");
        assert_eq!(
            (joined.completeness.expected, joined.completeness.unique),
            (LARGE, LARGE)
        );
        assert_eq!(joined.completeness.duplicates, 0);
        assert!(!alone.repeated_ids.is_empty(), "the tenant repeats ids");
        assert_eq!(joined.repeated_ids, alone.repeated_ids, "{mode:?}");
        for index in 0..4 {
            let part = outcome(&store, &run2.part_outcome(item, index))
                .await
                .unwrap();
            assert_eq!(part.status, ItemStatus::Complete, "{mode:?} {index}");
        }
        // `cxone-etm transform` replays the split item's raw folder as the whole one's.
        let replayed = |run: &RunRef| {
            let raw = dir.join(run.raw_prefix("x").trim_end_matches("/x/"));
            let context = cxone_etm::mapping::TransformContext {
                connection_id: "split".into(),
                run_id: "replay".into(),
                connector_kind: ConnectorKind::Sast,
                produced_at: "2026-12-03T00:00:00Z".into(),
            };
            cxone_etm::mapping::replay_dir(
                &raw,
                &dir.join(format!("replay-{}", run.run_id)),
                c.first_plan(),
                &c.scoring,
                &context,
                &c.options,
            )
            .unwrap()
        };
        let (alone, split) = (replayed(&run_ref("split", &first.run_id)), replayed(&run2));
        assert!(split.unfinished.is_empty(), "{:?}", split.unfinished);
        assert_eq!(split.figures, alone.figures, "{mode:?}");
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test]
async fn a_part_the_vendor_refuses_leaves_the_asset_failed_and_its_findings_carried() {
    let emulator = tenant(OffsetMode::Page).await;
    let (store, dir) = temp_store("split-refused");
    let c = split_connection(&emulator, "split-refused");
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let open_before = large_item(&manifest(&store, &first.manifest).await, &emulator)
        .figures
        .findings_out;
    // The second part's first page (page index 3) is refused.
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some(format!("limit={PAGE}&offset=3")),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(!second.complete);
    let m2 = manifest(&store, &second.manifest).await;
    let large = large_item(&m2, &emulator);
    assert_eq!(large.status, ItemStatus::Failed);
    let reason = large.reason.unwrap();
    assert!(reason.starts_with("part 2 of 4: "), "{reason}");
    assert!(reason.contains("403"), "{reason}");
    assert_eq!(large.carried_forward, open_before);
    assert!(
        large.objects.is_empty(),
        "nothing of the asset is committed"
    );
    assert_eq!(
        m2.items
            .iter()
            .filter(|i| i.status == ItemStatus::Complete)
            .count(),
        2
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Run 1 as the vendor holds it, then run 2 with `fault` on the large scan's results: the large
/// item's open findings after run 1, and its entry in run 2's manifest.
async fn large_scan_faulted(
    emulator: &Emulator,
    store: &LocalStore,
    c: &Connection,
    fault: FaultSpec,
) -> (u64, cxone_etm::pipeline::ManifestItem) {
    let first = run(store, c, api_key(emulator)).await.unwrap();
    assert!(first.complete, "{:?}", first.problems);
    let open_before = large_item(&manifest(store, &first.manifest).await, emulator)
        .figures
        .findings_out;
    let scan = emulator.expected().projects[0]
        .main_branch_sast_scan
        .clone()
        .unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            only_matching: Some(scan),
            ..fault
        },
    );
    let second = run(store, c, api_key(emulator)).await.unwrap();
    let large = large_item(&manifest(store, &second.manifest).await, emulator);
    (open_before, large)
}

#[tokio::test]
async fn a_total_that_moves_while_the_parts_are_pulled_leaves_the_asset_incomplete() {
    let emulator = tenant(OffsetMode::Page).await;
    let (store, dir) = temp_store("split-drift");
    let c = split_connection(&emulator, "split-drift");
    let drift = FaultSpec {
        total_drift: 2,
        ..FaultSpec::default()
    };
    let (open_before, large) = large_scan_faulted(&emulator, &store, &c, drift).await;
    assert_eq!(large.status, ItemStatus::Incomplete, "{large:?}");
    assert!(large.reason.unwrap().starts_with("part "));
    assert_eq!(large.carried_forward, open_before);
    assert!(large.objects.is_empty());
    std::fs::remove_dir_all(dir).ok();
}

/// A server that reports fewer results than the large scan holds (90 of 95), its last page by
/// that total full: the page after it is asked for, by the last part of a split scan as by a whole
/// pull, and its results leave the asset incomplete, its findings carried, rather than never read
/// and closed as absent.
#[tokio::test]
async fn a_total_reported_short_of_the_results_leaves_the_asset_incomplete() {
    for (mode, split) in [
        (OffsetMode::Page, true),
        (OffsetMode::Item, true),
        (OffsetMode::Page, false),
    ] {
        let case = format!("{mode:?}, split {split}");
        let emulator = tenant(mode).await;
        let name = format!("short-total-{mode:?}-{split}").to_lowercase();
        let (store, dir) = temp_store(&name);
        let mut c = split_connection(&emulator, &name);
        if !split {
            c.config.split_scans_above = u64::MAX;
        }
        let short = FaultSpec {
            claimed_total: Some(LARGE - 5),
            ..FaultSpec::default()
        };
        let (open_before, large) = large_scan_faulted(&emulator, &store, &c, short).await;
        assert_eq!(large.status, ItemStatus::Incomplete, "{case}: {large:?}");
        let reason = large.reason.unwrap();
        assert_eq!(reason.starts_with("part "), split, "{case}: {reason}");
        assert_eq!(large.carried_forward, open_before, "{case}");
        assert!(large.objects.is_empty(), "{case}");
        std::fs::remove_dir_all(dir).ok();
    }
}

/// A run planned after a committed one, so the large scan is split: its store, the vendor, the
/// connection and the work list.
struct SplitRun {
    store: LocalStore,
    dir: std::path::PathBuf,
    vendor: VendorAccess,
    connection: Connection,
    run: RunRef,
    work: Vec<WorkItem>,
}

impl Drop for SplitRun {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

async fn split_run(emulator: &Emulator, name: &str) -> SplitRun {
    let (store, dir) = temp_store(name);
    let connection = split_connection(emulator, name);
    run(&store, &connection, api_key(emulator)).await.unwrap();
    let (run, vendor, work) = planned_run(&store, &connection, emulator, 4).await;
    SplitRun {
        store,
        dir,
        vendor,
        connection,
        run,
        work,
    }
}

impl SplitRun {
    fn parts(&self) -> Vec<&WorkItem> {
        self.work.iter().filter(|i| i.part.is_some()).collect()
    }

    async fn collect(&self, item: &WorkItem) -> CollectOutcome {
        collect(&self.store, &self.vendor, &self.connection, item, None)
            .await
            .unwrap()
    }

    /// Collects and transforms every item but the split one.
    async fn the_others(&self) {
        for item in self.work.iter().filter(|i| i.part.is_none()) {
            self.collect(item).await;
            transform(&self.store, &self.connection, item)
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn parts_wait_for_each_other_and_a_part_that_never_finishes_is_named() {
    let emulator = tenant(OffsetMode::Page).await;
    let s = split_run(&emulator, "split-unfinished").await;
    s.the_others().await;
    let parts = s.parts();
    assert_eq!(parts.len(), 4);
    let key = parts[0].item.clone();
    // Parts 1, 2 and 4 are collected; each transform waits, as part 3 has no outcome.
    for part in [parts[0], parts[1], parts[3]] {
        assert_eq!(s.collect(part).await.status, ItemStatus::Complete);
    }
    for part in [parts[0], parts[1], parts[3]] {
        let error = transform(&s.store, &s.connection, part).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("part 3 of 4 has not finished"),
            "{message}"
        );
    }
    assert!(
        s.store
            .get(&s.run.collect_outcome(&key))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.store
            .get(&s.run.part_progress(&key, 0))
            .await
            .unwrap()
            .is_some(),
        "a part's progress is its own"
    );
    assert!(
        s.store
            .get(&s.run.collect_progress(&key))
            .await
            .unwrap()
            .is_none()
    );
    let m = finalize(&s.store, &s.connection, &s.run).await.unwrap();
    let large = large_item(&m, &emulator);
    assert_eq!(large.status, ItemStatus::Failed);
    assert_eq!(
        large.reason.as_deref(),
        Some("part 3 of 4: collect did not finish")
    );
    // What the three parts that finished got, against the scan's total.
    assert_eq!((large.records_expected, large.records_fetched), (LARGE, 65));
    assert!(large.carried_forward > 0);
    assert!(large.objects.is_empty());
    assert_eq!(m.items.len(), 3, "the parts are one line of the manifest");
}

#[tokio::test]
async fn the_part_collected_last_joins_them_and_the_others_take_its_transform() {
    let emulator = tenant(OffsetMode::Page).await;
    let s = split_run(&emulator, "split-join").await;
    s.the_others().await;
    let parts = s.parts();
    for part in &parts[1..] {
        s.collect(part).await;
    }
    let later = transform(&s.store, &s.connection, parts[3]).await;
    assert!(later.is_err(), "part 1 is not collected yet");
    s.collect(parts[0]).await;
    let joined = transform(&s.store, &s.connection, parts[0]).await.unwrap();
    assert!(joined.failed.is_none(), "{joined:?}");
    assert_eq!(joined.figures.records_in, LARGE);
    // The parts transformed after take the record of the one that joined them.
    for part in &parts[1..] {
        let record = transform(&s.store, &s.connection, part).await.unwrap();
        assert_eq!(record, joined);
    }
    let m = finalize(&s.store, &s.connection, &s.run).await.unwrap();
    assert!(m.complete, "{:?}", m.problems);
    let large = large_item(&m, &emulator);
    assert_eq!(large.figures.findings_out, joined.figures.findings_out);
}

/// A split scan whose join comes late: finalize found its parts collected but not joined and
/// gave up on it (its `givenUp` record, written while the run still held its lock), and then the
/// transform of the part collected last joins them and transforms the scan. It commits nothing:
/// it finds finalize's record, deletes what it wrote and answers `GivenUp`; finalize reports the
/// item failed with nothing of it sent, and the next run is whole.
#[tokio::test]
async fn a_join_that_comes_after_finalize_gave_up_commits_nothing() {
    let emulator = tenant(OffsetMode::Page).await;
    let s = split_run(&emulator, "split-late-join").await;
    s.the_others().await;
    let parts = s.parts();
    for part in &parts {
        s.collect(part).await;
    }
    let key = parts[0].item.clone();
    let given_up = cxone_etm::pipeline::TransformRecord::given_up(&key);
    let record = serde_json::to_vec(&given_up).unwrap();
    let record_key = s.run.transform_record(&key);
    assert!(
        s.store
            .put_if_absent(&record_key, record.into())
            .await
            .unwrap()
    );

    let late = transform(&s.store, &s.connection, parts[3]).await;
    assert!(
        matches!(late, Err(cxone_etm::pipeline::StepError::GivenUp { .. })),
        "{late:?}"
    );
    assert_eq!(
        s.store.list(&s.run.etm_prefix(&key)).await.unwrap(),
        vec![record_key],
        "only finalize's record is left of the item"
    );
    let m = finalize(&s.store, &s.connection, &s.run).await.unwrap();
    let large = large_item(&m, &emulator);
    assert_eq!(large.status, ItemStatus::Failed, "{large:?}");
    assert!(
        large.objects.is_empty() && large.carried_forward > 0,
        "{large:?}"
    );

    let next = run(&s.store, &s.connection, api_key(&emulator))
        .await
        .unwrap();
    assert!(next.complete, "{:?}", next.problems);
    nothing_new_or_reopened(&manifest(&s.store, &next.manifest).await, "the run after");
}

/// Rewrites part `index`'s fingerprints (a record count, then the records' and the ids'
/// fingerprints, little-endian, packed), as a hostile store or a vendor that moved between two
/// parts' pulls would leave them.
async fn edit_fingerprints(s: &SplitRun, index: u32, change: impl FnOnce(&mut Vec<u64>)) {
    let key = s.run.part_fingerprints(&s.parts()[0].item, index);
    let packed = s.store.get(&key).await.unwrap().expect("fingerprints");
    let bytes = cxone_etm::packing::unpack(&key, &packed).unwrap();
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect();
    let count = words[0] as usize;
    let (mut records, ids) = (words[1..1 + count].to_vec(), words[1 + count..].to_vec());
    change(&mut records);
    let mut out = Vec::new();
    for word in std::iter::once(records.len() as u64)
        .chain(records)
        .chain(ids)
    {
        out.extend_from_slice(&word.to_le_bytes());
    }
    s.store
        .put(&key, cxone_etm::packing::pack_page(&out))
        .await
        .unwrap();
}

async fn first_record_of(s: &SplitRun, index: u32) -> u64 {
    let mut first = 0;
    edit_fingerprints(s, index, |records| first = records[0]).await;
    first
}

#[tokio::test]
async fn parts_that_do_not_add_up_leave_the_asset_incomplete_never_short() {
    let emulator = tenant(OffsetMode::Page).await;
    let cases = [
        "a record stored by two parts",
        "parts that saw two totals",
        "a part's fingerprints missing",
        "a part's fingerprints short of its outcome",
    ];
    for what in cases {
        let s = split_run(&emulator, "split-tampered").await;
        s.the_others().await;
        for part in s.parts() {
            s.collect(part).await;
        }
        let key = s.parts()[0].item.clone();
        let (status, says) = match what {
            "a record stored by two parts" => {
                // The first part's first record, stored again by the second in place of one of
                // its own.
                let repeat = first_record_of(&s, 0).await;
                edit_fingerprints(&s, 1, |records| {
                    records[0] = repeat;
                    records.sort_unstable();
                })
                .await;
                (
                    ItemStatus::Incomplete,
                    "the union of its 4 parts: records stored by two parts: 1 ",
                )
            }
            "parts that saw two totals" => {
                let outcome_key = s.run.part_outcome(&key, 2);
                let mut outcome: serde_json::Value =
                    serde_json::from_slice(&s.store.get(&outcome_key).await.unwrap().unwrap())
                        .unwrap();
                outcome["completeness"]["expected"] = serde_json::json!(LARGE + 1);
                let outcome = serde_json::to_vec(&outcome).unwrap();
                s.store.put(&outcome_key, outcome.into()).await.unwrap();
                (
                    ItemStatus::Incomplete,
                    "part 1 of 4: it saw a total of 95 where another part saw 96",
                )
            }
            "a part's fingerprints missing" => {
                s.store
                    .delete(&s.run.part_fingerprints(&key, 1))
                    .await
                    .unwrap();
                (
                    ItemStatus::Failed,
                    "missing, where the part has its outcome",
                )
            }
            _ => {
                edit_fingerprints(&s, 2, |records| {
                    records.pop();
                })
                .await;
                (
                    ItemStatus::Failed,
                    "29 records' fingerprints, where the part's outcome counts 30",
                )
            }
        };
        let record = transform(&s.store, &s.connection, s.parts()[3])
            .await
            .unwrap();
        assert!(record.objects.is_empty(), "{what}: nothing transformed");
        let m = finalize(&s.store, &s.connection, &s.run).await.unwrap();
        let large = large_item(&m, &emulator);
        assert_eq!(large.status, status, "{what}: {large:?}");
        let reason = large.reason.unwrap();
        assert!(reason.contains(says), "{what}: {reason}");
        assert!(large.carried_forward > 0, "{what}");
        assert!(
            large.objects.is_empty(),
            "{what}: nothing of it is committed"
        );
    }
}

#[tokio::test]
async fn a_part_cut_off_goes_on_from_its_own_progress() {
    let emulator = tenant(OffsetMode::Item).await;
    let s = split_run(&emulator, "split-cut").await;
    let part = s.parts()[1];
    let key = &part.item;
    // A deadline 59 s away: under the minute a collect wants for another page.
    let short = Some(std::time::SystemTime::now() + std::time::Duration::from_secs(59));
    let error = collect(&s.store, &s.vendor, &s.connection, part, short)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("after 1 pages"), "{error}");
    assert!(
        s.store
            .get(&s.run.part_progress(key, 1))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.store
            .get(&s.run.raw_page(key, 3))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.store
            .get(&s.run.raw_page(key, 0))
            .await
            .unwrap()
            .is_none()
    );
    emulator.reset_traffic();
    let outcome = s.collect(part).await;
    assert_eq!(outcome.status, ItemStatus::Complete, "{outcome:?}");
    assert_eq!((outcome.pages, outcome.completeness.unique), (3, 30));
    // Only the part's two pages not stored are asked for, by item offset.
    let asked: Vec<String> = emulator
        .request_log()
        .into_iter()
        .filter(|(endpoint, _)| *endpoint == Endpoint::Results)
        .map(|(_, target)| target.rsplit('&').next().unwrap().to_string())
        .collect();
    assert_eq!(asked, ["offset=40", "offset=50"]);
}

#[tokio::test]
async fn a_scan_the_plan_cannot_probe_is_collected_whole() {
    let emulator = tenant(OffsetMode::Page).await;
    let (store, dir) = temp_store("split-unprobed");
    let c = split_connection(&emulator, "split-unprobed");
    run(&store, &c, api_key(&emulator)).await.unwrap();
    emulator.set_fault(
        Endpoint::Results,
        FaultSpec {
            forbidden_rate: 1.0,
            only_matching: Some("limit=2&".into()),
            ..FaultSpec::default()
        },
    );
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let probes_refused = emulator.traffic().faults_fired.forbidden;
    assert_eq!(
        probes_refused.get("results"),
        Some(&1),
        "{probes_refused:?}"
    );
    let (work, _) = read_work_list(&store, &run_ref("split-unprobed", &second.run_id))
        .await
        .unwrap();
    assert!(work.iter().all(|i| i.part.is_none()));
    let large = large_item(&manifest(&store, &second.manifest).await, &emulator);
    assert_eq!(large.records_fetched, LARGE);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_last_part_pulls_the_scans_of_the_other_engines() {
    // Project 1's latest scan ran SCA alone: SAST, KICS and containers come from the scan before.
    let emulator = emulator(TenantShape {
        projects: 3,
        project_results: vec![7, LARGE, 12],
        scans_per_project: 2,
        branches_per_project: 1,
        rescan_engine: Some(cxone_emulator::ResultType::Sca),
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("split-engines");
    let mut config = cxone_etm::pipeline::ConnectionConfig {
        item_concurrency: 3,
        engines: Some(cxone_etm::Engine::PROJECT_ENGINES.to_vec()),
        // One page a part: the SCA scan holds only the project's SCA results.
        split_scans_above: u64::from(PAGE),
        ..cxone_etm::pipeline::ConnectionConfig::new(
            "split-engines",
            ConnectorKind::Sast,
            settings(&emulator),
            "env:UNUSED_IN_TESTS",
        )
    };
    config.vendor.results_page_size = PAGE;
    let c = config.validate().unwrap_or_else(|e| panic!("{e:?}"));
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let (work, _) = read_work_list(&store, &run_ref("split-engines", &second.run_id))
        .await
        .unwrap();
    let id = &emulator.expected().projects[1].id;
    let parts: Vec<_> = work
        .iter()
        .filter(|i| i.part.is_some() && &i.vendor_id == id)
        .collect();
    assert!(parts.len() > 1, "the SCA scan is split");
    assert!(!parts[0].other_scans.is_empty(), "with other scans");
    let item = |m: &Manifest| m.items.iter().find(|i| &i.vendor_id == id).unwrap().clone();
    let (m1, m2) = (
        manifest(&store, &first.manifest).await,
        manifest(&store, &second.manifest).await,
    );
    let (whole, split) = (item(&m1), item(&m2));
    assert_eq!(split.status, ItemStatus::Complete, "{split:?}");
    assert_eq!(split.records_fetched, whole.records_fetched);
    assert_eq!(split.by_engine.keys().count(), 4, "{:?}", split.by_engine);
    for (engine, figures) in &whole.by_engine {
        assert_eq!(
            split.by_engine[engine].findings_out, figures.findings_out,
            "{engine:?}"
        );
    }
    assert_eq!(
        committed_findings(&store, &m1).await,
        committed_findings(&store, &m2).await
    );
    // The join lists every page's checksum in page order: each part's main pages, then the last
    // part's other pulls'; the whole pull's are the same pages.
    let outcome = |run_id: &str| {
        let key = run_ref("split-engines", run_id).collect_outcome(&parts[0].item);
        let store = store.clone();
        async move {
            let body = store.get(&key).await.unwrap().unwrap();
            serde_json::from_slice::<cxone_etm::pipeline::CollectOutcome>(&body).unwrap()
        }
    };
    let (whole, joined) = (outcome(&first.run_id).await, outcome(&second.run_id).await);
    let others: u32 = joined.other_pulls.iter().map(|o| o.pages).sum();
    assert!(others > 0);
    assert_eq!(
        joined.page_checksums.len() as u32,
        joined.pages + others,
        "{joined:?}"
    );
    assert_eq!(joined.page_checksums, whole.page_checksums);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_group_retried_after_its_part_was_collected_asks_the_vendor_nothing() {
    let emulator = tenant(OffsetMode::Page).await;
    let s = split_run(&emulator, "split-group").await;
    let part = s.parts()[2].clone();
    let budget = cxone_etm::pipeline::TimeBudget::until(None);
    let collect_once = || {
        cxone_etm::pipeline::collect_group(
            &s.store,
            &s.vendor,
            &s.connection,
            std::slice::from_ref(&part),
            budget,
        )
    };
    let (done, error) = collect_once().await;
    assert!(error.is_none() && done[0].status == ItemStatus::Complete);
    emulator.reset_traffic();
    let (again, error) = collect_once().await;
    assert!(error.is_none());
    assert_eq!(again, done, "the part's own outcome is taken");
    assert_eq!(emulator.traffic().requests_to(Endpoint::Results), 0);
}

fn capped_at_seven() -> FaultSpec {
    FaultSpec {
        page_cap: Some(7),
        ..FaultSpec::default()
    }
}

#[tokio::test]
async fn a_server_that_caps_the_page_size_fails_a_split_once_and_the_next_run_pulls_whole() {
    let emulator = emulator_with(EmulatorConfig {
        shape: TenantShape {
            projects: 3,
            project_results: vec![LARGE, 7, 12],
            scans_per_project: 1,
            ..TenantShape::default()
        },
        // Both lists of results send at most 7 a page, whatever `limit` asks.
        faults: vec![
            (Endpoint::Results, capped_at_seven()),
            (Endpoint::SastResults, capped_at_seven()),
        ],
        ..EmulatorConfig::default()
    })
    .await;
    let (store, dir) = temp_store("split-capped");
    let c = split_connection(&emulator, "split-capped");
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(
        first.complete,
        "a whole pull pages by what the server sends"
    );
    let open_before = large_item(&manifest(&store, &first.manifest).await, &emulator)
        .figures
        .findings_out;
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    let large = large_item(&manifest(&store, &second.manifest).await, &emulator);
    assert_eq!(large.status, ItemStatus::Incomplete, "{large:?}");
    let reason = large.reason.clone().unwrap();
    assert!(
        reason.starts_with("part 1 of 4: the server sent 7 results a page where `limit` asked 10"),
        "{reason}"
    );
    assert!(
        reason.contains("set `vendor.results_page_size` to 7 or less"),
        "{reason}"
    );
    assert_eq!(large.carried_forward, open_before);
    assert!(
        large.records_expected == LARGE && large.records_fetched > 0,
        "{large:?}"
    );
    // The item's last pull was not complete: the next run pulls it whole, and it is complete.
    let third = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(third.complete, "{:?}", third.problems);
    let (work, _) = read_work_list(&store, &run_ref("split-capped", &third.run_id))
        .await
        .unwrap();
    assert!(work.iter().all(|i| i.part.is_none()));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn ids_two_parts_share_are_named_by_the_join() {
    // Every SAST id shared by two findings, and parts of one page: many pairs straddle two parts.
    let emulator = emulator(TenantShape {
        projects: 1,
        project_results: vec![LARGE],
        scans_per_project: 1,
        repeated_result_ids_percent: 100,
        ..TenantShape::default()
    })
    .await;
    let (store, dir) = temp_store("split-shared-ids");
    // Parts of one page of 7: the emulator places a pair's two findings side by side, and pages
    // of 10 never part them.
    let mut c = split_connection(&emulator, "split-shared-ids");
    c.vendor.results_page_size = 7;
    c.config.split_scans_above = 7;
    let first = run(&store, &c, api_key(&emulator)).await.unwrap();
    let second = run(&store, &c, api_key(&emulator)).await.unwrap();
    assert!(second.complete, "{:?}", second.problems);
    let (first_run, second_run) = (
        run_ref("split-shared-ids", &first.run_id),
        run_ref("split-shared-ids", &second.run_id),
    );
    let item = emulator.expected().projects[0].id.clone();
    let whole = outcome(&store, &first_run.collect_outcome(&item))
        .await
        .unwrap();
    let joined = outcome(&store, &second_run.collect_outcome(&item))
        .await
        .unwrap();
    let mut within_parts = std::collections::BTreeSet::new();
    for index in 0..14 {
        let part = outcome(&store, &second_run.part_outcome(&item, index))
            .await
            .unwrap();
        within_parts.extend(part.repeated_ids);
    }
    assert!(
        within_parts.len() < joined.repeated_ids.len(),
        "some ids repeat only across parts: {within_parts:?}"
    );
    assert_eq!(joined.repeated_ids, whole.repeated_ids);
    let (m1, m2) = (
        manifest(&store, &first.manifest).await,
        manifest(&store, &second.manifest).await,
    );
    assert_eq!(
        committed_findings(&store, &m1).await,
        committed_findings(&store, &m2).await
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn two_parts_that_join_at_once_write_the_same_outcome_and_batches() {
    let emulator = tenant(OffsetMode::Page).await;
    let s = split_run(&emulator, "split-race").await;
    s.the_others().await;
    for part in s.parts() {
        s.collect(part).await;
    }
    // Two parts' transforms find every part collected at the same time: both join and transform.
    let (a, b) = tokio::join!(
        transform(&s.store, &s.connection, s.parts()[0]),
        transform(&s.store, &s.connection, s.parts()[3]),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "the same record, whichever wrote last");
    assert!(a.failed.is_none() && a.figures.records_in == LARGE);
    let m = finalize(&s.store, &s.connection, &s.run).await.unwrap();
    assert!(m.complete, "{:?}", m.problems);
    let large = large_item(&m, &emulator);
    assert_eq!(
        large.objects, a.objects,
        "the batches are the ones both wrote"
    );
    // `committed_findings` checks every object's bytes against the manifest's hash.
    assert_eq!(
        committed_findings(&s.store, &m).await.len() as u64,
        m.totals.findings_out
    );
}
