//! Reading and writing the stored objects: JSON documents, gzip'd JSON (ledgers), raw pages
//! (packed as [`crate::packing`] says) and gzip'd batch files with their manifest entry.

use std::io::Write;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::documents::ObjectEntry;
use super::error::StepError;
use crate::layout::gzip_page_key;
use crate::mapping::LineSink;
use crate::packing::{page_checksum, unpack_into};
use crate::store::ObjectStore;

/// The SHA-256 of a stored body, in hex: what manifests and commit markers name objects by.
pub(super) fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
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

/// What writing a document only where none is found.
pub(super) enum Once<T> {
    /// This one was written.
    Written,
    /// Another writer's stood already: this one was not written.
    Standing(T),
}

/// Writes a JSON document only where none is (`If-None-Match: *`), and answers the one that
/// stands where another writer came first. One whose write is still in flight (S3 answers 409)
/// is a store error: the next attempt reads what it wrote. One that cannot be read is
/// `BadObject`. One of exactly this write's bytes is this write's (a retry of it that landed met
/// it): taken for another's, a plan would delete the work list it names.
pub(super) async fn put_json_once<T: Serialize + DeserializeOwned>(
    store: &impl ObjectStore,
    key: &str,
    value: &T,
) -> Result<Once<T>, StepError> {
    let body = Bytes::from(serde_json::to_vec_pretty(value).expect("records serialize"));
    if store.put_if_absent(key, body.clone()).await? {
        return Ok(Once::Written);
    }
    match store.get(key).await? {
        Some(earlier) if earlier == body => Ok(Once::Written),
        Some(earlier) => serde_json::from_slice(&earlier)
            .map(Once::Standing)
            .map_err(|e| StepError::bad_object(key, format!("unreadable ({e})"))),
        None => Err(StepError::Store(crate::store::StoreError::Failed {
            location: key.to_string(),
            problem:
                "another write of it was in flight; the step is retried and reads what it wrote"
                    .into(),
        })),
    }
}

pub(crate) async fn get_json<T: DeserializeOwned>(
    store: &impl ObjectStore,
    key: &str,
) -> Result<Option<T>, StepError> {
    match store.get(key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StepError::bad_object(key, format!("unreadable ({e})"))),
    }
}

/// Writes batch lines as one gzip object as `write` hands them over, and returns its manifest
/// entry: the closures of an asset of millions of findings, more lines than memory holds, go
/// through the compressor into the store one at a time. `write` returns how many findings the
/// lines hold.
pub(super) async fn put_lines_written<W>(
    store: &impl ObjectStore,
    key: &str,
    write: W,
) -> Result<ObjectEntry, StepError>
where
    W: FnOnce(&mut LineSink) -> std::io::Result<u64> + Send,
{
    let mut made = None;
    store
        .put_written(key, |out| {
            made = Some(gzip_lines(key, out, write)?);
            Ok(())
        })
        .await?;
    Ok(made.expect("put_written succeeded without running write"))
}

/// Batch lines as one gzip object, with its manifest entry: for the lines of a page, made beside
/// other work and stored after.
pub(super) fn pack_lines(key: &str, lines: &[Vec<u8>], findings: u64) -> (ObjectEntry, Bytes) {
    let mut body = Vec::new();
    let entry = gzip_lines(key, &mut body, |out| {
        lines.iter().try_for_each(|line| out(line))?;
        Ok(findings)
    })
    .expect("writing to memory cannot fail");
    (entry, Bytes::from(body))
}

/// Lines gzip'd as they come, held packed until the object is stored ([`LinePacker::finish`]):
/// for lines that come one by one over a long task, few enough packed to hold.
pub(super) struct LinePacker {
    encoder: flate2::write::GzEncoder<Vec<u8>>,
    lines: u64,
}

impl LinePacker {
    pub(super) fn new() -> Self {
        Self {
            encoder: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            lines: 0,
        }
    }

    /// Adds one line (its newline added here).
    pub(super) fn push(&mut self, line: &[u8]) {
        self.encoder
            .write_all(line)
            .and_then(|()| self.encoder.write_all(b"\n"))
            .expect("writing to memory cannot fail");
        self.lines += 1;
    }

    /// The packed object and its manifest entry (no findings: not a batch).
    pub(super) fn finish(self, key: &str) -> (ObjectEntry, Bytes) {
        let body = self
            .encoder
            .finish()
            .expect("writing to memory cannot fail");
        let entry = ObjectEntry {
            key: key.to_string(),
            lines: self.lines,
            findings: 0,
            bytes: body.len() as u64,
            sha256: sha256_hex(&body),
        };
        (entry, Bytes::from(body))
    }
}

/// How the pipeline makes a batch object: the lines `write` hands over, gzip'd at the fastest level
/// into `out`, and the manifest entry of the bytes written.
fn gzip_lines(
    key: &str,
    out: &mut dyn Write,
    write: impl FnOnce(&mut LineSink) -> std::io::Result<u64>,
) -> std::io::Result<ObjectEntry> {
    let mut counted = Digested {
        out,
        digest: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = flate2::write::GzEncoder::new(&mut counted, flate2::Compression::fast());
    let mut lines = 0;
    let findings = write(&mut |line| {
        lines += 1;
        encoder.write_all(line)
    })?;
    encoder.finish()?;
    Ok(ObjectEntry {
        key: key.to_string(),
        lines,
        findings,
        bytes: counted.bytes,
        sha256: hex::encode(counted.digest.finalize()),
    })
}

/// Bytes on their way to the store, counted and digested for the manifest entry.
struct Digested<'a> {
    out: &'a mut dyn Write,
    digest: Sha256,
    bytes: u64,
}

impl Write for Digested<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        self.digest.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Serializes straight into the compressor, and the compressor straight into the store: a ledger
/// of millions of findings never exists in memory as JSON, nor whole as gzip. A value that
/// refuses to serialize (a bug guard, as a ledger with findings not yet settled) fails for good,
/// not as a store failure that another attempt might mend.
pub(super) async fn put_gzip_json<T: Serialize + Sync>(
    store: &impl ObjectStore,
    key: &str,
    value: &T,
) -> Result<(), StepError> {
    let mut refused = None;
    let written = store
        .put_written(key, |out| write_gzip_json(out, value, &mut refused))
        .await;
    serialized(key, refused, written)
}

/// [`put_gzip_json`] only where the key does not exist yet: `false` when it did (nothing written).
pub(super) async fn put_gzip_json_if_absent<T: Serialize + Sync>(
    store: &impl ObjectStore,
    key: &str,
    value: &T,
) -> Result<bool, StepError> {
    let mut refused = None;
    let written = store
        .put_written_if_absent(key, |out| write_gzip_json(out, value, &mut refused))
        .await;
    serialized(key, refused, written)
}

fn write_gzip_json<T: Serialize>(
    out: &mut dyn std::io::Write,
    value: &T,
    refused: &mut Option<serde_json::Error>,
) -> std::io::Result<()> {
    let encoder = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, encoder);
    serde_json::to_writer(&mut writer, value).map_err(|e| {
        if e.is_io() {
            std::io::Error::from(e)
        } else {
            let problem = std::io::Error::other(e.to_string());
            *refused = Some(e);
            problem
        }
    })?;
    writer
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .finish()
        .map(drop)
}

/// A write's result, or, when the value refused to serialize, that it could not be.
fn serialized<R>(
    key: &str,
    refused: Option<serde_json::Error>,
    written: Result<R, crate::store::StoreError>,
) -> Result<R, StepError> {
    match refused {
        Some(e) => Err(StepError::bad_object(
            key,
            format!("could not be serialized ({e})"),
        )),
        None => written.map_err(StepError::from),
    }
}

/// A raw page collect wrote, unpacked; without it this step cannot go on. A page of a collect
/// from before zstd (an execution under way across the upgrade) is read gzip'd.
pub(super) async fn get_page(store: &impl ObjectStore, key: &str) -> Result<Vec<u8>, StepError> {
    get_packed_page(store, key).await?.unpack()
}

/// A raw page as stored, under the key it was found at.
pub(super) struct PackedPage {
    key: String,
    body: Bytes,
}

impl PackedPage {
    /// The page's bytes: the part of reading it that needs no store, so it can run beside other
    /// work.
    pub(super) fn unpack(&self) -> Result<Vec<u8>, StepError> {
        let mut page = Vec::new();
        self.unpack_into(&mut page)?;
        Ok(page)
    }

    /// As [`Self::unpack`], into `out`, keeping its room (see [`unpack_into`]).
    pub(super) fn unpack_into(&self, out: &mut Vec<u8>) -> Result<(), StepError> {
        unpack_into(&self.key, &self.body, out)
            .map_err(|problem| StepError::bad_object(&self.key, problem))
    }

    /// The checksum the page ends with (see [`page_checksum`]).
    pub(super) fn checksum(&self) -> Option<u32> {
        page_checksum(&self.body)
    }

    /// Refuses a page that is not the one collect counted: one whose checksum is not `listed`,
    /// what the item's outcome (at `outcome_key`) lists for it (`None`: it lists none).
    pub(super) fn ensure_counted(
        &self,
        listed: Option<Result<u32, String>>,
        outcome_key: &str,
    ) -> Result<(), StepError> {
        let Some(listed) = listed else {
            return Ok(());
        };
        let listed = listed.map_err(|problem| StepError::bad_object(outcome_key, problem))?;
        crate::packing::ensure_counted(self.checksum(), listed, outcome_key).map_err(|problem| {
            StepError::bad_object(
                &self.key,
                format!(
                    "{problem}; the item's findings are carried, and the next run pulls it again"
                ),
            )
        })
    }
}

/// A raw page collect wrote, as stored (see [`get_page`]).
pub(super) async fn get_packed_page(
    store: &impl ObjectStore,
    key: &str,
) -> Result<PackedPage, StepError> {
    let (key, body) = match store.get(key).await? {
        Some(body) => (key.to_string(), body),
        None => {
            let gzipped =
                gzip_page_key(key).ok_or_else(|| StepError::bad_object(key, "missing"))?;
            let body = store
                .get(&gzipped)
                .await?
                .ok_or_else(|| StepError::bad_object(key, "missing"))?;
            (gzipped, body)
        }
    };
    Ok(PackedPage { key, body })
}

/// Gzip'd JSON read as it comes from the store (see [`read_gzip_json`]).
pub(super) async fn get_gzip_json<T: DeserializeOwned>(
    store: &impl ObjectStore,
    key: &str,
) -> Result<Option<T>, StepError> {
    match store.get_reader(key).await? {
        Some(body) => read_gzip_json(key, body).map(Some),
        None => Ok(None),
    }
}

/// Reads gzip'd JSON through the decompressor: a ledger of millions of findings is never held
/// both as text and as values.
pub(super) fn read_gzip_json<T: DeserializeOwned>(
    key: &str,
    body: impl std::io::Read,
) -> Result<T, StepError> {
    let reader = std::io::BufReader::with_capacity(64 * 1024, flate2::read::GzDecoder::new(body));
    serde_json::from_reader(reader).map_err(|e| StepError::bad_object(key, e))
}

/// An object of the previous run read, or `None` when it cannot be read (logged): what it would
/// have told is only a hint, and failing the plan on it would fail every run after.
pub(super) fn readable<T>(read: Result<Option<T>, StepError>) -> Result<Option<T>, StepError> {
    match read {
        Err(error @ StepError::BadObject { .. }) => {
            tracing::error!(%error, "an object of the previous run cannot be read; going on without it");
            Ok(None)
        }
        read => read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "the ledger has findings appended and not yet settled",
            ))
        }
    }

    #[tokio::test]
    async fn a_value_that_refuses_to_serialize_fails_for_good_and_stores_nothing() {
        let store = MemoryStore::default();
        let error = put_gzip_json(&store, "ledger/a.json.gz", &Refuses)
            .await
            .unwrap_err();
        assert!(!error.is_retryable(), "{error}");
        assert!(error.to_string().contains("not yet settled"), "{error}");
        assert!(store.get("ledger/a.json.gz").await.unwrap().is_none());
        put_gzip_json(&store, "ledger/a.json.gz", &[1, 2])
            .await
            .unwrap();
        let read: Vec<u8> = get_gzip_json(&store, "ledger/a.json.gz")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, [1, 2]);
    }

    #[tokio::test]
    async fn lines_written_as_they_come_match_their_manifest_entry() {
        let store = MemoryStore::default();
        let lines = ["{\"a\":1}\n", "{\"b\":2}\n", "{\"c\":3}\n"];
        let entry = put_lines_written(&store, "closures/a.jsonl.gz", |out| {
            for line in lines {
                out(line.as_bytes())?;
            }
            Ok(7)
        })
        .await
        .unwrap();
        let body = store.get("closures/a.jsonl.gz").await.unwrap().unwrap();
        assert_eq!(entry.sha256, hex::encode(Sha256::digest(&body)));
        assert_eq!(entry.bytes, body.len() as u64);
        assert_eq!((entry.lines, entry.findings), (3, 7));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .unwrap();
        assert_eq!(text, lines.concat());
    }

    #[tokio::test]
    async fn lines_that_fail_to_be_made_store_nothing() {
        let store = MemoryStore::default();
        let error = put_lines_written(&store, "closures/a.jsonl.gz", |out| {
            out(b"{}\n")?;
            Err(std::io::Error::other("no space left on the spool's disk"))
        })
        .await
        .unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(error.to_string().contains("no space left"), "{error}");
        assert!(store.get("closures/a.jsonl.gz").await.unwrap().is_none());
    }
}
