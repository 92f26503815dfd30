//! A finding's identity (`externalFindingId`) is a function of its own record, never of where the
//! record arrives: the vendor's id, and where the vendor gives one id to several records of a
//! scan, that id with a suffix derived from the record's identity fields (`<id>#<16 hex digits>`).
//! Which ids repeat is counted while the item is collected ([`IdTally`]), before any finding is
//! written, so every record that shares an id is told apart the same way whatever the order of
//! pages and records.

use std::collections::{BTreeSet, HashMap};

use serde::de::DeserializeSeed;
use serde_json::Value;
use sha2::Digest;

use super::extract::PageSeed;
use super::map::PathTree;
use crate::ConnectorKind;

/// The fields that tell apart findings sharing a vendor id: what stays the same for one finding
/// from scan to scan (not its status, state, severity or dates, which triage and time change).
pub(crate) fn identity_sources(kind: ConnectorKind) -> &'static [&'static str] {
    match kind {
        ConnectorKind::Sast => &[
            "similarityId",
            "data.queryId",
            "data.resultHash",
            "data.nodes[first].fileName",
            "data.nodes[first].line",
            "data.nodes[first].column",
            "data.nodes[last].fileName",
            "data.nodes[last].line",
            "data.nodes[last].column",
        ],
        ConnectorKind::Dast => &["name", "url", "method", "path", "cwe_id", "scan_type"],
    }
}

/// The suffix of a repeated id: 16 hex digits of the SHA-256 of the identity fields' values.
pub(crate) fn suffix<'v>(values: impl Iterator<Item = Option<&'v Value>>) -> String {
    let mut hasher = sha2::Sha256::new();
    for value in values {
        match value {
            Some(value) => hasher.update(value.to_string().as_bytes()),
            None => hasher.update(b"-"),
        }
        hasher.update([0x1f]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Counts the vendor ids of an item's records, page by page, and names those more than one record
/// carries. Only the records the connector ingests count (SAST: `type: sast`).
pub struct IdTally {
    tree: PathTree,
    slots: Vec<Option<Value>>,
    id: usize,
    kind: Option<usize>,
    counts: HashMap<u64, u32>,
    repeated: BTreeSet<String>,
}

impl IdTally {
    pub fn new(kind: ConnectorKind) -> Self {
        let (mut tree, mut slots) = (PathTree::default(), 0);
        let id = tree.slot_for("id", &mut slots);
        let kind = (kind == ConnectorKind::Sast).then(|| tree.slot_for("type", &mut slots));
        Self {
            tree,
            slots: vec![None; slots],
            id,
            kind,
            counts: HashMap::new(),
            repeated: BTreeSet::new(),
        }
    }

    /// Counts one page (the records under `results`). A page that cannot be read counts what was
    /// read before the fault; the transform refuses such a page anyway.
    pub fn add_page(&mut self, page: &[u8]) {
        let (id_slot, kind_slot) = (self.id, self.kind);
        let (counts, repeated) = (&mut self.counts, &mut self.repeated);
        let mut on_record = |_: u32, _: bool, slots: &[Option<Value>]| {
            if let Some(kind) = kind_slot
                && slots[kind].as_ref().and_then(Value::as_str) != Some("sast")
            {
                return;
            }
            let id = match &slots[id_slot] {
                Some(Value::String(id)) => id.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return,
            };
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&id, &mut hasher);
            let seen = counts
                .entry(std::hash::Hasher::finish(&hasher))
                .or_default();
            *seen += 1;
            if *seen == 2 {
                repeated.insert(id);
            }
        };
        let mut deserializer = serde_json::Deserializer::from_slice(page);
        let _ = PageSeed {
            list_key: "results",
            tree: &self.tree,
            slots: &mut self.slots,
            on_record: &mut on_record,
        }
        .deserialize(&mut deserializer);
    }

    /// The ids more than one counted record carries, sorted.
    pub fn repeated(self) -> Vec<String> {
        self.repeated.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_ids_are_counted_across_pages_for_the_ingested_engine_only() {
        let page = |records: Value| serde_json::to_vec(&json!({"results": records})).unwrap();
        let mut tally = IdTally::new(ConnectorKind::Sast);
        tally.add_page(&page(json!([
            {"type": "sast", "id": "a"},
            {"type": "sast", "id": 7},
            {"type": "sca", "id": "CVE-1"},
            {"type": "sca", "id": "CVE-1"},
            "not a record",
        ])));
        tally.add_page(&page(json!([
            {"type": "sast", "id": "7"},
            {"type": "sast", "id": "b"},
            {"type": "sast", "id": "a"},
            {"type": "sast", "id": "a"},
        ])));
        tally.add_page(b"{\"results\": [cut off");
        assert_eq!(tally.repeated(), ["7", "a"]);

        let mut dast = IdTally::new(ConnectorKind::Dast);
        dast.add_page(&page(json!([{"id": "u"}, {"id": "u"}, {"id": "v"}])));
        assert_eq!(dast.repeated(), ["u"]);
    }

    #[test]
    fn the_suffix_depends_on_the_values_and_their_places_only() {
        let (one, two) = (json!("x"), json!(12));
        let a = suffix([Some(&one), None, Some(&two)].into_iter());
        assert_eq!(a.len(), 16);
        assert_eq!(a, suffix([Some(&one), None, Some(&two)].into_iter()));
        assert_ne!(a, suffix([None, Some(&one), Some(&two)].into_iter()));
        assert_ne!(a, suffix([Some(&two), None, Some(&one)].into_iter()));
    }
}
