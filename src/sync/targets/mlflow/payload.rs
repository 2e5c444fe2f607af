//! What a difflog run looks like in MLflow: its params, tags, metrics and
//! files, table files in MLflow's format, param and tag keys and values
//! within MLflow's limits. The upload sends these and `verify` expects
//! them, so both agree by construction.

use super::*;
use crate::sync::targets::truncate;

/// The tag MLflow's UI reads to list a run's tables.
pub(super) const LOGGED_ARTIFACTS: &str = "mlflow.loggedArtifacts";

/// A run's params: its config's first values flattened, and each
/// pipeline's identity (keys made MLflow keys, values too long for a param
/// left to `difflog/config.json`, each key once).
pub(super) fn run_params(run: &Snapshot<'_>) -> Vec<(String, String)> {
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
    let mut params = Vec::new();
    for (k, v) in flat {
        let key = sanitize_key(&k);
        if v.chars().count() <= MAX_PARAM && !key.is_empty() && seen.insert(key.clone()) {
            params.push((key, v));
        }
    }
    params
}

/// The run-level tags difflog sets (the run's name is the user's to edit).
pub(super) fn run_tags(run: &Snapshot<'_>) -> Vec<(String, String)> {
    let mut tags = vec![
        ("difflog.run_id".to_string(), run.meta.id.clone()),
        ("difflog.host".to_string(), run.meta.host.clone()),
        (
            "difflog.version".to_string(),
            run.meta.difflog_version.clone(),
        ),
    ];
    if !run.meta.tags.is_empty() {
        tags.push((
            "difflog.tags".to_string(),
            truncate(&run.meta.tags.join(", "), MAX_TAG),
        ));
    }
    tags
}

/// The run-level JSON files: config, workflow, pipelines and `run.json`.
pub(super) fn run_files(run: &Snapshot<'_>) -> [(&'static str, Value); 4] {
    let pipelines: Vec<Value> = run
        .view
        .pipelines
        .values()
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    [
        (
            "difflog/config.json",
            Value::Object(run.view.config.clone()),
        ),
        ("difflog/workflow.json", Value::Array(run.view.workflow())),
        ("difflog/pipelines.json", Value::Array(pipelines)),
        (
            "difflog/run.json",
            serde_json::to_value(run.meta).unwrap_or(Value::Null),
        ),
    ]
}

/// Where a call's table goes.
pub(super) fn table_path(call: &CallView) -> String {
    format!("{}.json", names::table(&call.started.stage))
}

/// The `mlflow.loggedArtifacts` value once the calls up to `last` are
/// finished: the tables of those that finished.
pub(super) fn logged_artifacts(run: &Snapshot<'_>, last: u32) -> String {
    table_list(
        run.view
            .calls
            .values()
            .filter(|c| c.finished.is_some() && c.started.call <= last)
            .map(table_path),
    )
}

/// A list of tables as `mlflow.loggedArtifacts` holds it: as many, in
/// order, as fit a tag value. (MLflow cuts a longer value short, which
/// would leave JSON no reader can parse: found by `verify` on a run of
/// 200 calls.)
pub(super) fn table_list(paths: impl Iterator<Item = String>) -> String {
    let mut out = String::from("[");
    for p in paths {
        let entry = json!({"path": p, "type": "table"}).to_string();
        let sep = if out.len() > 1 { "," } else { "" };
        if out.len() + sep.len() + entry.len() + 1 > MAX_TAG {
            break;
        }
        out.push_str(sep);
        out.push_str(&entry);
    }
    out.push(']');
    out
}

/// One point of an MLflow metric.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Point {
    pub(super) key: String,
    pub(super) value: f64,
    pub(super) timestamp: i64,
    pub(super) step: i64,
}

impl Point {
    /// A run's own metric, with its record's timestamp in ms.
    pub(super) fn of(m: &MetricEvent, ts: i64) -> Point {
        Point {
            key: sanitize_key(&m.name),
            value: m.value,
            timestamp: ts,
            step: m.step.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        }
    }

    /// As log-batch takes it.
    pub(super) fn json(&self) -> Value {
        json!({"key": self.key, "value": self.value, "timestamp": self.timestamp, "step": self.step})
    }
}

/// A finished call's timings, `timings/<phase>_ms` with the call as step.
pub(super) fn call_timings(run: &Snapshot<'_>, call: &CallView) -> Vec<Point> {
    let Some(f) = &call.finished else {
        return Vec::new();
    };
    let ts = crate::format::rfc3339_ms(call.finished_ts.as_deref().unwrap_or(&run.meta.created));
    f.timings_ms
        .iter()
        .filter_map(|(phase, v)| {
            Some(Point {
                key: sanitize_key(&format!("timings/{phase}_ms")),
                value: v.as_f64()?,
                timestamp: ts,
                step: i64::from(call.started.call),
            })
        })
        .collect()
}

/// The tag that carries a failed call's error.
pub(super) fn call_error_tag(call: &CallView) -> Option<(String, String)> {
    let e = call.finished.as_ref()?.error.as_ref()?;
    Some((
        format!("difflog.{}.error", call.started.stage),
        truncate(e, MAX_TAG),
    ))
}

/// A call's table as MLflow table JSON (what `mlflow.log_table` writes):
/// image cells point at the uploaded `images/<sha256>.<ext>` (`png`; an
/// imported JPEG or WebP keeps its own).
pub(super) fn table_json(call: &CallView) -> Value {
    let columns = &call.started.columns;
    let mut data = Vec::new();
    for row in &call.rows {
        let mut cells = Vec::new();
        for col in columns {
            let cell = row.cells.iter().find(|c| c.column() == col);
            cells.push(match cell {
                Some(Cell::Text { value, .. }) => json!(value),
                Some(Cell::Number { value, .. }) => Value::Number(value.clone()),
                Some(Cell::Image { digest, path, .. }) => {
                    let ext = path.rsplit_once('.').map_or("png", |(_, e)| e);
                    let p = format!("images/{digest}.{ext}");
                    json!({"type": "image", "filepath": p, "compressed_filepath": p})
                }
                Some(Cell::Null { .. }) | None => Value::Null,
            });
        }
        data.push(Value::Array(cells));
    }
    json!({"columns": columns, "data": data})
}

pub(super) fn str_field(v: &Value, k: &str) -> SyncResult<String> {
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

/// Flattens nested objects into `a.b.c` keys; other values become JSON text.
pub(super) fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
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
