//! What reading a run back from a server found different from the run on
//! disk (`difflog-sync verify`). A target lists each difference with the
//! part of the run it belongs to; the verify command tells the state to
//! send that part again when asked to repair.

use crate::sync::error::SyncResult;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;

/// How the server's copy differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// On disk, not on the server.
    Missing,
    /// On the server (where difflog writes), not on disk.
    Extra,
    /// On both, not the same.
    Different,
}

impl Kind {
    /// The word a report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Different => "different",
        }
    }
}

/// The part of a run a difference belongs to: what a repair sends again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The remote run itself.
    Run,
    /// Run-level data: params, tags, config and workflow files.
    Meta,
    /// One media file (its digest).
    Media(String),
    /// A finished call: its table, timings and completion.
    Call(u32),
    /// The run's own metrics.
    Metrics,
    /// The run's status.
    Status,
    /// Nothing difflog sends again (what is extra on the server).
    Nothing,
}

/// One difference between a run on disk and its copy on a server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// Missing, extra or different.
    pub kind: Kind,
    /// What it is: `image images/<sha256>.png`, `param seed`, …
    pub what: String,
    /// How it differs, when that says more than the kind.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The part of the run it belongs to.
    #[serde(skip)]
    pub part: Part,
}

impl Difference {
    /// Something on disk the server lacks.
    pub fn missing(what: impl Into<String>, part: Part) -> Difference {
        Difference {
            kind: Kind::Missing,
            what: what.into(),
            detail: String::new(),
            part,
        }
    }

    /// Something on the server the run does not have.
    pub fn extra(what: impl Into<String>) -> Difference {
        Difference {
            kind: Kind::Extra,
            what: what.into(),
            detail: String::new(),
            part: Part::Nothing,
        }
    }

    /// Something both have, not the same.
    pub fn different(what: impl Into<String>, detail: impl Into<String>, part: Part) -> Difference {
        Difference {
            kind: Kind::Different,
            what: what.into(),
            detail: detail.into(),
            part,
        }
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.what)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// A value in a message: quoted, and cut when long.
pub fn quote(s: &str) -> String {
    format!("{:?}", super::truncate(s, 80))
}

/// How a JSON file differs from what it must be (`None`: the same). For a
/// table, the first row that differs.
pub fn json_difference(have: &Value, want: &Value) -> Option<String> {
    if have == want {
        return None;
    }
    if let (Some(h), Some(w)) = (have["data"].as_array(), want["data"].as_array()) {
        if have["columns"] != want["columns"] {
            return Some("its columns differ".into());
        }
        if h.len() != w.len() {
            return Some(format!(
                "{} rows on the server, {} recorded",
                h.len(),
                w.len()
            ));
        }
        if let Some(i) = h.iter().zip(w).position(|(a, b)| a != b) {
            return Some(format!("row {} differs", i + 1));
        }
    }
    Some("its content differs".into())
}

/// Runs `checks` (each compares one file on the server with what it must
/// be), `concurrency` at once, and keeps the differences they find, in the
/// order they finish.
pub async fn run_checks<F>(
    checks: impl IntoIterator<Item = F>,
    concurrency: usize,
) -> SyncResult<Vec<Difference>>
where
    F: std::future::Future<Output = SyncResult<Option<Difference>>>,
{
    let found: Vec<Option<Difference>> = futures_util::stream::iter(checks)
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}
