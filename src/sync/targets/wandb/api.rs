//! Talking to W&B: GraphQL (`UpsertBucket`, `CreateRunFiles`, the history
//! line count), file uploads to the URLs it hands out, and the file stream.

use super::*;

impl Wandb {
    /// A target at `base` (`https://api.wandb.ai` or a W&B Server URL) for
    /// `entity`, uploading into `project` (or each run's own project).
    pub fn new(base: &str, auth: Auth, entity: &str, project: Option<&str>) -> SyncResult<Wandb> {
        let base = base.trim_end_matches('/');
        let key = match project {
            Some(p) => format!("wandb+{base}/{entity}/{p}"),
            None => format!("wandb+{base}/{entity}"),
        };
        Ok(Wandb {
            api: Http::new(base, auth)?,
            // Upload URLs may point at a storage service: no API key there.
            storage: Http::new(base, Auth::None)?,
            entity: entity.to_string(),
            project: project.map(str::to_string),
            key,
            built: Mutex::new(Vec::new()),
            ahead: Mutex::new(HashMap::new()),
            gifs: videos::Gifs::default(),
            posted: Mutex::new(HashMap::new()),
            heartbeat: heartbeat_from_env()?,
            multipart: multipart::Sizes::from_env(),
        })
    }

    /// The API key as W&B's client reads it: `WANDB_API_KEY`.
    pub fn api_key_from_env() -> Option<String> {
        std::env::var("WANDB_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
    }

    /// The server as W&B's client reads it: `WANDB_BASE_URL`, else the cloud.
    pub fn base_from_env() -> String {
        std::env::var("WANDB_BASE_URL")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
    }

    /// The target `wandb://ENTITY[/PROJECT]` names (what follows `://`),
    /// with the environment's API key and server.
    pub fn spec(rest: &str) -> Result<crate::sync::TargetSpec, &'static str> {
        let mut parts = rest.trim_end_matches('/').split('/');
        let entity = parts.next().unwrap_or("").to_string();
        let project = parts.next().map(str::to_string);
        if parts.next().is_some() || project.as_deref() == Some("") {
            return Err("expected wandb://ENTITY or wandb://ENTITY/PROJECT");
        }
        let auth = match Wandb::api_key_from_env() {
            Some(k) => Auth::Basic("api".into(), k),
            None => Auth::None,
        };
        Ok(crate::sync::TargetSpec::Wandb {
            base: Wandb::base_from_env(),
            entity,
            project,
            auth,
        })
    }

    /// A config file's W&B settings (`get`: a setting's value) over `auth`:
    /// `api_key`; returns its `base_url`, if any, for the caller to check.
    /// MLflow's settings are an error, said in words.
    pub fn configure(
        auth: &mut Auth,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        for k in ["token", "username", "password"] {
            if get(k).is_some() {
                return Err(format!(
                    "{k} is an MLflow setting; W&B takes api_key (this config's target is W&B)"
                ));
            }
        }
        if let Some(k) = get("api_key") {
            *auth = Auth::Basic("api".into(), k);
        }
        Ok(get("base_url"))
    }

    /// Runs a GraphQL operation; GraphQL errors in a 200 answer are errors.
    pub(super) async fn gql(&self, op: &str, query: &str, variables: Value) -> SyncResult<Value> {
        let body = json!({"operationName": op, "query": query, "variables": variables});
        let v = self
            .api
            .send(Method::POST, "/graphql", Body::Json(&body))
            .await?;
        if let Some(errors) = v.get("errors").and_then(Value::as_array) {
            if !errors.is_empty() {
                let msgs: Vec<&str> = errors
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or("unknown error"))
                    .collect();
                return Err(SyncError::permanent(format!(
                    "W&B {op} at {}: {}",
                    self.api.base(),
                    msgs.join("; ")
                )));
            }
        }
        Ok(v["data"].clone())
    }

    /// `UpsertBucket`, retried on 409 Conflict as W&B's client does.
    pub(super) async fn upsert(&self, variables: Value) -> SyncResult<Value> {
        let policy = Policy {
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
            attempts: 6,
        };
        let data = retry(
            policy,
            |_| self.gql("UpsertBucket", UPSERT_BUCKET, variables.clone()),
            |e: &SyncError| match e.status {
                Some(409) if !deleted_on_server(e) => Decision::Retry(e.retry_after),
                _ => Decision::Stop,
            },
        )
        .await?;
        let bucket = data["upsertBucket"]["bucket"].clone();
        if bucket.is_object() {
            return Ok(bucket);
        }
        Err(SyncError::permanent(format!(
            "W&B UpsertBucket at {}: no run in the answer",
            self.api.base()
        )))
    }

    pub(super) fn project_of(&self, run: &Snapshot<'_>) -> String {
        self.project
            .clone()
            .unwrap_or_else(|| run.meta.project.clone())
    }

    /// Upload URLs (and the headers to send with them) for `names`, in
    /// their order: one `CreateRunFiles`.
    pub(super) async fn create_run_files(
        &self,
        cur: &Cursor,
        names: &[String],
    ) -> SyncResult<Vec<Upload>> {
        let data = self
            .gql(
                "CreateRunFiles",
                CREATE_RUN_FILES,
                json!({"entity": cur.entity, "project": cur.project, "run": cur.run, "files": names}),
            )
            .await?;
        let result = &data["createRunFiles"];
        if result["runID"].as_str().is_none_or(str::is_empty) {
            return Err(SyncError::permanent(format!(
                "W&B refused files for {}/{}/{}: check that the project exists and the key may write to it",
                cur.entity, cur.project, cur.run
            )));
        }
        let headers = headers_of(&result["uploadHeaders"]);
        let files = result["files"].as_array();
        names
            .iter()
            .map(|name| {
                let url = files
                    .and_then(|fs| fs.iter().find(|f| f["name"] == name.as_str()))
                    .and_then(|f| f["uploadUrl"].as_str())
                    .ok_or_else(|| {
                        SyncError::permanent(format!("W&B gave no upload URL for {name}"))
                    })?;
                let url = if url.starts_with('/') {
                    format!("{}{url}", self.api.base())
                } else {
                    url.to_string()
                };
                Ok(Upload {
                    url,
                    headers: headers.clone(),
                })
            })
            .collect()
    }

    /// Uploads one run file: `PUT` to the URL asked for ahead, or to one
    /// `CreateRunFiles` hands out now.
    pub(super) async fn put_file(
        &self,
        cur: &Cursor,
        name: &str,
        body: Body<'_>,
    ) -> SyncResult<()> {
        let ahead = self
            .ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(cur.run.clone(), name.to_string()));
        if let Some(u) = ahead {
            match self
                .storage
                .send_with(Method::PUT, &u.url, &u.headers, body)
                .await
            {
                Ok(_) => return Ok(()),
                // A signed URL asked for earlier may have expired: ask again.
                Err(e) if e.class == crate::sync::retry::Class::Permanent => {
                    tracing::debug!(
                        "{name}: upload URL asked for ahead refused ({e}); asking again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let mut urls = self.create_run_files(cur, &[name.to_string()]).await?;
        let u = urls
            .pop()
            .ok_or_else(|| SyncError::permanent(format!("W&B gave no upload URL for {name}")))?;
        self.storage
            .send_with(Method::PUT, &u.url, &u.headers, body)
            .await
            .map(|_| ())
    }

    /// One file-stream request, not retried here: a request whose answer was
    /// lost may have been applied, so the caller asks the server before
    /// sending again.
    pub(super) async fn file_stream(&self, cur: &Cursor, body: &Value) -> SyncResult<()> {
        let path = format!(
            "/files/{}/{}/{}/file_stream",
            percent_encode(&cur.entity),
            percent_encode(&cur.project),
            percent_encode(&cur.run)
        );
        self.api
            .send_once(Method::POST, &path, &[], &Body::Json(body))
            .await?;
        self.posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cur.run.clone(), std::time::Instant::now());
        Ok(())
    }

    /// What the server holds of the run: history lines and state (the
    /// query W&B's client resumes a run with).
    pub(super) async fn server_view(&self, cur: &Cursor) -> SyncResult<(u64, String)> {
        let data = self
            .gql(
                "RunHistoryLineCount",
                RUN_HISTORY_LINE_COUNT,
                json!({"project": cur.project, "entity": cur.entity, "name": cur.run}),
            )
            .await?;
        let bucket = &data["model"]["bucket"];
        Ok((
            bucket["historyLineCount"].as_u64().unwrap_or(0),
            bucket["state"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Sends `body` (built for the current cursor by `build`) until the
    /// server acknowledges; after a failure, asks the server where it
    /// stands (`settled`) before building the request again.
    ///
    /// Not [`retry`]: this loop sends many requests, and its budget of
    /// failures is per request (the backoff starts again after every
    /// acknowledged one), while `retry` counts attempts of one operation.
    pub(super) async fn stream_until_acked(
        &self,
        cur: &mut Cursor,
        build: &dyn Fn(&Cursor) -> Option<Value>,
        settle: &dyn Fn(&mut Cursor, u64, &str),
        acked: &dyn Fn(&mut Cursor),
        remote: &mut Remote,
    ) -> SyncResult<()> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
        while let Some(body) = build(cur) {
            match self.file_stream(cur, &body).await {
                Ok(()) => {
                    backoff.reset();
                    acked(cur);
                    cur.store(remote);
                }
                Err(e)
                    if e.class == crate::sync::retry::Class::Transient
                        && backoff.attempts() < 4 =>
                {
                    tokio::time::sleep(backoff.next_delay(e.retry_after)).await;
                    let (lines, state) = self.server_view(cur).await?;
                    settle(cur, lines, &state);
                    cur.store(remote);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Marks a completed run running again (a crashed run that was reopened
    /// and is written again), as resuming a run in W&B does.
    pub(super) async fn reopen(&self, cur: &mut Cursor, remote: &mut Remote) -> SyncResult<()> {
        self.upsert(json!({
            "name": cur.run, "project": cur.project, "entity": cur.entity, "state": "running",
        }))
        .await?;
        cur.complete = false;
        cur.store(remote);
        Ok(())
    }

    /// The run's history lines, built once per pass: a pass flushes after
    /// every batch of calls, and rebuilding every line (each call's table
    /// JSON and its digest) each time made a pass quadratic in the calls.
    /// Every video's GIF is made first (its digest is in the lines).
    pub(super) async fn lines_for(&self, run: &Snapshot<'_>) -> SyncResult<Arc<Vec<Line>>> {
        self.gifs.derive(run.dir, &run.sent_media()).await?;
        let records = (run.records.len(), run.records.last().map_or(0, |r| r.seq));
        let lock = || self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = lock()
            .iter()
            .find(|b| b.run_id == run.meta.id && b.records == records)
        {
            return Ok(Arc::clone(&b.lines));
        }
        // Built without the lock: other runs' passes go on meanwhile.
        let lines = Arc::new(history_lines(run, &self.gifs));
        let mut built = lock();
        built.retain(|b| b.run_id != run.meta.id);
        if built.len() >= BUILT_KEPT {
            built.remove(0);
        }
        built.push(Built {
            run_id: run.meta.id.clone(),
            records,
            lines: Arc::clone(&lines),
        });
        Ok(lines)
    }

    /// Sends the history lines from the acknowledged offset on, as far as
    /// they are ready (`ready(call)`: that call's files are uploaded).
    pub(super) async fn flush(
        &self,
        remote: &mut Remote,
        run: &Snapshot<'_>,
        ready: &dyn Fn(u32) -> bool,
    ) -> SyncResult<()> {
        let mut cur = Cursor::of(remote)?;
        self.gifs.remember(&cur.gifs, &remote.id)?;
        let lines = self.lines_for(run).await?;
        let start = usize::try_from(cur.history).unwrap_or(usize::MAX);
        if start > lines.len() {
            return Err(SyncError::permanent(format!(
                "W&B run {}/{}/{} has {} history lines but {} gives only {}: \
                 something else wrote to that W&B run",
                cur.entity,
                cur.project,
                cur.run,
                cur.history,
                run.dir.display(),
                lines.len()
            )));
        }
        let end = start
            + lines[start..]
                .iter()
                .take_while(|l| l.call.is_none_or(ready))
                .count();
        // The GIFs these lines name are kept with the cursor: a later pass
        // writes the lines again without making them (their videos may be
        // gone from the run by then).
        let kept = cur.gifs.len();
        let sent = run.sent_media().into_iter();
        for (key, gif) in self.gifs.sent(sent.filter(|m| m.call.is_none_or(ready))) {
            cur.gifs.entry(key).or_insert(gif);
        }
        if cur.gifs.len() != kept {
            cur.store(remote);
        }
        if end > start && cur.complete {
            // New lines for a run marked complete: a crashed run was reopened.
            self.reopen(&mut cur, remote).await?;
        }
        // The summary (each key's last value) goes with the request that
        // reaches the last line the log has: it covers every line, and
        // sending it with every request made a pass quadratic in the lines.
        let summary = (end == lines.len() && end > start)
            .then(|| summary_line(&lines))
            .flatten();
        let chunk = |cur: &Cursor| -> Option<Value> {
            let at = usize::try_from(cur.history).ok()?;
            if at >= end {
                return None;
            }
            let hi = (at + LINES_PER_REQUEST).min(end);
            let content: Vec<String> = lines[at..hi]
                .iter()
                .map(|l| serde_json::to_string(&l.value).unwrap_or_default())
                .collect();
            let mut files = json!({"wandb-history.jsonl": {"offset": at, "content": content}});
            if let (Some(s), true) = (&summary, hi == end) {
                files["wandb-summary.json"] = json!({"offset": 0, "content": [s]});
            }
            let uploaded: Vec<&String> = lines[at..hi].iter().flat_map(|l| &l.files).collect();
            Some(json!({"files": files, "uploaded": uploaded, "dropped": 0}))
        };
        self.stream_until_acked(
            &mut cur,
            &chunk,
            // The server may have applied a request whose answer was lost.
            &|cur, lines, _| cur.history = cur.history.max(lines),
            &|cur| cur.history = (cur.history + LINES_PER_REQUEST as u64).min(end as u64),
            remote,
        )
        .await
    }
}

/// Whether W&B refused a run name because its run was deleted (W&B keeps
/// the name of a deleted run for good: 409, "… was previously created and
/// deleted; try a new run name").
pub(super) fn deleted_on_server(e: &SyncError) -> bool {
    e.status == Some(409) && e.message.contains("previously created and deleted")
}
