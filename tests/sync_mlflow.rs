//! `difflog-sync` against a real MLflow server (started by scripts/test):
//! batch upload, idempotent re-upload, watching a live run, SIGKILL of the
//! daemon mid-upload, and bad input. Everything is checked through MLflow's
//! own REST API.

mod common;

use common::mlflow as mf;
use common::{Req, TestPipeline};
use difflog::event::Cell;
use difflog::read::RunDir;
use difflog::run::media::sha256_hex;
use difflog::{Init, Run};
use rand::Rng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sync_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_difflog-sync"))
}

fn sync(args: &[&str]) -> Output {
    Command::new(sync_bin())
        .args(args)
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .output()
        .unwrap()
}

/// `difflog-sync watch ROOT --to TARGET`, killed when the test lets go of it.
fn watch_daemon(root: &Path, target: &str, stderr: Stdio) -> common::KillOnDrop {
    common::KillOnDrop(
        Command::new(sync_bin())
            .args(["watch", root.to_str().unwrap(), "--to", target])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// `difflog-sync upload ROOT --to` the test server.
fn upload(root: &Path) -> Output {
    sync(&["upload", root.to_str().unwrap(), "--to", &mf::target()])
}

/// [`upload`] with one more flag.
fn upload_with(root: &Path, flag: &str) -> Output {
    sync(&[
        "upload",
        root.to_str().unwrap(),
        "--to",
        &mf::target(),
        flag,
    ])
}

/// [`upload`] of a root whose one run must fail with error `code` (JSON).
fn upload_refused(root: &Path, code: &str) -> Output {
    let o = upload_with(root, "--json");
    assert!(!o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"][0]["error_code"], code, "{v}");
    o
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Records a finished run with `calls` calls of `per_call` images, a config
/// and a metric.
fn record(root: &Path, project: &str, calls: u64, per_call: usize, size: u32) -> PathBuf {
    record_with(root, project, (calls, per_call, size), false)
}

/// [`record`], with a video pipeline's call after the others when `video`.
fn record_with(
    root: &Path,
    project: &str,
    (calls, per_call, size): (u64, usize, u32),
    video: bool,
) -> PathBuf {
    let run = Run::create(
        Init::project(project)
            .name("sync test")
            .tag("t1")
            .config(
                serde_json::json!({"sampler": {"steps": 4, "eta": 0.0}, "note": "x".repeat(7000)}),
            )
            .root(root),
    )
    .unwrap();
    let mut p = TestPipeline::new();
    p.size = size;
    for c in 0..calls {
        let mut r = Req::new(&["a prompt", "another prompt"], 1000 * c);
        r.per_prompt = per_call.div_ceil(2).max(1);
        r.negative = Some("blurry".into());
        run.record(&mut p, &r).unwrap();
    }
    if video {
        let clip = common::ClipRequest {
            frames: 4,
            fps: 8.0,
            size: common::CLIP_SIZE,
        };
        run.record(&mut common::ClipPipeline, &clip).unwrap();
    }
    run.log_metric("clip_score", 0.25, Some(3)).unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

/// Checks that the server holds `dir` completely and exactly once.
fn assert_complete(project: &str, dir: &Path, status: &str) -> Value {
    let r = RunDir::open(dir).unwrap();
    let view = r.view();
    let run = mf::run_for(project, &r.meta.id);
    assert_eq!(run["info"]["status"], status);
    assert_eq!(run["info"]["run_name"], r.meta.name);
    assert_eq!(mf::param(&run, "sampler.steps").as_deref(), Some("4"));
    assert_eq!(
        mf::param(&run, "note"),
        None,
        "a value over 6000 characters is not a param"
    );
    assert_eq!(
        mf::param(&run, "pipeline.1.class").as_deref(),
        Some("TestPipeline")
    );
    assert_eq!(mf::tag(&run, "difflog.tags").as_deref(), Some("t1"));
    let run_id = run["info"]["run_id"].as_str().unwrap().to_string();
    let arts: Vec<String> = mf::artifacts(&run).into_iter().map(|(p, _)| p).collect();
    // Every image once, byte-identical.
    let mut digests = std::collections::BTreeSet::new();
    for m in &view.media {
        digests.insert((m.digest.clone(), m.format.clone()));
    }
    let images: Vec<&String> = arts.iter().filter(|p| p.starts_with("images/")).collect();
    assert_eq!(
        images.len(),
        digests.len(),
        "images on the server: {images:?}"
    );
    for (d, ext) in &digests {
        let bytes = mf::artifact(&run, &format!("images/{d}.{ext}"));
        assert_eq!(&sha256_hex(&bytes), d, "image {d} differs on the server");
    }
    // One table per finished call listing every row; timings once per call.
    for call in view.calls.values() {
        let path = format!("Result-Table/{}.json", call.started.stage);
        let table: Value = serde_json::from_slice(&mf::artifact(&run, &path)).unwrap();
        assert_eq!(table["columns"], serde_json::json!(call.started.columns));
        let data = table["data"].as_array().unwrap();
        assert_eq!(data.len(), call.rows.len(), "{path}");
        for (row, cells) in call.rows.iter().zip(data) {
            for (i, c) in row.cells.iter().enumerate() {
                if let Cell::Image { digest, path, .. } = c {
                    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
                    assert_eq!(cells[i]["filepath"], format!("images/{digest}.{ext}"));
                }
            }
        }
    }
    let logged: Value =
        serde_json::from_str(&mf::tag(&run, "mlflow.loggedArtifacts").unwrap()).unwrap();
    assert_eq!(logged.as_array().unwrap().len(), view.calls.len());
    let h = mf::history(&run_id, "timings/total_ms");
    assert_eq!(h.len(), view.calls.len(), "timings/total_ms history: {h:?}");
    let steps: Vec<u64> = h.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    let mut want: Vec<u64> = view.calls.keys().map(|&c| u64::from(c)).collect();
    let mut got = steps.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(mf::history(&run_id, "clip_score").len(), 1);
    for f in [
        "difflog/config.json",
        "difflog/workflow.json",
        "difflog/pipelines.json",
        "difflog/run.json",
    ] {
        assert!(arts.contains(&f.to_string()), "{f} missing: {arts:?}");
    }
    let wf: Value = serde_json::from_slice(&mf::artifact(&run, "difflog/workflow.json")).unwrap();
    assert_eq!(wf.as_array().unwrap().len(), view.calls.len());
    run
}

/// What the server shows of a project, for before/after comparisons.
fn snapshot(project: &str) -> Value {
    let mut runs = Vec::new();
    for r in mf::runs(project) {
        let id = r["info"]["run_id"].as_str().unwrap().to_string();
        let mut metrics = Vec::new();
        for m in r["data"]["metrics"].as_array().cloned().unwrap_or_default() {
            metrics.push(mf::history(&id, m["key"].as_str().unwrap()));
        }
        let mut data = r["data"].clone();
        data["metrics"] = Value::Null;
        runs.push(serde_json::json!({
            "info": {"status": r["info"]["status"], "end_time": r["info"]["end_time"]},
            "data": data, "metrics": metrics, "artifacts": mf::artifacts(&r),
        }));
    }
    Value::Array(runs)
}

#[test]
fn upload_puts_a_finished_run_on_the_server_once_and_again_changes_nothing() {
    let project = mf::unique_project("upload");
    let root = tempfile::tempdir().unwrap();
    // Three calls of images, then one of a video (issue 37).
    let dir = record_with(root.path(), &project, (3, 2, 32), true);
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 uploaded, 0 failed"), "{}", text(&o));
    let run = assert_complete(&project, &dir, "FINISHED");
    // The video is an artifact the table references (checked above), its
    // MP4 whole: every frame.
    let view = RunDir::open(&dir).unwrap().view();
    let videos: Vec<_> = view.media.iter().filter(|m| m.video.is_some()).collect();
    assert_eq!(videos.len(), 1);
    let file = mf::artifact(&run, &format!("images/{}.mp4", videos[0].digest));
    assert_eq!(difflog::read::mp4_video(&file).map(|v| v.frames), Ok(4));
    let before = snapshot(&project);

    let o = sync(&[
        "upload",
        dir.to_str().unwrap(),
        "--to",
        &mf::target(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(
        snapshot(&project),
        before,
        "a second upload changed the server"
    );

    // A lost state finds the remote run again instead of creating another.
    std::fs::remove_dir_all(root.path().join(".difflog-sync")).unwrap();
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        snapshot(&project),
        before,
        "a re-upload without state changed the server"
    );

    let o = sync(&["status", root.path().to_str().unwrap()]);
    assert!(
        text(&o).contains("calls 4/4 uploaded, 0 pending"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("remote FINISHED"), "{}", text(&o));
}

#[test]
fn watch_uploads_a_live_run_call_by_call_and_finishes_it() {
    let project = mf::unique_project("watch");
    let root = tempfile::tempdir().unwrap();
    let mut daemon = watch_daemon(root.path(), &mf::target(), Stdio::piped());
    let run = Run::create(Init::project(&project).root(root.path())).unwrap();
    let id = run.id().unwrap().to_string();
    let mut p = TestPipeline::new();
    run.record(&mut p, &Req::new(&["first"], 1)).unwrap();
    run.flush().unwrap();
    let wait_for =
        |what: &str, f: &dyn Fn() -> bool| common::wait_for(what, Duration::from_secs(30), f);
    let has_table = |n: u32| {
        let project = project.clone();
        let id = id.clone();
        move || {
            mf::runs(&project)
                .iter()
                .filter(|r| mf::tag(r, "difflog.run_id").as_deref() == Some(&id))
                .any(|r| {
                    mf::artifacts(r)
                        .iter()
                        .any(|(p, _)| p == &format!("Result-Table/Pipeline-Call-{n}.json"))
                })
        }
    };
    let latency = wait_for("call 1 while the run is live", &has_table(1));
    let live = mf::run_for(&project, &id);
    assert_eq!(
        live["info"]["status"], "RUNNING",
        "a live run must not be marked finished"
    );
    run.record(&mut p, &Req::new(&["second"], 2)).unwrap();
    run.flush().unwrap();
    wait_for("call 2 while the run is live", &has_table(2));
    assert_eq!(mf::run_for(&project, &id)["info"]["status"], "RUNNING");
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    wait_for("FINISHED", &|| {
        mf::run_for(&project, &id)["info"]["status"] == "FINISHED"
    });
    assert_complete_basic(&project, &dir);
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "watch did not stop cleanly on SIGTERM: {status}"
    );
    eprintln!("watch latency for call 1: {latency:?}");
}

fn assert_complete_basic(project: &str, dir: &Path) {
    let r = RunDir::open(dir).unwrap();
    let run = mf::run_for(project, &r.meta.id);
    let arts: Vec<String> = mf::artifacts(&run).into_iter().map(|(p, _)| p).collect();
    // A finished call has its table; a call torn by a SIGKILL has none.
    for call in r.view().calls.values() {
        let table = format!("Result-Table/{}.json", call.started.stage);
        assert_eq!(
            arts.contains(&table),
            call.finished.is_some(),
            "{table}: {arts:?}"
        );
    }
}

/// SIGKILL of the uploader, then a restart: everything on the server exactly
/// once. Two kinds of kills, through a proxy that counts uploads:
/// - *held*: the proxy holds every PUT, the uploader is killed while its
///   uploads wait, and the held requests are then dropped, never completed —
///   a writer that advanced its state before the server's answer loses
///   those images for good;
/// - *calibrated*: the uploader runs freely and is killed after a random
///   number of its uploads arrived (so the kill lands inside the upload, not
///   after it), with the state forgotten now and then.
///
/// A kill counts as mid-upload only when the server saw part of that
/// upload's PUTs and the uploader had not finished.
#[test]
fn sigkill_of_the_uploader_at_random_instants_then_restart_leaves_everything_exactly_once() {
    use common::proxy::{Faults, Proxy};
    use std::sync::atomic::Ordering;
    let project = mf::unique_project("kill");
    let root = tempfile::tempdir().unwrap();
    let first = record(root.path(), &project, 8, 4, 96);
    let proxy = Proxy::start(&mf::url(), Faults::default(), 7);
    let to = format!("mlflow+{}", proxy.url);
    let mut rng = rand::rng();
    // `DIFFLOG_SYNC_KILLS` raises the count (the benchmark harness uses 100).
    let kills: usize = std::env::var("DIFFLOG_SYNC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (mut mid_way, mut calibrated, mut held_kills) = (0, 0, 0);
    let mut second = None;
    for i in 0..kills {
        // Half way, a second run the server has never seen: the held kills
        // from here on hold images that exist nowhere else, and the state is
        // no longer forgotten (which would hide a state advanced too early).
        if i == kills / 2 {
            second = Some(record(root.path(), &project, 8, 4, 96));
        }
        let hold = i % 2 == 1;
        proxy.hold_puts(hold);
        let before_puts = proxy.counts.puts_forwarded.load(Ordering::SeqCst);
        let before_held = proxy.counts.held.load(Ordering::SeqCst);
        let mut child = common::KillOnDrop(
            Command::new(sync_bin())
                .args([
                    "upload",
                    root.path().to_str().unwrap(),
                    "--to",
                    &to,
                    "--concurrency",
                    "4",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Kill after `after` uploads of this pass arrived (held: were held).
        let after = if hold { 1 } else { rng.random_range(1..=12) };
        let t = Instant::now();
        let seen = |p: &Proxy| {
            if hold {
                p.counts.held.load(Ordering::SeqCst) - before_held
            } else {
                p.counts.puts_forwarded.load(Ordering::SeqCst) - before_puts
            }
        };
        while seen(&proxy) < after
            && child.try_wait().unwrap().is_none()
            && t.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
        let exited = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The held uploads are dropped now, after the kill.
        proxy.hold_puts(false);
        if !exited && seen(&proxy) > 0 {
            mid_way += 1;
            if hold {
                held_kills += 1;
            } else {
                calibrated += 1;
            }
        }
        // Make later kills land mid-upload too: forget the progress now and
        // then (first half only, see above).
        if i % 5 == 4 && i < kills / 2 {
            std::fs::remove_dir_all(root.path().join(".difflog-sync")).unwrap();
        }
    }
    eprintln!(
        "{mid_way} of {kills} kills mid-upload: {held_kills} while uploads were held, \
         {calibrated} after part of the uploads arrived"
    );
    assert!(
        held_kills >= kills / 4,
        "only {held_kills} kills landed while uploads were held"
    );
    assert!(
        calibrated >= kills / 4,
        "only {calibrated} free-running kills landed mid-upload"
    );
    // The same target (the state is kept per target), nothing held now.
    let o = sync(&["upload", root.path().to_str().unwrap(), "--to", &to]);
    assert!(o.status.success(), "{}", text(&o));
    assert_complete(&project, &first, "FINISHED");
    assert_complete(&project, second.as_ref().unwrap(), "FINISHED");
    assert_eq!(
        mf::runs(&project).len(),
        2,
        "more than one MLflow run per difflog run after kills"
    );
    // Read by scripts/bench: assert_complete found every item exactly once.
    eprintln!("SYNC-KILL-FIGURES kills={kills} mid_upload={mid_way} missing=0 duplicated=0");
}

#[test]
fn a_torn_run_syncs_up_to_the_tear_and_shows_as_killed() {
    let project = mf::unique_project("torn");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 3, 1, 16);
    // Cut the log inside call 3's records: the run crashed there.
    let log = std::fs::read(dir.join("events.log")).unwrap();
    let log_text = String::from_utf8_lossy(&log).to_string();
    let cut = log_text.find("\"stage\":\"Pipeline-Call-3\"").unwrap() + 30;
    std::fs::write(dir.join("events.log"), &log[..cut]).unwrap();
    let o = sync(&["upload", dir.to_str().unwrap(), "--to", &mf::target()]);
    assert!(o.status.success(), "{}", text(&o));
    let r = RunDir::open(&dir).unwrap();
    let run = mf::run_for(&project, &r.meta.id);
    assert_eq!(run["info"]["status"], "KILLED");
    let arts: Vec<String> = mf::artifacts(&run).into_iter().map(|(p, _)| p).collect();
    assert!(arts.contains(&"Result-Table/Pipeline-Call-2.json".to_string()));
    assert!(
        !arts.iter().any(|p| p.contains("Pipeline-Call-3")),
        "{arts:?}"
    );
}

#[test]
fn a_symlink_escaping_the_run_is_refused_and_nothing_outside_is_uploaded() {
    let project = mf::unique_project("symlink");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 1, 1, 16);
    let v = RunDir::open(&dir).unwrap().view();
    let victim = dir.join(&v.media[0].path);
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, b"not for the tracker").unwrap();
    std::fs::remove_file(&victim).unwrap();
    std::os::unix::fs::symlink(&secret, &victim).unwrap();
    let o = sync(&["upload", dir.to_str().unwrap(), "--to", &mf::target()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("symbolic link"), "{}", text(&o));
    for r in mf::runs(&project) {
        for (p, _) in mf::artifacts(&r) {
            if p.starts_with("images/") {
                assert_ne!(mf::artifact(&r, &p), b"not for the tracker");
            }
        }
    }
    let o = sync(&["status", root.path().to_str().unwrap()]);
    assert!(
        text(&o).contains("last error") && text(&o).contains("symbolic link"),
        "{}",
        text(&o)
    );
}

/// Issue 21 (4): a shard folder `media/xx`, or `media/` itself, that is a
/// symbolic link to a folder outside the run. The file reached through it is
/// not a link itself, and outside holds the *same bytes* as the recorded
/// image, so only the inside-the-run check can refuse it: the upload fails
/// naming the link, and no image reaches the server.
#[test]
fn a_symlinked_media_folder_is_refused_and_nothing_outside_is_uploaded() {
    for linked in ["shard", "media"] {
        let project = mf::unique_project("symlinked-dir");
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = record(root.path(), &project, 1, 1, 16);
        let v = RunDir::open(&dir).unwrap().view();
        let file = dir.join(&v.media[0].path);
        let moved = match linked {
            "shard" => file.parent().unwrap().to_path_buf(),
            _ => dir.join("media"),
        };
        let away = outside.path().join("moved");
        std::fs::rename(&moved, &away).unwrap();
        std::os::unix::fs::symlink(&away, &moved).unwrap();
        assert!(
            file.is_file(),
            "the image is still reachable through the link"
        );
        let o = sync(&["upload", dir.to_str().unwrap(), "--to", &mf::target()]);
        assert_eq!(o.status.code(), Some(1), "{linked}: {}", text(&o));
        assert!(
            text(&o).contains("outside the run") || text(&o).contains("symbolic link"),
            "{linked}: {}",
            text(&o)
        );
        for r in mf::runs(&project) {
            let images: Vec<_> = mf::artifacts(&r)
                .into_iter()
                .filter(|(p, _)| p.starts_with("images/"))
                .collect();
            assert!(
                images.is_empty(),
                "{linked}: uploaded from outside: {images:?}"
            );
        }
    }
}

#[test]
fn bad_targets_and_refused_credentials_are_clear_and_do_not_storm() {
    let root = tempfile::tempdir().unwrap();
    record(root.path(), "p", 1, 1, 16);
    let o = sync(&[
        "upload",
        root.path().to_str().unwrap(),
        "--to",
        "s3://bucket",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("unknown target scheme \"s3\""),
        "{}",
        text(&o)
    );

    // A server that refuses every request with 401, counting them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = r#"{"error_code":"UNAUTHENTICATED","message":"bad token"}"#;
            let resp = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut s, resp.as_bytes());
        }
    });
    // A refused token is the conformance suite's (tests/targets.rs); what
    // is MLflow's own: username and password (HTTP Basic) leak neither,
    // nor base64(user:password).
    let o = Command::new(sync_bin())
        .args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+http://{addr}"),
        ])
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env("MLFLOW_TRACKING_USERNAME", "alice")
        .env("MLFLOW_TRACKING_PASSWORD", "sekrit-password-value")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    common::assert_no_leak(root.path(), &text(&o), "alice", "sekrit-password-value");
    assert!(count.load(std::sync::atomic::Ordering::SeqCst) <= 2);

    // Credentials towards a server that cannot be reached: the connection
    // error's text comes from the HTTP client, and leaks nothing either.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (user, secret, vars) in [
        (
            "",
            "sekrit-token-2",
            vec![("MLFLOW_TRACKING_TOKEN", "sekrit-token-2")],
        ),
        (
            "bob",
            "sekrit-password-2",
            vec![
                ("MLFLOW_TRACKING_USERNAME", "bob"),
                ("MLFLOW_TRACKING_PASSWORD", "sekrit-password-2"),
            ],
        ),
    ] {
        let mut c = Command::new(sync_bin());
        c.args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+http://127.0.0.1:{port}"),
        ])
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD");
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("127.0.0.1"), "{}", text(&o));
        common::assert_no_leak(root.path(), &text(&o), user, secret);
        let o = sync(&["status", root.path().to_str().unwrap()]);
        common::assert_no_leak(root.path(), &text(&o), user, secret);
    }
}

#[test]
fn watch_rides_out_a_30_second_outage_without_a_retry_storm() {
    use common::proxy::{Faults, Proxy};
    use std::sync::atomic::Ordering;
    let project = mf::unique_project("outage");
    let root = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&mf::url(), Faults::default(), 7);
    let mut daemon = watch_daemon(root.path(), &format!("mlflow+{}", proxy.url), Stdio::null());
    let run = Run::create(Init::project(&project).root(root.path())).unwrap();
    let id = run.id().unwrap().to_string();
    let mut p = TestPipeline::new();
    run.record(&mut p, &Req::new(&["before"], 1)).unwrap();
    run.flush().unwrap();
    let t = Instant::now();
    while mf::tables(&project, &id) < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "call 1 never arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.set_outage(true);
    let outage_start = Instant::now();
    for i in 0..3 {
        run.record(&mut p, &Req::new(&["during the outage"], 10 + i))
            .unwrap();
        run.flush().unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage_start.elapsed()));
    let refused = proxy.counts.refused.load(Ordering::SeqCst);
    proxy.set_outage(false);
    let t = Instant::now();
    while !(mf::tables(&project, &id) == 4
        && mf::run_for(&project, &id)["info"]["status"] == "FINISHED")
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the backlog did not arrive after the outage"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let recovered = t.elapsed();
    assert_complete_basic(&project, &dir);
    let run_id = mf::run_for(&project, &id)["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        mf::history(&run_id, "timings/total_ms").len(),
        4,
        "a call arrived twice or not at all"
    );
    assert!(
        refused <= 90,
        "{refused} connection attempts during a 30 s outage: a retry storm"
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    eprintln!("outage: {refused} attempts in 30 s ({:.1}/min); backlog delivered {recovered:?} after the server came back", refused as f64 * 2.0);
    eprintln!(
        "OUTAGE-FIGURES attempts_per_min={:.1} delivered_calls=4 duplicated=0 recovered_s={:.2}",
        refused as f64 * 2.0,
        recovered.as_secs_f64()
    );
}

#[test]
fn a_lost_answer_to_run_create_does_not_create_a_second_run() {
    use common::proxy::{Faults, Proxy};
    let project = mf::unique_project("lostcreate");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 1, 1, 16);
    let proxy = Proxy::start(&mf::url(), Faults::default(), 1);
    proxy.lose_next_create();
    let o = sync(&[
        "upload",
        root.path().to_str().unwrap(),
        "--to",
        &format!("mlflow+{}", proxy.url),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        mf::runs(&project).len(),
        1,
        "the create whose answer was lost made a second run"
    );
    assert_complete(&project, &dir, "FINISHED");
}

#[test]
fn upload_straight_from_a_packed_archive_and_never_half_from_a_truncated_one() {
    let project = mf::unique_project("archive");
    let root = tempfile::tempdir().unwrap();
    let dir = record(&root.path().join("runs"), &project, 2, 2, 16);
    let carry = root.path().join("usb");
    std::fs::create_dir(&carry).unwrap();
    let archive = carry.join("runs.tar.zst");
    difflog::pack::pack(&[root.path().join("runs")], &archive).unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    let cut = carry.join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let o = sync(&["upload", cut.to_str().unwrap(), "--to", &mf::target()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not a complete difflog archive"),
        "{}",
        text(&o)
    );
    assert!(
        mf::runs(&project).is_empty(),
        "a truncated archive uploaded something"
    );

    let o = sync(&["upload", archive.to_str().unwrap(), "--to", &mf::target()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_complete(&project, &dir, "FINISHED");
    // The state is kept beside the archive; the unpacked copy is gone.
    assert!(carry.join(".difflog-sync/state.db").is_file());
    let left: Vec<_> = std::fs::read_dir(&carry)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".difflog-sync-unpack")
        })
        .collect();
    assert!(left.is_empty());
}

/// Issue 12: SIGTERM in the middle of a pass (uploads in flight, held by the
/// proxy) stops `watch` promptly, and nothing is lost: the next upload
/// completes the run exactly once.
#[test]
fn sigterm_during_a_pass_stops_watch_at_once_and_loses_nothing() {
    use common::proxy::{Faults, Proxy};
    use std::sync::atomic::Ordering;
    let project = mf::unique_project("sigterm");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 4, 4, 64);
    let proxy = Proxy::start(&mf::url(), Faults::default(), 3);
    let to = format!("mlflow+{}", proxy.url);
    proxy.hold_puts(true);
    let mut daemon = watch_daemon(root.path(), &to, Stdio::null());
    let t = Instant::now();
    while proxy.counts.held.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "watch never uploaded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    while daemon.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "watch did not stop within 5 s of SIGTERM while its uploads were in flight"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.hold_puts(false);
    let o = sync(&["upload", root.path().to_str().unwrap(), "--to", &to]);
    assert!(o.status.success(), "{}", text(&o));
    assert_complete(&project, &dir, "FINISHED");
    assert_eq!(mf::runs(&project).len(), 1);
}

#[test]
fn max_rate_caps_the_upload_bandwidth_and_everything_still_arrives() {
    // 6 images of 256² noise (~150 kB each) plus tables and metadata: about
    // 1 MB, sent at 256 KiB/s, cannot take less than ~0.9 × bytes / rate.
    let project = mf::unique_project("maxrate");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 3, 2, 256);
    let media: u64 = RunDir::open(&dir)
        .unwrap()
        .view()
        .media
        .iter()
        .map(|m| m.bytes)
        .sum();
    assert!(media > 600_000, "{media} bytes of media");
    let upload = |rate: &str| {
        sync(&[
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &mf::target(),
            "--max-rate",
            rate,
        ])
    };
    let rate = 256 * 1024;
    let t = Instant::now();
    let o = upload("256KiB/s");
    let took = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", text(&o));
    assert_complete(&project, &dir, "FINISHED");
    let floor = 0.9 * media as f64 / rate as f64;
    assert!(
        took >= floor,
        "{media} bytes in {took:.2} s: faster than the cap allows ({floor:.2} s)"
    );

    // A rate that is not one is refused before anything is sent.
    for bad in ["fast", "0", "2XB/s"] {
        let o = upload(bad);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("--max-rate"), "{}", text(&o));
    }
}

#[test]
fn on_a_thin_link_every_runs_metadata_and_tables_go_first_then_media_oldest_run_first() {
    use common::proxy::{Faults, Proxy};
    let project = mf::unique_project("thin");
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3)
        .map(|_| record(root.path(), &project, 2, 4, 48))
        .collect();
    let proxy = Proxy::start(&mf::url(), Faults::default(), 21);
    // --max-rate declares a thin link: metadata first is implied.
    let o = sync(&[
        "upload",
        root.path().to_str().unwrap(),
        "--to",
        &format!("mlflow+{}", proxy.url),
        "--max-rate",
        "8MiB/s",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for d in &dirs {
        assert_complete(&project, d, "FINISHED");
    }
    // MLflow run id → the difflog run's position (creation order).
    let order: std::collections::HashMap<String, usize> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let id = RunDir::open(d).unwrap().meta.id;
            let run = mf::run_for(&project, &id);
            (run["info"]["run_id"].as_str().unwrap().to_string(), i)
        })
        .collect();
    let log = proxy.counts.log.lock().unwrap().clone();
    let puts: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("/mlflow-artifacts/"))
        .collect();
    let is_meta = |l: &str| l.contains("/Result-Table/") || l.contains("/difflog/");
    let last_meta = puts.iter().rposition(|l| is_meta(l)).unwrap();
    let first_image = puts.iter().position(|l| l.contains("/images/")).unwrap();
    assert!(
        last_meta < first_image,
        "metadata and tables after media: {puts:#?}"
    );
    assert_eq!(
        puts.iter().filter(|l| l.contains("/Result-Table/")).count(),
        6,
        "each table sent once: {puts:#?}"
    );
    let runs_of_images: Vec<usize> = puts
        .iter()
        .filter(|l| l.contains("/images/"))
        .map(|l| {
            *order
                .iter()
                .find(|(id, _)| l.contains(id.as_str()))
                .map(|(_, i)| i)
                .unwrap()
        })
        .collect();
    let mut sorted = runs_of_images.clone();
    sorted.sort();
    assert_eq!(runs_of_images, sorted, "media not oldest run first");
}

/// Issue 34 (5): over more runs than it lists one by one, `status` prints
/// a summary per target and lists only the runs that need a look (here the
/// one not uploaded anywhere); `--all` lists every run, and `--json` has
/// the same summary.
#[test]
fn status_summarises_a_fleet_and_lists_what_needs_a_look() {
    let project = mf::unique_project("fleet");
    let root = tempfile::tempdir().unwrap();
    let uploaded = 22;
    for _ in 0..uploaded {
        record(root.path(), &project, 1, 1, 16);
    }
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let late = record(root.path(), &project, 2, 1, 16);
    let late_id = late.file_name().unwrap().to_str().unwrap().to_string();

    let o = sync(&["status", root.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("23 runs (23 finished)"), "{t}");
    assert!(
        t.contains(&format!(": {uploaded} runs, {uploaded} complete")),
        "{t}"
    );
    assert!(t.contains("not uploaded anywhere: 1 runs, 2 calls"), "{t}");
    assert!(t.contains("runs that need a look (1;"), "{t}");
    let run_lines: Vec<&str> = t.lines().filter(|l| l.contains("calls ")).collect();
    assert_eq!(run_lines.len(), 1, "{t}");
    assert!(run_lines[0].starts_with(&late_id), "{t}");

    let o = sync(&["status", root.path().to_str().unwrap(), "--all"]);
    let t = text(&o);
    let run_lines = t.lines().filter(|l| l.contains(" uploaded, ")).count();
    assert_eq!(run_lines, 23, "{t}");

    let o = sync(&["status", root.path().to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let summary = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "summary")
        .expect("no summary")["summary"]
        .clone();
    assert_eq!(summary["runs"], 23);
    assert_eq!(summary["not_uploaded"]["runs"], 1);
    let targets = summary["targets"].as_object().unwrap();
    assert_eq!(targets.len(), 1);
    let (_, m) = targets.iter().next().unwrap();
    assert_eq!(m["complete"], uploaded);
}

/// `difflog bench record` recording into the run `DIFFLOG_RESUME` names.
fn bench_segment(root: &Path, id: &str, calls: &str, pace_ms: &str) -> Command {
    let mut c = Command::new(common::difflog_bin());
    c.args(["bench", "record", "--calls", calls, "--size", "16"])
        .args(["--no-baseline", "--pace-ms", pace_ms])
        .env("DIFFLOG_DIR", root)
        .env("DIFFLOG_RESUME", id)
        .env_remove("DIFFLOG_MODE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The calls a run has finished (none when it cannot be read yet); a call
/// torn by a SIGKILL is not one, and has no table on the server.
fn finished_calls(dir: &Path) -> usize {
    RunDir::open(dir)
        .map(|r| {
            r.view()
                .calls
                .values()
                .filter(|c| c.finished.is_some())
                .count()
        })
        .unwrap_or(0)
}

/// Runs a job that records into run `id` under `root` until it has
/// finished three calls, then SIGKILLs it; returns the calls it finished.
fn killed_segment(root: &Path, id: &str) -> usize {
    let dir = root.join(id);
    let mut child = common::KillOnDrop(bench_segment(root, id, "100000", "20").spawn().unwrap());
    let t = Instant::now();
    while finished_calls(&dir) < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "no calls recorded");
        assert!(child.try_wait().unwrap().is_none(), "the job exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    finished_calls(&dir)
}

/// Issue 34 (3): a job killed by its scheduler (SIGKILL) and started again
/// with the same `DIFFLOG_RESUME` records into the same run, and the sync
/// appends the new calls to the same MLflow run: KILLED after the first
/// segment's upload, FINISHED with every call after the second's. A
/// finished run is not resumed, and a resume id that is not a run id is
/// refused, naming the setting.
#[test]
fn a_job_killed_and_started_again_resumes_its_run_on_disk_and_on_mlflow() {
    let root = tempfile::tempdir().unwrap();
    let id = format!("job-{:08x}", rand::rng().random::<u32>());
    let dir = root.path().join(&id);
    let first = killed_segment(root.path(), &id);
    assert_eq!(RunDir::open(&dir).unwrap().meta.id, id);

    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let run = mf::run_for("difflog-bench", &id);
    assert_eq!(run["info"]["status"], "KILLED");
    assert_complete_basic("difflog-bench", &dir);

    // The job starts again: the same run goes on.
    let o = bench_segment(root.path(), &id, "2", "0").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let read = RunDir::open(&dir).unwrap();
    let view = read.view();
    // The SIGKILL may have torn one call (started, never finished).
    let finished = view.calls.values().filter(|c| c.finished.is_some()).count();
    assert_eq!(
        finished,
        first + 2,
        "a call of the killed job is lost or doubled"
    );
    assert!(view.calls.len() <= first + 3, "{:?}", view.calls.keys());
    assert!(view.finished.is_some());
    assert!(read
        .records()
        .iter()
        .any(|r| matches!(r.event, difflog::event::Event::RunResumed(_))));
    assert_eq!(common::only_run(root.path()), dir);
    let o = Command::new(common::difflog_bin())
        .args(["verify", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let run = mf::run_for("difflog-bench", &id);
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_complete_basic("difflog-bench", &dir);
    let arts = mf::artifacts(&run);
    let tables = arts
        .iter()
        .filter(|(p, _)| p.starts_with("Result-Table/"))
        .count();
    assert_eq!(tables, first + 2, "{arts:?}");

    // A finished run is not resumed; a path is not a run id.
    let o = bench_segment(root.path(), &id, "1", "0").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already finished"), "{}", text(&o));
    let o = bench_segment(root.path(), "../elsewhere", "1", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("DIFFLOG_RESUME"), "{}", text(&o));
    assert!(!root.path().parent().unwrap().join("elsewhere").exists());
}

/// Issue 34 (2): a remote run deleted on the server (MLflow's trash) while
/// its difflog run goes on is reported — error code `remote_deleted`,
/// naming the MLflow run and the way out, in `status` too — and nothing is
/// created; `--recreate-deleted` makes a new MLflow run and uploads the
/// whole run to it, the deleted one left as it was.
#[test]
fn a_remote_run_deleted_on_the_server_is_reported_and_recreated_only_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let id = format!("job-{:08x}", rand::rng().random::<u32>());
    let dir = root.path().join(&id);
    killed_segment(root.path(), &id);
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let old = mf::run_for("difflog-bench", &id)["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    mf::delete_run(&old);

    // The job goes on; its next upload finds the MLflow run deleted.
    let o = bench_segment(root.path(), &id, "2", "0").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = upload_refused(root.path(), "remote_deleted");
    assert!(
        text(&o).contains(&old) && text(&o).contains("--recreate-deleted"),
        "{}",
        text(&o)
    );
    let of_run = |id: &str| -> Vec<Value> {
        mf::runs("difflog-bench")
            .into_iter()
            .filter(|r| mf::tag(r, "difflog.run_id").as_deref() == Some(id))
            .collect()
    };
    assert_eq!(of_run(&id).len(), 1, "a run was made without being asked");
    let o = sync(&["status", root.path().to_str().unwrap()]);
    assert!(
        text(&o).contains("was deleted on the server"),
        "{}",
        text(&o)
    );

    let o = upload_with(root.path(), "--recreate-deleted");
    assert!(o.status.success(), "{}", text(&o));
    let runs = of_run(&id);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let new: Vec<&Value> = runs
        .iter()
        .filter(|r| r["info"]["lifecycle_stage"] == "active")
        .collect();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0]["info"]["run_id"], old.as_str());
    assert_eq!(new[0]["info"]["status"], "FINISHED");
    // Only finished calls have tables: the SIGKILL may have torn one.
    let calls = finished_calls(&dir);
    let tables = mf::artifacts(new[0])
        .iter()
        .filter(|(p, _)| p.starts_with("Result-Table/"))
        .count();
    assert_eq!(tables, calls, "the whole run is on the new MLflow run");
    // And from then on the new one is the run's: a plain upload is fine.
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(of_run(&id).len(), 2);
}

/// Issue 34 (2): what a user edits on the server — the run's description,
/// a tag of their own, its name — is never overwritten when the run goes
/// on and syncs again.
#[test]
fn edits_made_on_the_server_are_never_overwritten() {
    let root = tempfile::tempdir().unwrap();
    let id = format!("job-{:08x}", rand::rng().random::<u32>());
    killed_segment(root.path(), &id);
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let mlflow_id = mf::run_for("difflog-bench", &id)["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    mf::set_tag(&mlflow_id, "mlflow.note.content", "seed sweep, keep");
    mf::set_tag(&mlflow_id, "team", "vision");
    mf::rename_run(&mlflow_id, "renamed by hand");

    let o = bench_segment(root.path(), &id, "2", "0").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let run = mf::run_for("difflog-bench", &id);
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(run["info"]["run_id"], mlflow_id.as_str());
    assert_eq!(run["info"]["run_name"], "renamed by hand");
    assert_eq!(
        mf::tag(&run, "mlflow.note.content").as_deref(),
        Some("seed sweep, keep")
    );
    assert_eq!(mf::tag(&run, "team").as_deref(), Some("vision"));
    assert_eq!(
        mf::tag(&run, "difflog.run_id").as_deref(),
        Some(id.as_str())
    );
}

/// Issue 34 (2): a run ended on the server by someone else while it is
/// still being recorded is reported — error code `remote_ended`, nothing
/// more sent, the server's status kept — and uploaded to again only with
/// `--reopen-ended`; the status difflog-sync set itself (KILLED for a
/// crash) never counts as someone else's.
#[test]
fn a_run_ended_on_the_server_is_reported_and_reopened_only_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let id = format!("job-{:08x}", rand::rng().random::<u32>());
    let dir = root.path().join(&id);
    let mut child = common::KillOnDrop(
        bench_segment(root.path(), &id, "100000", "20")
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while RunDir::open(&dir).map_or(0, |r| r.view().calls.len()) < 3 {
        assert!(t.elapsed() < Duration::from_secs(60), "no calls recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let run = mf::run_for("difflog-bench", &id);
    assert_eq!(run["info"]["status"], "RUNNING");
    let mlflow_id = run["info"]["run_id"].as_str().unwrap().to_string();
    mf::end_run(&mlflow_id, "FINISHED");

    // Still recording: the next upload reports it and sends nothing.
    std::thread::sleep(Duration::from_millis(200));
    let tables = |run: &Value| {
        mf::artifacts(run)
            .iter()
            .filter(|(p, _)| p.starts_with("Result-Table/"))
            .count()
    };
    let before = tables(&mf::run_for("difflog-bench", &id));
    let o = upload_refused(root.path(), "remote_ended");
    assert!(text(&o).contains("--reopen-ended"), "{}", text(&o));
    let run = mf::run_for("difflog-bench", &id);
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(tables(&run), before);

    // The job dies; asked to, the upload goes on into the same MLflow run.
    child.kill().unwrap();
    child.wait().unwrap();
    let o = upload_with(root.path(), "--reopen-ended");
    assert!(o.status.success(), "{}", text(&o));
    let run = mf::run_for("difflog-bench", &id);
    assert_eq!(run["info"]["run_id"], mlflow_id.as_str());
    assert_eq!(run["info"]["status"], "KILLED");
    assert_eq!(tables(&run), finished_calls(&dir));
    // KILLED was difflog-sync's own: a resumed job syncs without a flag.
    let o = bench_segment(root.path(), &id, "1", "0").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        mf::run_for("difflog-bench", &id)["info"]["status"],
        "FINISHED"
    );
}

/// `difflog-sync verify ROOT --to` the test server `--json` and `more`,
/// logging each request (`DIFFLOG_LOG=debug`): its output and the JSON
/// lines (one per run, then the summary).
fn verify(root: &Path, more: &[&str]) -> (Output, Vec<Value>) {
    let o = Command::new(sync_bin())
        .args([
            "verify",
            root.to_str().unwrap(),
            "--to",
            &mf::target(),
            "--json",
        ])
        .args(more)
        .env("DIFFLOG_LOG", "difflog=debug")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (o, lines)
}

/// The (kind, what) of every difference `verify` listed for a run.
fn differences(line: &Value) -> std::collections::BTreeSet<(String, String)> {
    line["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["what"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Issue 34 (1): `verify` reads an uploaded run back — images by the
/// digest of the bytes the server returns, tables by content, tags,
/// metric histories — and names exactly what another client changed
/// there: an image deleted, one overwritten, a table edited, a stray file,
/// a tag of difflog's edited, a metric point added. `--repair` sends again
/// only what is missing or different (two images of six), never deletes
/// what is extra, and the run reads back complete but for the extras.
#[test]
fn verify_reads_every_part_back_and_repair_sends_only_what_differs() {
    let project = mf::unique_project("verify");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 3, 2, 32);
    let o = upload(root.path());
    assert!(o.status.success(), "{}", text(&o));
    let (o, lines) = verify(root.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["complete"], true, "{}", lines[0]);
    assert_eq!(lines[1]["kind"], "summary");
    assert_eq!(lines[1]["complete"], 1);
    // Every image was downloaded to be checked.
    let r = RunDir::open(&dir).unwrap();
    let view = r.view();
    let gets = text(&o)
        .lines()
        .filter(|l| l.contains("GET ") && l.contains("/images/"))
        .count();
    assert_eq!(gets, view.media.len(), "{}", text(&o));

    let run = mf::run_for(&project, &r.meta.id);
    let run_id = run["info"]["run_id"].as_str().unwrap().to_string();
    let d0 = view.calls[&1].media[0].digest.clone();
    let d1 = view.calls[&3].media[1].digest.clone();
    let table = "Result-Table/Pipeline-Call-2.json";
    let original: Value = serde_json::from_slice(&mf::artifact(&run, table)).unwrap();
    let mut edited = original.clone();
    edited["data"][1][0] = serde_json::json!("edited on the server");
    mf::delete_artifact(&run, &format!("images/{d0}.png"));
    mf::put_artifact(&run, &format!("images/{d1}.png"), b"not the image");
    mf::put_artifact(&run, table, &serde_json::to_vec(&edited).unwrap());
    mf::put_artifact(&run, "images/stray.png", b"stray");
    mf::set_tag(&run_id, "difflog.tags", "edited");
    mf::log_metric(&run_id, "clip_score", 0.5, 5, 9);

    let (o, lines) = verify(root.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = |k: &str, w: &str| (k.to_string(), w.to_string());
    let extras = [
        s("extra", "file images/stray.png"),
        s("extra", "metric clip_score step 9 at 5 = 0.5"),
    ];
    let mut want: std::collections::BTreeSet<_> = extras.iter().cloned().collect();
    want.insert(s("missing", &format!("file images/{d0}.png")));
    want.insert(s("different", &format!("file images/{d1}.png")));
    want.insert(s("different", &format!("file {table}")));
    want.insert(s("different", "tag difflog.tags"));
    assert_eq!(differences(&lines[0]), want, "{}", lines[0]);
    assert_eq!(lines[1]["differ"], 1);

    let (o, lines) = verify(root.path(), &["--repair"]);
    assert_eq!(o.status.code(), Some(1), "extras stay: {}", text(&o));
    let puts = text(&o)
        .lines()
        .filter(|l| l.contains("PUT ") && l.contains("/images/"))
        .count();
    assert_eq!(puts, 2, "only the two images that differ: {}", text(&o));
    assert_eq!(lines[0]["repaired"].as_array().unwrap().len(), 4);
    assert_eq!(
        differences(&lines[0]),
        extras.iter().cloned().collect(),
        "{}",
        lines[0]
    );
    // Read back through the server, not difflog.
    let run = mf::run_for(&project, &r.meta.id);
    for d in [&d0, &d1] {
        assert_eq!(
            &sha256_hex(&mf::artifact(&run, &format!("images/{d}.png"))),
            d
        );
    }
    let back: Value = serde_json::from_slice(&mf::artifact(&run, table)).unwrap();
    assert_eq!(back, original);
    assert_eq!(mf::tag(&run, "difflog.tags").as_deref(), Some("t1"));
    assert_eq!(
        mf::history(&run_id, "clip_score").len(),
        2,
        "nothing deleted"
    );
    let arts = mf::artifacts(&run);
    assert!(arts.iter().any(|(p, _)| p == "images/stray.png"));
}

/// A `runs/create` sent by an uploader that is then killed may reach the
/// server after the next uploader started and found no run: that one waits
/// for it (the state marks a search or create in progress) and uploads
/// into it — one MLflow run, not two. (Seen in CI: the SIGKILL test found
/// two MLflow runs for one difflog run.)
#[test]
fn a_create_from_a_killed_uploader_that_lands_late_makes_no_second_run() {
    use common::proxy::{Faults, Proxy};
    use std::sync::atomic::Ordering;
    let project = mf::unique_project("late-create");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 1, 2, 16);
    let proxy = Proxy::start(&mf::url(), Faults::default(), 3);
    let to = format!("mlflow+{}", proxy.url);
    let upload = || {
        Command::new(sync_bin())
            .args(["upload", root.path().to_str().unwrap(), "--to", &to])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    proxy.delay_creates(true);
    let mut first = common::KillOnDrop(upload());
    let t = Instant::now();
    while proxy.counts.creates_delayed.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no runs/create came");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.0.kill().unwrap(); // SIGKILL, its create still on its way
    first.0.wait().unwrap();
    let second = upload();
    // The killed uploader's create lands a second later.
    std::thread::sleep(Duration::from_secs(1));
    proxy.delay_creates(false);
    let o = second.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let runs = mf::runs(&project);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_complete_basic(&project, &dir);
}
