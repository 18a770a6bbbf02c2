//! Where files' bytes live: an `object_store` chosen by `storage.url` (a local folder, the
//! process's memory, or an S3-compatible service), and the one naming of a file's object
//! (`episodes/<episodeId>/files/<fileId>`) that the api, the purge job and the orphan sweeper
//! share.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::buffered::BufWriter;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetResult, GetResultPayload, ObjectStore, ObjectStoreExt};
use uuid::Uuid;

use crate::config::StorageSettings;

/// Bytes buffered before an upload becomes a multipart upload, and the size of each part
/// (S3 parts must be at least 5 MiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once: with [`PART_BYTES`], an upload holds at most about
/// (1 + this) parts in memory, whatever its size.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Bytes read from a local file per blocking read of a download. object_store's own stream
/// (`GetResult::into_stream`) reads 8 KiB per blocking task, which held downloads from the
/// folder store to about 127 MiB/s (`bench-files`).
pub const READ_CHUNK: usize = 1024 * 1024;

/// What `storage.url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder of this machine (empty `storage.url`: `data/files` under the working directory).
    Folder(std::path::PathBuf),
    /// The process's memory, by name: every role of one process sees the same objects.
    Memory(String),
    /// A bucket of an S3-compatible service.
    S3 { bucket: String },
}

impl Location {
    /// `""`, `file:///abs/dir`, `memory://name`, `s3://bucket`; anything else is refused with
    /// a reason (never quoting credentials: the URL has none, they are `storage.s3.*`).
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.is_empty() {
            return Ok(Self::Folder("data/files".into()));
        }
        if let Some(dir) = url.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err("file:// needs an absolute folder (file:///var/lib/showrunner)".into());
            }
            return Ok(Self::Folder(dir.into()));
        }
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(Self::Memory(name.to_string()));
        }
        if let Some(bucket) = url.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err("s3://<bucket>: 3 to 63 of a-z 0-9 . -".into());
            }
            return Ok(Self::S3 { bucket: bucket.to_string() });
        }
        Err("must be empty (the local folder data/files), file:///<folder>, memory://<name> or \
             s3://<bucket>"
            .into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage.url: {0}")]
    Url(String),
    #[error("cannot create the storage folder {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
}

/// The store of files' bytes, cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    describe: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("store", &self.describe).finish()
    }
}

/// The process's memory stores by name (`memory://<name>`), so the api and the workers of one
/// process (a test's stack, `showrunner up`) share their objects.
fn memory(name: &str) -> Arc<InMemory> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    stores.entry(name.to_string()).or_insert_with(|| Arc::new(InMemory::new())).clone()
}

impl Storage {
    /// Opens (for a folder: creates) the store `settings` name.
    pub fn open(settings: &StorageSettings) -> Result<Self, StorageError> {
        match Location::parse(&settings.url).map_err(StorageError::Url)? {
            Location::Folder(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| StorageError::Folder {
                    path: dir.display().to_string(),
                    source,
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                Ok(Self { store: Arc::new(store), describe: format!("folder {}", dir.display()) })
            }
            Location::Memory(name) => {
                Ok(Self { store: memory(&name), describe: format!("memory {name}") })
            }
            Location::S3 { bucket } => {
                // The S3 client's TLS is rustls on ring (`tls`).
                crate::tls::install();
                let s3 = &settings.s3;
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http);
                if !s3.endpoint.is_empty() {
                    // A self-hosted service: path-style requests (`<endpoint>/<bucket>/<key>`).
                    builder = builder
                        .with_endpoint(&s3.endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if !s3.access_key_id.expose().is_empty() {
                    builder = builder
                        .with_access_key_id(s3.access_key_id.expose())
                        .with_secret_access_key(s3.secret_access_key.expose());
                }
                let store = builder.build()?;
                Ok(Self { store: Arc::new(store), describe: format!("s3 bucket {bucket}") })
            }
        }
    }

    /// A store given directly (tests).
    pub fn from_store(store: Arc<dyn ObjectStore>, describe: impl Into<String>) -> Self {
        Self { store, describe: describe.into() }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Streams an upload into `key`: buffered up to [`PART_BYTES`], then a multipart upload
    /// with at most [`PARTS_IN_FLIGHT`] parts in flight. `abort` it on failure.
    pub fn writer(&self, key: &Path) -> BufWriter {
        BufWriter::with_capacity(self.store.clone(), key.clone(), PART_BYTES)
            .with_max_concurrency(PARTS_IN_FLIGHT)
    }

    /// Removes an object; one that is not there is fine (a purge retried after it succeeded).
    pub async fn delete(&self, key: &Path) -> Result<(), object_store::Error> {
        match self.store.delete(key).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The bytes of a read, as a stream: a local file in [`READ_CHUNK`] reads, anything else as its
/// store streams it.
pub fn into_stream(got: GetResult) -> BoxStream<'static, object_store::Result<Bytes>> {
    match got.payload {
        GetResultPayload::File(file, _) => file_stream(file, got.range),
        GetResultPayload::Stream(stream) => stream,
    }
}

/// `range` of `file`, one blocking read of at most [`READ_CHUNK`] bytes per item.
fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    fn failed(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(source) }
    }
    futures_util::stream::try_unfold((file, range, false), |(mut file, range, seeked)| async move {
        if range.start >= range.end {
            return Ok(None);
        }
        let want = usize::try_from(range.end - range.start).unwrap_or(READ_CHUNK).min(READ_CHUNK);
        let start = range.start;
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            if !seeked {
                file.seek(SeekFrom::Start(start))?;
            }
            let mut chunk = vec![0; want];
            // A file shorter than its row says is an error, not a short answer.
            file.read_exact(&mut chunk)?;
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(failed)?
        .map_err(failed)?;
        let next = start + want as u64..range.end;
        Ok(Some((Bytes::from(chunk), (file, next, true))))
    })
    .boxed()
}

/// The object of a file: `episodes/<episodeId>/files/<fileId>`.
pub fn file_key(episode_id: Uuid, file_id: Uuid) -> Path {
    Path::from(format!("episodes/{episode_id}/files/{file_id}"))
}

/// The prefix under which every file's object lies.
pub fn files_prefix() -> Path {
    Path::from("episodes")
}

/// The (episode, file) an object key names; `None` for any other object.
pub fn parse_file_key(key: &Path) -> Option<(Uuid, Uuid)> {
    let parts: Vec<_> = key.parts().collect();
    match parts.as_slice() {
        [a, e, f, id] if a.as_ref() == "episodes" && f.as_ref() == "files" => {
            Some((Uuid::parse_str(e.as_ref()).ok()?, Uuid::parse_str(id.as_ref()).ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        assert_eq!(Location::parse(""), Ok(Location::Folder("data/files".into())));
        assert_eq!(Location::parse("file:///srv/x"), Ok(Location::Folder("/srv/x".into())));
        assert!(Location::parse("file://relative").is_err());
        assert_eq!(Location::parse("memory://t1"), Ok(Location::Memory("t1".into())));
        assert_eq!(Location::parse("s3://media-1/"), Ok(Location::S3 { bucket: "media-1".into() }));
        assert!(Location::parse("s3://A").is_err());
        assert!(Location::parse("gs://bucket").is_err());
    }

    /// A folder store's reads, whole and in ranges across chunk boundaries, come back byte for
    /// byte in chunks of at most [`READ_CHUNK`].
    #[tokio::test]
    async fn folder_reads_stream_in_large_chunks() {
        use object_store::{GetOptions, GetRange};
        let dir = std::env::temp_dir().join(format!("sr-storage-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).expect("store");
        let len = READ_CHUNK * 2 + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let key = Path::from("a/b");
        store.put(&key, data.clone().into()).await.expect("put");
        let cases =
            [None, Some(0..1), Some(7..READ_CHUNK as u64 + 9), Some(len as u64 - 3..len as u64)];
        for range in cases {
            let options =
                GetOptions { range: range.clone().map(GetRange::Bounded), ..GetOptions::default() };
            let got = store.get_opts(&key, options).await.expect("get");
            let chunks: Vec<Bytes> =
                into_stream(got).map(|c| c.expect("chunk")).collect::<Vec<_>>().await;
            assert!(chunks.iter().all(|c| c.len() <= READ_CHUNK && !c.is_empty()), "{range:?}");
            let read: Vec<u8> = chunks.concat();
            let want = range.clone().map_or(&data[..], |r| &data[r.start as usize..r.end as usize]);
            assert_eq!(read, want, "{range:?}");
        }
        let whole = store.get_opts(&key, GetOptions::default()).await.expect("get");
        assert_eq!(into_stream(whole).count().await, 3);
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
    }

    #[test]
    fn file_keys_round_trip() {
        let (e, f) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(parse_file_key(&file_key(e, f)), Some((e, f)));
        assert_eq!(parse_file_key(&Path::from("episodes/x/files/y")), None);
        assert_eq!(parse_file_key(&Path::from("exports/a")), None);
    }
}
