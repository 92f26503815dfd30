//! The documents the steps store and read back: the work list's items, each item's collect
//! outcome and transform record, and the run's manifest. Where each lives is in [`crate::layout`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cxone::{Completeness, OffsetSemantics, ResultsProgress};
use crate::layout::RunRef;
use crate::mapping::{Collision, Figures, Rejected};
use crate::{ConnectorKind, Engine};

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
    /// Projects: the latest completed scan (of the connection's engine, or of any engine when it
    /// delivers several), found by the plan in batches; DAST: found by collect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_id: Option<String>,
    /// Projects: the engines whose findings come from `scan_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<Engine>,
    /// Projects: engines whose latest completed scan is another one (a scan that ran SCA only is
    /// not the SAST scan), one entry per distinct scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_scans: Vec<EngineScan>,
    /// The branch of the SAST scan (a change of branch holds closures for one run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_branch: Option<String>,
    /// SAST: also pull the scan's severities before triage (the connection's `original_severity`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub original_severity: bool,
    /// When the SAST scan was made (for the look-back window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_created: Option<String>,
    /// The project or environment record as the vendor sent it; null where `record_stored`.
    pub record: Value,
    /// The record was too large to carry in the work list (a child's input is limited to
    /// 256 KiB): the plan stored it at the item's `raw/<item>/item.json`, where the transform
    /// (and replay) read it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_stored: bool,
    /// The connection's last committed run when this run was planned: its ledgers are what the
    /// findings are reconciled against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run: Option<String>,
    /// A scan too large for one worker: this item is one page range of it, collected on its own
    /// and joined with the others before the asset is transformed (see `pipeline::split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<ScanPart>,
}

/// One page range of a project's main scan, split by the plan: parts are collected at once by
/// separate workers, each into the item's raw folder under the scan's own page numbers, and the
/// transform that finds every part collected joins them (the completeness proof over the union)
/// and transforms the asset once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanPart {
    /// 0-based; the last part (`index == of - 1`) also pulls the item's other scans.
    pub index: u32,
    pub of: u32,
    /// The scan's page this part starts at.
    pub first_page: u32,
    /// Pages in the range; `None` for the last part, which reads to the scan's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
    /// How the server read `offset`, probed by the plan: a range that starts past the first
    /// page cannot tell from its own pages.
    pub semantics: OffsetSemantics,
    /// The scan's total when the plan probed it.
    pub planned_total: u64,
    /// The key the parts fingerprint records and ids under (drawn at random by the plan), so
    /// the join compares their sets instead of reading every page again.
    pub fingerprint_key: u64,
}

impl ScanPart {
    pub fn is_last(&self) -> bool {
        self.index + 1 == self.of
    }

    /// What makes this a part the plan never makes: `None` for one it could have.
    pub fn problem(&self) -> Option<String> {
        let max = super::split::MAX_PARTS;
        (self.of == 0 || u64::from(self.of) > max || self.index >= self.of).then(|| {
            format!(
                "part {} of {}: a scan is split into 1 to {max} parts, numbered from 0 below their count",
                self.index, self.of
            )
        })
    }
}

/// One line of the work list: the items one child execution of the state machine collects and
/// transforms, one after another. A child is billed its start and each task it enters, whatever
/// it carries: grouping items cuts the state transitions per item (see `plan::group_items`).
///
/// A lone item (a work-list line of a run planned before groups, which finalize and reports still
/// read) reads as a group of one.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkGroup {
    pub items: Vec<WorkItem>,
    /// Until when the group's items may start (none in a group planned before they were set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadlines: Option<ItemDeadlines>,
    /// The child's collect failed for good (the state machine's `Catch`, its retries spent):
    /// what it failed with, recorded for each item it did not collect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_error: Option<TaskFailure>,
    /// The child's transform failed for good (the state machine's `Catch`): what it failed
    /// with, recorded for each item collected whole that it left without a record; nothing is
    /// transformed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_error: Option<TaskFailure>,
}

/// Until when a run's items may start: set by the plan from the run's start (see
/// `run::COLLECT_ITEMS_WITHIN`), so that finalize runs inside the execution's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemDeadlines {
    /// No item is collected from this moment on.
    pub collect_before: jiff::Timestamp,
    /// No item is transformed from this moment on.
    pub transform_before: jiff::Timestamp,
}

impl WorkGroup {
    /// A group as the plan makes it: no error caught yet.
    pub fn new(items: Vec<WorkItem>, deadlines: Option<ItemDeadlines>) -> Self {
        Self {
            items,
            deadlines,
            collect_error: None,
            transform_error: None,
        }
    }
}

/// A failed task's error as Step Functions' `Catch` hands it on (`ResultPath`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskFailure {
    pub error: String,
    /// For a Lambda task, the function's error as JSON text (`errorMessage` is the reason).
    #[serde(default)]
    pub cause: Option<String>,
}

impl TaskFailure {
    /// `<step> failed (<error name>): <the function's message>`.
    pub fn reason(&self, step: &str) -> String {
        let message = self.cause.as_deref().map(|cause| {
            serde_json::from_str::<serde_json::Value>(cause)
                .ok()
                .and_then(|v| v["errorMessage"].as_str().map(str::to_string))
                .unwrap_or_else(|| cause.to_string())
        });
        // The message was cut to `ERROR_MESSAGE_CHARS` where the function failed.
        match message {
            Some(message) => format!("{step} failed ({}): {message}", self.error),
            None => format!("{step} failed ({})", self.error),
        }
    }
}

impl<'de> Deserialize<'de> for WorkGroup {
    fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        // Other fields are the state machine's (a caught error beside the items).
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Group {
            items: Vec<WorkItem>,
            #[serde(default)]
            deadlines: Option<ItemDeadlines>,
            #[serde(default)]
            collect_error: Option<TaskFailure>,
            #[serde(default)]
            transform_error: Option<TaskFailure>,
        }
        let value = Value::deserialize(input)?;
        let parsed = if value.get("items").is_some() {
            serde_json::from_value::<Group>(value)
        } else {
            serde_json::from_value::<WorkItem>(value).map(|item| Group {
                items: vec![item],
                deadlines: None,
                collect_error: None,
                transform_error: None,
            })
        };
        parsed
            .map(|g| WorkGroup {
                items: g.items,
                deadlines: g.deadlines,
                collect_error: g.collect_error,
                transform_error: g.transform_error,
            })
            .map_err(serde::de::Error::custom)
    }
}

/// A scan some of an item's engines take their findings from, beside the item's main scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineScan {
    pub scan_id: String,
    pub engines: Vec<Engine>,
    /// When the scan was made (for the look-back window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The scan's branch (a change of branch holds its engines' closures for one run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

impl WorkItem {
    /// Where collect records this item's outcome: the item's, or its part's for a split scan.
    pub fn collect_outcome_key(&self) -> String {
        match &self.part {
            Some(part) => self.run.part_outcome(&self.item, part.index),
            None => self.run.collect_outcome(&self.item),
        }
    }

    /// Where collect records how far the pull of this item's main scan (or its part) got.
    pub fn collect_progress_key(&self) -> String {
        match &self.part {
            Some(part) => self.run.part_progress(&self.item, part.index),
            None => self.run.collect_progress(&self.item),
        }
    }

    /// The engines whose findings come from the main scan: those the plan named, or, for an
    /// item that names none (DAST, or a work list written before engines), every engine the
    /// connection delivers that no other scan of the item does.
    pub fn main_engines(&self, delivered: impl IntoIterator<Item = Engine>) -> Vec<Engine> {
        if !self.engines.is_empty() {
            return self.engines.clone();
        }
        delivered
            .into_iter()
            .filter(|e| !self.other_scans.iter().any(|o| o.engines.contains(e)))
            .collect()
    }
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

/// `raw/<item>/progress.json`: how far the collect of an item's main scan got, rewritten after
/// each page it stores. An attempt cut off (its invocation's time run out, the function stopped)
/// leaves it, and the next attempt of the run goes on from the page after, reading the pages
/// stored before again rather than asking the vendor for them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectProgress {
    pub scan_id: String,
    /// Pages stored: `0.json.zst` up to this one, excluded.
    pub pages: u32,
    pub pager: ResultsProgress,
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
    /// Pages of severities before triage (`original-<n>.json.zst`), when the item asked for them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub original_pages: u32,
    /// The checksum of each results page collect stored (see [`crate::packing::page_checksum`]),
    /// in page order (the main scan's, then each other pull's): the pages the completeness proof
    /// holds. Another attempt of the collect, one Step Functions retried while it still ran,
    /// stores its pages under the same keys; a page that is not the one counted here is not
    /// reconciled. Empty in outcomes written before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub page_checksums: Vec<u32>,
    /// As `page_checksums`, of the pages of severities before triage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub original_checksums: Vec<u32>,
    pub completeness: Completeness,
    /// The pulls of the item's other scans (engines whose latest scan is not the main one),
    /// their pages numbered after the main scan's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_pulls: Vec<ScanPull>,
    /// Vendor ids several findings share: the transform tells those findings apart by their
    /// identity fields (docs/etm-batch.md, Identity). Outcomes written before `sent_twice_ids`
    /// list here the ids of findings sent twice too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeated_ids: Vec<String>,
    /// Vendor ids one finding was sent under more than once, alike in every identity field (a
    /// list that moved while it was paged): the finding keeps its id, written once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_twice_ids: Vec<String>,
    /// The vendor traffic of this item alone.
    #[serde(default)]
    pub traffic: ItemTraffic,
    /// The project or environment record as the vendor sent it, for replay (runs before this
    /// field wrote it as its own object, `item.json.gz`, one more PUT per item).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub record: Value,
    /// The part of a split scan this outcome is of (`raw/<item>/part-<k>.json`): `pages` are
    /// its own, stored from the part's first page on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<ScanPart>,
}

/// One of an item's other scans, pulled: its pages are `first_page .. first_page + pages`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanPull {
    pub scan_id: String,
    pub engines: Vec<Engine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub first_page: u32,
    pub pages: u32,
    pub completeness: Completeness,
    /// Why the scan was not pulled (outside the look-back window): its engines deliver nothing
    /// this run and their findings are carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_taken: Option<String>,
}

impl CollectOutcome {
    /// The checksum the results page `number` (of the item, or of this part) must carry: `None`
    /// where the outcome lists none (written before checksums were).
    pub fn page_checksum(&self, number: u32) -> Option<Result<u32, String>> {
        listed_checksum(&self.page_checksums, number, "pageChecksums")
    }

    /// As [`Self::page_checksum`], of the pages of severities before triage.
    pub fn original_checksum(&self, number: u32) -> Option<Result<u32, String>> {
        listed_checksum(&self.original_checksums, number, "originalChecksums")
    }

    /// Records the vendor reported, over every scan pulled.
    pub fn records_expected(&self) -> u64 {
        self.completeness.expected
            + self
                .other_pulls
                .iter()
                .map(|p| p.completeness.expected)
                .sum::<u64>()
    }

    /// Distinct records received, over every scan pulled.
    pub fn records_fetched(&self) -> u64 {
        self.completeness.unique
            + self
                .other_pulls
                .iter()
                .map(|p| p.completeness.unique)
                .sum::<u64>()
    }
}

fn listed_checksum(listed: &[u32], number: u32, field: &str) -> Option<Result<u32, String>> {
    if listed.is_empty() {
        return None;
    }
    Some(listed.get(number as usize).copied().ok_or_else(|| {
        format!(
            "{field} lists {} pages, not page {number}: the outcome does not describe its pages",
            listed.len()
        )
    }))
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

/// Rejected records, and collisions, an item's manifest line lists; where there were more, every
/// one is in the item's `rejected.ndjson.gz` (`collisions.ndjson.gz`). A map that fits no record
/// rejects them all: listed whole, a project of 300,000 results made a manifest of 144 MB and held
/// 440 MB at its peak; a tenant whose ids all repeat renames every record likewise.
pub const LISTED_PER_ITEM: usize = 100;

/// `etm/<item>/transform.json`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransformRecord {
    pub item: String,
    pub figures: Figures,
    /// The figures of each engine the item delivered (they add up to `figures`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_engine: BTreeMap<Engine, Figures>,
    /// The first [`LISTED_PER_ITEM`] rejected records; all of them in `rejected_object` where
    /// there were more.
    pub rejected: Vec<Rejected>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_object: Option<ObjectEntry>,
    /// The first [`LISTED_PER_ITEM`] collisions; all of them in `collisions_object` where there
    /// were more.
    pub collisions: Vec<Collision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collisions_object: Option<ObjectEntry>,
    pub objects: Vec<ObjectEntry>,
    /// Why the item could not be transformed, when no new attempt would mend it (a raw page that
    /// cannot be read, for one): nothing of the item is committed and its findings are carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Written by finalize, not by a transform: finalize found no record and gave up waiting
    /// (the item "transform did not finish"). An attempt still running then commits nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub given_up: bool,
    /// Open findings of engines not pulled this run (no scan, one outside the look-back window, an
    /// engine taken off the connection): their part of the ledger went forward as it was.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub carried: u64,
}

impl TransformRecord {
    /// Finalize's record for an item it gave up waiting for.
    pub fn given_up(item: &str) -> Self {
        Self {
            item: item.to_string(),
            given_up: true,
            ..Self::default()
        }
    }
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
    /// The scan's page in Checkmarx One.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_url: Option<String>,
    pub records_expected: u64,
    pub records_fetched: u64,
    pub figures: Figures,
    /// The figures of each engine the item delivered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_engine: BTreeMap<Engine, Figures>,
    #[serde(default)]
    pub carried_forward: u64,
    #[serde(default)]
    pub traffic: ItemTraffic,
    pub objects: Vec<ObjectEntry>,
    /// The first [`LISTED_PER_ITEM`] rejected records (their count is `figures.rejected`).
    pub rejected: Vec<Rejected>,
    /// Every rejected record, one JSON line each, where there were more than are listed: not an
    /// ETM batch, so not among `objects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_object: Option<ObjectEntry>,
    /// The first [`LISTED_PER_ITEM`] collisions (their count is `figures.collisions`).
    pub collisions: Vec<Collision>,
    /// Every collision, one JSON line each, where there were more than are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collisions_object: Option<ObjectEntry>,
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
    /// The engines the connection delivers, each with its totals over the run's items.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub totals_by_engine: BTreeMap<Engine, Figures>,
    /// Open findings carried forward unchanged: of incomplete or failed items, of engines a
    /// reconciled item did not pull, of items the filters left out or a listing missed, and of
    /// deleted items the policy did not close.
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
    /// True when the connection's policy closed its findings (closure records in `objects`). A
    /// branch of a project still listed closes only the findings of the engines the connection
    /// delivers; another engine's are `carried`.
    pub closed: bool,
    /// Of `open_findings`, those left open although `closed`: of engines the connection no longer
    /// delivers, on a branch of a project still listed.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub carried: u64,
    pub objects: Vec<ObjectEntry>,
}

impl DeletedItem {
    /// Its findings still open after this run: all of them unless the policy closed them.
    pub fn left_open(&self) -> u64 {
        match self.closed {
            true => self.carried,
            false => self.open_findings,
        }
    }
}

pub(crate) fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
