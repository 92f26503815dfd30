//! Reconciliation against the last committed run, per asset: each finding is NEW (first seen),
//! ACTIVE (seen open before), REOPENED (fixed before, back now) or FIXED (closed by the vendor, or
//! absent from a complete pull of its asset: then an explicit closure record is emitted). The
//! ledger is what the connector has reported for one asset, open or fixed; each run writes the next
//! one, and an asset whose pull is not complete carries its ledger forward unchanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, PoisonError, RwLock};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::Engine;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Lifecycle {
    New,
    Active,
    Reopened,
    Fixed,
}

impl Lifecycle {
    /// Every status, in the order reports list them.
    pub const ALL: [Self; 4] = [Self::New, Self::Active, Self::Reopened, Self::Fixed];

    /// The status of a finding seen now, given its entry in the previous ledger.
    pub fn against(previous: Option<&LedgerEntry>, closed_by_vendor: bool) -> Self {
        match previous {
            _ if closed_by_vendor => Self::Fixed,
            None => Self::New,
            Some(entry) if entry.open => Self::Active,
            Some(_) => Self::Reopened,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Active => "ACTIVE",
            Self::Reopened => "REOPENED",
            Self::Fixed => "FIXED",
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was last reported for one finding: enough to classify it next time and to write its
/// closure record if it disappears. Sixteen bytes: its texts (a severity, a status, a run id) are
/// the same few for every finding of an asset, so each is a [`Text`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub open: bool,
    pub qds: u8,
    pub severity: Text,
    pub status: Text,
    /// The run that first reported it.
    pub first_seen: Text,
    /// The engine that reports it; absent in ledgers written before engines, whose findings are
    /// the connection's SAST or DAST ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
}

impl LedgerEntry {
    /// The engine that reports it (`legacy` for an entry written before engines).
    pub fn engine_or(&self, legacy: Engine) -> Engine {
        self.engine.unwrap_or(legacy)
    }
}

/// A text held once per process and named by a number: the severities, statuses and run ids
/// millions of ledger entries repeat. Each distinct text stays for the life of the process; a
/// ledger holds a handful (its severities, its statuses, the runs that first saw its findings).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text(u32);

#[derive(Default)]
struct Texts {
    numbers: HashMap<&'static str, u32, foldhash::fast::RandomState>,
    texts: Vec<&'static str>,
}

static TEXTS: LazyLock<RwLock<Texts>> = LazyLock::new(RwLock::default);

impl Text {
    pub fn as_str(self) -> &'static str {
        let texts = TEXTS.read().unwrap_or_else(PoisonError::into_inner);
        texts.texts[self.0 as usize]
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        if let Some(&number) = TEXTS
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .numbers
            .get(text)
        {
            return Self(number);
        }
        let mut texts = TEXTS.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&number) = texts.numbers.get(text) {
            return Self(number);
        }
        let number = u32::try_from(texts.texts.len()).expect("fewer than 2^32 distinct texts");
        let held: &'static str = Box::leak(text.into());
        texts.texts.push(held);
        texts.numbers.insert(held, number);
        Self(number)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text, E> {
                Ok(Text::from(text))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// One asset's reported findings, keyed by `externalFindingId`, with the asset part of its lines
/// (so a deleted project's findings can still be closed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    pub vendor_item_id: String,
    /// The branch of the scan the findings came from (SAST), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The branch of an engine's scan where it differs from `branch` (an engine whose latest
    /// scan is another than the asset's main scan).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engine_branches: BTreeMap<Engine, String>,
    /// `"externalAssetId":…,"asset":{…},` as the lines carry it.
    pub asset: String,
    pub findings: BTreeMap<CompactString, LedgerEntry>,
}

impl Ledger {
    /// Whether some finding of this ledger carries `id` with an identity suffix (`<id>#…`). The
    /// keys after `id` that continue it with a byte up to `#` come first in order, so the walk
    /// stops at the first longer key that continues it otherwise (`id0`, `id-x`), without
    /// building a prefix.
    pub fn has_suffixed(&self, id: &str) -> bool {
        use std::ops::Bound;
        self.findings
            .range::<str, _>((Bound::Excluded(id), Bound::Unbounded))
            .map_while(|(key, _)| {
                let next = *key.strip_prefix(id)?.as_bytes().first()?;
                (next <= b'#').then_some(next)
            })
            .any(|next| next == b'#')
    }

    /// Splits the ledger into one per engine (entries written before engines belong to
    /// `legacy`); each keeps the asset and its engine's branch.
    pub fn split_by_engine(self, legacy: Engine) -> BTreeMap<Engine, Ledger> {
        let mut parts: BTreeMap<Engine, Ledger> = BTreeMap::new();
        for (id, entry) in self.findings {
            let engine = entry.engine_or(legacy);
            parts
                .entry(engine)
                .or_insert_with(|| Ledger {
                    vendor_item_id: self.vendor_item_id.clone(),
                    branch: self
                        .engine_branches
                        .get(&engine)
                        .cloned()
                        .or_else(|| self.branch.clone()),
                    engine_branches: BTreeMap::new(),
                    asset: self.asset.clone(),
                    findings: BTreeMap::new(),
                })
                .findings
                .insert(id, entry);
        }
        parts
    }

    /// Adds `engine`'s part of the asset's ledger (and its branch, where it differs).
    pub fn absorb(&mut self, engine: Engine, part: Ledger) {
        if let Some(branch) = part.branch.filter(|b| self.branch.as_ref() != Some(b)) {
            self.engine_branches.insert(engine, branch);
        }
        self.findings.extend(part.findings);
    }

    pub fn open_findings(&self) -> u64 {
        self.findings.values().filter(|e| e.open).count() as u64
    }

    /// A closure record for a finding that was open and is absent now.
    pub fn closure_record(id: &str, entry: &LedgerEntry, reason: &str) -> Vec<u8> {
        let record = serde_json::json!({
            "externalFindingId": id,
            "qds": entry.qds,
            "vendorSeverity": entry.severity,
            "vendorStatus": entry.status,
            "findingStatus": "FIXED",
            "lifecycleStatus": "FIXED",
            "closedReason": reason,
        });
        serde_json::to_vec(&record).expect("serializes")
    }
}

/// The open findings of a stored ledger, counted as it is read, without building it: a ledger
/// carried forward unchanged is copied as it is stored.
#[derive(Debug, Deserialize)]
pub struct OpenFindings {
    #[serde(rename = "findings", deserialize_with = "count_open")]
    pub count: u64,
}

fn count_open<'de, D: serde::Deserializer<'de>>(findings: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    struct Openness {
        open: bool,
    }
    struct Counter;
    impl<'de> serde::de::Visitor<'de> for Counter {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of findings by id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
            let mut open = 0;
            while let Some((_, entry)) = map.next_entry::<serde::de::IgnoredAny, Openness>()? {
                open += u64::from(entry.open);
            }
            Ok(open)
        }
    }
    findings.deserialize_map(Counter)
}

/// Closure records for every open finding of `ledger` as batch lines (for an asset whose project or
/// environment was deleted), with their count; the ledger comes back with everything closed.
pub fn close_all(
    mut ledger: Ledger,
    context: &super::TransformContext,
    legacy: Engine,
    reason: &str,
    max_findings_per_line: usize,
) -> (Vec<Vec<u8>>, u64, Ledger) {
    let mut by_engine: BTreeMap<Engine, Vec<Vec<u8>>> = BTreeMap::new();
    for (id, entry) in ledger.findings.iter().filter(|(_, e)| e.open) {
        by_engine
            .entry(entry.engine_or(legacy))
            .or_default()
            .push(Ledger::closure_record(id, entry, reason));
    }
    let mut closed = 0;
    let mut lines = Vec::new();
    for (engine, closures) in by_engine {
        closed += closures.len() as u64;
        let envelope = super::batch::line_envelope(context, engine, &ledger.vendor_item_id);
        lines.extend(super::batch::batch_lines(
            &envelope,
            0,
            ledger.asset.as_bytes(),
            &closures,
            max_findings_per_line,
        ));
    }
    for entry in ledger.findings.values_mut() {
        entry.open = false;
    }
    (lines, closed, ledger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffixed_id_is_found_among_ids_that_start_alike() {
        let mut ledger = Ledger::default();
        for id in ["10", "10!", "100", "10-x", "10#a1b2", "2#ff", "1"] {
            ledger.findings.insert(id.into(), entry(true));
        }
        assert!(ledger.has_suffixed("10"));
        assert!(ledger.has_suffixed("2"));
        assert!(!ledger.has_suffixed("1"), "`10#…` is not `1#…`");
        assert!(!ledger.has_suffixed("100"));
        assert!(!ledger.has_suffixed("3"));
    }

    fn entry(open: bool) -> LedgerEntry {
        LedgerEntry {
            open,
            qds: 70,
            severity: "HIGH".into(),
            status: "NEW".into(),
            first_seen: "r1".into(),
            engine: None,
        }
    }

    #[test]
    fn findings_are_classified_against_the_previous_ledger() {
        let mut previous = Ledger::default();
        previous.findings.insert("open".into(), entry(true));
        previous.findings.insert("closed".into(), entry(false));
        let classify = |id: &str, fixed: bool| Lifecycle::against(previous.findings.get(id), fixed);
        assert_eq!(classify("brand-new", false), Lifecycle::New);
        assert_eq!(classify("open", false), Lifecycle::Active);
        assert_eq!(classify("closed", false), Lifecycle::Reopened);
        assert_eq!(classify("open", true), Lifecycle::Fixed);
        assert_eq!(previous.open_findings(), 1);
        let closure: serde_json::Value =
            serde_json::from_slice(&Ledger::closure_record("open", &entry(true), "gone")).unwrap();
        assert_eq!(closure["findingStatus"], "FIXED");
        assert_eq!(closure["qds"], 70);
    }

    #[test]
    fn entries_hold_their_texts_in_sixteen_bytes_and_store_them_as_strings() {
        assert_eq!(std::mem::size_of::<LedgerEntry>(), 16);
        let (a, b) = (
            Text::from("TO_VERIFY"),
            Text::from(String::from("TO_VERIFY").as_str()),
        );
        assert_eq!(a, b);
        assert_ne!(a, Text::from("CONFIRMED"));
        assert_eq!(a.as_str(), "TO_VERIFY");
        let stored = serde_json::to_value(entry(true)).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"open": true, "qds": 70, "severity": "HIGH", "status": "NEW", "firstSeen": "r1"})
        );
        let read: LedgerEntry = serde_json::from_value(stored).unwrap();
        assert_eq!(read, entry(true));
        let error = serde_json::from_str::<LedgerEntry>(
            r#"{"open":true,"qds":1,"severity":3,"status":"NEW","firstSeen":"r1"}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
    }

    #[test]
    fn open_findings_are_counted_from_the_stored_text() {
        let mut ledger = Ledger::default();
        ledger
            .findings
            .insert("a \"quoted\" id".into(), entry(true));
        ledger.findings.insert("b".into(), entry(false));
        ledger.findings.insert("c".into(), entry(true));
        let text = serde_json::to_vec(&ledger).unwrap();
        let counted: OpenFindings = serde_json::from_slice(&text).unwrap();
        assert_eq!(counted.count, ledger.open_findings());
        assert_eq!(counted.count, 2);
        let broken = br#"{"vendorItemId":"p","asset":"","findings":{"a":{"qds":1}}}"#;
        let error = serde_json::from_slice::<OpenFindings>(broken).unwrap_err();
        assert!(
            error.to_string().contains("missing field `open`"),
            "{error}"
        );
    }
}
