//! The HTTP client every target shares: one keep-alive connection pool,
//! credentials that never reach a message, per-request retries for transient
//! failures, and uploads streamed from disk.

use super::error::{SyncError, SyncResult};
use super::retry::{classify_status, parse_retry_after, retry, Class, Decision, Policy};
use crate::read::media::{open_checked, read_checked, Checker, SMALL_FILE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The most read of any answer (JSON of an API call, an error page): a
/// server's answer is untrusted, and one that never ends must not fill the
/// memory.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why reading an answer stopped.
enum Capped {
    /// Longer than allowed.
    TooLong,
    /// The connection failed.
    Read(reqwest::Error),
}

/// The body of `resp`, at most `cap` bytes.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Capped::TooLong);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Read)? {
        if out.len() + chunk.len() > cap {
            return Err(Capped::TooLong);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// How requests authenticate.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP Basic.
    Basic(String, String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in debug output.
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::Bearer(_) => "Auth::Bearer(<redacted>)",
            Auth::Basic(_, _) => "Auth::Basic(<redacted>)",
        })
    }
}

/// A body to send (references only: copying it is free).
#[derive(Clone, Copy)]
pub enum Body<'a> {
    /// No body.
    Empty,
    /// JSON.
    Json(&'a Value),
    /// Bytes in memory, with their content type (`None`: no `Content-Type`
    /// header, as signed storage URLs that did not sign one require).
    Bytes(&'a [u8], Option<&'a str>),
    /// A media file from a run, streamed from disk and checked while it is
    /// read: its size and SHA-256 must be those recorded, or it is not sent
    /// (a file replaced, edited or hard-linked elsewhere after recording).
    File {
        /// The file (already checked to be a regular file inside its run).
        path: &'a Path,
        /// Its content type (`None`: no `Content-Type` header).
        content_type: Option<&'a str>,
        /// The recorded SHA-256 (lower-case hex).
        digest: &'a str,
        /// The recorded size in bytes.
        len: u64,
    },
}

/// What a caller needs of a successful answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The body, parsed as JSON.
    Json,
    /// Only the success status.
    Status,
}

/// Keep-alive HTTP client with retries.
#[derive(Debug, Clone)]
pub struct Http {
    /// Shared by the clones of this client, and replaced whole when the
    /// network changes (its pooled connections may be dead).
    client: std::sync::Arc<std::sync::RwLock<reqwest::Client>>,
    base: String,
    auth: Auth,
    attempts: u32,
    /// Transient failures in a row, over all requests of this client (any
    /// success resets it). Concurrent requests each retrying on their own
    /// would multiply the attempts against a server that is down.
    failures_in_a_row: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// When a server last answered anything (milliseconds since the Unix
    /// epoch; 0: never), over this client and its clones.
    answered_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// TLS certificates are not checked (`MLFLOW_S3_IGNORE_TLS`).
    insecure: bool,
}

impl Http {
    /// A client for `base` (scheme, host, port, optional path prefix).
    pub fn new(base: &str, auth: Auth) -> SyncResult<Http> {
        Ok(Http {
            client: std::sync::Arc::new(std::sync::RwLock::new(Self::build_client(false)?)),
            base: base.trim_end_matches('/').to_string(),
            auth,
            attempts: 4,
            failures_in_a_row: Default::default(),
            answered_ms: Default::default(),
            insecure: false,
        })
    }

    /// This client, not checking TLS certificates when `insecure` (a store
    /// the user told to trust: `MLFLOW_S3_IGNORE_TLS`).
    pub fn accepting_invalid_certs(mut self, insecure: bool) -> SyncResult<Http> {
        if insecure != self.insecure {
            self.insecure = insecure;
            self.client =
                std::sync::Arc::new(std::sync::RwLock::new(Self::build_client(insecure)?));
        }
        Ok(self)
    }

    /// When a server last answered a request of this client (any status).
    pub fn last_answer(&self) -> Option<std::time::SystemTime> {
        let ms = self.answered_ms.load(std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then(|| std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
    }

    /// Drops every pooled connection (of this client and its clones): after
    /// a network change they may be dead, and a request sent on one would
    /// wait for the read timeout instead of failing or succeeding at once.
    /// Requests in flight keep their connections.
    pub fn reset_connections(&self) {
        match Self::build_client(self.insecure) {
            Ok(c) => *self.client.write().unwrap_or_else(|p| p.into_inner()) = c,
            Err(e) => tracing::warn!("{e}"),
        }
    }

    fn build_client(insecure: bool) -> SyncResult<reqwest::Client> {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            // A server that stops answering mid-request is given up on long
            // before the whole-request limit (which large uploads need).
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(8)
            // Bodies go out in several writes: without NODELAY, Nagle plus the
            // peer's delayed ACK stall each upload by ~40 ms.
            .tcp_nodelay(true)
            .user_agent(concat!("difflog-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SyncError::permanent(format!("cannot build HTTP client: {e}")))
    }

    /// Sets how many times one request is tried before its error is returned.
    pub fn with_attempts(mut self, attempts: u32) -> Http {
        self.attempts = attempts.max(1);
        self
    }

    /// The base URL (no credentials in it).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to `base + path`, retrying transient failures; returns
    /// the response body parsed as JSON (`Null` when empty).
    pub async fn send(&self, method: Method, path: &str, body: Body<'_>) -> SyncResult<Value> {
        self.send_with(method, path, &[], body).await
    }

    /// Like [`Http::send`] for requests whose answer carries nothing the
    /// caller needs: a success status is the acknowledgement, and the body
    /// is read in the background. (MLflow's server sends a small body in a
    /// second TCP segment that its side holds back until this side's delayed
    /// ACK, ~40 ms later; waiting for it made every such request 40 ms long.)
    pub async fn send_ack(&self, method: Method, path: &str, body: Body<'_>) -> SyncResult<()> {
        self.send_retrying(method, path, &[], body, Want::Status)
            .await
            .map(|_| ())
    }

    /// Like [`Http::send`], with extra request headers. A `path` that is an
    /// absolute `http(s)://` URL is used as it is (upload URLs a server
    /// handed out).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Body<'_>,
    ) -> SyncResult<Value> {
        self.send_retrying(method, path, headers, body, Want::Json)
            .await
    }

    async fn send_retrying(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Body<'_>,
        want: Want,
    ) -> SyncResult<Value> {
        self.retrying(|| self.attempt(method.clone(), path, headers, &body, want))
            .await
    }

    /// Runs `attempt` until it succeeds or fails for good: transient
    /// failures are retried with backoff, counted over every request of
    /// this client (any success resets the count) so that an outage is
    /// retried by the pass, not by each of many concurrent requests; a
    /// server that cannot be reached at all is not retried here.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> SyncResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = SyncResult<T>>,
    {
        use std::sync::atomic::Ordering::Relaxed;
        let policy = Policy {
            base: Duration::from_millis(250),
            max: Duration::from_secs(8),
            attempts: self.attempts,
        };
        retry(
            policy,
            |_| {
                let fut = attempt();
                async {
                    let result = fut.await;
                    match &result {
                        Err(e) if e.class == Class::Transient => {
                            self.failures_in_a_row.fetch_add(1, Relaxed);
                        }
                        _ => self.failures_in_a_row.store(0, Relaxed),
                    }
                    result
                }
            },
            |e: &SyncError| {
                let in_a_row = self.failures_in_a_row.load(Relaxed);
                if e.class == Class::Transient && !e.unreachable && in_a_row < self.attempts {
                    tracing::debug!("{e}; retrying");
                    Decision::Retry(e.retry_after)
                } else {
                    Decision::Stop
                }
            },
        )
        .await
    }

    /// A request that got no answer: transient (unreachable when no
    /// connection could be made), named by `what`.
    fn no_answer(&self, what: &str, e: &reqwest::Error) -> SyncError {
        let class = if e.is_builder() {
            Class::Permanent
        } else {
            Class::Transient
        };
        SyncError {
            class,
            message: crate::redact::redact(&format!("{what}: {}", error_chain(e))),
            unreachable: e.is_connect(),
            ..SyncError::permanent(String::new())
        }
    }

    /// Notes that the server answered now.
    fn answered(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.answered_ms
            .fetch_max(now_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// One request that a storage client built and signed itself (the
    /// object stores of the MLflow target), sent as it is through this
    /// client's connection pool, upload pacing and retries: transient
    /// answers (5xx, 408, 429, honouring `Retry-After`) and broken
    /// connections are tried again; any other answer, success or not, is
    /// returned whole (at most [`MAX_ANSWER`] bytes) for the caller to read.
    pub async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &reqwest::header::HeaderMap,
        body: bytes::Bytes,
    ) -> SyncResult<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes)> {
        let what = format!("{method} {}", url.split('?').next().unwrap_or(""));
        self.retrying(|| async {
            let client = self
                .client
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let sent = if super::rate::active() {
                super::rate::paced(body.to_vec())
            } else {
                body.clone().into()
            };
            let mut req = client.request(method.clone(), url).headers(headers.clone());
            if !headers.contains_key(reqwest::header::CONTENT_LENGTH) {
                // A paced body is a stream: stores want its length told.
                req = req.header(reqwest::header::CONTENT_LENGTH, body.len());
            }
            let resp = req
                .body(sent)
                .send()
                .await
                .map_err(|e| self.no_answer(&what, &e))?;
            self.answered();
            let status = resp.status();
            if classify_status(status.as_u16()) == Class::Transient {
                return Err(answer(resp, &what, Want::Json)
                    .await
                    .err()
                    .unwrap_or_else(|| SyncError::transient(format!("{what}: {status}"))));
            }
            let headers = resp.headers().clone();
            let bytes = read_answer(resp, &what).await?;
            Ok((status, headers, bytes::Bytes::from(bytes)))
        })
        .await
    }

    /// Downloads `path` (a GET), retrying transient failures: the body, at
    /// most `cap` bytes (a longer one is an error, never read whole).
    pub async fn download(&self, path: &str, cap: usize) -> SyncResult<Vec<u8>> {
        self.download_url(&format!("{}{}", self.base, path), cap)
            .await
    }

    /// [`Http::download`] of a whole URL (one a server handed out, which
    /// may point at another host).
    pub async fn download_url(&self, url: &str, cap: usize) -> SyncResult<Vec<u8>> {
        let what = format!("GET {}", url.split('?').next().unwrap_or(""));
        self.retrying(|| async {
            let req = self
                .request(Method::GET, url, &what, &[], &Body::Empty)
                .await?;
            let resp = self.sent(req, &what).await?;
            if !resp.status().is_success() {
                let status = resp.status();
                return Err(answer(resp, &what, Want::Json)
                    .await
                    .err()
                    .unwrap_or_else(|| SyncError::permanent(format!("{what}: {status}"))));
            }
            read_capped(resp, cap).await.map_err(|e| match e {
                Capped::TooLong => SyncError::permanent(format!(
                    "{what}: the server sent more than the {cap} bytes expected"
                )),
                Capped::Read(e) => {
                    SyncError::transient(format!("{what}: reading response: {}", error_chain(&e)))
                }
            })
        })
        .await
    }

    /// Sends once, no retry.
    pub async fn send_once(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: &Body<'_>,
    ) -> SyncResult<Value> {
        self.attempt(method, path, headers, body, Want::Json).await
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: &Body<'_>,
        want: Want,
    ) -> SyncResult<Value> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        // A query string may carry a signature (signed upload URLs): it
        // never goes into a message.
        let what = format!("{method} {}", url.split('?').next().unwrap_or(""));
        let req = self.request(method, &url, &what, headers, body).await?;
        let resp = self.sent(req, &what).await?;
        answer(resp, &what, want).await
    }

    /// Sends `req` (named `what`): the server's answer, noted and logged
    /// with how long it took.
    async fn sent(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> SyncResult<reqwest::Response> {
        let started = std::time::Instant::now();
        let resp = req.send().await.map_err(|e| self.no_answer(what, &e))?;
        self.answered();
        tracing::debug!(
            "{what}: {} in {:.1} ms",
            resp.status(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(resp)
    }

    /// The request with its credentials, body and the extra headers a
    /// server asked for.
    async fn request(
        &self,
        method: Method,
        url: &str,
        what: &str,
        headers: &[(String, String)],
        body: &Body<'_>,
    ) -> SyncResult<reqwest::RequestBuilder> {
        let client = self
            .client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut req = client.request(method, url);
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        req = match body {
            Body::Empty => req,
            Body::Json(v) => {
                let b = serde_json::to_vec(v).map_err(|e| {
                    SyncError::permanent(format!("{what}: cannot encode the request: {e}"))
                })?;
                req.header("Content-Type", "application/json")
                    .header("Content-Length", b.len())
                    .body(super::rate::paced(b))
            }
            Body::Bytes(b, ct) => with_type(req, *ct)
                .header("Content-Length", b.len())
                .body(super::rate::paced(b.to_vec())),
            Body::File {
                path,
                content_type,
                digest,
                len,
            } => {
                let body = checked_file_body(path, digest, *len).await?;
                with_type(req, *content_type)
                    .header("Content-Length", *len)
                    .body(body)
            }
        };
        if headers.is_empty() {
            return Ok(req);
        }
        // Replaces a header of the same name set above (Content-Type).
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.trim().as_bytes());
            let value = reqwest::header::HeaderValue::from_str(v.trim());
            match (name, value) {
                (Ok(n), Ok(v)) => {
                    map.append(n, v);
                }
                _ => {
                    return Err(SyncError::permanent(format!(
                        "{what}: the server asked for an invalid header {k:?}"
                    )))
                }
            }
        }
        Ok(req.headers(map))
    }
}

/// What a server's answer means: its JSON body (`Null` when empty, a string
/// when not JSON) on success, or an error classified by status, with
/// `Retry-After`. Bodies are read up to [`MAX_ANSWER`].
async fn answer(resp: reqwest::Response, what: &str, want: Want) -> SyncResult<Value> {
    let status = resp.status();
    let retry_after = parse_retry_after(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
    );
    if status.is_success() && want == Want::Status {
        // Read to the end so that the connection goes back to the pool
        // (but never more than an answer can be: a server streaming
        // without end only loses its connection).
        tokio::spawn(async move {
            let _ = read_capped(resp, MAX_ANSWER).await;
        });
        return Ok(Value::Null);
    }
    let body = read_answer(resp, what).await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text).or_else(|_| Ok(Value::String(text.clone())));
    }
    Err(SyncError {
        class: classify_status(status.as_u16()),
        message: crate::redact::redact(&format!(
            "{what}: {} {}",
            status_text(status),
            short(&text)
        )),
        retry_after,
        status: Some(status.as_u16()),
        ..SyncError::permanent("")
    })
}

/// The body of an answer to `what`, at most [`MAX_ANSWER`] bytes.
async fn read_answer(resp: reqwest::Response, what: &str) -> SyncResult<Vec<u8>> {
    read_capped(resp, MAX_ANSWER).await.map_err(|e| match e {
        Capped::TooLong => SyncError::permanent(format!(
            "{what}: the server's answer is over {} MB; not an answer this client expects",
            MAX_ANSWER / (1024 * 1024)
        )),
        Capped::Read(e) => {
            SyncError::transient(format!("{what}: reading response: {}", error_chain(&e)))
        }
    })
}

pub use crate::format::percent_encode;

fn status_text(s: StatusCode) -> String {
    format!("HTTP {}", s)
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s.to_string()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Adds a `Content-Type` header when there is one to send.
fn with_type(req: reqwest::RequestBuilder, ct: Option<&str>) -> reqwest::RequestBuilder {
    match ct {
        Some(ct) => req.header("Content-Type", ct),
        None => req,
    }
}

/// A media file's read failure as an upload error (permanent: the file is
/// damaged or gone, retrying sends nothing better), its code kept.
pub(crate) fn not_uploaded(e: crate::Error) -> SyncError {
    SyncError::local(&e)
}

/// The body of a media upload: the file's bytes, checked against the
/// recorded size and digest. Small files (generated images) are read and
/// checked before anything is sent; larger ones are streamed with the last
/// chunk held back until the whole file checked out, so a server never
/// receives a complete body of the wrong bytes.
async fn checked_file_body(path: &Path, digest: &str, len: u64) -> SyncResult<reqwest::Body> {
    if len <= SMALL_FILE {
        let bytes = read_checked(path, digest, len)
            .await
            .map_err(not_uploaded)?;
        return Ok(super::rate::paced(bytes));
    }
    let file = open_checked(path, len).await.map_err(not_uploaded)?;
    struct Streaming {
        file: tokio::fs::File,
        check: Checker,
        held: Option<Vec<u8>>,
        done: bool,
    }
    let first = Streaming {
        file,
        check: Checker::new(path, digest, len),
        held: None,
        done: false,
    };
    let path = path.to_path_buf();
    let stream = futures_util::stream::unfold(first, move |mut st| {
        let path = path.clone();
        async move {
            if st.done {
                return None;
            }
            let mut buf = vec![0u8; 256 * 1024];
            let n = match tokio::io::AsyncReadExt::read(&mut st.file, &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    st.done = true;
                    let e = std::io::Error::other(format!("{}: {e}", path.display()));
                    return Some((Err(e), st));
                }
            };
            if n == 0 {
                st.done = true;
                if let Err(e) = st.check.finish() {
                    return Some((Err(std::io::Error::other(e.to_string())), st));
                }
                return st.held.take().map(|b| (Ok(b), st));
            }
            buf.truncate(n);
            super::rate::take(n).await;
            st.check.update(&buf);
            // Hand over the chunk before this one: the last stays held
            // until the end of the file is reached and checked.
            let out = st.held.replace(buf).unwrap_or_default();
            Some((Ok(out), st))
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}
