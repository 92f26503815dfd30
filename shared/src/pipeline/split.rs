//! Scans too large for one worker, split into page ranges: the plan makes one work item per range
//! (a part), each part is collected on its own, at once with the others, into the item's raw
//! folder under the scan's own page numbers, and the transform that finds every part collected
//! joins them into the item's outcome, with the completeness proof over the union, before the
//! asset is transformed once.
//!
//! The plan asks a scan its size only where the last committed run pulled the item complete with
//! more than half the connection's `split_scans_above` records (a scan's size is known from no
//! listing), by asking it for two results (`limit=2`) twice: the answers give its total now and how
//! the server reads `offset`, which a range that starts past the first page could not tell from
//! its own pages. An item whose last pull was not complete (a split that did not add up among
//! them) is pulled whole: a whole pull adapts to what the server does, a part cannot.

use std::collections::HashMap;

use bytes::Bytes;
use itertools::Itertools;

use super::access::{VendorAccess, with_renewal};
use super::collect::{read_identities, stored_pages};
use super::config::Connection;
use super::documents::{CollectOutcome, ItemStatus, ItemTraffic, Manifest, ScanPart, WorkItem};
use super::error::StepError;
use super::objects::{get_json, get_page, put_json, readable};
use crate::cxone::Completeness;
use crate::layout::RunRef;
use crate::mapping::IdTally;
use crate::store::ObjectStore;

/// The most parts one scan is split into: a total that calls for more (a server's word is all
/// there is) makes the last part read on to the scan's end, as a whole pull would.
pub(crate) const MAX_PARTS: u64 = 100;

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
            // The sizes are a hint: without them every scan is pulled whole, as on a first run.
            readable(get_json::<Manifest>(store, &run.sibling(previous).manifest()).await)?
        }
        _ => None,
    };
    let Some(previous) = previous_sizes else {
        return Ok(items);
    };
    let sizes: HashMap<String, u64> = previous
        .items
        .into_iter()
        .filter(|i| i.status == ItemStatus::Complete)
        .map(|i| (i.item, i.records_expected))
        .collect();
    let page = u64::from(connection.vendor.results_page_size);
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
        let Some((of, per_part)) = parts_of(total, page, above) else {
            tracing::warn!(item = %item.item, total, "scan too large to number its pages; collected whole");
            planned.push(item);
            continue;
        };
        tracing::info!(item = %item.item, total, parts = of, "scan split");
        // Below 2^53: the work list travels through Step Functions as JSON, where a larger
        // number may not keep every digit.
        let fingerprint_key = rand::random::<u64>() >> 11;
        for index in 0..of {
            let part = ScanPart {
                index,
                of,
                first_page: index * per_part,
                pages: (index + 1 < of).then_some(per_part),
                semantics,
                planned_total: total,
                fingerprint_key,
            };
            planned.push(WorkItem {
                part: Some(part),
                ..item.clone()
            });
        }
    }
    Ok(planned)
}

/// How many parts a scan of `total` results makes, in pages of `page`, and the pages of each
/// part but the last: at most [`MAX_PARTS`] parts. `None` where the parts' pages could not be
/// numbered (page numbers are u32 in the bucket's keys).
fn parts_of(total: u64, page: u64, above: u64) -> Option<(u32, u32)> {
    let per_part = (above / page.max(1)).max(1);
    let of = total
        .div_ceil(page.max(1))
        .div_ceil(per_part)
        .min(MAX_PARTS);
    let last_first_page = of.saturating_sub(1).checked_mul(per_part)?;
    u32::try_from(last_first_page).ok()?;
    Some((u32::try_from(of).ok()?, u32::try_from(per_part).ok()?))
}

/// Joins a split scan's parts into the item's outcome (`collect.json`), once every part has its
/// own: the outcome transform and finalize read as for a scan pulled whole. Until then, the
/// missing part's key as [`StepError::WaitingForPart`]: the transform of the part collected last
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
                return Err(StepError::WaitingForPart {
                    key: part_key,
                    part: index + 1,
                    of,
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

/// What the parts got, summed: their traffic (the longest part's duration), and their records
/// against the scan's total, for the manifest of an item whose parts do not make a whole.
fn gathered(item: &WorkItem, parts: &[CollectOutcome]) -> CollectOutcome {
    let mut traffic = ItemTraffic::default();
    // The scan's total, as the parts that paged it saw it.
    let mut completeness = Completeness {
        expected: parts
            .iter()
            .map(|p| p.completeness.expected)
            .max()
            .unwrap_or(0),
        ..Completeness::default()
    };
    for part in parts {
        traffic.duration_ms = traffic.duration_ms.max(part.traffic.duration_ms);
        traffic.requests += part.traffic.requests;
        traffic.retries += part.traffic.retries;
        traffic.rate_limited += part.traffic.rate_limited;
        traffic.bytes += part.traffic.bytes;
        let c = &part.completeness;
        completeness.unique += c.unique;
        completeness.duplicates += c.duplicates;
        completeness.pages += c.pages;
    }
    let last = parts.last();
    // Listed only where every part lists each of its pages' (an attempt of an older version
    // lists none): its main pages', then, the last, its other pulls'.
    let listed = parts.iter().all(|p| {
        let others: u32 = p.other_pulls.iter().map(|o| o.pages).sum();
        p.page_checksums.len() as u64 == u64::from(p.pages) + u64::from(others)
    });
    CollectOutcome {
        item: item.item.clone(),
        status: ItemStatus::Failed,
        reason: None,
        scan_id: item.scan_id.clone(),
        pages: parts.iter().map(|p| p.pages).sum(),
        original_pages: last.map_or(0, |p| p.original_pages),
        // In page order: each part's main pages, then the last part's other pulls'.
        page_checksums: parts
            .iter()
            .filter(|_| listed)
            .flat_map(|p| p.page_checksums.iter().copied())
            .collect(),
        original_checksums: last
            .map(|p| p.original_checksums.clone())
            .unwrap_or_default(),
        completeness,
        other_pulls: last.map(|p| p.other_pulls.clone()).unwrap_or_default(),
        repeated_ids: Vec::new(),
        sent_twice_ids: Vec::new(),
        traffic,
        record: item.record.clone(),
        part: None,
    }
}

/// The fingerprints of one complete part's records and ids, under the key its scan's parts
/// share, each list sorted (`part-<k>-fingerprints.bin.zst`): the join compares them instead of
/// reading every page again. Written by the part's collect after its last page and before its
/// outcome, so a complete part has them.
pub(super) struct PartFingerprints {
    pub records: Vec<u64>,
    pub ids: Vec<u64>,
}

impl PartFingerprints {
    /// The record count, then the records' and the ids' fingerprints, little-endian, packed with
    /// a checksum.
    pub fn pack(&self) -> Bytes {
        let mut bytes = Vec::with_capacity(8 * (1 + self.records.len() + self.ids.len()));
        bytes.extend_from_slice(&(self.records.len() as u64).to_le_bytes());
        for word in self.records.iter().chain(&self.ids) {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        crate::packing::pack_page(&bytes)
    }

    fn unpack(key: &str, packed: &[u8]) -> Result<Self, StepError> {
        let bytes =
            crate::packing::unpack(key, packed).map_err(|e| StepError::bad_object(key, e))?;
        let mut words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of eight")));
        let records = words.next().and_then(|n| usize::try_from(n).ok());
        let malformed = || {
            StepError::bad_object(
                key,
                "not a part's fingerprints (a count, then whole eight-byte words)",
            )
        };
        let records = records.ok_or_else(malformed)?;
        if bytes.len() % 8 != 0 || records > bytes.len() / 8 - 1 {
            return Err(malformed());
        }
        let records_list: Vec<u64> = words.by_ref().take(records).collect();
        let ids: Vec<u64> = words.collect();
        // Each list is a set, sorted: a fingerprint twice would hide a record or an id.
        let increasing = |list: &[u64]| list.windows(2).all(|pair| pair[0] < pair[1]);
        if !increasing(&records_list) || !increasing(&ids) {
            return Err(StepError::bad_object(
                key,
                "a part's fingerprints that are not in increasing order",
            ));
        }
        Ok(Self {
            records: records_list,
            ids,
        })
    }
}

/// The fingerprints more than one of `lists` holds (each sorted, each holding any at most once),
/// in order, found by walking the lists together: a scan's millions of fingerprints are not
/// copied into one list to be sorted again, and a caller that needs only the first stops there.
fn shared_between(lists: &[Vec<u64>]) -> impl Iterator<Item = u64> + '_ {
    lists
        .iter()
        .map(|list| list.iter().copied())
        .kmerge()
        .dedup_with_count()
        .filter(|&(holders, _)| holders > 1)
        .map(|(_, word)| word)
}

/// The item's outcome from its parts' (all of them, in order): the first part not complete
/// decides it; else their pages must follow one another, every part must have seen the same
/// total, and their records, compared by fingerprint, must hold it with no record twice. Ids two
/// parts both carry are named by reading the pages again, only where there are any.
async fn joined(
    store: &impl ObjectStore,
    connection: &Connection,
    item: &WorkItem,
    parts: Vec<CollectOutcome>,
) -> Result<CollectOutcome, StepError> {
    let (run, key) = (&item.run, item.item.as_str());
    let of = parts.len();
    let mut outcome = gathered(item, &parts);
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
    let mut next_page: u32 = 0;
    for (index, part) in parts.iter().enumerate() {
        let split = part.part.as_ref();
        let first_page = split.map_or(0, |p| p.first_page);
        if first_page != next_page {
            let planned = split.map_or(0, |p| p.planned_total);
            let why = format!(
                "its pages start at {first_page}, where the parts before end at {next_page}: the scan shrank from the {planned} results the plan split"
            );
            outcome.status = ItemStatus::Incomplete;
            outcome.reason = Some(described(index, &why));
            return Ok(outcome);
        }
        next_page = first_page.saturating_add(part.pages);
    }
    outcome.pages = next_page;
    let total = outcome.completeness.expected;
    if let Some((index, part)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| p.completeness.expected != total)
    {
        let why = format!(
            "it saw a total of {} where another part saw {total}: the data moved between their pulls",
            part.completeness.expected
        );
        outcome.status = ItemStatus::Incomplete;
        outcome.reason = Some(described(index, &why));
        return Ok(outcome);
    }
    let (mut records, mut ids) = (Vec::with_capacity(of), Vec::with_capacity(of));
    for (index, outcome) in (0..).zip(&parts) {
        let fingerprints_key = run.part_fingerprints(key, index);
        let packed = store.get(&fingerprints_key).await?.ok_or_else(|| {
            StepError::bad_object(&fingerprints_key, "missing, where the part has its outcome")
        })?;
        let part = PartFingerprints::unpack(&fingerprints_key, &packed)?;
        if part.records.len() as u64 != outcome.completeness.unique {
            return Err(StepError::bad_object(
                &fingerprints_key,
                format!(
                    "{} records' fingerprints, where the part's outcome counts {}",
                    part.records.len(),
                    outcome.completeness.unique
                ),
            ));
        }
        records.push(part.records);
        ids.push(part.ids);
    }
    let repeats = shared_between(&records).count() as u64;
    drop(records);
    outcome.completeness.duplicates += repeats;
    outcome.completeness.unique -= repeats.min(outcome.completeness.unique);
    let problem = if repeats > 0 {
        Some(format!(
            "records stored by two parts: {repeats} (the data moved between their pulls)"
        ))
    } else {
        outcome.completeness.problem()
    };
    if let Some(problem) = problem {
        outcome.status = ItemStatus::Incomplete;
        outcome.reason = Some(format!("the union of its {of} parts: {problem}"));
        return Ok(outcome);
    }
    let ids_shared = shared_between(&ids).next().is_some();
    drop(ids);
    let (told_apart, sent_twice) = if ids_shared {
        // Ids more than one part carries: named by counting every page's again.
        let main_engines = item.main_engines(connection.engines());
        let pages = stored_pages(run, key, 0..next_page, &main_engines, &outcome.other_pulls);
        let mut tally = IdTally::new(&connection.plans.iter().collect::<Vec<_>>());
        for (page_key, engines) in &pages {
            tally.add_page(&get_page(store, page_key).await?, engines);
        }
        read_identities(store, &pages, &mut tally).await?;
        let repeats = tally.repeats();
        (repeats.told_apart, repeats.sent_twice)
    } else {
        // Each part named its own: no id is in two.
        let ids = |of: fn(&CollectOutcome) -> &Vec<String>| {
            parts.iter().flat_map(of).cloned().sorted().collect()
        };
        (ids(|p| &p.repeated_ids), ids(|p| &p.sent_twice_ids))
    };
    outcome.repeated_ids = told_apart;
    outcome.sent_twice_ids = sent_twice;
    outcome.status = ItemStatus::Complete;
    Ok(outcome)
}

/// A split item that has no joined outcome, for the manifest: why (the first part whose collect
/// did not finish or did not complete; else the join, which did not run), and what the parts that
/// finished got.
pub(super) async fn unjoined(
    store: &impl ObjectStore,
    item: &WorkItem,
    of: u32,
) -> Result<(String, CollectOutcome), StepError> {
    let mut parts = Vec::new();
    let mut why = None;
    for index in 0..of {
        let part =
            get_json::<CollectOutcome>(store, &item.run.part_outcome(&item.item, index)).await?;
        let problem = match &part {
            None => Some("collect did not finish".to_string()),
            Some(p) if p.status != ItemStatus::Complete => p.reason.clone(),
            Some(_) => None,
        };
        if let (None, Some(problem)) = (&why, problem) {
            why = Some(format!("part {} of {of}: {problem}", index + 1));
        }
        parts.extend(part);
    }
    let why = why.unwrap_or_else(|| {
        "its parts were collected but not joined: transform did not finish".to_string()
    });
    Ok((why, gathered(item, &parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_makes_parts_of_whole_pages_and_never_more_than_the_cap() {
        assert_eq!(parts_of(95, 10, 30), Some((4, 3)));
        assert_eq!(parts_of(5_000_000, 10_000, 1_000_000), Some((5, 100)));
        // A part is at least one page.
        assert_eq!(parts_of(5, 10, 3), Some((1, 1)));
        // A total that claims more parts than the cap: the last reads on to the end.
        assert_eq!(parts_of(1_000_000_000_000_000, 10, 30), Some((100, 3)));
        // Parts whose pages the keys cannot number are not made.
        assert_eq!(parts_of(u64::MAX, 1, u64::MAX / 4), None);
    }

    proptest::proptest! {
        #[test]
        fn the_fingerprints_shared_between_parts_are_those_two_or_more_hold(
            lists in proptest::collection::vec(
                proptest::collection::btree_set(0u64..40, 0..20),
                0..6,
            )
        ) {
            let mut holders: std::collections::BTreeMap<u64, usize> = Default::default();
            for word in lists.iter().flatten() {
                *holders.entry(*word).or_default() += 1;
            }
            let expected: Vec<u64> = holders
                .into_iter()
                .filter(|&(_, count)| count > 1)
                .map(|(word, _)| word)
                .collect();
            let lists: Vec<Vec<u64>> =
                lists.into_iter().map(|set| set.into_iter().collect()).collect();
            proptest::prop_assert_eq!(shared_between(&lists).collect::<Vec<_>>(), expected);
        }
    }
}
