//! The fleet summary of `difflog-sync status`: how a root of thousands of
//! runs stands, per target, in a few lines — and which runs need a look —
//! instead of one line per run and target (issue 34).

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Listed one by one at most: more rows than this and the text shows only
/// the runs that need a look, this many of them.
pub const LIST_AT_MOST: usize = 20;

/// How the runs stand with one target (or with none).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TargetSummary {
    /// Runs with state for this target.
    pub runs: usize,
    /// Runs with nothing left to upload and no error.
    pub complete: usize,
    /// Runs with calls or media not yet uploaded.
    pub pending: usize,
    /// Runs whose last attempt failed.
    pub with_errors: usize,
    /// Calls not yet uploaded, over all runs.
    pub pending_calls: u64,
    /// Media files not yet uploaded, over all runs.
    pub pending_media: u64,
}

/// The whole fleet.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Run directories read (each once, however many targets).
    pub runs: usize,
    /// Runs by state (`live`, `finished`, `crashed`, …).
    pub states: BTreeMap<String, usize>,
    /// Runs that could not be read.
    pub unreadable: usize,
    /// By target; runs uploaded nowhere yet under `null` in JSON, "not
    /// uploaded anywhere" in text.
    pub targets: BTreeMap<String, TargetSummary>,
    /// Runs with state for no target.
    pub not_uploaded: TargetSummary,
}

/// Whether a status row needs a look: unreadable, something pending, or an
/// error.
pub fn needs_attention(row: &Value) -> bool {
    row.get("error").is_some()
        || pending_media(row) > 0
        || row["pending_calls"].as_u64().unwrap_or(0) > 0
        || row["last_error"].is_string()
}

fn pending_media(row: &Value) -> u64 {
    let (Some(rec), Some(up)) = (
        row["media_recorded"].as_u64(),
        row["media_uploaded"].as_u64(),
    ) else {
        return 0;
    };
    rec.saturating_sub(up)
}

/// Adds up `status`'s rows (one per run and target, or one per run with
/// no target, or an unreadable run's).
pub fn summarize(rows: &[Value]) -> Summary {
    let mut s = Summary::default();
    let mut seen = BTreeSet::new();
    for row in rows {
        let path = row["path"].as_str().unwrap_or("").to_string();
        let first = seen.insert(path);
        if row.get("error").is_some() {
            s.unreadable += usize::from(first);
            continue;
        }
        if first {
            let state = row["state"].as_str().unwrap_or("unknown").to_string();
            *s.states.entry(state).or_default() += 1;
        }
        let t = match row["target"].as_str() {
            Some(key) => s.targets.entry(key.to_string()).or_default(),
            None => &mut s.not_uploaded,
        };
        t.runs += 1;
        let calls = row["pending_calls"].as_u64().unwrap_or(0);
        let media = pending_media(row);
        t.pending_calls += calls;
        t.pending_media += media;
        if calls > 0 || media > 0 {
            t.pending += 1;
        }
        if row["last_error"].is_string() {
            t.with_errors += 1;
        }
        if calls == 0 && media == 0 && !row["last_error"].is_string() {
            t.complete += 1;
        }
    }
    s.runs = seen.len();
    s
}

/// The summary as the few lines `status` prints above the runs.
pub fn render(s: &Summary) -> Vec<String> {
    let states: Vec<String> = s.states.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let mut head = format!("{} runs", s.runs);
    if !states.is_empty() {
        head.push_str(&format!(" ({})", states.join(", ")));
    }
    if s.unreadable > 0 {
        head.push_str(&format!(", {} unreadable", s.unreadable));
    }
    let mut out = vec![head];
    let line = |name: &str, t: &TargetSummary| {
        let mut l = format!("  {name}: {} runs, {} complete", t.runs, t.complete);
        if t.pending > 0 {
            l.push_str(&format!(
                ", {} pending ({} calls, {} media)",
                t.pending, t.pending_calls, t.pending_media
            ));
        }
        if t.with_errors > 0 {
            l.push_str(&format!(", {} with errors", t.with_errors));
        }
        l
    };
    for (key, t) in &s.targets {
        out.push(line(key, t));
    }
    if s.not_uploaded.runs > 0 {
        let t = &s.not_uploaded;
        out.push(format!(
            "  not uploaded anywhere: {} runs, {} calls",
            t.runs, t.pending_calls
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_add_up_per_target_and_runs_count_once() {
        let rows = vec![
            json!({"path": "/r/a", "state": "finished", "target": "mlflow:x", "pending_calls": 0,
                   "media_recorded": 4, "media_uploaded": 4, "last_error": null}),
            json!({"path": "/r/a", "state": "finished", "target": "wandb:y", "pending_calls": 2,
                   "media_recorded": 4, "media_uploaded": 1, "last_error": "HTTP 500"}),
            json!({"path": "/r/b", "state": "live", "target": null, "pending_calls": 3}),
            json!({"path": "/r/c", "error": "bad run.json"}),
        ];
        let s = summarize(&rows);
        assert_eq!(s.runs, 3);
        assert_eq!(s.unreadable, 1);
        assert_eq!(s.states["finished"], 1);
        assert_eq!(s.states["live"], 1);
        let m = &s.targets["mlflow:x"];
        assert_eq!((m.runs, m.complete, m.pending, m.with_errors), (1, 1, 0, 0));
        let w = &s.targets["wandb:y"];
        assert_eq!(
            (w.pending, w.with_errors, w.pending_calls, w.pending_media),
            (1, 1, 2, 3)
        );
        assert_eq!(w.complete, 0);
        assert_eq!((s.not_uploaded.runs, s.not_uploaded.pending_calls), (1, 3));
        let text = render(&s).join("\n");
        assert!(
            text.starts_with("3 runs (1 finished, 1 live), 1 unreadable"),
            "{text}"
        );
        assert!(
            text.contains(
                "  wandb:y: 1 runs, 0 complete, 1 pending (2 calls, 3 media), 1 with errors"
            ),
            "{text}"
        );
        assert!(
            text.contains("  not uploaded anywhere: 1 runs, 3 calls"),
            "{text}"
        );
        assert!(!needs_attention(&rows[0]));
        assert!(rows[1..].iter().all(needs_attention));
    }
}
