//! Weights & Biases (W&B cloud, or a self-hosted W&B Server) as a sync target.
//!
//! The seed system is W&B's diffusers autolog, so a difflog run shows in W&B
//! the way an autolog run does — uploaded from the run directory, after the
//! fact, by the protocol W&B's own client speaks:
//!
//! - `POST {base}/graphql`, HTTP Basic `api:<key>`. `UpsertBucket` creates or
//!   finds the run (its name is derived from the difflog run id, so a lost
//!   state never makes a second run; a run deleted in W&B is reported, or
//!   made again as `<name>-2` when asked), sets the display name and tags
//!   once (when it makes the run: edits in W&B stay) and the config
//!   (`{"key": {"value": …}}`, with autolog's `workflow` list); its answer's
//!   `historyLineCount` says where the history continues, and its `state`
//!   and `stopped` whether someone else ended or stopped the run (reported
//!   as `remote_ended`, not re-opened unless asked).
//! - Files: `CreateRunFiles` hands out an upload URL (and headers) per file —
//!   asked for all files of a batch of calls at once, as W&B's client does,
//!   and again for one file whose URL storage refuses (an expired signature)
//!   —, the file is `PUT` there — without the API key, since the URL may
//!   point at a storage service — and later listed in the file stream's
//!   `uploaded`.
//!   Images go to `media/images/<sha256>.png`, each call's table to
//!   `media/table/Result-Table/Pipeline-Call-N_<sha256[..20]>.table.json`.
//! - Each call's table is also a `run_table` artifact, as W&B's client logs
//!   every table (`artifact.rs`): `CreateArtifact` (found again by its
//!   digest when committed already), its manifest, `CreateArtifactFiles`,
//!   the uploads, the manifest's upload, `CommitArtifact`; the table's
//!   history value names it in `artifact_path`.
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

mod api;
mod artifact;
mod cursor;
mod multipart;
mod payload;
mod readback;
mod videos;

use super::differences::Difference;
use super::{Remote, RemoteData, RemoteStatus, Snapshot, Target};
use crate::event::{Cell, Event, MediaEvent, MetricEvent};
use crate::format::rfc3339_ms;
use crate::format::sha256_hex;
use crate::read::CallView;
use crate::sync::clip;
use crate::sync::error::{SyncError, SyncResult};
use crate::sync::http::{percent_encode, Auth, Body, Http};
use crate::sync::retry::{retry, Backoff, Decision, Policy};
use cursor::Cursor;
pub use payload::run_name;
use payload::*;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use videos::Gifs;

/// W&B's cloud API, used when `WANDB_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";
/// History lines sent per file-stream request at most.
const LINES_PER_REQUEST: usize = 200;
/// New names tried for a run whose W&B names were all deleted.
const MAX_RECREATED: usize = 20;

const UPSERT_BUCKET: &str = "mutation UpsertBucket($id: String, $name: String, $project: String, \
$entity: String, $displayName: String, $notes: String, $state: String, $tags: [String!], \
$config: JSONString) { upsertBucket(input: {id: $id, name: $name, modelName: $project, \
entityName: $entity, displayName: $displayName, notes: $notes, state: $state, tags: $tags, \
config: $config}) { bucket { id name displayName state stopped historyLineCount \
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
    /// Which artifact files go in parts, and their size.
    multipart: multipart::Sizes,
    /// The GIFs W&B is sent for the runs' videos.
    gifs: videos::Gifs,
}

/// A recorded media file's bytes (`file`, never through a link; at most
/// its recorded size read), checked against its record: an image for a
/// table artifact, a video to make its GIF of.
fn read_recorded(file: &Path, m: &MediaEvent) -> SyncResult<Vec<u8>> {
    let bytes = crate::read::read_regular(file, m.bytes)
        .map_err(|e| SyncError::permanent(format!("{}: {e}", file.display())))?;
    if bytes.len() as u64 != m.bytes || sha256_hex(&bytes) != m.digest {
        return Err(SyncError::permanent(format!(
            "{}: the file differs from its record (size or SHA-256); not uploaded",
            file.display()
        )));
    }
    Ok(bytes)
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

/// The W&B state difflog-sync's own end leaves a run in: `None` while the
/// run is being recorded (difflog-sync ends no live run).
fn own_end_state(run: &Snapshot<'_>) -> Option<&'static str> {
    use crate::read::RunState;
    match crate::read::run_state(run.dir, run.records) {
        RunState::Live => None,
        RunState::Finished => Some("finished"),
        // Exit code 1 (see `exitcode`): W&B's `failed`.
        RunState::Failed | RunState::Crashed => Some("failed"),
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
        let base = run_name(&run.meta.id);
        let known = known.and_then(|k| Cursor::of(k).ok());
        let mut name = known
            .as_ref()
            .map_or_else(|| base.clone(), |k| k.run.clone());
        // The display name and tags go with the upsert that makes the run
        // (no state yet) and never again: edited in W&B, they stay edited.
        let mut fresh = known.is_none();
        let mut tries = 0;
        let bucket = loop {
            let mut vars = json!({"name": name, "project": project, "entity": self.entity});
            if fresh {
                vars["displayName"] = json!(run.meta.name);
                vars["tags"] = json!(run.meta.tags);
            }
            match self.upsert(vars).await {
                Ok(b) => break b,
                Err(e) if api::deleted_on_server(&e) => {
                    if !crate::sync::recreate_deleted() {
                        return Err(SyncError::remote_deleted(format!(
                            "the W&B run {}/{project}/{name} of difflog run {} was deleted on the server \
                             (W&B never gives its name again); upload with --recreate-deleted to upload \
                             the run again as a new W&B run",
                            self.entity, run.meta.id
                        )));
                    }
                    tries += 1;
                    if tries > MAX_RECREATED {
                        return Err(SyncError::permanent(format!(
                            "W&B refuses every name tried for difflog run {} ({base}-2 … {name}): all deleted",
                            run.meta.id
                        )));
                    }
                    name = recreated_name(&base, tries + 1);
                    fresh = true;
                }
                Err(e) => return Err(e),
            }
        };
        let server_lines = bucket["historyLineCount"].as_u64().unwrap_or(0);
        let ended = matches!(bucket["state"].as_str(), Some("finished" | "failed"));
        let entity = bucket["project"]["entity"]["name"]
            .as_str()
            .unwrap_or(&self.entity)
            .to_string();
        let run_now = bucket["name"].as_str().unwrap_or(&name).to_string();
        // What the state knew is about this W&B run only (a re-created run
        // starts from nothing).
        let known = known.filter(|k| k.run == run_now);
        let mut stop_accepted = known.as_ref().is_some_and(|k| k.stop_accepted);
        if let Some(k) = known.as_ref().filter(|k| !k.complete) {
            let state = bucket["state"].as_str().unwrap_or("");
            // Ended there by someone else: an end difflog-sync had not
            // sent (nor one it may have sent whose answer was lost: the
            // run ended here, with the state that end gives).
            let ended = matches!(state, "finished" | "failed" | "killed")
                && own_end_state(run) != Some(state);
            let stopped = bucket["stopped"] == true && !k.stop_accepted;
            if ended || stopped {
                if !crate::sync::reopen_ended() {
                    let how = if stopped {
                        "stopped from W&B's UI".to_string()
                    } else {
                        format!("ended on the server ({state})")
                    };
                    return Err(SyncError::remote_ended(format!(
                        "the W&B run {}/{project}/{run_now} of difflog run {} was {how} while difflog-sync had not ended it; \
                         nothing more is uploaded to it unless you upload with --reopen-ended",
                        self.entity, run.meta.id
                    )));
                }
                stop_accepted |= stopped;
            }
        }
        let cur = Cursor {
            entity,
            project: bucket["project"]["name"]
                .as_str()
                .unwrap_or(&project)
                .to_string(),
            run: run_now,
            // The state is advanced only after the server's answer, so it is
            // never ahead of the server; the server may lag in what it reports.
            history: server_lines.max(known.as_ref().map_or(0, |k| k.history)),
            complete: ended || known.as_ref().is_some_and(|k| k.complete),
            stop_accepted,
            gifs: known.map(|k| k.gifs).unwrap_or_default(),
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
        let config = run_config(run);
        let files = run_files(run, &config);
        // Config only: the name and tags were set when the run was made.
        self.upsert(json!({
            "name": cur.run, "project": cur.project, "entity": cur.entity,
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
        run: &Snapshot<'_>,
        media: &[&MediaEvent],
        calls: &[&CallView],
    ) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        // The videos' GIFs first: their names and digests are in the
        // tables (a call's own media may have been sent by an earlier pass).
        let mut videos = media.to_vec();
        videos.extend(calls.iter().flat_map(|c| c.media.iter()));
        self.gifs.derive(run.dir, &videos).await?;
        let mut names: Vec<String> = media.iter().map(|m| media_path(m, &self.gifs)).collect();
        names.extend(calls.iter().map(|c| table_file(c, &self.gifs).path));
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
        let path = media_path(media, &self.gifs);
        // A video goes as its GIF (made when it was not kept).
        if let Some(gif) = self.gifs.bytes(file, media).await? {
            return self.put_file(&cur, &path, Body::Bytes(&gif, None)).await;
        }
        // Only the headers `uploadHeaders` lists go to storage: a signed URL
        // whose signature covers the content type refuses any other.
        let body = Body::File {
            path: file,
            content_type: None,
            digest: &media.digest,
            len: media.bytes,
        };
        self.put_file(&cur, &path, body).await
    }

    async fn upload_table(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        let cur = Cursor::of(remote)?;
        let media: Vec<&MediaEvent> = call.media.iter().collect();
        self.gifs.derive(run.dir, &media).await?;
        let t = table_file(call, &self.gifs);
        self.put_file(&cur, &t.path, Body::Bytes(&t.bytes, None))
            .await?;
        // Then the table as W&B's client also logs it: a run_table artifact.
        self.upload_table_artifact(&cur, run, call).await
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
        // W&B's client leaves the final summary as a run file too (the
        // Files tab); sent before `complete`, so a kill between the two
        // sends it again (same name: replaced, not doubled), and whenever
        // the end is sent (a repair sends the end of a completed run again).
        if let Some(summary) = summary_line(&self.lines_for(run).await?) {
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

    async fn find_remote(
        &self,
        run: &Snapshot<'_>,
        known: Option<&Remote>,
    ) -> SyncResult<Option<Remote>> {
        self.find(run, known).await
    }

    async fn read_back(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        concurrency: usize,
    ) -> SyncResult<Vec<Difference>> {
        self.compare(remote, run, status, concurrency).await
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
