//! Reading a run back from W&B (`difflog-sync verify`), with the queries
//! W&B's own client reads runs with: `Run` (state, config, summary),
//! `HistoryPage` (every history line, as wandb-core pages it), `RunFiles`
//! (every run file, each downloaded: images by the SHA-256 of the bytes,
//! tables and the other files by content) and `RunOutputArtifacts` (each
//! call's `run_table` artifact, committed, with the digest its files give).
//!
//! What the repair cannot send again is said: a history line the server
//! acknowledged and then lost or changed (W&B's file stream never rewrites
//! an acknowledged line) and the summary (sent only with the history's
//! last line).

use super::artifact::expected_table_artifact;
use super::*;
use crate::sync::targets::differences::{json_difference, quote, run_checks, Difference, Part};
use std::collections::BTreeMap;

const RUN: &str = "query Run($project: String!, $entity: String!, $name: String!) { \
project(name: $project, entityName: $entity) { run(name: $name) { id name state config \
summaryMetrics historyLineCount } } }";

/// wandb-core's own history query (`scan_history`).
const HISTORY_PAGE: &str = "query HistoryPage($entity: String!, $project: String!, \
$run: String!, $minStep: Int64!, $maxStep: Int64!, $pageSize: Int!) { \
project(name: $project, entityName: $entity) { run(name: $run) { \
history(minStep: $minStep, maxStep: $maxStep, samples: $pageSize) } } }";

/// W&B's Python client's file listing (`Run.files()`).
const RUN_FILES: &str = "query RunFiles($project: String!, $entity: String!, $name: String!, \
$fileCursor: String, $fileLimit: Int = 50, $fileNames: [String] = [], $upload: Boolean = false) { \
project(name: $project, entityName: $entity) { run(name: $name) { fileCount \
files(names: $fileNames, after: $fileCursor, first: $fileLimit) { edges { node { name \
url(upload: $upload) directUrl sizeBytes md5 } cursor } pageInfo { endCursor hasNextPage } } } } }";

/// W&B's client's list of the artifacts a run logged (`logged_artifacts()`).
const RUN_OUTPUT_ARTIFACTS: &str = "query RunOutputArtifacts($entity: String!, \
$project: String!, $run: String!, $cursor: String, $perPage: Int) { \
project(entityName: $entity, name: $project) { run(name: $run) { \
artifacts: outputArtifacts(after: $cursor, first: $perPage) { totalCount \
pageInfo { endCursor hasNextPage } edges { node { id artifactSequence { name } \
artifactType { name } state digest } } } } } }";

/// History lines asked for per page (wandb-core's page size).
const HISTORY_PAGE_ROWS: u64 = 1000;
/// Files per `RunFiles` page.
const FILES_PAGE: u64 = 500;
/// Artifacts per `RunOutputArtifacts` page.
const ARTIFACTS_PAGE: u64 = 100;
/// The most read of a table or another JSON or text file.
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Pages of files or artifacts read at most beyond what the run needs: a
/// server that answers page after page is not followed for ever.
const EXTRA_PAGES: usize = 100;

/// A run file as `RunFiles` lists it.
struct Listed {
    size: u64,
    url: String,
}

/// What a run file must be.
enum Want<'a> {
    /// A media file: its SHA-256 and size (a video's, its GIF's).
    Media {
        media: &'a MediaEvent,
        sha256: String,
        size: u64,
    },
    /// These bytes exactly (JSON compared as JSON when they differ).
    Bytes(Vec<u8>, Part),
}

impl Want<'_> {
    fn part(&self) -> Part {
        match self {
            Want::Media { media, .. } => Part::Media(media.digest.clone()),
            Want::Bytes(_, p) => p.clone(),
        }
    }
}

impl Wandb {
    /// The W&B run of `run`: the one the state knows, else the one its id
    /// names — or, when that one is gone, the newest re-made after a delete
    /// (`<name>-2`, `-3`, …: `--recreate-deleted`); `None` when the server
    /// has no such run (or it was deleted).
    pub(super) async fn find(
        &self,
        run: &Snapshot<'_>,
        known: Option<&Remote>,
    ) -> SyncResult<Option<Remote>> {
        let mut cur = match known {
            Some(k) => Cursor::of(k)?,
            None => Cursor {
                entity: self.entity.clone(),
                project: self.project_of(run),
                run: run_name(&run.meta.id),
                history: 0,
                complete: false,
                stop_accepted: false,
                gifs: Default::default(),
            },
        };
        let mut found = self.run_info(&cur).await?;
        if found.is_none() && known.is_none() {
            let base = cur.run.clone();
            for n in 2..=MAX_RECREATED + 1 {
                let next = Cursor {
                    run: recreated_name(&base, n),
                    ..cur.clone()
                };
                match self.run_info(&next).await? {
                    Some(f) => {
                        found = Some(f);
                        cur = next;
                    }
                    None => break,
                }
            }
        }
        let Some(found) = found else {
            return Ok(None);
        };
        if known.is_none() {
            cur.history = found["historyLineCount"].as_u64().unwrap_or(0);
            cur.complete = matches!(found["state"].as_str(), Some("finished" | "failed"));
        }
        let mut remote = Remote {
            id: cur.run.clone(),
            data: String::new(),
        };
        cur.store(&mut remote);
        Ok(Some(remote))
    }

    /// The `Run` query's answer: `None` when the server has no such run.
    async fn run_info(&self, cur: &Cursor) -> SyncResult<Option<Value>> {
        let data = self
            .gql(
                "Run",
                RUN,
                json!({"project": cur.project, "entity": cur.entity, "name": cur.run}),
            )
            .await?;
        let found = &data["project"]["run"];
        Ok(found.is_object().then(|| found.clone()))
    }

    /// Everything that differs between `run` and W&B's copy of it.
    pub(super) async fn compare(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        concurrency: usize,
    ) -> SyncResult<Vec<Difference>> {
        let cur = Cursor::of(remote)?;
        let Some(server) = self.run_info(&cur).await? else {
            return Ok(vec![Difference::missing(
                format!("W&B run {}/{}/{}", cur.entity, cur.project, cur.run),
                Part::Run,
            )]);
        };
        let mut out = Vec::new();
        compare_state(&server, status, &mut out);
        compare_config(&server, &run_config(run), &mut out);
        self.gifs.remember(&cur.gifs, &remote.id)?;
        let lines = self.lines_for(run).await?;
        let have_lines = server["historyLineCount"].as_u64().unwrap_or(0);
        self.compare_history(&cur, &lines, have_lines, &mut out)
            .await?;
        if let Some(summary) = summary_line(&lines) {
            compare_summary(&server, &summary, &mut out);
        }
        self.compare_files(&cur, run, status, &lines, concurrency, &mut out)
            .await?;
        self.compare_artifacts(&cur, run, &mut out).await?;
        out.sort_by(|a, b| a.what.cmp(&b.what));
        Ok(out)
    }

    /// Every history line, paged, against the lines the log gives.
    async fn compare_history(
        &self,
        cur: &Cursor,
        lines: &[Line],
        have_lines: u64,
        out: &mut Vec<Difference>,
    ) -> SyncResult<()> {
        let want = lines.len() as u64;
        // Lines past the run's are read one page far: enough to say there
        // are extra ones, however many the server claims.
        let end = want.max(have_lines.min(want + HISTORY_PAGE_ROWS));
        let mut rows: BTreeMap<u64, Value> = BTreeMap::new();
        let mut at = 0;
        while at < end {
            let hi = (at + HISTORY_PAGE_ROWS).min(end);
            let data = self
                .gql(
                    "HistoryPage",
                    HISTORY_PAGE,
                    json!({"entity": cur.entity, "project": cur.project, "run": cur.run,
                           "minStep": at, "maxStep": hi, "pageSize": HISTORY_PAGE_ROWS}),
                )
                .await?;
            for row in data["project"]["run"]["history"]
                .as_array()
                .into_iter()
                .flatten()
            {
                // Rows come as JSON text (W&B's JSONString), or objects.
                let v = match row {
                    Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                    other => other.clone(),
                };
                match v["_step"].as_u64() {
                    Some(step) if step < end => {
                        rows.insert(step, v);
                    }
                    _ => {}
                }
            }
            at = hi;
        }
        for (k, line) in lines.iter().enumerate() {
            let part = match line.call {
                Some(c) => Part::Call(c),
                None => Part::Metrics,
            };
            let what = format!("history line {k}");
            match rows.remove(&(k as u64)) {
                None => out.push(Difference::missing(what, part)),
                Some(v) => {
                    if let Some(d) = value_difference(&v, &Value::Object(line.value.clone())) {
                        // An acknowledged line is never rewritten.
                        out.push(Difference::different(what, d, Part::Nothing));
                    }
                }
            }
        }
        // Extra lines: one difference for all of them (a server may claim
        // millions).
        let extra: Vec<u64> = rows.keys().copied().collect();
        let claimed = have_lines.saturating_sub(want);
        match (extra.first(), extra.last()) {
            (Some(a), Some(b)) if a == b && claimed <= 1 => {
                out.push(Difference::extra(format!("history line {a}")));
            }
            (Some(a), _) => {
                let mut d = Difference::extra(format!("history lines from {a}"));
                d.detail = format!(
                    "{} past the run's {want} on the server",
                    extra.len().max(claimed as usize)
                );
                out.push(d);
            }
            _ if claimed > 0 => {
                let mut d = Difference::extra(format!("history lines from {want}"));
                d.detail = format!("the server counts {have_lines}, the run has {want}");
                out.push(d);
            }
            _ => {}
        }
        Ok(())
    }

    /// Every run file, listed and downloaded, against what the upload sends.
    async fn compare_files(
        &self,
        cur: &Cursor,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        lines: &[Line],
        concurrency: usize,
        out: &mut Vec<Difference>,
    ) -> SyncResult<()> {
        let mut want: BTreeMap<String, Want<'_>> = BTreeMap::new();
        for m in run.sent_media() {
            let (sha256, size) = match self.gifs.info(m) {
                Some(gif) => (gif.sha256.clone(), gif.size),
                None => (m.digest.clone(), m.bytes),
            };
            want.insert(
                media_path(m, &self.gifs),
                Want::Media {
                    media: m,
                    sha256,
                    size,
                },
            );
        }
        for c in run.finished_calls() {
            let t = table_file(c, &self.gifs);
            want.insert(t.path, Want::Bytes(t.bytes, Part::Call(c.started.call)));
        }
        for (name, bytes) in run_files(run, &run_config(run)) {
            want.insert(name, Want::Bytes(bytes, Part::Meta));
        }
        if status != RemoteStatus::Running {
            if let Some(s) = summary_line(lines) {
                want.insert(
                    "wandb-summary.json".into(),
                    Want::Bytes(s.into_bytes(), Part::Status),
                );
            }
        }
        let listed = self.list_files(cur, want.len()).await?;
        for name in listed.keys().filter(|n| !want.contains_key(*n)) {
            out.push(Difference::extra(format!("file {name}")));
        }
        let mut checks = Vec::new();
        for (name, w) in &want {
            match listed.get(name) {
                None => out.push(Difference::missing(format!("file {name}"), w.part())),
                Some(l) => checks.push((name.as_str(), l, w)),
            }
        }
        let checks = checks
            .into_iter()
            .map(|(name, l, w)| self.check_file(name, l, w));
        out.extend(run_checks(checks, concurrency).await?);
        Ok(())
    }

    /// The run's files by name, every page (`expected` says how many pages
    /// to follow at most, with a margin).
    async fn list_files(
        &self,
        cur: &Cursor,
        expected: usize,
    ) -> SyncResult<BTreeMap<String, Listed>> {
        let nodes = self
            .connection_nodes(
                "RunFiles",
                RUN_FILES,
                "files",
                expected / FILES_PAGE as usize + 1 + EXTRA_PAGES,
                |cursor| {
                    json!({"project": cur.project, "entity": cur.entity, "name": cur.run,
                           "fileCursor": cursor, "fileLimit": FILES_PAGE})
                },
            )
            .await?;
        let mut out = BTreeMap::new();
        for n in &nodes {
            let Some(name) = n["name"].as_str() else {
                continue;
            };
            let url = n["directUrl"]
                .as_str()
                .filter(|u| !u.is_empty())
                .or(n["url"].as_str())
                .unwrap_or("")
                .to_string();
            let size = match &n["sizeBytes"] {
                Value::Number(x) => x.as_u64().unwrap_or(0),
                Value::String(s) => s.parse().unwrap_or(0),
                _ => 0,
            };
            out.insert(name.to_string(), Listed { size, url });
        }
        Ok(out)
    }

    /// The nodes of a paged connection (`project.run.<field>`): every page,
    /// at most `most` of them, `vars` giving each page's variables from the
    /// cursor the page before ended at.
    async fn connection_nodes(
        &self,
        op: &str,
        query: &str,
        field: &str,
        most: usize,
        vars: impl Fn(Option<&str>) -> Value,
    ) -> SyncResult<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..most {
            let mut data = self.gql(op, query, vars(cursor.as_deref())).await?;
            let conn = data["project"]["run"][field].take();
            if let Value::Array(edges) = &conn["edges"] {
                out.extend(edges.iter().map(|e| e["node"].clone()));
            }
            let next = conn["pageInfo"]["endCursor"].as_str().map(str::to_string);
            if conn["pageInfo"]["hasNextPage"] != true || next.is_none() || next == cursor {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    /// One listed file against what it must be.
    async fn check_file(
        &self,
        name: &str,
        listed: &Listed,
        want: &Want<'_>,
    ) -> SyncResult<Option<Difference>> {
        let what = format!("file {name}");
        let cap = match want {
            Want::Media { size, .. } => {
                if listed.size != *size {
                    return Ok(Some(Difference::different(
                        what,
                        format!("{} bytes on the server, {size} sent", listed.size),
                        want.part(),
                    )));
                }
                *size
            }
            Want::Bytes(b, _) => (b.len() as u64).max(MAX_FILE),
        };
        let Some(bytes) = self.fetch_file(&listed.url, cap).await? else {
            return Ok(Some(Difference::missing(what, want.part())));
        };
        Ok(match want {
            Want::Media { sha256, .. } => {
                let digest = crate::format::sha256_hex(&bytes);
                (digest != *sha256).then(|| {
                    Difference::different(
                        what,
                        format!("the server's bytes have SHA-256 {digest}"),
                        want.part(),
                    )
                })
            }
            Want::Bytes(expected, part) if &bytes != expected => {
                let detail = match (
                    serde_json::from_slice::<Value>(&bytes),
                    serde_json::from_slice::<Value>(expected),
                ) {
                    (Ok(h), Ok(w)) => {
                        json_difference(&h, &w).unwrap_or_else(|| "its bytes differ".into())
                    }
                    (Err(_), Ok(_)) => "not JSON".into(),
                    _ => "its content differs".into(),
                };
                Some(Difference::different(what, detail, part.clone()))
            }
            Want::Bytes(..) => None,
        })
    }

    /// A run file's bytes from the URL W&B listed: with the API key when
    /// the URL is the API's own, without it elsewhere (a storage service's
    /// signed URL); `None` when the server has none there.
    async fn fetch_file(&self, url: &str, cap: u64) -> SyncResult<Option<Vec<u8>>> {
        if url.is_empty() {
            return Ok(None);
        }
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let got = match url.strip_prefix(self.api.base()) {
            Some(path) if path.starts_with('/') => self.api.download(path, cap).await,
            _ if url.starts_with('/') => self.api.download(url, cap).await,
            _ => self.storage.download_url(url, cap).await,
        };
        match got {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Each finished call's `run_table` artifact: there, committed, with
    /// the digest (over every file's MD5) its table and images give.
    async fn compare_artifacts(
        &self,
        cur: &Cursor,
        run: &Snapshot<'_>,
        out: &mut Vec<Difference>,
    ) -> SyncResult<()> {
        let mut want: BTreeMap<String, (String, u32)> = BTreeMap::new();
        for c in run.finished_calls() {
            let (name, digest) = expected_table_artifact(run, c, &cur.run, &self.gifs).await?;
            want.insert(name, (digest, c.started.call));
        }
        let nodes = self
            .connection_nodes(
                "RunOutputArtifacts",
                RUN_OUTPUT_ARTIFACTS,
                "artifacts",
                want.len() / ARTIFACTS_PAGE as usize + 1 + EXTRA_PAGES,
                |cursor| {
                    json!({"entity": cur.entity, "project": cur.project, "run": cur.run,
                           "cursor": cursor, "perPage": ARTIFACTS_PAGE})
                },
            )
            .await?;
        let mut have: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for n in nodes
            .iter()
            .filter(|n| n["artifactType"]["name"] == "run_table")
        {
            let Some(name) = n["artifactSequence"]["name"].as_str() else {
                continue;
            };
            have.entry(name.to_string()).or_default().push((
                n["digest"].as_str().unwrap_or("").to_string(),
                n["state"].as_str().unwrap_or("").to_string(),
            ));
        }
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            out.push(Difference::extra(format!("artifact {name}")));
        }
        for (name, (digest, call)) in &want {
            let what = format!("artifact {name}");
            let versions = have.get(name).map(Vec::as_slice).unwrap_or_default();
            if versions
                .iter()
                .any(|(d, s)| d == digest && s == "COMMITTED")
            {
                continue;
            }
            if versions.is_empty() {
                out.push(Difference::missing(what, Part::Call(*call)));
                continue;
            }
            let seen: Vec<String> = versions
                .iter()
                .map(|(d, s)| format!("{} {}", s.to_lowercase(), quote(d)))
                .collect();
            out.push(Difference::different(
                what,
                format!(
                    "no committed version with digest {digest} (the server has: {})",
                    seen.join(", ")
                ),
                Part::Call(*call),
            ));
        }
        Ok(())
    }
}

/// The W&B state a run with `status` ends in (`exitcode` 0: finished, else
/// failed); a live run may show as crashed when nothing sent a heartbeat
/// for a while, which is no difference.
fn compare_state(server: &Value, status: RemoteStatus, out: &mut Vec<Difference>) {
    let now = server["state"].as_str().unwrap_or("");
    let ok: &[&str] = match status {
        RemoteStatus::Running => &["running", "crashed"],
        RemoteStatus::Finished => &["finished"],
        RemoteStatus::Failed | RemoteStatus::Killed => &["failed"],
    };
    if !ok.contains(&now) {
        out.push(Difference::different(
            "state",
            format!("{now:?} on the server, {:?} expected", ok[0]),
            Part::Status,
        ));
    }
}

/// W&B's parsed form of a JSONString field (text, or already an object).
fn json_field(v: &Value) -> Map<String, Value> {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    }
}

/// The config's keys against the server's (keys W&B adds, `_wandb` and
/// the like, are W&B's).
fn compare_config(server: &Value, want: &Map<String, Value>, out: &mut Vec<Difference>) {
    let have = json_field(&server["config"]);
    for (k, w) in want {
        let what = format!("config {k}");
        match have.get(k) {
            None => out.push(Difference::missing(what, Part::Meta)),
            Some(h) => {
                if let Some(d) = value_difference(&h["value"], &w["value"]) {
                    out.push(Difference::different(what, d, Part::Meta));
                }
            }
        }
    }
    for k in have
        .keys()
        .filter(|k| !want.contains_key(*k) && !k.starts_with('_'))
    {
        out.push(Difference::extra(format!("config {k}")));
    }
}

/// The summary's keys against the server's.
fn compare_summary(server: &Value, want: &str, out: &mut Vec<Difference>) {
    let have = json_field(&server["summaryMetrics"]);
    let want: Map<String, Value> = serde_json::from_str(want).unwrap_or_default();
    for (k, w) in &want {
        let what = format!("summary {k}");
        match have.get(k) {
            None => out.push(Difference::missing(what, Part::Nothing)),
            Some(h) => {
                if let Some(d) = value_difference(h, w) {
                    out.push(Difference::different(what, d, Part::Nothing));
                }
            }
        }
    }
}

/// How a JSON value from the server differs from the one sent (`None`:
/// the same; numbers compare by value, as a server may write `1.0` as `1`).
fn value_difference(have: &Value, want: &Value) -> Option<String> {
    if same_json(have, want) {
        return None;
    }
    if let (Value::Object(h), Value::Object(w)) = (have, want) {
        // An object (a history line): its first key that differs.
        let keys: std::collections::BTreeSet<&String> = h.keys().chain(w.keys()).collect();
        for k in keys {
            let (a, b) = (h.get(k), w.get(k));
            match (a, b) {
                (Some(a), Some(b)) if !same_json(a, b) => {
                    return Some(format!(
                        "{k}: {} on the server, {} sent",
                        quote(&a.to_string()),
                        quote(&b.to_string())
                    ))
                }
                (None, Some(_)) => return Some(format!("{k}: not on the server")),
                (Some(_), None) => return Some(format!("{k}: on the server, not sent")),
                _ => {}
            }
        }
    }
    Some(format!(
        "{} on the server, {} sent",
        quote(&have.to_string()),
        quote(&want.to_string())
    ))
}

/// JSON equality with numbers compared by value.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value_and_everything_else_exactly() {
        assert!(same_json(
            &json!({"a": [1.0, "x"]}),
            &json!({"a": [1, "x"]})
        ));
        assert!(!same_json(&json!({"a": [1.5]}), &json!({"a": [1]})));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_json(&json!("1"), &json!(1)));
        assert!(value_difference(&json!(2), &json!(2.0)).is_none());
        let d = value_difference(&json!("edited"), &json!("sent")).unwrap();
        assert!(d.contains("edited") && d.contains("sent"), "{d}");
        let d = value_difference(&json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3})).unwrap();
        assert_eq!(d, "b: \"2\" on the server, \"3\" sent");
        let d = value_difference(&json!({"a": 1}), &json!({"a": 1, "c": 3})).unwrap();
        assert_eq!(d, "c: not on the server");
    }

    #[test]
    fn a_live_run_may_show_as_crashed_but_an_ended_one_must_match() {
        let mut out = Vec::new();
        compare_state(
            &json!({"state": "crashed"}),
            RemoteStatus::Running,
            &mut out,
        );
        assert!(out.is_empty());
        compare_state(
            &json!({"state": "running"}),
            RemoteStatus::Finished,
            &mut out,
        );
        compare_state(
            &json!({"state": "finished"}),
            RemoteStatus::Killed,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|d| d.part == Part::Status));
    }
}
