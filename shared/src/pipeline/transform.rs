//! Transform: one collected item's raw pages, in order, through the connection's maps (one per
//! engine) and scoring into ETM batch files, reconciled against the asset's ledger of the last
//! committed run.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::config::Connection;
use super::documents::{
    CollectOutcome, ItemStatus, LISTED_PER_ITEM, ObjectEntry, TransformRecord, WorkItem,
};
use super::error::{StepError, unless_it_panics};
use super::objects::{
    LinePacker, Once, PackedPage, get_gzip_json, get_json, get_packed_page, pack_lines,
    put_gzip_json, put_gzip_json_if_absent, put_json_once, put_lines_written,
};
use super::run::{ensure_holds_lock, read_run, run_allows_start};
use super::split::join_parts;
use crate::Engine;
use crate::cxone::links::ScanLinks;
use crate::fingerprint::TextSet;
use crate::layout::RunRef;
use crate::mapping::{
    Closed, ItemTransformer, Ledger, LedgerByEngine, LedgerParts, LineSink, PageReader, ReadPage,
    Rejected, RepeatedIds, Repeats, TransformContext, TransformError, Unseen, close_all,
    external_asset_id,
};
use crate::store::ObjectStore;

/// How many pages a transform reads between giving freed memory back: after every page it cost
/// a quarter more CPU on a 5,000,000-result project.
const RELEASE_EVERY_PAGES: u32 = 16;

/// Items of fewer records than this, in this run's scans and in the previous ledger (one
/// results page at the default page size), give no freed memory back around their transform.
/// Given back at each item's start and after its severities, it was faulted in again by the
/// next item: for a tenant of 1,000 small projects, 2,000 trims of every arena a run
/// (docs/performance.md). A large item gives it back at its end instead, so the item after it
/// starts clean.
const RELEASE_FROM_RECORDS: u64 = 10_000;

/// The pages of one scan of the item and the transformers of the engines it delivers.
struct Pull<'p> {
    scan_id: String,
    /// The scan's branch, which its transformers reconcile with.
    branch: Option<String>,
    pages: std::ops::Range<u32>,
    transformers: Vec<ItemTransformer<'p>>,
}

/// A raw page as the transform maps it: as stored, or already read on the second core.
enum Page {
    Raw(Vec<u8>),
    Read(Vec<ReadPage>),
}

/// Maps page `number` through each engine's transformer; its lines and the findings they hold.
fn map_page(
    transformers: &mut [ItemTransformer],
    page: &Page,
    number: u32,
) -> Result<(Vec<Vec<u8>>, u64), TransformError> {
    let findings = |transformers: &[ItemTransformer]| -> u64 {
        transformers.iter().map(|t| t.figures().findings_out).sum()
    };
    let before = findings(transformers);
    let mut lines = Vec::new();
    match page {
        Page::Raw(page) => {
            for transformer in transformers.iter_mut() {
                lines.extend(transformer.push_page(page, number)?);
            }
        }
        Page::Read(read) => {
            for (transformer, read) in transformers.iter_mut().zip(read) {
                lines.extend(transformer.push_read(read));
            }
        }
    }
    Ok((lines, findings(transformers) - before))
}

/// Transforms one collected item: its raw pages, in order, into `etm/<item>/<page>.ndjson.gz`
/// (one object per raw page, holding the lines of every engine whose records it carries).
/// Items whose collection is not complete are not transformed (nothing of them is committed).
///
/// A failure no new attempt would mend is recorded, not returned: the record names it (for the
/// manifest to give as the item's reason), commits nothing of the item and is final. A failure
/// that may pass (the store, a step not yet written) is returned for the caller to retry.
pub async fn transform(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
) -> Result<TransformRecord, StepError> {
    transform_until(store, connection, item, None).await
}

/// [`transform`], but an item that needs transforming (a complete pull, a split scan's parts
/// joined) from `start_before` on (the run's deadline for transforms) is recorded failed
/// (`not started: the run's items start only until …`), its findings carried: the run's time is
/// left to finalize. An item with nothing to transform is recorded as before.
pub async fn transform_until(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
    start_before: Option<jiff::Timestamp>,
) -> Result<TransformRecord, StepError> {
    match get_json(store, &item.run.transform_record(&item.item)).await? {
        // The parts of a split scan share the item's transform: another part's did it, unless
        // finalize gave up waiting for it.
        Some(done) if item.part.is_some() => {
            return match done {
                TransformRecord { given_up: true, .. } => Err(given_up(item)),
                done => Ok(done),
            };
        }
        // Another attempt transformed the item (its record is its last write): an attempt that
        // comes after, Step Functions' retry of one whose answer was lost, or one that outlived
        // its run, writes nothing again over what the run may have committed.
        Some(
            done @ TransformRecord {
                given_up: false,
                failed: None,
                ..
            },
        ) => return Ok(done),
        _ => {}
    }
    match unless_it_panics(transform_collected(store, connection, item, start_before)).await {
        // A run that ended, or a finalize that gave up on this item, without this attempt keeps
        // what it committed: nothing is recorded, and where finalize gave up on the item, what
        // this attempt wrote before it was refused goes (otherwise the item's objects may be
        // what the run committed).
        Err(error @ (StepError::LostLock { .. } | StepError::GivenUp { .. })) => {
            let given_up = matches!(error, StepError::GivenUp { .. })
                || get_json::<TransformRecord>(store, &item.run.transform_record(&item.item))
                    .await?
                    .is_some_and(|record| record.given_up);
            if given_up {
                take_back(store, item).await?;
            }
            Err(error)
        }
        Err(error) if !error.is_retryable() => {
            tracing::warn!(item = %item.item, error = %error, "item could not be transformed");
            let record = TransformRecord {
                item: item.item.clone(),
                failed: Some(error.to_string()),
                ..TransformRecord::default()
            };
            match record_transform(store, item, record).await {
                // Finalize gave up on the item meanwhile: what this attempt wrote goes.
                Err(given_up @ StepError::GivenUp { .. }) => {
                    take_back(store, item).await?;
                    Err(given_up)
                }
                answered => answered,
            }
        }
        transformed => transformed,
    }
}

/// Writes the item's transform record, the last of its writes. A record already there is the
/// item's: another attempt's that succeeded; another's that failed, after which what this attempt
/// wrote is taken back; or finalize's that it gave up waiting, answered `GivenUp` (the caller
/// takes back).
pub(super) async fn record_transform(
    store: &impl ObjectStore,
    item: &WorkItem,
    record: TransformRecord,
) -> Result<TransformRecord, StepError> {
    let key = item.run.transform_record(&item.item);
    match put_json_once(store, &key, &record).await? {
        Once::Written => Ok(record),
        Once::Standing(earlier) if earlier.given_up => Err(given_up(item)),
        Once::Standing(earlier) if earlier.failed.is_some() => {
            take_back(store, item).await?;
            Ok(earlier)
        }
        Once::Standing(earlier) => Ok(earlier),
    }
}

/// The item's results page `number`, refused unless it is the page its collect counted.
async fn counted_page(
    store: &impl ObjectStore,
    outcome: &CollectOutcome,
    item: &WorkItem,
    number: u32,
) -> Result<PackedPage, StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    let packed = get_packed_page(store, &run.raw_page(key, number)).await?;
    packed.ensure_counted(outcome.page_checksum(number), &run.collect_outcome(key))?;
    Ok(packed)
}

/// Refuses to write an item's next ledger once its record says the item commits nothing: finalize
/// gave up waiting for its transform, or another attempt recorded it failed (finalize carries the
/// previous ledger for it then, and writes no record of its own). Refused so, the attempt records
/// the failure it found, takes back what it wrote and answers it.
async fn ensure_commits(store: &impl ObjectStore, item: &WorkItem) -> Result<(), StepError> {
    let key = item.run.transform_record(&item.item);
    match get_json::<TransformRecord>(store, &key).await? {
        Some(earlier) if earlier.given_up => Err(given_up(item)),
        Some(TransformRecord {
            failed: Some(why), ..
        }) => Err(StepError::bad_object(
            &key,
            format!("another attempt recorded the item failed ({why}): this one commits nothing"),
        )),
        _ => Ok(()),
    }
}

fn given_up(item: &WorkItem) -> StepError {
    StepError::GivenUp {
        run_id: item.run.run_id.clone(),
        item: item.item.clone(),
    }
}

/// An engine's part of the last committed ledger, on the asset ETM holds its findings on (`was`),
/// where the map now names another (`now`); emptied once closed.
struct Move {
    was: String,
    now: String,
    part: Ledger,
}

/// Closes the open findings of each moving engine's part on its old asset, handing the lines to
/// `out` (each engine's numbered from 0); answers what closed, per engine.
fn close_moving(
    moving: &mut BTreeMap<Engine, Move>,
    context: &TransformContext,
    legacy: Engine,
    max: usize,
    out: &mut LineSink,
) -> std::io::Result<BTreeMap<Engine, Closed>> {
    let mut closed: BTreeMap<Engine, Closed> = BTreeMap::new();
    for Move { now, part, .. } in moving.values_mut() {
        let reason = format!(
            "the transform map gives the asset another externalAssetId ({now}) from run {}: its findings are sent there",
            context.run_id
        );
        Closed::add_by_engine(
            &mut closed,
            close_all(part, context, legacy, None, &reason, max, out)?,
        );
    }
    Ok(closed)
}

/// Writes the item's `moved-closures` object once, after the pull has shown which engines stay:
/// a version holding the closures of an engine that then stays would close findings held open,
/// were a run to commit it (an attempt cut off before a rewrite, or two attempts interleaving).
/// Its lines were counted before the pull (`counted`), which numbered the moved engines' own
/// lines after them; the parts, let go meanwhile, are read again from the committed ledger,
/// which does not change, and must close the same.
async fn write_moved_closures(
    store: &impl ObjectStore,
    item: &WorkItem,
    context: &TransformContext,
    legacy: Engine,
    max: usize,
    moving: &mut BTreeMap<Engine, Move>,
    counted: &BTreeMap<Engine, Closed>,
) -> Result<ObjectEntry, StepError> {
    refuse_once_recorded(store, item).await?;
    let key = &item.item;
    let mut closed = BTreeMap::new();
    let entry = put_lines_written(store, &item.run.moved_closures(key), |out| {
        closed = close_moving(moving, context, legacy, max, out)?;
        Ok(closed.values().map(|c| c.findings).sum())
    })
    .await?;
    if &closed != counted {
        return Err(StepError::bad_object(
            &previous_ledger_key(item).unwrap_or_default(),
            format!(
                "the committed ledger read again closes other findings on the old asset ({closed:?}) than read before the pull ({counted:?}): it changed while the transform ran; retry the run"
            ),
        ));
    }
    Ok(entry)
}

/// The item's part of each engine of its last committed run's ledger (none on a first run).
async fn previous_ledger(
    store: &impl ObjectStore,
    item: &WorkItem,
    legacy: Engine,
) -> Result<BTreeMap<Engine, Ledger>, StepError> {
    let Some(key) = previous_ledger_key(item) else {
        return Ok(BTreeMap::new());
    };
    match get_gzip_json::<LedgerByEngine>(store, &key).await? {
        Some(stored) => stored
            .into_parts(legacy)
            .map_err(|full| StepError::bad_object(&key, full)),
        None => Ok(BTreeMap::new()),
    }
}

/// Where the item's part of its last committed run's ledger is (none on a first run).
fn previous_ledger_key(item: &WorkItem) -> Option<String> {
    let previous_run = item.previous_run.as_ref()?;
    Some(item.run.sibling(previous_run).ledger(&item.item))
}

/// Why a moved engine waits, where a record of its pull was rejected: how many, and the item's
/// first reason.
fn rejected_in(pull: &Pull, rejected: &FirstListed<Rejected>) -> String {
    let count: u64 = pull.transformers.iter().map(|t| t.figures().rejected).sum();
    let first = rejected
        .listed
        .first()
        .map(|r| format!(" (the item's first: {})", r.reason))
        .unwrap_or_default();
    format!("{count} record(s) of its pull were rejected{first}")
}

/// Refuses, before an attempt writes the item's moved closures, once another attempt recorded
/// the item (Step Functions retried one that still ran, and it recorded meanwhile) or finalize
/// gave up on it: the run may have committed without them. Refused so, the attempt answers the
/// record that stands ([`record_transform`]), or, given up, takes back what it wrote.
async fn refuse_once_recorded(store: &impl ObjectStore, item: &WorkItem) -> Result<(), StepError> {
    let key = item.run.transform_record(&item.item);
    match get_json::<TransformRecord>(store, &key).await? {
        None => Ok(()),
        // Finalize gave up on the item (and carried its previous ledger, which this attempt may
        // have written over since): refused as given up, so that what it wrote is taken back.
        Some(record) if record.given_up => Err(given_up(item)),
        Some(_) => Err(StepError::bad_object(
            &key,
            "another attempt recorded the item while this one ran: this one writes nothing",
        )),
    }
}

/// Whether a DAST environment's record says its last login failed: it has a login (`hasAuth`)
/// and its last scan's did not succeed (`lastAuthSuccess` false). The scan pulled, that one or
/// an earlier completed one (the last may have failed, or still run), may then have seen only
/// what a visitor without the login sees: the record says nothing of an earlier scan's login,
/// and what cannot be known to have been seen is not closed.
fn login_failed(environment: &Value) -> bool {
    environment["hasAuth"] == Value::Bool(true)
        && environment["lastAuthSuccess"] == Value::Bool(false)
}

/// The item's vendor record: carried in the work item, or read where the plan stored one too
/// large to carry.
async fn item_record<'a>(
    store: &impl ObjectStore,
    item: &'a WorkItem,
) -> Result<Cow<'a, Value>, StepError> {
    if !item.record_stored {
        return Ok(Cow::Borrowed(&item.record));
    }
    let key = item.run.item_record(&item.item);
    let record: Option<Value> = get_json(store, &key).await?;
    record.map(Cow::Owned).ok_or_else(|| {
        StepError::bad_object(
            &key,
            "the item's record is missing: the plan stored it there, too large for the work list; the next run plans the item again",
        )
    })
}

/// Deletes the batch objects a transform of `item` wrote in `run`, not its record.
pub(super) async fn discard_batches(
    store: &impl ObjectStore,
    run: &RunRef,
    item: &str,
) -> Result<(), StepError> {
    let record_key = run.transform_record(item);
    for object in store.list(&run.etm_prefix(item)).await? {
        if object != record_key {
            store.delete(&object).await?;
        }
    }
    Ok(())
}

/// Puts back what finalize left for an item that commits nothing, where this attempt wrote over
/// it: no batch object beside the record, and the previous run's ledger (or none). Safe to
/// repeat. The previous ledger is put over the item's, never after a delete: once the run is
/// committed that key is the committed run's ledger, and an attempt cut off between a delete and
/// a put would leave the run without it (the next run would send every open finding NEW).
pub(super) async fn take_back(store: &impl ObjectStore, item: &WorkItem) -> Result<(), StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    discard_batches(store, run, key).await?;
    let previous = match &item.previous_run {
        Some(previous_run) => store.get(&run.sibling(previous_run).ledger(key)).await?,
        None => None,
    };
    match previous {
        Some(body) => store.put(&run.ledger(key), body).await?,
        None => store.delete(&run.ledger(key)).await?,
    }
    Ok(())
}

async fn transform_collected(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
    start_before: Option<jiff::Timestamp>,
) -> Result<TransformRecord, StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    if let Some(part) = &item.part {
        join_parts(store, connection, item, part.of).await?;
    }
    let mut outcome: CollectOutcome = get_json(store, &run.collect_outcome(key))
        .await?
        .ok_or_else(|| StepError::NotYetWritten {
            key: run.collect_outcome(key),
            why: "collect has not finished for this item".into(),
        })?;
    let mut record = TransformRecord {
        item: item.item.clone(),
        ..TransformRecord::default()
    };
    // Declared before what the item holds, so it is dropped after all of it.
    let mut release = ReleaseAtEnd {
        large: outcome.records_expected() >= RELEASE_FROM_RECORDS,
    };
    if outcome.status == ItemStatus::Complete {
        run_allows_start(start_before)?;
        let run_record = read_run(store, run).await?;
        // Every line of the run carries the run's start: re-running a step gives the same bytes.
        let context = TransformContext {
            connection_id: item.run.connection_id.clone(),
            run_id: item.run.run_id.clone(),
            connector_kind: connection.config.kind,
            produced_at: run_record.started_at,
        };
        let vendor_record = item_record(store, item).await?;
        let login_failed = !connection.config.kind.on_projects() && login_failed(&vendor_record);
        let item_json = serde_json::to_vec(&*vendor_record).expect("a JSON value serializes");
        let legacy = connection.config.kind.legacy_engine();
        // One set for every engine's transformer; the texts go once it is made, before the
        // previous ledger is read beside them.
        let repeated_ids: Arc<RepeatedIds> = Arc::new(
            Repeats {
                told_apart: std::mem::take(&mut outcome.repeated_ids),
                sent_twice: std::mem::take(&mut outcome.sent_twice_ids),
            }
            .into(),
        );
        // What collect freed, where it ran in this process before (the local runner), goes
        // back to the system before the previous ledger is read: freed blocks malloc keeps are
        // resident, and the ledger's do not always fit where they were. The page buffers kept
        // idle go too: malloc cannot give back what it has lent.
        if release.large {
            crate::packing::free_page_buffers();
            crate::process::release_free_memory();
        }
        let mut previous = previous_ledger(store, item, legacy).await?;
        if !release.large
            && previous
                .values()
                .map(|ledger| ledger.findings.len() as u64)
                .sum::<u64>()
                >= RELEASE_FROM_RECORDS
        {
            // Large for its previous ledger alone (its findings gone absent, say).
            release.large = true;
            crate::packing::free_page_buffers();
        }
        let mut pulls = Vec::new();
        let main_engines = item.main_engines(connection.engines());
        let main = (
            outcome.scan_id.clone(),
            item.scan_branch.clone(),
            0..outcome.pages,
            main_engines.as_slice(),
        );
        // A scan left out of the window is not pulled: its engines' ledger parts go forward.
        let others = outcome
            .other_pulls
            .iter()
            .filter(|p| p.not_taken.is_none())
            .map(|p| {
                (
                    Some(p.scan_id.clone()),
                    p.branch.clone(),
                    p.first_page..p.first_page.saturating_add(p.pages),
                    p.engines.as_slice(),
                )
            });
        let item_engines: Vec<Engine> = main_engines
            .iter()
            .chain(outcome.other_pulls.iter().flat_map(|p| &p.engines))
            .copied()
            .collect();
        if let Some(engine) = item_engines.iter().find(|e| !connection.delivers(**e)) {
            // The connection's engines changed after this run was planned: nothing of the item
            // is transformed (its findings are carried) rather than some records counted nowhere.
            return Err(StepError::bad_object(
                &run.work_list(),
                format!(
                    "item {key} was planned with the {engine} engine, which the connection no longer delivers; the next run takes the new engines"
                ),
            ));
        }
        for (scan_id, branch, pages, engines) in std::iter::once(main).chain(others) {
            let elsewhere: Vec<Engine> = item_engines
                .iter()
                .copied()
                .filter(|e| !engines.contains(e))
                .collect();
            let mut transformers = Vec::new();
            for &engine in engines {
                let plan = connection
                    .plans
                    .iter()
                    .find(|p| p.kind == engine)
                    .expect("every engine of the item is delivered (checked above)");
                let mut transformer = ItemTransformer::new(
                    plan,
                    &connection.scoring,
                    &context,
                    connection.options.clone(),
                    &item_json,
                )
                .map_err(|source| StepError::Transform {
                    at: format!("item {key}"),
                    source,
                })?;
                let same_scan: Vec<Engine> =
                    engines.iter().copied().filter(|e| *e != engine).collect();
                transformer.beside(&same_scan, &elsewhere, transformers.is_empty());
                transformer.expect_repeats(repeated_ids.clone());
                if login_failed {
                    transformer.scan_login_failed();
                }
                if let Some(scan_id) = &scan_id {
                    transformer.link_to(ScanLinks {
                        base: connection.vendor.endpoints.api.clone(),
                        scan_id: scan_id.clone(),
                        // The project's id, not the record's: a branch asset's record carries
                        // its own asset id (`<project>@<branch>`).
                        project_id: connection
                            .config
                            .kind
                            .on_projects()
                            .then(|| item.vendor_id.clone()),
                        branch: branch.clone(),
                    });
                }
                transformers.push(transformer);
            }
            pulls.push(Pull {
                scan_id: scan_id.unwrap_or_default(),
                branch,
                pages,
                transformers,
            });
        }
        // An engine pulled now whose map gives the item another `externalAssetId` than its part
        // of the last committed ledger (a map changed between runs) moves: its open findings close
        // on the asset ETM has them on, before the pull (`moved-closures`; the part is not held
        // beside the new one), and it starts afresh on the new asset. An engine not pulled now
        // keeps its part where it is (the ledger's `engineAssets`) until its scan is pulled.
        // Read before a moved engine's part goes: its findings come again, NEW, under the same ids.
        let pulled = pulls
            .iter()
            .flat_map(|p| &p.transformers)
            .map(|t| t.engine());
        let other_engines_ids = ids_of_other_engines(&previous, pulled.collect());
        let max = connection.options.max_findings_per_line;
        let mut moving: BTreeMap<Engine, Move> = BTreeMap::new();
        for transformer in pulls.iter().flat_map(|p| &p.transformers) {
            let engine = transformer.engine();
            let was = previous
                .get(&engine)
                .and_then(|part| external_asset_id(&part.asset));
            if let (Some(was), Some(now)) = (was, transformer.external_asset_id())
                && was != now
            {
                let part = previous.remove(&engine).expect("read above");
                moving.insert(engine, Move { was, now, part });
            }
        }
        // Counted now, written once the pull has shown which engines stay; the parts go.
        let mut moved = close_moving(&mut moving, &context, legacy, max, &mut |_| Ok(()))
            .map_err(|e| StepError::bad_object(&run.moved_closures(key), e.to_string()))?;
        moved.retain(|_, closed| closed.findings > 0);
        for moving in moving.values_mut() {
            moving.part = Ledger::default();
        }
        for pull in &mut pulls {
            for transformer in &mut pull.transformers {
                if let Some(closed) = moved.get(&transformer.engine()) {
                    transformer.number_lines_after(closed.lines);
                }
                if let Some(ids) = other_engines_ids.get(&transformer.engine()) {
                    transformer.beside_ids_of_other_engines(ids.clone());
                }
                transformer.reconcile(
                    previous.remove(&transformer.engine()).unwrap_or_default(),
                    &item.run.run_id,
                    pull.branch.as_deref(),
                );
            }
        }
        // One buffer for the pages of severities before triage, freed before the results'.
        let mut page = Vec::new();
        for number in 0..outcome.original_pages {
            let page_key = run.original_page(key, number);
            let packed = get_packed_page(store, &page_key).await?;
            packed.ensure_counted(outcome.original_checksum(number), &run.collect_outcome(key))?;
            packed.unpack_into(&mut page)?;
            let sast = pulls
                .iter_mut()
                .flat_map(|p| p.transformers.iter_mut())
                .find(|t| t.engine() == Engine::Sast);
            if let Some(sast) = sast {
                sast.add_original_severities(&page)
                    .map_err(|source| StepError::Transform {
                        at: page_key.clone(),
                        source,
                    })?;
            }
        }
        drop(page);
        // The rows of those pages were read as values, thousands of small blocks now free
        // among the previous ledger's: given back before the result pages are read.
        if release.large {
            crate::process::release_free_memory();
        }
        let (mut rejected, mut collisions) = (FirstListed::default(), FirstListed::default());
        for pull in &mut pulls {
            let readers: Vec<PageReader> = pull.transformers.iter().map(|t| t.reader()).collect();
            let at = format!("item {key} (scan {})", pull.scan_id);
            let failed = |source| StepError::Transform {
                at: at.clone(),
                source,
            };
            // Unpacks and reads a page for every engine of the pull: the part that needs nothing
            // of the item, so with two cores each page after the first is read on the second
            // while the one before is mapped. With one, each page is mapped as it is read.
            let read_ahead = |packed: &PackedPage,
                              number: u32,
                              page: &mut Vec<u8>|
             -> Result<Vec<ReadPage>, StepError> {
                packed.unpack_into(page)?;
                readers
                    .iter()
                    .map(|reader| reader.read(page, number))
                    .collect::<Result<_, _>>()
                    .map_err(failed)
            };
            // Asked only of a pull with a page to read ahead: most items have one page, and the
            // count reads the cgroup's files.
            let two_cores = pull.pages.len() > 1 && crate::process::cores() >= 2;
            let mut numbers = pull.pages.clone().peekable();
            let mut ahead = None;
            // On two cores, the page mapped last, freed by the next reading thread rather than
            // by the mapping thread: its fields were allocated by a reading thread, and the
            // mapping thread freeing them contended for the lock of the reader's arena
            // (`process::MALLOC_ARENAS`). With no reading thread, its buffer takes the next page.
            let mut spent: Option<Page> = None;
            // The buffers pages are unpacked into, kept from page to page (see
            // `packing::unpack_into`): the mapping thread's, for a page read as it is mapped, and
            // the reading threads'.
            // A pull on one core, or of one page, takes a buffer kept from an item before; a
            // multi-page pull on two cores takes none: its first page's buffer is freed by the
            // reading thread (`spent`).
            let mut unpacked = if two_cores {
                Vec::new()
            } else {
                crate::packing::page_buffer()
            };
            let mut unpacked_ahead = Vec::new();
            while let Some(number) = numbers.next() {
                let this = match ahead.take() {
                    Some(read) => Page::Read(read?),
                    None => {
                        let mut page = std::mem::take(&mut unpacked);
                        counted_page(store, &outcome, item, number)
                            .await?
                            .unpack_into(&mut page)?;
                        Page::Raw(page)
                    }
                };
                let next = match numbers.peek() {
                    Some(&next) if two_cores => {
                        Some((next, counted_page(store, &outcome, item, next).await?))
                    }
                    _ => None,
                };
                let etm_key = run.etm_page(key, number);
                let (packed, read) = std::thread::scope(|scope| {
                    let spent = spent.take();
                    let unpacked_ahead = &mut unpacked_ahead;
                    let reading = match &next {
                        Some((next, packed)) => Some(scope.spawn(move || {
                            drop(spent);
                            read_ahead(packed, *next, unpacked_ahead)
                        })),
                        None => {
                            drop(spent);
                            None
                        }
                    };
                    let packed = map_page(&mut pull.transformers, &this, number)
                        .map_err(failed)
                        .map(|(lines, findings)| {
                            (!lines.is_empty()).then(|| pack_lines(&etm_key, &lines, findings))
                        });
                    let read = reading.map(|reading| {
                        reading
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    });
                    (packed, read)
                });
                ahead = read;
                match this {
                    Page::Raw(page) if !two_cores => unpacked = page,
                    this => spent = two_cores.then_some(this),
                }
                drop(next);
                if let Some((entry, body)) = packed? {
                    store.put(&etm_key, body).await?;
                    record.objects.push(entry);
                }
                for transformer in &mut pull.transformers {
                    rejected.add(transformer.take_rejected());
                    collisions.add(transformer.take_collisions());
                }
                if release.large && number % RELEASE_EVERY_PAGES == RELEASE_EVERY_PAGES - 1 {
                    crate::process::release_free_memory();
                }
            }
            crate::packing::give_back_page_buffer(unpacked);
        }
        // A record no engine can be told for (counted by a pull's first transformer) may be any
        // of its engines' absent findings; a finding sent twice says the pull's list moved, past
        // a record of any engine: none of them closes. Records of a type no engine reads may be
        // an engine's renamed: one with no record of its own closes none.
        for pull in &mut pulls {
            let met = pull
                .transformers
                .iter()
                .filter_map(ItemTransformer::pull_hold);
            if let Some(hold) = met.max() {
                pull.transformers.iter_mut().for_each(|t| t.hold_pull(hold));
            }
            if pull
                .transformers
                .iter()
                .any(|t| !t.unknown_record_types().is_empty())
            {
                pull.transformers
                    .iter_mut()
                    .for_each(ItemTransformer::beside_unknown_record_types);
            }
        }
        // A moved engine's pull that may not have shown every record (`Unseen`) would close on
        // the old asset findings not seen fixed. A record rejected or sent twice: the item waits,
        // its ledger carried, for a pull that shows every record. No record of its own beside
        // records of an unknown type: the engine wrote nothing, so it stays where it is this run,
        // its findings held open there, and the item's other engines go on.
        let mut stayed = BTreeSet::new();
        for pull in &pulls {
            for transformer in &pull.transformers {
                let engine = transformer.engine();
                let Some(moving) = moving.get(&engine).filter(|_| moved.contains_key(&engine))
                else {
                    continue;
                };
                let why = match transformer.unseen() {
                    None => continue,
                    Some(Unseen::UnknownRecordTypes) => {
                        stayed.insert(engine);
                        continue;
                    }
                    Some(Unseen::RejectedRecord) => rejected_in(pull, &rejected),
                    Some(Unseen::RepeatedRecord) => "a finding of its pull came twice with other bytes (the list moved while it was paged, past a record)".into(),
                    Some(Unseen::FailedLogin) => "the environment's last login failed (its `lastAuthSuccess`)".into(),
                };
                return Err(StepError::Transform {
                    at: format!("item {key}"),
                    source: TransformError::MoveWaits {
                        engine,
                        was: moving.was.clone(),
                        now: moving.now.clone(),
                        why,
                    },
                });
            }
        }
        // An engine that stays: its part is read again and goes on as it was, nothing of it
        // closed; what it would have closed on its old asset is not written.
        let mut held_where_they_are = BTreeMap::new();
        if !stayed.is_empty() {
            let mut again = previous_ledger(store, item, legacy).await?;
            for engine in &stayed {
                let stays = again.remove(engine).unwrap_or_default();
                held_where_they_are.insert(*engine, stays.open_findings());
                previous.insert(*engine, stays);
                moving.remove(engine);
                moved.remove(engine);
            }
        }
        for closed in moved.values() {
            record.figures.count_closures(*closed);
        }
        let closing: u64 = pulls
            .iter_mut()
            .flat_map(|p| p.transformers.iter_mut())
            .map(ItemTransformer::settle_absent)
            .sum();
        if closing > 0 {
            // Of engines that did not move: a moved one starts afresh, nothing of it absent (its
            // old asset's closures are the item's `moved-closures`).
            let entry = put_lines_written(store, &run.closures(key), |out| {
                pulls
                    .iter_mut()
                    .flat_map(|p| p.transformers.iter_mut())
                    .try_fold(0, |closed, t| Ok(closed + t.close_absent(out)?))
            })
            .await?;
            record.objects.push(entry);
        }
        // An asset this run sends no line of (a clean scan: no finding, none closed) is sent
        // alone, its findings empty: the connector syncs assets, and findings ride with them.
        // Each asset the item's engines report on (a map may move one engine alone; an engine
        // that stayed reports on its old asset, which ETM has).
        let mut synced = BTreeSet::new();
        for transformer in pulls.iter().flat_map(|p| &p.transformers) {
            if transformer.figures().lines > 0 {
                synced.insert(transformer.external_asset_id());
            }
        }
        let mut alone = Vec::new();
        for transformer in pulls.iter_mut().flat_map(|p| p.transformers.iter_mut()) {
            if !stayed.contains(&transformer.engine())
                && synced.insert(transformer.external_asset_id())
                && let Some(line) = transformer.asset_line()
            {
                alone.push(line);
            }
        }
        if !alone.is_empty() {
            // Page 0 where the pull wrote none; else one past the pull's pages.
            let number = if record.objects.is_empty() && moved.is_empty() {
                0
            } else {
                pulls.iter().map(|p| p.pages.end).max().unwrap_or_default()
            };
            let etm_key = run.etm_page(key, number);
            let (entry, body) = pack_lines(&etm_key, &alone, 0);
            store.put(&etm_key, body).await?;
            record.objects.push(entry);
        }
        // The next ledger: each engine's, and as they were the parts of engines with no scan
        // this run, or that stayed where they are (nothing of theirs is closed).
        let mut next = LedgerParts::default();
        let mut by_engine = BTreeMap::new();
        for transformer in pulls.into_iter().flat_map(|p| p.transformers) {
            let engine = transformer.engine();
            let mut done = transformer
                .finish()
                .map_err(|source| StepError::Transform {
                    at: format!("item {key}"),
                    source,
                })?;
            if let Some(held) = held_where_they_are.get(&engine) {
                // Its ledger is of the new asset, empty: its part goes on as it was.
                done.figures.held_for_unknown_record_types += held;
                done.ledger = None;
            }
            record.figures.add(&done.figures);
            rejected.add(std::mem::take(&mut done.rejected));
            collisions.add(std::mem::take(&mut done.collisions));
            by_engine.insert(engine, done.figures);
            if let Some(ledger) = done.ledger.take() {
                next.absorb(engine, ledger);
            }
        }
        if !next.is_empty() || !stayed.is_empty() {
            for (engine, untouched) in previous {
                // An engine that stayed was pulled: its findings are counted held, not carried.
                if !stayed.contains(&engine) {
                    record.carried += untouched.open_findings();
                }
                next.absorb(engine, untouched);
            }
            // An attempt that outlived its run or finalize's wait for it (Step Functions retried
            // it while it still ran) must not replace the ledger finalize carried: the next run
            // would take its closures as sent. Finalize carries a ledger only after a record that
            // commits nothing (its `givenUp`, or another attempt's failure), so the ledger is
            // written only where none is; one there is an earlier attempt's, replaced, unless
            // such a record was written meanwhile. (One written just
            // before finalize carries its own over it is taken back when it records:
            // `record_transform`; one cut off before it records leaves the carried ledger.)
            ensure_holds_lock(store, run).await?;
            ensure_commits(store, item).await?;
            let ledger = run.ledger(key);
            if !put_gzip_json_if_absent(store, &ledger, &next).await? {
                ensure_commits(store, item).await?;
                put_gzip_json(store, &ledger, &next).await?;
            }
        }
        drop(next);
        // The moved engines' closures on their old assets, written once the pull has shown which
        // engines stay, and once the next ledger is written and gone: their parts are read again,
        // and two ledgers of a large asset are not held at once.
        if !moved.is_empty() {
            let mut again = previous_ledger(store, item, legacy).await?;
            for (engine, moving) in &mut moving {
                moving.part = again.remove(engine).unwrap_or_default();
            }
            drop(again);
            let entry =
                write_moved_closures(store, item, &context, legacy, max, &mut moving, &moved)
                    .await?;
            record.objects.insert(0, entry);
        }
        drop(moving);
        (record.rejected, record.rejected_object) =
            rejected.store(store, &run.rejected(key)).await?;
        (record.collisions, record.collisions_object) =
            collisions.store(store, &run.collisions(key)).await?;
        // What closed on a moved engine's old asset counts with its engine.
        for (engine, closed_on_the_old_asset) in moved {
            by_engine
                .entry(engine)
                .or_default()
                .count_closures(closed_on_the_old_asset);
        }
        if connection.plans.len() > 1 {
            record.by_engine = by_engine;
        }
        record.figures.failed_logins = u64::from(login_failed);
    }
    record_transform(store, item, record).await
}

/// An item's rejected records (or collisions) as they come: the first [`LISTED_PER_ITEM`] kept
/// for the manifest, and once there are more, every one packed into the item's object of them,
/// so a map that fits no record holds a few bytes packed per record, not the records.
struct FirstListed<T> {
    listed: Vec<T>,
    all: Option<LinePacker>,
}

impl<T> Default for FirstListed<T> {
    fn default() -> Self {
        Self {
            listed: Vec::new(),
            all: None,
        }
    }
}

impl<T: serde::Serialize> FirstListed<T> {
    fn add(&mut self, more: Vec<T>) {
        for one in more {
            if self.all.is_none() && self.listed.len() < LISTED_PER_ITEM {
                self.listed.push(one);
                continue;
            }
            let listed = &self.listed;
            let all = self.all.get_or_insert_with(|| {
                let mut all = LinePacker::new();
                for earlier in listed {
                    all.push(&serde_json::to_vec(earlier).expect("serializes"));
                }
                all
            });
            all.push(&serde_json::to_vec(&one).expect("serializes"));
        }
    }

    /// Stores the object of them all where there is one; answers the listed ones and its entry.
    async fn store(
        self,
        store: &impl ObjectStore,
        key: &str,
    ) -> Result<(Vec<T>, Option<ObjectEntry>), StepError> {
        let Some(all) = self.all else {
            return Ok((self.listed, None));
        };
        let (entry, body) = all.finish(key);
        store.put(key, body).await?;
        Ok((self.listed, Some(entry)))
    }
}

/// Gives freed memory back when dropped, if the item is large: at the item's end, whether it was
/// transformed or failed, so the item after it (the next of a Lambda's group) starts clean.
struct ReleaseAtEnd {
    large: bool,
}

impl Drop for ReleaseAtEnd {
    fn drop(&mut self) {
        if self.large {
            crate::process::release_free_memory();
        }
    }
}

/// For each engine pulled (`pulled`) whose findings keep the vendor's id (SAST, KICS), the ids
/// the previous ledger holds for the item's other such engines, whether the connection still
/// delivers them or not, and on whichever asset (see
/// [`ItemTransformer::beside_ids_of_other_engines`]): the ledger keeps one entry per id, whatever
/// its engine's asset.
fn ids_of_other_engines(
    previous: &BTreeMap<Engine, Ledger>,
    pulled: BTreeSet<Engine>,
) -> BTreeMap<Engine, Arc<TextSet>> {
    let as_given: Vec<(Engine, &Ledger)> = previous
        .iter()
        .filter(|(engine, _)| !engine.ids_always_suffixed())
        .map(|(engine, part)| (*engine, part))
        .collect();
    pulled
        .into_iter()
        .filter(|engine| !engine.ids_always_suffixed())
        .filter_map(|engine| {
            let ids: TextSet = as_given
                .iter()
                .filter(|(other, _)| *other != engine)
                .flat_map(|(_, part)| part.findings.iter().map(|(id, _)| id))
                .collect();
            (!ids.is_empty()).then(|| (engine, Arc::new(ids)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Rejected;
    use crate::store::MemoryStore;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_login_failed_only_where_the_environment_says_its_last_did() {
        let environment = |has_auth: Value, succeeded: Value| serde_json::json!({"hasAuth": has_auth, "lastAuthSuccess": succeeded});
        let (yes, no) = (Value::Bool(true), Value::Bool(false));
        assert!(login_failed(&environment(yes.clone(), no.clone())));
        assert!(!login_failed(&environment(yes.clone(), yes.clone())));
        assert!(!login_failed(&environment(yes.clone(), Value::Null)));
        assert!(!login_failed(&environment(yes, "false".into())));
        assert!(!login_failed(&environment(no.clone(), no)));
        assert!(!login_failed(&serde_json::json!({})));
    }

    fn rejections(pages: std::ops::Range<u32>) -> Vec<Rejected> {
        pages
            .map(|page| Rejected {
                vendor_id: Some(format!("r{page}")),
                page,
                index: 0,
                reason: "required value is missing".into(),
                location: None,
                link: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn rejected_records_past_the_listed_go_to_the_object_all_of_them_in_order() {
        let store = MemoryStore::default();
        let mut few = FirstListed::default();
        few.add(rejections(0..60));
        few.add(rejections(60..LISTED_PER_ITEM as u32));
        let (listed, object) = few.store(&store, "few").await.unwrap();
        assert_eq!(
            (listed, object),
            (rejections(0..LISTED_PER_ITEM as u32), None)
        );
        assert_eq!(store.get("few").await.unwrap(), None);

        let mut many = FirstListed::default();
        many.add(rejections(0..60));
        many.add(rejections(60..230));
        many.add(Vec::new());
        let (listed, object) = many.store(&store, "many").await.unwrap();
        assert_eq!(listed, rejections(0..LISTED_PER_ITEM as u32));
        let object = object.expect("an object");
        let body = store.get("many").await.unwrap().unwrap();
        assert_eq!((object.lines, object.bytes), (230, body.len() as u64));
        assert_eq!(object.sha256, hex::encode(Sha256::digest(&body)));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .unwrap();
        let all: Vec<Rejected> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(all, rejections(0..230));
    }
}
