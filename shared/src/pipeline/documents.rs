//! The documents the steps store and read back: the work list's items, each item's collect
//! outcome and transform record, and the run's manifest. Where each lives is in [`crate::layout`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ConnectorKind;
use crate::cxone::Completeness;
use crate::layout::RunRef;
use crate::mapping::{Collision, Figures, Rejected};

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
    /// Vendor ids more than one record carries: the transform tells those records apart by
    /// their identity fields (docs/etm-batch.md, Identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeated_ids: Vec<String>,
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
    /// The scan's page in Checkmarx One.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_url: Option<String>,
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
