//! Reading a run back from MLflow (`difflog-sync verify`): the remote run
//! found without creating one, then everything the upload writes compared
//! with what the server returns — each image by the SHA-256 of the bytes
//! downloaded, each table and JSON file by content, params, difflog's own
//! tags, every metric's history and the status. Artifacts are read where
//! the upload wrote them: through the server (`mlflow-artifacts:`) or from
//! the object store itself.

use super::objects::Place;
use super::*;
use crate::event::Event;
use crate::sync::targets::differences::{json_difference, quote, run_checks, Difference, Part};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet};

/// The most read of a table or JSON file.
const MAX_JSON: u64 = 64 * 1024 * 1024;

/// Objects listed in a folder beyond the files expected there: enough to
/// report extras, and a bound on a store that lists for ever.
const MAX_EXTRA_LISTED: usize = 10_000;

/// MLflow's page size for metric history (its maximum).
const HISTORY_PAGE: usize = 25_000;

impl Mlflow {
    /// The remote run of `run`: the one the state knows while the server
    /// has it (not deleted), else the one tagged with the run's id.
    pub(super) async fn find(
        &self,
        run: &Snapshot<'_>,
        known: Option<&Remote>,
    ) -> SyncResult<Option<Remote>> {
        if let Some(k) = known {
            return match self.get_run(&k.id).await? {
                Some(now) if !api::is_deleted(&now) => Ok(Some(k.clone())),
                _ => Ok(None),
            };
        }
        let Some(exp) = self.get_experiment(&run.meta.project).await? else {
            return Ok(None);
        };
        self.find_active(&exp, &run.meta.id)
            .await?
            .map(|found| Self::remote_from_run(&found))
            .transpose()
    }

    /// Everything that differs between `run` and MLflow's copy of it.
    pub(super) async fn compare(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        status: RemoteStatus,
        concurrency: usize,
    ) -> SyncResult<Vec<Difference>> {
        let at = RunAt::of(remote)?;
        let Some(server) = self.get_run(&remote.id).await? else {
            return Ok(vec![Difference::missing(
                format!("MLflow run {}", remote.id),
                Part::Run,
            )]);
        };
        let mut out = Vec::new();
        let now = server["info"]["status"].as_str().unwrap_or("");
        if now != status.as_str() {
            out.push(Difference::different(
                "status",
                format!("{now} on the server, {} expected", status.as_str()),
                Part::Status,
            ));
        }
        compare_pairs(
            "param",
            &pairs(&server["data"]["params"]),
            &run_params(run),
            true,
            |_| Part::Meta,
            &mut out,
        );
        compare_pairs(
            "tag",
            &pairs(&server["data"]["tags"]),
            &expected_tags(run),
            false,
            |k| tag_part(run, k),
            &mut out,
        );
        self.compare_metrics(remote, run, &server, &mut out).await?;
        self.compare_files(&at, run, concurrency, &mut out).await?;
        // Downloads finish in any order: the report is sorted.
        out.sort_by(|a, b| a.what.cmp(&b.what));
        Ok(out)
    }

    /// Each metric's whole history against the points the run sends.
    async fn compare_metrics(
        &self,
        remote: &Remote,
        run: &Snapshot<'_>,
        server: &Value,
        out: &mut Vec<Difference>,
    ) -> SyncResult<()> {
        // Expected points by key, each with the part that sends it.
        let mut want: BTreeMap<String, Vec<(Point, Part)>> = BTreeMap::new();
        for c in run.finished_calls() {
            for p in call_timings(run, c) {
                want.entry(p.key.clone())
                    .or_default()
                    .push((p, Part::Call(c.started.call)));
            }
        }
        for r in run.records {
            if let Event::Metric(m) = &r.event {
                let p = Point::of(m, crate::format::rfc3339_ms(&r.ts));
                want.entry(p.key.clone())
                    .or_default()
                    .push((p, Part::Metrics));
            }
        }
        // MLflow keeps a point once however often it was logged.
        for points in want.values_mut() {
            let mut kept: Vec<(Point, Part)> = Vec::new();
            for (p, part) in points.drain(..) {
                if !kept.iter().any(|(k, _)| same_point(k, &p)) {
                    kept.push((p, part));
                }
            }
            *points = kept;
        }
        let on_server: BTreeSet<String> = server["data"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["key"].as_str().map(str::to_string))
            .collect();
        for key in on_server.difference(&want.keys().cloned().collect()) {
            out.push(Difference::extra(format!("metric {key}")));
        }
        let on_server = &on_server;
        let histories = futures_util::stream::iter(want.iter().map(|(k, w)| async move {
            let h = if on_server.contains(k) {
                self.metric_history(&remote.id, k, w.len()).await?
            } else {
                Vec::new()
            };
            Ok::<_, SyncError>((k.clone(), h))
        }))
        .buffered(4)
        .try_collect::<Vec<_>>()
        .await?;
        for (key, mut have) in histories {
            for (p, part) in &want[&key] {
                match have.iter().position(|h| same_point(h, p)) {
                    Some(i) => {
                        have.swap_remove(i);
                    }
                    None => out.push(Difference::missing(
                        format!(
                            "metric {key} step {} at {} = {}",
                            p.step, p.timestamp, p.value
                        ),
                        part.clone(),
                    )),
                }
            }
            for h in have {
                out.push(Difference::extra(format!(
                    "metric {key} step {} at {} = {}",
                    h.step, h.timestamp, h.value
                )));
            }
        }
        Ok(())
    }

    /// A metric's history, every page of it — at most one page past the
    /// `expected` points (enough to say there are extra ones; a server
    /// that hands out page tokens for ever is not followed).
    async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
        expected: usize,
    ) -> SyncResult<Vec<Point>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..expected / HISTORY_PAGE + 2 {
            let mut path = format!(
                "/api/2.0/mlflow/metrics/get-history?run_id={}&metric_key={}&max_results={HISTORY_PAGE}",
                percent_encode(run_id),
                percent_encode(key)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&page_token={}", percent_encode(t)));
            }
            let v = self.call(Method::GET, &path, None).await?;
            for m in v["metrics"].as_array().into_iter().flatten() {
                out.push(Point {
                    key: key.to_string(),
                    value: number(&m["value"]).unwrap_or(f64::NAN),
                    timestamp: number(&m["timestamp"]).map_or(-1, |t| t as i64),
                    step: number(&m["step"]).map_or(0, |s| s as i64),
                });
            }
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() && token.as_deref() != Some(t) => token = Some(t.into()),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Images, tables and the run-level files, listed and downloaded.
    async fn compare_files(
        &self,
        at: &RunAt,
        run: &Snapshot<'_>,
        concurrency: usize,
        out: &mut Vec<Difference>,
    ) -> SyncResult<()> {
        let place = match &at.artifact_uri {
            Some(uri) => Some(Place::parse(uri).map_err(|why| {
                SyncError::permanent(format!(
                    "MLflow run {}: artifact URI {uri}: {why}",
                    at.run_id
                ))
            })?),
            None => None,
        };
        let place = place.as_ref();
        // Every file expected, by folder: name -> what it must be.
        let mut want: BTreeMap<&str, BTreeMap<String, Want<'_>>> = BTreeMap::new();
        for m in run.sent_media() {
            want.entry("images")
                .or_default()
                .insert(format!("{}.{}", m.digest, m.format), Want::Image(m));
        }
        for c in run.finished_calls() {
            let path = table_path(c);
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            want.entry(names::TABLES)
                .or_default()
                .insert(name, Want::Json(table_json(c), Part::Call(c.started.call)));
        }
        for (path, v) in run_files(run) {
            let name = path.rsplit('/').next().unwrap_or(path).to_string();
            want.entry("difflog")
                .or_default()
                .insert(name, Want::Json(v, Part::Meta));
        }
        let mut checks = Vec::new();
        for (dir, files) in &want {
            let listed: BTreeMap<String, u64> = self
                .list(at, place, dir, files.len() + MAX_EXTRA_LISTED)
                .await?
                .into_iter()
                .collect();
            for name in listed.keys().filter(|n| !files.contains_key(*n)) {
                out.push(Difference::extra(format!("file {dir}/{name}")));
            }
            for (name, w) in files {
                let path = format!("{dir}/{name}");
                match listed.get(name) {
                    None => out.push(Difference::missing(format!("file {path}"), w.part())),
                    Some(size) => checks.push((path, *size, w)),
                }
            }
        }
        let checks = checks
            .into_iter()
            .map(|(path, size, w)| self.check_file(at, place, path, size, w));
        out.extend(run_checks(checks, concurrency).await?);
        Ok(())
    }

    /// One listed file against what it must be.
    async fn check_file(
        &self,
        at: &RunAt,
        place: Option<&Place>,
        path: String,
        size: u64,
        want: &Want<'_>,
    ) -> SyncResult<Option<Difference>> {
        let what = format!("file {path}");
        match want {
            Want::Image(media) => {
                if size != media.bytes {
                    return Ok(Some(Difference::different(
                        what,
                        format!("{size} bytes on the server, {} recorded", media.bytes),
                        want.part(),
                    )));
                }
                let Some(bytes) = self.fetch(at, place, &path, media.bytes).await? else {
                    return Ok(Some(Difference::missing(what, want.part())));
                };
                let digest = crate::format::sha256_hex(&bytes);
                Ok((digest != media.digest).then(|| {
                    Difference::different(
                        what,
                        format!("the server's bytes have SHA-256 {digest}"),
                        want.part(),
                    )
                }))
            }
            Want::Json(expected, part) => {
                let Some(bytes) = self.fetch(at, place, &path, MAX_JSON).await? else {
                    return Ok(Some(Difference::missing(what, part.clone())));
                };
                let detail = match serde_json::from_slice::<Value>(&bytes) {
                    Err(e) => Some(format!("not JSON: {e}")),
                    Ok(v) => json_difference(&v, expected),
                };
                Ok(detail.map(|d| Difference::different(what, d, part.clone())))
            }
        }
    }

    /// The files directly in `dir` of a run's artifacts, with sizes (from
    /// an object store: the first `most` it lists).
    async fn list(
        &self,
        at: &RunAt,
        place: Option<&Place>,
        dir: &str,
        most: usize,
    ) -> SyncResult<Vec<(String, u64)>> {
        if let Some(place) = place {
            return self.stores.list(place, dir, most).await;
        }
        let full = format!("{}/{dir}", at.artifact_prefix);
        let v = self
            .call(
                Method::GET,
                &format!(
                    "/api/2.0/mlflow-artifacts/artifacts?path={}",
                    percent_encode(&full)
                ),
                None,
            )
            .await?;
        Ok(v["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["is_dir"].as_bool() != Some(true))
            .filter_map(|f| {
                let name = f["path"].as_str()?;
                let name = name.rsplit('/').next().unwrap_or(name).to_string();
                Some((name, number(&f["file_size"]).map_or(0, |n| n as u64)))
            })
            .collect())
    }

    /// The bytes of the artifact at `path`, at most `cap`; `None` when the
    /// server has none there.
    async fn fetch(
        &self,
        at: &RunAt,
        place: Option<&Place>,
        path: &str,
        cap: u64,
    ) -> SyncResult<Option<Vec<u8>>> {
        if let Some(place) = place {
            return self.stores.get(place, path, cap).await;
        }
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        match self.http.download(&api::proxied_url(at, path)?, cap).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What a file must be.
enum Want<'a> {
    /// An image with this record.
    Image(&'a MediaEvent),
    /// A JSON file with this content, sent by this part.
    Json(Value, Part),
}

impl Want<'_> {
    /// The part that sends it again.
    fn part(&self) -> Part {
        match self {
            Want::Image(m) => Part::Media(m.digest.clone()),
            Want::Json(_, p) => p.clone(),
        }
    }
}

/// The tags difflog sets on a run that is uploaded so far.
fn expected_tags(run: &Snapshot<'_>) -> Vec<(String, String)> {
    let mut tags = run_tags(run);
    let calls: Vec<&CallView> = run.finished_calls().collect();
    if let Some(last) = calls.iter().map(|c| c.started.call).max() {
        tags.push((LOGGED_ARTIFACTS.to_string(), logged_artifacts(run, last)));
    }
    tags.extend(calls.iter().filter_map(|c| call_error_tag(c)));
    tags
}

/// The part that sends a tag: a call's error tag its call, the table list
/// the last finished call (whose completion sends the whole list), the
/// rest the run-level data.
fn tag_part(run: &Snapshot<'_>, key: &str) -> Part {
    if key == LOGGED_ARTIFACTS {
        if let Some(last) = run.finished_calls().map(|c| c.started.call).max() {
            return Part::Call(last);
        }
    }
    for c in run.finished_calls() {
        if key == format!("difflog.{}.error", c.started.stage) {
            return Part::Call(c.started.call);
        }
    }
    Part::Meta
}

/// `[{key, value}]` as MLflow lists params and tags.
fn pairs(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["key"].as_str()?.into(), p["value"].as_str()?.into())))
        .collect()
}

/// Expected keys and values against the server's: missing and different
/// ones, and — when `extras` — keys the run does not have (params; tags
/// others add are theirs).
fn compare_pairs(
    what: &str,
    have: &BTreeMap<String, String>,
    want: &[(String, String)],
    extras: bool,
    part: impl Fn(&str) -> Part,
    out: &mut Vec<Difference>,
) {
    for (k, v) in want {
        match have.get(k) {
            None => out.push(Difference::missing(format!("{what} {k}"), part(k))),
            Some(h) if h != v => out.push(Difference::different(
                format!("{what} {k}"),
                format!("{} on the server, {} recorded", quote(h), quote(v)),
                part(k),
            )),
            Some(_) => {}
        }
    }
    if extras {
        let wanted: BTreeSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        for k in have.keys().filter(|k| !wanted.contains(k.as_str())) {
            out.push(Difference::extra(format!("{what} {k}")));
        }
    }
}

/// A JSON number (or a number in a string, as MLflow sends int64s).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Whether a point of the server's history is the expected one (MLflow
/// keeps values as doubles: the same double compares equal).
fn same_point(have: &Point, want: &Point) -> bool {
    have.step == want.step
        && have.timestamp == want.timestamp
        && (have.value == want.value || (have.value.is_nan() && want.value.is_nan()))
}
