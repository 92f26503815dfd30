//! The bucket layout: every key the connector reads or writes is built (or read back) here, for
//! the steps, the S3 adapter's tagging, replay and the CLI alike. Keys are deterministic, so a
//! retried step rewrites the same objects.
//!
//! ```text
//! connections/<c>/config.json | state.json | lock | lock-takeovers/<stale run>
//! connections/<c>/runs/<r>/run.json | config.json | plan.json
//! connections/<c>/runs/<r>/plan/work.jsonl | <attempt>/work.jsonl | <attempt>/filtered.json
//! connections/<c>/runs/<r>/manifest.json | _COMMITTED
//! connections/<c>/runs/<r>/raw/<item>/<page>.json.zst | original-<page>.json.zst | collect.json (with the record)
//! connections/<c>/runs/<r>/raw/<item>/part-<k>.json | part-<k>-progress.json | part-<k>-fingerprints.bin.zst (a split scan's parts)
//! connections/<c>/runs/<r>/etm/<item>/<page>.ndjson.gz | closures.ndjson.gz | moved-closures.ndjson.gz | transform.json
//! connections/<c>/runs/<r>/ledger/<item>.json.gz
//! ```
//!
//! `<item>` is [`item_key`] of the vendor id: one-to-one, so hostile ids never share a folder.

use serde::{Deserialize, Serialize};

use crate::packing::{GZIP_PAGE_SUFFIX, PAGE_SUFFIX};

/// The project or environment record in an item's raw folder, as runs wrote it before it moved into `collect.json`.
pub const RAW_RECORD: &str = "item.json.gz";
/// Collect's outcome (status, completeness, traffic), in an item's raw folder.
pub const COLLECT_OUTCOME: &str = "collect.json";
/// How far an unfinished collect got, in an item's raw folder: the next attempt goes on from it.
pub const COLLECT_PROGRESS: &str = "progress.json";
/// A record the plan found too large to carry in the work list, in an item's raw folder.
pub const PLANNED_RECORD: &str = "item.json";
/// The DAST scan the run's first collect of an environment chose, in its raw folder: every
/// attempt of the run pulls that scan.
pub const DAST_SCAN: &str = "dast-scan.json";
/// Closure records of findings no longer reported, in an item's etm folder.
pub const CLOSURES: &str = "closures.ndjson.gz";
/// Closure records of the findings an engine had open on the asset the transform map moved it
/// from, in an item's etm folder (its name ends as [`CLOSURES`] does, which the tests read).
pub const MOVED_CLOSURES: &str = "moved-closures.ndjson.gz";
/// Every rejected record of an item that had more than the manifest lists: one JSON line each.
pub const REJECTED: &str = "rejected.ndjson.gz";
/// Every collision of an item that had more than the manifest lists: one JSON line each.
pub const COLLISIONS: &str = "collisions.ndjson.gz";
/// The transform's record (figures, rejected records, objects), in an item's etm folder.
pub const TRANSFORM_RECORD: &str = "transform.json";

const RAW_SEGMENT: &str = "/raw/";
const ORIGINAL_PREFIX: &str = "original-";
const PART_PREFIX: &str = "part-";

/// A raw results page: `<page>.json.zst` (`<page>.json.gz` in runs before zstd).
pub fn raw_page_file(page: u32) -> String {
    format!("{page}{PAGE_SUFFIX}")
}

/// A raw page of severities before triage: `original-<page>.json.zst`.
pub fn original_page_file(page: u32) -> String {
    format!("{ORIGINAL_PREFIX}{page}{PAGE_SUFFIX}")
}

/// Where a run before zstd wrote the raw page `key` names: the same name, gzip'd.
pub fn gzip_page_key(key: &str) -> Option<String> {
    key.strip_suffix(PAGE_SUFFIX)
        .map(|stem| format!("{stem}{GZIP_PAGE_SUFFIX}"))
}

/// A batch file of one page's findings: `<page>.ndjson.gz`.
pub fn etm_page_file(page: u32) -> String {
    format!("{page}.ndjson.gz")
}

/// What a file of an item's raw folder holds, read back from its name (zstd, gzip'd as older runs
/// wrote pages, or unpacked, as replay accepts copies unpacked by hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawFile {
    /// `item.json`: the project or environment record, as runs wrote it before it moved into
    /// `collect.json`, as the plan stores one too large for the work list, and as a folder put
    /// together by hand for replay may hold it.
    Record,
    CollectOutcome,
    CollectProgress,
    /// `dast-scan.json`: the DAST scan the run chose for the environment.
    DastScan,
    /// A part's outcome or progress (a split scan): the item's `collect.json` holds what the
    /// parts got, joined.
    Part,
    Page(u32),
    OriginalPage(u32),
    /// JSON named like none of the above.
    Misnamed,
}

impl RawFile {
    /// `None` for a file that is not JSON.
    pub fn from_name(name: &str) -> Option<Self> {
        let stem = name
            .strip_suffix(PAGE_SUFFIX)
            .or_else(|| name.strip_suffix(GZIP_PAGE_SUFFIX))
            .or_else(|| name.strip_suffix(".json"))?;
        let page =
            |number: &str, as_file: fn(u32) -> Self| number.parse().map_or(Self::Misnamed, as_file);
        Some(match stem {
            "item" => Self::Record,
            "collect" => Self::CollectOutcome,
            "progress" => Self::CollectProgress,
            "dast-scan" => Self::DastScan,
            _ if stem.starts_with(PART_PREFIX) => Self::Part,
            _ => match stem.strip_prefix(ORIGINAL_PREFIX) {
                Some(number) => page(number, Self::OriginalPage),
                None => page(stem, Self::Page),
            },
        })
    }
}

/// True for a key under a run's `raw/` or `plan/` folder (`connections/<c>/runs/<r>/raw/…`, the
/// pages and records of each item; `…/plan/…`, the work lists, which carry the vendor's project
/// and environment records): vendor data the bucket's lifecycle rule expires. By position, not by
/// a `/raw/` anywhere: `raw` is a valid connection id, and its config and ledgers are not raw.
pub fn is_raw(key: &str) -> bool {
    let segments: Vec<&str> = key.splitn(6, '/').collect();
    matches!(
        segments[..],
        ["connections", _, "runs", _, "raw" | "plan", ..]
    )
}

pub fn config_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/config.json")
}

/// The config a schedule last stored from the stack's parameters: while the connection's config
/// is still this one (no `cxone-etm connection put` since), a redeploy's parameters replace it.
pub fn schedule_config_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/schedule-config.json")
}

pub fn state_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/state.json")
}

pub fn lock_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/lock")
}

/// The claim on the commit after run `previous` (`None`: the connection's first commit): written
/// once, conditionally, by the one run that commits against `previous`, before its `_COMMITTED`
/// marker and with the marker's body. The claims chain each commit to the next: only the newest
/// one's is free, and followed from any committed run they lead to the newest.
pub fn commit_claim_key(connection_id: &str, previous: Option<&str>) -> String {
    format!(
        "connections/{connection_id}/commits/after-{}.json",
        previous.unwrap_or("none")
    )
}

/// The record that one runner took over the stale lock of `stale_run` (written once, conditionally).
pub fn lock_takeover_key(connection_id: &str, stale_run: &str) -> String {
    format!("{}-takeovers/{stale_run}", lock_key(connection_id))
}

/// Whether `name` has a run id's form (`20261122T204900Z-1a2b3c`, as the trigger makes them).
pub fn is_run_id(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() == 23
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'T'
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && &bytes[15..17] == b"Z-"
        && bytes[17..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Keys of one run in the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    pub connection_id: String,
    pub run_id: String,
}

impl RunRef {
    /// Another run of the same connection.
    pub fn sibling(&self, run_id: &str) -> Self {
        Self {
            connection_id: self.connection_id.clone(),
            run_id: run_id.to_string(),
        }
    }

    fn base(&self) -> String {
        format!("connections/{}/runs/{}", self.connection_id, self.run_id)
    }
    pub fn run_record(&self) -> String {
        format!("{}/run.json", self.base())
    }
    /// The connection's config as the run began: every step of the run reads it, so a config
    /// put during the run applies from the next.
    pub fn config(&self) -> String {
        format!("{}/config.json", self.base())
    }
    /// The work list of the plan that stands, where the state machine's map reads it (the key the
    /// execution's input names): every plan attempt writes the same bytes here. (Runs before the
    /// plan stood wrote theirs at `work.jsonl`, which a finalize of this version does not read,
    /// nor one of those versions this.)
    pub fn work_list(&self) -> String {
        format!("{}/plan/work.jsonl", self.base())
    }
    /// The plan that stands: the first plan attempt to write it (only where none is) names its
    /// own objects, the run it reconciles against and what its listing found wrong.
    pub fn plan(&self) -> String {
        format!("{}/plan.json", self.base())
    }
    /// One plan attempt's work list, written before it tries to write [`Self::plan`].
    pub fn attempt_work_list(&self, attempt: &str) -> String {
        format!("{}/plan/{attempt}/work.jsonl", self.base())
    }
    /// One plan attempt's items the connection's filters left out, with the reason.
    pub fn attempt_filtered_list(&self, attempt: &str) -> String {
        format!("{}/plan/{attempt}/filtered.json", self.base())
    }
    pub fn manifest(&self) -> String {
        format!("{}/manifest.json", self.base())
    }
    pub fn commit_marker(&self) -> String {
        format!("{}/_COMMITTED", self.base())
    }

    pub fn raw_prefix(&self, item: &str) -> String {
        format!("{}{RAW_SEGMENT}{item}/", self.base())
    }
    pub fn raw_page(&self, item: &str, page: u32) -> String {
        format!("{}{}", self.raw_prefix(item), raw_page_file(page))
    }
    pub fn original_page(&self, item: &str, page: u32) -> String {
        format!("{}{}", self.raw_prefix(item), original_page_file(page))
    }
    /// An item's project or environment record, where the plan found it too large to carry in
    /// the work list: `item.json`.
    pub fn item_record(&self, item: &str) -> String {
        format!("{}{PLANNED_RECORD}", self.raw_prefix(item))
    }
    pub fn dast_scan(&self, item: &str) -> String {
        format!("{}{DAST_SCAN}", self.raw_prefix(item))
    }
    pub fn collect_outcome(&self, item: &str) -> String {
        format!("{}{COLLECT_OUTCOME}", self.raw_prefix(item))
    }
    pub fn collect_progress(&self, item: &str) -> String {
        format!("{}{COLLECT_PROGRESS}", self.raw_prefix(item))
    }
    /// Collect's outcome of one part of a split scan: `part-<k>.json`.
    pub fn part_outcome(&self, item: &str, part: u32) -> String {
        format!("{}{PART_PREFIX}{part}.json", self.raw_prefix(item))
    }
    /// The fingerprints of one part's records and ids, for the join: `part-<k>-fingerprints.bin.zst`.
    pub fn part_fingerprints(&self, item: &str, part: u32) -> String {
        format!(
            "{}{PART_PREFIX}{part}-fingerprints.bin.zst",
            self.raw_prefix(item)
        )
    }
    /// How far the collect of one part of a split scan got: `part-<k>-progress.json`.
    pub fn part_progress(&self, item: &str, part: u32) -> String {
        format!("{}{PART_PREFIX}{part}-progress.json", self.raw_prefix(item))
    }

    pub fn etm_prefix(&self, item: &str) -> String {
        format!("{}/etm/{item}/", self.base())
    }
    pub fn etm_page(&self, item: &str, page: u32) -> String {
        format!("{}{}", self.etm_prefix(item), etm_page_file(page))
    }
    pub fn closures(&self, item: &str) -> String {
        format!("{}{CLOSURES}", self.etm_prefix(item))
    }
    pub fn moved_closures(&self, item: &str) -> String {
        format!("{}{MOVED_CLOSURES}", self.etm_prefix(item))
    }
    pub fn rejected(&self, item: &str) -> String {
        format!("{}{REJECTED}", self.etm_prefix(item))
    }
    pub fn collisions(&self, item: &str) -> String {
        format!("{}{COLLISIONS}", self.etm_prefix(item))
    }
    pub fn transform_record(&self, item: &str) -> String {
        format!("{}{TRANSFORM_RECORD}", self.etm_prefix(item))
    }

    /// The asset's ledger as of this run (what has been reported for it, open or fixed).
    pub fn ledger(&self, item: &str) -> String {
        format!("{}{item}.json.gz", self.ledger_prefix())
    }
    pub fn ledger_prefix(&self) -> String {
        format!("{}/ledger/", self.base())
    }
    /// The item of a key under [`Self::ledger_prefix`].
    pub fn ledger_item<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.ledger_prefix())?
            .strip_suffix(".json.gz")
    }
}

/// A vendor id as one key segment, one-to-one: letters, digits, `-` and `_` stay as they are,
/// every other byte becomes `~` and two hex digits (so `a/b`, `a_b` and `..` stay apart and no
/// segment is `.` or `..`); an encoding over 100 characters keeps its first 80 and adds `~~` and
/// 16 hex digits of the id's SHA-256 (`~~` never occurs in a short encoding).
pub fn item_key(vendor_id: &str) -> String {
    const LIMIT: usize = 100;
    let mut key = String::with_capacity(vendor_id.len());
    for byte in vendor_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            key.push(byte as char);
        } else {
            key.push_str(&format!("~{byte:02X}"));
        }
    }
    if key.is_empty() {
        return "~".to_string();
    }
    if key.len() > LIMIT {
        use sha2::Digest;
        let digest = hex::encode(&sha2::Sha256::digest(vendor_id.as_bytes())[..8]);
        key.truncate(80);
        key.push_str("~~");
        key.push_str(&digest);
    }
    key
}

/// The vendor id an [`item_key`] encodes; `None` for a key that holds only its id's start and
/// a hash (an encoding over 100 characters) or that no id encodes to.
pub fn vendor_id_of_key(key: &str) -> Option<String> {
    if key == "~" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(key.len());
    let mut rest = key.as_bytes();
    while let Some((&first, after)) = rest.split_first() {
        if first == b'~' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(first);
            rest = after;
        }
    }
    let id = String::from_utf8(bytes).ok()?;
    (item_key(&id) == key).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_segment(key: &str) -> bool {
        !key.is_empty()
            && key.len() <= 100
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~')
    }

    #[test]
    fn hostile_ids_get_distinct_safe_keys() {
        let ids = ["a/b", "a_b", "a~2Fb", "..", ".", "", "~", "a b", "ü", "%2F"];
        let keys: std::collections::BTreeSet<String> = ids.iter().map(|i| item_key(i)).collect();
        assert_eq!(keys.len(), ids.len(), "{keys:?}");
        assert!(keys.iter().all(|k| is_segment(k)), "{keys:?}");
        // Checkmarx One ids (UUIDs) are kept as they are.
        let uuid = "520b4930-0200-0000-0200-000000be5614";
        assert_eq!(item_key(uuid), uuid);
        let long_a = "x".repeat(300);
        let long_b = format!("{}y", "x".repeat(299));
        assert_ne!(item_key(&long_a), item_key(&long_b));
        assert!(is_segment(&item_key(&long_a)));
    }

    #[test]
    fn raw_file_names_read_back_as_what_they_hold() {
        let run = RunRef {
            connection_id: "c".into(),
            run_id: "r".into(),
        };
        for (key, file) in [
            (
                format!("{}{RAW_RECORD}", run.raw_prefix("i")),
                RawFile::Record,
            ),
            (run.collect_outcome("i"), RawFile::CollectOutcome),
            (run.collect_progress("i"), RawFile::CollectProgress),
            (run.item_record("i"), RawFile::Record),
            (run.dast_scan("i"), RawFile::DastScan),
            (run.raw_page("i", 12), RawFile::Page(12)),
            (run.original_page("i", 3), RawFile::OriginalPage(3)),
            (run.part_outcome("i", 2), RawFile::Part),
            (run.part_progress("i", 2), RawFile::Part),
        ] {
            assert!(is_raw(&key), "{key}");
            let name = key.strip_prefix(&run.raw_prefix("i")).unwrap();
            assert_eq!(RawFile::from_name(name), Some(file), "{name}");
        }
        assert_eq!(RawFile::from_name("0.json"), Some(RawFile::Page(0)));
        assert_eq!(RawFile::from_name("7.json.gz"), Some(RawFile::Page(7)));
        assert_eq!(
            RawFile::from_name("original-2.json.gz"),
            Some(RawFile::OriginalPage(2))
        );
        assert_eq!(
            gzip_page_key(&run.raw_page("i", 12)),
            Some(format!("{}12.json.gz", run.raw_prefix("i")))
        );
        assert_eq!(gzip_page_key(&run.ledger("i")), None);
        assert_eq!(
            RawFile::from_name("page-a.json.gz"),
            Some(RawFile::Misnamed)
        );
        assert_eq!(RawFile::from_name("notes.txt"), None);
        assert!(!is_raw(&run.etm_page("i", 0)));
        // The work lists carry the vendor's records; the plan that names them does not.
        for key in [
            run.work_list(),
            run.attempt_work_list("0123456789abcdef"),
            run.attempt_filtered_list("0123456789abcdef"),
        ] {
            assert!(is_raw(&key), "{key}");
        }
        assert!(!is_raw(&run.plan()));
        assert!(!is_raw(&run.run_record()));
        // A connection named `raw` (a valid id): only its runs' raw folders are raw.
        let named_raw = RunRef {
            connection_id: "raw".into(),
            run_id: "r1".into(),
        };
        assert!(!is_raw(&config_key("raw")));
        assert!(!is_raw(&named_raw.ledger("raw")));
        assert!(!is_raw(&named_raw.manifest()));
        assert!(is_raw(&named_raw.raw_page("raw", 0)));
        assert_eq!(run.ledger_item(&run.ledger("a~2Fb")), Some("a~2Fb"));
        assert_eq!(run.ledger_item(&run.manifest()), None);
    }

    proptest! {
        #[test]
        fn distinct_ids_never_share_a_key(a in ".{0,140}", b in ".{0,140}") {
            prop_assert!(is_segment(&item_key(&a)));
            if a != b {
                prop_assert_ne!(item_key(&a), item_key(&b));
            }
        }

        #[test]
        fn a_key_gives_back_its_id_unless_it_holds_a_hash(
            id in prop_oneof![".{0,140}", "[a-zA-Z0-9@/_~.%-]{0,60}"],
        ) {
            let key = item_key(&id);
            let back = vendor_id_of_key(&key);
            if key.contains("~~") {
                prop_assert_eq!(back, None);
            } else {
                prop_assert_eq!(back, Some(id));
            }
        }
    }
}
