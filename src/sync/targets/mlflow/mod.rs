//! A self-hosted MLflow tracking server (REST API 2.0) as a sync target.
//!
//! Mapping: experiment = project (created if missing, surviving the create
//! race); one MLflow run per difflog run, tagged `difflog.run_id` so a lost
//! state finds it again; config flattened into params (first values only:
//! MLflow params are immutable and limited to 6000 characters — the full
//! config goes to `difflog/config.json`); images uploaded once each to
//! `images/<sha256>.png` through the proxied artifact endpoint (files up to
//! 8 MB read whole, larger ones streamed from disk); each call's table as MLflow table JSON at
//! `Result-Table/Pipeline-Call-N.json` (listed in `mlflow.loggedArtifacts`
//! like `mlflow.log_table` does); timings as metrics `timings/<phase>_ms`
//! with the call number as step. Artifacts go where the run's
//! `artifact_uri` says, as MLflow's client sends them: through the server
//! (`mlflow-artifacts:`) or straight to object storage (`s3://`, `gs://`,
//! `wasbs://`, `abfss://`, a reachable `file://`; see [`objects`]).
//!
//! Idempotence: artifacts are PUT to fixed paths, params resent with the same
//! values, tags overwritten, metrics resent with the record's own timestamp
//! (MLflow's metric key is (key, timestamp, step, value)), so a resend never
//! shows twice.

mod api;
pub mod objects;
mod payload;
mod readback;

use super::{Remote, RemoteData, RemoteStatus, Snapshot, Target};
use crate::event::{Cell, MediaEvent, MetricEvent};
use crate::format::names;
use crate::read::CallView;
use crate::sync::error::{SyncError, SyncResult};
use crate::sync::http::{percent_encode, Auth, Body, Http};
use crate::sync::retry::{retry, Class, Decision, Policy};
pub use payload::sanitize_key;
use payload::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// MLflow's limit on a param value.
const MAX_PARAM: usize = 6000;
/// MLflow's limit on a tag value.
const MAX_TAG: usize = 5000;

/// Where a run stands at MLflow (kept as the state's remote data).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct RunAt {
    /// MLflow's run id.
    pub(super) run_id: String,
    /// The experiment it is in.
    pub(super) experiment_id: String,
    /// Where its artifacts go under `mlflow-artifacts:` (proxied runs).
    pub(super) artifact_prefix: String,
    /// The run's artifact URI when it names a store written directly
    /// (`s3://…`, `gs://…`, `wasbs://…`, `file://…`); absent for proxied runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) artifact_uri: Option<String>,
    /// The status difflog-sync last set (`RUNNING`, `KILLED`, …): another
    /// status on the server was set by someone else. Absent in state from
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sent_status: Option<String>,
}

impl RemoteData for RunAt {
    const TARGET: &'static str = "MLflow";
}

/// An MLflow tracking server.
pub struct Mlflow {
    http: Http,
    /// Artifact stores written directly (runs whose artifact URI is a bucket).
    stores: objects::Stores,
    key: String,
    experiments: Mutex<HashMap<String, String>>,
}

impl Target for Mlflow {
    fn key(&self) -> &str {
        &self.key
    }

    fn last_answer(&self) -> Option<std::time::SystemTime> {
        self.http.last_answer()
    }

    fn network_changed(&self) {
        self.http.reset_connections();
        self.stores.network_changed();
    }

    async fn open_run(&self, run: &Snapshot<'_>, known: Option<&Remote>) -> SyncResult<Remote> {
        // Deleted on the server since: reported, or made again when asked.
        let deleted = |id: &str| {
            SyncError::remote_deleted(format!(
                "the MLflow run {id} of difflog run {} was deleted on the server; \
                 restore it there, or upload with --recreate-deleted to upload the run again as a new MLflow run",
                run.meta.id
            ))
        };
        if let Some(k) = known {
            match self.get_run(&k.id).await? {
                Some(now) if !api::is_deleted(&now) => {
                    let status = now["info"]["status"].as_str().unwrap_or("");
                    let ended = matches!(status, "FINISHED" | "FAILED" | "KILLED");
                    // Ended on the server by someone else (not the status
                    // we set): reported, not silently re-opened.
                    if let Some(sent) = RunAt::of(k)?.sent_status.filter(|s| ended && s != status) {
                        if !crate::sync::reopen_ended() {
                            return Err(SyncError::remote_ended(format!(
                                "the MLflow run {} of difflog run {} was ended on the server ({status}; difflog-sync had set {sent}); \
                                 nothing more is uploaded to it unless you upload with --reopen-ended",
                                k.id, run.meta.id
                            )));
                        }
                    }
                    return Ok(k.clone());
                }
                _ if !crate::sync::recreate_deleted() => return Err(deleted(&k.id)),
                _ => {}
            }
        }
        let exp = self.experiment_id(&run.meta.project).await?;
        if let Some(found) = self.find_run(&exp, &run.meta.id).await? {
            if !api::is_deleted(&found) {
                return Self::remote_from_run(&found);
            }
            if !crate::sync::recreate_deleted() {
                let id = found["info"]["run_id"].as_str().unwrap_or("?");
                return Err(deleted(id));
            }
        }
        if let Some(gate) = run.create_gate {
            let wait = gate.wait_before_create();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                if let Some(found) = self.find_active(&exp, &run.meta.id).await? {
                    return Self::remote_from_run(&found);
                }
            }
        }
        let start = crate::format::rfc3339_ms(&run.meta.created);
        let body = json!({
            "experiment_id": exp,
            "run_name": run.meta.name,
            "start_time": start,
            "tags": [
                {"key": "difflog.run_id", "value": run.meta.id},
                {"key": "mlflow.runName", "value": run.meta.name},
            ],
        });
        // A create whose answer was lost may still have happened: look again
        // before every retry instead of retrying blindly.
        let policy = Policy {
            base: std::time::Duration::from_millis(300),
            max: std::time::Duration::from_millis(2400),
            attempts: 4,
        };
        let created = retry(
            policy,
            |attempt| {
                let (exp, body) = (&exp, &body);
                async move {
                    if attempt > 0 {
                        if let Some(found) = self.find_active(exp, &run.meta.id).await? {
                            return Ok(found);
                        }
                    }
                    if let Some(gate) = run.create_gate {
                        gate.creating()?;
                    }
                    let v = self
                        .http
                        .send_once(
                            Method::POST,
                            "/api/2.0/mlflow/runs/create",
                            &[],
                            &Body::Json(body),
                        )
                        .await?;
                    Ok(v["run"].clone())
                }
            },
            |e: &SyncError| match e.class {
                Class::Transient => Decision::Retry(e.retry_after),
                _ => Decision::Stop,
            },
        )
        .await?;
        Self::remote_from_run(&created)
    }

    async fn sync_meta(&self, remote: &Remote, run: &Snapshot<'_>) -> SyncResult<()> {
        let params: Vec<Value> = run_params(run)
            .into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let tags: Vec<Value> = run_tags(run)
            .into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let files = run_files(run);
        let puts = files.iter().map(|(path, v)| self.put_json(remote, path, v));
        // Independent requests: one round trip for all of them.
        futures_util::try_join!(
            self.log_batch(remote, Vec::new(), params, tags),
            futures_util::future::try_join_all(puts),
        )
        .map(|_| ())
    }

    async fn upload_media(
        &self,
        remote: &Remote,
        media: &MediaEvent,
        file: &Path,
    ) -> SyncResult<()> {
        let path = format!("images/{}.{}", media.digest, media.format);
        let body = Body::File {
            path: file,
            content_type: Some("image/png"),
            digest: &media.digest,
            len: media.bytes,
        };
        self.put_artifact(remote, &path, body).await
    }

    /// An MLflow table names its images by path: it may come first (its
    /// image cells show once the images arrive).
    fn tables_before_media(&self) -> bool {
        true
    }

    async fn upload_table(
        &self,
        remote: &Remote,
        _run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        self.put_json(remote, &table_path(call), &table_json(call))
            .await
    }

    async fn finish_calls(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        calls: &[&CallView],
    ) -> SyncResult<()> {
        let Some(last) = calls.iter().map(|c| c.started.call).max() else {
            return Ok(());
        };
        // One log-batch for all their timings and tags: MLflow answers
        // it with a small body, and each such answer costs a round trip.
        let mut tags = vec![json!({"key": LOGGED_ARTIFACTS, "value": logged_artifacts(run, last)})];
        let mut metrics = Vec::new();
        for call in calls {
            for p in call_timings(run, call) {
                metrics.push(p.json());
            }
            if let Some((k, v)) = call_error_tag(call) {
                tags.push(json!({"key": k, "value": v}));
            }
        }
        self.log_batch(remote, metrics, Vec::new(), tags).await
    }

    async fn log_metrics(
        &self,
        remote: &mut Remote,
        _run: &Snapshot<'_>,
        metrics: &[(MetricEvent, i64)],
    ) -> SyncResult<()> {
        let m: Vec<Value> = metrics
            .iter()
            .map(|(m, ts)| Point::of(m, *ts).json())
            .collect();
        self.log_batch(remote, m, Vec::new(), Vec::new()).await
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
    ) -> SyncResult<Vec<crate::sync::targets::differences::Difference>> {
        self.compare(remote, run, status, concurrency).await
    }

    async fn set_status(
        &self,
        remote: &mut Remote,
        _run: &Snapshot<'_>,
        status: RemoteStatus,
        end_ms: Option<i64>,
    ) -> SyncResult<()> {
        let mut body = json!({"run_id": remote.id, "status": status.as_str()});
        if let Some(e) = end_ms {
            body["end_time"] = json!(e);
        }
        self.http
            .send_ack(
                Method::POST,
                "/api/2.0/mlflow/runs/update",
                Body::Json(&body),
            )
            .await?;
        // Kept, so that a status someone else sets is told from ours.
        let mut at = RunAt::of(remote)?;
        at.sent_status = Some(status.as_str().to_string());
        at.store(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_fit_mlflow() {
        assert_eq!(sanitize_key("a:b c/d"), "a_b c/d");
        assert_eq!(sanitize_key(&"k".repeat(300)).len(), 250);
        let mut out = Vec::new();
        flatten("", &json!({"a": {"b": 1, "c": "x"}, "d": [1, 2]}), &mut out);
        assert_eq!(
            out,
            vec![
                ("a.b".into(), "1".into()),
                ("a.c".into(), "x".into()),
                ("d".into(), "[1,2]".into())
            ]
        );
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
        // The table list stays JSON within a tag value, however many calls.
        let few = table_list((1..=2).map(|n| format!("T/{n}.json")));
        assert_eq!(
            few,
            r#"[{"path":"T/1.json","type":"table"},{"path":"T/2.json","type":"table"}]"#
        );
        let many = table_list((1..=500).map(|n| format!("Result-Table/Pipeline-Call-{n}.json")));
        assert!(many.len() <= MAX_TAG, "{}", many.len());
        let v: Value = serde_json::from_str(&many).unwrap();
        let listed = v.as_array().unwrap();
        assert!(listed.len() > 80, "{}", listed.len());
        assert_eq!(listed[0]["path"], "Result-Table/Pipeline-Call-1.json");
        assert_eq!(crate::sync::targets::truncate("ééé", 5), "é...");
    }
}
