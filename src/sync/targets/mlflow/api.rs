//! Talking to MLflow's REST API: experiments, runs, artifacts and batches
//! of metrics, params and tags.

use super::objects::{clean_prefix, Place, Stores};
use super::*;

impl Mlflow {
    /// A target at `base` (`http://host:port`), with `auth`.
    pub fn new(base: &str, auth: Auth) -> SyncResult<Mlflow> {
        Ok(Mlflow {
            http: Http::new(base, auth)?,
            key: format!("mlflow+{}", base.trim_end_matches('/')),
            experiments: Mutex::new(HashMap::new()),
            stores: Stores::new()?,
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

    /// The target `mlflow+http(s)://…` names (`http` or `https`, and what
    /// follows `://`): its base URL, with the environment's credentials.
    pub fn spec(http: &str, rest: &str) -> crate::sync::TargetSpec {
        crate::sync::TargetSpec::Mlflow {
            base: format!("{http}://{rest}"),
            auth: Mlflow::auth_from_env(),
        }
    }

    /// A config file's MLflow settings (`get`: a setting's value) over
    /// `auth`: `token`, or `username` and `password`. W&B's settings are an
    /// error, said in words.
    pub fn configure(auth: &mut Auth, get: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        for k in ["api_key", "base_url"] {
            if get(k).is_some() {
                return Err(format!(
                    "{k} is a W&B setting; this config's target is MLflow"
                ));
            }
        }
        match (get("token"), get("username"), get("password")) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err("give either token or username and password, not both".into())
            }
            (Some(t), None, None) => *auth = Auth::Bearer(t),
            (None, Some(u), Some(p)) => *auth = Auth::Basic(u, p),
            (None, Some(_), None) => return Err("username without password".into()),
            (None, None, Some(_)) => return Err("password without username".into()),
            (None, None, None) => {}
        }
        Ok(())
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> SyncResult<Value> {
        let body = match body {
            Some(v) => Body::Json(v),
            None => Body::Empty,
        };
        self.http.send(method, path, body).await
    }

    pub(super) async fn experiment_id(&self, name: &str) -> SyncResult<String> {
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

    pub(super) async fn get_experiment(&self, name: &str) -> SyncResult<Option<String>> {
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

    /// The MLflow run of difflog run `run_id` in `experiment`: an active
    /// one when there is one, else one deleted on the server (trash), else
    /// none.
    pub(super) async fn find_run(
        &self,
        experiment: &str,
        run_id: &str,
    ) -> SyncResult<Option<Value>> {
        let body = json!({
            "experiment_ids": [experiment],
            "filter": format!("tags.`difflog.run_id` = '{}'", run_id.replace('\'', "")),
            "max_results": 20,
            "run_view_type": "ALL",
        });
        let v = self
            .call(Method::POST, "/api/2.0/mlflow/runs/search", Some(&body))
            .await?;
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        let active = runs.iter().find(|r| !is_deleted(r)).cloned();
        Ok(active.or_else(|| runs.into_iter().next()))
    }

    /// The MLflow run of difflog run `run_id` in `experiment` that is not
    /// deleted, if there is one.
    pub(super) async fn find_active(
        &self,
        experiment: &str,
        run_id: &str,
    ) -> SyncResult<Option<Value>> {
        Ok(self
            .find_run(experiment, run_id)
            .await?
            .filter(|r| !is_deleted(r)))
    }

    /// The MLflow run `id` as the server has it now; `None` when the server
    /// has no such run (deleted for good).
    pub(super) async fn get_run(&self, id: &str) -> SyncResult<Option<Value>> {
        let path = format!("/api/2.0/mlflow/runs/get?run_id={}", percent_encode(id));
        match self.call(Method::GET, &path, None).await {
            Ok(v) => Ok(Some(v["run"].clone())),
            Err(e)
                if e.class == Class::Permanent && e.message.contains("RESOURCE_DOES_NOT_EXIST") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn remote_from_run(run: &Value) -> SyncResult<Remote> {
        let info = &run["info"];
        let id = str_field(info, "run_id")?;
        let exp = str_field(info, "experiment_id")?;
        let uri = str_field(info, "artifact_uri")?;
        let (prefix, direct) = match uri.strip_prefix("mlflow-artifacts:") {
            Some(rest) => {
                // mlflow-artifacts:/1/<run>/artifacts or mlflow-artifacts://host/1/…
                let rest = rest.trim_start_matches('/');
                let rest = if uri.starts_with("mlflow-artifacts://") {
                    rest.split_once('/').map(|(_, r)| r).unwrap_or(rest)
                } else {
                    rest
                };
                // From the server: untrusted. No `.`/`..`/empty segments
                // (they would send the token-bearing PUTs out of the
                // artifact API), and every segment is percent-encoded when
                // a URL is made of it (`?`, `#`).
                let prefix = clean_prefix(rest).map_err(|why| {
                    SyncError::permanent(format!(
                        "MLflow run {id} stores artifacts at {uri}, which difflog-sync will not write to: {why}"
                    ))
                })?;
                (prefix, None)
            }
            None => {
                Place::parse(&uri).map_err(|why| {
                    SyncError::permanent(format!(
                        "MLflow run {id} stores artifacts at {uri}, which difflog-sync cannot write to: {why}"
                    ))
                })?;
                (String::new(), Some(uri))
            }
        };
        let mut remote = Remote {
            id: id.clone(),
            data: String::new(),
        };
        RunAt {
            run_id: id,
            experiment_id: exp,
            artifact_prefix: prefix,
            artifact_uri: direct,
            sent_status: None,
        }
        .store(&mut remote);
        Ok(remote)
    }

    pub(super) async fn put_artifact(
        &self,
        remote: &Remote,
        path: &str,
        body: Body<'_>,
    ) -> SyncResult<()> {
        let at = RunAt::of(remote)?;
        if let Some(uri) = &at.artifact_uri {
            let place = Place::parse(uri).map_err(|why| {
                SyncError::permanent(format!(
                    "MLflow run {}: artifact URI {uri}: {why}",
                    at.run_id
                ))
            })?;
            return self.stores.put(&place, path, body).await;
        }
        self.http
            .send_ack(Method::PUT, &proxied_url(&at, path)?, body)
            .await
    }

    pub(super) async fn put_json(&self, remote: &Remote, path: &str, v: &Value) -> SyncResult<()> {
        let bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
        self.put_artifact(remote, path, Body::Bytes(&bytes, Some("application/json")))
            .await
    }

    pub(super) async fn log_batch(
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

/// The proxied artifact API's URL of `path` in a run's artifacts: the
/// prefix checked again (a state written by an older difflog) and every
/// segment of both percent-encoded.
pub(super) fn proxied_url(at: &RunAt, path: &str) -> SyncResult<String> {
    let prefix = clean_prefix(&at.artifact_prefix).map_err(|why| {
        SyncError::permanent(format!(
            "MLflow run {}: artifact path {}: {why}",
            at.run_id, at.artifact_prefix
        ))
    })?;
    let enc = |p: &str| {
        p.split('/')
            .map(percent_encode)
            .collect::<Vec<_>>()
            .join("/")
    };
    Ok(format!(
        "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
        enc(&prefix),
        enc(path)
    ))
}

/// Whether an MLflow run (as `runs/get` or `runs/search` give it) was
/// deleted on the server (it is in the trash until the garbage collector
/// removes it).
pub(super) fn is_deleted(run: &Value) -> bool {
    run["info"]["lifecycle_stage"].as_str() == Some("deleted")
}

#[cfg(test)]
mod proxied_tests {
    use super::*;
    use serde_json::json;

    fn run(uri: &str) -> Value {
        json!({"info": {"run_id": "abc", "experiment_id": "1", "artifact_uri": uri}})
    }

    #[test]
    fn a_proxied_prefix_stays_inside_the_artifact_api() {
        // Issue 32, item 2: the prefix comes from the server.
        for uri in [
            "mlflow-artifacts:/../../other-service/upload?x=",
            "mlflow-artifacts:/1/./abc",
            "mlflow-artifacts://host/1//abc",
        ] {
            let e = Mlflow::remote_from_run(&run(uri)).unwrap_err();
            assert!(e.to_string().contains("will not write"), "{uri}: {e}");
        }
        let r = Mlflow::remote_from_run(&run("mlflow-artifacts:/1/abc/artifacts?x#y")).unwrap();
        let at = RunAt::of(&r).unwrap();
        assert_eq!(
            proxied_url(&at, "images/a b.png").unwrap(),
            "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts%3Fx%23y/images/a%20b.png"
        );
        let ok =
            Mlflow::remote_from_run(&run("mlflow-artifacts://h:5000/1/abc/artifacts/")).unwrap();
        assert_eq!(RunAt::of(&ok).unwrap().artifact_prefix, "1/abc/artifacts");
    }
}
