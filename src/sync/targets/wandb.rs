//! Weights & Biases (W&B cloud, or a self-hosted W&B Server) as a sync target.
//!
//! The seed system is W&B's diffusers autolog, so a difflog run shows in W&B
//! the way an autolog run does — uploaded from the run directory, after the
//! fact, by the protocol W&B's own client speaks:
//!
//! - `POST {base}/graphql`, HTTP Basic `api:<key>`. `UpsertBucket` creates or
//!   finds the run (its name is derived from the difflog run id, so a lost
//!   state never makes a second run), sets the display name, tags and config
//!   (`{"key": {"value": …}}`, with autolog's `workflow` list); its answer's
//!   `historyLineCount` says where the history continues.
//! - Files: `CreateRunFiles` hands out an upload URL (and headers) per file —
//!   asked for all files of a batch of calls at once, as W&B's client does,
//!   and again for one file whose URL storage refuses (an expired signature)
//!   —, the file is `PUT` there — without the API key, since the URL may
//!   point at a storage service — and later listed in the file stream's
//!   `uploaded`.
//!   Images go to `media/images/<sha256>.png`, each call's table to
//!   `media/table/Result-Table/Pipeline-Call-N_<sha256[..20]>.table.json`.
//! - `POST {base}/files/{entity}/{project}/{run}/file_stream`: history lines
//!   at contiguous offsets, the summary (with the request that reaches the
//!   log's last line), and `complete`/`exitcode` once.
//!
//! History lines are a pure function of the event log: for each record in
//! log order, a loose image (`run.log_image`) or a metric gives one line, and
//! a finished call gives one line per image (`Generated-Image/Pipeline-Call-N`,
//! like autolog) then one for its table (`Result-Table/Pipeline-Call-N`, plus
//! the call's timings). Line *k* is therefore the same in every pass and
//! every process, and the next offset is both kept in the state (advanced
//! after each acknowledged request) and checked against the server's
//! `historyLineCount` when a pass opens the run: a kill between the server's
//! answer and the state's commit never sends a line twice or leaves a gap.

use super::{Remote, RemoteStatus, Snapshot, Target};
use crate::event::{Cell, Event, MediaEvent, MetricEvent};
use crate::format::rfc3339_ms;
use crate::format::sha256_hex;
use crate::read::CallView;
use crate::sync::http::{percent_encode, Auth, Body, Http, SyncError, SyncResult};
use crate::sync::retry::{retry, Backoff, Decision, Policy};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// W&B's cloud API, used when `WANDB_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";
/// History lines sent per file-stream request at most.
const LINES_PER_REQUEST: usize = 200;

const UPSERT_BUCKET: &str = "mutation UpsertBucket($id: String, $name: String, $project: String, \
$entity: String, $displayName: String, $notes: String, $state: String, $tags: [String!], \
$config: JSONString) { upsertBucket(input: {id: $id, name: $name, modelName: $project, \
entityName: $entity, displayName: $displayName, notes: $notes, state: $state, tags: $tags, \
config: $config}) { bucket { id name displayName state historyLineCount \
project { name entity { name } } } inserted } }";

const CREATE_RUN_FILES: &str = "mutation CreateRunFiles($entity: String!, $project: String!, \
$run: String!, $files: [String!]!) { createRunFiles(input: {entityName: $entity, \
projectName: $project, runName: $run, files: $files}) { runID uploadHeaders \
files { name uploadUrl } } }";

const RUN_HISTORY_LINE_COUNT: &str = "query RunHistoryLineCount($project: String, \
$entity: String, $name: String!) { model(name: $project, entityName: $entity) { \
bucket(name: $name, missingOk: true) { historyLineCount state } } }";

/// A W&B server.
pub struct Wandb {
    api: Http,
    storage: Http,
    entity: String,
    project: Option<String>,
    key: String,
    /// History lines of the runs synced lately (see [`Wandb::lines_for`]).
    built: Mutex<Vec<Built>>,
    /// Upload URLs asked for ahead by `prepare_uploads`, by (run, file);
    /// each is used once.
    ahead: Mutex<HashMap<(String, String), Upload>>,
    /// When a file-stream request for a run last succeeded (heartbeats).
    posted: Mutex<HashMap<String, std::time::Instant>>,
    /// Silence after which a live run gets a heartbeat.
    heartbeat: Duration,
}

/// W&B's client sends a heartbeat after this much file-stream silence (its
/// `heartbeat_seconds` default); `DIFFLOG_HEARTBEAT_SECONDS` overrides it.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Files per `CreateRunFiles` request when asking ahead.
const FILES_PER_REQUEST: usize = 100;

/// Where and how to upload one run file.
struct Upload {
    url: String,
    headers: Vec<(String, String)>,
}

/// How many runs' history lines are kept: more than `upload` syncs at once.
const BUILT_KEPT: usize = 8;

/// The history lines of one run as one pass saw it.
struct Built {
    run_id: String,
    /// The records the lines were built from: count and last sequence
    /// number (a log only grows, so these name its content).
    records: (usize, u64),
    lines: Arc<Vec<Line>>,
}

/// Where a run stands at W&B (kept as the state's remote data).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Cursor {
    entity: String,
    project: String,
    run: String,
    /// History lines the server acknowledged: the next line's offset.
    history: u64,
    /// Whether the run was marked complete.
    complete: bool,
}

impl Cursor {
    fn of(remote: &Remote) -> SyncResult<Cursor> {
        serde_json::from_str(&remote.data)
            .map_err(|e| SyncError::permanent(format!("corrupt W&B data in sync state: {e}")))
    }

    fn store(&self, remote: &mut Remote) {
        remote.data = serde_json::to_string(self).unwrap_or_default();
    }
}

/// The W&B run id of a difflog run: its id in lower case, with every
/// character W&B does not take in run ids (`/ \ # ? % :` and others) turned
/// into `-`. The same difflog run always gets the same W&B run.
pub fn run_name(difflog_id: &str) -> String {
    difflog_id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// Where an image goes in the W&B run.
fn image_path(m: &MediaEvent) -> String {
    format!("media/images/{}.{}", m.digest, m.format)
}

/// An image as W&B references it from history and tables.
fn image_file(m: &MediaEvent) -> Value {
    let mut v = json!({
        "_type": "image-file", "path": image_path(m), "sha256": m.digest, "size": m.bytes,
        "format": m.format, "width": m.width, "height": m.height,
    });
    if let Some(c) = &m.caption {
        v["caption"] = json!(c);
    }
    v
}

/// A call's table as a W&B table file: bytes, run path and reference.
struct TableFile {
    path: String,
    bytes: Vec<u8>,
    reference: Value,
}

fn table_file(call: &CallView) -> TableFile {
    let columns = &call.started.columns;
    let mut data = Vec::new();
    for row in &call.rows {
        let cells: Vec<Value> = columns
            .iter()
            .map(|col| match row.cells.iter().find(|c| c.column() == col) {
                Some(Cell::Text { value, .. }) => json!(value),
                Some(Cell::Number { value, .. }) => Value::Number(value.clone()),
                Some(Cell::Image { digest, .. }) => call
                    .media
                    .iter()
                    .find(|m| &m.digest == digest)
                    .map(|m| {
                        let mut v = image_file(m);
                        // A cell shows the image; the caption is in the row.
                        if let Value::Object(o) = &mut v {
                            o.remove("caption");
                        }
                        v
                    })
                    .unwrap_or(Value::Null),
                // Autolog writes an empty string for an absent value (no
                // negative prompt), not null.
                Some(Cell::Null { .. }) | None => json!(""),
            })
            .collect();
        data.push(Value::Array(cells));
    }
    let (ncols, nrows) = (columns.len(), data.len());
    let table = json!({
        "_type": "table", "columns": columns, "data": data, "ncols": ncols, "nrows": nrows,
    });
    let bytes = serde_json::to_vec(&table).unwrap_or_default();
    let sha = sha256_hex(&bytes);
    let path = format!(
        "media/table/Result-Table/{}_{}.table.json",
        call.started.stage,
        &sha[..20]
    );
    let reference = json!({
        "_type": "table-file", "path": path, "sha256": sha, "size": bytes.len(),
        "ncols": ncols, "nrows": nrows,
    });
    TableFile {
        path,
        bytes,
        reference,
    }
}

/// One history line: its values, the run files it references, and the call
/// it belongs to (its files are uploaded when that call is).
struct Line {
    value: Map<String, Value>,
    files: Vec<String>,
    call: Option<u32>,
}

/// Autolog's caption for an image of a pipeline with two prompts:
/// `Prompt-1: …\nPrompt-2: …` (from the image's row); `None` otherwise.
fn sdxl_caption(call: &CallView, digest: &str) -> Option<String> {
    if !call.started.columns.iter().any(|c| c == "Prompt-2") {
        return None;
    }
    let row = call.rows.iter().find(|r| {
        r.cells
            .iter()
            .any(|c| matches!(c, Cell::Image { digest: d, .. } if d == digest))
    })?;
    let text = |col: &str| {
        row.cells.iter().find_map(|c| match c {
            Cell::Text { column, value } if column == col => Some(value.clone()),
            _ => None,
        })
    };
    Some(format!(
        "Prompt-1: {}\nPrompt-2: {}",
        text("Prompt").unwrap_or_default(),
        text("Prompt-2").unwrap_or_default()
    ))
}

/// The run files W&B's client writes beside the history: `wandb-metadata.json`
/// (what recorded the run, where and when, on which device), `config.yaml`
/// (the config in W&B's YAML form; JSON values are valid YAML) and
/// `requirements.txt` (here: difflog's version and every model with its
/// revision and weights digest, what reproducing the run needs).
fn run_files(run: &Snapshot<'_>, config: &Map<String, Value>) -> Vec<(String, Vec<u8>)> {
    let pipelines: Vec<_> = run.view.pipelines.values().collect();
    let devices: std::collections::BTreeSet<&str> =
        pipelines.iter().map(|p| p.device.as_str()).collect();
    let program = run
        .view
        .config
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or("difflog");
    let metadata = json!({
        "program": program,
        "host": run.meta.host,
        "startedAt": run.meta.created,
        "difflog_version": run.meta.difflog_version,
        "devices": devices,
        "gpu": devices.iter().find(|d| d.starts_with("cuda")),
        "models": pipelines.iter().map(|p| json!({
            "class": p.class, "model_id": p.model_id, "revision": p.revision,
            "weights_digest": p.weights_digest, "dtype": p.dtype, "device": p.device,
        })).collect::<Vec<_>>(),
    });
    let mut yaml = String::from("wandb_version: 1\n");
    for (k, v) in config {
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        yaml.push_str(&format!(
            "\n{}:\n  desc: null\n  value: {}\n",
            json!(k),
            value
        ));
    }
    let mut req = format!("difflog=={}\n", run.meta.difflog_version);
    for p in &pipelines {
        req.push_str(&format!(
            "# model {} ({}) revision {} weights {}\n",
            p.model_id,
            p.class,
            p.revision.as_deref().unwrap_or("-"),
            p.weights_digest.as_deref().unwrap_or("-")
        ));
    }
    vec![
        (
            "wandb-metadata.json".into(),
            serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
        ),
        ("config.yaml".into(), yaml.into_bytes()),
        ("requirements.txt".into(), req.into_bytes()),
    ]
}

/// Media keys of input images (image-to-image), shown only in table cells.
const INPUT_IMAGE_PREFIX: &str = "Input-Image/";

/// Every history line the log gives, in order (see the module comment).
fn history_lines(run: &Snapshot<'_>) -> Vec<Line> {
    let start = rfc3339_ms(&run.meta.created);
    let mut out: Vec<Line> = Vec::new();
    // Each image line carries the time its image was logged (autolog logs
    // them one by one), not the time its call finished.
    let media_ts: std::collections::HashMap<(Option<u32>, &str), i64> = run
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Media(m) => Some(((m.call, m.digest.as_str()), rfc3339_ms(&r.ts))),
            _ => None,
        })
        .collect();
    let mut push = |mut value: Map<String, Value>, files: Vec<String>, call, ts: i64| {
        value.insert("_step".into(), json!(out.len()));
        value.insert(
            "_runtime".into(),
            json!((ts - start).max(0) as f64 / 1000.0),
        );
        value.insert("_timestamp".into(), json!(ts as f64 / 1000.0));
        out.push(Line { value, files, call });
    };
    for r in run.records {
        let ts = rfc3339_ms(&r.ts);
        match &r.event {
            Event::Media(m) if m.call.is_none() => {
                let mut v = Map::new();
                v.insert(m.key.clone(), image_file(m));
                push(v, vec![image_path(m)], None, ts);
            }
            Event::Metric(m) => {
                let mut v = Map::new();
                v.insert(m.name.clone(), json!(m.value));
                push(v, Vec::new(), None, ts);
            }
            Event::CallFinished(f) => {
                let Some(call) = run.view.calls.get(&f.call) else {
                    continue;
                };
                // Generated images go to the media panel, one line each, as
                // autolog logs them; input images only in the table's cells
                // (autolog logs no line for them), so their files go with
                // the table's line.
                let mut input_files = Vec::new();
                for m in &call.media {
                    if m.key.starts_with(INPUT_IMAGE_PREFIX) {
                        input_files.push(image_path(m));
                        continue;
                    }
                    let mut image = image_file(m);
                    if let Some(c) = sdxl_caption(call, &m.digest) {
                        image["caption"] = json!(c);
                    }
                    let at = media_ts
                        .get(&(m.call, m.digest.as_str()))
                        .copied()
                        .unwrap_or(ts);
                    let mut v = Map::new();
                    v.insert(m.key.clone(), image);
                    push(v, vec![image_path(m)], Some(f.call), at);
                }
                let table = table_file(call);
                let mut v = Map::new();
                v.insert(
                    format!("Result-Table/{}", call.started.stage),
                    table.reference,
                );
                for (phase, ms) in &f.timings_ms {
                    if ms.is_number() {
                        v.insert(format!("timings/{phase}_ms"), ms.clone());
                    }
                }
                let mut files = vec![table.path];
                files.extend(input_files);
                push(v, files, Some(f.call), ts);
            }
            _ => {}
        }
    }
    out
}

/// The largest summary line sent: W&B's client (`core/internal/filestream`)
/// drops a summary over its line limit rather than have the server refuse
/// the request (a run with many thousands of calls has that many keys).
const MAX_SUMMARY_BYTES: usize = (2 << 20) - (100 << 10);

/// The summary as W&B keeps it: each key's last value, and `_wandb.runtime`
/// (whole seconds, as W&B's client writes it). `None` when it is too large.
fn summary_line(lines: &[Line]) -> Option<String> {
    let mut summary = Map::new();
    for l in lines {
        for (k, v) in &l.value {
            summary.insert(k.clone(), v.clone());
        }
    }
    let runtime = summary
        .get("_runtime")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    summary.insert("_wandb".into(), json!({"runtime": runtime.floor() as i64}));
    let text = Value::Object(summary).to_string();
    if text.len() > MAX_SUMMARY_BYTES {
        tracing::warn!(
            "W&B summary of {} bytes is over the {MAX_SUMMARY_BYTES}-byte line limit; not sent (as W&B's client does)",
            text.len()
        );
        return None;
    }
    Some(text)
}

fn exitcode(status: RemoteStatus) -> i32 {
    match status {
        RemoteStatus::Running | RemoteStatus::Finished => 0,
        RemoteStatus::Failed => 1,
        // A writer that died left no exit record: `wandb sync` of such a
        // run sends 1 (W&B keeps 255 for a run stopped by Ctrl-C, which a
        // crash is not).
        RemoteStatus::Killed => 1,
    }
}

/// The heartbeat interval: `DIFFLOG_HEARTBEAT_SECONDS`, else W&B's 30 s.
fn heartbeat_from_env() -> SyncResult<Duration> {
    match std::env::var("DIFFLOG_HEARTBEAT_SECONDS") {
        Err(_) => Ok(HEARTBEAT),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                SyncError::permanent(format!(
                    "DIFFLOG_HEARTBEAT_SECONDS must be a positive number of seconds, not {v:?}"
                ))
            }),
    }
}

impl Wandb {
    /// A target at `base` (`https://api.wandb.ai` or a W&B Server URL) for
    /// `entity`, uploading into `project` (or each run's own project).
    pub fn new(base: &str, auth: Auth, entity: &str, project: Option<&str>) -> SyncResult<Wandb> {
        let base = base.trim_end_matches('/');
        let key = match project {
            Some(p) => format!("wandb+{base}/{entity}/{p}"),
            None => format!("wandb+{base}/{entity}"),
        };
        Ok(Wandb {
            api: Http::new(base, auth)?,
            // Upload URLs may point at a storage service: no API key there.
            storage: Http::new(base, Auth::None)?,
            entity: entity.to_string(),
            project: project.map(str::to_string),
            key,
            built: Mutex::new(Vec::new()),
            ahead: Mutex::new(HashMap::new()),
            posted: Mutex::new(HashMap::new()),
            heartbeat: heartbeat_from_env()?,
        })
    }

    /// The API key as W&B's client reads it: `WANDB_API_KEY`.
    pub fn api_key_from_env() -> Option<String> {
        std::env::var("WANDB_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
    }

    /// The server as W&B's client reads it: `WANDB_BASE_URL`, else the cloud.
    pub fn base_from_env() -> String {
        std::env::var("WANDB_BASE_URL")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
    }

    /// Runs a GraphQL operation; GraphQL errors in a 200 answer are errors.
    async fn gql(&self, op: &str, query: &str, variables: Value) -> SyncResult<Value> {
        let body = json!({"operationName": op, "query": query, "variables": variables});
        let v = self
            .api
            .send(Method::POST, "/graphql", Body::Json(&body))
            .await?;
        if let Some(errors) = v.get("errors").and_then(Value::as_array) {
            if !errors.is_empty() {
                let msgs: Vec<&str> = errors
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or("unknown error"))
                    .collect();
                return Err(SyncError::permanent(format!(
                    "W&B {op} at {}: {}",
                    self.api.base(),
                    msgs.join("; ")
                )));
            }
        }
        Ok(v["data"].clone())
    }

    /// `UpsertBucket`, retried on 409 Conflict as W&B's client does.
    async fn upsert(&self, variables: Value) -> SyncResult<Value> {
        let policy = Policy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
            attempts: 6,
        };
        let data = retry(
            policy,
            |_| self.gql("UpsertBucket", UPSERT_BUCKET, variables.clone()),
            |e: &SyncError| match e.status {
                Some(409) => Decision::Retry(e.retry_after),
                _ => Decision::Stop,
            },
        )
        .await?;
        let bucket = data["upsertBucket"]["bucket"].clone();
        if bucket.is_object() {
            return Ok(bucket);
        }
        Err(SyncError::permanent(format!(
            "W&B UpsertBucket at {}: no run in the answer",
            self.api.base()
        )))
    }

    fn project_of(&self, run: &Snapshot<'_>) -> String {
        self.project
            .clone()
            .unwrap_or_else(|| run.meta.project.clone())
    }

    /// Upload URLs (and the headers to send with them) for `names`, in
    /// their order: one `CreateRunFiles`.
    async fn create_run_files(&self, cur: &Cursor, names: &[String]) -> SyncResult<Vec<Upload>> {
        let data = self
            .gql(
                "CreateRunFiles",
                CREATE_RUN_FILES,
                json!({"entity": cur.entity, "project": cur.project, "run": cur.run, "files": names}),
            )
            .await?;
        let result = &data["createRunFiles"];
        if result["runID"].as_str().is_none_or(str::is_empty) {
            return Err(SyncError::permanent(format!(
                "W&B refused files for {}/{}/{}: check that the project exists and the key may write to it",
                cur.entity, cur.project, cur.run
            )));
        }
        let headers: Vec<(String, String)> = result["uploadHeaders"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|h| h.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let files = result["files"].as_array();
        names
            .iter()
            .map(|name| {
                let url = files
                    .and_then(|fs| fs.iter().find(|f| f["name"] == name.as_str()))
                    .and_then(|f| f["uploadUrl"].as_str())
                    .ok_or_else(|| {
                        SyncError::permanent(format!("W&B gave no upload URL for {name}"))
                    })?;
                let url = if url.starts_with('/') {
                    format!("{}{url}", self.api.base())
                } else {
                    url.to_string()
                };
                Ok(Upload {
                    url,
                    headers: headers.clone(),
                })
            })
            .collect()
    }

    /// Uploads one run file: `PUT` to the URL asked for ahead, or to one
    /// `CreateRunFiles` hands out now.
    async fn put_file(&self, cur: &Cursor, name: &str, body: Body<'_>) -> SyncResult<()> {
        let ahead = self
            .ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(cur.run.clone(), name.to_string()));
        if let Some(u) = ahead {
            match self
                .storage
                .send_with(Method::PUT, &u.url, &u.headers, body)
                .await
            {
                Ok(_) => return Ok(()),
                // A signed URL asked for earlier may have expired: ask again.
                Err(e) if e.class == crate::sync::retry::Class::Permanent => {
                    tracing::debug!(
                        "{name}: upload URL asked for ahead refused ({e}); asking again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let mut urls = self.create_run_files(cur, &[name.to_string()]).await?;
        let u = urls
            .pop()
            .ok_or_else(|| SyncError::permanent(format!("W&B gave no upload URL for {name}")))?;
        self.storage
            .send_with(Method::PUT, &u.url, &u.headers, body)
            .await
            .map(|_| ())
    }

    /// One file-stream request, not retried here: a request whose answer was
    /// lost may have been applied, so the caller asks the server before
    /// sending again.
    async fn file_stream(&self, cur: &Cursor, body: &Value) -> SyncResult<()> {
        let path = format!(
            "/files/{}/{}/{}/file_stream",
            percent_encode(&cur.entity),
            percent_encode(&cur.project),
            percent_encode(&cur.run)
        );
        self.api
            .send_once(Method::POST, &path, &[], &Body::Json(body))
            .await?;
        self.posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cur.run.clone(), std::time::Instant::now());
        Ok(())
    }

    /// What the server holds of the run: history lines and state (the
    /// query W&B's client resumes a run with).
    async fn server_view(&self, cur: &Cursor) -> SyncResult<(u64, String)> {
        let data = self
            .gql(
                "RunHistoryLineCount",
                RUN_HISTORY_LINE_COUNT,
                json!({"project": cur.project, "entity": cur.entity, "name": cur.run}),
            )
            .await?;
        let bucket = &data["model"]["bucket"];
        Ok((
            bucket["historyLineCount"].as_u64().unwrap_or(0),
            bucket["state"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Sends `body` (built for the current cursor by `build`) until the
    /// server acknowledges; after a failure, asks the server where it
    /// stands (`settled`) before building the request again.
    ///
    /// Not [`retry`]: this loop sends many requests, and its budget of
    /// failures is per request (the backoff starts again after every
    /// acknowledged one), while `retry` counts attempts of one operation.
    async fn stream_until_acked(
        &self,
        cur: &mut Cursor,
        build: &dyn Fn(&Cursor) -> Option<Value>,
        settle: &dyn Fn(&mut Cursor, u64, &str),
        acked: &dyn Fn(&mut Cursor),
        remote: &mut Remote,
    ) -> SyncResult<()> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
        while let Some(body) = build(cur) {
            match self.file_stream(cur, &body).await {
                Ok(()) => {
                    backoff.reset();
                    acked(cur);
                    cur.store(remote);
                }
                Err(e)
                    if e.class == crate::sync::retry::Class::Transient
                        && backoff.attempts() < 4 =>
                {
                    tokio::time::sleep(backoff.next_delay(e.retry_after)).await;
                    let (lines, state) = self.server_view(cur).await?;
                    settle(cur, lines, &state);
                    cur.store(remote);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Marks a completed run running again (a crashed run that was reopened
    /// and is written again), as resuming a run in W&B does.
    async fn reopen(&self, cur: &mut Cursor, remote: &mut Remote) -> SyncResult<()> {
        self.upsert(json!({
            "name": cur.run, "project": cur.project, "entity": cur.entity, "state": "running",
        }))
        .await?;
        cur.complete = false;
        cur.store(remote);
        Ok(())
    }

    /// The run's history lines, built once per pass: a pass flushes after
    /// every batch of calls, and rebuilding every line (each call's table
    /// JSON and its digest) each time made a pass quadratic in the calls.
    fn lines_for(&self, run: &Snapshot<'_>) -> Arc<Vec<Line>> {
        let records = (run.records.len(), run.records.last().map_or(0, |r| r.seq));
        let lock = || self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = lock()
            .iter()
            .find(|b| b.run_id == run.meta.id && b.records == records)
        {
            return Arc::clone(&b.lines);
        }
        // Built without the lock: other runs' passes go on meanwhile.
        let lines = Arc::new(history_lines(run));
        let mut built = lock();
        built.retain(|b| b.run_id != run.meta.id);
        if built.len() >= BUILT_KEPT {
            built.remove(0);
        }
        built.push(Built {
            run_id: run.meta.id.clone(),
            records,
            lines: Arc::clone(&lines),
        });
        lines
    }

    /// Sends the history lines from the acknowledged offset on, as far as
    /// they are ready (`ready(call)`: that call's files are uploaded).
    async fn flush(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        ready: &dyn Fn(u32) -> bool,
    ) -> SyncResult<()> {
        let mut cur = Cursor::of(remote)?;
        let lines = self.lines_for(run);
        let start = usize::try_from(cur.history).unwrap_or(usize::MAX);
        if start > lines.len() {
            return Err(SyncError::permanent(format!(
                "W&B run {}/{}/{} has {} history lines but {} gives only {}: \
                 something else wrote to that W&B run",
                cur.entity,
                cur.project,
                cur.run,
                cur.history,
                run.dir.display(),
                lines.len()
            )));
        }
        let end = start
            + lines[start..]
                .iter()
                .take_while(|l| l.call.is_none_or(ready))
                .count();
        if end > start && cur.complete {
            // New lines for a run marked complete: a crashed run was reopened.
            self.reopen(&mut cur, remote).await?;
        }
        // The summary (each key's last value) goes with the request that
        // reaches the last line the log has: it covers every line, and
        // sending it with every request made a pass quadratic in the lines.
        let summary = (end == lines.len() && end > start)
            .then(|| summary_line(&lines))
            .flatten();
        let chunk = |cur: &Cursor| -> Option<Value> {
            let at = usize::try_from(cur.history).ok()?;
            if at >= end {
                return None;
            }
            let hi = (at + LINES_PER_REQUEST).min(end);
            let content: Vec<String> = lines[at..hi]
                .iter()
                .map(|l| serde_json::to_string(&l.value).unwrap_or_default())
                .collect();
            let mut files = json!({"wandb-history.jsonl": {"offset": at, "content": content}});
            if let (Some(s), true) = (&summary, hi == end) {
                files["wandb-summary.json"] = json!({"offset": 0, "content": [s]});
            }
            let uploaded: Vec<&String> = lines[at..hi].iter().flat_map(|l| &l.files).collect();
            Some(json!({"files": files, "uploaded": uploaded, "dropped": 0}))
        };
        self.stream_until_acked(
            &mut cur,
            &chunk,
            // The server may have applied a request whose answer was lost.
            &|cur, lines, _| cur.history = cur.history.max(lines),
            &|cur| cur.history = (cur.history + LINES_PER_REQUEST as u64).min(end as u64),
            remote,
        )
        .await
    }
}

impl Target for Wandb {
    fn key(&self) -> &str {
        &self.key
    }

    fn last_answer(&self) -> Option<std::time::SystemTime> {
        self.api.last_answer().max(self.storage.last_answer())
    }

    fn network_changed(&self) {
        self.api.reset_connections();
        self.storage.reset_connections();
    }

    async fn open_run(&self, run: &Snapshot<'_>, known: Option<&Remote>) -> SyncResult<Remote> {
        let project = self.project_of(run);
        let name = run_name(&run.meta.id);
        let bucket = self
            .upsert(json!({
                "name": name, "project": project, "entity": self.entity,
                "displayName": run.meta.name, "tags": run.meta.tags,
            }))
            .await?;
        let known = known.and_then(|k| Cursor::of(k).ok());
        let server_lines = bucket["historyLineCount"].as_u64().unwrap_or(0);
        let ended = matches!(bucket["state"].as_str(), Some("finished" | "failed"));
        let entity = bucket["project"]["entity"]["name"]
            .as_str()
            .unwrap_or(&self.entity)
            .to_string();
        let cur = Cursor {
            entity,
            project: bucket["project"]["name"]
                .as_str()
                .unwrap_or(&project)
                .to_string(),
            run: bucket["name"].as_str().unwrap_or(&name).to_string(),
            // The state is advanced only after the server's answer, so it is
            // never ahead of the server; the server may lag in what it reports.
            history: server_lines.max(known.as_ref().map_or(0, |k| k.history)),
            complete: ended || known.as_ref().is_some_and(|k| k.complete),
        };
        let mut remote = Remote {
            id: cur.run.clone(),
            data: String::new(),
        };
        cur.store(&mut remote);
        Ok(remote)
    }

    async fn sync_meta(&self, remote: &Remote, run: &Snapshot<'_>) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        let mut config = Map::new();
        for (k, v) in &run.view.config {
            config.insert(k.clone(), json!({"value": v}));
        }
        config.insert(
            "workflow".into(),
            json!({"value": Value::Array(run.view.workflow())}),
        );
        config.insert(
            "difflog".into(),
            json!({"value": {"run_id": run.meta.id, "host": run.meta.host, "version": run.meta.difflog_version}}),
        );
        let files = run_files(run, &config);
        self.upsert(json!({
            "name": cur.run, "project": cur.project, "entity": cur.entity,
            "displayName": run.meta.name, "tags": run.meta.tags,
            "config": Value::Object(config).to_string(),
        }))
        .await?;
        // The run files W&B's client uploads for its Overview and Files tabs
        // (fixed names: sending them again replaces them).
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let urls = self.create_run_files(&cur, &names).await?;
        let puts = files.iter().zip(&urls).map(|((_, bytes), u)| {
            self.storage
                .send_with(Method::PUT, &u.url, &u.headers, Body::Bytes(bytes, None))
        });
        futures_util::future::try_join_all(puts).await.map(|_| ())
    }

    async fn prepare_uploads(
        &self,
        remote: &Remote,
        media: &[&MediaEvent],
        calls: &[&CallView],
    ) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        let mut names: Vec<String> = media.iter().map(|m| image_path(m)).collect();
        names.extend(calls.iter().map(|c| table_file(c).path));
        let asked = futures_util::future::try_join_all(
            names
                .chunks(FILES_PER_REQUEST)
                .map(|chunk| self.create_run_files(&cur, chunk)),
        )
        .await?;
        let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
        // What an earlier, interrupted pass of this run left is stale.
        ahead.retain(|(run, _), _| *run != cur.run);
        for (name, u) in names.into_iter().zip(asked.into_iter().flatten()) {
            ahead.insert((cur.run.clone(), name), u);
        }
        Ok(())
    }

    async fn upload_media(
        &self,
        remote: &Remote,
        media: &MediaEvent,
        file: &Path,
    ) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        // Only the headers `uploadHeaders` lists go to storage: a signed URL
        // whose signature covers the content type refuses any other.
        let body = Body::File {
            path: file,
            content_type: None,
            digest: &media.digest,
            len: media.bytes,
        };
        self.put_file(&cur, &image_path(media), body).await
    }

    async fn upload_table(
        &self,
        remote: &Remote,
        _run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        let t = table_file(call);
        self.put_file(&cur, &t.path, Body::Bytes(&t.bytes, None))
            .await
    }

    async fn finish_calls(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        calls: &[&CallView],
    ) -> SyncResult<()> {
        // Calls are handed over in order: every earlier call is done.
        let last = calls.iter().map(|c| c.started.call).max().unwrap_or(0);
        self.flush(remote, run, &|c| c <= last).await
    }

    async fn log_metrics(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        _metrics: &[(MetricEvent, i64)],
    ) -> SyncResult<()> {
        // Metric lines sit between call lines in log order; by now every
        // finished call is uploaded.
        self.flush(remote, run, &|_| true).await
    }

    async fn set_status(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        _end_ms: Option<i64>,
    ) -> SyncResult<()> {
        let mut cur = Cursor::of(remote)?;
        if status == RemoteStatus::Running {
            if cur.complete {
                self.reopen(&mut cur, remote).await?;
            }
            return Ok(());
        }
        if !cur.complete {
            // W&B's client leaves the final summary as a run file too (the
            // Files tab); sent before `complete`, so a kill between the two
            // sends it again (same name: replaced, not doubled).
            if let Some(summary) = summary_line(&self.lines_for(run)) {
                let name = "wandb-summary.json".to_string();
                let urls = self
                    .create_run_files(&cur, std::slice::from_ref(&name))
                    .await?;
                for u in &urls {
                    self.storage
                        .send_with(
                            Method::PUT,
                            &u.url,
                            &u.headers,
                            Body::Bytes(summary.as_bytes(), None),
                        )
                        .await?;
                }
            }
        }
        let code = exitcode(status);
        self.stream_until_acked(
            &mut cur,
            &|cur| {
                (!cur.complete).then(|| {
                    json!({
                        "files": {}, "uploaded": [], "dropped": 0,
                        "complete": true, "exitcode": code,
                    })
                })
            },
            &|cur, _, state| cur.complete = matches!(state, "finished" | "failed"),
            &|cur| cur.complete = true,
            remote,
        )
        .await
    }

    async fn keep_alive(&self, remote: &Remote) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        if cur.complete {
            return Ok(());
        }
        let due = self
            .posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cur.run)
            .is_none_or(|t| t.elapsed() >= self.heartbeat);
        if !due {
            return Ok(());
        }
        // What W&B's client posts when it has had nothing to send for a
        // while; without it the server shows a quiet live run as crashed.
        // W&B's Go client (`core/internal/filestream`) sends an empty object.
        self.file_stream(&cur, &json!({})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 (5): a summary over W&B's line limit is not sent (as W&B's
    /// client drops it), and a normal one carries `_wandb.runtime`.
    #[test]
    fn the_summary_carries_the_runtime_and_an_oversize_one_is_dropped() {
        let line = |i: usize, runtime: f64| Line {
            value: Map::from_iter([
                (
                    format!("Result-Table/Pipeline-Call-{i}"),
                    json!("x".repeat(200)),
                ),
                ("_runtime".to_string(), json!(runtime)),
            ]),
            files: Vec::new(),
            call: Some(i as u32),
        };
        let small: Vec<Line> = (0..3).map(|i| line(i, 1.5 + i as f64)).collect();
        let s: Value = serde_json::from_str(&summary_line(&small).unwrap()).unwrap();
        assert_eq!(s["_wandb"]["runtime"], 3);
        let huge: Vec<Line> = (0..15_000).map(|i| line(i, 1.0)).collect();
        assert!(summary_line(&huge).is_none());
    }

    #[test]
    fn run_names_are_deterministic_and_safe_for_wandb() {
        assert_eq!(
            run_name("20261127T130715.123Z-0a1b2c"),
            "20261127t130715-123z-0a1b2c"
        );
        assert_eq!(run_name("a/b#c?d%e:f"), "a-b-c-d-e-f");
        assert_eq!(run_name(&"x".repeat(100)).len(), 64);
    }
}
