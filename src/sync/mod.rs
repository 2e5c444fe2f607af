//! `difflog-sync`: uploads run directories to a tracking server, once and
//! completely, whenever the server is reachable.
//!
//! - [`engine`] syncs one run to its targets (read once, fed to each),
//!   idempotently;
//! - [`state`] remembers what each target acknowledged (SQLite beside the runs);
//! - [`targets`] speak each server's protocol behind one trait (the MLflow
//!   target with its object stores: S3, GCS, Azure, a shared filesystem);
//! - [`error`] is what every operation fails with; [`http`] and [`retry`]
//!   are the shared client and retry policy, and
//!   [`rate`] the bandwidth cap every upload shares;
//! - [`watch`] follows run directories as they grow (one queue and backoff
//!   per target);
//! - [`commands`] is what `upload`, `status` and `watch` print;
//! - [`clip`] makes a recorded video into the GIF W&B plays.

pub mod clip;
pub mod commands;
pub mod counts;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod http;
pub mod netwatch;
pub mod rate;
pub mod retry;
pub mod state;
pub mod targets;
pub mod verify;
pub mod watch;

use crate::error::{Error, Result};
use crate::read::find_runs;
use http::Auth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a remote run deleted on the server is made again
/// (`--recreate-deleted`); set once by the command line, read by the
/// targets.
static RECREATE_DELETED: AtomicBool = AtomicBool::new(false);

/// Asks the targets to re-create remote runs deleted on the server (a new
/// remote run, everything uploaded again) instead of reporting them.
pub fn set_recreate_deleted(on: bool) {
    RECREATE_DELETED.store(on, Ordering::Relaxed);
}

/// Whether remote runs deleted on the server are re-created.
pub fn recreate_deleted() -> bool {
    RECREATE_DELETED.load(Ordering::Relaxed)
}

/// Whether a remote run ended on the server by someone else is re-opened
/// (`--reopen-ended`); set once by the command line.
static REOPEN_ENDED: AtomicBool = AtomicBool::new(false);

/// Asks the targets to go on uploading into remote runs that were ended
/// on the server by someone else (their status is then difflog's again)
/// instead of reporting them.
pub fn set_reopen_ended(on: bool) {
    REOPEN_ENDED.store(on, Ordering::Relaxed);
}

/// Whether remote runs ended on the server are re-opened.
pub fn reopen_ended() -> bool {
    REOPEN_ENDED.load(Ordering::Relaxed)
}

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
        let spec = TargetSpec::parse_url(url)?;
        if let TargetSpec::Wandb { base, .. } = &spec {
            check_base_url("WANDB_BASE_URL", base)?;
        }
        spec.register_secrets();
        Ok(spec)
    }

    /// Tells [`crate::redact`] about the credentials this target carries.
    fn register_secrets(&self) {
        let auth = match self {
            TargetSpec::Mlflow { auth, .. } | TargetSpec::Wandb { auth, .. } => auth,
        };
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => crate::redact::register_secret(None, t),
            Auth::Basic(u, p) => crate::redact::register_secret(Some(u), p),
        }
    }

    fn parse_url(url: &str) -> Result<TargetSpec> {
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
        if rest.contains(['?', '#']) {
            return Err(bad(
                "a target URL takes no query or fragment (a token there would show in status, \
                 --json and the sync state, and API paths would be appended after it): \
                 use MLFLOW_TRACKING_TOKEN, WANDB_API_KEY or --config",
            ));
        }
        // Each target reads its own URL and environment.
        match scheme {
            "mlflow+http" | "mlflow+https" => Ok(targets::mlflow::Mlflow::spec(
                &scheme["mlflow+".len()..],
                rest,
            )),
            "wandb" => targets::wandb::Wandb::spec(rest).map_err(bad),
            other => Err(bad(&format!(
                "unknown target scheme {other:?}: supported are mlflow+http, mlflow+https and wandb"
            ))),
        }
    }

    /// Reads the targets of a TOML config file (which must not be readable
    /// by others, since it may hold a token): one target at the top level,
    ///
    /// ```toml
    /// to = "mlflow+https://mlflow.example.com"
    /// token = "…"            # or: username = "…" / password = "…"
    /// ```
    ///
    /// or several, each with its own credentials:
    ///
    /// ```toml
    /// [[target]]
    /// to = "mlflow+https://mlflow.example.com"
    /// token = "…"
    ///
    /// [[target]]
    /// to = "wandb://my-team/my-project"
    /// api_key = "…"
    /// base_url = "https://wandb.example.com"   # optional: W&B Server
    /// ```
    pub fn from_config(path: &Path) -> Result<Vec<TargetSpec>> {
        let bad = |why: String| Error::file(path, why);
        let text = crate::redact::read_private_file(path, "config", MAX_CONFIG_BYTES)?;
        // The parser's own message quotes the offending line, which may hold
        // a token: only its reason and the line number are shown.
        let v = crate::error::toml_table(&text).map_err(bad)?;
        let Some(list) = v.get("target") else {
            return Ok(vec![TargetSpec::from_table(&v, &bad)?]);
        };
        if v.len() > 1 {
            return Err(bad(
                "give the targets as [[target]] tables only, or one target at the top level".into(),
            ));
        }
        let tables = list
            .as_array()
            .ok_or_else(|| bad("`target` must be [[target]] tables".into()))?;
        let mut specs = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            let t = t
                .as_table()
                .ok_or_else(|| bad("`target` must be [[target]] tables".into()))?;
            let bad_i = |why: String| bad(format!("target {}: {why}", i + 1));
            specs.push(TargetSpec::from_table(t, &bad_i)?);
        }
        if specs.is_empty() {
            return Err(bad("no target".into()));
        }
        Ok(specs)
    }

    /// One target from a config table.
    fn from_table(v: &toml::Table, bad: &dyn Fn(String) -> Error) -> Result<TargetSpec> {
        let known: &[&str] = &["to", "token", "username", "password", "api_key", "base_url"];
        for (k, val) in v {
            if !known.contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown setting {k:?} (known: {})",
                    known.join(", ")
                )));
            }
            if !val.is_str() {
                return Err(bad(format!("{k} must be a string")));
            }
        }
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let to = get("to").ok_or_else(|| bad("no `to = \"…\"` target".into()))?;
        // The URL's errors are this table's: named by the file and the
        // target's number, not as if `--to` had been typed.
        let in_table = |e: Error| match e {
            Error::Setting { name, value, why } => {
                let name = if name == "--to" {
                    "to".to_string()
                } else {
                    name
                };
                bad(format!("{name} = {value:?}: {why}"))
            }
            other => other,
        };
        let mut spec = TargetSpec::parse_url(&to).map_err(in_table)?;
        // Each target reads its own settings.
        match &mut spec {
            TargetSpec::Mlflow { auth, .. } => {
                targets::mlflow::Mlflow::configure(auth, &get).map_err(&bad)?
            }
            TargetSpec::Wandb { auth, base, .. } => {
                if let Some(b) = targets::wandb::Wandb::configure(auth, &get).map_err(&bad)? {
                    check_base_url("base_url", &b).map_err(in_table)?;
                    *base = b;
                }
            }
        }
        spec.register_secrets();
        Ok(spec)
    }

    /// The targets of the command line: every target of `--config` and
    /// every `--to` (credentials from the environment); at least one.
    pub fn from_args(to: &[String], config: Option<&Path>) -> Result<Vec<TargetSpec>> {
        let mut specs = Vec::new();
        if let Some(c) = config {
            specs.extend(TargetSpec::from_config(c)?);
        }
        for t in to {
            specs.push(TargetSpec::parse(t)?);
        }
        if specs.is_empty() {
            return Err(Error::Invalid("give --to URL or --config FILE".into()));
        }
        Ok(specs)
    }
}

/// Largest config file read (a config is a few lines).
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// A server URL given in a setting: `http(s)://host…`, with no credentials
/// in it (they would show in logs, the state and `status`).
fn check_base_url(name: &str, url: &str) -> Result<()> {
    let bad = |why: &str| Error::Setting {
        name: name.into(),
        value: redact_url(url),
        why: why.into(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("expected a URL such as https://wandb.example.com"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad("expected an http:// or https:// URL"));
    }
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.contains('@') {
        return Err(bad(
            "credentials do not belong in the URL (they would show in logs, the sync state and status): use WANDB_API_KEY or api_key in --config",
        ));
    }
    if host.is_empty() {
        return Err(bad("the URL has no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(bad(
            "a server URL takes no query or fragment (a token there would show in logs, the sync state and status)",
        ));
    }
    Ok(())
}

/// A URL with any `user:pass@`, query and fragment removed, for messages.
pub fn redact_url(url: &str) -> String {
    let url = match url.find(['?', '#']) {
        Some(i) => &url[..i],
        None => url,
    };
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

/// Groups the given paths (runs or roots of runs) by the root whose state
/// they use: a run's parent, or the root itself.
pub fn runs_by_root(paths: &[PathBuf]) -> Result<BTreeMap<PathBuf, Vec<PathBuf>>> {
    runs_by_root_with(paths, &mut Vec::new())
}

/// Like [`runs_by_root`], also accepting `difflog pack` archives: each is
/// extracted (completely, and verified) into a temporary folder kept in
/// `keep`, and its runs use the state beside the archive. A truncated or
/// corrupt archive is an error before anything is uploaded.
pub fn runs_by_root_with(
    paths: &[PathBuf],
    keep: &mut Vec<tempfile::TempDir>,
) -> Result<BTreeMap<PathBuf, Vec<PathBuf>>> {
    let mut out: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for p in paths {
        if !p.exists() {
            return Err(Error::Invalid(format!(
                "{}: no such run or directory",
                p.display()
            )));
        }
        if p.is_file() {
            let parent = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".difflog-sync-unpack-")
                .tempdir_in(parent)
                .map_err(|e| Error::io(parent, "create unpack folder", e))?;
            let runs = crate::pack::extract(p, tmp.path())?;
            out.entry(parent.to_path_buf()).or_default().extend(runs);
            keep.push(tmp);
        } else if p.join(crate::format::RUN_JSON).is_file() {
            let root = p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            out.entry(root).or_default().push(p.clone());
        } else {
            let runs = find_runs(p)?;
            out.entry(p.clone()).or_default().extend(runs);
        }
    }
    Ok(out)
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
        // Issue 32, item 11: no query or fragment, and no echo of it.
        for url in [
            "mlflow+http://host:5000/?access_token=tok-sekrit-1",
            "mlflow+https://host/base#tok-sekrit-1",
            "wandb://team/proj?api_key=tok-sekrit-1",
        ] {
            let e = TargetSpec::parse(url).unwrap_err().to_string();
            assert!(e.contains("no query or fragment"), "{url}: {e}");
            assert!(!e.contains("tok-sekrit-1"), "{e}");
        }
        assert!(
            check_base_url("WANDB_BASE_URL", "https://w.example.com/?k=tok-sekrit-1")
                .unwrap_err()
                .to_string()
                .contains("no query or fragment")
        );
        assert_eq!(redact_url("https://h/x?sig=abc#f"), "https://h/x");
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
        let TargetSpec::Mlflow { auth, .. } = TargetSpec::from_config(&p).unwrap().remove(0) else {
            panic!("not mlflow")
        };
        assert!(matches!(auth, Auth::Bearer(t) if t == "abc"));
        std::fs::write(
            &p,
            "to = \"wandb://team\"\napi_key = \"k1\"\nbase_url = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let TargetSpec::Wandb { auth, base, .. } = TargetSpec::from_config(&p).unwrap().remove(0)
        else {
            panic!("not wandb")
        };
        assert!(matches!(auth, Auth::Basic(u, k) if u == "api" && k == "k1"));
        assert_eq!(base, "http://127.0.0.1:9");
    }

    /// Issue 13 (5, 6, 10, 17): configs are regular 0600 files with known
    /// keys and complete credentials; their errors never echo a secret; a
    /// server URL with credentials in it is refused.
    #[test]
    fn bad_configs_are_clear_errors_that_echo_no_secret() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let cases = [
            ("typo.toml", "to = \"mlflow+http://h:1\"\ntokn = \"sekrit-typo\"\n", "unknown setting \"tokn\""),
            ("half.toml", "to = \"mlflow+http://h:1\"\npassword = \"sekrit-half\"\n", "password without username"),
            ("user.toml", "to = \"mlflow+http://h:1\"\nusername = \"u\"\n", "username without password"),
            ("both.toml", "to = \"mlflow+http://h:1\"\ntoken = \"sekrit-both\"\nusername = \"u\"\npassword = \"p\"\n", "either token or username"),
            ("wrong.toml", "to = \"wandb://team\"\ntoken = \"sekrit-wrong\"\n", "W&B takes api_key"),
            ("number.toml", "to = \"mlflow+http://h:1\"\ntoken = 12345678\n", "token must be a string"),
            ("broken.toml", "to = \"mlflow+http://h:1\"\ntoken = \"sekrit-broken\n", "invalid TOML on line 2"),
            ("creds.toml", "to = \"wandb://team\"\nbase_url = \"https://me:sekrit-pw@wandb.example.com\"\n", "credentials do not belong in the URL"),
            // Issue 32: an error in the second table names it, not `--to`.
            ("second.toml", "[[target]]\nto = \"mlflow+http://h:1\"\n[[target]]\nto = \"ftp://h\"\n", "second.toml: target 2: to = \"ftp://h\": unknown target scheme"),
            ("query.toml", "[[target]]\nto = \"mlflow+http://h:1/?token=sekrit-q\"\n", "query.toml: target 1: to = \"mlflow+http://h:1\": a target URL takes no query"),
        ];
        for (name, text, want) in cases {
            let e = TargetSpec::from_config(&write(name, text))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{name}: {e}");
            assert!(
                !e.contains("sekrit"),
                "{name}: the secret is in the error: {e}"
            );
        }
        let e = TargetSpec::from_config(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("must be a regular file") && e.contains("a directory"),
            "{e}"
        );
        let fifo = d.path().join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = TargetSpec::from_config(&fifo).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
    }

    #[test]
    fn a_config_lists_several_targets_each_with_its_own_credentials() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sync.toml");
        let write = |text: &str| {
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(
            "[[target]]\nto = \"mlflow+http://127.0.0.1:5000\"\ntoken = \"t-one\"\n\n\
             [[target]]\nto = \"wandb://team/p\"\napi_key = \"k-two\"\n",
        );
        let specs = TargetSpec::from_config(&p).unwrap();
        assert_eq!(specs.len(), 2);
        assert!(
            matches!(&specs[0], TargetSpec::Mlflow { auth: Auth::Bearer(t), .. } if t == "t-one")
        );
        assert!(
            matches!(&specs[1], TargetSpec::Wandb { auth: Auth::Basic(_, k), .. } if k == "k-two")
        );
        // With --to as well: all of them, config first.
        let all =
            TargetSpec::from_args(&["mlflow+http://127.0.0.1:6000".into()], Some(&p)).unwrap();
        assert_eq!(all.len(), 3);
        // A bad target names its place in the list.
        write("[[target]]\nto = \"mlflow+http://h:1\"\n[[target]]\nto = \"mlflow+http://h:2\"\ntoken = 5\n");
        let e = TargetSpec::from_config(&p).unwrap_err().to_string();
        assert!(e.contains("target 2: token must be a string"), "{e}");
        write("to = \"mlflow+http://h:1\"\n[[target]]\nto = \"mlflow+http://h:2\"\n");
        let e = TargetSpec::from_config(&p).unwrap_err().to_string();
        assert!(e.contains("[[target]] tables only"), "{e}");
        write("target = 3\n");
        assert!(TargetSpec::from_config(&p).is_err());
        assert!(TargetSpec::from_args(&[], None).is_err());
    }

    #[test]
    fn a_wandb_base_url_with_credentials_is_refused() {
        // What `parse` checks WANDB_BASE_URL with (the environment is not
        // changed here: other tests read it at the same time).
        let e = check_base_url("WANDB_BASE_URL", "https://me:sekrit-env@wandb.example.com")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WANDB_BASE_URL") && e.contains("credentials do not belong"),
            "{e}"
        );
        assert!(!e.contains("sekrit"), "{e}");
    }
}
