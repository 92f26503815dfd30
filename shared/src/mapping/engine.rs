//! One item (a project or a DAST environment) at a time: raw pages in, ETM batch lines out.
//! Every record ends as exactly one of: a finding in a line, a rejected record (with the reason
//! and the vendor id), or a skipped one (counted by reason).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::batch::{LineSink, LineWriter, TransformContext, line_envelope};
use super::catalog::{Computed, ValueType};
use super::extract::{OnRecord, Shape, is_rounded_whole, text_of, walk_page};
use super::identity::{self, RepeatedIds};
use super::ledger::{Ledger, LedgerEntry, LedgerFull, Lifecycle};
use super::map::{CompiledEntry, Layout, LayoutField, Plan};
use super::original::OriginalSeverities;
use super::scoring::CompiledScoring;
use super::triage::TriageMap;
use crate::cxone::links::{ItemLinks, ScanLinks};
use crate::cxone::{ResultStatus, Severity, TriageState};
use crate::fingerprint::{CompactFingerprintSet, Fingerprints, TextSet};
use crate::{Engine, is_known_record_type, is_record_type_among};

/// SAST asset types to emit; both by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetTypes {
    pub generic_application: bool,
    pub code_repository: bool,
}

impl Default for AssetTypes {
    fn default() -> Self {
        Self {
            generic_application: true,
            code_repository: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TransformOptions {
    pub asset_types: AssetTypes,
    /// What each triage state means for the finding's ETM status.
    pub triage: TriageMap,
    /// Finding severities to emit; all when empty.
    pub severities: Vec<Severity>,
    /// Finding triage states to emit; all when empty.
    pub triage_states: Vec<TriageState>,
    /// A page's findings are split into lines of at most this many.
    pub max_findings_per_line: usize,
}

impl Default for TransformOptions {
    fn default() -> Self {
        Self {
            asset_types: AssetTypes::default(),
            triage: TriageMap::default(),
            severities: Vec::new(),
            triage_states: Vec::new(),
            max_findings_per_line: 1_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// The vendor's id of the record, when it has a readable one.
    pub vendor_id: Option<String>,
    pub page: u32,
    pub index: u32,
    pub reason: String,
    /// SAST: where the record's flaw is (`file:line` of its sink), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// SAST: the record in Checkmarx One's result viewer, when the scan and its hash are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collision {
    /// The id several records of the item share.
    pub external_finding_id: String,
    /// The id this record carries instead (the shared id and its identity suffix).
    pub renamed_to: String,
}

/// What happened to an item's records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub records_in: u64,
    pub findings_out: u64,
    /// Findings out whose vendor status is FIXED (sent FIXED by the shipped maps, whatever their
    /// triage state).
    pub fixed: u64,
    pub rejected: u64,
    /// Records of other engines (`/api/results` mixes them), by type.
    pub skipped_by_type: BTreeMap<String, u64>,
    /// Records of an asset the asset-type filter removed.
    pub skipped_by_filter: u64,
    /// Records alike in id and every identity field to one already written: the same finding
    /// sent twice, skipped.
    #[serde(default)]
    pub duplicates: u64,
    /// Records of an engine whose findings the item takes from another scan (that engine's
    /// latest): a scan's pull carries every engine it ran, and these are the older copies.
    #[serde(default)]
    pub superseded: u64,
    pub collisions: u64,
    /// Findings carrying a triage state Checkmarx One does not ship (custom states).
    pub unknown_triage_states: u64,
    /// Findings with a value no value map knew, or that did not fit its target.
    pub flagged_values: u64,
    /// Findings whose ETM status a triage state set (e.g. NOT_EXPLOITABLE → PROTECTED).
    #[serde(default)]
    pub settled_by_triage: u64,
    /// Open findings absent from a scan of a different branch than the last run's: held open
    /// for this run instead of closed.
    #[serde(default)]
    pub held_on_branch_change: u64,
    /// Open findings absent from a pull in which a record was rejected: any of them might be the
    /// rejected record, so they are held open for this run instead of closed.
    #[serde(default)]
    pub held_for_rejected_records: u64,
    /// Open findings absent from a pull in which a finding came twice under the id it was sent
    /// with (its list moved while it was paged, so a record may have gone by unseen): held open
    /// for this run instead of closed.
    #[serde(default)]
    pub held_for_repeated_records: u64,
    /// Open findings whose id, sent by one record before, now comes with several records told
    /// apart (each written as `<id>#<suffix>`): which of them the finding is cannot be told, so it
    /// is held open instead of closed, until its id stands alone again.
    #[serde(default)]
    pub held_as_id_now_repeats: u64,
    /// Open findings of an engine that had no record of its own in a pull where records of a
    /// type no engine reads came: the vendor may have renamed the engine's record type, so its
    /// findings may all be there under the new name. Held open instead of closed.
    #[serde(default)]
    pub held_for_unknown_record_types: u64,
    /// Open DAST findings absent from the scan of an environment whose last login failed (its
    /// `lastAuthSuccess` false): the scan may have seen only what a visitor without the login
    /// sees, so what it lacks may be behind the login. Held open instead of closed.
    #[serde(default)]
    pub held_for_failed_login: u64,
    /// DAST environments whose record says their last login failed (1 on such an item's line):
    /// what their scans lack may be behind the login, so none of it closes, from the first run.
    #[serde(default)]
    pub failed_logins: u64,
    /// Rows of the severities-before-triage pull that could not be read (no text hash or
    /// severity): their findings are ingested without `originalVendorSeverity`.
    #[serde(default)]
    pub unreadable_original_severities: u64,
    /// SAST findings whose severity triage changed (`originalVendorSeverity` differs).
    #[serde(default)]
    pub severity_changed_by_triage: u64,
    /// Findings out by vendor severity, most severe first (`(none)` for findings without one).
    pub by_severity: BTreeMap<Severity, u64>,
    /// Findings out (closure records included) by lifecycle status, when reconciled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lifecycle: BTreeMap<Lifecycle, u64>,
    /// Of the lifecycle's FIXED, findings sent FIXED that ETM holds closed already (the vendor
    /// lists a fixed finding on every scan) or never had open (first seen fixed): not fixed
    /// since the last run.
    #[serde(default)]
    pub fixed_before: u64,
    pub lines: u64,
}

impl Figures {
    pub fn skipped(&self) -> u64 {
        self.skipped_by_type.values().sum::<u64>()
            + self.skipped_by_filter
            + self.duplicates
            + self.superseded
    }

    /// The open findings a complete pull did not see, held open instead of closed, whatever why.
    pub fn held_open(&self) -> u64 {
        self.held_for_rejected_records
            + self.held_for_repeated_records
            + self.held_on_branch_change
            + self.held_as_id_now_repeats
            + self.held_for_unknown_record_types
            + self.held_for_failed_login
    }

    /// Findings sent open (NEW, ACTIVE or REOPENED; PROTECTED is ACTIVE): not FIXED, whatever
    /// said so (the scan, a triage state, a custom map's value), nor closed.
    pub fn sent_open(&self) -> u64 {
        self.lifecycle
            .iter()
            .filter(|(lifecycle, _)| **lifecycle != Lifecycle::Fixed)
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts closure records: their lines, and their findings as FIXED.
    pub fn count_closures(&mut self, closed: super::ledger::Closed) {
        self.lines += closed.lines;
        if closed.findings > 0 {
            *self.lifecycle.entry(Lifecycle::Fixed).or_default() += closed.findings;
        }
    }

    pub fn add(&mut self, other: &Figures) {
        self.records_in += other.records_in;
        self.findings_out += other.findings_out;
        self.fixed += other.fixed;
        self.rejected += other.rejected;
        for (k, v) in &other.skipped_by_type {
            *self.skipped_by_type.entry(k.clone()).or_default() += v;
        }
        self.skipped_by_filter += other.skipped_by_filter;
        self.duplicates += other.duplicates;
        self.superseded += other.superseded;
        self.collisions += other.collisions;
        self.unknown_triage_states += other.unknown_triage_states;
        self.flagged_values += other.flagged_values;
        self.settled_by_triage += other.settled_by_triage;
        self.held_on_branch_change += other.held_on_branch_change;
        self.held_for_rejected_records += other.held_for_rejected_records;
        self.held_for_repeated_records += other.held_for_repeated_records;
        self.held_as_id_now_repeats += other.held_as_id_now_repeats;
        self.held_for_unknown_record_types += other.held_for_unknown_record_types;
        self.held_for_failed_login += other.held_for_failed_login;
        self.fixed_before += other.fixed_before;
        self.failed_logins += other.failed_logins;
        self.unreadable_original_severities += other.unreadable_original_severities;
        self.severity_changed_by_triage += other.severity_changed_by_triage;
        for (k, v) in &other.by_severity {
            *self.by_severity.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.lifecycle {
            *self.lifecycle.entry(*k).or_default() += v;
        }
        self.lines += other.lines;
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransformError {
    #[error("item record: {0}")]
    Item(String),
    #[error("page {page}: {problem}")]
    Page { page: u32, problem: String },
    /// Ids collect counted once each that more than one record carried: their findings were
    /// written twice. Only a disagreement between collect's count and the map could cause it.
    #[error(
        "{} finding id(s) arrived on more than one record though collect counted each once (the first: {:?}): the item is not committed, and its findings are carried; report this with the connection's transform map",
        .0.len(),
        .0.first().map(String::as_str).unwrap_or_default()
    )]
    UncountedRepeats(Vec<String>),
    /// Writing the closures of absent findings failed partway: they are marked closed in the
    /// next ledger, some of their lines undelivered.
    #[error(
        "closing the findings absent from this pull failed partway: the item is not committed, and its next attempt starts over"
    )]
    ClosingBroken,
    /// The map moves an engine's findings to another `externalAssetId`, but its pull may not
    /// have shown them all (a record rejected or sent twice): moving would close the unseen on
    /// the old asset, where ETM holds them.
    #[error(
        "the transform map gives {engine}'s findings another externalAssetId ({now}; ETM holds them open on {was}), but {why}: a finding open on {was} may have gone unseen, and moving it would close it there without its being seen fixed. The item is not committed and its findings are carried; they move in the first run whose pull shows every record"
    )]
    MoveWaits {
        engine: Engine,
        was: String,
        now: String,
        why: String,
    },
}

/// The outcome of one item.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemOutcome {
    pub figures: Figures,
    pub rejected: Vec<Rejected>,
    pub collisions: Vec<Collision>,
    /// The asset's next ledger, when the item was reconciled.
    #[serde(skip)]
    pub ledger: Option<Ledger>,
}

pub struct ItemTransformer<'p> {
    rules: Rules<'p>,
    /// `"externalAssetId":…,"asset":{…},` — the mapped asset, the same on every line.
    asset: Vec<u8>,
    vendor_item_id: String,
    state: State,
}

/// What every record of an item is mapped with.
struct Rules<'p> {
    plan: &'p Plan,
    scoring: &'p CompiledScoring,
    options: TransformOptions,
    /// Whether the item has an asset to emit (the asset-type filter may leave none).
    emit: bool,
    /// Links back to the scan and its results in Checkmarx One, when the scan is known.
    links: Option<ItemLinks>,
    /// Vendor ids more than one record of the item carries (see `identity`).
    repeated_ids: Arc<RepeatedIds>,
    /// Whether collect counted the ids ([`ItemTransformer::expect_repeats`]): then no id read as
    /// the record carries it, outside `repeated_ids`, can come twice, and those need not be
    /// remembered.
    ids_counted: bool,
    /// Record types the item's other engines take from this scan: theirs to count.
    taken_by_others: Vec<&'static str>,
    /// Record types of engines the item takes from another scan: counted as superseded.
    taken_elsewhere: Vec<&'static str>,
    /// Whether this transformer counts the records no engine of the item takes (skipped by
    /// type, or not objects): one of an item's transformers does.
    counts_untaken: bool,
    /// The ids the previous ledger holds for the asset's other engines
    /// ([`ItemTransformer::beside_ids_of_other_engines`]).
    ids_of_other_engines: Arc<TextSet>,
}

impl Rules<'_> {
    /// The value of a source the connector computes, for one record.
    fn computed(&self, computed: Computed, slots: &[Option<Value>]) -> Option<Value> {
        match computed {
            Computed::ResultLink => {
                let hash = slots[self.plan.implicit.result_hash?].as_ref()?.as_str()?;
                self.links.as_ref()?.sast_result(hash).map(Value::String)
            }
            Computed::ScanLink => self.links.as_ref()?.scan().map(Value::from),
            Computed::PackageEcosystem => {
                let identifier = slots[self.plan.implicit.package?].as_ref()?.as_str()?;
                let (ecosystem, _) = identifier.split_once('-')?;
                (!ecosystem.is_empty()).then(|| Value::from(ecosystem))
            }
        }
    }
}

/// The ledger being built while an item is reconciled: the previous ledger's findings, each
/// entry rewritten in place when its finding is seen, and the findings new in this pull appended
/// after them. A run against the ledger of a million findings holds a million entries, not two.
struct Reconciling {
    next: Ledger,
    /// By stored position, the previous ledger's findings whose records this pull holds
    /// (written, or left out by the filters): the rest are absent.
    seen: Vec<bool>,
    run_id: String,
    branch_switched: bool,
    engine: Engine,
    absent: Absent,
}

/// What becomes of the previous ledger's findings that are absent from this pull.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Absent {
    /// Not decided: pages may still come.
    Unsettled,
    /// This many are to be closed ([`ItemTransformer::settle_absent`]).
    Close(u64),
    /// Closed, or none were to be.
    Done,
    /// Closing them failed partway: some are marked closed whose lines were not delivered.
    Broken,
}

#[derive(Default)]
struct State {
    outcome: ItemOutcome,
    reconciling: Option<Reconciling>,
    /// The fingerprints of the ids written that the previous ledger does not hold, but for ids
    /// collect counted once: a second record with one is a duplicate ([`State::claim`]).
    ids: Fingerprints,
    seen_ids: CompactFingerprintSet,
    /// The lines of the findings written since they were last handed over.
    lines: LineWriter,
    original: OriginalSeverities,
    /// Why the pull's absent findings are held open: a record this transformer met, or one a
    /// transformer beside it on the same pull met ([`ItemTransformer::hold_pull`]).
    pull_hold: Option<PullHold>,
    /// Records of this engine's own types read (kept or left out by the filters).
    own_records: u64,
    /// Whether records of a type no engine reads came in this pull ([`ItemTransformer::beside_unknown_record_types`]).
    unknown_record_types_in_pull: bool,
    /// Whether the scan's login failed ([`ItemTransformer::scan_login_failed`]).
    login_failed: bool,
}

/// What in a pull may stand for findings it did not show, so that its absent findings may not be
/// gone ([`ItemTransformer::unseen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unseen {
    /// A record rejected: of this engine, or with no `type` (any engine's).
    RejectedRecord,
    /// A finding sent twice with other bytes ([`PullHold::RepeatedRecord`]).
    RepeatedRecord,
    /// No record of this engine, beside records of a type Checkmarx One is not known to send:
    /// the engine's type may have been renamed.
    UnknownRecordTypes,
    /// A DAST scan whose login failed: what it lacks may be behind the login.
    FailedLogin,
}

/// A record that holds every engine's absent findings of its pull open, whichever engine's
/// transformer met it; the most pressing last (a pull holds for the greatest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PullHold {
    /// A finding alike, in the id it was sent with and every identity field, to one written
    /// before: the same finding sent twice with other bytes (collect counts distinct bytes), as
    /// when the list moved while it was paged (a finding edited and moved to a later page). Then
    /// another record may have moved past the pages, unseen.
    RepeatedRecord,
    /// A record rejected that no engine can be told for (not an object, no `type`): any engine's
    /// absent finding may be it. Counted as rejected by the pull's first transformer.
    UnattributedRecord,
}

/// A page of `/api/sast-results` as the original-severity pull asks for it.
#[derive(Deserialize)]
struct OriginalPage {
    /// Rows as they came: one malformed row must not cost the page (see `add_original_severities`).
    results: Vec<Value>,
}

/// Coerces a value to the target type; `Err` names what did not fit.
fn coerce(value: Value, ty: ValueType) -> Result<Value, String> {
    match ty {
        // A list of texts written as one text (DAST `owasp`); a lone text stays as it is.
        ValueType::Joined => match value {
            Value::Array(items) => {
                let texts = items
                    .iter()
                    .map(scalar_text)
                    .collect::<Result<Vec<_>, _>>()?;
                match texts.into_iter().collect::<Option<Vec<_>>>() {
                    Some(texts) => Ok(Value::String(texts.join(", "))),
                    None => coerce(Value::Array(items), ValueType::Text),
                }
            }
            other => coerce(other, ValueType::Text),
        },
        // A vendor status a value map does not know passes through unmapped: only one ETM takes
        // is written (the rest flagged and left out).
        ValueType::Status => match coerce(value, ValueType::Text)? {
            Value::String(status)
                if super::map::FINDING_STATUSES.contains(&status.to_ascii_uppercase().as_str()) =>
            {
                Ok(Value::String(status.to_ascii_uppercase()))
            }
            other => Err(format!(
                "{other} is not a finding status ETM takes (one of {})",
                super::map::FINDING_STATUSES.join(", ")
            )),
        },
        ValueType::Text => match value {
            Value::String(_) => Ok(value),
            other => scalar_text(&other)?
                .map(Value::String)
                .ok_or_else(|| format!("{} where a text belongs", kind_of(&other))),
        },
        // NVD's `NVD-CWE-Other` and `NVD-CWE-noinfo` (SCA) name no weakness.
        ValueType::Cwe if value.as_str().is_some_and(|s| s.starts_with("NVD-CWE-")) => Err(
            format!("{value} names no specific CWE; the finding carries none"),
        ),
        ValueType::Cwe => match coerce(value, ValueType::Integer)? {
            Value::Number(n) if n.as_i64().is_some_and(|n| n >= 1) => Ok(Value::Number(n)),
            other => Err(format!(
                "CWE {other} means no CWE; the finding carries none"
            )),
        },
        ValueType::Integer | ValueType::Severity => {
            let number = match &value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => {
                    let digits = s
                        .trim()
                        .trim_start_matches("CWE-")
                        .trim_start_matches("cwe-");
                    digits.parse::<i64>().ok()
                }
                _ => None,
            };
            match number {
                Some(n) if ty == ValueType::Severity && !(1..=5).contains(&n) => {
                    Err(format!("severity {n} is outside 1–5"))
                }
                Some(n) => Ok(Value::from(n)),
                None => Err(format!("{} is not a whole number", short(&value))),
            }
        }
        ValueType::DateTime => match &value {
            Value::String(s)
                if time::OffsetDateTime::parse(
                    s,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_ok() =>
            {
                Ok(value)
            }
            other => Err(format!("{} is not an RFC 3339 time stamp", short(other))),
        },
        ValueType::Tags => match value {
            Value::Object(tags) => tags
                .iter()
                .map(|(key, value)| {
                    Ok(Value::String(
                        match scalar_text(value)?.filter(|v| !v.is_empty()) {
                            Some(value) => format!("{key}:{value}"),
                            None => key.clone(),
                        },
                    ))
                })
                .collect::<Result<_, String>>()
                .map(Value::Array),
            Value::Array(items) => texts_of(&items, &["name"]).map(Value::Array),
            Value::String(s) => Ok(Value::Array(vec![Value::String(s)])),
            other => Err(format!("{} where tags belong", kind_of(&other))),
        },
        ValueType::Attribute => match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(value),
            Value::Array(_) => coerce(value, ValueType::List),
            other => Err(format!(
                "{} where a custom attribute belongs (a text, number, boolean or list)",
                kind_of(&other)
            )),
        },
        ValueType::Number => match &value {
            Value::Number(_) => Ok(value),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{} is not a number", short(&value))),
            other => Err(format!("{} where a number belongs", kind_of(other))),
        },
        ValueType::Boolean => match &value {
            Value::Bool(_) => Ok(value),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            other => Err(format!("{} is not true or false", short(other))),
        },
        ValueType::CvssVector => match value {
            Value::String(_) => Ok(value),
            Value::Object(metrics) => cvss_vector(&metrics)
                .map(Value::String)
                .ok_or_else(|| "a CVSS object without metrics".to_string()),
            other => Err(format!("{} where a CVSS vector belongs", kind_of(&other))),
        },
        ValueType::DependencyPaths => match value {
            Value::Array(paths) => {
                let mut joined = Vec::new();
                for steps in paths.iter().filter_map(Value::as_array) {
                    let mut names = Vec::new();
                    for step in steps {
                        names.extend(field_text(step, &["name"])?);
                    }
                    if !names.is_empty() {
                        joined.push(Value::String(names.join(" > ")));
                    }
                }
                Ok(Value::Array(joined))
            }
            other => Err(format!("{} where dependency paths belong", kind_of(&other))),
        },
        ValueType::Names => match value {
            Value::Array(items) => {
                texts_of(&items, &["fullName", "methodName", "name"]).map(Value::Array)
            }
            Value::String(s) => Ok(Value::Array(vec![Value::String(s)])),
            other => Err(format!("{} where a list of names belongs", kind_of(&other))),
        },
        ValueType::List => match value {
            Value::Array(items) => texts_of(&items, &[]).map(Value::Array),
            Value::String(s) => Ok(Value::Array(vec![Value::String(s)])),
            other => Err(format!("{} where a list belongs", kind_of(&other))),
        },
    }
}

/// A text, number or boolean as text, `None` for anything else; `Err` for a whole number past what
/// a 64-bit float holds exactly: a JSON reader holds it rounded, and written as text two numbers
/// that differ past its precision (two ids, two tags) would read as one.
fn scalar_text(value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Number(n) if is_rounded_whole(n) => Err(format!(
            "{n} is a whole number past what a 64-bit number holds exactly: its digits cannot all be kept"
        )),
        other => Ok(text_of(other)),
    }
}

/// The text of the first of `keys` in `item` that holds one (see [`scalar_text`]).
fn field_text(item: &Value, keys: &[&str]) -> Result<Option<String>, String> {
    for key in keys {
        if let Some(text) = item.get(key).map(scalar_text).transpose()?.flatten() {
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// Each item of a list as text: the item's own, else its first of `keys` that holds one; an item
/// with neither is left out, as no text.
fn texts_of(items: &[Value], keys: &[&str]) -> Result<Vec<Value>, String> {
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        let text = match scalar_text(item)? {
            Some(text) => Some(text),
            None => field_text(item, keys)?,
        };
        texts.extend(text.map(Value::String));
    }
    Ok(texts)
}

/// A CVSS vector from the metrics of Checkmarx One's CVSS object (`attackVector: NETWORK` →
/// `AV:N`, each value's first letter as the specification abbreviates it), in the
/// specification's order; `None` when it names none.
fn cvss_vector(metrics: &Map<String, Value>) -> Option<String> {
    const METRICS: [(&str, &str); 11] = [
        ("attackVector", "AV"),
        ("attackComplexity", "AC"),
        ("privilegesRequired", "PR"),
        ("userInteraction", "UI"),
        ("scope", "S"),
        ("confidentiality", "C"),
        ("integrity", "I"),
        ("integrityImpact", "I"),
        ("availability", "A"),
        ("accessVector", "AV"),
        ("authentication", "Au"),
    ];
    let mut parts: Vec<String> = Vec::new();
    for (key, short) in METRICS {
        let Some(value) = metrics.get(key).and_then(Value::as_str) else {
            continue;
        };
        if parts.iter().any(|p| p.starts_with(&format!("{short}:"))) {
            continue;
        }
        let letter = value.chars().next()?.to_ascii_uppercase();
        parts.push(format!("{short}:{letter}"));
    }
    // No `CVSS:3.x/` prefix: the object gives the major version only.
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// The value of one entry for a record: mapped, defaulted, coerced. `Err` only for a required
/// target left without a value; other misfits are flagged in `flags` and left out.
fn entry_value(
    entry: &CompiledEntry,
    raw: Option<&Value>,
    flags: &mut Vec<String>,
) -> Result<Option<Value>, String> {
    // Null and blank texts (a project's `repoUrl: ""`) are no value; nor is an empty list where
    // one text is written from a list, nor an empty CVSS object (`"cvss": {}` names no metric).
    let ty = entry.target.ty;
    let raw = raw.filter(|v| match v {
        Value::Null => false,
        Value::String(t) => !t.trim().is_empty(),
        Value::Array(items) => !(ty == ValueType::Joined && items.is_empty()),
        Value::Object(fields) => !(ty == ValueType::CvssVector && fields.is_empty()),
        Value::Bool(_) | Value::Number(_) => true,
    });
    let mapped = match (&entry.value_map, raw) {
        (Some(map), Some(v)) => {
            // A number a reader holds rounded is no word of the map: flagged, left out.
            let key = match scalar_text(v) {
                Ok(key) => key.unwrap_or_default(),
                Err(problem) if entry.required => {
                    return Err(format!("{}: {problem}", entry.label));
                }
                Err(problem) => {
                    flags.push(format!("{}: {problem}", entry.segments.join(".")));
                    return Ok(None);
                }
            };
            // As the vendor's words are read: ASCII case and surrounding blanks aside.
            let word = key.trim();
            let hit = map.get(word).or_else(|| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(word))
                    .map(|(_, v)| v)
            });
            match (hit, &entry.default) {
                (Some(to), _) => Some(to.clone()),
                (None, Some(default)) => {
                    flags.push(format!("{}={key}", entry.segments.join(".")));
                    Some(default.clone())
                }
                (None, None) => {
                    // A status is flagged once, by its check (see `coerce`).
                    if entry.target.ty != ValueType::Status {
                        flags.push(format!("{}={key}", entry.segments.join(".")));
                    }
                    Some(v.clone())
                }
            }
        }
        (None, Some(v)) => Some(v.clone()),
        (_, None) => entry.default.clone(),
    };
    let coerced = match mapped {
        None => None,
        Some(v) => match coerce(v, entry.target.ty) {
            Ok(v) => Some(v),
            Err(problem) if entry.required => return Err(format!("{}: {problem}", entry.label)),
            Err(problem) => {
                flags.push(format!("{}: {problem}", entry.segments.join(".")));
                None
            }
        },
    };
    match coerced {
        None if entry.required => Err(format!("{}: required value is missing", entry.label)),
        other => Ok(other),
    }
}

fn set_path<S: AsRef<str>>(root: &mut Map<String, Value>, segments: &[S], value: Value) {
    let (last, parents) = segments.split_last().expect("target paths are not empty");
    let mut node = root;
    for segment in parents {
        let next = node
            .entry(segment.as_ref())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        node = next.as_object_mut().expect("made an object above");
    }
    node.insert(last.as_ref().to_string(), value);
}

/// Writes the fields of `layout` that have values, comma-separated, without braces.
fn write_fields(
    layout: &[LayoutField],
    values: &[Option<Value>],
    out: &mut Vec<u8>,
    first: &mut bool,
) {
    for LayoutField {
        written_name, node, ..
    } in layout
    {
        if !has_value(node, values) {
            continue;
        }
        if !*first {
            out.push(b',');
        }
        *first = false;
        out.extend_from_slice(written_name);
        match node {
            Layout::Leaf(index) => {
                serde_json::to_writer(&mut *out, values[*index].as_ref().expect("has_value"))
                    .expect("Vec write")
            }
            Layout::Object(children) => {
                out.push(b'{');
                let mut inner_first = true;
                write_fields(children, values, out, &mut inner_first);
                out.push(b'}');
            }
        }
    }
}

fn has_value(node: &Layout, values: &[Option<Value>]) -> bool {
    match node {
        Layout::Leaf(index) => values[*index].is_some(),
        Layout::Object(children) => children.iter().any(|f| has_value(&f.node, values)),
    }
}

/// Reads raw pages into the fields one engine's map takes. It holds nothing of an item, so it
/// works on its own thread beside the [`ItemTransformer`] it came from.
#[derive(Clone, Copy)]
pub struct PageReader<'p> {
    plan: &'p Plan,
}

/// One raw page's records, each read into the map's fields: what [`ItemTransformer::push_read`]
/// maps. A record of another engine's type keeps only its type: that is all the transformer
/// reads of it (it is skipped by type), so a page read for each of four engines holds each
/// record's fields once, not four times.
pub struct ReadPage {
    number: u32,
    records: Vec<ReadRecord>,
    /// The fields of the records read in full, the map's `finding_slots` of them per record, one
    /// record after another.
    slots: Vec<Option<Value>>,
    /// One row per record type of other engines on the page: every field empty but the type.
    others: Vec<Option<Value>>,
}

/// A record of a [`ReadPage`]: its index on the page, its shape, and where its fields are.
struct ReadRecord {
    index: u32,
    shape: Shape,
    row: Row,
}

enum Row {
    /// Read in full: the record's row in `slots`.
    Own(u32),
    /// Another engine's: the row of its type in `others`.
    Other(u32),
}

impl ReadPage {
    /// The fields of `record`, as the transformer reads them.
    fn fields(&self, record: &ReadRecord, width: usize) -> &[Option<Value>] {
        let (rows, row) = match record.row {
            Row::Own(row) => (&self.slots, row as usize),
            Row::Other(row) => (&self.others, row as usize),
        };
        &rows[row * width..(row + 1) * width]
    }
}

impl PageReader<'_> {
    /// Reads page `number` (the JSON object the vendor sent, records under `results`). A page
    /// that is not such an object fails; a record that is not what the map expects is read as
    /// far as it goes, for the transformer to reject.
    pub fn read(&self, page: &[u8], number: u32) -> Result<ReadPage, TransformError> {
        let plan = self.plan;
        let width = plan.finding_slots;
        let mut read = ReadPage {
            number,
            records: Vec::new(),
            slots: Vec::new(),
            others: Vec::new(),
        };
        let mut own_rows = 0u32;
        read_records(plan, page, number, &mut |index, shape, slots| {
            let other_type = plan
                .implicit
                .kind
                .filter(|_| shape == Shape::Object)
                .and_then(|kind| {
                    let value = slots[kind].as_ref();
                    let ours = value
                        .and_then(Value::as_str)
                        .is_some_and(|k| is_record_type_among(plan.kind.record_types(), k));
                    (!ours).then(|| slots[kind].take())
                });
            let row = match other_type {
                Some(kind_value) => {
                    let kind_slot = plan.implicit.kind.expect("the type was read");
                    let known = (0..read.others.len() / width)
                        .find(|&row| read.others[row * width + kind_slot] == kind_value);
                    let row = known.unwrap_or_else(|| {
                        let row = read.others.len() / width;
                        read.others.resize(read.others.len() + width, None);
                        read.others[row * width + kind_slot] = kind_value;
                        row
                    });
                    Row::Other(row as u32)
                }
                None => {
                    read.slots.extend(slots.iter_mut().map(Option::take));
                    own_rows += 1;
                    Row::Own(own_rows - 1)
                }
            };
            read.records.push(ReadRecord { index, shape, row });
        })?;
        Ok(read)
    }
}

/// Walks page `number`, handing each record's slots to `on_record` as it is read.
fn read_records(
    plan: &Plan,
    page: &[u8],
    number: u32,
    on_record: &mut OnRecord,
) -> Result<(), TransformError> {
    let mut slots = vec![None; plan.finding_slots];
    match walk_page(page, "results", &plan.finding_tree, &mut slots, on_record) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransformError::Page {
            page: number,
            problem: "no `results` list".into(),
        }),
        Err(problem) => Err(TransformError::Page {
            page: number,
            problem: format!("not a page object ({problem})"),
        }),
    }
}

impl<'p> ItemTransformer<'p> {
    /// Starts an item from its project (SAST) or environment (DAST) record.
    pub fn new(
        plan: &'p Plan,
        scoring: &'p CompiledScoring,
        context: &TransformContext,
        options: TransformOptions,
        item_record: &[u8],
    ) -> Result<Self, TransformError> {
        let item: Value = serde_json::from_slice(item_record)
            .map_err(|e| TransformError::Item(format!("not JSON: {e}")))?;
        let id_field = if plan.kind.on_projects() {
            "id"
        } else {
            "environmentId"
        };
        let item_id = item
            .get(id_field)
            .map(scalar_text)
            .transpose()
            .map_err(|problem| TransformError::Item(format!("its `{id_field}`: {problem}")))?
            .flatten()
            .ok_or_else(|| TransformError::Item(format!("the record has no `{id_field}`")))?;
        let mut asset = Map::new();
        let mut flags = Vec::new();
        for entry in &plan.asset_entries {
            if let Some(v) = entry_value(entry, item.pointer(&entry.pointer), &mut flags)
                .map_err(TransformError::Item)?
            {
                set_path(&mut asset, &entry.segments, v);
            }
        }
        let emit = match plan.kind.on_projects() {
            true => {
                let repo = item
                    .get("repoUrl")
                    .and_then(Value::as_str)
                    .filter(|u| !u.trim().is_empty());
                let mut types = Vec::new();
                if options.asset_types.generic_application {
                    types.push("GENERIC_APPLICATION");
                } else if let Some(Value::Object(detail)) = asset
                    .get_mut("asset")
                    .and_then(|a| a.get_mut("assetDetail"))
                {
                    detail.remove("genericApplicationAssetClass");
                }
                if let (true, Some(url)) = (options.asset_types.code_repository, repo) {
                    types.push("CODE_REPOSITORY");
                    let mut class = Map::new();
                    class.insert("url".into(), Value::from(url));
                    if let Some(branch) = item
                        .get("mainBranch")
                        .and_then(Value::as_str)
                        .filter(|b| !b.is_empty())
                    {
                        class.insert("mainBranch".into(), Value::from(branch));
                    }
                    set_path(
                        &mut asset,
                        &["asset", "assetDetail", "codeRepositoryAssetClass"],
                        Value::Object(class),
                    );
                }
                set_path(
                    &mut asset,
                    &["asset", "assetTypes"],
                    Value::from(types.clone()),
                );
                !types.is_empty()
            }
            false => {
                asset
                    .entry("externalAssetId")
                    .or_insert_with(|| Value::from(item_id.clone()));
                set_path(
                    &mut asset,
                    &["asset", "assetTypes"],
                    Value::from(vec!["WEB_APPLICATION"]),
                );
                true
            }
        };
        if !flags.is_empty() {
            set_path(&mut asset, &["asset", "flaggedValues"], Value::from(flags));
        }
        let envelope = line_envelope(context, plan.kind, &item_id);
        let mut asset_bytes = serde_json::to_vec(&Value::Object(asset)).expect("serializes");
        asset_bytes.remove(0);
        asset_bytes.pop();
        if !asset_bytes.is_empty() {
            asset_bytes.push(b',');
        }
        let lines = LineWriter::new(
            envelope,
            asset_bytes.clone(),
            0,
            options.max_findings_per_line,
        );
        Ok(Self {
            rules: Rules {
                plan,
                scoring,
                options,
                emit,
                links: None,
                repeated_ids: Arc::default(),
                ids_counted: false,
                taken_by_others: Vec::new(),
                taken_elsewhere: Vec::new(),
                counts_untaken: true,
                ids_of_other_engines: Arc::default(),
            },
            asset: asset_bytes,
            vendor_item_id: item_id,
            state: State {
                lines,
                ..State::default()
            },
        })
    }

    /// Links every finding of this item back to its scan (and, for SAST, its result) in
    /// Checkmarx One, for maps that read `connector.scanLink` or `connector.resultLink`.
    pub fn link_to(&mut self, links: ScanLinks) {
        self.rules.links = Some(ItemLinks::from(&links));
    }

    /// The item's asset on a line of its own, with no finding, counted among this engine's lines;
    /// `None` when the map sends no asset (the asset-type filter leaves it out).
    pub fn asset_line(&mut self) -> Option<Vec<u8>> {
        let line = self.rules.emit.then(|| self.state.lines.asset_alone())?;
        self.state.outcome.figures.lines += 1;
        Some(line)
    }

    /// The engine whose records this transformer maps.
    pub fn engine(&self) -> Engine {
        self.rules.plan.kind
    }

    /// The `externalAssetId` the map gives the item; `None` when it sends no asset (the
    /// asset-type filter leaves it out).
    pub fn external_asset_id(&self) -> Option<String> {
        match self.rules.emit {
            true => super::ledger::external_asset_id(&String::from_utf8_lossy(&self.asset)),
            false => None,
        }
    }

    /// Shares a scan's pages with the transformers of the other engines that take their
    /// findings from it (`same_scan`): the record types they take are left to them. Records of
    /// engines the item takes from another scan (`other_scans`) are counted as superseded, and
    /// records no engine takes as skipped by type, each by one transformer per scan: the one
    /// told `counts_untaken`.
    pub fn beside(&mut self, same_scan: &[Engine], other_scans: &[Engine], counts_untaken: bool) {
        let types = |engines: &[Engine]| {
            engines
                .iter()
                .flat_map(|e| e.record_types().iter().copied())
                .collect()
        };
        self.rules.taken_by_others = types(same_scan);
        self.rules.taken_elsewhere = types(other_scans);
        self.rules.counts_untaken = counts_untaken;
    }

    /// The vendor ids more than one record of this item carries (collect counts them with
    /// [`super::IdTally`] before anything is written): each record of an id several findings
    /// share is told apart by a suffix derived from its own identity fields; a finding sent twice
    /// keeps its id and is written once. Without this, a second record with an id seen before
    /// is skipped as a duplicate rather than renamed by its position.
    pub fn expect_repeats(&mut self, ids: Arc<RepeatedIds>) {
        self.rules.repeated_ids = ids;
        self.rules.ids_counted = true;
    }

    /// The ids the previous ledger holds for the asset's other engines, open or closed: a record
    /// whose id is one of them (a KICS finding fixed, a SAST one new under the same numeric id)
    /// is told apart by its suffix as two records of one pull sharing an id are, or the two would
    /// be one finding in ETM, opened and closed in the same run.
    pub fn beside_ids_of_other_engines(&mut self, other_engines: Arc<TextSet>) {
        self.rules.ids_of_other_engines = other_engines;
    }

    /// Reads one page of severities before triage; each SAST finding whose result hash is
    /// among them carries `originalVendorSeverity`. A row without a text hash and severity adds
    /// nothing and is counted (`unreadable_original_severities`): its finding is still ingested,
    /// only without the severity before triage. A page that is not JSON fails.
    pub fn add_original_severities(&mut self, page: &[u8]) -> Result<(), TransformError> {
        let page: OriginalPage =
            serde_json::from_slice(page).map_err(|e| TransformError::Page {
                page: 0,
                problem: format!("not a page of severities before triage: {e}"),
            })?;
        for row in page.results {
            let field = |name: &str| row.get(name).and_then(Value::as_str);
            match (field("resultHash"), field("severity")) {
                (Some(hash), Some(severity)) if self.state.original.insert(hash, severity) => {}
                _ => self.state.outcome.figures.unreadable_original_severities += 1,
            }
        }
        Ok(())
    }

    /// Maps one raw page (the JSON object the vendor sent, records under `results`) and returns its
    /// lines. A page that is not JSON fails; a bad record inside it only goes to the rejected list.
    /// Each record is mapped as soon as it is read, so a page is never held as read records (see
    /// [`push_read`](Self::push_read) for a page read on another thread).
    pub fn push_page(
        &mut self,
        page: &[u8],
        page_number: u32,
    ) -> Result<Vec<Vec<u8>>, TransformError> {
        self.debug_assert_unsettled();
        let (rules, state) = (&self.rules, &mut self.state);
        state.original.settle();
        read_records(rules.plan, page, page_number, &mut |index, shape, slots| {
            let at = At {
                page: page_number,
                index,
            };
            state.record(rules, at, shape, slots);
        })?;
        Ok(self.lines())
    }

    /// What reads this item's pages for its map, apart from the item: a page can be read on one
    /// core while the page before it is mapped on another.
    pub fn reader(&self) -> PageReader<'p> {
        PageReader {
            plan: self.rules.plan,
        }
    }

    /// Maps a page its [`PageReader`] read, in record order, and returns its lines. The page is
    /// only borrowed: the caller frees it on a reading thread (see `pipeline::transform`).
    pub fn push_read(&mut self, page: &ReadPage) -> Vec<Vec<u8>> {
        self.debug_assert_unsettled();
        let (rules, state) = (&self.rules, &mut self.state);
        state.original.settle();
        let width = rules.plan.finding_slots;
        for record in &page.records {
            let at = At {
                page: page.number,
                index: record.index,
            };
            state.record(rules, at, record.shape, page.fields(record, width));
        }
        self.lines()
    }

    /// Pages come before what is absent from them is settled.
    fn debug_assert_unsettled(&self) {
        debug_assert!(
            self.state
                .reconciling
                .as_ref()
                .is_none_or(|r| r.absent == Absent::Unsettled),
            "a page after the absent findings were settled"
        );
    }

    fn lines(&mut self) -> Vec<Vec<u8>> {
        let lines = self.state.lines.take();
        self.state.outcome.figures.lines += lines.len() as u64;
        lines
    }

    /// The figures so far.
    pub fn figures(&self) -> &Figures {
        &self.state.outcome.figures
    }

    /// Numbers this transformer's lines after `lines` the item already has of its engine (a
    /// moved asset's closures, numbered from 0): no two lines of an item's engine share a `part`.
    pub fn number_lines_after(&mut self, lines: u64) {
        self.state.lines.number_from(lines);
    }

    /// Reconciles this item against its previous ledger (empty on the first run): every finding
    /// gets a `lifecycleStatus`, and [`Self::close_absent`] closes what disappeared.
    ///
    /// `branch` is the scan's branch: when it differs from the previous ledger's, findings absent
    /// now are held open for this run instead of closed, so a change of the winning branch never
    /// flips findings closed and open again; a second run on the new branch closes what is still
    /// absent. A branch known on one side only (a scan that names none) differs too: whether the
    /// scan is of the same branch is not known.
    pub fn reconcile(&mut self, previous: Ledger, run_id: &str, branch: Option<&str>) {
        // An asset the asset-type filter leaves out sends nothing: its findings stay as they
        // were, on the asset ETM holds them on and of the branch they came from, whatever the map
        // and the scan say now (a move or a change of branch counts once it is sent again).
        let (asset, branch_now) = if self.rules.emit || previous.asset.is_empty() {
            (
                String::from_utf8_lossy(&self.asset).into_owned(),
                branch.map(str::to_string),
            )
        } else {
            (previous.asset.clone(), previous.branch.clone())
        };
        let vendor_item_id = self.vendor_item_id.clone();
        let branch_switched = previous.branch.as_deref() != branch;
        self.state.reconciling = Some(Reconciling {
            seen: vec![false; previous.findings.stored()],
            next: Ledger {
                vendor_item_id,
                branch: branch_now,
                asset,
                findings: previous.findings,
                ..Ledger::default()
            },
            run_id: run_id.to_string(),
            branch_switched,
            engine: self.rules.plan.kind,
            absent: Absent::Unsettled,
        });
    }

    /// After the last page of a complete pull: decides what becomes of the findings of the
    /// previous ledger that were open and were not seen, and returns how many
    /// [`Self::close_absent`] will close, known before any is written (no closures object is made
    /// for none). When a record of the pull was rejected, none is closed: the rejected record
    /// might be any of them (its id may be what was malformed), so they are held open and counted
    /// in `held_for_rejected_records`; when a finding came twice under the id it was sent with
    /// (the list moved while it was paged), in `held_for_repeated_records`; where the DAST scan's
    /// login failed, in `held_for_failed_login`; where the engine had no record of its own
    /// beside records of an unknown type, in `held_for_unknown_record_types` ([`Self::unseen`]);
    /// after a branch switch, which comes
    /// first, in `held_on_branch_change`. An asset the asset-type filter leaves out closes none
    /// either. Decided once: a second call counts nothing again.
    pub fn settle_absent(&mut self) -> u64 {
        let emitted = self.rules.emit;
        let unseen = self.unseen();
        let Some(reconciling) = &mut self.state.reconciling else {
            return 0;
        };
        match reconciling.absent {
            Absent::Unsettled => {}
            Absent::Close(to_close) => return to_close,
            Absent::Done | Absent::Broken => return 0,
        }
        let absent = reconciling.absent_open().count() as u64;
        let figures = &mut self.state.outcome.figures;
        let to_close = if !emitted {
            // An asset the asset-type filter leaves out sends nothing, closures neither: its
            // ledger stays as it was (its records were counted as skipped by the filter).
            0
        } else if reconciling.branch_switched {
            figures.held_on_branch_change += absent;
            0
        } else {
            match unseen {
                Some(Unseen::RejectedRecord) => figures.held_for_rejected_records += absent,
                Some(Unseen::RepeatedRecord) => figures.held_for_repeated_records += absent,
                Some(Unseen::UnknownRecordTypes) => figures.held_for_unknown_record_types += absent,
                Some(Unseen::FailedLogin) => figures.held_for_failed_login += absent,
                None => {}
            }
            if unseen.is_some() { 0 } else { absent }
        };
        reconciling.absent = Absent::Close(to_close);
        to_close
    }

    /// What in this engine's pull may stand for findings it did not show, the first of: a
    /// record rejected, a finding sent twice, a DAST scan whose login failed, no record of its
    /// own beside records of an unknown type. Its absent findings are then held open
    /// ([`Self::settle_absent`]).
    pub fn unseen(&self) -> Option<Unseen> {
        let hold = self.state.pull_hold;
        if self.state.outcome.figures.rejected > 0 || hold == Some(PullHold::UnattributedRecord) {
            Some(Unseen::RejectedRecord)
        } else if hold == Some(PullHold::RepeatedRecord) {
            Some(Unseen::RepeatedRecord)
        } else if self.state.login_failed {
            Some(Unseen::FailedLogin)
        } else if self.state.own_records == 0 && self.state.unknown_record_types_in_pull {
            Some(Unseen::UnknownRecordTypes)
        } else {
            None
        }
    }

    /// The record types this transformer counted that Checkmarx One is not known to send (it
    /// counts the records no engine of the item takes: `beside`).
    pub fn unknown_record_types(&self) -> Vec<&str> {
        self.state
            .outcome
            .figures
            .skipped_by_type
            .keys()
            .map(String::as_str)
            .filter(|kind| !is_known_record_type(kind))
            .collect()
    }

    /// Records of a type no engine reads came in this engine's pull: if none of its own came,
    /// its absent findings are held open ([`Self::settle_absent`]).
    pub fn beside_unknown_record_types(&mut self) {
        self.state.unknown_record_types_in_pull = true;
    }

    /// The DAST environment's last login failed (its record says so): its absent
    /// findings are held open ([`Self::settle_absent`]).
    pub fn scan_login_failed(&mut self) {
        self.state.login_failed = true;
    }

    /// What this transformer met (or was told of) that holds its pull's absent findings open.
    pub fn pull_hold(&self) -> Option<PullHold> {
        self.state.pull_hold
    }

    /// Holds this engine's absent findings open: a transformer beside it, on the same pull, met
    /// a record that may stand for any engine's (see [`PullHold`]).
    pub fn hold_pull(&mut self, hold: PullHold) {
        self.state.hold_pull(hold);
    }

    /// A closure record (FIXED) for each finding [`Self::settle_absent`] decided to close, handed
    /// to `out` line by line as the lines fill (an asset of millions of findings may close them
    /// all at once); returns how many were closed. Fixed findings not seen again stay in the
    /// ledger as fixed. Nothing is closed unless it was settled, and nothing twice. When `out`
    /// fails, the item is broken: this and [`Self::finish`] fail from then on.
    pub fn close_absent(&mut self, out: &mut LineSink) -> std::io::Result<u64> {
        let Some(reconciling) = &mut self.state.reconciling else {
            return Ok(0);
        };
        let to_close = match reconciling.absent {
            Absent::Unsettled | Absent::Done => return Ok(0),
            Absent::Broken => {
                return Err(std::io::Error::other(TransformError::ClosingBroken));
            }
            Absent::Close(to_close) => to_close,
        };
        if to_close == 0 {
            reconciling.absent = Absent::Done;
            return Ok(0);
        }
        // Until every line is handed over.
        reconciling.absent = Absent::Broken;
        // In id order.
        let absent: Vec<usize> = reconciling.absent_open().collect();
        let reason = format!(
            "absent from the complete pull of this asset in run {}",
            reconciling.run_id
        );
        let findings = &mut reconciling.next.findings;
        let mut handed = 0;
        for &position in &absent {
            let entry = *findings.entry(position);
            let id = findings.id_at(position);
            self.state
                .lines
                .finding(|line| Ledger::write_closure(id, &entry, &reason, line));
            handed += self.state.lines.hand_over(false, out)?;
            findings.set_entry(
                position,
                LedgerEntry {
                    open: false,
                    ..entry
                },
            );
        }
        handed += self.state.lines.hand_over(true, out)?;
        reconciling.absent = Absent::Done;
        let closed = absent.len() as u64;
        debug_assert_eq!(closed, to_close, "closed what was settled");
        self.state
            .outcome
            .figures
            .count_closures(super::ledger::Closed {
                findings: closed,
                lines: handed,
            });
        Ok(closed)
    }

    /// The records rejected since the last call, for the caller to keep out of memory.
    pub fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.state.outcome.rejected)
    }

    /// The collisions since the last call, for the caller to keep out of memory.
    pub fn take_collisions(&mut self) -> Vec<Collision> {
        std::mem::take(&mut self.state.outcome.collisions)
    }

    /// The item's outcome, with its next ledger. Findings of the previous ledger that were not
    /// seen and not closed ([`Self::close_absent`] was not called) go into it as they were.
    /// Fails when closing them broke off, and when findings new to the asset came twice under ids collect counted once each
    /// (those ids were not remembered one by one: the ledger finds them when it settles).
    pub fn finish(mut self) -> Result<ItemOutcome, TransformError> {
        let mut outcome = std::mem::take(&mut self.state.outcome);
        // Only the next ledger is kept of what reconciling held (not which findings were seen).
        let Some((mut next, absent)) = self.state.reconciling.take().map(|r| (r.next, r.absent))
        else {
            return Ok(outcome);
        };
        if absent == Absent::Broken {
            return Err(TransformError::ClosingBroken);
        }
        debug_assert!(
            self.state.lines.take().is_empty(),
            "every line was handed over before the transformer finished"
        );
        // The item's working memory (severities before triage, fingerprints of new ids) goes
        // before the next ledger is put in order beside it: a large asset's peak is there.
        drop(self);
        let twice = next.findings.settle();
        if !twice.is_empty() {
            return Err(TransformError::UncountedRepeats(twice));
        }
        outcome.ledger = Some(next);
        Ok(outcome)
    }
}

/// Where a record sits in the item's pull.
#[derive(Clone, Copy)]
struct At {
    page: u32,
    index: u32,
}

/// What the connector reads from a record itself, beside the map: the vendor's words as sent
/// (written out verbatim) and what they mean (what decisions use).
struct VendorFacts {
    severity_text: String,
    severity: Severity,
    state_text: Option<String>,
    state: Option<TriageState>,
    status_text: String,
    fixed: bool,
}

impl VendorFacts {
    fn read(plan: &Plan, slots: &[Option<Value>]) -> Self {
        let text = |slot: usize| slots[slot].as_ref().and_then(text_of);
        let severity_text = text(plan.implicit.severity).unwrap_or_default();
        let state_text = text(plan.implicit.state);
        let status_text = text(plan.implicit.status).unwrap_or_default();
        Self {
            severity: Severity::parse(&severity_text),
            state: state_text.as_deref().map(TriageState::read),
            fixed: ResultStatus::parse(&status_text) == ResultStatus::Fixed,
            severity_text,
            state_text,
            status_text,
        }
    }

    /// The counting key: findings without a severity are counted under `(none)`.
    fn severity_key(&self) -> Severity {
        if self.severity_text.is_empty() {
            Severity::Other("(none)".into())
        } else {
            self.severity.clone()
        }
    }
}

impl TransformOptions {
    /// Whether the connection's severity and triage filters leave this finding out.
    fn leaves_out(&self, facts: &VendorFacts) -> bool {
        let severity_out =
            !self.severities.is_empty() && !self.severities.contains(&facts.severity);
        let state_out = !self.triage_states.is_empty()
            && !facts
                .state
                .as_ref()
                .is_some_and(|state| self.triage_states.iter().any(|w| w.same_as(state)));
        severity_out || state_out
    }
}

impl State {
    fn hold_pull(&mut self, hold: PullHold) {
        self.pull_hold = self.pull_hold.max(Some(hold));
    }

    /// One record of a page: rejected, skipped or mapped to one finding.
    fn record(&mut self, rules: &Rules, at: At, shape: Shape, slots: &[Option<Value>]) {
        let plan = rules.plan;
        let unread = match shape {
            Shape::Object => None,
            Shape::NotObject => Some("the record is not a JSON object".to_string()),
            Shape::Unreadable { column } => Some(format!(
                "the record cannot be read past its column {column}: valid JSON, but with a `\\u` escape that is not a whole UTF-16 character or a number past a 64-bit float's range; its type unread"
            )),
        };
        if let Some(reason) = unread {
            if rules.counts_untaken {
                self.outcome.figures.records_in += 1;
                self.hold_pull(PullHold::UnattributedRecord);
                self.reject(rules, slots, at, reason);
            }
            return;
        }
        if self.skips(rules, slots, at) {
            return;
        }
        let facts = VendorFacts::read(plan, slots);
        let (qds, matched) = rules.scoring.score(&facts.severity);
        let mut flags = Vec::new();
        // A severity the scoring table does not know is scored, and mapped to the ETM severity,
        // as the table's default severity: one default, so `qds` and `severity` agree.
        let stand_in = (!matched).then(|| {
            let default = rules.scoring.default_severity();
            flags.push(format!(
                "severity '{}' matches no scoring row; scored and mapped as {default}, the scoring table's defaultSeverity",
                facts.severity_text
            ));
            Value::from(default)
        });
        let mut values = Vec::with_capacity(plan.finding_entries.len());
        for entry in &plan.finding_entries {
            let computed = entry.computed.and_then(|c| rules.computed(c, slots));
            let raw = match (&stand_in, entry.computed) {
                (_, Some(_)) => computed.as_ref(),
                (Some(default), None)
                    if entry.slot == plan.implicit.severity
                        && entry.target.ty == ValueType::Severity =>
                {
                    Some(default)
                }
                _ => slots[entry.slot].as_ref(),
            };
            match entry_value(entry, raw, &mut flags) {
                Ok(v) => values.push(v),
                Err(reason) => return self.reject(rules, slots, at, reason),
            }
        }
        let Some(claim) = self.identify(rules, slots, &mut values) else {
            // The same finding twice (same id, same identity fields): one is enough. Where the id
            // is the record's own, one finding's, its pull may have moved while it was paged: the
            // pull's absent findings are held open (`settle_absent`). Not where a value map, a
            // default or a formula made it (a map can make two findings one on every run), nor
            // for an always-suffixed id (SCA, containers: a CVE id, which one package in two files
            // or images repeats with the same identity on every run).
            self.outcome.figures.duplicates += 1;
            let id_as_sent = !plan.implicit.always_suffixed
                && plan.external_finding_id.is_some_and(|position| {
                    let read = &plan.finding_entries[position];
                    read.computed.is_none() && read.value_map.is_none() && read.default.is_none()
                });
            if id_as_sent {
                self.hold_pull(PullHold::RepeatedRecord);
            }
            return;
        };
        let id = plan
            .external_finding_id
            .and_then(|position| match &values[position] {
                Some(Value::String(id)) => Some(id.clone()),
                _ => None,
            });
        // A triage state that settles the finding (NOT_EXPLOITABLE → PROTECTED) sets its status,
        // unless the scan says the finding is gone: FIXED wins over any triage state, and the
        // finding is counted as fixed only.
        let forced = facts
            .state_text
            .as_deref()
            .filter(|_| !facts.fixed)
            .and_then(|s| TriageMap::forced_status(rules.options.triage.outcome(s)));
        // Findings the connection's filters leave out are skipped, and stay in the asset's ledger
        // as they were (claimed, so not absent): leaving a finding out never reads as fixing it.
        // Except one ETM holds open that this pull fixes or settles (triaged NOT_EXPLOITABLE,
        // and so out of a filter of open states), or whose severity or score is no longer what
        // ETM holds (triage lowered it below a severity filter): left out, it would stay open
        // there for good, or at a severity it no longer has, for as long as it is left out.
        if rules.options.leaves_out(&facts)
            && !(self.held_open(claim)
                && (facts.fixed || forced.is_some() || self.held_otherwise(claim, &facts, qds)))
        {
            self.outcome.figures.skipped_by_filter += 1;
            return;
        }
        // The ledger holds what ETM is told: a finding sent FIXED (the scan's FIXED, a triage
        // state or a custom map's value that says so) is closed there, so it is not closed again
        // when it goes, and is REOPENED if it opens. One sent with another status, or none (a
        // map that writes none, a value left out as no status ETM takes), is open: when it goes,
        // its closure is sent.
        let sent_status = forced.or_else(|| {
            let position = plan.finding_status?;
            values[position].as_ref()?.as_str()
        });
        let closed = sent_status == Some("FIXED");
        let original = plan
            .implicit
            .result_hash
            .and_then(|slot| slots[slot].as_ref())
            .and_then(Value::as_str)
            .and_then(|hash| self.original.get(hash));
        // Sent FIXED, though ETM holds it closed already or never had it open: counted FIXED
        // as it is sent, and apart, so a report can tell it from a finding fixed since.
        let fixed_before = closed && self.reconciling.is_some() && !self.held_open(claim);
        let lifecycle = match (&mut self.reconciling, &id) {
            (Some(reconciling), Some(id)) => {
                match reconciling.see(id, claim, &facts, qds, closed) {
                    Ok(lifecycle) => Some(lifecycle),
                    Err(full) => return self.reject(rules, slots, at, full.to_string()),
                }
            }
            _ => None,
        };
        let finding = Finding {
            qds,
            facts: &facts,
            forced,
            original,
            flags: &flags,
            lifecycle,
            fixed_before,
        };
        self.lines.finding(|out| finding.write(plan, values, out));
        finding.count(&mut self.outcome.figures);
    }

    fn reject(&mut self, rules: &Rules, slots: &[Option<Value>], at: At, reason: String) {
        let implicit = &rules.plan.implicit;
        let location = implicit.sink.and_then(|(file, line)| {
            let file = slots[file].as_ref().and_then(text_of)?;
            Some(match slots[line].as_ref().and_then(text_of) {
                Some(line) => format!("{file}:{line}"),
                None => file,
            })
        });
        self.outcome.figures.rejected += 1;
        self.outcome.rejected.push(Rejected {
            vendor_id: slots[implicit.id].as_ref().and_then(text_of),
            page: at.page,
            index: at.index,
            reason,
            location,
            link: rules
                .computed(Computed::ResultLink, slots)
                .and_then(|link| link.as_str().map(str::to_string)),
        });
    }

    /// Records of another engine are left to its transformer, or, when no engine of the item takes
    /// them, counted by type and skipped; a record with no type is rejected (by the first
    /// transformer only); records of an asset the asset-type filter removed are counted and
    /// skipped. Every record this transformer keeps or skips counts in `records_in`.
    fn skips(&mut self, rules: &Rules, slots: &[Option<Value>], at: At) -> bool {
        if let Some(kind_slot) = rules.plan.implicit.kind {
            let kind = slots[kind_slot]
                .as_ref()
                .and_then(Value::as_str)
                .filter(|k| !k.trim().is_empty());
            let Some(kind) = kind else {
                // No engine can be told for it: rejected (once, by the pull's first transformer),
                // and every engine of the pull holds its absent findings open.
                if rules.counts_untaken {
                    self.outcome.figures.records_in += 1;
                    self.hold_pull(PullHold::UnattributedRecord);
                    let reason = "the record has no `type` text (or a blank one), so which engine's finding it is cannot be told";
                    self.reject(rules, slots, at, reason.into());
                }
                return true;
            };
            if !is_record_type_among(rules.plan.kind.record_types(), kind) {
                let figures = &mut self.outcome.figures;
                if rules.counts_untaken && !is_record_type_among(&rules.taken_by_others, kind) {
                    figures.records_in += 1;
                    if is_record_type_among(&rules.taken_elsewhere, kind) {
                        figures.superseded += 1;
                    } else {
                        *figures.skipped_by_type.entry(kind.to_string()).or_default() += 1;
                    }
                }
                return true;
            }
        }
        self.own_records += 1;
        let figures = &mut self.outcome.figures;
        figures.records_in += 1;
        if !rules.emit {
            figures.skipped_by_filter += 1;
            return true;
        }
        false
    }

    /// Gives the finding its `externalFindingId`: the id the map gives it, or, for an id several
    /// findings of the scan share (counted before: [`super::IdTally`]), that id with its record's
    /// identity suffix. A suffix the asset's previous ledger holds is kept when the id no longer
    /// repeats, so a finding whose twin went away keeps its identity, unless the id as sent is open
    /// in the ledger too (an alias an earlier version made). An id the ledger holds for another
    /// engine of the asset is told apart too, and keeps the one suffix it was given (see
    /// [`ItemTransformer::beside_ids_of_other_engines`]). Answers the record's claim
    /// on the id, or `None` for a record alike in every identity field to one already written: a
    /// duplicate, skipped and counted.
    fn identify(
        &mut self,
        rules: &Rules,
        slots: &[Option<Value>],
        values: &mut [Option<Value>],
    ) -> Option<Claim> {
        let plan = rules.plan;
        let Some(position) = plan.external_finding_id else {
            return Some(Claim::default());
        };
        let Some(Value::String(id)) = &values[position] else {
            return Some(Claim::default());
        };
        // Every record passes here: nothing is allocated unless the id repeats or repeated before.
        let read = &plan.finding_entries[position];
        let listed = |ids: &TextSet| {
            !ids.is_empty()
                && read.computed.is_none()
                && match &slots[read.slot] {
                    Some(Value::String(raw)) => ids.contains(raw),
                    Some(other) => text_of(other).is_some_and(|raw| ids.contains(&raw)),
                    None => false,
                }
        };
        let shared = listed(&rules.repeated_ids.told_apart);
        // An id the asset's ledger holds for another engine ([`ItemTransformer::beside_ids_of_other_engines`]).
        let another_engines = !shared
            && !rules.ids_of_other_engines.is_empty()
            && rules.ids_of_other_engines.contains(id);
        // Lookups find only the previous ledger's findings: this pull's are appended unsettled.
        let previous = self.reconciling.as_ref().map(|r| &r.next.findings);
        let found = previous.map(|f| f.look_up(id)).unwrap_or_default();
        // An id as sent that ends as a told-apart name does (`#` and 16 hex digits) could be one
        // another record is or was told apart by, in this pull or in the ledger (a vendor can
        // compute it): two findings under one id. It is told apart in turn, always, so no name
        // stands as sent in that shape. Other ids with `#` stand as sent.
        let forged = !plan.implicit.always_suffixed && identity::has_suffix_shape(id);
        let repeated = shared || another_engines || forged || plan.implicit.always_suffixed;
        let (mut told_apart, mut claim) = (
            None,
            Claim {
                previous: found.position,
            },
        );
        // Where the id stands as sent and open in the ledger beside a suffixed twin, this pull's
        // single record is that open finding, and the twin closes: a name given while the id as
        // sent was held open, or an earlier version's alias for a finding sent twice.
        let open_as_sent = previous
            .zip(found.position)
            .is_some_and(|(findings, p)| findings.entry(p).open);
        if repeated || (found.suffixed && !open_as_sent) {
            let suffix =
                identity::suffix(plan.implicit.identity.iter().map(|&s| slots[s].as_ref()));
            let mut suffixed = format!("{id}#{suffix}");
            let mut held = previous.and_then(|f| f.position(&suffixed));
            // Told apart for another engine's sake alone (which keeps its id for good), a finding
            // keeps the name it was given, whatever its identity fields say now: a KICS
            // finding's line moves with every edit above it, and a new name would close it and
            // open it again.
            if another_engines
                && held.is_none()
                && let Some((name, position)) = previous.and_then(|f| f.only_suffixed(id))
            {
                (suffixed, held) = (name.to_string(), Some(position));
            }
            if repeated || held.is_some() {
                told_apart = Some(suffixed);
                claim.previous = held;
            }
            if shared && open_as_sent && !plan.implicit.always_suffixed {
                self.hold_open_as_sent(found.position);
            }
        }
        // An id collect counted once, written as the record carries it (no value map or default
        // can make two ids one): no other record has it, and if one does after all, the next
        // ledger finds both (`finish` refuses the item then).
        let counted_once = rules.ids_counted
            && read.computed.is_none()
            && read.value_map.is_none()
            && read.default.is_none()
            && told_apart.is_none()
            && self.reconciling.is_some()
            && !listed(&rules.repeated_ids.sent_twice);
        if !self.claim(told_apart.as_deref().unwrap_or(id), claim, counted_once) {
            return None;
        }
        if let Some(told_apart) = told_apart {
            // An always-suffixed id (SCA, containers: a CVE id) never stands as sent: telling it
            // apart is the rule, not a collision.
            if !plan.implicit.always_suffixed {
                self.outcome.figures.collisions += 1;
                self.outcome.collisions.push(Collision {
                    external_finding_id: id.clone(),
                    renamed_to: told_apart.clone(),
                });
            }
            values[position] = Some(Value::String(told_apart));
        }
        Some(claim)
    }

    /// Whether the previous ledger holds the finding `claim` names, open.
    fn held_open(&self, claim: Claim) -> bool {
        self.reconciling
            .as_ref()
            .zip(claim.previous)
            .is_some_and(|(reconciling, position)| reconciling.next.findings.entry(position).open)
    }

    /// Whether the previous ledger holds the finding `claim` names at another severity or score
    /// than the pull's (its severities read case and blanks aside).
    fn held_otherwise(&self, claim: Claim, facts: &VendorFacts, qds: u8) -> bool {
        self.reconciling
            .as_ref()
            .zip(claim.previous)
            .is_some_and(|(reconciling, position)| {
                let held = reconciling.next.findings.entry(position);
                held.qds != qds || Severity::parse(held.severity.as_str()) != facts.severity
            })
    }

    /// Keeps the previous ledger's open finding at `position` open without a record of its own:
    /// its id, sent alone before, now repeats, and any of the records told apart may be it.
    fn hold_open_as_sent(&mut self, position: Option<usize>) {
        if let (Some(reconciling), Some(position)) = (&mut self.reconciling, position)
            && !std::mem::replace(&mut reconciling.seen[position], true)
        {
            self.outcome.figures.held_as_id_now_repeats += 1;
        }
    }

    /// Claims `id` for the record being written: `false` when a record with it was written, or
    /// left out by the filters, already. A finding of the previous ledger is marked seen where it
    /// is stored; ids new to the asset are remembered by fingerprint, unless `counted_once`, so a
    /// pull of the same findings as last time, or of ids collect counted, remembers next to
    /// nothing beside the ledger.
    fn claim(&mut self, id: &str, claim: Claim, counted_once: bool) -> bool {
        if let (Some(reconciling), Some(position)) = (&mut self.reconciling, claim.previous) {
            return !std::mem::replace(&mut reconciling.seen[position], true);
        }
        counted_once || self.seen_ids.insert(self.ids.of(id.as_bytes()))
    }
}

/// A record's hold on its `externalFindingId`: where the previous ledger stores that finding,
/// if it does.
#[derive(Clone, Copy, Default)]
struct Claim {
    previous: Option<usize>,
}

impl Reconciling {
    /// The positions of the previous ledger's findings that were open and were not seen (a pass
    /// over all of them; settling and closing each make one).
    fn absent_open(&self) -> impl Iterator<Item = usize> + '_ {
        let findings = &self.next.findings;
        findings
            .positions()
            .filter(|&p| self.seen.get(p) == Some(&false) && findings.entry(p).open)
    }

    /// A finding seen in this pull, reported `closed` (FIXED) or open: its lifecycle status
    /// against the previous ledger, and its entry in the next.
    fn see(
        &mut self,
        id: &str,
        claim: Claim,
        facts: &VendorFacts,
        qds: u8,
        closed: bool,
    ) -> Result<Lifecycle, LedgerFull> {
        let position = claim.previous;
        let before = position.map(|p| self.next.findings.entry(p));
        let lifecycle = Lifecycle::against(before, closed);
        let entry = LedgerEntry {
            open: !closed,
            qds,
            severity: facts.severity_text.as_str().into(),
            status: facts.status_text.as_str().into(),
            first_seen: before.map_or_else(|| self.run_id.as_str().into(), |e| e.first_seen),
            engine: Some(self.engine),
        };
        match position {
            Some(position) => self.next.findings.set_entry(position, entry),
            None => {
                self.next.findings.append_unsettled(id, entry)?;
            }
        }
        Ok(lifecycle)
    }
}

/// One finding as it is written: the mapped values, then what the connector adds.
struct Finding<'f> {
    qds: u8,
    facts: &'f VendorFacts,
    /// The `findingStatus` a triage state sets.
    forced: Option<&'static str>,
    /// The severity before triage.
    original: Option<&'f str>,
    flags: &'f [String],
    lifecycle: Option<Lifecycle>,
    /// Sent FIXED while the previous ledger holds it closed, or holds it not at all.
    fixed_before: bool,
}

impl Finding<'_> {
    fn severity_changed(&self) -> bool {
        self.original
            .is_some_and(|o| !o.eq_ignore_ascii_case(&self.facts.severity_text))
    }

    fn count(&self, figures: &mut Figures) {
        figures.findings_out += 1;
        *figures
            .by_severity
            .entry(self.facts.severity_key())
            .or_default() += 1;
        if let Some(lifecycle) = self.lifecycle {
            *figures.lifecycle.entry(lifecycle).or_default() += 1;
        }
        if self.facts.fixed {
            figures.fixed += 1;
        }
        if self.fixed_before {
            figures.fixed_before += 1;
        }
        if self.facts.state.as_ref().is_some_and(|s| !s.is_known()) {
            figures.unknown_triage_states += 1;
        }
        if !self.flags.is_empty() {
            figures.flagged_values += 1;
        }
        if self.forced.is_some() {
            figures.settled_by_triage += 1;
        }
        if self.severity_changed() {
            figures.severity_changed_by_triage += 1;
        }
    }

    /// Appends the finding's JSON object to `out`.
    fn write(&self, plan: &Plan, mut values: Vec<Option<Value>>, out: &mut Vec<u8>) {
        let mut forced_unplaced = None;
        if let Some(forced) = self.forced {
            match plan.finding_status {
                Some(position) => values[position] = Some(Value::from(forced)),
                None => forced_unplaced = Some(forced),
            }
        }
        out.push(b'{');
        let mut first = true;
        write_fields(&plan.finding_layout, &values, out, &mut first);
        if let Some(forced) = forced_unplaced {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(format!("\"findingStatus\":\"{forced}\"").as_bytes());
        }
        if !first {
            out.push(b',');
        }
        let facts = self.facts;
        out.extend_from_slice(format!("\"qds\":{},\"vendorSeverity\":", self.qds).as_bytes());
        serde_json::to_writer(&mut *out, &facts.severity_text).expect("Vec write");
        out.extend_from_slice(b",\"vendorStatus\":");
        serde_json::to_writer(&mut *out, &facts.status_text).expect("Vec write");
        if let (Some(text), Some(state)) = (&facts.state_text, &facts.state) {
            out.extend_from_slice(b",\"triageState\":");
            // A known state in Checkmarx One's spelling; a custom one as the vendor sent it.
            let shown = if state.is_known() {
                state.as_str()
            } else {
                text
            };
            serde_json::to_writer(&mut *out, shown).expect("Vec write");
            out.extend_from_slice(if state.is_known() {
                b",\"triageStateKnown\":true"
            } else {
                b",\"triageStateKnown\":false"
            });
        }
        if let Some(original) = self.original {
            out.extend_from_slice(b",\"originalVendorSeverity\":");
            serde_json::to_writer(&mut *out, original).expect("Vec write");
            if self.severity_changed() {
                out.extend_from_slice(b",\"severityChangedByTriage\":true");
            }
        }
        if !self.flags.is_empty() {
            out.extend_from_slice(b",\"flaggedValues\":");
            serde_json::to_writer(&mut *out, self.flags).expect("Vec write");
        }
        if let Some(lifecycle) = self.lifecycle {
            out.extend_from_slice(b",\"lifecycleStatus\":\"");
            out.extend_from_slice(lifecycle.as_str().as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
}
