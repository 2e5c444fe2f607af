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
//! with the call number as step.
//!
//! Idempotence: artifacts are PUT to fixed paths, params resent with the same
//! values, tags overwritten, metrics resent with the record's own timestamp
//! (MLflow's metric key is (key, timestamp, step, value)), so a resend never
//! shows twice.

use super::{Remote, RemoteStatus, Snapshot, Target};
use crate::event::{Cell, MediaEvent, MetricEvent};
use crate::read::CallView;
use crate::sync::http::{percent_encode, Auth, Body, Http, SyncError, SyncResult};
use crate::sync::retry::{retry, Class, Decision, Policy};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// MLflow's limit on a param value.
const MAX_PARAM: usize = 6000;
/// MLflow's limit on a tag value.
const MAX_TAG: usize = 5000;

/// An MLflow tracking server.
pub struct Mlflow {
    http: Http,
    key: String,
    experiments: Mutex<HashMap<String, String>>,
}

impl Mlflow {
    /// A target at `base` (`http://host:port`), with `auth`.
    pub fn new(base: &str, auth: Auth) -> SyncResult<Mlflow> {
        Ok(Mlflow {
            http: Http::new(base, auth)?,
            key: format!("mlflow+{}", base.trim_end_matches('/')),
            experiments: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials as MLflow's own client reads them: `MLFLOW_TRACKING_TOKEN`,
    /// or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    pub fn auth_from_env() -> Auth {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(t) = var("MLFLOW_TRACKING_TOKEN") {
            return Auth::Bearer(t);
        }
        match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(u), Some(p)) => Auth::Basic(u, p),
            _ => Auth::None,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> SyncResult<Value> {
        let body = match body {
            Some(v) => Body::Json(v),
            None => Body::Empty,
        };
        self.http.send(method, path, body).await
    }

    async fn experiment_id(&self, name: &str) -> SyncResult<String> {
        if let Some(id) = self
            .experiments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(id.clone());
        }
        let id = match self.get_experiment(name).await? {
            Some(id) => id,
            None => {
                let created = self
                    .call(
                        Method::POST,
                        "/api/2.0/mlflow/experiments/create",
                        Some(&json!({"name": name})),
                    )
                    .await;
                match created {
                    Ok(v) => str_field(&v, "experiment_id")?,
                    // Another uploader created it first: use theirs.
                    Err(e) if e.message.contains("RESOURCE_ALREADY_EXISTS") => {
                        self.get_experiment(name).await?.ok_or_else(|| {
                            SyncError::transient(format!(
                                "experiment {name} exists but cannot be read"
                            ))
                        })?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.experiments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), id.clone());
        Ok(id)
    }

    async fn get_experiment(&self, name: &str) -> SyncResult<Option<String>> {
        let path = format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
            percent_encode(name)
        );
        match self.call(Method::GET, &path, None).await {
            Ok(v) => Ok(Some(str_field(&v["experiment"], "experiment_id")?)),
            Err(e)
                if e.class == Class::Permanent && e.message.contains("RESOURCE_DOES_NOT_EXIST") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn find_run(&self, experiment: &str, run_id: &str) -> SyncResult<Option<Value>> {
        let body = json!({
            "experiment_ids": [experiment],
            "filter": format!("tags.`difflog.run_id` = '{}'", run_id.replace('\'', "")),
            "max_results": 2,
            "run_view_type": "ALL",
        });
        let v = self
            .call(Method::POST, "/api/2.0/mlflow/runs/search", Some(&body))
            .await?;
        Ok(v["runs"].as_array().and_then(|r| r.first()).cloned())
    }

    fn remote_from_run(run: &Value) -> SyncResult<Remote> {
        let info = &run["info"];
        let id = str_field(info, "run_id")?;
        let exp = str_field(info, "experiment_id")?;
        let uri = str_field(info, "artifact_uri")?;
        let prefix = match uri.strip_prefix("mlflow-artifacts:") {
            Some(rest) => {
                // mlflow-artifacts:/1/<run>/artifacts or mlflow-artifacts://host/1/…
                let rest = rest.trim_start_matches('/');
                let rest = if uri.starts_with("mlflow-artifacts://") {
                    rest.split_once('/').map(|(_, r)| r).unwrap_or(rest)
                } else {
                    rest
                };
                rest.trim_end_matches('/').to_string()
            }
            None => {
                return Err(SyncError::permanent(format!(
                    "MLflow run {id} stores artifacts at {uri}, which difflog-sync cannot reach: \
                     start the server with artifact proxying (mlflow server --artifacts-destination …)"
                )))
            }
        };
        Ok(Remote {
            id: id.clone(),
            data: json!({"run_id": id, "experiment_id": exp, "artifact_prefix": prefix})
                .to_string(),
        })
    }

    fn prefix(remote: &Remote) -> SyncResult<String> {
        let v: Value = serde_json::from_str(&remote.data)
            .map_err(|e| SyncError::permanent(format!("corrupt remote data in sync state: {e}")))?;
        str_field(&v, "artifact_prefix")
    }

    async fn put_artifact(&self, remote: &Remote, path: &str, body: Body<'_>) -> SyncResult<()> {
        let url = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
            Self::prefix(remote)?,
            path.split('/')
                .map(percent_encode)
                .collect::<Vec<_>>()
                .join("/")
        );
        self.http.send_ack(Method::PUT, &url, body).await
    }

    async fn put_json(&self, remote: &Remote, path: &str, v: &Value) -> SyncResult<()> {
        let bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
        self.put_artifact(remote, path, Body::Bytes(&bytes, Some("application/json")))
            .await
    }

    async fn log_batch(
        &self,
        remote: &Remote,
        metrics: Vec<Value>,
        params: Vec<Value>,
        tags: Vec<Value>,
    ) -> SyncResult<()> {
        // MLflow's limits per request: 1000 metrics, 100 params, 100 tags.
        // Fill each request up to them: every request costs a round trip.
        let (mut m, mut p, mut t) = (metrics.into_iter(), params.into_iter(), tags.into_iter());
        loop {
            let mc: Vec<Value> = m.by_ref().take(1000).collect();
            let pc: Vec<Value> = p.by_ref().take(100).collect();
            let tc: Vec<Value> = t.by_ref().take(100).collect();
            if mc.is_empty() && pc.is_empty() && tc.is_empty() {
                return Ok(());
            }
            let b = json!({"run_id": remote.id, "metrics": mc, "params": pc, "tags": tc});
            self.http
                .send_ack(
                    Method::POST,
                    "/api/2.0/mlflow/runs/log-batch",
                    Body::Json(&b),
                )
                .await?;
        }
    }
}

/// A call's table as MLflow table JSON (what `mlflow.log_table` writes):
/// image cells point at the uploaded `images/<sha256>.png`.
fn table_json(call: &CallView) -> Value {
    let columns = &call.started.columns;
    let mut data = Vec::new();
    for row in &call.rows {
        let mut cells = Vec::new();
        for col in columns {
            let cell = row.cells.iter().find(|c| c.column() == col);
            cells.push(match cell {
                Some(Cell::Text { value, .. }) => json!(value),
                Some(Cell::Number { value, .. }) => Value::Number(value.clone()),
                Some(Cell::Image { digest, .. }) => {
                    let p = format!("images/{digest}.png");
                    json!({"type": "image", "filepath": p, "compressed_filepath": p})
                }
                Some(Cell::Null { .. }) | None => Value::Null,
            });
        }
        data.push(Value::Array(cells));
    }
    json!({"columns": columns, "data": data})
}

fn str_field(v: &Value, k: &str) -> SyncResult<String> {
    match &v[k] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(SyncError::permanent(format!(
            "unexpected MLflow response: no {k} in {v}"
        ))),
    }
}

/// MLflow keys allow alphanumerics, `_ - . / ` and spaces, up to 250 characters.
pub fn sanitize_key(k: &str) -> String {
    let s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.chars().take(250).collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Flattens nested objects into `a.b.c` keys; other values become JSON text.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
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
    }

    async fn open_run(&self, run: &Snapshot<'_>, known: Option<&Remote>) -> SyncResult<Remote> {
        if let Some(k) = known {
            return Ok(k.clone());
        }
        let exp = self.experiment_id(&run.meta.project).await?;
        if let Some(found) = self.find_run(&exp, &run.meta.id).await? {
            return Self::remote_from_run(&found);
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
                        if let Some(found) = self.find_run(exp, &run.meta.id).await? {
                            return Ok(found);
                        }
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
        let mut params = Vec::new();
        let mut flat = Vec::new();
        flatten("", &Value::Object(run.first_config.clone()), &mut flat);
        for p in run.view.pipelines.values() {
            let pre = format!("pipeline.{}", p.pipeline);
            flat.push((format!("{pre}.class"), p.class.clone()));
            flat.push((format!("{pre}.model_id"), p.model_id.clone()));
            flat.push((format!("{pre}.dtype"), p.dtype.clone()));
            flat.push((format!("{pre}.device"), p.device.clone()));
            if let Some(r) = &p.revision {
                flat.push((format!("{pre}.revision"), r.clone()));
            }
            if let Some(d) = &p.weights_digest {
                flat.push((format!("{pre}.weights_digest"), d.clone()));
            }
            if let Some(name) = p.scheduler.get("name").and_then(|n| n.as_str()) {
                flat.push((format!("{pre}.scheduler"), name.to_string()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (k, v) in flat {
            let key = sanitize_key(&k);
            // Long values live in difflog/config.json only.
            if v.chars().count() <= MAX_PARAM && !key.is_empty() && seen.insert(key.clone()) {
                params.push(json!({"key": key, "value": v}));
            }
        }
        let mut tags = vec![
            json!({"key": "difflog.run_id", "value": run.meta.id}),
            json!({"key": "difflog.host", "value": run.meta.host}),
            json!({"key": "difflog.version", "value": run.meta.difflog_version}),
        ];
        if !run.meta.tags.is_empty() {
            tags.push(json!({"key": "difflog.tags", "value": truncate(&run.meta.tags.join(", "), MAX_TAG)}));
        }
        let pipelines: Vec<Value> = run
            .view
            .pipelines
            .values()
            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
            .collect();
        let config = Value::Object(run.view.config.clone());
        let workflow = Value::Array(run.view.workflow());
        let pipelines = Value::Array(pipelines);
        let meta = serde_json::to_value(run.meta).unwrap_or(Value::Null);
        // Independent requests: one round trip for all of them.
        futures_util::try_join!(
            self.log_batch(remote, Vec::new(), params, tags),
            self.put_json(remote, "difflog/config.json", &config),
            self.put_json(remote, "difflog/workflow.json", &workflow),
            self.put_json(remote, "difflog/pipelines.json", &pipelines),
            self.put_json(remote, "difflog/run.json", &meta),
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

    async fn upload_table(
        &self,
        remote: &Remote,
        _run: &Snapshot<'_>,
        call: &CallView,
    ) -> SyncResult<()> {
        let path = format!("Result-Table/{}.json", call.started.stage);
        self.put_json(remote, &path, &table_json(call)).await
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
        let logged: Vec<Value> = run
            .view
            .calls
            .values()
            .filter(|c| c.finished.is_some() && c.started.call <= last)
            .map(|c| json!({"path": format!("Result-Table/{}.json", c.started.stage), "type": "table"}))
            .collect();
        let mut tags = vec![
            json!({"key": "mlflow.loggedArtifacts", "value": Value::Array(logged).to_string()}),
        ];
        let mut metrics = Vec::new();
        for call in calls {
            let Some(f) = &call.finished else { continue };
            let ts =
                crate::format::rfc3339_ms(call.finished_ts.as_deref().unwrap_or(&run.meta.created));
            for (phase, v) in &f.timings_ms {
                if let Some(x) = v.as_f64() {
                    metrics.push(json!({
                        "key": sanitize_key(&format!("timings/{phase}_ms")),
                        "value": x, "timestamp": ts, "step": call.started.call,
                    }));
                }
            }
            if let Some(e) = &f.error {
                tags.push(json!({"key": format!("difflog.{}.error", call.started.stage), "value": truncate(e, MAX_TAG)}));
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
            .map(|(m, ts)| json!({"key": sanitize_key(&m.name), "value": m.value, "timestamp": ts, "step": m.step.unwrap_or(0)}))
            .collect();
        self.log_batch(remote, m, Vec::new(), Vec::new()).await
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
            .await
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
        assert_eq!(truncate("ééé", 5), "é...");
    }
}
