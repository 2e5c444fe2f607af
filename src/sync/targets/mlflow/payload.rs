//! What a difflog run looks like in MLflow: table files in MLflow's
//! format, param and tag keys and values within MLflow's limits.

use super::*;

/// A call's table as MLflow table JSON (what `mlflow.log_table` writes):
/// image cells point at the uploaded `images/<sha256>.png`.
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

pub(super) fn truncate(s: &str, max: usize) -> String {
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
