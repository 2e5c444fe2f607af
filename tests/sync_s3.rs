//! `difflog-sync` to an MLflow server whose artifacts live in object
//! storage (`--default-artifact-root s3://… --no-serve-artifacts`): a real
//! S3-compatible server (rclone serving a folder, started by scripts/test)
//! and a real MLflow server configured that way. What the bucket holds is
//! read from the served folder itself and through MLflow's own Python
//! client (boto3), never through difflog. Azure Blob storage the same way,
//! through Azurite (Microsoft's emulator, from npm).

mod common;

use common::proxy::{Faults, Proxy};
use common::{Req, TestPipeline};
use difflog::read::RunDir;
use difflog::{Init, Run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The bucket the MLflow server's artifact root is in (scripts/test).
const BUCKET: &str = "difflog-test";

/// The S3 server: endpoint, the folder it serves, its keys.
struct S3 {
    url: String,
    dir: PathBuf,
    access: String,
    secret: String,
}

fn s3() -> S3 {
    let v = std::env::var("DIFFLOG_TEST_S3").unwrap_or_else(|_| {
        panic!(
            "this test needs an S3 server and an MLflow server storing artifacts there: run \
             scripts/test (it sets DIFFLOG_TEST_S3=\"URL DIR ACCESS SECRET\" and \
             DIFFLOG_TEST_MLFLOW_S3_URL)"
        )
    });
    let f: Vec<&str> = v.split(' ').collect();
    assert_eq!(f.len(), 4, "DIFFLOG_TEST_S3 is URL DIR ACCESS SECRET: {v}");
    S3 {
        url: f[0].into(),
        dir: f[1].into(),
        access: f[2].into(),
        secret: f[3].into(),
    }
}

fn mlflow_url() -> String {
    let url = std::env::var("DIFFLOG_TEST_MLFLOW_S3_URL")
        .expect("DIFFLOG_TEST_MLFLOW_S3_URL: an MLflow server with an s3:// artifact root (scripts/test starts one)");
    assert!(
        ureq::get(&format!("{url}/health")).call().is_ok(),
        "the MLflow server at {url} does not answer"
    );
    url
}

/// `difflog-sync ARGS` with the S3 credentials and `endpoint`.
fn sync_cmd(args: &[&str], endpoint: &str, secret: &str) -> Command {
    let s = s3();
    let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
    c.args(args)
        .env("AWS_ACCESS_KEY_ID", &s.access)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("MLFLOW_S3_ENDPOINT_URL", endpoint)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("MLFLOW_TRACKING_TOKEN");
    c
}

fn upload(root: &Path, endpoint: &str) -> Output {
    let to = format!("mlflow+{}", mlflow_url());
    sync_cmd(
        &["upload", root.to_str().unwrap(), "--to", &to],
        endpoint,
        &s3().secret,
    )
    .output()
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{prefix}-{}-{}", std::process::id(), t.subsec_nanos())
}

/// A finished run of `calls` calls, two images each, `size` pixels.
fn record(root: &Path, project: &str, calls: u64, size: u32) -> PathBuf {
    let run = Run::create(
        Init::project(project)
            .name("s3 test")
            .config(serde_json::json!({"sampler": {"steps": 4}}))
            .root(root),
    )
    .unwrap();
    let mut p = TestPipeline::new();
    p.size = size;
    for c in 0..calls {
        run.record(&mut p, &Req::new(&["a prompt", "another"], 1000 * c))
            .unwrap();
    }
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

/// Every object in the bucket under the artifact roots of `runs` (MLflow
/// run ids): key → (size, modification time), read from the served folder.
fn objects(run_ids: &[String]) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let bucket = s3().dir.join(BUCKET);
    let mut stack = vec![bucket.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let key = p.strip_prefix(&bucket).unwrap().display().to_string();
            if run_ids.iter().any(|r| key.contains(&format!("/{r}/"))) {
                let md = e.metadata().unwrap();
                out.insert(key, (md.len(), md.modified().unwrap()));
            }
        }
    }
    out
}

/// What MLflow's own Python client (with boto3) reads of experiment
/// `project`: its runs, and for each every artifact downloaded (path →
/// SHA-256) and the first table through `load_table`.
fn read_back(project: &str) -> Value {
    let s = s3();
    read_back_from(
        &mlflow_url(),
        project,
        &[
            ("MLFLOW_S3_ENDPOINT_URL", s.url.as_str()),
            ("AWS_ACCESS_KEY_ID", s.access.as_str()),
            ("AWS_SECRET_ACCESS_KEY", s.secret.as_str()),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    )
}

/// [`read_back`] from the MLflow server at `url`, with `env` for the client.
fn read_back_from(url: &str, project: &str, env: &[(&str, &str)]) -> Value {
    let script = r#"
import hashlib, json, os, sys, tempfile
import mlflow
c = mlflow.MlflowClient()
exp = c.get_experiment_by_name(sys.argv[1])
out = []
for run in c.search_runs([exp.experiment_id], run_view_type=3):
    d = tempfile.mkdtemp()
    p = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=d)
    files = {}
    for root, _, names in os.walk(p):
        for n in names:
            f = os.path.join(root, n)
            files[os.path.relpath(f, p)] = hashlib.sha256(open(f, "rb").read()).hexdigest()
    t = c.load_table(exp.experiment_id, "Result-Table/Pipeline-Call-1.json", run_ids=[run.info.run_id])
    out.append({
        "run_id": run.info.run_id,
        "status": run.info.status,
        "artifact_uri": run.info.artifact_uri,
        "difflog_run_id": run.data.tags.get("difflog.run_id"),
        "steps": run.data.params.get("sampler.steps"),
        "files": files,
        "columns": list(t.columns),
        "first_image": t.iloc[0]["Generated-Image"]["filepath"],
    })
print(json.dumps(out))
"#;
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let o = Command::new(py)
        .args(["-c", script, project])
        .env("MLFLOW_TRACKING_URI", url)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "MLflow's client could not read the runs back: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

/// Checks that MLflow holds each run of `dirs` once, complete, every
/// artifact byte-identical to the run's media; returns the MLflow run ids.
fn assert_complete(project: &str, dirs: &[&Path]) -> Vec<String> {
    assert_read_back(read_back(project), &format!("s3://{BUCKET}/"), dirs)
}

/// [`assert_complete`] of what MLflow's client read (`back`), the artifact
/// URIs starting with `uri_prefix`.
fn assert_read_back(back: Value, uri_prefix: &str, dirs: &[&Path]) -> Vec<String> {
    let runs = back.as_array().unwrap();
    assert_eq!(runs.len(), dirs.len(), "MLflow runs: {back:#}");
    let mut ids = Vec::new();
    for dir in dirs {
        let r = RunDir::open(dir).unwrap();
        let view = r.view();
        let found: Vec<&Value> = runs
            .iter()
            .filter(|x| x["difflog_run_id"] == r.meta.id.as_str())
            .collect();
        assert_eq!(found.len(), 1, "one MLflow run for {}: {back:#}", r.meta.id);
        let run = found[0];
        assert_eq!(run["status"], "FINISHED");
        assert_eq!(run["steps"], "4");
        assert!(
            run["artifact_uri"]
                .as_str()
                .unwrap()
                .starts_with(uri_prefix),
            "{run:#}"
        );
        let files = run["files"].as_object().unwrap();
        let mut want = std::collections::BTreeSet::new();
        for m in &view.media {
            want.insert(format!("images/{}.png", m.digest));
            let got = files.get(&format!("images/{}.png", m.digest));
            assert_eq!(
                got.and_then(Value::as_str),
                Some(m.digest.as_str()),
                "image {} in the bucket",
                m.digest
            );
        }
        let images: Vec<&String> = files.keys().filter(|k| k.starts_with("images/")).collect();
        assert_eq!(images.len(), want.len(), "images: {images:?}");
        let tables = files
            .keys()
            .filter(|k| k.starts_with("Result-Table/"))
            .count();
        assert_eq!(tables, view.calls.len());
        for f in ["config", "workflow", "pipelines", "run"] {
            assert!(files.contains_key(&format!("difflog/{f}.json")), "{f}");
        }
        assert_eq!(
            run["columns"],
            serde_json::json!(["Prompt", "Negative-Prompt", "Generated-Image", "Seed"])
        );
        assert!(files.contains_key(run["first_image"].as_str().unwrap()));
        ids.push(run["run_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Rewrites a run's log with a later config record setting the sampler's
/// steps 4 → 5 before its end (every record re-encoded with a valid
/// checksum): the params, from the first value, stay; `config.json`
/// changes its bytes but not its length.
fn later_config_of_the_same_size(dir: &Path) {
    let run = RunDir::open(dir).unwrap();
    let mut log = Vec::new();
    let mut seq = run.records().first().map_or(1, |r| r.seq);
    for r in run.records() {
        if matches!(r.event, difflog::event::Event::RunFinished(_)) {
            let c = difflog::event::Event::Config(difflog::event::ConfigEvent {
                values: serde_json::Map::from_iter([(
                    "sampler".to_string(),
                    serde_json::json!({"steps": 5}),
                )]),
            });
            log.extend(difflog::event::encode_record(seq, &r.ts, &c).unwrap());
            seq += 1;
        }
        log.extend(difflog::event::encode_record(seq, &r.ts, &r.event).unwrap());
        seq += 1;
    }
    std::fs::write(dir.join("events.log"), log).unwrap();
}

#[test]
fn artifacts_go_straight_to_the_bucket_once_and_mlflows_client_reads_them_back() {
    let project = unique("s3-upload");
    let root = tempfile::tempdir().unwrap();
    let small = record(root.path(), &project, 3, 32);
    // One image over 8 MiB: it goes up in parts.
    let big = record(root.path(), &project, 1, 2600);
    let largest = RunDir::open(&big)
        .unwrap()
        .view()
        .media
        .iter()
        .map(|m| m.bytes)
        .max()
        .unwrap();
    assert!(largest > 8 * 1024 * 1024, "the large image is {largest} B");
    let o = upload(root.path(), &s3().url);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 uploaded, 0 failed"), "{}", text(&o));
    let ids = assert_complete(&project, &[&small, &big]);
    let before = objects(&ids);
    assert!(before.len() >= 2 * 5 + 6, "{before:#?}");

    // Again: nothing is written (same keys, same times).
    let o = upload(root.path(), &s3().url);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(objects(&ids), before, "a second upload wrote to the bucket");

    // The state lost: the runs are found again, and nothing is rewritten.
    std::fs::remove_dir_all(root.path().join(".difflog-sync")).unwrap();
    let o = upload(root.path(), &s3().url);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        objects(&ids),
        before,
        "an upload without state wrote to the bucket"
    );
    assert_eq!(assert_complete(&project, &[&small, &big]), ids);

    // Issue 32: changed bytes of the same size are written again. A later
    // config record sets 4 → 5 (the params, from the first value, stay;
    // config.json keeps its length), every record re-encoded with a valid
    // checksum: config.json must hold the new bytes; the objects whose
    // bytes did not change are still not rewritten.
    later_config_of_the_same_size(&small);
    let o = upload(root.path(), &s3().url);
    assert!(o.status.success(), "{}", text(&o));
    let after = objects(&ids);
    let read = |k: &String| {
        String::from_utf8_lossy(&std::fs::read(s3().dir.join(BUCKET).join(k)).unwrap()).into_owned()
    };
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| k.ends_with("difflog/config.json") && read(k).contains("\"steps\": 5"))
        .collect();
    let [key] = changed[..] else {
        panic!("the changed config was not written: {after:#?}")
    };
    assert_eq!(after[key].0, before[key].0, "the test needs the same size");
    for (k, v) in &before {
        if !k.ends_with(".json") {
            assert_eq!(after.get(k), Some(v), "{k}: unchanged bytes rewritten");
        }
    }
}

#[test]
fn resets_server_errors_and_slow_down_answers_still_deliver_everything() {
    let project = unique("s3-faults");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 4, 48);
    let proxy = Proxy::start(
        &s3().url,
        Faults {
            reset: 0.08,
            delay: 0.1,
            server_error: 0.08,
            slow_down: 0.12,
            lost_response: 0.08,
            too_many: 0.0,
        },
        5,
    );
    let t = Instant::now();
    let o = upload(root.path(), &proxy.url);
    assert!(o.status.success(), "{}", text(&o));
    let c = &proxy.counts;
    let faulted = c.faulted.load(std::sync::atomic::Ordering::SeqCst);
    let slowed = c.slowed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        faulted >= 5 && slowed >= 1,
        "only {faulted} faults, {slowed} SlowDown"
    );
    // Each SlowDown asked for a second's pause: honoured.
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "{slowed} SlowDown answers with Retry-After: 1 were not waited for"
    );
    assert_complete(&project, &[&dir]);
}

#[test]
fn wrong_credentials_are_one_clear_error_exit_3_and_no_retry_storm() {
    let project = unique("s3-creds");
    let root = tempfile::tempdir().unwrap();
    record(root.path(), &project, 2, 16);
    let proxy = Proxy::start(&s3().url, Faults::default(), 3);
    let wrong = "wrong-secret-value-12345";
    let to = format!("mlflow+{}", mlflow_url());
    let o = sync_cmd(
        &["upload", root.path().to_str().unwrap(), "--to", &to],
        &proxy.url,
        wrong,
    )
    .output()
    .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("refused the credentials"), "{out}");
    assert!(out.contains("AWS_SECRET_ACCESS_KEY"), "{out}");
    assert!(!out.contains(wrong), "the secret leaked: {out}");
    let sent = proxy
        .counts
        .forwarded
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent <= 8, "{sent} requests with refused credentials");
    // Nothing of it in the state either.
    let state = root.path().join(".difflog-sync");
    for e in std::fs::read_dir(&state).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(wrong),
            "the secret is in {}",
            e.path().display()
        );
    }
    // Right credentials afterwards: everything goes up.
    let o = upload(root.path(), &s3().url);
    assert!(o.status.success(), "{}", text(&o));
}

/// Azurite's development account (scripts/azurite-server): its published
/// key, not a secret.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The blobs of container `runs` under `prefix`: name → (ETag, last modified).
fn blobs(conn: &str, prefix: &str) -> Value {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = r#"
import json, os, sys
from azure.storage.blob import BlobServiceClient
s = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
c = s.get_container_client("runs")
print(json.dumps({b.name: [b.etag, str(b.last_modified), b.size] for b in c.list_blobs(name_starts_with=sys.argv[1])}))
"#;
    let o = Command::new(py)
        .args(["-c", script, prefix])
        .env("AZURE_STORAGE_CONNECTION_STRING", conn)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The bytes of blob `name` of container `runs`, as text.
fn blob_text(conn: &str, name: &str) -> String {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = r#"
import os, sys
from azure.storage.blob import BlobServiceClient
s = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
sys.stdout.buffer.write(s.get_container_client("runs").download_blob(sys.argv[1]).readall())
"#;
    let o = Command::new(py)
        .args(["-c", script, name])
        .env("AZURE_STORAGE_CONNECTION_STRING", conn)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn azure_blob_artifacts_through_azurite_once_and_mlflows_client_reads_them_back() {
    let endpoint = std::env::var("DIFFLOG_TEST_AZURE").unwrap_or_else(|_| {
        panic!("this test needs Azurite and an MLflow server storing artifacts there: run scripts/test (it sets DIFFLOG_TEST_AZURE and DIFFLOG_TEST_MLFLOW_AZURE_URL)")
    });
    let url = std::env::var("DIFFLOG_TEST_MLFLOW_AZURE_URL").unwrap();
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    );
    let project = unique("azure");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 2, 32);
    let upload = |conn: &str| {
        Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
            .args([
                "upload",
                root.path().to_str().unwrap(),
                "--to",
                &format!("mlflow+{url}"),
            ])
            .env("AZURE_STORAGE_CONNECTION_STRING", conn)
            .env_remove("AZURE_STORAGE_ACCESS_KEY")
            .output()
            .unwrap()
    };
    let o = upload(&conn);
    assert!(o.status.success(), "{}", text(&o));
    let back = read_back_from(
        &url,
        &project,
        &[("AZURE_STORAGE_CONNECTION_STRING", conn.as_str())],
    );
    let ids = assert_read_back(
        back,
        "wasbs://runs@devstoreaccount1.blob.core.windows.net/",
        &[&dir],
    );
    let of_run = || -> serde_json::Map<String, Value> {
        blobs(&conn, "mlruns/")
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(&ids[0]))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let before = of_run();
    assert!(before.len() >= 4 + 5, "{before:#?}");
    // The state lost: found again, nothing rewritten.
    std::fs::remove_dir_all(root.path().join(".difflog-sync")).unwrap();
    let o = upload(&conn);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(of_run(), before, "a second upload rewrote blobs");
    // Issue 32, as on S3: changed bytes of the same size are written again
    // (config.json), and blobs whose bytes did not change are not.
    later_config_of_the_same_size(&dir);
    let o = upload(&conn);
    assert!(o.status.success(), "{}", text(&o));
    let after = of_run();
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| {
            k.ends_with("difflog/config.json") && blob_text(&conn, k).contains("\"steps\": 5")
        })
        .collect();
    let [key] = changed[..] else {
        panic!("the changed config was not written: {after:#?}")
    };
    assert_eq!(
        after[key][2], before[key][2],
        "the test needs the same size"
    );
    for (k, v) in &before {
        if !k.ends_with(".json") {
            assert_eq!(after.get(k), Some(v), "{k}: unchanged bytes rewritten");
        }
    }
    // A wrong key: one clear error, exit 3, the key never shown.
    std::fs::remove_dir_all(root.path().join(".difflog-sync")).unwrap();
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let o = upload(&conn.replace(AZURITE_KEY, wrong_key));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("refused the credentials"), "{}", text(&o));
    assert!(!text(&o).contains(wrong_key), "{}", text(&o));
}

/// Issue 34 (1): `verify` reads a run back from the bucket itself (listed,
/// every image downloaded and digested, tables by content): complete after
/// the upload; an image deleted in the bucket and one overwritten are
/// named; `--repair` writes those two objects and no other, and the run
/// reads back complete — also through MLflow's own client.
#[test]
fn verify_reads_the_bucket_back_and_repair_writes_only_what_differs() {
    let project = unique("s3-verify");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 3, 32);
    let o = upload(root.path(), &s3().url);
    assert!(o.status.success(), "{}", text(&o));
    let to = format!("mlflow+{}", mlflow_url());
    let verify = |more: &[&str]| {
        let mut args = vec!["verify", root.path().to_str().unwrap(), "--to", &to];
        args.extend_from_slice(more);
        sync_cmd(&args, &s3().url, &s3().secret).output().unwrap()
    };
    let o = verify(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 complete, 0 differ"), "{}", text(&o));

    let ids = assert_complete(&project, &[&dir]);
    let before = objects(&ids);
    let view = RunDir::open(&dir).unwrap().view();
    let (d0, d1) = (
        &view.calls[&1].media[0].digest,
        &view.calls[&2].media[1].digest,
    );
    let key = |d: &str| {
        before
            .keys()
            .find(|k| k.ends_with(&format!("images/{d}.png")))
            .unwrap()
            .clone()
    };
    let (k0, k1) = (key(d0), key(d1));
    // Through the S3 API, as another client would: one image deleted, one
    // overwritten with other bytes of the same size.
    let s = s3();
    let tamper = r#"
import boto3, sys
url, access, secret, bucket, gone, changed = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=access,
                  aws_secret_access_key=secret, region_name="us-east-1")
s3.delete_object(Bucket=bucket, Key=gone)
size = s3.head_object(Bucket=bucket, Key=changed)["ContentLength"]
s3.put_object(Bucket=bucket, Key=changed, Body=b"x" * size)
"#;
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let o = Command::new(py)
        .args(["-c", tamper, &s.url, &s.access, &s.secret, BUCKET, &k0, &k1])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(&format!("missing file images/{d0}.png")),
        "{out}"
    );
    assert!(
        out.contains(&format!("different file images/{d1}.png")),
        "{out}"
    );
    assert!(out.contains("2 difference(s)"), "{out}");

    std::thread::sleep(Duration::from_millis(1100));
    let o = verify(&["--repair"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("complete (repaired 2)"), "{}", text(&o));
    let after = objects(&ids);
    for (k, v) in &before {
        if *k == k0 || *k == k1 {
            assert_eq!(after[k].0, v.0, "{k} is back whole");
            assert_ne!(after[k].1, v.1, "{k} was written again");
        } else if !k.ends_with(".json") {
            assert_eq!(
                after.get(k),
                Some(v),
                "{k}: rewritten though it did not differ"
            );
        }
    }
    assert_eq!(assert_complete(&project, &[&dir]), ids);
}
