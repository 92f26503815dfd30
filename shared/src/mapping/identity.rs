//! A finding's identity (`externalFindingId`) is a function of its own record, never of where the
//! record arrives: the id the map gives it, and where several records of a scan share that id,
//! the id with a suffix derived from the record's identity fields (`<id>#<16 hex digits>`).
//! Which ids repeat is counted while the item is collected ([`IdTally`], reading the field the
//! map fills `externalFindingId` from), before any finding is written, so every record that shares
//! an id is told apart the same way whatever the order of pages and records.

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::Digest;

use super::extract::{text_of, walk_page};
use super::map::{PathTree, Plan};
use crate::Engine;
use crate::fingerprint::{CompactFingerprintSet, Fingerprints};

/// The fields that tell apart findings sharing an id: what stays the same for one finding from
/// scan to scan. Not its status, state, severity or dates (triage and time change them), nor its
/// lines and columns (an edit above the flaw moves them): the similarity id Checkmarx keeps
/// across code changes, the query, and the files the data flow starts and ends in.
///
/// SCA and containers ids are CVE ids: one CVE in many packages or images. Their identity is
/// the package (identifier, or name and version) and, for containers, the image and its tag.
/// KICS: the similarity id Checkmarx keeps for the issue, its file and line.
pub(crate) fn identity_sources(kind: Engine) -> &'static [&'static str] {
    match kind {
        Engine::Sast => &[
            "similarityId",
            "data.queryId",
            "data.nodes[first].fileName",
            "data.nodes[last].fileName",
        ],
        Engine::Sca => &[
            "data.packageIdentifier",
            "data.packageName",
            "data.packageVersion",
        ],
        Engine::Kics => &[
            "similarityId",
            "data.filename",
            "data.fileName",
            "data.line",
        ],
        Engine::Containers => &[
            "data.imageName",
            "data.imageTag",
            "data.packageName",
            "data.packageVersion",
        ],
        Engine::Dast => &["name", "url", "method", "path", "cwe_id", "scan_type"],
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

/// Counts the ids of an item's records, page by page, and names those more than one record
/// carries: each record's id is read where its engine's map reads `externalFindingId` from. Only
/// the records the connector ingests count (those of the maps' engines). The count is over every
/// engine at once, one pass per page: an id a SAST and a KICS record share is told apart too, so
/// ids stay unique within the asset all engines share.
pub struct IdTally {
    tree: PathTree,
    slots: Vec<Option<Value>>,
    /// The `type` slot, for records of project scans.
    kind: Option<usize>,
    /// Per map: its engine, the record types it takes and where its id is read.
    readers: Vec<(Engine, &'static [&'static str], usize)>,
    fingerprints: Fingerprints,
    /// The fingerprints of the ids counted so far: a set, not a count per id, as only a second
    /// sighting matters (about eight bytes an id where a count took seventeen).
    counted: CompactFingerprintSet,
    repeated: BTreeSet<String>,
}

impl IdTally {
    pub fn new(plans: &[&Plan]) -> Self {
        let (mut tree, mut slots) = (PathTree::default(), 0);
        let kind = plans
            .iter()
            .any(|p| p.kind.on_projects())
            .then(|| tree.slot_for("type", &mut slots));
        let readers = plans
            .iter()
            .filter_map(|plan| {
                let id = tree.slot_for(plan.id_source()?, &mut slots);
                Some((plan.kind, plan.kind.record_types(), id))
            })
            .collect();
        Self {
            tree,
            slots: vec![None; slots],
            kind,
            readers,
            fingerprints: Fingerprints::default(),
            counted: CompactFingerprintSet::default(),
            repeated: BTreeSet::new(),
        }
    }

    /// Counts one page (the records under `results`) of a scan that delivers `engines`: the
    /// records of other engines are not this item's findings (an older copy, from a scan pulled
    /// for another engine) and are not counted. A page that is not JSON counts what was read
    /// before the fault, one that is not UTF-8 nothing; collect has refused such a page before it
    /// is counted, and the transform refuses it too.
    pub fn add_page(&mut self, page: &[u8], engines: &[Engine]) {
        let readers: Vec<(&'static [&'static str], usize)> = self
            .readers
            .iter()
            .filter(|(engine, _, _)| engines.contains(engine))
            .map(|(_, types, slot)| (*types, *slot))
            .collect();
        if readers.is_empty() {
            return;
        }
        let kind_slot = self.kind;
        let (fingerprints, counted, repeated) =
            (&self.fingerprints, &mut self.counted, &mut self.repeated);
        let mut on_record = |_: u32, _: bool, slots: &mut [Option<Value>]| {
            let id_slot = match kind_slot {
                Some(kind) => {
                    let kind = slots[kind].as_ref().and_then(Value::as_str);
                    readers
                        .iter()
                        .find(|(types, _)| kind.is_some_and(|k| types.contains(&k)))
                        .map(|(_, slot)| *slot)
                }
                None => readers.first().map(|(_, slot)| *slot),
            };
            let Some(id) = id_slot.and_then(|slot| slots[slot].as_ref().and_then(text_of)) else {
                return;
            };
            if !counted.insert(fingerprints.of(id.as_bytes())) {
                repeated.insert(id);
            }
        };
        let _ = walk_page(page, "results", &self.tree, &mut self.slots, &mut on_record);
    }

    /// Forgets every id counted, for a pull that starts over.
    pub fn restart(&mut self) {
        self.counted = CompactFingerprintSet::default();
        self.repeated.clear();
    }

    /// Counts ids under `key` (see [`Fingerprints::keyed`]): the parts of a split scan, whose
    /// id sets are compared when they are joined.
    pub fn keyed(mut self, key: u64) -> Self {
        self.fingerprints = Fingerprints::keyed(key);
        self
    }

    /// The ids more than one counted record carries, sorted.
    pub fn repeated(self) -> Vec<String> {
        self.repeated.into_iter().collect()
    }

    /// The ids more than one counted record carries, sorted, and the fingerprint of every id
    /// counted, sorted.
    pub fn into_repeated_and_fingerprints(self) -> (Vec<String>, Vec<u64>) {
        (
            self.repeated.into_iter().collect(),
            self.counted.into_sorted(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_ids_are_counted_across_pages_for_the_ingested_engine_only() {
        let page = |records: Value| serde_json::to_vec(&json!({"results": records})).unwrap();
        let sast = crate::mapping::TransformMap::default_for(Engine::Sast)
            .compile()
            .unwrap();
        let mut tally = IdTally::new(&[&sast]);
        tally.add_page(
            &page(json!([
                {"type": "sast", "id": "a"},
                {"type": "sast", "id": 7},
                {"type": "sca", "id": "CVE-1"},
                {"type": "sca", "id": "CVE-1"},
                "not a record",
            ])),
            &[Engine::Sast],
        );
        tally.add_page(
            &page(json!([
                {"type": "sast", "id": "7"},
                {"type": "sast", "id": "b"},
                {"type": "sast", "id": "a"},
                {"type": "sast", "id": "a"},
            ])),
            &[Engine::Sast],
        );
        tally.add_page(b"{\"results\": [cut off", &[Engine::Sast]);
        assert_eq!(tally.repeated(), ["7", "a"]);

        let dast = crate::mapping::TransformMap::default_for(Engine::Dast)
            .compile()
            .unwrap();
        let mut tally = IdTally::new(&[&dast]);
        tally.add_page(
            &page(json!([{"id": "u"}, {"id": "u"}, {"id": "v"}])),
            &[Engine::Dast],
        );
        assert_eq!(tally.repeated(), ["u"]);

        // A map that fills `externalFindingId` from another field: that field is counted.
        let mut by_similarity = crate::mapping::TransformMap::default_for(Engine::Sast);
        for entry in &mut by_similarity.entries {
            if entry.target.ends_with("externalFindingId") {
                entry.source = "findings[].similarityId".into();
            }
        }
        let mut tally = IdTally::new(&[&by_similarity.compile().unwrap()]);
        tally.add_page(
            &page(json!([
                {"type": "sast", "id": "a", "similarityId": "-5"},
                {"type": "sast", "id": "b", "similarityId": "-5"},
                {"type": "sast", "id": "a", "similarityId": "-6"},
            ])),
            &[Engine::Sast],
        );
        assert_eq!(tally.repeated(), ["-5"]);
    }

    #[test]
    fn an_id_two_engines_share_is_repeated_in_one_pass_over_the_page() {
        let page = |records: Value| serde_json::to_vec(&json!({"results": records})).unwrap();
        let plans: Vec<Plan> = [Engine::Sast, Engine::Kics, Engine::Containers]
            .map(|e| {
                crate::mapping::TransformMap::default_for(e)
                    .compile()
                    .unwrap()
            })
            .into();
        let mut tally = IdTally::new(&plans.iter().collect::<Vec<_>>());
        tally.add_page(
            &page(json!([
                {"type": "sast", "id": "111914456"},
                {"type": "kics", "id": "111914456"},
                {"type": "kics", "id": "k"},
                {"type": "sca-container", "id": "CVE-1"},
                {"type": "containers", "id": "CVE-1"},
                {"type": "sca", "id": "k"},
                {"type": "sca", "id": "k"},
            ])),
            &[Engine::Sast, Engine::Kics, Engine::Containers],
        );
        assert_eq!(tally.repeated(), ["111914456", "CVE-1"], "SCA is not read");
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
