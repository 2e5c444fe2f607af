//! The real MLflow server the sync tests talk to, and reads of what it holds.
//! `scripts/test` starts the server and sets `DIFFLOG_TEST_MLFLOW_URL`; a test
//! that needs it fails (never skips) when it is not there.
#![allow(dead_code)]

use serde_json::{json, Value};

/// The server's base URL; panics with instructions when there is none.
pub fn url() -> String {
    let url = std::env::var("DIFFLOG_TEST_MLFLOW_URL").unwrap_or_else(|_| {
        panic!("this test needs a real MLflow server: run scripts/test, or start one (scripts/mlflow-server DIR) and set DIFFLOG_TEST_MLFLOW_URL")
    });
    let health = ureq::get(&format!("{url}/health")).call();
    assert!(
        health.is_ok(),
        "the MLflow server at {url} does not answer: {health:?}"
    );
    url
}

/// `--to` for the server.
pub fn target() -> String {
    format!("mlflow+{}", url())
}

fn post(path: &str, body: Value) -> Value {
    post_at(&url(), path, body)
}

/// Deletes MLflow run `run_id` on the server (to its trash), as a user
/// would in MLflow's UI.
pub fn delete_run(run_id: &str) {
    post("/api/2.0/mlflow/runs/delete", json!({"run_id": run_id}));
}

/// Sets a tag on MLflow run `run_id`, as a user would in MLflow's UI (the
/// description is the tag `mlflow.note.content`).
pub fn set_tag(run_id: &str, key: &str, value: &str) {
    post(
        "/api/2.0/mlflow/runs/set-tag",
        json!({"run_id": run_id, "key": key, "value": value}),
    );
}

/// Ends MLflow run `run_id` with `status` (FINISHED, FAILED, KILLED), as
/// another client would (`MlflowClient().set_terminated`).
pub fn end_run(run_id: &str, status: &str) {
    post(
        "/api/2.0/mlflow/runs/update",
        json!({"run_id": run_id, "status": status}),
    );
}

/// Renames MLflow run `run_id`, as a user would in MLflow's UI.
pub fn rename_run(run_id: &str, name: &str) {
    post(
        "/api/2.0/mlflow/runs/update",
        json!({"run_id": run_id, "run_name": name}),
    );
}

fn post_at(base: &str, path: &str, body: Value) -> Value {
    ureq::post(&format!("{base}{path}"))
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .into_json()
        .unwrap()
}

fn get(path: &str) -> Option<Value> {
    get_at(&url(), path)
}

fn get_at(base: &str, path: &str) -> Option<Value> {
    ureq::get(&format!("{base}{path}"))
        .call()
        .ok()?
        .into_json()
        .ok()
}

/// The experiment id of `name`, if it exists.
pub fn experiment(name: &str) -> Option<String> {
    experiment_at(&url(), name)
}

/// [`experiment`] on the server at `base`.
pub fn experiment_at(base: &str, name: &str) -> Option<String> {
    get_at(
        base,
        &format!("/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"),
    )
    .and_then(|v| v["experiment"]["experiment_id"].as_str().map(String::from))
}

/// Every run of experiment `name` (all lifecycle stages).
pub fn runs(name: &str) -> Vec<Value> {
    runs_at(&url(), name)
}

/// [`runs`] on the server at `base`.
pub fn runs_at(base: &str, name: &str) -> Vec<Value> {
    let Some(exp) = experiment_at(base, name) else {
        return Vec::new();
    };
    let v = post_at(
        base,
        "/api/2.0/mlflow/runs/search",
        json!({"experiment_ids": [exp], "max_results": 1000, "run_view_type": "ALL"}),
    );
    v["runs"].as_array().cloned().unwrap_or_default()
}

/// The one run of experiment `name` tagged with difflog run id `id`.
pub fn run_for(name: &str, id: &str) -> Value {
    let found: Vec<Value> = runs(name)
        .into_iter()
        .filter(|r| tag(r, "difflog.run_id").as_deref() == Some(id))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one MLflow run for {id}, found {}",
        found.len()
    );
    found[0].clone()
}

/// A tag's value.
pub fn tag(run: &Value, key: &str) -> Option<String> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str().map(String::from))
}

/// A param's value.
pub fn param(run: &Value, key: &str) -> Option<String> {
    run["data"]["params"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str().map(String::from))
}

/// The full history of one metric.
pub fn history(run_id: &str, key: &str) -> Vec<Value> {
    history_at(&url(), run_id, key)
}

/// [`history`] on the server at `base`.
pub fn history_at(base: &str, run_id: &str, key: &str) -> Vec<Value> {
    get_at(
        base,
        &format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={}",
            key.replace('/', "%2F")
        ),
    )
    .and_then(|v| v["metrics"].as_array().cloned())
    .unwrap_or_default()
}

fn prefix(run: &Value) -> String {
    run["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:")
        .trim_start_matches('/')
        .to_string()
}

/// Every artifact path of a run, recursively (relative to its root).
pub fn artifacts(run: &Value) -> Vec<(String, u64)> {
    let root = prefix(run);
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let p = if dir.is_empty() {
            root.clone()
        } else {
            format!("{root}/{dir}")
        };
        let v =
            get(&format!("/api/2.0/mlflow-artifacts/artifacts?path={p}")).unwrap_or(Value::Null);
        for f in v["files"].as_array().cloned().unwrap_or_default() {
            let name = f["path"].as_str().unwrap().to_string();
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if f["is_dir"] == true {
                stack.push(rel);
            } else {
                out.push((rel, f["file_size"].as_u64().unwrap_or(0)));
            }
        }
    }
    out.sort();
    out
}

/// The bytes of one artifact.
pub fn artifact(run: &Value, path: &str) -> Vec<u8> {
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}",
        url(),
        prefix(run)
    );
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut ureq::get(&url).call().unwrap().into_reader(), &mut buf)
        .unwrap();
    buf
}

/// Writes `bytes` to a run's artifact `path` through the server, as
/// another client would (`mlflow.log_artifact` over the proxied API).
pub fn put_artifact(run: &Value, path: &str, bytes: &[u8]) {
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}",
        url(),
        prefix(run)
    );
    ureq::put(&url)
        .send_bytes(bytes)
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
}

/// Deletes a run's artifact `path` through the server, as a user of the
/// proxied artifact API can.
pub fn delete_artifact(run: &Value, path: &str) {
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}",
        url(),
        prefix(run)
    );
    ureq::delete(&url)
        .call()
        .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
}

/// Logs one metric point to MLflow run `run_id`, as another client would.
pub fn log_metric(run_id: &str, key: &str, value: f64, timestamp: i64, step: i64) {
    post(
        "/api/2.0/mlflow/runs/log-metric",
        json!({"run_id": run_id, "key": key, "value": value, "timestamp": timestamp, "step": step}),
    );
}

/// A project name no other test uses.
pub fn unique_project(prefix: &str) -> String {
    format!("{prefix}-{}-{:08x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(7)).wrapping_mul(2654435761)
}

/// Result tables of the difflog run `id` in MLflow's experiment `project`
/// (one per finished call uploaded).
pub fn tables(project: &str, id: &str) -> usize {
    runs(project)
        .iter()
        .filter(|r| tag(r, "difflog.run_id").as_deref() == Some(id))
        .map(|r| {
            artifacts(r)
                .iter()
                .filter(|(p, _)| p.starts_with("Result-Table/"))
                .count()
        })
        .sum()
}
