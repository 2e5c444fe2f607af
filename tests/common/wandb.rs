//! A W&B protocol emulator on 127.0.0.1 for the sync tests.
//!
//! W&B's server cannot run here, so this speaks the part of its protocol a
//! run upload uses and checks what the real server checks, recording every
//! breach as a *violation* (tests assert there are none) besides answering
//! with the error the real server would give. Where each rule comes from:
//!
//! - Auth: every API request (`/graphql`, `file_stream`) carries HTTP Basic
//!   `api:<key>` — W&B's client (`wandb/sdk/internal/internal_api.py`) sends
//!   `auth=("api", api_key)`; a wrong or missing key gets 401.
//! - GraphQL: the operation's variable declarations must use the types the
//!   W&B schema gives the arguments they feed (as the mutation texts in W&B's
//!   client declare them: `UpsertBucket`'s `$tags: [String!]`,
//!   `$config: JSONString`; `CreateRunFiles`' `String!`/`[String!]!`), every
//!   `$variable` used must be declared, and each variable's JSON value must
//!   coerce to its declared type (GraphQL spec, "Coercing Variable Values":
//!   a non-null variable must be present, a `JSONString` must be a string).
//!   Run config values are `{"value": …}` objects (W&B's config format).
//! - Files: an upload URL is valid only if `CreateRunFiles` issued it, the
//!   `uploadHeaders` it returned must be sent with the `PUT` (signed storage
//!   URLs reject requests without them), no `Content-Type` may be sent that
//!   `uploadHeaders` did not list (on W&B's cloud the signature of a V2-style
//!   signed URL covers the content type; W&B's Go and Python clients send
//!   only the listed headers), and the API key must not go to storage (it is
//!   a different host in production).
//! - `file_stream` (W&B's `file_stream.py`): per file, content is appended
//!   at `offset`; for `wandb-history.jsonl` the offset must equal the lines
//!   the server holds — a duplicated or skipped line is a violation;
//!   `wandb-summary.json` is replaced; every path in `uploaded` must have
//!   been uploaded; `complete` is accepted once (again only after the run was
//!   reopened with `UpsertBucket(state: "running")`).
//! - Artifacts (W&B's `core/pkg/artifacts/saver.go`, the operations in
//!   `core/api/graphql/`): `CreateArtifact` takes a `CreateArtifactInput`
//!   whose fields are checked against the schema's, and finds an artifact of
//!   the same collection and digest again (digest deduplication) — answering
//!   `COMMITTED` when it was; files are uploaded to the URLs
//!   `CreateArtifactFiles` issued and the manifest to the one the second
//!   `CreateArtifactManifest` issued; `CommitArtifact` checks what the server
//!   checks before a version becomes visible: every manifest entry arrived
//!   with the size and base64 MD5 it declares, and the digest `CreateArtifact`
//!   gave is W&B's (MD5 over `wandb-artifact-manifest-v1\n` and the sorted
//!   `name:digest` lines).
//! - W&B's own client talks to it too (tests/sync_wandb_client.rs): anything
//!   it sends that the emulator refuses is the emulator's mistake.
#![allow(dead_code)]

use super::http::{read_request, Request};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The bin directory of W&B's own client, installed into `.venv-wandb` on
/// first use (`scripts/wandb-client`); fails the test when it cannot be.
pub fn client_bin() -> std::path::PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/wandb-client");
    let out = std::process::Command::new(script)
        .output()
        .expect("scripts/wandb-client runs");
    assert!(
        out.status.success(),
        "W&B's client could not be installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A run as the emulator stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WRun {
    pub id: String,
    pub name: String,
    pub display_name: Option<String>,
    pub tags: Vec<String>,
    pub config: Map<String, Value>,
    pub state: String,
    /// Stopped from W&B's UI (`Run.stopped`).
    pub stopped: bool,
    pub history: Vec<Value>,
    pub summary: Value,
    /// Files by run path, with their bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Paths the file stream listed as uploaded.
    pub uploaded: std::collections::BTreeSet<String>,
    pub completes: usize,
    pub exitcode: Option<i64>,
    /// File-stream requests that carried the summary.
    pub summaries: usize,
    /// File-stream requests that carried nothing (heartbeats).
    pub heartbeats: usize,
}

/// An artifact as the emulator stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WArtifact {
    pub id: String,
    pub project: String,
    pub collection: String,
    pub type_name: String,
    /// The manifest digest the client declared (checked at commit).
    pub digest: String,
    /// `PENDING` or `COMMITTED`.
    pub state: String,
    /// The run that logged it (`CreateArtifact`'s `runName`).
    pub run: String,
    pub client_id: String,
    pub aliases: Vec<String>,
    /// Files by their path in the artifact, with their bytes.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `wandb_manifest.json` as uploaded.
    pub manifest: Option<Value>,
    /// Runs that declared they use it (`UseArtifact`).
    pub used_by: Vec<String>,
    /// Times `CreateArtifact` was asked for this artifact's digest.
    pub creates: usize,
}

/// How long the emulator takes to store an artifact's file.
const ARTIFACT_FILE_DELAY: std::time::Duration = std::time::Duration::from_millis(25);

/// What an upload URL the emulator issued writes to.
#[derive(Debug, Clone)]
enum Slot {
    RunFile(String, String, String),
    ArtifactFile(String, String),
    Manifest(String),
    /// Part `n` (from 1) of the multipart upload with this id.
    Part(String, usize),
}

/// A multipart upload `CreateArtifactFiles` began (S3's protocol, as W&B's
/// storage runs it): parts PUT with their `Content-MD5`, each answered with
/// an ETag, joined by `CompleteMultipartUploadArtifact`.
#[derive(Debug, Clone, Default)]
struct Multipart {
    artifact: String,
    name: String,
    storage_path: String,
    /// The hex MD5 declared for each part, in order.
    declared: Vec<String>,
    /// The parts received: bytes and the ETag answered.
    received: BTreeMap<usize, (Vec<u8>, String)>,
}

/// A fault the emulator injects into the next matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Do the work, then close the connection without answering.
    LoseAnswer,
    /// Answer with this status (and `Retry-After` seconds) without doing it.
    Status(u16, Option<u32>),
    /// `CreateArtifactFiles` only: another uploader commits the artifact
    /// version first, so the server refuses files for it (a GraphQL error).
    CommitMeanwhile,
}

#[derive(Default)]
struct Server {
    key: String,
    entity: String,
    runs: BTreeMap<(String, String), WRun>,
    tokens: HashMap<String, Slot>,
    artifacts: Vec<WArtifact>,
    /// The header names of every storage PUT, by project.
    put_headers: Vec<(String, Vec<String>)>,
    /// The run files PUT, as (project, path), in order.
    put_files: Vec<(String, String)>,
    manifests: HashMap<String, String>,
    /// How long an artifact file takes to store (`None`: the default).
    store_delay: Option<std::time::Duration>,
    /// Multipart uploads by upload id.
    multipart: HashMap<String, Multipart>,
    /// Multipart uploads completed, as (file name, parts).
    pub_completed: Vec<(String, usize)>,
    /// Each completed upload's parts as listed and the answer given: a
    /// completion sent again (its answer lost, or slow to come) gets the
    /// same answer.
    completed_uploads: HashMap<String, (Value, Value)>,
    violations: Vec<String>,
    requests: Vec<String>,
    faults: VecDeque<(String, Fault)>,
    next_id: u64,
    /// Runs deleted by a user, (project, name): W&B refuses their names
    /// for good ("previously created and deleted").
    deleted: std::collections::BTreeSet<(String, String)>,
}

/// An artifact's collection, state, and its files' names and sizes.
pub type ArtifactFiles = (String, String, Vec<(String, usize)>);

/// A running emulator.
pub struct Emulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Mutex<Server>>,
}

impl Emulator {
    /// Starts an emulator that accepts `key` for `entity`.
    pub fn start(key: &str, entity: &str) -> Emulator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Server {
            key: key.into(),
            entity: entity.into(),
            ..Default::default()
        }));
        let s = Arc::clone(&inner);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Emulator { url, inner }
    }

    /// Every rule breach seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// The run `name` of `project`, if it exists.
    pub fn run(&self, project: &str, name: &str) -> Option<WRun> {
        let s = self.inner.lock().unwrap();
        s.runs
            .get(&(project.to_string(), name.to_string()))
            .cloned()
    }

    /// Every run of `project`.
    pub fn runs(&self, project: &str) -> Vec<WRun> {
        let s = self.inner.lock().unwrap();
        s.runs
            .iter()
            .filter(|((p, _), _)| p == project)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Every artifact of `project`, in creation order.
    pub fn artifacts(&self, project: &str) -> Vec<WArtifact> {
        let s = self.inner.lock().unwrap();
        s.artifacts
            .iter()
            .filter(|a| a.project == project)
            .cloned()
            .collect()
    }

    /// The (lower-case, sorted) header names each storage `PUT` for
    /// `project` carried.
    pub fn put_headers(&self, project: &str) -> Vec<Vec<String>> {
        let s = self.inner.lock().unwrap();
        s.put_headers
            .iter()
            .filter(|(p, _)| p == project)
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// The run files of `project` PUT so far, by path, in order.
    pub fn put_files(&self, project: &str) -> Vec<String> {
        let s = self.inner.lock().unwrap();
        s.put_files
            .iter()
            .filter(|(p, _)| p == project)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Deletes run `name` of `project`, as a user does in W&B's UI (or
    /// `wandb.Api().run(path).delete()`): it is gone, and its name can no
    /// longer be used.
    pub fn delete_run(&self, project: &str, name: &str) {
        let mut s = self.inner.lock().unwrap();
        let key = (project.to_string(), name.to_string());
        s.runs.remove(&key);
        s.deleted.insert(key);
    }

    /// Renames run `name` of `project` and sets its tags, as a user does in
    /// W&B's UI.
    pub fn edit_run(&self, project: &str, name: &str, display_name: &str, tags: &[&str]) {
        let mut s = self.inner.lock().unwrap();
        let run = s
            .runs
            .get_mut(&(project.to_string(), name.to_string()))
            .unwrap();
        run.display_name = Some(display_name.to_string());
        run.tags = tags.iter().map(|t| t.to_string()).collect();
    }

    /// Changes run `name` of `project` on the server, as a user or another
    /// client could (a file removed or replaced, history lost, config
    /// edited).
    pub fn change_run(&self, project: &str, name: &str, change: impl FnOnce(&mut WRun)) {
        let mut s = self.inner.lock().unwrap();
        change(
            s.runs
                .get_mut(&(project.to_string(), name.to_string()))
                .unwrap(),
        );
    }

    /// Changes the artifacts of `project` on the server.
    pub fn change_artifacts(&self, project: &str, change: impl FnOnce(Vec<&mut WArtifact>)) {
        let mut s = self.inner.lock().unwrap();
        change(
            s.artifacts
                .iter_mut()
                .filter(|a| a.project == project)
                .collect(),
        );
    }

    /// Requests seen, as `"<route> <operation>"` strings.
    /// Stores artifact files after `delay` instead of the default (zero
    /// for benchmarks, where the delay would only slow the upload side).
    pub fn set_store_delay(&self, delay: std::time::Duration) {
        self.inner.lock().unwrap().store_delay = Some(delay);
    }

    /// Each artifact of `project` as (collection, state, [(file, bytes)]):
    /// what `artifacts` tells, without copying the files.
    pub fn artifact_files(&self, project: &str) -> Vec<ArtifactFiles> {
        let s = self.inner.lock().unwrap();
        s.artifacts
            .iter()
            .filter(|a| a.project == project)
            .map(|a| {
                let files = a.files.iter().map(|(n, b)| (n.clone(), b.len())).collect();
                (a.collection.clone(), a.state.clone(), files)
            })
            .collect()
    }

    /// The multipart uploads completed, as (file name, parts).
    pub fn multipart_completed(&self) -> Vec<(String, usize)> {
        self.inner.lock().unwrap().pub_completed.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Injects `fault` into the next request to `route` (`UpsertBucket`,
    /// `CreateRunFiles`, `RunHistoryLineCount`, `file_stream`, `PUT`).
    pub fn inject(&self, route: &str, fault: Fault) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .push_back((route.into(), fault));
    }
}

struct Response {
    status: u16,
    body: Value,
    retry_after: Option<u32>,
    /// An `ETag` header (a storage part's answer).
    etag: Option<String>,
    /// Bytes sent instead of `body` (a downloaded file).
    raw: Option<Vec<u8>>,
}

fn resp(status: u16, body: Value) -> Response {
    Response {
        status,
        body,
        retry_after: None,
        etag: None,
        raw: None,
    }
}

fn serve(stream: TcpStream, server: &Mutex<Server>) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (route, lose) = {
            let mut s = server.lock().unwrap();
            let route = route_of(&req);
            if std::env::var_os("DIFFLOG_EMU_TRACE").is_some() {
                eprintln!(
                    "EMU {} {} {:?}\n  {}",
                    req.method,
                    req.path,
                    req.headers,
                    String::from_utf8_lossy(&req.body[..req.body.len().min(1500)])
                );
            }
            s.requests.push(format!("{} {}", req.method, route));
            let fault = s
                .faults
                .iter()
                .position(|(r, _)| *r == route)
                .and_then(|i| s.faults.remove(i))
                .map(|(_, f)| f);
            match fault {
                Some(Fault::Status(code, ra)) => {
                    drop(s);
                    let mut out = resp(code, json!({"error": "injected fault"}));
                    out.retry_after = ra;
                    if write_response(&mut w, &out).is_err() || close {
                        return;
                    }
                    continue;
                }
                Some(Fault::CommitMeanwhile) => {
                    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    let ids: Vec<String> = body["variables"]["input"]["artifactFiles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["artifactID"].as_str().map(str::to_string))
                        .collect();
                    for a in s.artifacts.iter_mut().filter(|a| ids.contains(&a.id)) {
                        a.state = "COMMITTED".into();
                    }
                    drop(s);
                    let out = resp(
                        200,
                        json!({"errors": [{"message": "artifact is not in a PENDING state",
                            "path": ["createArtifactFiles"]}], "data": null}),
                    );
                    if write_response(&mut w, &out).is_err() || close {
                        return;
                    }
                    continue;
                }
                Some(Fault::LoseAnswer) => (route, true),
                None => (route, false),
            }
        };
        // An artifact's file is stored only after a fixed delay (without
        // holding the server): a client that commits the artifact before
        // its uploads have finished has its commit arrive first, which the
        // commit's check counts as a violation — every time, not by chance.
        if route == "PUT" {
            let token = req.path.trim_start_matches("/storage/").to_string();
            let artifact = matches!(
                server.lock().unwrap().tokens.get(&token),
                Some(Slot::ArtifactFile(..))
            );
            let delay = server.lock().unwrap().store_delay;
            if artifact {
                std::thread::sleep(delay.unwrap_or(ARTIFACT_FILE_DELAY));
            }
        }
        let out = {
            let mut s = server.lock().unwrap();
            handle(&mut s, &req, &route)
        };
        if lose {
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
        if write_response(&mut w, &out).is_err() || close {
            return;
        }
    }
}

fn write_response(w: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let (body, ct) = match &r.raw {
        Some(b) => (b.clone(), "application/octet-stream"),
        None => (r.body.to_string().into_bytes(), "application/json"),
    };
    let mut ra = r
        .retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    if let Some(e) = &r.etag {
        ra.push_str(&format!("ETag: {e}\r\n"));
    }
    // One write: pieces written one by one would each wait for the
    // client's delayed ACK (Nagle), ~40 ms per answer.
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{ra}\r\n",
        r.status,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    w.write_all(&out)
}

/// The route a request belongs to, for faults and the request log.
fn route_of(req: &Request) -> String {
    if req.path == "/graphql" {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let q = v["query"].as_str().unwrap_or("");
        return operation_name(q).unwrap_or_else(|| "graphql?".into());
    }
    if req.path.ends_with("/file_stream") {
        return "file_stream".into();
    }
    if req.path.starts_with("/storage/") {
        return "PUT".into();
    }
    req.path.clone()
}

fn operation_name(q: &str) -> Option<String> {
    // Comment lines (`#graphql`, which W&B's public API starts with) first.
    let mut q = q.trim_start();
    while q.starts_with('#') {
        q = q.split_once('\n').map_or("", |(_, rest)| rest).trim_start();
    }
    let rest = q
        .strip_prefix("mutation")
        .or_else(|| q.strip_prefix("query"))?;
    let name: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn handle(s: &mut Server, req: &Request, route: &str) -> Response {
    if req.method == "PUT" && req.path.starts_with("/storage/") {
        return put_file(s, req);
    }
    // A manifest's and an artifact file's `directUrl` are storage's
    // (signed, no API key).
    if req.method == "GET" && req.path.starts_with("/artifact-files/") {
        let rest = req.path.trim_start_matches("/artifact-files/");
        let (id, name) = rest.split_once('/').unwrap_or((rest, ""));
        return match s
            .artifacts
            .iter()
            .find(|a| a.id == id)
            .and_then(|a| a.files.get(name))
        {
            Some(b) => Response {
                raw: Some(b.clone()),
                ..resp(200, Value::Null)
            },
            None => resp(404, json!({"error": "not found"})),
        };
    }
    if req.method == "GET" && req.path.starts_with("/artifact-manifests/") {
        let id = req.path.trim_start_matches("/artifact-manifests/");
        return match s
            .artifacts
            .iter()
            .find(|a| a.id == id)
            .and_then(|a| a.manifest.clone())
        {
            Some(m) => resp(200, m),
            None => resp(404, json!({"error": "not found"})),
        };
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("api:{}", s.key))
    );
    if req.header("authorization") != Some(want.as_str()) {
        return resp(
            401,
            json!({"errors": [{"message": "user is not logged in"}]}),
        );
    }
    if req.method == "POST" && req.path == "/graphql" {
        return graphql(s, req, route);
    }
    if req.method == "POST" && req.path.ends_with("/file_stream") {
        return file_stream(s, req);
    }
    if req.method == "GET" && req.path.starts_with("/files/") {
        return get_file(s, req);
    }

    // wandb-core exports its own metrics (OpenTelemetry over HTTP) to the
    // server; the real server takes them, and they are not the run's data.
    if req.method == "POST" && req.path.starts_with("/sdk/otel/v1/") {
        return resp(200, json!({}));
    }
    s.violations.push(format!(
        "request to an unknown route: {} {}",
        req.method, req.path
    ));
    resp(404, json!({"error": "not found"}))
}

fn violation(s: &mut Server, status: u16, msg: String) -> Response {
    s.violations.push(msg.clone());
    resp(status, json!({"errors": [{"message": msg}]}))
}

/// The argument types of the fields an upload uses, as W&B's schema has them.
fn arg_type(field: &str, arg: &str) -> Option<&'static str> {
    Some(match (field, arg) {
        ("upsertBucket", "id" | "name" | "modelName" | "entityName" | "displayName") => "String",
        ("upsertBucket", "notes" | "state" | "description" | "groupName" | "jobType") => "String",
        ("upsertBucket", "commit" | "host" | "program" | "repo" | "sweep") => "String",
        ("upsertBucket", "jobProgram" | "jobRepo") => "String",
        ("upsertBucket", "config" | "summaryMetrics") => "JSONString",
        ("upsertBucket", "tags") => "[String!]",
        ("upsertBucket", "debug") => "Boolean",
        ("createRunFiles", "entityName" | "projectName" | "runName") => "String!",
        ("createRunFiles", "files") => "[String!]!",
        ("model", "name" | "entityName") => "String",
        ("bucket", "name") => "String!",
        ("bucket", "missingOk") => "Boolean",
        ("createArtifact", "input") => "CreateArtifactInput!",
        ("useArtifact", "input") => "UseArtifactInput!",
        ("createArtifactManifest", "artifactID") => "ID!",
        ("createArtifactManifest" | "updateArtifactManifest", "baseArtifactID") => "ID",
        ("createArtifactManifest", "name" | "digest" | "entityName") => "String!",
        ("createArtifactManifest", "projectName" | "runName") => "String!",
        ("createArtifactManifest", "type") => "ArtifactManifestType!",
        ("updateArtifactManifest", "artifactManifestID") => "ID!",
        ("updateArtifactManifest", "digest") => "String",
        ("createArtifactFiles", "input") => "CreateArtifactFilesInput!",
        ("commitArtifact", "artifactID") => "ID!",
        ("completeMultipartUploadArtifact", "completeMultipartAction") => {
            "CompleteMultipartAction!"
        }
        ("completeMultipartUploadArtifact", "completedParts") => "[UploadPartsInput!]!",
        ("completeMultipartUploadArtifact", "artifactID") => "ID!",
        ("completeMultipartUploadArtifact", "storagePath" | "uploadID") => "String!",
        ("clientIDMapping", "clientID") => "ID!",
        // What reading a run back uses (W&B's public API).
        ("project", "name" | "entityName") => "String",
        ("run", "name") => "String!",
        ("history", "minStep" | "maxStep") => "Int64",
        ("history", "samples") => "Int",
        ("files", "names") => "[String]",
        ("files", "after" | "pattern") => "String",
        ("files", "first") => "Int",
        ("url", "upload") => "Boolean",
        ("outputArtifacts", "after") => "String",
        ("outputArtifacts", "first") => "Int",
        ("parquetHistory", "liveKeys") => "[String!]!",
        _ => return None,
    })
}

/// Whether a variable of type `var` may feed an argument of type `arg`.
fn compatible(var: &str, arg: &str) -> bool {
    var == arg || var.strip_suffix('!') == Some(arg)
}

/// Whether `v` coerces to GraphQL type `ty`.
fn coerces(v: Option<&Value>, ty: &str) -> bool {
    if let Some(inner) = ty.strip_suffix('!') {
        return matches!(v, Some(x) if !x.is_null()) && coerces(v, inner);
    }
    let Some(v) = v.filter(|x| !x.is_null()) else {
        return true;
    };
    if let Some(elem) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| coerces(Some(x), elem)));
    }
    match ty {
        "String" => v.is_string(),
        "JSONString" => v
            .as_str()
            .is_some_and(|t| serde_json::from_str::<Value>(t).is_ok()),
        "Boolean" => v.is_boolean(),
        "Int" => v.is_i64(),
        "Int64" => v.is_i64() || v.as_str().is_some_and(|t| t.parse::<i64>().is_ok()),
        "ID" => v.is_string(),
        "ArtifactManifestType" => matches!(v.as_str(), Some("FULL" | "INCREMENTAL" | "PATCH")),
        "ArtifactStorageLayout" => matches!(v.as_str(), Some("V1" | "V2")),
        "ArtifactDigestAlgorithm" => matches!(v.as_str(), Some("MANIFEST_MD5")),
        "CompleteMultipartAction" => matches!(v.as_str(), Some("Complete")),
        object => {
            let Some(fields) = input_fields(object) else {
                return false;
            };
            let Some(o) = v.as_object() else {
                return false;
            };
            o.keys().all(|k| fields.iter().any(|(f, _)| f == k))
                && fields.iter().all(|(f, t)| coerces(o.get(*f), t))
        }
    }
}

/// The fields of the input-object types an upload uses, as W&B's schema
/// (`core/api/graphql/schemas/schema-latest.graphql`) declares them; a field
/// not listed is an error, as in GraphQL.
fn input_fields(ty: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match ty {
        "CreateArtifactInput" => &[
            ("artifactTypeName", "String!"),
            ("artifactCollectionName", "String"),
            ("artifactCollectionNames", "[String!]"),
            ("entityName", "String!"),
            ("projectName", "String!"),
            ("runName", "String"),
            ("digest", "String!"),
            ("digestAlgorithm", "ArtifactDigestAlgorithm"),
            ("description", "String"),
            ("labels", "JSONString"),
            ("aliases", "[ArtifactAliasInput!]"),
            ("tags", "[TagInput!]"),
            ("metadata", "JSONString"),
            ("ttlDurationSeconds", "Int"),
            ("historyStep", "Int"),
            ("enableDigestDeduplication", "Boolean"),
            ("distributedID", "String"),
            ("clientID", "ID"),
            ("sequenceClientID", "ID"),
            ("storageRegion", "String"),
            ("clientMutationId", "String"),
        ],
        "ArtifactAliasInput" => &[("artifactCollectionName", "String!"), ("alias", "String!")],
        "TagInput" => &[("tagName", "String!")],
        "CreateArtifactFilesInput" => &[
            ("artifactFiles", "[CreateArtifactFileSpecInput!]!"),
            ("storageLayout", "ArtifactStorageLayout!"),
            ("clientMutationId", "String"),
            ("cloudRegionID", "ID"),
        ],
        "CreateArtifactFileSpecInput" => &[
            ("artifactID", "ID!"),
            ("name", "String!"),
            ("md5", "String!"),
            ("mimetype", "String"),
            ("artifactManifestID", "ID"),
            ("uploadPartsInput", "[UploadPartsInput!]"),
        ],
        "UploadPartsInput" => &[("partNumber", "Int!"), ("hexMD5", "String!")],
        "UseArtifactInput" => &[
            ("artifactID", "ID!"),
            ("entityName", "String!"),
            ("projectName", "String!"),
            ("runName", "String!"),
            ("usedAs", "String"),
            ("artifactEntityName", "String"),
            ("artifactProjectName", "String"),
            ("clientMutationId", "String"),
        ],
        _ => return None,
    })
}

/// Validates the operation and returns the value each argument of `field`
/// receives (resolved from the variables).
fn arguments(
    query: &str,
    vars: &Map<String, Value>,
    field: &str,
) -> Result<Map<String, Value>, String> {
    let open = query.find('(').ok_or("no variable declarations")?;
    let close = open + query[open..].find(')').ok_or("unclosed declarations")?;
    let mut declared: HashMap<String, String> = HashMap::new();
    for def in query[open + 1..close].split(',') {
        let def = def.trim();
        if def.is_empty() {
            continue;
        }
        let (name, ty) = def
            .split_once(':')
            .ok_or(format!("bad declaration {def:?}"))?;
        let name = name
            .trim()
            .strip_prefix('$')
            .ok_or(format!("bad variable {name:?}"))?;
        // `$x: Int = 50`: the type, then a default.
        let ty = ty.split('=').next().unwrap_or(ty);
        declared.insert(name.to_string(), ty.trim().replace(' ', ""));
    }
    for (name, ty) in &declared {
        if !coerces(vars.get(name), ty) {
            return Err(format!(
                "Variable \"${name}\" got invalid value {}; expected type {ty}",
                vars.get(name).cloned().unwrap_or(Value::Null)
            ));
        }
    }
    let body = &query[close..];
    let start = body
        .find(&format!("{field}("))
        .ok_or(format!("the operation does not call {field}"))?;
    let after = &body[start + field.len() + 1..];
    let args_text = after[..after.find(')').unwrap_or(after.len())].trim();
    // `field(input: {a: $a, …})` lists the input object's fields;
    // `field(input: $input)` passes one variable as the argument `input`.
    let args_text = match args_text
        .strip_prefix("input:")
        .map(str::trim)
        .filter(|r| r.starts_with('{'))
    {
        Some(inner) => inner.trim_start_matches('{').trim_end_matches('}'),
        None => args_text,
    };
    let mut out = Map::new();
    for pair in args_text.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (arg, val) = pair
            .split_once(':')
            .ok_or(format!("bad argument {pair:?}"))?;
        let (arg, val) = (arg.trim(), val.trim());
        let want = arg_type(field, arg)
            .ok_or(format!("Unknown argument \"{arg}\" on field \"{field}\""))?;
        let Some(var) = val.strip_prefix('$') else {
            // A literal.
            let lit: Value = serde_json::from_str(val).map_err(|_| format!("bad literal {val}"))?;
            if !coerces(Some(&lit), want) {
                return Err(format!("literal {val} is not a {want}"));
            }
            out.insert(arg.to_string(), lit);
            continue;
        };
        let ty = declared
            .get(var)
            .ok_or(format!("Variable \"${var}\" is not defined"))?;
        if !compatible(ty, want) {
            return Err(format!(
                "Variable \"${var}\" of type \"{ty}\" used in position expecting type \"{want}\""
            ));
        }
        out.insert(
            arg.to_string(),
            vars.get(var).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(out)
}

fn str_arg(a: &Map<String, Value>, k: &str) -> Option<String> {
    a.get(k).and_then(Value::as_str).map(str::to_string)
}

fn graphql(s: &mut Server, req: &Request, route: &str) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
        return violation(s, 400, "GraphQL body is not JSON".into());
    };
    let query = v["query"].as_str().unwrap_or("").to_string();
    let vars = v["variables"].as_object().cloned().unwrap_or_default();
    let gql_err = |s: &mut Server, m: String| violation(s, 400, format!("{route}: {m}"));
    match route {
        "UpsertBucket" => {
            let a = match arguments(&query, &vars, "upsertBucket") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let entity = str_arg(&a, "entityName").unwrap_or_else(|| s.entity.clone());
            if entity != s.entity {
                return resp(
                    200,
                    json!({"errors": [{"message": format!("permission denied for entity {entity}")}], "data": null}),
                );
            }
            let Some(project) = str_arg(&a, "modelName") else {
                return gql_err(s, "no project (modelName)".into());
            };
            let Some(name) = str_arg(&a, "name") else {
                return gql_err(s, "no run name".into());
            };
            if s.deleted.contains(&(project.clone(), name.clone())) {
                // What W&B answers for the id of a deleted run (409, as
                // W&B's client reports it: "… (<Response [409]>)").
                return resp(
                    409,
                    json!({"errors": [{"message": format!(
                        "run {entity}/{project}/{name} was previously created and deleted; try a new run name"
                    ), "path": ["upsertBucket"]}], "data": {"upsertBucket": null}}),
                );
            }
            let mut config = None;
            if let Some(c) = str_arg(&a, "config") {
                let parsed: Map<String, Value> = match serde_json::from_str(&c) {
                    Ok(m) => m,
                    Err(_) => return gql_err(s, "config is not a JSON object".into()),
                };
                for (k, v) in &parsed {
                    if v.get("value").is_none() {
                        return gql_err(
                            s,
                            format!("config key {k} is not a {{\"value\": …}} object"),
                        );
                    }
                }
                config = Some(parsed);
            }
            s.next_id += 1;
            let id = format!("UnVuOnYx{}", s.next_id);
            let key = (project.clone(), name.clone());
            let inserted = !s.runs.contains_key(&key);
            let run = s.runs.entry(key).or_insert_with(|| WRun {
                id,
                name: name.clone(),
                state: "running".into(),
                summary: json!({}),
                ..Default::default()
            });
            if let Some(d) = str_arg(&a, "displayName") {
                run.display_name = Some(d);
            }
            if let Some(t) = a.get("tags").and_then(Value::as_array) {
                run.tags = t
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
            }
            if let Some(c) = config {
                run.config = c;
            }
            if str_arg(&a, "state").as_deref() == Some("running") {
                run.state = "running".into();
            }
            resp(
                200,
                json!({"data": {"upsertBucket": {"inserted": inserted, "bucket": {
                    "id": run.id, "name": run.name, "displayName": run.display_name,
                    "state": run.state, "stopped": run.stopped,
                    "historyLineCount": run.history.len(),
                    "project": {"name": project, "entity": {"name": entity}},
                }}}}),
            )
        }
        "CreateRunFiles" => {
            let a = match arguments(&query, &vars, "createRunFiles") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let (e, p, r) = (
                str_arg(&a, "entityName").unwrap_or_default(),
                str_arg(&a, "projectName").unwrap_or_default(),
                str_arg(&a, "runName").unwrap_or_default(),
            );
            if e != s.entity {
                return resp(
                    200,
                    json!({"errors": [{"message": format!("permission denied for entity {e}")}], "data": null}),
                );
            }
            let Some(run_id) = s.runs.get(&(p.clone(), r.clone())).map(|x| x.id.clone()) else {
                return gql_err(s, format!("run {e}/{p}/{r} does not exist"));
            };
            let host = req.header("host").unwrap_or("127.0.0.1").to_string();
            let mut files = Vec::new();
            for f in a
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = f.as_str().unwrap_or("").to_string();
                s.next_id += 1;
                let token = format!("t{}x{}", s.next_id, rand_u32());
                s.tokens.insert(
                    token.clone(),
                    Slot::RunFile(p.clone(), r.clone(), name.clone()),
                );
                files.push(
                    json!({"name": name, "uploadUrl": format!("http://{host}/storage/{token}")}),
                );
            }
            // One token per request is enough to check the headers are sent.
            let check = files
                .first()
                .and_then(|f| f["uploadUrl"].as_str())
                .and_then(|u| u.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            resp(
                200,
                json!({"data": {"createRunFiles": {"runID": run_id, "uploadHeaders": [format!("X-Upload-Check:{check}")], "files": files}}}),
            )
        }
        "RunHistoryLineCount" => {
            if let Err(e) = arguments(&query, &vars, "model") {
                return gql_err(s, e);
            }
            let a = match arguments(&query, &vars, "bucket") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let p = vars.get("project").and_then(Value::as_str).unwrap_or("");
            let name = str_arg(&a, "name").unwrap_or_default();
            let bucket = s
                .runs
                .get(&(p.to_string(), name))
                .map(|r| json!({"historyLineCount": r.history.len(), "state": r.state}));
            resp(200, json!({"data": {"model": {"bucket": bucket}}}))
        }
        // wandb-core asks which features the server has; an empty list
        // makes it use the oldest (most widely served) forms.
        "ServerFeaturesQuery" => resp(200, json!({"data": {"serverInfo": {"features": []}}})),
        "CreateArtifact" => create_artifact(s, &query, &vars, route),
        "CreateArtifactManifest" | "UpdateArtifactManifest" => {
            artifact_manifest(s, req, &query, &vars, route)
        }
        "CreateArtifactFiles" => create_artifact_files(s, req, &query, &vars, route),
        "CommitArtifact" => commit_artifact(s, &query, &vars, route),
        "CompleteMultipartUploadArtifact" => complete_multipart(s, &query, &vars, route),
        "UseArtifact" => {
            let a = match arguments(&query, &vars, "useArtifact") {
                Ok(a) => a,
                Err(e) => return gql_err(s, e),
            };
            let input = &a["input"];
            let id = input["artifactID"].as_str().unwrap_or("").to_string();
            let run = input["runName"].as_str().unwrap_or("").to_string();
            match s.artifacts.iter_mut().find(|x| x.id == id) {
                Some(art) => {
                    art.used_by.push(run);
                    resp(
                        200,
                        json!({"data": {"useArtifact": {"artifact": {"id": id}}}}),
                    )
                }
                None => gql_err(s, format!("UseArtifact of unknown artifact {id}")),
            }
        }
        // Who the key belongs to: W&B's public API checks the key with it.
        "Viewer" | "GetDefaultEntity" => resp(
            200,
            json!({"data": {"viewer": {"id": "VXNlcjox", "entity": s.entity, "username": "test",
                "email": null, "flags": "{}", "teams": {"edges": [{"node": {"name": s.entity}}]}}}}),
        ),
        // An artifact's manifest: where it is served from.
        "FetchArtifactManifest" => {
            let id = vars.get("id").and_then(Value::as_str).unwrap_or("");
            let host = req.header("host").unwrap_or("127.0.0.1");
            let found = s
                .artifacts
                .iter()
                .any(|a| a.id == id && a.manifest.is_some());
            let artifact = found.then(|| {
                json!({"currentManifest": {"file": {
                    "directUrl": format!("http://{host}/artifact-manifests/{id}")}}})
            });
            resp(200, json!({"data": {"artifact": artifact}}))
        }
        // An artifact version's files (by collection and `vN` or
        // `latest`), each with the URL it downloads from.
        "GetArtifactMembershipFileUrls" => {
            let var = |k: &str| {
                vars.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let (collection, alias) = (var("collection"), var("alias"));
            let host = req.header("host").unwrap_or("127.0.0.1");
            let versions: Vec<&WArtifact> = s
                .artifacts
                .iter()
                .filter(|a| a.collection == collection && a.state == "COMMITTED")
                .collect();
            let version = match alias
                .strip_prefix('v')
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n) => versions.get(n).copied(),
                None if alias == "latest" => versions.last().copied(),
                None => None,
            };
            let membership = version.map(|a| {
                let edges: Vec<Value> = a
                    .files
                    .keys()
                    .map(|name| {
                        json!({"node": {"__typename": "File", "name": name,
                        "directUrl": format!("http://{host}/artifact-files/{}/{name}", a.id)}})
                    })
                    .collect();
                json!({"files": {"pageInfo": {"__typename": "PageInfo", "endCursor": null,
                    "hasNextPage": false}, "edges": edges}})
            });
            resp(
                200,
                json!({"data": {"project": {"artifactCollection": {
                    "__typename": "ArtifactSequence", "artifactMembership": membership}}}}),
            )
        }
        "Run" | "RunHistoryKeys" | "HistoryPage" | "RunParquetHistory" | "RunFiles"
        | "RunOutputArtifacts" => read_query(s, req, &query, &vars, route),
        other => gql_err(s, format!("unknown operation {other}")),
    }
}

/// The queries W&B's public API (`wandb.Api()`) and `difflog-sync verify`
/// read a run back with: `Run`, `HistoryPage`, `RunFiles` and
/// `RunOutputArtifacts`. Each answers with the fields either asks for (a
/// GraphQL server answers only those asked; extra ones are harmless to
/// both clients).
fn read_query(
    s: &mut Server,
    req: &Request,
    query: &str,
    vars: &Map<String, Value>,
    route: &str,
) -> Response {
    let project_args = match arguments(query, vars, "project") {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let run_args = match arguments(query, vars, "run") {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let entity = str_arg(&project_args, "entityName").unwrap_or_else(|| s.entity.clone());
    if entity != s.entity {
        return resp(
            200,
            json!({"errors": [{"message": format!("permission denied for entity {entity}")}], "data": null}),
        );
    }
    let project = str_arg(&project_args, "name").unwrap_or_default();
    let name = str_arg(&run_args, "name").unwrap_or_default();
    let project_of = |run: Value| json!({"data": {"project": {"id": "UHJvamVjdDox", "internalId": "1", "name": project, "run": run}}});
    let Some(run) = s.runs.get(&(project.clone(), name.clone())).cloned() else {
        return resp(200, project_of(Value::Null));
    };
    let host = req.header("host").unwrap_or("127.0.0.1").to_string();
    let page = |args: &Map<String, Value>, cursor: &str, first: &str, default: usize| {
        let start = args
            .get(cursor)
            .and_then(Value::as_str)
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0);
        let n = args
            .get(first)
            .and_then(Value::as_u64)
            .map_or(default, |n| n as usize);
        (start, n)
    };
    // W&B's summary of the history: the last step and each key's types.
    let mut keys = Map::new();
    for line in &run.history {
        for (k, v) in line.as_object().into_iter().flatten() {
            let ty = match v {
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Object(o) => o.get("_type").and_then(Value::as_str).unwrap_or("object"),
                _ => "other",
            };
            let counts = keys
                .entry(k.clone())
                .or_insert_with(|| json!({"typeCounts": []}));
            let list = counts["typeCounts"].as_array_mut().unwrap();
            match list.iter_mut().find(|c| c["type"] == ty) {
                Some(c) => c["count"] = json!(c["count"].as_u64().unwrap_or(0) + 1),
                None => list.push(json!({"type": ty, "count": 1})),
            }
        }
    }
    let history_keys = json!({"lastStep": run.history.len() as i64 - 1, "keys": keys});
    match route {
        "RunHistoryKeys" => resp(200, project_of(json!({"historyKeys": history_keys}))),
        // wandb-core's history scan: exported parquet files, then the rows
        // not exported yet ("live"); here nothing is exported.
        "RunParquetHistory" => {
            if let Err(e) = arguments(query, vars, "parquetHistory") {
                return gql_fail(s, route, e);
            }
            resp(
                200,
                project_of(json!({"parquetHistory": {"parquetUrls": [], "liveData": run.history}})),
            )
        }
        "Run" => {
            let last_step = run.history.len() as i64 - 1;
            let summary = run.summary.to_string();
            resp(
                200,
                project_of(json!({
                    "id": run.id, "name": run.name, "displayName": run.display_name,
                    "state": run.state, "tags": run.tags, "projectId": "1",
                    "config": Value::Object(run.config.clone()).to_string(),
                    "summaryMetrics": summary, "systemMetrics": "{}",
                    "historyLineCount": run.history.len(), "historyKeys": history_keys,
                    "lastHistoryStep": last_step, "description": null, "notes": null,
                    "group": null, "jobType": null, "sweepName": null, "commit": null,
                    "readOnly": false, "createdAt": "2026-01-01T00:00:00",
                    "heartbeatAt": "2026-01-01T00:00:00", "host": null,
                    "user": {"name": "test", "username": "test"},
                })),
            )
        }
        "HistoryPage" => {
            let a = match arguments(query, vars, "history") {
                Ok(a) => a,
                Err(e) => return gql_fail(s, route, e),
            };
            let step = |k: &str| {
                a.get(k).and_then(|v| {
                    v.as_i64()
                        .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
                })
            };
            let (lo, hi) = (
                step("minStep").unwrap_or(0),
                step("maxStep").unwrap_or(i64::MAX),
            );
            let n = a.get("samples").and_then(Value::as_u64).unwrap_or(500) as usize;
            let rows: Vec<String> = run
                .history
                .iter()
                .filter(|h| h["_step"].as_i64().is_some_and(|st| st >= lo && st < hi))
                .take(n)
                .map(Value::to_string)
                .collect();
            resp(200, project_of(json!({"history": rows})))
        }
        "RunFiles" => {
            let a = match arguments(query, vars, "files") {
                Ok(a) => a,
                Err(e) => return gql_fail(s, route, e),
            };
            if let Err(e) = arguments(query, vars, "url") {
                return gql_fail(s, route, e);
            }
            let (start, n) = page(&a, "after", "first", 50);
            let only: Vec<&str> = a
                .get("names")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let files: Vec<(&String, &Vec<u8>)> = run
                .files
                .iter()
                .filter(|(k, _)| only.is_empty() || only.contains(&k.as_str()))
                .collect();
            let edges: Vec<Value> = files
                .iter()
                .enumerate()
                .skip(start)
                .take(n)
                .map(|(i, (name, bytes))| {
                    let url = format!("http://{host}/files/{entity}/{project}/{}/{name}", run.name);
                    json!({"cursor": (i + 1).to_string(), "node": {
                        "id": format!("RmlsZTp{i}"), "name": name, "url": url, "directUrl": url,
                        "sizeBytes": bytes.len(), "mimetype": "application/octet-stream",
                        "updatedAt": "2026-01-01T00:00:00", "md5": b64_md5(bytes),
                    }})
                })
                .collect();
            let end = (start + n).min(files.len());
            resp(
                200,
                project_of(json!({"fileCount": files.len(), "files": {
                    "edges": edges,
                    "pageInfo": {"endCursor": end.to_string(), "hasNextPage": end < files.len()},
                }})),
            )
        }
        _ => {
            let a = match arguments(query, vars, "outputArtifacts") {
                Ok(a) => a,
                Err(e) => return gql_fail(s, route, e),
            };
            let (start, n) = page(&a, "after", "first", 50);
            let arts: Vec<&WArtifact> = s
                .artifacts
                .iter()
                .filter(|x| x.project == project && x.run == run.name)
                .collect();
            let edges: Vec<Value> = arts
                .iter()
                .enumerate()
                .skip(start)
                .take(n)
                .map(|(i, x)| {
                    let index = s
                        .artifacts
                        .iter()
                        .filter(|y| y.collection == x.collection)
                        .position(|y| y.id == x.id)
                        .unwrap_or(0);
                    json!({"cursor": (i + 1).to_string(), "node": {
                        "__typename": "Artifact", "id": x.id, "versionIndex": index,
                        "artifactSequence": {"__typename": "ArtifactSequence", "name": x.collection,
                            "project": {"id": "UHJvamVjdDox", "internalId": "1", "name": project,
                                        "entity": {"name": entity}}},
                        "artifactType": {"name": x.type_name}, "description": null,
                        "metadata": "{}", "ttlDurationSeconds": -1, "ttlIsInherited": true,
                        "tags": [], "historyStep": null, "state": x.state, "size": 0,
                        "digest": x.digest, "digestAlgorithm": "MANIFEST_MD5",
                        "commitHash": null, "fileCount": x.files.len(),
                        "createdAt": "2026-01-01T00:00:00", "updatedAt": null, "aliases": [],
                    }})
                })
                .collect();
            let end = (start + n).min(arts.len());
            resp(
                200,
                project_of(json!({"artifacts": {
                    "totalCount": arts.len(), "edges": edges,
                    "pageInfo": {"__typename": "PageInfo", "endCursor": end.to_string(),
                                 "hasNextPage": end < arts.len()},
                }})),
            )
        }
    }
}

/// `GET /files/ENTITY/PROJECT/RUN/PATH`: a run file's bytes, as the URL
/// `RunFiles` lists serves them (with the API key).
fn get_file(s: &mut Server, req: &Request) -> Response {
    let path = req.path.split('?').next().unwrap_or("");
    let mut parts = path.trim_start_matches("/files/").splitn(4, '/');
    let (Some(e), Some(p), Some(r), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return violation(s, 404, format!("bad file path {}", req.path));
    };
    if e != s.entity {
        return resp(403, json!({"error": "permission denied"}));
    }
    match s
        .runs
        .get(&(p.to_string(), r.to_string()))
        .and_then(|run| run.files.get(name))
    {
        Some(bytes) => Response {
            raw: Some(bytes.clone()),
            ..resp(200, Value::Null)
        },
        None => resp(404, json!({"error": "not found"})),
    }
}

fn gql_fail(s: &mut Server, route: &str, m: String) -> Response {
    violation(s, 400, format!("{route}: {m}"))
}

fn create_artifact(
    s: &mut Server,
    query: &str,
    vars: &Map<String, Value>,
    route: &str,
) -> Response {
    let a = match arguments(query, vars, "createArtifact") {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let input = &a["input"];
    let entity = input["entityName"].as_str().unwrap_or("");
    // An offline run synced later names no entity: the server takes the
    // key's default entity.
    if !entity.is_empty() && entity != s.entity {
        return resp(
            200,
            json!({"errors": [{"message": format!("permission denied for entity {entity}")}], "data": null}),
        );
    }
    let project = input["projectName"].as_str().unwrap_or("").to_string();
    let collection = input["artifactCollectionName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let digest = input["digest"].as_str().unwrap_or("").to_string();
    let run = input["runName"].as_str().unwrap_or("").to_string();
    if collection.is_empty()
        || collection.len() > 128
        || !collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return gql_fail(s, route, format!("invalid artifact name {collection:?}"));
    }
    if !run.is_empty() && !s.runs.contains_key(&(project.clone(), run.clone())) {
        return gql_fail(s, route, format!("artifact logged by unknown run {run}"));
    }
    let latest = s
        .artifacts
        .iter()
        .rev()
        .find(|x| x.project == project && x.collection == collection && x.state == "COMMITTED")
        .map(|x| json!({"id": x.id}));
    // Digest deduplication: the same contents in the same collection is the
    // same artifact version, committed or still pending.
    let dedup = input["enableDigestDeduplication"] == true;
    if let Some(existing) = s
        .artifacts
        .iter_mut()
        .find(|x| dedup && x.project == project && x.collection == collection && x.digest == digest)
    {
        existing.creates += 1;
        let (id, state) = (existing.id.clone(), existing.state.clone());
        return resp(
            200,
            json!({"data": {"createArtifact": {"artifact": {"id": id, "state": state,
                "artifactSequence": {"latestArtifact": latest}}}}}),
        );
    }
    s.next_id += 1;
    let id = base64::engine::general_purpose::STANDARD.encode(format!("Artifact:{}", s.next_id));
    let aliases = input["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["alias"].as_str().map(str::to_string))
        .collect();
    s.artifacts.push(WArtifact {
        id: id.clone(),
        project,
        collection,
        type_name: input["artifactTypeName"].as_str().unwrap_or("").to_string(),
        digest,
        state: "PENDING".into(),
        run,
        client_id: input["clientID"].as_str().unwrap_or("").to_string(),
        aliases,
        creates: 1,
        ..Default::default()
    });
    resp(
        200,
        json!({"data": {"createArtifact": {"artifact": {"id": id, "state": "PENDING",
            "artifactSequence": {"latestArtifact": latest}}}}}),
    )
}

/// An upload URL for `slot`, and the headers it must be sent with.
fn issue_url(s: &mut Server, req: &Request, slot: Slot) -> (String, Vec<String>) {
    let host = req.header("host").unwrap_or("127.0.0.1").to_string();
    s.next_id += 1;
    let token = format!("t{}x{}", s.next_id, rand_u32());
    s.tokens.insert(token.clone(), slot);
    (
        format!("http://{host}/storage/{token}"),
        vec![format!("X-Upload-Check:{token}")],
    )
}

fn artifact_manifest(
    s: &mut Server,
    req: &Request,
    query: &str,
    vars: &Map<String, Value>,
    route: &str,
) -> Response {
    let create = route == "CreateArtifactManifest";
    let field = if create {
        "createArtifactManifest"
    } else {
        "updateArtifactManifest"
    };
    let a = match arguments(query, vars, field) {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let artifact = if create {
        let id = str_arg(&a, "artifactID").unwrap_or_default();
        if !s.artifacts.iter().any(|x| x.id == id) {
            return gql_fail(s, route, format!("manifest for unknown artifact {id}"));
        }
        s.next_id += 1;
        let mid = base64::engine::general_purpose::STANDARD
            .encode(format!("ArtifactManifest:{}", s.next_id));
        s.manifests.insert(mid.clone(), id.clone());
        (mid, id)
    } else {
        let mid = str_arg(&a, "artifactManifestID").unwrap_or_default();
        match s.manifests.get(&mid) {
            Some(id) => (mid, id.clone()),
            None => return gql_fail(s, route, format!("unknown manifest {mid}")),
        }
    };
    let (mid, id) = artifact;
    let mut file = json!({"id": format!("{mid}-file")});
    if vars.get("includeUpload") == Some(&Value::Bool(true)) {
        let (url, headers) = issue_url(s, req, Slot::Manifest(id));
        file["uploadUrl"] = json!(url);
        file["uploadHeaders"] = json!(headers);
    }
    resp(
        200,
        json!({"data": {field: {"artifactManifest": {"id": mid, "file": file}}}}),
    )
}

fn create_artifact_files(
    s: &mut Server,
    req: &Request,
    query: &str,
    vars: &Map<String, Value>,
    route: &str,
) -> Response {
    let a = match arguments(query, vars, "createArtifactFiles") {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let mut edges = Vec::new();
    for spec in a["input"]["artifactFiles"].as_array().into_iter().flatten() {
        let id = spec["artifactID"].as_str().unwrap_or("").to_string();
        let name = spec["name"].as_str().unwrap_or("").to_string();
        if !s
            .artifacts
            .iter()
            .any(|x| x.id == id && x.state == "PENDING")
        {
            return gql_fail(
                s,
                route,
                format!("file {name} for an artifact that is not pending: {id}"),
            );
        }
        let (url, headers) = issue_url(s, req, Slot::ArtifactFile(id.clone(), name.clone()));
        let storage_path = format!("wandbartifacts/{}", spec["md5"].as_str().unwrap_or(""));
        let declared: Vec<(Option<u64>, String)> = spec["uploadPartsInput"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let hex = p["hexMD5"].as_str().unwrap_or("").to_string();
                (p["partNumber"].as_u64(), hex)
            })
            .collect();
        let mut multipart = Value::Null;
        if !declared.is_empty() {
            let in_order = declared
                .iter()
                .enumerate()
                .all(|(i, (n, hex))| *n == Some(i as u64 + 1) && is_hex_md5(hex));
            if !in_order {
                return gql_fail(
                    s,
                    route,
                    format!("{name}: parts not numbered 1..n with a hex MD5 each: {declared:?}"),
                );
            }
            s.next_id += 1;
            let upload_id = format!("upload-{}-{}", s.next_id, rand_u32());
            let mut parts = Vec::new();
            for n in 1..=declared.len() {
                let (url, _) = issue_url(s, req, Slot::Part(upload_id.clone(), n));
                parts.push(json!({"partNumber": n, "uploadUrl": url}));
            }
            s.multipart.insert(
                upload_id.clone(),
                Multipart {
                    artifact: id.clone(),
                    name: name.clone(),
                    storage_path: storage_path.clone(),
                    declared: declared.into_iter().map(|(_, h)| h).collect(),
                    received: BTreeMap::new(),
                },
            );
            multipart = json!({"uploadID": upload_id, "uploadUrlParts": parts});
        }
        edges.push(json!({"node": {
            "storagePath": storage_path,
            "uploadUrl": url, "uploadHeaders": headers, "uploadMultipartUrls": multipart,
            "artifact": {"id": id},
        }}));
    }
    resp(
        200,
        json!({"data": {"createArtifactFiles": {"files": {"edges": edges}}}}),
    )
}

fn is_hex_md5(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A part of a multipart upload: stored if its `Content-MD5` is the MD5 of
/// its bytes and the one declared for it, answered with an ETag (the hex
/// MD5 in quotes, as S3 answers).
fn put_part(s: &mut Server, req: &Request, upload: &str, n: usize) -> Response {
    // One pass over the bytes (parts are 100 MiB): base64 for Content-MD5,
    // hex for the ETag.
    let raw = {
        use md5::Digest;
        md5::Md5::digest(&req.body)
    };
    let md5 = base64::engine::general_purpose::STANDARD.encode(raw);
    // Not the parts received (they may be gigabytes): what the checks need.
    let Some((name, declared)) = s
        .multipart
        .get(upload)
        .map(|m| (m.name.clone(), m.declared.get(n - 1).cloned()))
    else {
        return violation(s, 404, format!("part {n} of an unknown upload {upload}"));
    };
    let declared =
        declared.map(|hex| base64::engine::general_purpose::STANDARD.encode(hex_bytes(&hex)));
    match req.header("content-md5") {
        Some(sent) if sent == md5 && Some(&md5) == declared.as_ref() => {}
        Some(sent) => {
            let why = format!(
                "part {n} of {name}: Content-MD5 {sent} but the bytes give {md5} (declared {declared:?})"
            );
            return violation(s, 400, why);
        }
        None => return violation(s, 400, format!("part {n} of {name} without Content-MD5")),
    }
    let etag = format!("\"{}\"", difflog::format::hex(&raw));
    if let Some(m) = s.multipart.get_mut(upload) {
        m.received.insert(n, (req.body.clone(), etag.clone()));
    }
    Response {
        etag: Some(etag),
        ..resp(200, Value::Null)
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// `CompleteMultipartUploadArtifact`: every part received, listed in order
/// with the ETag each got; the file is then the parts joined.
fn complete_multipart(
    s: &mut Server,
    query: &str,
    vars: &Map<String, Value>,
    route: &str,
) -> Response {
    let a = match arguments(query, vars, "completeMultipartUploadArtifact") {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let upload = str_arg(&a, "uploadID").unwrap_or_default();
    // Taken out (its parts may be gigabytes), put back if refused.
    let Some(m) = s.multipart.remove(&upload) else {
        return match s.completed_uploads.get(&upload) {
            Some((parts, answer)) if *parts == a["completedParts"] => resp(200, answer.clone()),
            _ => gql_fail(s, route, format!("unknown upload {upload}")),
        };
    };
    let listed: Vec<(Option<u64>, Option<String>)> = a["completedParts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["partNumber"].as_u64(),
                p["hexMD5"].as_str().map(str::to_string),
            )
        })
        .collect();
    let expected: Vec<(Option<u64>, Option<String>)> = (1..=m.declared.len())
        .map(|n| (Some(n as u64), m.received.get(&n).map(|(_, e)| e.clone())))
        .collect();
    let same_place = str_arg(&a, "artifactID").as_deref() == Some(m.artifact.as_str())
        && str_arg(&a, "storagePath").as_deref() == Some(m.storage_path.as_str());
    if !same_place || listed != expected {
        let msg = format!(
            "{}: artifact or storage path differ ({same_place}), or completed parts {listed:?} are not the received {expected:?}",
            m.name
        );
        s.multipart.insert(upload, m);
        return gql_fail(s, route, msg);
    }
    let (parts, name, artifact) = (m.declared.len(), m.name, m.artifact);
    let mut bytes: Vec<u8> = Vec::new();
    for (_, (b, _)) in m.received {
        bytes.extend_from_slice(&b);
    }
    // The file's digest as declared (its storage path's); the commit checks
    // the bytes against the manifest (one pass over a file of gigabytes).
    let digest = m
        .storage_path
        .strip_prefix("wandbartifacts/")
        .unwrap_or_default()
        .to_string();
    if let Some(art) = s.artifacts.iter_mut().find(|x| x.id == artifact) {
        art.files.insert(name.clone(), bytes);
    }
    s.pub_completed.push((name, parts));
    let answer = json!({"data": {"completeMultipartUploadArtifact": {"digest": digest}}});
    s.completed_uploads
        .insert(upload, (a["completedParts"].clone(), answer.clone()));
    resp(200, answer)
}

/// W&B's digests: base64 of an MD5.
fn b64_md5(bytes: &[u8]) -> String {
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

fn commit_artifact(
    s: &mut Server,
    query: &str,
    vars: &Map<String, Value>,
    route: &str,
) -> Response {
    let a = match arguments(query, vars, "commitArtifact") {
        Ok(a) => a,
        Err(e) => return gql_fail(s, route, e),
    };
    let id = str_arg(&a, "artifactID").unwrap_or_default();
    let Some(art) = s.artifacts.iter().find(|x| x.id == id).cloned() else {
        return gql_fail(s, route, format!("commit of unknown artifact {id}"));
    };
    // What the server checks before a version becomes visible: the manifest
    // is there, every entry in it was uploaded with the digest and size it
    // declares, and the manifest's digest is the one CreateArtifact gave.
    let Some(manifest) = &art.manifest else {
        return gql_fail(
            s,
            route,
            format!("commit of {} without a manifest", art.collection),
        );
    };
    let mut problems = Vec::new();
    let mut lines = String::from("wandb-artifact-manifest-v1\n");
    let contents = manifest["contents"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = contents.keys().collect();
    names.sort();
    for name in names {
        let e = &contents[name];
        let digest = e["digest"].as_str().unwrap_or("");
        lines.push_str(&format!("{name}:{digest}\n"));
        match art.files.get(name) {
            Some(b) if b64_md5(b) == digest && e["size"].as_u64() == Some(b.len() as u64) => {}
            Some(_) => problems.push(format!("{name}: digest or size differs from the manifest")),
            None => problems.push(format!("{name}: in the manifest, never uploaded")),
        }
    }
    {
        use md5::Digest;
        let d = md5::Md5::digest(lines.as_bytes());
        let hex = difflog::format::hex(&d);
        if hex != art.digest {
            problems.push(format!(
                "manifest digest {hex} but CreateArtifact said {}",
                art.digest
            ));
        }
    }
    if manifest["version"] != 1 || manifest["storagePolicy"] != "wandb-storage-policy-v1" {
        problems.push(format!(
            "unexpected manifest header: version {} policy {}",
            manifest["version"], manifest["storagePolicy"]
        ));
    }
    if !problems.is_empty() {
        return gql_fail(
            s,
            route,
            format!("{}: {}", art.collection, problems.join("; ")),
        );
    }
    if let Some(x) = s.artifacts.iter_mut().find(|x| x.id == id) {
        x.state = "COMMITTED".into();
    }
    resp(
        200,
        json!({"data": {"commitArtifact": {"artifact": {"id": id, "digest": art.digest}}}}),
    )
}

fn put_file(s: &mut Server, req: &Request) -> Response {
    let token = req.path.trim_start_matches("/storage/").to_string();
    let Some(slot) = s.tokens.get(&token).cloned() else {
        return violation(
            s,
            403,
            format!("PUT to an upload URL the server never issued: {}", req.path),
        );
    };
    let name = match &slot {
        Slot::RunFile(_, _, n) | Slot::ArtifactFile(_, n) => n.clone(),
        Slot::Manifest(_) => "wandb_manifest.json".into(),
        Slot::Part(upload, n) => format!("part {n} of {upload}"),
    };
    if req.header("authorization").is_some() {
        return violation(
            s,
            400,
            format!("the API key was sent to storage with {name}"),
        );
    }
    // W&B's Go client sends each part with the content type the file's
    // uploadHeaders name: an empty one when they name none.
    let empty_on_part = matches!(slot, Slot::Part(..)) && req.header("content-type") == Some("");
    if let Some(ct) = req.header("content-type").filter(|_| !empty_on_part) {
        return violation(
            s,
            403,
            format!("PUT of {name} with Content-Type {ct:?}, which uploadHeaders did not list"),
        );
    }
    // A part's URL is presigned for its own request: no uploadHeaders.
    if let Slot::Part(upload, n) = &slot {
        return put_part(s, req, upload, *n);
    }
    let check = req.header("x-upload-check").unwrap_or("");
    if !s.tokens.contains_key(check) {
        return violation(s, 403, format!("PUT of {name} without the uploadHeaders"));
    }
    let project = match &slot {
        Slot::RunFile(p, _, _) => p.clone(),
        Slot::ArtifactFile(id, _) | Slot::Manifest(id) => s
            .artifacts
            .iter()
            .find(|a| &a.id == id)
            .map(|a| a.project.clone())
            .unwrap_or_default(),
        Slot::Part(..) => String::new(),
    };
    let mut names: Vec<String> = req
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    s.put_headers.push((project, names));
    match slot {
        Slot::RunFile(p, r, name) => match s.runs.get_mut(&(p.clone(), r)) {
            Some(run) => {
                run.files.insert(name.clone(), req.body.clone());
                s.put_files.push((p, name));
                resp(200, Value::Null)
            }
            None => violation(
                s,
                404,
                format!("upload for a run that does not exist: {name}"),
            ),
        },
        Slot::ArtifactFile(id, name) => {
            if let Some(a) = s.artifacts.iter_mut().find(|a| a.id == id) {
                a.files.insert(name, req.body.clone());
            }
            resp(200, Value::Null)
        }
        Slot::Manifest(id) => {
            let Ok(m) = serde_json::from_slice::<Value>(&req.body) else {
                return violation(s, 400, format!("manifest of {id} is not JSON"));
            };
            if let Some(a) = s.artifacts.iter_mut().find(|a| a.id == id) {
                a.manifest = Some(m);
            }
            resp(200, Value::Null)
        }
        Slot::Part(upload, n) => put_part(s, req, &upload, n),
    }
}

/// A file-stream request that carries nothing: W&B's client's heartbeat
/// (`{}` from the Go client, `{"complete": false, "failed": false}` from the
/// old Python one).
fn is_heartbeat(body: &Value) -> bool {
    body["complete"] != true
        && body["files"].as_object().is_none_or(|f| f.is_empty())
        && body["uploaded"].as_array().is_none_or(|u| u.is_empty())
}

fn file_stream(s: &mut Server, req: &Request) -> Response {
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let [_, e, p, r, _] = parts.as_slice() else {
        return violation(s, 404, format!("bad file_stream path {}", req.path));
    };
    if *e != s.entity {
        return resp(403, json!({"error": "permission denied"}));
    }
    let key = (p.to_string(), r.to_string());
    if !s.runs.contains_key(&key) {
        return violation(s, 404, format!("file_stream for unknown run {}", req.path));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return violation(s, 400, "file_stream body is not JSON".into());
    };
    let mut errors = Vec::new();
    {
        let run = s.runs.get(&key).unwrap();
        if let Some(h) = body["files"].get("wandb-history.jsonl") {
            let offset = h["offset"].as_u64().unwrap_or(u64::MAX);
            if offset != run.history.len() as u64 {
                errors.push(format!(
                    "history offset {offset} but the server holds {} lines: a line was {}",
                    run.history.len(),
                    if offset < run.history.len() as u64 {
                        "duplicated"
                    } else {
                        "skipped"
                    }
                ));
            }
            for c in h["content"].as_array().into_iter().flatten() {
                let ok = c
                    .as_str()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .is_some_and(|v| v.is_object());
                if !ok {
                    errors.push(format!("history line is not a JSON object string: {c}"));
                }
            }
        }
        if let Some(sm) = body["files"].get("wandb-summary.json") {
            if sm["offset"] != 0 || sm["content"].as_array().map(Vec::len) != Some(1) {
                errors.push(format!("summary must be one line at offset 0: {sm}"));
            }
        }
        for u in body["uploaded"].as_array().into_iter().flatten() {
            let path = u.as_str().unwrap_or("");
            if !run.files.contains_key(path) {
                errors.push(format!("listed as uploaded but never uploaded: {path}"));
            }
        }
        if is_heartbeat(&body) && run.state != "running" {
            errors.push(format!("heartbeat for a {} run", run.state));
        }
        if body["complete"] == true && run.state != "running" {
            errors.push(format!("run marked complete again (state {})", run.state));
        }
    }
    if !errors.is_empty() {
        return violation(s, 400, errors.join("; "));
    }
    let run = s.runs.get_mut(&key).unwrap();
    if let Some(h) = body["files"].get("wandb-history.jsonl") {
        for c in h["content"].as_array().into_iter().flatten() {
            run.history
                .push(serde_json::from_str(c.as_str().unwrap_or("{}")).unwrap_or(Value::Null));
        }
    }
    if let Some(sm) = body["files"].get("wandb-summary.json") {
        run.summary =
            serde_json::from_str(sm["content"][0].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
        run.summaries += 1;
    }
    for u in body["uploaded"].as_array().into_iter().flatten() {
        run.uploaded.insert(u.as_str().unwrap_or("").to_string());
    }
    if is_heartbeat(&body) {
        run.heartbeats += 1;
    }
    if body["complete"] == true {
        run.completes += 1;
        let code = body["exitcode"].as_i64().unwrap_or(0);
        run.exitcode = Some(code);
        run.state = if code == 0 { "finished" } else { "failed" }.into();
    }
    resp(200, json!({"exitcode": null, "limits": {}}))
}

fn rand_u32() -> u32 {
    rand::random()
}
