//! The object store port and its adapters: S3 (aws-sdk-s3), a local directory, and memory (for
//! unit tests). Keys are `/`-separated; writes of one key replace it, so a retried step rewrites
//! the same object; `put_if_absent` is the conditional write locks and commit markers rely on.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {location}: {problem}")]
    Failed { location: String, problem: String },
    #[error("invalid store location '{0}': use a directory path or s3://bucket/prefix")]
    Location(String),
}

impl StoreError {
    fn failed(location: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self::Failed {
            location: location.into(),
            problem: problem.to_string(),
        }
    }
}

pub trait ObjectStore: Send + Sync {
    fn put(&self, key: &str, body: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes only when the key does not exist yet; `false` when it did (nothing written). On S3,
    /// an object of exactly these bytes found there counts as written: the SDK's retry of this
    /// very write, whose first attempt landed. (Not so for [`Self::put_written_if_absent`]: its
    /// caller, the ledger's write, then checks that no record commits nothing and writes again.)
    fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;
    /// The object with its [`Version`], for a write that must find it unchanged
    /// ([`Self::put_if_unchanged`]).
    fn get_versioned(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Bytes, Version)>, StoreError>> + Send {
        async move {
            Ok(self.get(key).await?.map(|body| {
                let version = Version::of_bytes(&body);
                (body, version)
            }))
        }
    }
    /// Writes `body` only while the object at `key` is still at `version`, as
    /// [`Self::get_versioned`] read it; `false` when it changed since or is gone (nothing
    /// written), so a write between the read and this one stands. Atomic on S3 (`If-Match` on the
    /// ETag read) and in memory; here, and so on disk, a read then a write: a local directory has
    /// no scheduled ticks to race a user's put.
    fn put_if_unchanged(
        &self,
        key: &str,
        body: Bytes,
        version: &Version,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            match self.get(key).await? {
                Some(held) if Version::of_bytes(&held) == *version => {
                    self.put(key, body).await.map(|()| true)
                }
                _ => Ok(false),
            }
        }
    }
    /// Stores what `write` writes under `key`: for an object of tens of megabytes (a large asset's
    /// ledger), which the stores on disk and S3 spool through a file rather than hold in memory.
    /// When `write` fails, nothing is stored and the key keeps what it held.
    fn put_written<W>(
        &self,
        key: &str,
        write: W,
    ) -> impl Future<Output = Result<(), StoreError>> + Send
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        async move {
            let mut body = Vec::new();
            write(&mut body).map_err(|e| StoreError::failed(key, e))?;
            self.put(key, Bytes::from(body)).await
        }
    }
    /// [`Self::put_written`] only when the key does not exist yet; `false` when it did (nothing
    /// written).
    fn put_written_if_absent<W>(
        &self,
        key: &str,
        write: W,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        async move {
            let mut body = Vec::new();
            write(&mut body).map_err(|e| StoreError::failed(key, e))?;
            self.put_if_absent(key, Bytes::from(body)).await
        }
    }
    /// The object as a reader, for one too large to hold whole (a ledger parsed as it is read),
    /// which the stores on disk and S3 read from a file (S3's spooled to a temporary one).
    fn get_reader(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectReader>, StoreError>> + Send {
        async move {
            Ok(self
                .get(key)
                .await?
                .map(|body| Box::new(std::io::Cursor::new(body)) as ObjectReader))
        }
    }
    /// Keys under `prefix`, sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// The names of the folders right under `prefix`, a folder ending in `/` or empty (the
    /// store's top: `connections/<c>/runs/` holds one per run), sorted. Read from the whole
    /// listing here; the stores on disk and S3 list the one level alone.
    fn list_folders(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        async move {
            let mut folders: Vec<String> = self
                .list(prefix)
                .await?
                .iter()
                .filter_map(|key| Some(key.strip_prefix(prefix)?.split_once('/')?.0.to_string()))
                .collect();
            folders.sort();
            folders.dedup();
            Ok(folders)
        }
    }
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Makes every object written so far durable, through a power loss: a commit's claim and
    /// marker must not land before what they commit. S3 answers a write once it is durable, and
    /// memory never is, so by default there is nothing to do; a directory's writes sit in the
    /// kernel's cache until synced.
    fn make_durable(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
    /// [`Self::put_if_absent`] for an object that must never be found empty after a power loss
    /// (a commit's claim and marker: one found empty stops every later plan): its bytes are
    /// durable before it is in place. S3 answers a write once it is durable, so by default the
    /// same as `put_if_absent`.
    fn put_durably_if_absent(
        &self,
        key: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.put_if_absent(key, body)
    }
}

/// What an object held when it was read ([`ObjectStore::get_versioned`]): S3's ETag; elsewhere
/// the SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(String);

impl Version {
    fn of_bytes(body: &[u8]) -> Self {
        use sha2::Digest;
        Self(format!("{:x}", sha2::Sha256::digest(body)))
    }
}

/// An object being read (see [`ObjectStore::get_reader`]).
pub type ObjectReader = Box<dyn Read + Send>;

/// How much of an object is buffered on its way to or from a file.
const FILE_BUFFER: usize = 64 * 1024;

/// Runs `write` into `file` through a buffer, and flushes it.
fn write_through(
    file: &std::fs::File,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buffered = std::io::BufWriter::with_capacity(FILE_BUFFER, file);
    write(&mut buffered)?;
    buffered.flush()
}

/// Writes to disk what the file system holding `folder` has in the kernel's cache.
#[cfg(target_os = "linux")]
fn sync_file_system(folder: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let folder = std::fs::File::open(folder)?;
    // SAFETY: `syncfs` reads only the descriptor, which `folder` keeps open for the call.
    match unsafe { libc::syncfs(folder.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Writes to disk what every file system has in the kernel's cache (no `syncfs` here; `sync`
/// may answer before the writes end, so this is the best the platform offers, not a promise).
#[cfg(all(unix, not(target_os = "linux")))]
fn sync_file_system(folder: &Path) -> std::io::Result<()> {
    std::fs::metadata(folder)?;
    // SAFETY: `sync` takes no argument and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

/// No file-system sync without unix's: the folder is only checked to be there.
#[cfg(not(unix))]
fn sync_file_system(folder: &Path) -> std::io::Result<()> {
    std::fs::metadata(folder).map(drop)
}

/// A directory on disk. Writes go to a temporary file and are renamed into place, so a reader never
/// sees half an object; `put_if_absent` links it into place, which fails when the key exists.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.is_empty()
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(StoreError::failed(
                key,
                "keys are non-empty '/'-separated names without '.' or '..'",
            ));
        }
        Ok(self.root.join(key))
    }

    /// A temporary file name beside `path`, unique to this process and call, so concurrent writes
    /// of one key never share one.
    /// What `write` writes, in a temporary file beside `path`, then put there by `place`
    /// (`rename` replaces what is there; `hard_link` fails when something is): the whole object
    /// appears at once or not at all, and the temporary file never stays. A crash leaves no
    /// half-written object (an empty lock would otherwise block its connection).
    /// With `durable`, the file's bytes are synced to disk (through the handle that wrote them)
    /// before it is put in place.
    fn placed<W>(
        path: &Path,
        write: W,
        place: fn(&Path, &Path) -> std::io::Result<()>,
        durable: bool,
    ) -> std::io::Result<()>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()>,
    {
        let temp = Self::temp_beside(path);
        let placed = std::fs::File::create(&temp)
            .and_then(|file| {
                write_through(&file, write)?;
                if durable { file.sync_all() } else { Ok(()) }
            })
            .and_then(|()| place(&temp, path));
        let _ = std::fs::remove_file(&temp);
        placed
    }

    fn temp_beside(path: &Path) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
    }

    fn parent(path: &Path) -> Result<(), StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::failed(parent.display().to_string(), e))?;
        }
        Ok(())
    }
}

impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_written(key, |out| out.write_all(&body)).await
    }

    /// The whole file system of the directory synced (`syncfs`): the run's objects, written as
    /// files and renamed or linked into place, then the claim or marker after them.
    async fn make_durable(&self) -> Result<(), StoreError> {
        sync_file_system(&self.root).map_err(|e| {
            StoreError::failed(
                self.root.display().to_string(),
                format!("syncing its file system to disk: {e}"),
            )
        })
    }

    /// The file's bytes synced to disk before it is linked into place.
    async fn put_durably_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        Self::parent(&path)?;
        let link = |from: &Path, to: &Path| std::fs::hard_link(from, to);
        match Self::placed(&path, |out| out.write_all(&body), link, true) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::failed(path.display().to_string(), e)),
        }
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.put_written_if_absent(key, |out| out.write_all(&body))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::failed(path.display().to_string(), e)),
        }
    }

    async fn put_written<W>(&self, key: &str, write: W) -> Result<(), StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let path = self.path(key)?;
        Self::parent(&path)?;
        Self::placed(&path, write, |from, to| std::fs::rename(from, to), false)
            .map_err(|e| StoreError::failed(path.display().to_string(), e))
    }

    /// Linked into place, which fails when the key exists.
    async fn put_written_if_absent<W>(&self, key: &str, write: W) -> Result<bool, StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let path = self.path(key)?;
        Self::parent(&path)?;
        match Self::placed(&path, write, |from, to| std::fs::hard_link(from, to), false) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::failed(path.display().to_string(), e)),
        }
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, StoreError> {
        let path = self.path(key)?;
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Some(Box::new(std::io::BufReader::with_capacity(
                FILE_BUFFER,
                file,
            )))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::failed(path.display().to_string(), e)),
        }
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = match prefix.trim_end_matches('/') {
            "" => self.root.clone(),
            folder => self.path(folder)?,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::failed(dir.display().to_string(), e)),
        };
        let mut folders = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::failed(dir.display().to_string(), e))?;
            if entry.path().is_dir() {
                folders.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        folders.sort();
        Ok(folders)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        // From the folder the prefix names, not the root: a store of many runs is not walked
        // whole for one run's ledgers.
        let start = match prefix.rfind('/') {
            Some(end) => self.path(&prefix[..end])?,
            None => self.root.clone(),
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::failed(dir.display().to_string(), e)),
            };
            for entry in entries {
                let path = entry
                    .map_err(|e| StoreError::failed(dir.display().to_string(), e))?
                    .path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.root) {
                    let key = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    if key.starts_with(prefix) && !key.contains(".tmp-") {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::failed(path.display().to_string(), e)),
        }
    }
}

/// An S3 bucket, under an optional key prefix.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Where large objects are spooled on their way to and from the bucket.
    spool_dir: PathBuf,
}

impl S3Store {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        let prefix = prefix.into().trim_matches('/').to_string();
        Self {
            client,
            bucket: bucket.into(),
            prefix: if prefix.is_empty() {
                prefix
            } else {
                format!("{prefix}/")
            },
            spool_dir: std::env::temp_dir(),
        }
    }

    /// Spools large objects (ledgers, closures) in `dir` rather than the system's temporary
    /// directory (Lambda's `/tmp`).
    pub fn spooling_in(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = dir.into();
        self
    }

    /// A client from the environment's AWS configuration; `AWS_ENDPOINT_URL` (a local S3 server)
    /// switches to path-style addressing, which such servers need.
    pub async fn from_env(bucket: &str, prefix: &str) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk_config(&config, bucket, prefix)
    }

    /// A client from an already loaded AWS configuration (path-style for local S3 servers).
    pub fn from_sdk_config(config: &aws_config::SdkConfig, bucket: &str, prefix: &str) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::from(config);
        if std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        {
            builder = builder.force_path_style(true);
        }
        Self::new(
            aws_sdk_s3::Client::from_conf(builder.build()),
            bucket,
            prefix,
        )
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }

    /// A GetObject that failed: `None` when there is no such key.
    fn absent_or_failed<T>(
        &self,
        key: &str,
        error: &aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
    ) -> Result<Option<T>, StoreError> {
        match error.as_service_error() {
            Some(e) if e.is_no_such_key() => Ok(None),
            _ => Err(StoreError::failed(self.location(key), sdk_problem(error))),
        }
    }

    /// An object's body that broke off as it was read.
    fn body_failed(&self, key: &str, error: &(dyn std::error::Error + 'static)) -> StoreError {
        StoreError::failed(
            self.location(key),
            format!(
                "the body was cut off or unreadable ({})",
                aws_sdk_s3::error::DisplayErrorContext(error)
            ),
        )
    }

    fn spool_failed(&self, key: &str, error: std::io::Error) -> StoreError {
        StoreError::failed(
            self.location(key),
            format!(
                "could not spool the object through a temporary file in {} ({error}); is it full?",
                self.spool_dir.display()
            ),
        )
    }

    /// What `write` writes, in a temporary file (kept while the body is read from it), and the
    /// body that reads it.
    async fn spooled<W>(
        &self,
        key: &str,
        write: W,
    ) -> Result<(UploadSpool, aws_sdk_s3::primitives::ByteStream), StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let spool = UploadSpool::new(&self.spool_dir)
            .and_then(|spool| write_through(spool.file(), write).map(|()| spool))
            .map_err(|e| self.spool_failed(key, e))?;
        let body = aws_sdk_s3::primitives::ByteStream::from_path(spool.path())
            .await
            .map_err(|e| StoreError::failed(self.location(key), e))?;
        Ok((spool, body))
    }

    /// PutObject with `If-None-Match: *`: `false` when the key exists (412), or when another
    /// conditional write of it is in flight (409). An object of exactly `ours` found there is
    /// this write's: the SDK retries a PutObject whose answer was lost (a reset, a 500), and the
    /// retry of one that landed (or is landing) meets its own object (taken for another writer's,
    /// a plan would delete its own work list, a lock refuse its own run). Without `ours` (an
    /// object written through a spool, as large as a ledger: not read whole to compare), `false`.
    /// One still landing may not read yet: the callers that read after `false` compare too.
    async fn put_body_if_absent(
        &self,
        key: &str,
        body: aws_sdk_s3::primitives::ByteStream,
        ours: Option<Bytes>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .if_none_match("*")
            .set_tagging(raw_tagging(key))
            .body(body)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // The object there (412), or another write of it in flight (409): the SDK's retry of
            // this write, whose first attempt landed or is landing, meets either.
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412)) =>
            {
                let Some(ours) = ours else {
                    return Ok(false);
                };
                Ok(self
                    .get(key)
                    .await?
                    .is_some_and(|standing| standing == ours))
            }
            Err(e) => Err(StoreError::failed(self.location(key), sdk_problem(&e))),
        }
    }

    async fn put_body(
        &self,
        key: &str,
        body: aws_sdk_s3::primitives::ByteStream,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .set_tagging(raw_tagging(key))
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::failed(self.location(key), sdk_problem(&e)))
    }
}

/// Raw vendor data is tagged so the bucket's lifecycle rule can expire it.
fn raw_tagging(key: &str) -> Option<String> {
    crate::layout::is_raw(key).then(|| "class=raw".to_string())
}

/// The temporary file an object is written to on its way to S3, which the SDK opens by path, and
/// again if it retries. On Linux (Lambda) the file has no name and is opened through
/// `/proc/self/fd`: if the process is cut off mid-write (a timeout), the file goes with it, and the
/// warm sandbox's `/tmp` (512 MB by default) does not fill with spools of invocations that died.
/// Elsewhere, or without `/proc`, a named file, removed when dropped.
enum UploadSpool {
    #[cfg(target_os = "linux")]
    Unnamed {
        file: std::fs::File,
        path: PathBuf,
    },
    Named(tempfile::NamedTempFile),
}

impl UploadSpool {
    fn new(dir: &Path) -> std::io::Result<Self> {
        #[cfg(target_os = "linux")]
        if Path::new("/proc/self/fd").is_dir() {
            use std::os::fd::AsRawFd;
            let file = tempfile::tempfile_in(dir)?;
            let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            return Ok(Self::Unnamed { file, path });
        }
        tempfile::NamedTempFile::new_in(dir).map(Self::Named)
    }

    fn file(&self) -> &std::fs::File {
        match self {
            #[cfg(target_os = "linux")]
            Self::Unnamed { file, .. } => file,
            Self::Named(named) => named.as_file(),
        }
    }

    fn path(&self) -> &Path {
        match self {
            #[cfg(target_os = "linux")]
            Self::Unnamed { path, .. } => path,
            Self::Named(named) => named.path(),
        }
    }
}

/// A store that names its objects as a bucket and key, for what reads them without the store: the
/// state machine's Distributed Map reads the work list from S3 itself.
pub trait BucketStore: ObjectStore {
    fn bucket(&self) -> &str;
    /// The object key in the bucket of a store key.
    fn full_key(&self, key: &str) -> String;
}

impl BucketStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn full_key(&self, key: &str) -> String {
        self.key(key)
    }
}

/// What S3 answered, as an error says it: its code, status and message for an answer (the SDK's
/// whole context is a page of headers and debug output, cut off in a run record before the
/// code), with what to check for a refusal; the SDK's context for a request that got no answer.
fn sdk_problem<E>(error: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + Sync + 'static,
{
    use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
    let SdkError::ServiceError(answer) = error else {
        return DisplayErrorContext(error).to_string();
    };
    use aws_sdk_s3::operation::RequestId;
    let (status, code) = (answer.raw().status().as_u16(), answer.err().code());
    let said = format!(
        "S3 answered {status} {}: {} (request id {})",
        code.unwrap_or("(no error code)"),
        answer.err().message().unwrap_or("(no message)"),
        error.request_id().unwrap_or("none given")
    );
    // Other 403s (a skewed clock, a bad signature or key) are not the grants'.
    match (status, code) {
        (_, Some("AccessDenied")) | (403, None) => format!(
            "{said}; the caller's IAM role (on AWS, the function's, from the stack) may not do this on this key, or the bucket's policy refuses it"
        ),
        _ => said,
    }
}

impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put_body(key, body.into()).await
    }

    /// Spooled to a temporary file, then sent from it: the SDK reads the file as it sends, and
    /// again if it retries.
    async fn put_written<W>(&self, key: &str, write: W) -> Result<(), StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let (_spool, body) = self.spooled(key, write).await?;
        self.put_body(key, body).await
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) => return self.absent_or_failed(key, &e),
        };
        // Deleted when closed: only the reader holds it.
        let mut spool =
            tempfile::tempfile_in(&self.spool_dir).map_err(|e| self.spool_failed(key, e))?;
        let mut body = output.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.body_failed(key, &e))?
        {
            spool
                .write_all(&chunk)
                .map_err(|e| self.spool_failed(key, e))?;
        }
        spool.rewind().map_err(|e| self.spool_failed(key, e))?;
        Ok(Some(Box::new(std::io::BufReader::with_capacity(
            FILE_BUFFER,
            spool,
        ))))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.put_body_if_absent(key, body.clone().into(), Some(body))
            .await
    }

    /// Spooled to a temporary file, then sent from it with the condition.
    async fn put_written_if_absent<W>(&self, key: &str, write: W) -> Result<bool, StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        let (_spool, body) = self.spooled(key, write).await?;
        self.put_body_if_absent(key, body, None).await
    }

    // Not through `get_versioned`: one more async layer under every read pushes the finalize
    // binary's test build past rustc's query depth (its `serve` future's layout).
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(output) => {
                let body = output
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.body_failed(key, &e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) => self.absent_or_failed(key, &e),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(output) => {
                // S3 always answers an ETag; none would make the write's `If-Match` empty.
                let version = Version(output.e_tag().unwrap_or_default().to_string());
                let body = output
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.body_failed(key, &e))?;
                Ok(Some((body.into_bytes(), version)))
            }
            Err(e) => self.absent_or_failed(key, &e),
        }
    }

    /// PutObject with `If-Match` on the ETag read: `false` when the object changed since (412),
    /// is gone (404), or another conditional write of it is in flight (409). An object of exactly
    /// `body` found after a 412 or a 409 is this write's, retried by the SDK after its first
    /// attempt landed (or while it lands).
    async fn put_if_unchanged(
        &self,
        key: &str,
        body: Bytes,
        version: &Version,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .if_match(&version.0)
            .set_tagging(raw_tagging(key))
            .body(body.clone().into())
            .send()
            .await;
        let status = result
            .as_ref()
            .err()
            .and_then(|e| e.raw_response())
            .map(|r| r.status().as_u16());
        match result {
            Ok(_) => Ok(true),
            Err(_) if matches!(status, Some(409 | 412)) => Ok(self
                .get(key)
                .await?
                .is_some_and(|standing| standing == body)),
            Err(_) if status == Some(404) => Ok(false),
            Err(e) => Err(StoreError::failed(self.location(key), sdk_problem(&e))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| StoreError::failed(self.location(prefix), sdk_problem(&e)))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    keys.push(key.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// One level, by S3's delimiter: a folder of thousands of runs is one request per thousand
    /// folders, not a listing of every object of every run.
    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let listed = self.key(prefix);
        let mut folders = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&listed)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| StoreError::failed(self.location(prefix), sdk_problem(&e)))?;
            for common in page.common_prefixes() {
                if let Some(folder) = common
                    .prefix()
                    .and_then(|p| p.strip_prefix(&listed))
                    .and_then(|p| p.strip_suffix('/'))
                {
                    folders.push(folder.to_string());
                }
            }
        }
        folders.sort();
        Ok(folders)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::failed(self.location(key), sdk_problem(&e)))
    }
}

/// In memory, for tests of the steps and the Lambda tasks that need no AWS.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.objects().insert(key.to_string(), body);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.to_string(), body);
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.objects().get(key).cloned())
    }

    async fn put_if_unchanged(
        &self,
        key: &str,
        body: Bytes,
        version: &Version,
    ) -> Result<bool, StoreError> {
        let mut objects = self.objects();
        match objects.get_mut(key) {
            Some(held) if Version::of_bytes(held) == *version => {
                *held = body;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects().remove(key);
        Ok(())
    }
}

/// Stands in for a bucket named `memory`, without a key prefix.
impl BucketStore for MemoryStore {
    fn bucket(&self) -> &str {
        "memory"
    }

    fn full_key(&self, key: &str) -> String {
        key.to_string()
    }
}

/// A store chosen at run time: a directory or `s3://bucket/prefix`.
#[derive(Clone, Debug)]
pub enum AnyStore {
    Local(LocalStore),
    S3(S3Store),
}

/// Where a store location (`--store`, `--out`) points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    /// `s3://bucket/prefix` (the prefix may be empty: the bucket's root).
    Bucket {
        bucket: &'a str,
        prefix: &'a str,
    },
    Folder(&'a str),
}

impl<'a> Location<'a> {
    pub fn parse(location: &'a str) -> Result<Self, StoreError> {
        match location.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(StoreError::Location(location.to_string()));
                }
                Ok(Self::Bucket { bucket, prefix })
            }
            // `s3:/bucket` (one slash) is a typo of a bucket, not a folder named `s3:`.
            None if location.is_empty()
                || location.contains("://")
                || location
                    .get(..3)
                    .is_some_and(|start| start.eq_ignore_ascii_case("s3:")) =>
            {
                Err(StoreError::Location(location.to_string()))
            }
            None => Ok(Self::Folder(location)),
        }
    }
}

impl AnyStore {
    pub async fn open(location: &str) -> Result<Self, StoreError> {
        Ok(match Location::parse(location)? {
            Location::Bucket { bucket, prefix } => {
                Self::S3(S3Store::from_env(bucket, prefix).await)
            }
            Location::Folder(folder) => Self::Local(LocalStore::new(folder)),
        })
    }
}

impl ObjectStore for AnyStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.put(key, body).await,
            Self::S3(s) => s.put(key, body).await,
        }
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        match self {
            Self::Local(s) => s.put_if_absent(key, body).await,
            Self::S3(s) => s.put_if_absent(key, body).await,
        }
    }

    async fn make_durable(&self) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.make_durable().await,
            Self::S3(s) => s.make_durable().await,
        }
    }

    async fn put_durably_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        match self {
            Self::Local(s) => s.put_durably_if_absent(key, body).await,
            Self::S3(s) => s.put_durably_if_absent(key, body).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Self::Local(s) => s.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>, StoreError> {
        match self {
            Self::Local(s) => s.get_versioned(key).await,
            Self::S3(s) => s.get_versioned(key).await,
        }
    }

    async fn put_if_unchanged(
        &self,
        key: &str,
        body: Bytes,
        version: &Version,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Local(s) => s.put_if_unchanged(key, body, version).await,
            Self::S3(s) => s.put_if_unchanged(key, body, version).await,
        }
    }

    async fn put_written<W>(&self, key: &str, write: W) -> Result<(), StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        match self {
            Self::Local(s) => s.put_written(key, write).await,
            Self::S3(s) => s.put_written(key, write).await,
        }
    }

    async fn put_written_if_absent<W>(&self, key: &str, write: W) -> Result<bool, StoreError>
    where
        W: FnOnce(&mut dyn Write) -> std::io::Result<()> + Send,
    {
        match self {
            Self::Local(s) => s.put_written_if_absent(key, write).await,
            Self::S3(s) => s.put_written_if_absent(key, write).await,
        }
    }

    async fn get_reader(&self, key: &str) -> Result<Option<ObjectReader>, StoreError> {
        match self {
            Self::Local(s) => s.get_reader(key).await,
            Self::S3(s) => s.get_reader(key).await,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Local(s) => s.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Local(s) => s.list_folders(prefix).await,
            Self::S3(s) => s.list_folders(prefix).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write on the version read lands only while the object is still that version.
    async fn writes_on_the_version_read(store: &impl ObjectStore) {
        let put = |body: &'static [u8]| store.put("v/config.json", Bytes::from_static(body));
        put(b"read").await.unwrap();
        let (_, read) = store.get_versioned("v/config.json").await.unwrap().unwrap();
        put(b"put since").await.unwrap();
        let ours = Bytes::from_static(b"ours");
        assert!(
            !store
                .put_if_unchanged("v/config.json", ours.clone(), &read)
                .await
                .unwrap()
        );
        let (held, current) = store.get_versioned("v/config.json").await.unwrap().unwrap();
        assert_eq!(held, Bytes::from_static(b"put since"));
        assert!(
            store
                .put_if_unchanged("v/config.json", ours.clone(), &current)
                .await
                .unwrap()
        );
        assert_eq!(
            store.get("v/config.json").await.unwrap(),
            Some(ours.clone())
        );
        store.delete("v/config.json").await.unwrap();
        assert!(
            !store
                .put_if_unchanged("v/config.json", ours, &current)
                .await
                .unwrap()
        );
        assert!(store.get("v/config.json").await.unwrap().is_none());
    }

    async fn exercise(store: &impl ObjectStore) {
        writes_on_the_version_read(store).await;
        store
            .put("a/b/1.json", Bytes::from_static(b"one"))
            .await
            .unwrap();
        store
            .put("a/b/1.json", Bytes::from_static(b"uno"))
            .await
            .unwrap();
        assert_eq!(
            store.get("a/b/1.json").await.unwrap().unwrap(),
            Bytes::from_static(b"uno"),
            "a rewrite replaces"
        );
        assert!(
            store
                .put_if_absent("a/lock", Bytes::from_static(b"x"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_if_absent("a/lock", Bytes::from_static(b"y"))
                .await
                .unwrap()
        );
        assert_eq!(
            store.get("a/lock").await.unwrap().unwrap(),
            Bytes::from_static(b"x"),
            "the loser wrote nothing"
        );
        store
            .put("a/c.json", Bytes::from_static(b"c"))
            .await
            .unwrap();
        assert_eq!(
            store.list("a/").await.unwrap(),
            vec!["a/b/1.json", "a/c.json", "a/lock"]
        );
        assert_eq!(store.list("a/b").await.unwrap(), vec!["a/b/1.json"]);
        assert_eq!(store.list("a/b/").await.unwrap(), vec!["a/b/1.json"]);
        assert_eq!(store.list("a/c").await.unwrap(), vec!["a/c.json"]);
        assert!(store.list("a/nothing/here/").await.unwrap().is_empty());
        assert!(store.list("z").await.unwrap().is_empty());
        store
            .put("a/d/e/f.json", Bytes::from_static(b"f"))
            .await
            .unwrap();
        assert_eq!(store.list_folders("a/").await.unwrap(), vec!["b", "d"]);
        assert_eq!(store.list_folders("a/d/").await.unwrap(), vec!["e"]);
        assert!(store.list_folders("a/b/").await.unwrap().is_empty());
        assert!(store.list_folders("z/").await.unwrap().is_empty());
        assert!(
            store
                .list_folders("")
                .await
                .unwrap()
                .contains(&"a".to_string())
        );
        store.delete("a/d/e/f.json").await.unwrap();
        store.delete("a/lock").await.unwrap();
        store.delete("a/lock").await.unwrap();
        assert!(store.get("a/lock").await.unwrap().is_none());
        written_and_read_as_streams(store).await;
    }

    /// The contract of [`ObjectStore::put_written`] and [`ObjectStore::get_reader`], for every store.
    async fn written_and_read_as_streams(store: &impl ObjectStore) {
        let large: Vec<u8> = (0..200_000u32).flat_map(u32::to_le_bytes).collect();
        store
            .put_written("w/ledger", |out| out.write_all(&large))
            .await
            .unwrap();
        let mut read = Vec::new();
        store
            .get_reader("w/ledger")
            .await
            .unwrap()
            .expect("the object written")
            .read_to_end(&mut read)
            .unwrap();
        assert!(read == large, "read back as written");
        let failed = store
            .put_written("w/ledger", |out| {
                out.write_all(b"half of a new ")?;
                Err(std::io::Error::other("the serializer gave up"))
            })
            .await
            .unwrap_err();
        assert!(
            failed.to_string().contains("the serializer gave up"),
            "{failed}"
        );
        assert!(
            store.get("w/ledger").await.unwrap().unwrap() == large,
            "a failed write leaves what the key held"
        );
        assert_eq!(store.list("w/").await.unwrap(), vec!["w/ledger"]);
        assert!(store.get_reader("w/absent").await.unwrap().is_none());

        let written = |key: &'static str, text: &'static [u8]| {
            store.put_written_if_absent(key, move |out| out.write_all(text))
        };
        assert!(!written("w/ledger", b"another").await.unwrap(), "it exists");
        assert!(
            store.get("w/ledger").await.unwrap().unwrap() == large,
            "nothing written over it"
        );
        let refused = store
            .put_written_if_absent("w/given-up", |_| {
                Err(std::io::Error::other("the serializer gave up"))
            })
            .await;
        assert!(refused.is_err() && store.get("w/given-up").await.unwrap().is_none());
        assert!(written("w/fresh", b"fresh").await.unwrap());
        assert_eq!(
            store.get("w/fresh").await.unwrap().unwrap(),
            Bytes::from_static(b"fresh")
        );
        store.delete("w/fresh").await.unwrap();
    }

    /// A location that is neither a folder nor `s3://bucket/prefix` is refused, naming both forms:
    /// a one-slash `s3:/bucket` would otherwise be a local folder `s3:`, and a run's output land
    /// there, not in the bucket the user meant.
    #[tokio::test]
    async fn a_location_that_looks_like_a_bucket_but_is_not_one_is_refused() {
        for location in [
            "s3:/bucket/prefix",
            "S3:bucket",
            "S3://bucket",
            "https://x/y",
            "",
            "s3:///p",
        ] {
            let refused = AnyStore::open(location).await.err().map(|e| e.to_string());
            assert!(
                refused
                    .as_deref()
                    .is_some_and(|e| e.contains("use a directory path or s3://bucket/prefix")),
                "{location}: {refused:?}"
            );
        }
        assert!(matches!(
            AnyStore::open("s3-store/here").await,
            Ok(AnyStore::Local(_))
        ));
    }

    #[tokio::test]
    async fn memory_and_local_stores_behave_alike() {
        exercise(&MemoryStore::default()).await;
        let dir = std::env::temp_dir().join(format!("cxone-etm-store-{}", std::process::id()));
        exercise(&LocalStore::new(&dir)).await;
        let files = std::fs::read_dir(dir.join("w")).unwrap().count();
        assert_eq!(files, 1, "a failed write leaves no temporary file behind");
        assert!(
            LocalStore::new(&dir)
                .put("../escape", Bytes::new())
                .await
                .is_err()
        );
        LocalStore::new(&dir).make_durable().await.unwrap();
        let local = LocalStore::new(&dir);
        let durably =
            |body: &'static [u8]| local.put_durably_if_absent("d/claim", Bytes::from_static(body));
        assert!(durably(b"first").await.unwrap());
        assert!(!durably(b"second").await.unwrap(), "written once");
        assert_eq!(std::fs::read(dir.join("d/claim")).unwrap(), b"first");
        std::fs::remove_dir_all(&dir).ok();
        // The folder gone, the sync cannot be asked for, and says where.
        let gone = LocalStore::new(&dir).make_durable().await.unwrap_err();
        assert!(
            gone.to_string().contains(&dir.display().to_string()),
            "{gone}"
        );
    }

    /// A fake S3's raw HTTP answer to a request (its head and body as text).
    type Answer = fn(&str) -> Vec<u8>;

    /// An S3 endpoint that reads each request whole and writes back what `answer` makes of it,
    /// then hangs up.
    async fn answering_s3(answer: Answer) -> S3Store {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The request read whole first: closing on unread bytes would reset the
                    // connection before the answer arrives.
                    let mut request = Vec::new();
                    let mut buffer = [0; 4096];
                    loop {
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|n| n.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = socket
                        .write_all(&answer(&String::from_utf8_lossy(&request)))
                        .await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build();
        S3Store::new(aws_sdk_s3::Client::from_conf(config), "bucket", "etm")
    }

    /// An S3 endpoint that answers every request with the start of a body it promised whole, and
    /// then hangs up.
    async fn cutting_off_s3() -> S3Store {
        answering_s3(|_| {
            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\
                               Content-Type: application/octet-stream\r\n\r\n"
                .to_vec();
            answer.extend_from_slice(&[b'x'; 64 * 1024]);
            answer
        })
        .await
    }

    /// S3's refusals of a conditional write, each from an endpoint that answers it: another
    /// conditional write of the key in flight (409), the object there (412) and the object gone
    /// (404) are `false`, not an error and not a write, unless the object now holds exactly this
    /// write's bytes (the SDK's retry of a write that landed, or is landing).
    #[tokio::test]
    async fn s3s_refusals_of_a_conditional_write_are_not_writes() {
        fn s3_error(status: &str, code: &str) -> Vec<u8> {
            let body = format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        fn standing(body: &str) -> Vec<u8> {
            format!(
                "HTTP/1.1 200 OK\r\nETag: \"e2\"\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        let cases: [(&str, Answer, bool); 6] = [
            (
                "409, nothing landed yet",
                |request| {
                    if request.starts_with("PUT") {
                        s3_error("409 Conflict", "ConditionalRequestConflict")
                    } else {
                        s3_error("404 Not Found", "NoSuchKey")
                    }
                },
                false,
            ),
            (
                "409, another's bytes",
                |request| {
                    if request.starts_with("PUT") {
                        s3_error("409 Conflict", "ConditionalRequestConflict")
                    } else {
                        standing("theirs")
                    }
                },
                false,
            ),
            (
                "409, this write's bytes",
                |request| {
                    if request.starts_with("PUT") {
                        s3_error("409 Conflict", "ConditionalRequestConflict")
                    } else {
                        standing("ours")
                    }
                },
                true,
            ),
            ("404", |_| s3_error("404 Not Found", "NoSuchKey"), false),
            (
                "412, another's bytes",
                |request| {
                    if request.starts_with("PUT") {
                        s3_error("412 Precondition Failed", "PreconditionFailed")
                    } else {
                        standing("theirs")
                    }
                },
                false,
            ),
            (
                "412, this write's bytes",
                |request| {
                    if request.starts_with("PUT") {
                        s3_error("412 Precondition Failed", "PreconditionFailed")
                    } else {
                        standing("ours")
                    }
                },
                true,
            ),
        ];
        for (case, answer, written) in cases {
            let store = answering_s3(answer).await;
            let version = Version("\"e1\"".into());
            let put = store
                .put_if_unchanged("c/config.json", Bytes::from_static(b"ours"), &version)
                .await;
            assert_eq!(put.unwrap(), written, "put_if_unchanged, {case}");
            if case != "404" {
                let put = store
                    .put_if_absent("c/config.json", Bytes::from_static(b"ours"))
                    .await;
                assert_eq!(put.unwrap(), written, "put_if_absent, {case}");
            }
        }
    }

    /// S3's refusal says its code, status and message and what to check, in a line: the SDK's
    /// whole context (headers, debug output) was a page, cut off in a run record.
    #[tokio::test]
    async fn an_s3_refusal_is_named_in_a_line_with_what_to_check() {
        let store = answering_s3(|_| {
            let body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
            format!(
                "HTTP/1.1 403 Forbidden\r\nx-amz-request-id: R3Q\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .await;
        let failures = [
            store.get("c/lock").await.map(|_| ()),
            store.put("c/lock", Bytes::from_static(b"x")).await,
            store.delete("c/lock").await,
        ];
        for failure in failures {
            let error = failure.expect_err("refused").to_string();
            assert!(
                error
                    .contains("S3 answered 403 AccessDenied: Access Denied (request id R3Q); the caller's IAM role")
                    && error.len() < 400,
                "{error}"
            );
        }
        // A 403 that is not a refusal of the grants (a skewed clock) says what S3 said alone.
        let skewed = answering_s3(|_| {
            let body = "<Error><Code>RequestTimeTooSkewed</Code><Message>skewed</Message></Error>";
            format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .await;
        let error = skewed.delete("c/lock").await.unwrap_err().to_string();
        assert!(
            error.ends_with("S3 answered 403 RequestTimeTooSkewed: skewed (request id none given)"),
            "{error}"
        );
    }

    /// A body cut off partway is a store failure (retryable: the step runs again), never a short
    /// object read as whole, and its spool goes with it.
    #[tokio::test]
    async fn an_s3_body_cut_off_midway_fails_the_read_and_leaves_no_spool() {
        let spool = tempfile::tempdir().unwrap();
        let store = cutting_off_s3().await.spooling_in(spool.path());
        let failures = [
            store.get_reader("ledger/a.json.gz").await.map(|_| ()),
            store.get("ledger/a.json.gz").await.map(|_| ()),
        ];
        for failure in failures {
            let error = failure.expect_err("a body cut off is not an object");
            assert!(
                matches!(&error, StoreError::Failed { location, .. }
                    if location == "s3://bucket/etm/ledger/a.json.gz"),
                "{error}"
            );
            assert!(error.to_string().contains("cut off"), "{error}");
            assert!(
                crate::pipeline::StepError::from(error).is_retryable(),
                "another attempt may read it whole"
            );
        }
        assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
    }
}
