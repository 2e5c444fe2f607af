//! `difflog-sync`: uploads run directories to a tracking server, once and
//! completely, whenever the server is reachable.
//!
//! - [`engine`] syncs one run to one target, idempotently;
//! - [`state`] remembers what each target acknowledged (SQLite beside the runs);
//! - [`targets`] speak each server's protocol behind one trait;
//! - [`http`] and [`retry`] are the shared client and retry policy;
//! - [`watch`] follows run directories as they grow;
//! - [`commands`] is what `upload`, `status` and `watch` print.

pub mod commands;
pub mod engine;
pub mod http;
pub mod retry;
pub mod state;
pub mod targets;
pub mod watch;

use crate::error::{Error, Result};
use http::Auth;
use std::path::Path;

/// A parsed `--to` target.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// An MLflow server at this base URL (`http(s)://host:port[/prefix]`).
    Mlflow {
        /// Base URL, without credentials.
        base: String,
        /// Credentials.
        auth: Auth,
    },
    /// Weights & Biases: `wandb://ENTITY[/PROJECT]`.
    Wandb {
        /// API base URL (`WANDB_BASE_URL`, default `https://api.wandb.ai`).
        base: String,
        /// The W&B entity (user or team).
        entity: String,
        /// The project; each run's own project when absent.
        project: Option<String>,
        /// `api:<key>` (`Auth::None` until a key is found).
        auth: Auth,
    },
}

impl TargetSpec {
    /// Parses `mlflow+http://host:port` (or `https`) or
    /// `wandb://ENTITY[/PROJECT]`. Credentials come from the environment
    /// (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD`; `WANDB_API_KEY`), never from the URL; the
    /// W&B server from `WANDB_BASE_URL`.
    pub fn parse(url: &str) -> Result<TargetSpec> {
        let bad = |why: &str| Error::Setting {
            name: "--to".into(),
            value: redact_url(url),
            why: why.into(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected a URL such as mlflow+http://127.0.0.1:5000"))?;
        let host_part = rest.split('/').next().unwrap_or("");
        if host_part.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL (they would show in process lists and logs): \
                 use MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, \
                 WANDB_API_KEY or --config",
            ));
        }
        if host_part.is_empty() {
            return Err(bad("the URL has no host"));
        }
        match scheme {
            "mlflow+http" | "mlflow+https" => Ok(TargetSpec::Mlflow {
                base: format!("{}://{rest}", &scheme["mlflow+".len()..]),
                auth: targets::mlflow::Mlflow::auth_from_env(),
            }),
            "wandb" => {
                let mut parts = rest.trim_end_matches('/').split('/');
                let entity = parts.next().unwrap_or("").to_string();
                let project = parts.next().map(str::to_string);
                if parts.next().is_some() || project.as_deref() == Some("") {
                    return Err(bad("expected wandb://ENTITY or wandb://ENTITY/PROJECT"));
                }
                let auth = match targets::wandb::Wandb::api_key_from_env() {
                    Some(k) => Auth::Basic("api".into(), k),
                    None => Auth::None,
                };
                Ok(TargetSpec::Wandb {
                    base: targets::wandb::Wandb::base_from_env(),
                    entity,
                    project,
                    auth,
                })
            }
            other => Err(bad(&format!(
                "unknown target scheme {other:?}: supported are mlflow+http, mlflow+https and wandb"
            ))),
        }
    }

    /// Reads a target from a TOML config file (which must not be readable by
    /// others, since it may hold a token):
    ///
    /// ```toml
    /// to = "mlflow+https://mlflow.example.com"
    /// token = "…"            # or: username = "…" / password = "…"
    /// ```
    ///
    /// or, for W&B:
    ///
    /// ```toml
    /// to = "wandb://my-team/my-project"
    /// api_key = "…"
    /// base_url = "https://wandb.example.com"   # optional: W&B Server
    /// ```
    pub fn from_config(path: &Path) -> Result<TargetSpec> {
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(path).map_err(|e| Error::io(path, "read config", e))?;
        if md.permissions().mode() & 0o077 != 0 {
            return Err(Error::Invalid(format!(
                "{}: config files may hold credentials and must not be readable by others (chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read config", e))?;
        let v: toml::Table = text
            .parse()
            .map_err(|e| Error::Invalid(format!("{}: invalid TOML: {e}", path.display())))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let to = get("to")
            .ok_or_else(|| Error::Invalid(format!("{}: no `to = \"…\"` target", path.display())))?;
        let mut spec = TargetSpec::parse(&to)?;
        match &mut spec {
            TargetSpec::Mlflow { auth, .. } => {
                if let Some(t) = get("token") {
                    *auth = Auth::Bearer(t);
                } else if let (Some(u), Some(p)) = (get("username"), get("password")) {
                    *auth = Auth::Basic(u, p);
                }
            }
            TargetSpec::Wandb { auth, base, .. } => {
                if let Some(k) = get("api_key") {
                    *auth = Auth::Basic("api".into(), k);
                }
                if let Some(b) = get("base_url") {
                    *base = b;
                }
            }
        }
        Ok(spec)
    }
}

/// A URL with any `user:pass@` removed, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_parse_and_credentials_never_show() {
        let TargetSpec::Mlflow { base, .. } =
            TargetSpec::parse("mlflow+http://127.0.0.1:5000").unwrap()
        else {
            panic!("not mlflow")
        };
        assert_eq!(base, "http://127.0.0.1:5000");
        let TargetSpec::Wandb {
            entity, project, ..
        } = TargetSpec::parse("wandb://team/proj").unwrap()
        else {
            panic!("not wandb")
        };
        assert_eq!(
            (entity.as_str(), project.as_deref()),
            ("team", Some("proj"))
        );
        let TargetSpec::Wandb { project, .. } = TargetSpec::parse("wandb://team").unwrap() else {
            panic!("not wandb")
        };
        assert_eq!(project, None);
        assert!(TargetSpec::parse("wandb://team/a/b").is_err());
        let e = TargetSpec::parse("ftp://x").unwrap_err().to_string();
        assert!(e.contains("unknown target scheme \"ftp\""), "{e}");
        let e = TargetSpec::parse("mlflow+http://bob:s3cret@host:5000")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("credentials do not belong in the URL"), "{e}");
        assert_eq!(redact_url("http://u:p@h:1/x"), "http://h:1/x");
    }

    #[test]
    fn a_config_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sync.toml");
        std::fs::write(
            &p,
            "to = \"mlflow+http://127.0.0.1:5000\"\ntoken = \"abc\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TargetSpec::from_config(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let TargetSpec::Mlflow { auth, .. } = TargetSpec::from_config(&p).unwrap() else {
            panic!("not mlflow")
        };
        assert!(matches!(auth, Auth::Bearer(t) if t == "abc"));
        std::fs::write(
            &p,
            "to = \"wandb://team\"\napi_key = \"k1\"\nbase_url = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let TargetSpec::Wandb { auth, base, .. } = TargetSpec::from_config(&p).unwrap() else {
            panic!("not wandb")
        };
        assert!(matches!(auth, Auth::Basic(u, k) if u == "api" && k == "k1"));
        assert_eq!(base, "http://127.0.0.1:9");
    }
}
