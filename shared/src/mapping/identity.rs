//! A finding's identity (`externalFindingId`) is a function of its own record, never of where the
//! record arrives: the id the map gives it, and where several findings of a scan share that id
//! (records that differ in an identity field), the id with a suffix derived from the record's
//! identity fields (`<id>#<16 hex digits>`). Which ids repeat is counted while the item is
//! collected ([`IdTally`], reading the field the map fills `externalFindingId` from), before any
//! finding is written, so every record that shares an id is told apart the same way whatever the
//! order of pages and records; one finding sent twice keeps its id.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::Digest;

use super::extract::{Shape, text_of, walk_page};
use super::map::{PathTree, Plan};
use crate::fingerprint::{CompactFingerprintSet, Fingerprints, TextSet};
use crate::{Engine, is_record_type_among};

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

/// Whether `id` ends as an id told apart with [`suffix`] does (`#` and 16 hex digits).
pub(crate) fn has_suffix_shape(id: &str) -> bool {
    id.rsplit_once('#').is_some_and(|(_, hex)| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
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
/// the records the connector ingests count (those of the maps' engines), and not the ids of SCA and
/// containers, which are told apart whether they repeat or not. The count is over every engine at
/// once, one pass per page: an id a SAST and a KICS record share is told apart too, so ids stay
/// unique within the asset all engines share.
///
/// Where some id came more than once, a second pass over the same pages
/// ([`add_identities`](Self::add_identities)) reads those records' identity fields: records alike
/// in every one are one finding sent twice (a list that moved while it was paged), which keeps its
/// id; only records that differ are told apart by their suffix. The first pass reads no identity
/// field, so a pull without repeats (nearly every pull) pays nothing for the second.
pub struct IdTally {
    ids: Reading,
    identity: Reading,
    fingerprints: Fingerprints,
    /// The fingerprints of the ids counted so far: a set, not a count per id, as only a second
    /// sighting matters (about eight bytes an id where a count took seventeen).
    counted: CompactFingerprintSet,
    repeated: BTreeSet<String>,
    /// Of each repeated id, the identities its records carry, once the second pass has read them.
    identities: BTreeMap<String, Identities>,
}

/// The identities the records of one repeated id carry.
enum Identities {
    /// Every record so far alike: of this engine, with this suffix (records of two engines that
    /// share an id are two findings, whatever their fields).
    One(Engine, String),
    Several,
}

/// The ids more than one record of an item carries, sorted.
#[derive(Debug, Default, PartialEq)]
pub struct Repeats {
    /// Ids several findings share: each finding's id takes its identity suffix.
    pub told_apart: Vec<String>,
    /// Ids one finding was sent under more than once, alike in every identity field: it keeps its
    /// id and is written once.
    pub sent_twice: Vec<String>,
}

/// [`Repeats`] as the transform looks them up: one for all of an item's transformers (an SCA
/// scan of millions of results repeats hundreds of thousands of CVE ids), the texts dropped.
#[derive(Default)]
pub struct RepeatedIds {
    pub told_apart: TextSet,
    pub sent_twice: TextSet,
}

impl From<Repeats> for RepeatedIds {
    fn from(repeats: Repeats) -> Self {
        Self {
            told_apart: repeats.told_apart.into_iter().collect(),
            sent_twice: repeats.sent_twice.into_iter().collect(),
        }
    }
}

impl IdTally {
    pub fn new(plans: &[&Plan]) -> Self {
        Self {
            ids: Reading::new(plans, false),
            identity: Reading::new(plans, true),
            fingerprints: Fingerprints::default(),
            counted: CompactFingerprintSet::default(),
            repeated: BTreeSet::new(),
            identities: BTreeMap::new(),
        }
    }

    /// Counts one page (the records under `results`) of a scan that delivers `engines`: the
    /// records of other engines are not this item's findings (an older copy, from a scan pulled
    /// for another engine) and are not counted. A page that is not JSON counts what was read
    /// before the fault, one that is not UTF-8 nothing; collect has refused such a page before it
    /// is counted, and the transform refuses it too.
    pub fn add_page(&mut self, page: &[u8], engines: &[Engine]) {
        let (fingerprints, counted, repeated) =
            (&self.fingerprints, &mut self.counted, &mut self.repeated);
        self.ids.walk(page, engines, &mut |id, _, _| {
            if !counted.insert(fingerprints.of(id.as_bytes())) {
                repeated.insert(id);
            }
        });
    }

    /// Whether an id came more than once: then the item's pages are read again with
    /// [`add_identities`](Self::add_identities), each as it was counted.
    pub fn needs_identities(&self) -> bool {
        !self.repeated.is_empty()
    }

    /// Reads the identity fields of the page's records whose id came more than once.
    pub fn add_identities(&mut self, page: &[u8], engines: &[Engine]) {
        let (repeated, identities) = (&self.repeated, &mut self.identities);
        self.identity.walk(page, engines, &mut |id, reader, slots| {
            if !repeated.contains(&id) {
                return;
            }
            let engine = reader.engine;
            let suffix = suffix(reader.identity.iter().map(|&s| slots[s].as_ref()));
            match identities.entry(id) {
                Entry::Vacant(first) => {
                    first.insert(Identities::One(engine, suffix));
                }
                Entry::Occupied(mut seen) => {
                    if matches!(seen.get(), Identities::One(e, s) if (*e, s) != (engine, &suffix)) {
                        seen.insert(Identities::Several);
                    }
                }
            }
        });
    }

    /// Forgets every id counted, for a pull that starts over.
    pub fn restart(&mut self) {
        self.counted = CompactFingerprintSet::default();
        self.repeated.clear();
        self.identities.clear();
    }

    /// Counts ids under `key` (see [`Fingerprints::keyed`]): the parts of a split scan, whose
    /// id sets are compared when they are joined.
    pub fn keyed(mut self, key: u64) -> Self {
        self.fingerprints = Fingerprints::keyed(key);
        self
    }

    /// The ids more than one counted record carries. An id whose identities were not read (no
    /// second pass) is told apart, as two findings sharing it would need.
    pub fn repeats(self) -> Repeats {
        let mut repeats = Repeats::default();
        for id in self.repeated {
            match self.identities.get(&id) {
                Some(Identities::One(..)) => repeats.sent_twice.push(id),
                Some(Identities::Several) | None => repeats.told_apart.push(id),
            }
        }
        repeats
    }

    /// [`repeats`](Self::repeats), and the fingerprint of every id counted, sorted.
    pub fn into_repeats_and_fingerprints(mut self) -> (Repeats, Vec<u64>) {
        let counted = std::mem::take(&mut self.counted);
        (self.repeats(), counted.into_sorted())
    }
}

/// Where a pass over a page reads each record's type, id and, for the second pass, identity
/// fields.
struct Reading {
    tree: PathTree,
    slots: Vec<Option<Value>>,
    /// The `type` slot, for records of project scans.
    kind: Option<usize>,
    readers: Vec<Reader>,
}

/// What a [`Reading`] hands each record with an id: the id, the record's reader, its slots.
type OnId<'a> = dyn FnMut(String, &Reader, &[Option<Value>]) + 'a;

/// Of one map: its engine, the record types it takes, where its id is read and where its
/// identity fields are (in [`identity_sources`]' order).
struct Reader {
    engine: Engine,
    types: &'static [&'static str],
    id: usize,
    identity: Vec<usize>,
}

impl Reading {
    fn new(plans: &[&Plan], with_identity: bool) -> Self {
        let (mut tree, mut slots) = (PathTree::default(), 0);
        let kind = plans
            .iter()
            .any(|p| p.kind.on_projects())
            .then(|| tree.slot_for("type", &mut slots));
        let readers = plans
            .iter()
            .filter(|plan| !plan.implicit.always_suffixed)
            .filter_map(|plan| {
                let id = tree.slot_for(plan.id_source()?, &mut slots);
                let identity = match with_identity {
                    true => identity_sources(plan.kind)
                        .iter()
                        .map(|source| tree.slot_for(source, &mut slots))
                        .collect(),
                    false => Vec::new(),
                };
                Some(Reader {
                    engine: plan.kind,
                    types: plan.kind.record_types(),
                    id,
                    identity,
                })
            })
            .collect();
        Self {
            tree,
            slots: vec![None; slots],
            kind,
            readers,
        }
    }

    /// Hands each record of `engines` that has an id to `on_id`, with its reader and the slots
    /// its fields were read into.
    fn walk(&mut self, page: &[u8], engines: &[Engine], on_id: &mut OnId) {
        let Self {
            tree,
            slots,
            kind,
            readers,
        } = self;
        let readers: Vec<&Reader> = readers
            .iter()
            .filter(|reader| engines.contains(&reader.engine))
            .collect();
        if readers.is_empty() {
            return;
        }
        let kind_slot = *kind;
        let mut on_record = |_: u32, _: Shape, slots: &mut [Option<Value>]| {
            let reader = match kind_slot {
                Some(kind) => {
                    let kind = slots[kind].as_ref().and_then(Value::as_str);
                    readers
                        .iter()
                        .find(|reader| kind.is_some_and(|k| is_record_type_among(reader.types, k)))
                }
                None => readers.first(),
            };
            let Some(reader) = reader else {
                return;
            };
            let Some(id) = slots[reader.id].as_ref().and_then(text_of) else {
                return;
            };
            on_id(id, reader, slots);
        };
        let _ = walk_page(page, "results", tree, slots, &mut on_record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each engine's default map, compiled.
    fn default_plans(engines: &[Engine]) -> Vec<Plan> {
        engines
            .iter()
            .map(|&e| {
                crate::mapping::TransformMap::default_for(e)
                    .compile()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn repeated_ids_are_counted_across_pages_for_the_ingested_engine_only() {
        let page = |records: Value| serde_json::to_vec(&json!({"results": records})).unwrap();
        let sast = default_plans(&[Engine::Sast]).remove(0);
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
        assert_eq!(tally.repeats().told_apart, ["7", "a"]);

        let dast = default_plans(&[Engine::Dast]).remove(0);
        let mut tally = IdTally::new(&[&dast]);
        tally.add_page(
            &page(json!([{"id": "u"}, {"id": "u"}, {"id": "v"}])),
            &[Engine::Dast],
        );
        assert_eq!(tally.repeats().told_apart, ["u"]);

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
        assert_eq!(tally.repeats().told_apart, ["-5"]);
    }

    #[test]
    fn an_id_two_engines_share_is_repeated_in_one_pass_over_the_page() {
        let page = |records: Value| serde_json::to_vec(&json!({"results": records})).unwrap();
        let plans = default_plans(&[Engine::Sast, Engine::Kics, Engine::Containers]);
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
        assert_eq!(
            tally.repeats().told_apart,
            ["111914456"],
            "SCA and containers ids, told apart whether they repeat or not, are not read"
        );
    }

    #[test]
    fn a_second_pass_tells_one_finding_sent_twice_from_findings_sharing_an_id() {
        let page = |records: Value| serde_json::to_vec(&json!({"results": records})).unwrap();
        let plans = default_plans(&[Engine::Sast, Engine::Sca]);
        let finding = |id: &str, similarity: &str, state: &str, last_file: &str| {
            json!({"type": "sast", "id": id, "similarityId": similarity, "state": state,
                   "data": {"queryId": 9, "nodes": [{"fileName": "a.java"}, {"fileName": last_file}]}})
        };
        let pages = [
            page(json!([
                finding("moved", "1", "TO_VERIFY", "b.java"),
                finding("two", "2", "TO_VERIFY", "b.java"),
                finding("once", "3", "TO_VERIFY", "b.java"),
                {"type": "sca", "id": "CVE-1", "data": {"packageIdentifier": "p"}},
            ])),
            page(json!([
                // Triaged while the list was paged: another state, the same identity.
                finding("moved", "1", "CONFIRMED", "b.java"),
                // The same id, another data flow's last file: another finding.
                finding("two", "2", "TO_VERIFY", "c.java"),
                finding("two", "2", "TO_VERIFY", "b.java"),
                {"type": "sca", "id": "CVE-1", "data": {"packageIdentifier": "q"}},
            ])),
        ];
        let mut tally = IdTally::new(&plans.iter().collect::<Vec<_>>());
        for page in &pages {
            tally.add_page(page, &[Engine::Sast, Engine::Sca]);
        }
        assert!(tally.needs_identities());
        for page in &pages {
            tally.add_identities(page, &[Engine::Sast, Engine::Sca]);
        }
        assert_eq!(
            tally.repeats(),
            Repeats {
                told_apart: vec!["two".into()],
                sent_twice: vec!["moved".into()],
            }
        );

        // A SAST and a KICS record sharing an id, neither with an identity field: two findings.
        let plans = default_plans(&[Engine::Sast, Engine::Kics]);
        let bare = page(json!([{"type": "sast", "id": "k"}, {"type": "kics", "id": "k"}]));
        let mut tally = IdTally::new(&plans.iter().collect::<Vec<_>>());
        tally.add_page(&bare, &[Engine::Sast, Engine::Kics]);
        tally.add_identities(&bare, &[Engine::Sast, Engine::Kics]);
        assert_eq!(tally.repeats().told_apart, ["k"]);

        let mut clean = IdTally::new(&plans.iter().collect::<Vec<_>>());
        clean.add_page(&pages[0], &[Engine::Sast, Engine::Sca]);
        assert!(
            !clean.needs_identities(),
            "no second pass where no id repeats"
        );
        assert_eq!(clean.repeats(), Repeats::default());
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
