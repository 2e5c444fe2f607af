//! One conformance suite for every sync target (issue 12): the same
//! scenarios, the same expectations, run against MLflow (the suite's real
//! server) and W&B (the protocol emulator). A new target (an object store, a
//! fleet's second server) gets its `Backend` here and inherits them all.
//!
//! What every target must show for a run, read back from the server in one
//! shape (`Holdings`): one remote run, marked finished; every image once,
//! byte-identical; one table per call; exactly one history entry per call
//! (MLflow's `timings/total_ms` step, W&B's table line) — a duplicate or a
//! gap shows here.

mod common;

use common::wandb::Emulator;
use common::{Req, TestPipeline};
use difflog::format::sha256_hex;
use difflog::read::RunDir;
use difflog::{Init, Run};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

/// What a server holds of one difflog run, in the same shape for every target.
#[derive(Debug, Clone, PartialEq, Default)]
struct Holdings {
    /// Remote runs in the project.
    runs: usize,
    /// Whether the run is marked finished.
    finished: bool,
    /// SHA-256 of every image file held (checked against its content).
    images: BTreeSet<String>,
    /// Stages (`Pipeline-Call-N`) whose table is held.
    tables: BTreeSet<String>,
    /// History entries per stage: exactly 1 each when nothing was doubled.
    entries: BTreeMap<String, usize>,
}

/// A sync target as the suite drives it.
trait Backend {
    /// For messages.
    fn name(&self) -> &'static str;
    /// The server's base URL.
    fn server(&self) -> String;
    /// `difflog-sync … --to` for the server at `base` (the server itself, or
    /// a proxy in front of it); the run's own project is used.
    fn to(&self, base: &str) -> String;
    /// Credentials and server settings for a `difflog-sync` command.
    fn env(&self, c: &mut Command, base: &str);
    /// Sets `secret` as the credential towards `base`; returns the user name
    /// it travels with (for the leak check).
    fn credential(&self, c: &mut Command, base: &str, secret: &str) -> &'static str;
    /// What the server holds of the difflog run `dir` (project `project`).
    fn holdings(&self, project: &str, dir: &Path) -> Holdings;
}

struct Mlflow;

impl Backend for Mlflow {
    fn name(&self) -> &'static str {
        "MLflow"
    }
    fn server(&self) -> String {
        common::mlflow::url()
    }
    fn to(&self, base: &str) -> String {
        format!("mlflow+{base}")
    }
    fn env(&self, c: &mut Command, _base: &str) {
        c.env_remove("MLFLOW_TRACKING_TOKEN")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD");
    }
    fn credential(&self, c: &mut Command, base: &str, secret: &str) -> &'static str {
        self.env(c, base);
        c.env("MLFLOW_TRACKING_TOKEN", secret);
        ""
    }
    fn holdings(&self, project: &str, dir: &Path) -> Holdings {
        use common::mlflow as mf;
        let id = RunDir::open(dir).unwrap().meta.id;
        let runs = mf::runs(project);
        let mut h = Holdings {
            runs: runs.len(),
            ..Default::default()
        };
        let Some(run) = runs
            .iter()
            .find(|r| mf::tag(r, "difflog.run_id").as_deref() == Some(id.as_str()))
        else {
            return h;
        };
        h.finished = run["info"]["status"] == "FINISHED";
        for (path, _) in mf::artifacts(run) {
            if let Some(name) = path.strip_prefix("images/") {
                let bytes = mf::artifact(run, &path);
                assert_eq!(format!("{}.png", sha256_hex(&bytes)), name, "{path}");
                h.images.insert(sha256_hex(&bytes));
            }
            if let Some(t) = path
                .strip_prefix("Result-Table/")
                .and_then(|t| t.strip_suffix(".json"))
            {
                h.tables.insert(t.to_string());
            }
        }
        let run_id = run["info"]["run_id"].as_str().unwrap();
        for m in mf::history(run_id, "timings/total_ms") {
            let stage = format!("Pipeline-Call-{}", m["step"]);
            *h.entries.entry(stage).or_default() += 1;
        }
        h
    }
}

struct Wandb(Emulator);

impl Backend for Wandb {
    fn name(&self) -> &'static str {
        "W&B"
    }
    fn server(&self) -> String {
        self.0.url.clone()
    }
    fn to(&self, _base: &str) -> String {
        "wandb://team".into()
    }
    fn env(&self, c: &mut Command, base: &str) {
        c.env("WANDB_BASE_URL", base).env("WANDB_API_KEY", KEY);
    }
    fn credential(&self, c: &mut Command, base: &str, secret: &str) -> &'static str {
        c.env("WANDB_BASE_URL", base).env("WANDB_API_KEY", secret);
        "api"
    }
    fn holdings(&self, project: &str, dir: &Path) -> Holdings {
        assert_eq!(self.0.violations(), Vec::<String>::new(), "W&B protocol");
        let id = RunDir::open(dir).unwrap().meta.id;
        let runs = self.0.runs(project);
        let mut h = Holdings {
            runs: runs.len(),
            ..Default::default()
        };
        let Some(run) = self
            .0
            .run(project, &difflog::sync::targets::wandb::run_name(&id))
        else {
            return h;
        };
        h.finished = run.state == "finished";
        for (path, bytes) in &run.files {
            if let Some(name) = path.strip_prefix("media/images/") {
                assert_eq!(format!("{}.png", sha256_hex(bytes)), *name, "{path}");
                h.images.insert(sha256_hex(bytes));
            }
        }
        for line in &run.history {
            for (k, v) in line.as_object().unwrap() {
                if let Some(stage) = k.strip_prefix("Result-Table/") {
                    if v["_type"] == "table-file"
                        && run.files.contains_key(v["path"].as_str().unwrap())
                    {
                        h.tables.insert(stage.to_string());
                    }
                    *h.entries.entry(stage.to_string()).or_default() += 1;
                }
            }
        }
        h
    }
}

/// What every target must hold once `dir` is uploaded whole.
fn expected(dir: &Path) -> Holdings {
    let view = RunDir::open(dir).unwrap().view();
    let stages: BTreeSet<String> = view
        .calls
        .values()
        .map(|c| c.started.stage.clone())
        .collect();
    Holdings {
        runs: 1,
        finished: true,
        images: view.media.iter().map(|m| m.digest.clone()).collect(),
        entries: stages.iter().map(|s| (s.clone(), 1)).collect(),
        tables: stages,
    }
}

/// A finished run of `calls` calls, two images each, in its own project.
fn record(root: &Path, calls: u64, size: u32) -> (PathBuf, String) {
    let project = common::mlflow::unique_project("conformance");
    let run = Run::create(Init::project(&project).name("conformance").root(root)).unwrap();
    let mut p = TestPipeline::new();
    p.size = size;
    for c in 0..calls {
        let mut r = Req::new(&["a prompt", "another"], 10 * c);
        r.negative = Some("blurry".into());
        run.record(&mut p, &r).unwrap();
    }
    run.finish().unwrap();
    (common::only_run(root), project)
}

fn upload(b: &dyn Backend, path: &Path) -> std::process::Output {
    let base = b.server();
    let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
    c.args(["upload", path.to_str().unwrap(), "--to", &b.to(&base)]);
    b.env(&mut c, &base);
    c.output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(Mlflow),
        Box::new(Wandb(Emulator::start(KEY, "team"))),
    ]
}

#[test]
fn every_target_holds_the_run_whole_and_a_second_upload_or_a_lost_state_changes_nothing() {
    for b in backends() {
        let root = tempfile::tempdir().unwrap();
        let (dir, project) = record(root.path(), 3, 16);
        let o = upload(b.as_ref(), root.path());
        assert!(o.status.success(), "{}: {}", b.name(), text(&o));
        let first = b.holdings(&project, &dir);
        assert_eq!(first, expected(&dir), "{}: first upload", b.name());
        // Each later upload must leave the server exactly as it was.
        let again = |label: &str| {
            let o = upload(b.as_ref(), root.path());
            assert!(o.status.success(), "{}: {}", b.name(), text(&o));
            assert_eq!(b.holdings(&project, &dir), first, "{}: {label}", b.name());
        };
        again("second upload");
        std::fs::remove_dir_all(root.path().join(".difflog-sync")).unwrap();
        again("after a lost state");
    }
}

#[test]
fn every_target_ends_whole_after_sigkills_of_the_uploader() {
    let mut rng = rand::rng();
    for b in backends() {
        let root = tempfile::tempdir().unwrap();
        let (dir, project) = record(root.path(), 8, 64);
        let want = expected(&dir);
        let mut partial = 0;
        // Through a proxy that holds half the requests 300 ms, so that an
        // upload takes seconds and the kills land in the middle of it.
        let slow = common::proxy::Faults {
            reset: 0.0,
            delay: 0.5,
            server_error: 0.0,
            too_many: 0.0,
            lost_response: 0.0,
            slow_down: 0.0,
        };
        let proxy = common::proxy::Proxy::start(&b.server(), slow, 7);
        for _ in 0..6 {
            let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
            c.args([
                "upload",
                root.path().to_str().unwrap(),
                "--to",
                &b.to(&proxy.url),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            b.env(&mut c, &proxy.url);
            let mut child = common::KillOnDrop(c.spawn().unwrap());
            std::thread::sleep(Duration::from_millis(rng.random_range(100..1500)));
            let _ = child.0.kill(); // SIGKILL
            let _ = child.0.wait();
            // Let the proxy deliver (or drop) what the dead uploader had in
            // flight before the next one starts: a request it holds 300 ms
            // would otherwise reach the server in the middle of the next
            // uploader's steps (a late CommitArtifact between CreateArtifact
            // and CreateArtifactFiles, which the emulator refuses).
            std::thread::sleep(Duration::from_millis(600));
            let h = b.holdings(&project, &dir);
            if h != Holdings::default() && h != want {
                partial += 1;
            }
        }
        // The kills landed mid-upload (else this tests nothing).
        assert!(partial >= 1, "{}: no kill left a partial upload", b.name());
        let o = upload(b.as_ref(), root.path());
        assert!(o.status.success(), "{}: {}", b.name(), text(&o));
        assert_eq!(b.holdings(&project, &dir), want, "{}", b.name());
    }
}

#[test]
fn every_target_delivers_everything_once_through_resets_errors_and_lost_answers() {
    for b in backends() {
        let root = tempfile::tempdir().unwrap();
        let (dir, project) = record(root.path(), 5, 32);
        let faults = common::proxy::Faults {
            reset: 0.05,
            delay: 0.05,
            server_error: 0.05,
            too_many: 0.04,
            lost_response: 0.05,
            slow_down: 0.0,
        };
        let proxy = common::proxy::Proxy::start(&b.server(), faults, 11);
        let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
        c.args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &b.to(&proxy.url),
        ]);
        b.env(&mut c, &proxy.url);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}: {}", b.name(), text(&o));
        let faulted = proxy
            .counts
            .faulted
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(faulted >= 2, "{}: only {faulted} faults injected", b.name());
        assert_eq!(b.holdings(&project, &dir), expected(&dir), "{}", b.name());
    }
}

/// A server that answers every request with 401; counts them.
fn refusing_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let c = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 8192];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = r#"{"errors":[{"message":"not logged in"}],"error_code":"UNAUTHENTICATED"}"#;
            let resp = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut s, resp.as_bytes());
        }
    });
    (url, count)
}

#[test]
fn every_target_stops_at_refused_credentials_with_exit_3_no_storm_and_no_leak() {
    for b in backends() {
        let root = tempfile::tempdir().unwrap();
        record(root.path(), 2, 16);
        let (url, count) = refusing_server();
        let secret = "sekrit-conformance-credential-0123456789";
        let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
        c.args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &b.to(&url),
            "--json",
        ]);
        let user = b.credential(&mut c, &url, secret);
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{}: {}", b.name(), text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["runs"][0]["error_code"],
            "credentials",
            "{}: {v}",
            b.name()
        );
        let n = count.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n <= 2, "{}: {n} requests after a 401", b.name());
        common::assert_no_leak(root.path(), &text(&o), user, secret);
    }
}
