//! One conformance suite for every sync target (issue 12): the same
//! scenarios, the same expectations, run against MLflow (the suite's real
//! server), W&B (the protocol emulator), and MLflow servers whose artifacts
//! live in an object store written to directly (S3 through rclone, Azure
//! Blob through Azurite; issue 31): there the proxies, the SIGKILLs and the
//! refusing server stand in front of the object store, where the images go.
//! A new target (a fleet's second server) gets its `Backend` here and
//! inherits them all.
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
    /// Sets `secret` as the credential towards `base` (as it is, or base64
    /// where the protocol wants a key in base64); returns the user name it
    /// travels with (for the leak check).
    fn credential(&self, c: &mut Command, base: &str, secret: &str) -> &'static str;
    /// What the server holds of the difflog run `dir` (project `project`).
    fn holdings(&self, project: &str, dir: &Path) -> Holdings;
    /// How many requests may be on their way before the first answer: one
    /// at a time (and its one follow-up) to a tracker's API; an object
    /// store gets an upload's first batch at once (`--concurrency` 4 jobs,
    /// the run's metadata files in one of them).
    fn first_requests(&self) -> usize {
        2
    }
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
        mlflow_holdings(&mf::url(), project, dir, |run| {
            mf::artifacts(run)
                .into_iter()
                .map(|(path, _)| {
                    let digest = sha256_hex(&mf::artifact(run, &path));
                    (path, digest)
                })
                .collect()
        })
    }
}

/// What the MLflow server at `server` holds of the difflog run `dir`:
/// its runs and status from the server, its artifacts (path → SHA-256 of
/// the bytes held) from `files` of the MLflow run.
fn mlflow_holdings(
    server: &str,
    project: &str,
    dir: &Path,
    files: impl Fn(&serde_json::Value) -> Vec<(String, String)>,
) -> Holdings {
    use common::mlflow as mf;
    let id = RunDir::open(dir).unwrap().meta.id;
    let runs = mf::runs_at(server, project);
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
    for (path, digest) in files(run) {
        if let Some(name) = path.strip_prefix("images/") {
            assert_eq!(format!("{digest}.png"), name, "{path}");
            h.images.insert(digest);
        }
        if let Some(t) = path
            .strip_prefix("Result-Table/")
            .and_then(|t| t.strip_suffix(".json"))
        {
            h.tables.insert(t.to_string());
        }
    }
    let run_id = run["info"]["run_id"].as_str().unwrap();
    for m in mf::history_at(server, run_id, "timings/total_ms") {
        let stage = format!("Pipeline-Call-{}", m["step"]);
        *h.entries.entry(stage).or_default() += 1;
    }
    h
}

/// The S3 server of `scripts/test`: endpoint, the folder it serves, keys.
fn s3_env() -> (String, PathBuf, String, String) {
    let v = std::env::var("DIFFLOG_TEST_S3").unwrap_or_else(|_| {
        panic!("this test needs the S3 server and the MLflow server storing artifacts there: run scripts/test (it sets DIFFLOG_TEST_S3 and DIFFLOG_TEST_MLFLOW_S3_URL)")
    });
    let f: Vec<&str> = v.split(' ').collect();
    assert_eq!(f.len(), 4, "DIFFLOG_TEST_S3 is URL DIR ACCESS SECRET: {v}");
    (f[0].into(), f[1].into(), f[2].into(), f[3].into())
}

/// `name`'s value, or a failure saying scripts/test sets it.
fn env_var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("this test needs {name}: run scripts/test, which sets it"))
}

/// The S3 endpoint `base` and keys for a `difflog-sync` command (no other
/// AWS or MLflow credentials).
fn s3_keys(c: &mut Command, base: &str, access: &str, secret: &str) {
    c.env("AWS_ACCESS_KEY_ID", access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("MLFLOW_S3_ENDPOINT_URL", base)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("MLFLOW_TRACKING_TOKEN");
}

/// MLflow with an `s3://` artifact root; images written to S3 directly.
struct S3;

impl Backend for S3 {
    fn name(&self) -> &'static str {
        "MLflow + S3"
    }
    fn first_requests(&self) -> usize {
        12
    }
    fn server(&self) -> String {
        s3_env().0
    }
    fn to(&self, _base: &str) -> String {
        format!("mlflow+{}", env_var("DIFFLOG_TEST_MLFLOW_S3_URL"))
    }
    fn env(&self, c: &mut Command, base: &str) {
        let (_, _, access, secret) = s3_env();
        s3_keys(c, base, &access, &secret);
    }
    fn credential(&self, c: &mut Command, base: &str, secret: &str) -> &'static str {
        s3_keys(c, base, "difflog-conformance", secret);
        ""
    }
    fn holdings(&self, project: &str, dir: &Path) -> Holdings {
        let served = s3_env().1;
        let server = env_var("DIFFLOG_TEST_MLFLOW_S3_URL");
        mlflow_holdings(&server, project, dir, |run| {
            let uri = run["info"]["artifact_uri"].as_str().unwrap();
            let root = served.join(uri.strip_prefix("s3://").unwrap());
            let mut out = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        let rel = p.strip_prefix(&root).unwrap().display().to_string();
                        out.push((rel, sha256_hex(&std::fs::read(&p).unwrap())));
                    }
                }
            }
            out
        })
    }
}

/// Azurite's development account (scripts/azurite-server): its published
/// key, not a secret.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A connection string for Azurite's account at `endpoint` (scheme, host
/// and port) with `key`.
fn azure_connection(endpoint: &str, key: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={}/devstoreaccount1;",
        endpoint.trim_end_matches('/')
    )
}

/// MLflow with a `wasbs://` artifact root; images written to Azure Blob
/// storage (Azurite) directly.
struct Azure;

impl Backend for Azure {
    fn name(&self) -> &'static str {
        "MLflow + Azure"
    }
    fn first_requests(&self) -> usize {
        12
    }
    fn server(&self) -> String {
        let url = env_var("DIFFLOG_TEST_AZURE");
        url.trim_end_matches('/')
            .trim_end_matches("/devstoreaccount1")
            .to_string()
    }
    fn to(&self, _base: &str) -> String {
        format!("mlflow+{}", env_var("DIFFLOG_TEST_MLFLOW_AZURE_URL"))
    }
    fn env(&self, c: &mut Command, base: &str) {
        c.env(
            "AZURE_STORAGE_CONNECTION_STRING",
            azure_connection(base, AZURITE_KEY),
        )
        .env_remove("AZURE_STORAGE_ACCESS_KEY")
        .env_remove("MLFLOW_TRACKING_TOKEN");
    }
    fn credential(&self, c: &mut Command, base: &str, secret: &str) -> &'static str {
        use base64::Engine;
        // An account key is base64: the secret travels as such.
        let key = base64::engine::general_purpose::STANDARD.encode(secret);
        self.env(c, base);
        c.env(
            "AZURE_STORAGE_CONNECTION_STRING",
            azure_connection(base, &key),
        );
        ""
    }
    fn holdings(&self, project: &str, dir: &Path) -> Holdings {
        let server = env_var("DIFFLOG_TEST_MLFLOW_AZURE_URL");
        let conn = azure_connection(&self.server(), AZURITE_KEY);
        mlflow_holdings(&server, project, dir, |run| {
            let uri = run["info"]["artifact_uri"].as_str().unwrap();
            let prefix = uri
                .split_once(".blob.core.windows.net/")
                .map(|(_, p)| format!("{}/", p.trim_end_matches('/')))
                .unwrap();
            let script = r#"
import hashlib, json, os, sys
from azure.storage.blob import BlobServiceClient
c = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"]).get_container_client("runs")
p = sys.argv[1]
print(json.dumps({b.name[len(p):]: hashlib.sha256(c.download_blob(b.name).readall()).hexdigest() for b in c.list_blobs(name_starts_with=p)}))
"#;
            let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
            let o = Command::new(py)
                .args(["-c", script, &prefix])
                .env("AZURE_STORAGE_CONNECTION_STRING", &conn)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
            let v: BTreeMap<String, String> = serde_json::from_slice(&o.stdout).unwrap();
            v.into_iter().collect()
        })
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
        Box::new(S3),
        Box::new(Azure),
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

/// A server that answers every request with 401; keeps each request's
/// first line (requests, not connections: a client may open connections
/// for requests it then drops once the first answer is a 401).
fn refusing_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
            if n == 0 {
                continue;
            }
            let first = String::from_utf8_lossy(&buf[..n]);
            log.lock()
                .unwrap()
                .push(first.lines().next().unwrap_or("").to_string());
            let body = r#"{"errors":[{"message":"not logged in"}],"error_code":"UNAUTHENTICATED"}"#;
            let resp = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut s, resp.as_bytes());
        }
    });
    (url, seen)
}

#[test]
fn every_target_stops_at_refused_credentials_with_exit_3_no_storm_and_no_leak() {
    for b in backends() {
        let root = tempfile::tempdir().unwrap();
        record(root.path(), 2, 16);
        let (url, seen) = refusing_server();
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
        // No storm: no request is sent again after its 401, and no more go
        // out than were on their way when the first 401 came (one at a time
        // to a tracker's API; an upload's first batch of objects at once to
        // an object store).
        let seen = seen.lock().unwrap().clone();
        let once: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            once.len(),
            seen.len(),
            "{}: a request repeated after a 401: {seen:#?}",
            b.name()
        );
        assert!(
            seen.len() <= b.first_requests(),
            "{}: {} requests after a 401: {seen:#?}",
            b.name(),
            seen.len()
        );
        common::assert_no_leak(root.path(), &text(&o), user, secret);
    }
}
