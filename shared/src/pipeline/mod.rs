//! The pipeline: a connection's run from trigger to commit, as plain async steps over the object
//! store port. The Lambda functions and the local runner call the same steps.
//!
//! Bucket layout (keys are deterministic, so a retried step rewrites the same objects):
//! ```text
//! connections/<c>/config.json | state.json | lock
//! connections/<c>/runs/<r>/run.json | work.jsonl | manifest.json | _COMMITTED
//! connections/<c>/runs/<r>/raw/<item>/item.json.gz | <page>.json.gz | original-<page>.json.gz | collect.json
//! connections/<c>/runs/<r>/etm/<item>/<page>.ndjson.gz | closures.ndjson.gz | transform.json
//! connections/<c>/runs/<r>/ledger/<item>.json.gz
//! ```

mod config;
mod lifecycle;
mod runner;
mod selection;
mod steps;

use std::io::{Read, Write};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use config::{BranchPolicy, Connection, ConnectionConfig, Filters, Schedule};
pub use lifecycle::{RunRecord, RunState, StateDocument, Trigger, begin_run, fail_run, read_state};
pub use runner::{LOCK_LEASE, RunSummary, StageTimes, run_connection};
pub use steps::{
    CollectOutcome, DeletedItem, FilteredItem, ItemStatus, ItemTraffic, Manifest, ManifestItem,
    ObjectEntry, StepError, TransformRecord, VendorAccess, WorkItem, collect, finalize, plan,
    read_work_list, transform,
};

use crate::store::{ObjectStore, StoreError};

/// Keys of one run in the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    pub connection_id: String,
    pub run_id: String,
}

impl RunRef {
    fn base(&self) -> String {
        format!("connections/{}/runs/{}", self.connection_id, self.run_id)
    }
    pub fn run_record(&self) -> String {
        format!("{}/run.json", self.base())
    }
    pub fn work_list(&self) -> String {
        format!("{}/work.jsonl", self.base())
    }
    pub fn raw_prefix(&self, item: &str) -> String {
        format!("{}/raw/{item}/", self.base())
    }
    pub fn etm_prefix(&self, item: &str) -> String {
        format!("{}/etm/{item}/", self.base())
    }
    /// The asset's ledger as of this run (what has been reported for it, open or fixed).
    pub fn ledger(&self, item: &str) -> String {
        format!("{}{item}.json.gz", self.ledger_prefix())
    }
    pub fn ledger_prefix(&self) -> String {
        format!("{}/ledger/", self.base())
    }
    /// Items the connection's filters left out of the run, with the reason.
    pub fn filtered_list(&self) -> String {
        format!("{}/filtered.json", self.base())
    }
    pub fn manifest(&self) -> String {
        format!("{}/manifest.json", self.base())
    }
    pub fn commit_marker(&self) -> String {
        format!("{}/_COMMITTED", self.base())
    }
}

pub fn config_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/config.json")
}

pub fn state_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/state.json")
}

pub fn lock_key(connection_id: &str) -> String {
    format!("connections/{connection_id}/lock")
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

pub(crate) fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    Bytes::from(encoder.finish().expect("writing to a Vec cannot fail"))
}

pub(crate) fn gunzip(key: &str, bytes: &[u8]) -> Result<Vec<u8>, StepError> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| StepError::fatal(format!("{key}: not gzip ({e})")))?;
    Ok(out)
}

pub(crate) async fn put_json(
    store: &impl ObjectStore,
    key: &str,
    value: &impl Serialize,
) -> Result<(), StepError> {
    let body = serde_json::to_vec_pretty(value).expect("records serialize");
    store
        .put(key, Bytes::from(body))
        .await
        .map_err(StepError::from)
}

pub(crate) async fn get_json<T: DeserializeOwned>(
    store: &impl ObjectStore,
    key: &str,
) -> Result<Option<T>, StepError> {
    match store.get(key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StepError::fatal(format!("{key}: unreadable ({e})"))),
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::retryable(error.to_string())
    }
}

/// Now, RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::item_key;
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

    proptest! {
        #[test]
        fn distinct_ids_never_share_a_key(a in ".{0,140}", b in ".{0,140}") {
            prop_assert!(is_segment(&item_key(&a)));
            if a != b {
                prop_assert_ne!(item_key(&a), item_key(&b));
            }
        }
    }
}
