//! Finalize: the manifest (every object with its counts and hash, every item's outcome), then the
//! commit claim on the run it reconciled against (the commit: one run's, once) and the commit
//! marker (last), then the run and the connection are Processed and the lock is released. Assets
//! not pulled completely, filtered out or no longer listed carry their ledgers forward, unless
//! the policy closes a deleted one.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::commits::{self, Claimed};
use super::config::{BranchPolicy, Connection, DeletionLimit};
use super::documents::{
    CollectOutcome, DeletedItem, FilteredItem, ItemStatus, Manifest, ManifestItem, TransformRecord,
    WorkItem,
};
use super::error::StepError;
use super::now_rfc3339;
use super::objects::{
    Once, get_gzip_json, get_json, put_gzip_json, put_json_once, put_lines_written, read_gzip_json,
    sha256_hex,
};
use super::plan::{Planned, closed_as_deleted, project_of_branch_asset, read_plan};
use super::run::{
    RunRecord, VendorScope, ensure_holds_lock, fail_run, finish_committed, mark_committed,
    read_run, record_plan, restore_committed_manifest,
};
use super::split::unjoined;
use super::transform::discard_batches;
use crate::cxone::links::ScanLinks;
use crate::layout::RunRef;
use crate::mapping::{Closed, Figures, Ledger, OpenFindings, TransformContext, close_all};
use crate::store::ObjectStore;
use crate::{ConnectorKind, Engine};

/// How many items' outcomes finalize reads at once.
const FINALIZE_READS_AT_ONCE: usize = 16;

/// One item's line in the manifest, from what its collect and transform wrote. Only a complete
/// pull writes the asset's next ledger; for any other item (incomplete, failed, no scan, a step
/// that never finished) the previous one goes forward unchanged, so nothing of it is closed and
/// the next run still knows what is open.
async fn manifest_item(
    store: &impl ObjectStore,
    run: &RunRef,
    record: &RunRecord,
    item: &WorkItem,
    ledgers_written: &std::collections::HashSet<String>,
    ast_base: &url::Url,
) -> Result<(ManifestItem, Option<String>), StepError> {
    let mut collected: Option<CollectOutcome> =
        get_json(store, &run.collect_outcome(&item.item)).await?;
    // A record finalize wrote when it gave up on the transform (an earlier attempt of this
    // finalize) stands for none.
    let transformed = get_json::<TransformRecord>(store, &run.transform_record(&item.item))
        .await?
        .filter(|t| !t.given_up);
    // A split scan whose parts were not joined: what they got, and why.
    let mut unjoined_reason = None;
    if let (None, Some(part)) = (&collected, &item.part) {
        let (why, parts) = unjoined(store, item, part.of).await?;
        unjoined_reason = Some(why);
        collected = Some(parts);
    }
    let unjoined = unjoined_reason.is_some();
    let (status, mut reason) = match (&collected, &transformed) {
        (
            Some(c),
            Some(TransformRecord {
                failed: Some(why), ..
            }),
        ) if unjoined_reason.is_some() || c.status == ItemStatus::Complete => {
            (ItemStatus::Failed, Some(format!("transform failed: {why}")))
        }
        _ if unjoined_reason.is_some() => (ItemStatus::Failed, unjoined_reason),
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
    // A ledger under this run is the transform's only for an item it transformed; for any other
    // item it is one an earlier attempt of this finalize carried forward, and is counted again.
    let transform_began = collected
        .as_ref()
        .is_some_and(|c| c.status == ItemStatus::Complete);
    let reconciled = transform_began && transformed.as_ref().is_some_and(|t| t.failed.is_none());
    let no_record = transformed.is_none();
    let transformed = transformed.unwrap_or_default();
    let mut unreadable = None;
    // A transform's record may have landed after finalize listed the ledgers: its ledger is
    // looked for alone then.
    let ledger_written = reconciled
        && (ledgers_written.contains(&item.item)
            || !store.list(&run.ledger(&item.item)).await?.is_empty());
    let carried_forward = if ledger_written {
        transformed.carried
    } else {
        // A transform that may still run (of a complete pull, or of a split scan whose parts
        // were not joined: the join may be under way; or of a collect not recorded yet: one Step
        // Functions retried on a lost answer may still record it) must commit nothing after this.
        let may_still_run = transform_began || unjoined || collected.is_none();
        if may_still_run && no_record && !give_up(store, run, &item.item).await? {
            // Its transform's record landed since it was read: the item is read again.
            return Box::pin(manifest_item(
                store,
                run,
                record,
                item,
                ledgers_written,
                ast_base,
            ))
            .await;
        }
        if may_still_run {
            // A transform that failed, or never finished, may have written batch files before
            // it stopped, or its next ledger before its record: none of them is this run's. Its
            // record stays, for a finalize run again to give the same reason. The ledger is
            // replaced by the carried one below, not deleted first: another attempt of this
            // finalize may have committed already, and this one cut off between a delete and a
            // put would leave the committed run without it.
            discard_batches(store, run, &item.item).await?;
        }
        let carried = carry_ledger(store, run, record, &item.item, may_still_run).await?;
        if let Some(problem) = &carried.unreadable {
            // A transform that failed on the same ledger said so already: this says it whole.
            let previous = record
                .previous_run
                .as_ref()
                .map(|previous| run.sibling(previous).ledger(&item.item));
            reason = Some(match reason {
                Some(why) if !previous.is_some_and(|key| why.contains(&key)) => {
                    format!("{why}; {problem}")
                }
                _ => problem.clone(),
            });
            unreadable = Some(format!("{}: {problem}", item.name));
        }
        carried.open
    };
    let scan_id = collected.as_ref().and_then(|c| c.scan_id.clone());
    let scan_url = scan_id.as_ref().and_then(|scan_id| {
        ScanLinks {
            base: ast_base.clone(),
            scan_id: scan_id.clone(),
            project_id: None,
            branch: item.scan_branch.clone(),
        }
        .scan()
    });
    let line = ManifestItem {
        item: item.item.clone(),
        vendor_id: item.vendor_id.clone(),
        name: item.name.clone(),
        status,
        reason,
        scan_id,
        scan_url,
        records_expected: collected
            .as_ref()
            .map_or(0, CollectOutcome::records_expected),
        records_fetched: collected
            .as_ref()
            .map_or(0, CollectOutcome::records_fetched),
        figures: transformed.figures,
        by_engine: transformed.by_engine,
        carried_forward,
        traffic: collected
            .as_ref()
            .map(|c| c.traffic.clone())
            .unwrap_or_default(),
        objects: transformed.objects,
        rejected: transformed.rejected,
        rejected_object: transformed.rejected_object,
        collisions: transformed.collisions,
        collisions_object: transformed.collisions_object,
    };
    Ok((line, unreadable))
}

/// Writes the manifest (every object with its counts and hash, every item's outcome), then the
/// commit marker — last, and only once — then the connection's state; releases the lock.
pub async fn finalize(
    store: &impl ObjectStore,
    connection: &Connection,
    run: &RunRef,
) -> Result<Manifest, StepError> {
    // Committed by an earlier attempt that stopped before the end: what follows the marker is
    // finished.
    if let Some(manifest) = finish_committed(store, run).await? {
        return Ok(manifest);
    }
    let Planned {
        items: mut work,
        filtered: filtered_items,
        mut problems,
        previous_run,
    } = read_plan(store, run).await?;
    // The parts of a split scan are one asset: the first stands for them all.
    let mut listed = std::collections::HashSet::new();
    work.retain(|item| listed.insert(item.item.clone()));
    // The work list's problems are the listing's (malformed records, an incomplete list).
    let listing_complete = problems.is_empty();
    let mut record = read_run(store, run).await?;
    // The run record's copy of the plan (the run it reconciles against, the scope, the item count)
    // can be older: a plan attempt that overlapped the one whose plan stands may have begun (a
    // read and a write of the record) around that one's writing it, and died before it wrote its
    // own. This finalize goes on with the plan's, and puts it back once it knows the run still
    // holds its lock, for the run's report and the next run's scope check.
    let record_written_back = record.previous_run != previous_run || record.scope.is_none();
    record.previous_run = previous_run;
    let ledgers_written: std::collections::HashSet<String> = store
        .list(&run.ledger_prefix())
        .await?
        .iter()
        .filter_map(|k| run.ledger_item(k).map(str::to_string))
        .collect();
    // Each item's outcome is two small reads (and maybe a ledger copy): many at once, as a
    // tenant of thousands of projects would otherwise wait on thousands of S3 round trips in turn.
    let lines: Vec<(ManifestItem, Option<String>)> = futures_util::stream::iter(&work)
        .map(|item| {
            manifest_item(
                store,
                run,
                &record,
                item,
                &ledgers_written,
                &connection.vendor.endpoints.api,
            )
        })
        .buffered(FINALIZE_READS_AT_ONCE)
        .try_collect()
        .await?;
    let (items, unreadable): (Vec<ManifestItem>, Vec<Option<String>>) = lines.into_iter().unzip();
    let mut totals = Figures::default();
    // Every engine the connection delivers has its line, the ones that found nothing too.
    let mut totals_by_engine: BTreeMap<Engine, Figures> = connection
        .engines()
        .map(|engine| (engine, Figures::default()))
        .collect();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for item in &items {
        totals.add(&item.figures);
        for (engine, figures) in &item.by_engine {
            totals_by_engine.entry(*engine).or_default().add(figures);
        }
        // A connection of one engine keeps no figures per engine: the item's are that engine's.
        if item.by_engine.is_empty()
            && let Some(figures) = totals_by_engine.values_mut().next()
            && connection.plans.len() == 1
        {
            figures.add(&item.figures);
        }
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
    problems.extend(unreadable.into_iter().flatten());
    let Unlisted {
        deleted: deleted_items,
        closed: closed_with_deleted,
        carried_for_filtered,
        problems: unreadable_unlisted,
    } = deleted_items(
        store,
        connection,
        run,
        &record,
        ThisRun {
            work: &work,
            filtered: &filtered_items,
            listing_complete,
            listed_open: items.iter().filter(|i| leaves_findings_open(i)).count() as u64,
        },
    )
    .await?;
    problems.extend(unreadable_unlisted);
    // The closures of deleted assets are lines of the run, of their engines.
    for (engine, closed) in closed_with_deleted {
        totals.count_closures(closed);
        totals_by_engine
            .entry(engine)
            .or_default()
            .count_closures(closed);
    }
    let carried_forward = items.iter().map(|i| i.carried_forward).sum::<u64>()
        + carried_for_filtered
        + deleted_items
            .iter()
            .map(DeletedItem::left_open)
            .sum::<u64>();
    // The marker's `committedAt` too: a manifest another attempt wrote over the committed one
    // can then be made again byte for byte (`restore_committed_manifest`).
    let finished_at = now_rfc3339();
    let manifest = Manifest {
        schema_version: "1.0".into(),
        connection_id: run.connection_id.clone(),
        run_id: run.run_id.clone(),
        kind: connection.config.kind,
        started_at: record.started_at,
        finished_at: finished_at.clone(),
        complete: problems.is_empty(),
        problems,
        items_by_status: by_status,
        totals,
        totals_by_engine,
        carried_forward,
        items,
        filtered_items,
        deleted_items,
    };
    // A run whose lease ran out while it went on must not commit beside the run that took over:
    // both may reconcile against the same last committed run. (The state machine's timeout ends
    // an execution well before its lease does; this catches what still runs. The commit claim
    // below refuses what this check passes and then loses the lock.)
    ensure_holds_lock(store, run).await?;
    if record_written_back {
        record_plan(
            store,
            run,
            work.len() as u64,
            record.previous_run.clone(),
            VendorScope::of(connection),
        )
        .await?;
    }
    let body = Bytes::from(serde_json::to_vec_pretty(&manifest).expect("serializes"));
    let sha = sha256_hex(&body);
    store.put(&run.manifest(), body.clone()).await?;
    if let Some(reason) = nothing_to_commit(&manifest.items) {
        // The manifest stays for the report (each item's reason), without a commit marker: the
        // next run reconciles against the last committed one, and nothing of this run counts.
        fail_run(store, run, &reason).await?;
        return Err(StepError::NothingCommitted(reason));
    }
    let marker = serde_json::json!({"runId": run.run_id, "complete": manifest.complete, "manifestSha256": sha, "committedAt": finished_at});
    let ours = Bytes::from(serde_json::to_vec(&marker).expect("serializes"));
    // The claim on the commit after the run this one reconciled against is the commit: one run
    // writes it, and the others planned against that run commit nothing.
    let previous = record.previous_run.as_deref();
    let committed = match commits::claim(store, run, previous, ours.clone()).await? {
        Claimed::ByThisRun(committed) => committed,
        Claimed::ByAnother(committed) => {
            let superseded = StepError::Superseded {
                connection_id: run.connection_id.clone(),
                run_id: run.run_id.clone(),
                previous: previous.map(str::to_string),
                committed,
            };
            fail_run(store, run, &superseded.to_string()).await?;
            return Err(superseded);
        }
    };
    commits::put_marker(store, run, committed.clone()).await?;
    if committed != ours {
        // Another attempt claimed first, its manifest written before its claim: this one's,
        // written since, must not stand beside that hash.
        tracing::info!(run = %run.run_id, "already committed");
        restore_committed_manifest(store, run, &committed, &body, &manifest).await?;
    }
    mark_committed(store, run, &manifest).await?;
    Ok(manifest)
}

/// Why a run has nothing to commit: items failed and none was pulled (complete, or incomplete:
/// read but with its total moving, which commits as partial, naming the item, its findings
/// carried); the others have no scan. An empty work list, a tenant without projects, commits:
/// that is what it holds.
fn nothing_to_commit(items: &[ManifestItem]) -> Option<String> {
    let count = |status: ItemStatus| items.iter().filter(|i| i.status == status).count();
    let failed = count(ItemStatus::Failed);
    if failed == 0 || count(ItemStatus::Complete) + count(ItemStatus::Incomplete) > 0 {
        return None;
    }
    let first = items.iter().find(|i| i.status == ItemStatus::Failed)?;
    let without_scan = count(ItemStatus::NoScan);
    Some(format!(
        "nothing was committed: every item failed ({failed} failed{}); the first, {}: {}",
        if without_scan > 0 {
            format!(", {without_scan} without a scan")
        } else {
            String::new()
        },
        first.name,
        first.reason.as_deref().unwrap_or("no reason recorded")
    ))
}

/// Records that finalize gave up waiting for an item's transform, so an attempt still running
/// commits nothing after it (see `transform`); `false` when a transform's own record came first.
/// A write of the record in flight (S3's 409), none there yet, is an error to retry.
async fn give_up(store: &impl ObjectStore, run: &RunRef, item: &str) -> Result<bool, StepError> {
    let key = run.transform_record(item);
    match put_json_once(store, &key, &TransformRecord::given_up(item)).await? {
        Once::Written => Ok(true),
        Once::Standing(earlier) => Ok(earlier.given_up),
    }
}

/// An asset's ledger carried forward from the previous committed run.
#[derive(Default)]
struct Carried {
    /// Its open findings (0 when there was none, or it cannot be read).
    open: u64,
    /// Why it cannot be read, and what to do: it went forward as stored, uncounted.
    unreadable: Option<String>,
}

/// Copies an asset's ledger from the previous committed run into this run unchanged, over any a
/// transform left; with none to copy, deletes one a transform may have left
/// (`may_have_a_ledger`). One that cannot be read goes forward as stored all the same: failing
/// the run on it would fail every run after, each reconciling against the same committed run.
async fn carry_ledger(
    store: &impl ObjectStore,
    run: &RunRef,
    record: &RunRecord,
    item: &str,
    may_have_a_ledger: bool,
) -> Result<Carried, StepError> {
    let previous = match &record.previous_run {
        Some(previous_run) => {
            let key = run.sibling(previous_run).ledger(item);
            store.get(&key).await?.map(|body| (key, body))
        }
        None => None,
    };
    let Some((key, body)) = previous else {
        // With none to carry, a ledger a transform left is not the run's.
        if may_have_a_ledger {
            store.delete(&run.ledger(item)).await?;
        }
        return Ok(Carried::default());
    };
    let counted = read_gzip_json::<OpenFindings>(&key, &body[..]);
    store.put(&run.ledger(item), body).await?;
    Ok(match counted {
        Ok(open) => Carried {
            open: open.count,
            unreadable: None,
        },
        Err(error) => Carried {
            open: 0,
            unreadable: Some(unreadable_ledger(&error, &run.ledger(item), true)),
        },
    })
}

/// What is wrong with a ledger that cannot be read, carried forward as `copy`, and what to do:
/// for an asset that may still be scanned (listed, left out by the filters, or not listed by an
/// incomplete listing), start it afresh; for one the tenant no longer lists, let it go.
fn unreadable_ledger(error: &StepError, copy: &str, may_be_scanned: bool) -> String {
    let remedy = if may_be_scanned {
        format!(
            "to start the asset afresh, delete {copy} (its open findings then come again as NEW, \
             and any fixed meanwhile are not closed)"
        )
    } else {
        format!(
            "to let the asset go, delete {copy} (its open findings then stay open, none closed)"
        )
    };
    format!(
        "its ledger cannot be read ({error}): it is carried forward as stored, to {copy}, its \
         open findings uncounted and none of them closed, on every run until it is mended; \
         {remedy}"
    )
}

/// Assets of the previous committed run whose project or environment is no longer listed: their
/// ledgers go forward, closed when the connection's policy says so, else unchanged. Assets the
/// filters left out carry their ledgers forward unchanged; their open findings are the second value.
/// Deletion is decided only from a complete listing: when this run's list was incomplete (a
/// malformed record, a total that moved), an unlisted asset may simply be the one that was not
/// read, so it is carried forward unchanged, never reported deleted or closed. So it is when more
/// would close than the connection's `deletion_limit` allows.
async fn deleted_items(
    store: &impl ObjectStore,
    connection: &Connection,
    run: &RunRef,
    record: &RunRecord,
    this_run: ThisRun<'_>,
) -> Result<Unlisted, StepError> {
    let ThisRun {
        work,
        filtered,
        listing_complete,
        listed_open,
    } = this_run;
    let Some(previous_run) = &record.previous_run else {
        return Ok(Unlisted::default());
    };
    let mut problems = Vec::new();
    let left_out: std::collections::HashSet<&str> =
        filtered.iter().map(|f| f.item.as_str()).collect();
    let left_out_projects: std::collections::HashSet<&str> =
        filtered.iter().map(|f| f.vendor_id.as_str()).collect();
    let mut carried = 0;
    let previous = run.sibling(previous_run);
    let listed: std::collections::HashSet<&str> = work.iter().map(|w| w.item.as_str()).collect();
    let listed_projects: std::collections::HashSet<&str> =
        work.iter().map(|w| w.vendor_id.as_str()).collect();
    let delivered: std::collections::BTreeSet<Engine> = connection.engines().collect();
    let mut deleted = Vec::new();
    let mut closed = BTreeMap::new();
    let keys = store.list(&previous.ledger_prefix()).await?;
    // More assets to close than the connection's limit allows reads as access lost, not
    // deletion: they are carried as stored, as from an incomplete listing.
    let beyond_limit = if connection.config.close_deleted_items && listing_complete {
        // Those the previous run reported deleted with nothing left open need no read.
        let nothing_open = closed_as_deleted(store, &previous).await?;
        let unlisted: Vec<&String> = keys
            .iter()
            .filter(|key| {
                previous.ledger_item(key).is_some_and(|item| {
                    !listed.contains(item)
                        && !left_out.contains(item)
                        && !nothing_open.contains(item)
                })
            })
            .collect();
        let scanned_projects: std::collections::HashSet<&str> = work
            .iter()
            .filter(|w| w.scan_id.is_some())
            .map(|w| w.vendor_id.as_str())
            .collect();
        let closing = Closing {
            left_out_projects: &left_out_projects,
            listed_projects: &listed_projects,
            scanned_projects: &scanned_projects,
            delivered: &delivered,
            legacy: connection.config.kind.legacy_engine(),
        };
        let counted = closing.counted(store, &unlisted).await?;
        deletions_beyond_limit(
            &connection.config.deletion_limit,
            previous_run,
            listed_open,
            &counted,
        )
    } else {
        None
    };
    let deletion_decided = listing_complete && beyond_limit.is_none();
    problems.extend(beyond_limit);
    for key in keys {
        let Some(item) = previous.ledger_item(&key) else {
            continue;
        };
        if listed.contains(item) {
            continue;
        }
        if left_out.contains(item) || !deletion_decided {
            // Copied as it is stored.
            if let Some(body) = store.get(&key).await? {
                match read_gzip_json::<OpenFindings>(&key, &body[..]) {
                    Ok(open) => carried += open.count,
                    Err(error) => problems.push(format!(
                        "{item}: {}",
                        unreadable_ledger(&error, &run.ledger(item), true)
                    )),
                }
                store.put(&run.ledger(item), body).await?;
            }
            continue;
        }
        let mut ledger = match get_gzip_json::<Ledger>(store, &key).await {
            Ok(Some(ledger)) => ledger,
            Ok(None) => continue,
            Err(error @ StepError::BadObject { .. }) => {
                // Neither deleted nor closed: what it holds is not known.
                problems.push(format!(
                    "{item}: {}",
                    unreadable_ledger(&error, &run.ledger(item), false)
                ));
                if let Some(body) = store.get(&key).await? {
                    store.put(&run.ledger(item), body).await?;
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        // Under `each_branch` a project's assets are its branches (`<project>@<branch>`, keyed
        // apart from the project): a project the filters leave out keeps them as they were too.
        if branch_of_left_out(
            &ledger.vendor_item_id,
            ledger.branch.as_deref(),
            &left_out_projects,
        ) {
            carried += ledger.open_findings();
            put_gzip_json(store, &run.ledger(item), &ledger).await?;
            continue;
        }
        // A branch of a project listed now lost its last scan of the engines the connection
        // delivers: another engine's findings there (an engine taken off the connection since)
        // may stand, and are carried, not closed.
        let of_listed_project = ledger.branch.as_ref().is_some_and(|branch| {
            project_of_branch_asset(&ledger.vendor_item_id, branch)
                .is_some_and(|project| listed_projects.contains(project.as_ref()))
        });
        let open_findings = ledger.open_findings();
        let mut entry = DeletedItem {
            item: item.to_string(),
            vendor_id: ledger.vendor_item_id.clone(),
            open_findings,
            closed: false,
            carried: 0,
            objects: Vec::new(),
        };
        if connection.config.close_deleted_items && open_findings > 0 {
            let context = TransformContext {
                connection_id: run.connection_id.clone(),
                run_id: run.run_id.clone(),
                connector_kind: connection.config.kind,
                produced_at: record.started_at.clone(),
            };
            let reason = format!(
                "its {} is no longer listed by the tenant (run {})",
                match (connection.config.kind, &connection.config.branches) {
                    (ConnectorKind::Sast | ConnectorKind::Sca, BranchPolicy::EachBranch) => {
                        "project branch (or its last completed scan)"
                    }
                    (ConnectorKind::Sast | ConnectorKind::Sca, _) => "project",
                    (ConnectorKind::Dast, _) => "environment",
                },
                run.run_id
            );
            let mut of_item = BTreeMap::new();
            let closures = put_lines_written(store, &run.closures(item), |out| {
                of_item = close_all(
                    &mut ledger,
                    &context,
                    connection.config.kind.legacy_engine(),
                    of_listed_project.then_some(&delivered),
                    &reason,
                    connection.options.max_findings_per_line,
                    out,
                )?;
                Ok(of_item.values().map(|c| c.findings).sum())
            })
            .await?;
            Closed::add_by_engine(&mut closed, of_item);
            entry.objects.push(closures);
            entry.closed = true;
            entry.carried = ledger.open_findings();
        }
        put_gzip_json(store, &run.ledger(item), &ledger).await?;
        deleted.push(entry);
    }
    Ok(Unlisted {
        deleted,
        closed,
        carried_for_filtered: carried,
        problems,
    })
}

/// What this run listed, for [`deleted_items`].
struct ThisRun<'a> {
    work: &'a [WorkItem],
    filtered: &'a [FilteredItem],
    /// No problem in the plan: the listing is whole.
    listing_complete: bool,
    /// The items with findings open ([`leaves_findings_open`]).
    listed_open: u64,
}

/// Whether this run leaves findings of the item open: sent open, held open, or carried.
fn leaves_findings_open(item: &ManifestItem) -> bool {
    item.figures.sent_open() > 0 || item.figures.held_open() > 0 || item.carried_forward > 0
}

/// Whether a ledger of the asset `vendor_item_id` (of `branch`) is a branch asset of a project
/// the filters leave out: carried as it is, never closed.
fn branch_of_left_out(
    vendor_item_id: &str,
    branch: Option<&str>,
    left_out_projects: &std::collections::HashSet<&str>,
) -> bool {
    branch.is_some_and(|branch| {
        project_of_branch_asset(vendor_item_id, branch)
            .is_some_and(|project| left_out_projects.contains(project.as_ref()))
    })
}

/// Which of the assets finalize would close as deleted count toward the connection's
/// `deletion_limit`.
struct Closing<'a> {
    left_out_projects: &'a std::collections::HashSet<&'a str>,
    listed_projects: &'a std::collections::HashSet<&'a str>,
    /// The projects this run pulls a scan of.
    scanned_projects: &'a std::collections::HashSet<&'a str>,
    /// The engines the connection delivers, and the one of entries written before engines.
    delivered: &'a std::collections::BTreeSet<Engine>,
    legacy: Engine,
}

impl Closing<'_> {
    /// Of the `unlisted` ledgers of the previous run, the vendor ids of those finalize would
    /// close findings of (findings open, not a branch of a project left out; a branch of a
    /// project listed closes only the delivered engines' findings) whose project this run pulls
    /// no scan of: a branch gone from a project still scanned, or an asset keyed anew by a change
    /// of branch policy, is no sign of access lost. A ledger that cannot be read is carried, not
    /// closed: not counted.
    async fn counted(
        &self,
        store: &impl ObjectStore,
        unlisted: &[&String],
    ) -> Result<Vec<String>, StepError> {
        futures_util::stream::iter(unlisted)
            .map(|key| async move {
                match get_gzip_json::<OpenFindings>(store, key).await {
                    Ok(ledger) => Ok(ledger.filter(|l| self.counts(l)).map(|l| l.vendor_item_id)),
                    Err(StepError::BadObject { .. }) => Ok(None),
                    Err(error) => Err(error),
                }
            })
            .buffered(FINALIZE_READS_AT_ONCE)
            .try_filter_map(|id| async move { Ok(id) })
            .try_collect()
            .await
    }

    fn counts(&self, ledger: &OpenFindings) -> bool {
        let id = ledger.vendor_item_id.as_str();
        let branch = ledger.branch.as_deref();
        let project = branch.and_then(|b| project_of_branch_asset(id, b));
        let project = project.as_deref();
        // A branch of a project listed closes only the delivered engines' findings.
        let closes_some = if project.is_some_and(|p| self.listed_projects.contains(p)) {
            ledger.open_of_any(self.delivered, self.legacy)
        } else {
            ledger.count > 0
        };
        closes_some
            && !branch_of_left_out(id, branch, self.left_out_projects)
            && !self.scanned_projects.contains(id)
            && !project.is_some_and(|p| self.scanned_projects.contains(p))
    }
}

/// The problem of a run that would close as deleted more assets than the connection's
/// `deletion_limit` allows: the `counted` ones ([`Closing::counted`]) against the limit for them
/// and the run's `listed_open` items with findings open.
fn deletions_beyond_limit(
    limit: &DeletionLimit,
    previous_run: &str,
    listed_open: u64,
    counted: &[String],
) -> Option<String> {
    let closing = counted.len() as u64;
    let held = listed_open + closing;
    let allowed = limit.allowed(held);
    let named: Vec<&str> = counted.iter().take(5).map(String::as_str).collect();
    (closing > allowed).then(|| {
        format!(
            "the tenant no longer lists {closing} assets whose findings run {previous_run} left open ({}{}), beside {listed_open} assets with findings open it still lists: more than the connection's deletion_limit lets one run close as deleted ({allowed}: {} assets, or {}% of {held}). A credential that lost its access to part of the tenant (its user or client removed from some groups) is answered as their deletion would be. They are carried, not closed. Give the credential back its access; if they were deleted, set deletion_limit.percent to 100 for one run, then put it back",
            named.join(", "),
            if counted.len() > named.len() { ", …" } else { "" },
            limit.assets,
            limit.percent
        )
    })
}

/// The previous committed run's assets this run did not list.
#[derive(Default)]
struct Unlisted {
    /// Those no longer listed by the tenant.
    deleted: Vec<DeletedItem>,
    /// What their closures hold, engine by engine (under `close_deleted_items`).
    closed: BTreeMap<Engine, Closed>,
    /// The open findings of those the filters left out, or that an incomplete listing missed, or
    /// of those carried for a run over the deletion limit.
    carried_for_filtered: u64,
    /// Ledgers that could not be read, carried as stored.
    problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, status: &str) -> ManifestItem {
        serde_json::from_value(serde_json::json!({
            "item": name, "vendorId": name, "name": name, "status": status,
            "reason": format!("{name} went wrong"), "recordsExpected": 0, "recordsFetched": 0,
            "figures": serde_json::to_value(Figures::default()).unwrap(), "objects": [], "rejected": [], "collisions": []
        }))
        .unwrap()
    }

    /// The assets with findings open, the share of the deletion limit: an asset whose findings
    /// were all sent FIXED (a triage state that settles them, not the vendor's FIXED) has none.
    /// Before, it counted, as any asset that sent more findings than the vendor's FIXED ones.
    #[test]
    fn an_asset_leaves_findings_open_where_it_sent_held_or_carried_one() {
        use crate::mapping::Lifecycle;
        let with = |set: &dyn Fn(&mut ManifestItem)| {
            let mut line = item("a", "complete");
            line.figures.findings_out = 3;
            set(&mut line);
            leaves_findings_open(&line)
        };
        let lifecycle = |of: &[(Lifecycle, u64)]| of.iter().copied().collect();
        assert!(!with(
            &|i| i.figures.lifecycle = lifecycle(&[(Lifecycle::Fixed, 3)])
        ));
        assert!(with(&|i| {
            i.figures.lifecycle = lifecycle(&[(Lifecycle::Fixed, 2), (Lifecycle::Active, 1)])
        }));
        assert!(with(&|i| {
            i.figures.lifecycle = lifecycle(&[(Lifecycle::Fixed, 3)]);
            i.figures.held_for_failed_login = 1;
        }));
        assert!(with(&|i| {
            i.figures.lifecycle = lifecycle(&[(Lifecycle::Fixed, 3)]);
            i.carried_forward = 2;
        }));
    }

    #[test]
    fn an_asset_counts_toward_the_deletion_limit_only_where_it_closes_findings_of_a_project_not_scanned()
     {
        use std::collections::{BTreeSet, HashSet};
        let ledger = |id: &str, branch: Option<&str>, engines: &[Option<Engine>]| OpenFindings {
            count: engines.len() as u64,
            engines: engines.iter().copied().collect(),
            vendor_item_id: id.to_string(),
            branch: branch.map(str::to_string),
        };
        let (left_out, listed) = (HashSet::from(["gone-by-filter"]), HashSet::from(["kept"]));
        let scanned = HashSet::from(["scanned"]);
        let delivered = BTreeSet::from([Engine::Sast, Engine::Sca]);
        let closing = Closing {
            left_out_projects: &left_out,
            listed_projects: &listed,
            scanned_projects: &scanned,
            delivered: &delivered,
            legacy: Engine::Sast,
        };
        let (sast, kics) = (Some(Engine::Sast), Some(Engine::Kics));
        let cases = [
            (ledger("unlisted", Some("main"), &[sast]), true),
            (ledger("unlisted", None, &[kics]), true),
            (ledger("unlisted", None, &[]), false),
            (ledger("unlisted@dev", Some("dev"), &[None]), true),
            // A project the filters leave out keeps its branch assets as they are.
            (ledger("gone-by-filter@dev", Some("dev"), &[sast]), false),
            // A project scanned now: a branch gone, or an asset keyed anew.
            (ledger("scanned@dev", Some("dev"), &[sast]), false),
            (ledger("scanned", Some("main"), &[sast]), false),
            // A project listed without a scan closes its branches' delivered engines' findings.
            (ledger("kept@dev", Some("dev"), &[None]), true),
            (
                ledger("kept@dev", Some("dev"), &[kics, Some(Engine::Sca)]),
                true,
            ),
            (ledger("kept@dev", Some("dev"), &[kics]), false),
        ];
        for (ledger, counts) in cases {
            assert_eq!(closing.counts(&ledger), counts, "{ledger:?}");
        }
    }

    #[test]
    fn only_a_run_in_which_nothing_was_delivered_and_something_failed_commits_nothing() {
        let cases = [
            (vec![], None),
            (vec![("a", "no_scan")], None),
            (vec![("a", "failed"), ("b", "complete")], None),
            (vec![("a", "failed"), ("b", "incomplete")], None),
            (vec![("a", "incomplete")], None),
            (
                vec![("a", "failed"), ("b", "failed")],
                Some(
                    "nothing was committed: every item failed (2 failed); the first, a: a went wrong",
                ),
            ),
            (
                vec![("a", "no_scan"), ("b", "failed")],
                Some("every item failed (1 failed, 1 without a scan); the first, b: b went wrong"),
            ),
        ];
        for (items, expected) in cases {
            let items: Vec<ManifestItem> = items.iter().map(|(n, s)| item(n, s)).collect();
            let reason = nothing_to_commit(&items);
            match expected {
                None => assert_eq!(reason, None, "{items:?}"),
                Some(text) => assert!(
                    reason.as_deref().is_some_and(|r| r.contains(text)),
                    "{reason:?}"
                ),
            }
        }
    }
}
