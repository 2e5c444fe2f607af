//! Artifact stores that a tracker's runs point at directly: an MLflow
//! server started with `--default-artifact-root s3://…` (and
//! `--no-serve-artifacts`) hands out runs whose `artifact_uri` is a bucket,
//! and MLflow's own client writes there itself. So does difflog-sync, with
//! Apache Arrow's `object_store` (S3 and S3-compatible stores, Google Cloud
//! Storage, Azure Blob / ADLS Gen2, and a local or shared filesystem),
//! reading credentials the way MLflow's client (boto3, azure-storage-blob,
//! google-cloud-storage) reads them.
//!
//! Every request goes through difflog's HTTP client ([`connector`]).
//! Uploads are idempotent and never write what is already there: an object
//! at the same key with the same MD5 (ETag) or — for content-addressed
//! media, whose key is their SHA-256 — the same size is left alone. Files
//! above [`SMALL_FILE`] go up in parts, several at once, each checked
//! against the run's record before the upload is completed.

mod connector;

use crate::read::media::{open_checked, read_checked, Checker, SMALL_FILE};
use crate::sync::error::{SyncError, SyncResult};
use crate::sync::http::{not_uploaded, Body, Http};
use crate::sync::retry::Class;
use object_store::path::Path as Key;
use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload, WriteMultipart};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Part size of multipart uploads (S3's minimum is 5 MiB).
const PART: usize = 8 * 1024 * 1024;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The most read of a credentials file.
const MAX_CREDENTIALS_FILE: u64 = 1024 * 1024;

/// Where a run's artifacts live, parsed from its artifact URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `s3://BUCKET/PREFIX`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (no leading or trailing `/`).
        prefix: String,
    },
    /// `gs://BUCKET/PREFIX`.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// `wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/PREFIX` or
    /// `abfss://FILESYSTEM@ACCOUNT.dfs.core.windows.net/PREFIX`.
    Azure {
        /// The storage account.
        account: String,
        /// The container (ADLS: file system).
        container: String,
        /// The blob name prefix.
        prefix: String,
    },
    /// `file:///PATH` or `/PATH`: a directory this machine must reach.
    File {
        /// The run's artifact directory.
        dir: PathBuf,
    },
}

impl Place {
    /// Parses an artifact URI of a direct store; `Err` says why it is not
    /// one difflog can write to (the URI comes from a server: untrusted).
    pub fn parse(uri: &str) -> Result<Place, String> {
        let (scheme, rest) = match uri.split_once("://") {
            Some(x) => x,
            None if uri.starts_with('/') => return Place::file(uri),
            None => return Err("not a URI of an artifact store".into()),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = clean_prefix(path)?;
        match scheme {
            "s3" | "s3a" => Ok(Place::S3 {
                bucket: bucket_name(authority)?,
                prefix,
            }),
            "gs" => Ok(Place::Gcs {
                bucket: bucket_name(authority)?,
                prefix,
            }),
            "wasbs" | "wasb" | "abfss" | "abfs" => {
                let (container, host) = authority
                    .split_once('@')
                    .ok_or("an Azure URI names CONTAINER@ACCOUNT.blob.core.windows.net")?;
                let account = host.split('.').next().unwrap_or("");
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.len() <= 63
                        && s.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                };
                if !ok(container) || !ok(account) {
                    return Err("the Azure account or container name is not valid".into());
                }
                Ok(Place::Azure {
                    account: account.into(),
                    container: container.into(),
                    prefix,
                })
            }
            "file" => {
                if !authority.is_empty() && authority != "localhost" {
                    return Err(format!(
                        "file URIs on another host ({authority}) are not reachable from here"
                    ));
                }
                Place::file(&format!("/{path}"))
            }
            other => Err(format!("the scheme {other}:// is not supported")),
        }
    }

    fn file(path: &str) -> Result<Place, String> {
        let p = Path::new(path);
        if p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err("the path has `..` in it".into());
        }
        Ok(Place::File { dir: p.into() })
    }

    /// The store an artifact goes to (one per bucket, container or
    /// directory), as a key for the cache of built stores.
    fn store_key(&self) -> String {
        match self {
            Place::S3 { bucket, .. } => format!("s3://{bucket}"),
            Place::Gcs { bucket, .. } => format!("gs://{bucket}"),
            Place::Azure {
                account, container, ..
            } => format!("azure://{account}/{container}"),
            Place::File { dir } => format!("file://{}", dir.display()),
        }
    }

    /// The object key of `path` (relative to the run's artifact root).
    fn key(&self, path: &str) -> SyncResult<Key> {
        let full = match self {
            Place::S3 { prefix, .. } | Place::Gcs { prefix, .. } | Place::Azure { prefix, .. }
                if !prefix.is_empty() =>
            {
                format!("{prefix}/{path}")
            }
            _ => path.to_string(),
        };
        Key::parse(&full)
            .map_err(|e| SyncError::permanent(format!("artifact path {full:?} is not valid: {e}")))
    }

    /// How messages name the object at `path`.
    fn describe(&self, path: &str) -> String {
        match self {
            Place::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{path}"),
            Place::Gcs { bucket, prefix } => format!("gs://{bucket}/{prefix}/{path}"),
            Place::Azure {
                account,
                container,
                prefix,
            } => format!("azure://{account}/{container}/{prefix}/{path}"),
            Place::File { dir } => dir.join(path).display().to_string(),
        }
    }
}

/// A bucket name as S3 and GCS allow them (3–63 of `a-z0-9.-_`).
fn bucket_name(s: &str) -> Result<String, String> {
    let ok = (3..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid bucket name"))
    }
}

/// A key prefix without its outer slashes, refusing `.`/`..` segments.
pub(crate) fn clean_prefix(path: &str) -> Result<String, String> {
    let p = path.trim_matches('/');
    if p.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("the path has `.` or `..` segments".into());
    }
    if p.contains("//") || p.chars().any(char::is_control) {
        return Err("the path has empty segments or control characters".into());
    }
    Ok(p.to_string())
}

/// The environment, as the store builders read it (tests pass their own).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values as absent.
pub fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The object stores of one target, built on first use.
pub struct Stores {
    http: Http,
    built: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Folders `file:` artifact stores may be written under
    /// (`DIFFLOG_SYNC_FILE_ROOTS`); none unless the user allows some.
    file_roots: Vec<PathBuf>,
}

impl Stores {
    /// Stores whose requests go through a client of their own (TLS
    /// certificates are checked unless `MLFLOW_S3_IGNORE_TLS` is `true`, as
    /// for MLflow's client).
    pub fn new() -> SyncResult<Stores> {
        let insecure = process_env("MLFLOW_S3_IGNORE_TLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        if insecure {
            tracing::warn!(
                "MLFLOW_S3_IGNORE_TLS is set: object store certificates are not checked"
            );
        }
        Ok(Stores {
            http: Http::new("", crate::sync::http::Auth::None)?
                .accepting_invalid_certs(insecure)?,
            built: Mutex::new(HashMap::new()),
            file_roots: file_roots(&process_env),
        })
    }

    /// The same stores allowing `file:` artifact stores under `roots` only.
    pub fn with_file_roots(mut self, roots: Vec<PathBuf>) -> Stores {
        self.file_roots = roots;
        self
    }

    /// Drops pooled connections (the network changed).
    pub fn network_changed(&self) {
        self.http.reset_connections();
    }

    fn store(&self, place: &Place) -> SyncResult<Arc<dyn ObjectStore>> {
        let key = place.store_key();
        if let Some(s) = self
            .built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let store = build(place, &process_env, &self.http, &self.file_roots)?;
        self.built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, store.clone());
        Ok(store)
    }

    /// Writes `body` to `path` under `place`, unless the same bytes are
    /// there already.
    pub async fn put(&self, place: &Place, path: &str, body: Body<'_>) -> SyncResult<()> {
        let what = place.describe(path);
        let store = self.store(place)?;
        let key = place.key(path)?;
        let mut opts = PutOptions::default();
        let content_type = match body {
            Body::Json(_) => Some("application/json"),
            Body::Bytes(_, ct)
            | Body::File {
                content_type: ct, ..
            } => ct,
            Body::Empty => None,
        };
        let bytes = match body {
            Body::Empty => Vec::new(),
            Body::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
            Body::Bytes(b, _) => b.to_vec(),
            Body::File {
                path: file,
                digest,
                len,
                ..
            } => {
                // Media keys are their SHA-256, but what is there may have
                // been overwritten by someone else (`verify --repair`
                // writes it again): it is this file only when its bytes
                // say so.
                if len > SMALL_FILE {
                    if already_there(&*store, place, &key, (len, digest, None), &what).await? {
                        return Ok(());
                    }
                    opts.attributes = attributes(place, content_type, digest);
                    return put_parts(&*store, &key, opts, file, digest, len, &what).await;
                }
                read_checked(file, digest, len)
                    .await
                    .map_err(not_uploaded)?
            }
        };
        let sha = match body {
            Body::File { digest, .. } => digest.to_string(),
            _ => crate::format::sha256_hex(&bytes),
        };
        let len = bytes.len() as u64;
        if already_there(&*store, place, &key, (len, &sha, Some(&bytes)), &what).await? {
            return Ok(());
        }
        opts.attributes = attributes(place, content_type, &sha);
        store
            .put_opts(&key, PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|e| classify(e, &what))
    }
}

impl Stores {
    /// The objects directly in the folder `dir` under `place`: each name
    /// (the last part of its key) and size, of the first `most` objects
    /// the store lists there.
    pub async fn list(
        &self,
        place: &Place,
        dir: &str,
        most: usize,
    ) -> SyncResult<Vec<(String, u64)>> {
        use futures_util::StreamExt;
        let what = place.describe(dir);
        let store = self.store(place)?;
        let key = place.key(dir)?;
        // A stream, read as far as `most` objects: a server that hands out
        // continuation tokens for ever is not followed.
        let mut listed = store.list(Some(&key)).take(most);
        let mut out = Vec::new();
        while let Some(o) = listed.next().await {
            let o = o.map_err(|e| classify(e, &what))?;
            // Directly in `dir` only (the listing is recursive).
            let direct = o
                .location
                .prefix_match(&key)
                .is_some_and(|mut rest| rest.next().is_some() && rest.next().is_none());
            if let (true, Some(name)) = (direct, o.location.filename()) {
                out.push((name.to_string(), o.size));
            }
        }
        Ok(out)
    }

    /// The bytes at `path` under `place`, at most `cap` of them (a larger
    /// object is an error, never read whole); `None` when nothing is there.
    pub async fn get(&self, place: &Place, path: &str, cap: u64) -> SyncResult<Option<Vec<u8>>> {
        use futures_util::StreamExt;
        let what = place.describe(path);
        let store = self.store(place)?;
        let key = place.key(path)?;
        let got = match store.get(&key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(classify(e, &what)),
        };
        let too_big =
            || SyncError::permanent(format!("{what}: larger than the {cap} bytes expected"));
        if got.meta.size > cap {
            return Err(too_big());
        }
        let mut out = Vec::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(e, &what))?;
            if (out.len() + chunk.len()) as u64 > cap {
                return Err(too_big());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }
}

/// The metadata an object carries: its content type and SHA-256 (the
/// digest tells a later upload that the same bytes are there on stores
/// whose ETag is not an MD5: Azure, GCS). A local filesystem keeps none.
fn attributes(place: &Place, content_type: Option<&str>, sha256: &str) -> Attributes {
    let mut a = Attributes::new();
    if matches!(place, Place::File { .. }) {
        return a;
    }
    if let Some(ct) = content_type {
        a.insert(Attribute::ContentType, ct.to_string().into());
    }
    a.insert(
        Attribute::Metadata(DIGEST_META.into()),
        sha256.to_string().into(),
    );
    a
}

/// The metadata key of an object's SHA-256 (Azure allows only identifier
/// characters in metadata names).
const DIGEST_META: &str = "difflog_sha256";

/// Whether the bytes `(len, sha256, bytes)` are at `key` already: on a
/// filesystem store, a file with their SHA-256; elsewhere an object of
/// their size whose metadata holds their SHA-256 (written by difflog) or,
/// when the bytes are at hand, whose ETag is their MD5 (S3 and
/// S3-compatible stores, single part, written by any client).
async fn already_there(
    store: &dyn ObjectStore,
    place: &Place,
    key: &Key,
    (len, sha256, bytes): (u64, &str, Option<&[u8]>),
    what: &str,
) -> SyncResult<bool> {
    let local = matches!(place, Place::File { .. });
    let opts = object_store::GetOptions {
        head: !local,
        ..Default::default()
    };
    let got = match store.get_opts(key, opts).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(classify(e, what)),
    };
    if got.meta.size != len {
        return Ok(false);
    }
    if local {
        let there = got.bytes().await.map_err(|e| classify(e, what))?;
        return Ok(crate::format::sha256_hex(&there) == sha256);
    }
    let digest = got.attributes.get(&Attribute::Metadata(DIGEST_META.into()));
    if digest.is_some_and(|d| d.as_ref() == sha256) {
        return Ok(true);
    }
    // A multipart ETag (`…-N`) is no MD5 of the bytes, and never equal.
    let etag = got.meta.e_tag.as_deref().unwrap_or("").trim_matches('"');
    Ok(bytes.is_some_and(|b| etag.eq_ignore_ascii_case(&crate::format::hex(&md5_of(b)))))
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(bytes).into()
}

/// A large media file in parts, several in flight; completed only when the
/// whole file matched its record (else the upload is aborted: nothing
/// appears under the key).
async fn put_parts(
    store: &dyn ObjectStore,
    key: &Key,
    opts: PutOptions,
    file: &Path,
    digest: &str,
    len: u64,
    what: &str,
) -> SyncResult<()> {
    let mut f = open_checked(file, len).await.map_err(not_uploaded)?;
    let upload = store
        .put_multipart_opts(key, opts.attributes.into())
        .await
        .map_err(|e| classify(e, what))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut check = Checker::new(file, digest, len);
    let mut buf = vec![0u8; 1024 * 1024];
    let failed = loop {
        let n = match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) => {
                break Some(SyncError::permanent(format!(
                    "{}: cannot read: {e}",
                    file.display()
                )))
            }
        };
        check.update(&buf[..n]);
        if check.past_end() {
            break None;
        }
        if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
            break Some(classify(e, what));
        }
        w.write(&buf[..n]);
    };
    let failed = failed.or_else(|| check.finish().err().map(not_uploaded));
    if let Some(e) = failed {
        let _ = w.abort().await;
        return Err(e);
    }
    w.finish().await.map(|_| ()).map_err(|e| classify(e, what))
}

/// What failed, as the sync engine classifies failures: the request
/// errors of difflog's client keep their class; refused credentials stop
/// the target; anything else the store said is permanent.
fn classify(e: object_store::Error, what: &str) -> SyncError {
    if let Some(mut s) = connector::sync_error_in(&e) {
        s.message = crate::redact::redact(&format!("{what}: {}", s.message));
        return s;
    }
    let text = e.to_string();
    let said = storage_says(&text).unwrap_or_else(|| short(&text));
    match e {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => SyncError {
            class: Class::Auth,
            ..SyncError::permanent(format!(
                "{what}: the object store refused the credentials ({said}); check \
                     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), \
                     AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCESS_KEY, or \
                     GOOGLE_APPLICATION_CREDENTIALS"
            ))
        },
        object_store::Error::NotFound { .. } => SyncError::permanent(format!(
            "{what}: not found — does the bucket or container exist? ({said})"
        )),
        _ => SyncError::permanent(format!("{what}: {said}")),
    }
}

/// The `Code: Message` of an S3/Azure XML error body quoted in `text`.
fn storage_says(text: &str) -> Option<String> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let i = text.find(&open)? + open.len();
        let j = text[i..].find('<')? + i;
        Some(text[i..j].trim().to_string())
    };
    let code = tag("Code")?;
    Some(match tag("Message") {
        Some(m) => format!("{code}: {}", short(&m)),
        None => code,
    })
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_string()
    }
}

/// object_store retries nothing itself: [`Http`] does, with the shared
/// backoff and `Retry-After`.
fn no_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

/// Builds the store of `place` with the credentials `env` gives.
fn build(
    place: &Place,
    env: Env<'_>,
    http: &Http,
    file_roots: &[PathBuf],
) -> SyncResult<Arc<dyn ObjectStore>> {
    let fail = |why: String| SyncError {
        class: Class::Auth,
        ..SyncError::permanent(format!("{}: {why}", place.store_key()))
    };
    let built: object_store::Result<Arc<dyn ObjectStore>> = match place {
        Place::S3 { bucket, .. } => {
            let keys = aws_keys(env).map_err(fail)?;
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(aws_region(env).map_err(fail)?)
                .with_access_key_id(&keys.id)
                .with_secret_access_key(&keys.secret)
                .with_retry(no_retries())
                .with_http_connector(connector::Connector(http.clone()));
            if let Some(t) = &keys.token {
                b = b.with_token(t);
            }
            let endpoint = env("MLFLOW_S3_ENDPOINT_URL")
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"));
            if let Some(ep) = endpoint {
                // S3-compatible servers (MinIO, Ceph, SeaweedFS…): the
                // bucket in the path, as boto3 addresses them.
                b = b
                    .with_allow_http(ep.starts_with("http://"))
                    .with_endpoint(ep.trim_end_matches('/'))
                    .with_virtual_hosted_style_request(false);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Place::Gcs { bucket, .. } => {
            let path = env("GOOGLE_APPLICATION_CREDENTIALS").ok_or_else(|| {
                fail("no credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file".into())
            })?;
            let key = crate::redact::read_private_file(
                Path::new(&path),
                "service account key",
                MAX_CREDENTIALS_FILE,
            )
            .map_err(|e| fail(e.to_string()))?;
            object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_service_account_key(key)
                .with_retry(no_retries())
                .with_http_connector(connector::Connector(http.clone()))
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Place::Azure {
            account, container, ..
        } => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_container_name(container)
                .with_retry(no_retries())
                .with_http_connector(connector::Connector(http.clone()));
            let azure = azure_credentials(env).map_err(fail)?;
            crate::redact::register_secret(None, &azure.key);
            b = b.with_access_key(&azure.key);
            if let Some(ep) = azure.blob_endpoint {
                b = b
                    .with_allow_http(ep.starts_with("http://"))
                    .with_endpoint(ep);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        Place::File { dir } => {
            file_root(dir, file_roots).map_err(SyncError::permanent)?;
            object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
    };
    built.map_err(|e| SyncError::permanent(format!("{}: {e}", place.store_key())))
}

/// The folders `file:` stores may be written under: `DIFFLOG_SYNC_FILE_ROOTS`,
/// `:`-separated absolute paths.
fn file_roots(env: Env<'_>) -> Vec<PathBuf> {
    env("DIFFLOG_SYNC_FILE_ROOTS")
        .map(|v| {
            v.split(':')
                .filter(|p| Path::new(p).is_absolute())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// A `file:` artifact directory named by a server (untrusted: it could name
/// any folder this user can write) is written only under a folder the user
/// allowed (`DIFFLOG_SYNC_FILE_ROOTS`), never inside a run or a root of
/// runs, and only where this machine reaches it: its artifact root (the
/// run folder's parent's parent, or nearer) must exist already — on a
/// shared filesystem, mounted — else nothing is created and the error says
/// so.
fn file_root(dir: &Path, allowed: &[PathBuf]) -> Result<(), String> {
    // The nearest folder that exists, resolved (links followed), then the
    // rest of the path (which has no `..`: Place::parse refuses it).
    let mut existing = dir;
    let mut rest = Vec::new();
    while !existing.is_dir() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            break;
        };
        rest.push(name);
        existing = parent;
    }
    let resolved = existing
        .canonicalize()
        .map(|p| rest.iter().rev().fold(p, |acc, n| acc.join(n)))
        .unwrap_or_else(|_| dir.to_path_buf());
    let inside_allowed = allowed.iter().any(|root| {
        root.canonicalize()
            .is_ok_and(|root| resolved.starts_with(&root))
    });
    if !inside_allowed {
        return Err(format!(
            "the MLflow server keeps this run's artifacts in the folder {} (a file: URI); \
             difflog-sync writes such folders only under the ones you allow: \
             DIFFLOG_SYNC_FILE_ROOTS=/path/to/mlruns (or serve artifacts through the server: \
             mlflow server --serve-artifacts)",
            dir.display()
        ));
    }
    if let Some(runs) = resolved.ancestors().find(|a| {
        a.join(crate::format::RUN_JSON).is_file() || a.join(crate::sync::state::STATE_DIR).is_dir()
    }) {
        return Err(format!(
            "the artifact folder {} is inside {}, a run or a root of runs: refused",
            dir.display(),
            runs.display()
        ));
    }
    let reachable = dir.ancestors().take(4).skip(1).any(|a| a.is_dir());
    if !reachable {
        return Err(format!(
            "the run's artifacts are at {} (a file: URI), which is not reachable from this \
             machine: mount the server's artifact root there (a shared filesystem), or \
             serve artifacts through the server (mlflow server --serve-artifacts)",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create the artifact directory {}: {e}",
            dir.display()
        )
    })
}

/// AWS credentials.
#[derive(Debug, PartialEq)]
struct AwsKeys {
    id: String,
    secret: String,
    token: Option<String>,
}

/// Credentials as boto3 finds them: `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`), else the profile
/// `AWS_PROFILE` (default `default`) of the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`, which must
/// be mode 0600). Every secret is registered for redaction.
fn aws_keys(env: Env<'_>) -> Result<AwsKeys, String> {
    let keys = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => AwsKeys {
            id,
            secret,
            token: env("AWS_SESSION_TOKEN"),
        },
        (Some(_), None) | (None, Some(_)) => {
            return Err("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into())
        }
        (None, None) => {
            let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
            let file = env("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")))
                .ok_or("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")?;
            if !file.exists() {
                return Err(format!(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                     AWS_PROFILE with {}",
                    file.display()
                ));
            }
            let text = crate::redact::read_private_file(&file, "credentials", MAX_CREDENTIALS_FILE)
                .map_err(|e| e.to_string())?;
            let section = ini_section(&text, &profile)
                .ok_or_else(|| format!("{}: no profile [{profile}]", file.display()))?;
            let get = |k: &str| section.get(k).cloned().filter(|v| !v.is_empty());
            match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                (Some(id), Some(secret)) => AwsKeys {
                    id,
                    secret,
                    token: get("aws_session_token"),
                },
                _ => {
                    return Err(format!(
                        "{}: profile [{profile}] lacks aws_access_key_id or aws_secret_access_key",
                        file.display()
                    ))
                }
            }
        }
    };
    crate::redact::register_secret(None, &keys.secret);
    crate::redact::register_secret(None, &keys.id);
    if let Some(t) = &keys.token {
        crate::redact::register_secret(None, t);
    }
    Ok(keys)
}

/// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`
/// in `~/.aws/config` (`AWS_CONFIG_FILE`), else `us-east-1` — checked as
/// AWS's clients check it (a host label: letters, digits and `-`), since it
/// becomes part of the endpoint's host name: `x@127.0.0.1:PORT/` would send
/// every signed request to another address.
fn aws_region(env: Env<'_>) -> Result<String, String> {
    let r = aws_region_unchecked(env);
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if label(&r) {
        Ok(r)
    } else {
        Err(format!(
            "the AWS region {r:?} (AWS_REGION, AWS_DEFAULT_REGION or the profile's region in ~/.aws/config) \
             is not a region name: letters, digits and '-' only"
        ))
    }
}

fn aws_region_unchecked(env: Env<'_>) -> String {
    if let Some(r) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
        return r;
    }
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let file = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/config")));
    let from_file = file.and_then(|f| {
        let md = std::fs::metadata(&f).ok()?;
        if !md.is_file() || md.len() > MAX_CREDENTIALS_FILE {
            return None;
        }
        let text = std::fs::read_to_string(&f).ok()?;
        let name = if profile == "default" {
            profile.clone()
        } else {
            format!("profile {profile}")
        };
        ini_section(&text, &name)?.get("region").cloned()
    });
    from_file.unwrap_or_else(|| "us-east-1".into())
}

/// The `key = value` lines of section `[name]` of an INI text.
fn ini_section(text: &str, name: &str) -> Option<HashMap<String, String>> {
    let mut current: Option<&str> = None;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(h.trim());
            if h.trim() == name {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if current == Some(name) {
            if let (Some(map), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
                let map: &mut HashMap<String, String> = map;
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    found
}

/// Azure credentials: an account key and, for emulators and sovereign
/// clouds, the blob endpoint.
#[derive(Debug, PartialEq)]
struct AzureKeys {
    key: String,
    blob_endpoint: Option<String>,
}

/// `AZURE_STORAGE_CONNECTION_STRING` (its `AccountKey` and `BlobEndpoint`),
/// else `AZURE_STORAGE_ACCESS_KEY` — what MLflow's Azure client reads.
fn azure_credentials(env: Env<'_>) -> Result<AzureKeys, String> {
    if let Some(cs) = env("AZURE_STORAGE_CONNECTION_STRING") {
        let mut key = None;
        let mut blob_endpoint = None;
        for part in cs.split(';') {
            if let Some((k, v)) = part.split_once('=') {
                match k.trim() {
                    "AccountKey" => key = Some(v.trim().to_string()),
                    "BlobEndpoint" => blob_endpoint = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let key = key.ok_or(
            "AZURE_STORAGE_CONNECTION_STRING has no AccountKey (SAS-only strings are not supported)",
        )?;
        return Ok(AzureKeys { key, blob_endpoint });
    }
    match env("AZURE_STORAGE_ACCESS_KEY") {
        Some(key) => Ok(AzureKeys {
            key,
            blob_endpoint: None,
        }),
        None => Err(
            "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCESS_KEY"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_parse_and_hostile_ones_are_refused() {
        assert_eq!(
            Place::parse("s3://mlflow-bucket/team/7/abc/artifacts"),
            Ok(Place::S3 {
                bucket: "mlflow-bucket".into(),
                prefix: "team/7/abc/artifacts".into()
            })
        );
        assert_eq!(
            Place::parse("gs://b-1/x/"),
            Ok(Place::Gcs {
                bucket: "b-1".into(),
                prefix: "x".into()
            })
        );
        assert_eq!(
            Place::parse("wasbs://runs@acct.blob.core.windows.net/1/r/artifacts"),
            Ok(Place::Azure {
                account: "acct".into(),
                container: "runs".into(),
                prefix: "1/r/artifacts".into()
            })
        );
        assert_eq!(
            Place::parse("abfss://fs@acct.dfs.core.windows.net/p"),
            Ok(Place::Azure {
                account: "acct".into(),
                container: "fs".into(),
                prefix: "p".into()
            })
        );
        assert_eq!(
            Place::parse("file:///srv/mlruns/1/r/artifacts"),
            Ok(Place::File {
                dir: "/srv/mlruns/1/r/artifacts".into()
            })
        );
        assert_eq!(
            Place::parse("/srv/mlruns/1/r/artifacts"),
            Ok(Place::File {
                dir: "/srv/mlruns/1/r/artifacts".into()
            })
        );
        for bad in [
            "s3://B/x",
            "s3://ab/x",
            "s3://bucket/a/../b",
            "s3://bucket/a//b",
            "s3://bucket/a\nb",
            "file://otherhost/x",
            "file:///a/../etc",
            "hdfs://nn/x",
            "wasbs://noaccount/x",
            "relative/path",
        ] {
            assert!(Place::parse(bad).is_err(), "{bad} accepted");
        }
        let p = Place::parse("s3://bkt/pre").unwrap();
        assert_eq!(p.key("images/a.png").unwrap().as_ref(), "pre/images/a.png");
        assert!(p.key("a/../b").is_err());
    }

    #[test]
    fn aws_credentials_come_from_the_environment_then_the_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = secretdefault\n\n\
             [team]\naws_access_key_id=AKIDTEAM\naws_secret_access_key=secretteam\naws_session_token=tok1234\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("config");
        std::fs::write(&config, "[profile team]\nregion = eu-west-3\n").unwrap();
        fn with(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        }
        let env = with(vec![
            ("AWS_ACCESS_KEY_ID", "AKIDENV".into()),
            ("AWS_SECRET_ACCESS_KEY", "secretenv".into()),
        ]);
        assert_eq!(aws_keys(&env).unwrap().id, "AKIDENV");
        assert_eq!(aws_region(&env).unwrap(), "us-east-1");
        let env = with(vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", "team".into()),
        ]);
        assert_eq!(
            aws_keys(&env).unwrap(),
            AwsKeys {
                id: "AKIDTEAM".into(),
                secret: "secretteam".into(),
                token: Some("tok1234".into())
            }
        );
        assert_eq!(aws_region(&env).unwrap(), "eu-west-3");
        // Issue 32, item 3: a region is a host label, never an address.
        for bad in ["x@127.0.0.1:9000/", "eu-west-1.evil.example", "a/b", "-x"] {
            let env = with(vec![("AWS_REGION", bad.to_string())]);
            let e = aws_region(&env).unwrap_err();
            assert!(e.contains("is not a region name"), "{bad}: {e}");
        }
        std::fs::write(&config, "[profile team]\nregion = x@127.0.0.1:1/\n").unwrap();
        let env = with(vec![
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", "team".into()),
        ]);
        assert!(aws_region(&env).is_err());
        std::fs::write(&config, "[profile team]\nregion = eu-west-3\n").unwrap();
        let env = with(vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_PROFILE", "nope".into()),
        ]);
        assert!(aws_keys(&env).unwrap_err().contains("no profile [nope]"));
        // Readable by others: refused, naming the fix.
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let env = with(vec![(
            "AWS_SHARED_CREDENTIALS_FILE",
            creds.display().to_string(),
        )]);
        assert!(aws_keys(&env).unwrap_err().contains("chmod 600"));
        let env = with(vec![("AWS_ACCESS_KEY_ID", "AKIDONLY".into())]);
        assert!(aws_keys(&env).unwrap_err().contains("both"));
        let env = with(vec![(
            "HOME",
            dir.path().join("none").display().to_string(),
        )]);
        assert!(aws_keys(&env).unwrap_err().contains("no S3 credentials"));
        // Secrets read are redacted from every message from now on.
        assert!(!crate::redact::redact("x secretteam y").contains("secretteam"));
    }

    #[test]
    fn azure_credentials_and_storage_errors() {
        let env = |k: &str| {
            (k == "AZURE_STORAGE_CONNECTION_STRING").then(|| {
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5a2V5;\
                 BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
                    .to_string()
            })
        };
        assert_eq!(
            azure_credentials(&env).unwrap(),
            AzureKeys {
                key: "a2V5a2V5".into(),
                blob_endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into())
            }
        );
        assert!(azure_credentials(&|_: &str| None)
            .unwrap_err()
            .contains("AZURE_STORAGE_ACCESS_KEY"));
        assert_eq!(
            storage_says("… 403 Forbidden: <?xml?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature</Message></Error>"),
            Some("SignatureDoesNotMatch: The request signature".into())
        );
        assert_eq!(storage_says("plain"), None);
    }

    #[test]
    fn a_reachable_file_store_gets_the_bytes_once() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("7/abc/artifacts");
        let place = Place::parse(&format!("file://{}", run.display())).unwrap();
        // Issue 32, item 1: refused unless its folder is allowed.
        let rt0 = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt0
            .block_on(Stores::new().unwrap().put(
                &place,
                "a.json",
                Body::Json(&serde_json::json!({})),
            ))
            .unwrap_err();
        assert!(e.to_string().contains("DIFFLOG_SYNC_FILE_ROOTS"), "{e}");
        assert!(!run.exists());
        let media = dir.path().join("x.png");
        std::fs::write(&media, b"not really a png").unwrap();
        let digest = crate::format::sha256_hex(b"not really a png");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stores = Stores::new()
            .unwrap()
            .with_file_roots(vec![dir.path().to_path_buf()]);
        let json = serde_json::json!({"a": 1});
        let put_all = || {
            rt.block_on(async {
                stores
                    .put(&place, "difflog/config.json", Body::Json(&json))
                    .await
                    .unwrap();
                let file = Body::File {
                    path: &media,
                    content_type: Some("image/png"),
                    digest: &digest,
                    len: 16,
                };
                stores.put(&place, "images/x.png", file).await.unwrap();
            })
        };
        put_all();
        let config = run.join("difflog/config.json");
        assert_eq!(std::fs::read(&config).unwrap(), br#"{"a":1}"#);
        assert_eq!(
            std::fs::read(run.join("images/x.png")).unwrap(),
            b"not really a png"
        );
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = (mtime(&config), mtime(&run.join("images/x.png")));
        std::thread::sleep(std::time::Duration::from_millis(20));
        put_all();
        assert_eq!(
            (mtime(&config), mtime(&run.join("images/x.png"))),
            before,
            "the same bytes were written again"
        );
        // A file that is not what the run recorded is not uploaded.
        std::fs::write(&media, b"changed after rec").unwrap();
        let e = rt
            .block_on(stores.put(
                &place,
                "images/y.png",
                Body::File {
                    path: &media,
                    content_type: None,
                    digest: &digest,
                    len: 16,
                },
            ))
            .unwrap_err();
        assert!(e.message.contains("size 17 but 16 recorded"), "{e}");
        assert!(!run.join("images/y.png").exists());
    }

    #[test]
    fn file_stores_need_a_reachable_root() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = [dir.path().to_path_buf()];
        let run = dir.path().join("1/abc/artifacts");
        file_root(&run, &allowed).unwrap();
        assert!(run.is_dir());
        let far = dir.path().join("missing/a/b/c/1/abc/artifacts");
        let e = file_root(&far, &allowed).unwrap_err();
        assert!(e.contains("not reachable from this machine"), "{e}");
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn file_stores_only_under_allowed_folders_and_never_in_runs() {
        // Issue 32, item 1: a server answering artifact_uri = file:///ANY
        // made difflog-sync create it and write tables and images there.
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let allowed = [dir.path().join("mlruns")];
        std::fs::create_dir_all(&allowed[0]).unwrap();
        let e = file_root(&other.path().join("1/abc/artifacts"), &allowed).unwrap_err();
        assert!(e.contains("DIFFLOG_SYNC_FILE_ROOTS"), "{e}");
        assert!(!other.path().join("1").exists());
        let e = file_root(&dir.path().join("1/abc/artifacts"), &[]).unwrap_err();
        assert!(e.contains("DIFFLOG_SYNC_FILE_ROOTS"), "{e}");
        // An allowed folder that is (or is inside) a root of runs: refused.
        let runs = dir.path().join("mlruns/runs");
        std::fs::create_dir_all(runs.join(crate::sync::state::STATE_DIR)).unwrap();
        let e = file_root(&runs.join("1/abc/artifacts"), &allowed).unwrap_err();
        assert!(e.contains("a run or a root of runs"), "{e}");
        let run = dir.path().join("mlruns/r1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join(crate::format::RUN_JSON), "{}").unwrap();
        let e = file_root(&run.join("media"), &allowed).unwrap_err();
        assert!(e.contains("a run or a root of runs"), "{e}");
        // `..` never reaches here (the URI is refused), and a link out of
        // the allowed folder is resolved before the check.
        std::os::unix::fs::symlink(other.path(), dir.path().join("mlruns/out")).unwrap();
        let e = file_root(&dir.path().join("mlruns/out/1/a"), &allowed).unwrap_err();
        assert!(e.contains("DIFFLOG_SYNC_FILE_ROOTS"), "{e}");
        file_root(&dir.path().join("mlruns/1/abc/artifacts"), &allowed).unwrap();
    }
}
