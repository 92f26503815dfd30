//! Scans too large for one worker, split into page ranges: the plan makes one work item per range
//! (a part), each part is collected on its own, at once with the others, into the item's raw
//! folder under the scan's own page numbers, and the transform that finds every part collected
//! joins them into the item's outcome, with the completeness proof over the union, before the
//! asset is transformed once.
//!
//! The plan splits a scan only where the last committed run saw more than half the connection's
//! `split_scans_above` results (a scan's size is known from no listing), and only after asking
//! it for two results (`limit=2`): the answers give its total now and how the server reads
//! `offset`, which a range that starts past the first page could not tell from its own pages.

use std::collections::HashMap;

use bytes::Bytes;

use super::access::{VendorAccess, with_renewal};
use super::config::Connection;
use super::documents::{CollectOutcome, ItemStatus, ItemTraffic, Manifest, ScanPart, WorkItem};
use super::error::StepError;
use super::objects::{get_json, get_page, put_json};
use crate::cxone::RecordUnion;
use crate::layout::RunRef;
use crate::mapping::IdTally;
use crate::store::ObjectStore;

/// Splits each project item whose main scan holds more than the connection's
/// `split_scans_above` results into parts of at most that many (whole pages), in the item's place.
/// A scan that cannot be probed is left whole: its collect meets the same answer and reports it.
pub(super) async fn split_large_scans(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    run: &RunRef,
    items: Vec<WorkItem>,
) -> Result<Vec<WorkItem>, StepError> {
    let above = connection.config.split_scans_above;
    let previous_sizes = match items.first().and_then(|i| i.previous_run.as_deref()) {
        Some(previous) if above > 0 && connection.config.kind.on_projects() => {
            get_json::<Manifest>(store, &run.sibling(previous).manifest()).await?
        }
        _ => None,
    };
    let Some(previous) = previous_sizes else {
        return Ok(items);
    };
    let sizes: HashMap<String, u64> = previous
        .items
        .into_iter()
        .map(|i| (i.item, i.records_expected))
        .collect();
    let page = u64::from(connection.vendor.results_page_size);
    let pages_per_part = u32::try_from((above / page).max(1)).unwrap_or(u32::MAX);
    let mut planned = Vec::with_capacity(items.len());
    for item in items {
        let grown_near = sizes.get(&item.item).is_some_and(|n| *n > above / 2);
        let Some(scan_id) = item.scan_id.clone().filter(|_| grown_near) else {
            planned.push(item);
            continue;
        };
        let probed = with_renewal(vendor, |c| {
            let scan_id = scan_id.clone();
            async move { c.probe_results(&scan_id).await }
        })
        .await;
        let (total, semantics) = match probed {
            Ok((total, semantics)) if total > above => (total, semantics),
            Ok(_) => {
                planned.push(item);
                continue;
            }
            Err(error) => {
                tracing::warn!(item = %item.item, error = %error, "scan not probed; collected whole");
                planned.push(item);
                continue;
            }
        };
        let of = u32::try_from(total.div_ceil(page).div_ceil(u64::from(pages_per_part)))
            .unwrap_or(u32::MAX);
        tracing::info!(item = %item.item, total, parts = of, "scan split");
        for index in 0..of {
            let part = ScanPart {
                index,
                of,
                first_page: index * pages_per_part,
                pages: (index + 1 < of).then_some(pages_per_part),
                semantics,
                planned_total: total,
            };
            planned.push(WorkItem {
                part: Some(part),
                ..item.clone()
            });
        }
    }
    Ok(planned)
}

/// Joins a split scan's parts into the item's outcome (`collect.json`), once every part has its
/// own: the outcome transform and finalize read as for a scan pulled whole. Until then, the
/// missing part's key as [`StepError::NotYetWritten`]: the transform of the part collected last
/// finds them all. Two transforms that join at once write the same outcome.
pub(super) async fn join_parts(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
    of: u32,
) -> Result<(), StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    if get_json::<CollectOutcome>(store, &run.collect_outcome(key))
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut parts = Vec::with_capacity(of as usize);
    for index in 0..of {
        let part_key = run.part_outcome(key, index);
        match get_json::<CollectOutcome>(store, &part_key).await? {
            Some(outcome) => parts.push(outcome),
            None => {
                return Err(StepError::NotYetWritten {
                    key: part_key,
                    why: format!(
                        "part {} of {of} has not finished collecting; the transform of the part collected last joins them",
                        index + 1
                    ),
                });
            }
        }
    }
    let started = std::time::Instant::now();
    let outcome = joined(store, connection, item, parts).await?;
    let took_ms = started.elapsed().as_millis() as u64;
    tracing::info!(item = %key, status = ?outcome.status, pages = outcome.pages, took_ms, "parts joined");
    put_json(store, &run.collect_outcome(key), &outcome).await
}

/// The item's outcome from its parts' (all of them, in order): the first part not complete
/// decides it; else the union of their pages, read again, must hold the scan's total with no
/// record twice and its pages must follow one another.
async fn joined(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
    parts: Vec<CollectOutcome>,
) -> Result<CollectOutcome, StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    let mut traffic = ItemTraffic::default();
    for part in &parts {
        traffic.duration_ms = traffic.duration_ms.max(part.traffic.duration_ms);
        traffic.requests += part.traffic.requests;
        traffic.retries += part.traffic.retries;
        traffic.rate_limited += part.traffic.rate_limited;
        traffic.bytes += part.traffic.bytes;
    }
    let of = parts.len();
    let last = parts.last().cloned().ok_or_else(|| {
        StepError::bad_object(
            &run.work_list(),
            format!("item {key} is split into no part"),
        )
    })?;
    let mut outcome = CollectOutcome {
        item: key.to_string(),
        traffic,
        record: item.record.clone(),
        part: None,
        ..last.clone()
    };
    let described = |index: usize, what: &str| format!("part {} of {of}: {what}", index + 1);
    if let Some((index, part)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| p.status != ItemStatus::Complete)
    {
        outcome.status = part.status;
        outcome.reason = Some(described(index, part.reason.as_deref().unwrap_or("")));
        return Ok(outcome);
    }
    let mut next_page = 0;
    for (index, part) in parts.iter().enumerate() {
        let first_page = part.part.as_ref().map_or(0, |p| p.first_page);
        if first_page != next_page {
            let why = format!(
                "its pages start at {first_page}, where the parts before end at {next_page}: the scan shrank since the plan split it"
            );
            outcome.status = ItemStatus::Incomplete;
            outcome.reason = Some(described(index, &why));
            return Ok(outcome);
        }
        next_page = first_page + part.pages;
    }
    let main_engines = item.main_engines(connection.engines());
    let mut ids = IdTally::new(&connection.plans.iter().collect::<Vec<_>>());
    let mut union = RecordUnion::default();
    for number in 0..next_page {
        let page_key = run.raw_page(key, number);
        let page = get_page(store, &page_key).await?;
        ids.add_page(&page, &main_engines);
        union
            .add_page(Bytes::from(page))
            .map_err(|problem| StepError::bad_object(&page_key, problem))?;
    }
    for pull in last.other_pulls.iter().filter(|p| p.not_taken.is_none()) {
        for number in pull.first_page..pull.first_page + pull.pages {
            ids.add_page(
                &get_page(store, &run.raw_page(key, number)).await?,
                &pull.engines,
            );
        }
    }
    outcome.pages = next_page;
    outcome.completeness = union.completeness().clone();
    outcome.repeated_ids = ids.repeated();
    if let Some(problem) = union.problem() {
        outcome.status = ItemStatus::Incomplete;
        outcome.reason = Some(format!("the union of its {of} parts: {problem}"));
    }
    Ok(outcome)
}

/// Why a split item has no joined outcome, for the manifest: the first part whose collect did
/// not finish, or did not complete; else the join, which did not run.
pub(super) async fn unjoined_reason(
    store: &impl ObjectStore,
    item: &WorkItem,
    of: u32,
) -> Result<String, StepError> {
    for index in 0..of {
        let part =
            get_json::<CollectOutcome>(store, &item.run.part_outcome(&item.item, index)).await?;
        let why = match part {
            None => "collect did not finish".to_string(),
            Some(p) if p.status != ItemStatus::Complete => p.reason.unwrap_or_default(),
            Some(_) => continue,
        };
        return Ok(format!("part {} of {of}: {why}", index + 1));
    }
    Ok("its parts were collected but not joined: transform did not finish".to_string())
}
