//! `difflog-sync` with several targets at once: the real MLflow server
//! (scripts/test) and the W&B protocol emulator. Both complete from one
//! daemon; one that is down, unreachable or refusing credentials holds back
//! neither the other nor its own later recovery; each keeps its own state.

mod common;

use common::mlflow as mf;
use common::proxy::{Faults, Proxy};
use common::wandb::Emulator;
use common::{Req, TestPipeline};
use difflog::read::RunDir;
use difflog::sync::targets::wandb::run_name;
use difflog::{Init, Run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "fedcba9876543210-multi-key-do-not-leak";
const ENTITY: &str = "team";

fn sync_cmd(wandb: &str, key: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
    c.args(args)
        .env("WANDB_BASE_URL", wandb)
        .env("WANDB_API_KEY", key)
        .env("DIFFLOG_WATCH_BACKOFF_MAX_SECONDS", "1")
        .env_remove("MLFLOW_TRACKING_TOKEN");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A finished run of `calls` calls, two images each.
fn record(root: &Path, project: &str, calls: u64) -> PathBuf {
    let run = Run::create(Init::project(project).name("multi").root(root)).unwrap();
    let mut p = TestPipeline::new();
    p.size = 24;
    for c in 0..calls {
        run.record(&mut p, &Req::new(&["a", "b"], 100 * c)).unwrap();
    }
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

/// MLflow holds the run once, finished, with every image and table.
fn mlflow_complete(project: &str, dir: &Path) -> bool {
    let r = RunDir::open(dir).unwrap();
    let runs = mf::runs(project);
    if runs.len() != 1 || runs[0]["info"]["status"] != "FINISHED" {
        return false;
    }
    let arts = mf::artifacts(&runs[0]);
    let images = arts
        .iter()
        .filter(|(p, _)| p.starts_with("images/"))
        .count();
    let tables = arts
        .iter()
        .filter(|(p, _)| p.starts_with("Result-Table/"))
        .count();
    images == r.view().media.len() && tables == r.view().calls.len()
}

/// W&B holds the run once, finished, with every call's table.
fn wandb_complete(emu: &Emulator, project: &str, dir: &Path) -> bool {
    let r = RunDir::open(dir).unwrap();
    let runs = emu.runs(project);
    let Some(run) = emu.run(project, &run_name(&r.meta.id)) else {
        return false;
    };
    runs.len() == 1
        && run.state == "finished"
        && emu.artifacts(project).len() == r.view().calls.len()
        && emu.violations().is_empty()
}

/// `status --json` rows of kind "run": target → (calls uploaded, error).
fn status_rows(root: &Path) -> Vec<Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args(["status", root.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .or_else(|| v["runs"].as_array())
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.get("run_id").is_some())
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn upload_to_mlflow_and_wandb_at_once_completes_both_with_state_per_target() {
    let emu = Emulator::start(KEY, ENTITY);
    let project = mf::unique_project("multi");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 3);
    let to_w = format!("wandb://{ENTITY}/{project}");
    let args = [
        "upload",
        root.path().to_str().unwrap(),
        "--to",
        &mf::target(),
        "--to",
        &to_w,
    ];
    let o = sync_cmd(&emu.url, KEY, &args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // One summary per target.
    assert_eq!(
        text(&o).matches("1 uploaded, 0 failed").count(),
        2,
        "{}",
        text(&o)
    );
    assert!(mlflow_complete(&project, &dir));
    assert!(wandb_complete(&emu, &project, &dir));
    // State per target: two rows for the one run, both complete.
    let rows = status_rows(root.path());
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let mut targets: Vec<String> = rows
        .iter()
        .map(|r| r["target"].as_str().unwrap().to_string())
        .collect();
    targets.sort();
    assert!(targets[0].starts_with("mlflow+") && targets[1].starts_with("wandb+"));
    // Again: nothing new anywhere.
    let before = (mf::artifacts(&mf::runs(&project)[0]), emu.requests().len());
    let o = sync_cmd(&emu.url, KEY, &args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mf::artifacts(&mf::runs(&project)[0]), before.0);
    assert!(wandb_complete(&emu, &project, &dir));

    // The same target twice is refused before anything is sent.
    let o = sync_cmd(
        &emu.url,
        KEY,
        &[
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &to_w,
            "--to",
            &to_w,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("given twice"), "{}", text(&o));
}

#[test]
fn upload_with_one_target_down_or_refusing_delivers_to_the_other() {
    let emu = Emulator::start(KEY, ENTITY);
    let project = mf::unique_project("multi-down");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 2);
    let to_w = format!("wandb://{ENTITY}/{project}");
    // MLflow unreachable (nothing listens there): W&B still gets it all.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("mlflow+http://{}", l.local_addr().unwrap())
    };
    let o = sync_cmd(
        &emu.url,
        KEY,
        &[
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &dead,
            "--to",
            &to_w,
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(wandb_complete(&emu, &project, &dir), "{}", text(&o));
    assert!(text(&o).contains("0 uploaded, 1 failed"), "{}", text(&o));

    // W&B refusing the key: MLflow still gets it all; exit 3; no secret shown.
    let wrong = "0000000000000000-wrong-key-value";
    let o = sync_cmd(
        &emu.url,
        wrong,
        &[
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &to_w.replace(&project, "other"),
            "--to",
            &mf::target(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!text(&o).contains(wrong), "{}", text(&o));
    assert!(mlflow_complete(&project, &dir), "{}", text(&o));
}

#[test]
fn watch_keeps_feeding_one_target_while_the_other_is_down_then_catches_up() {
    let emu = Emulator::start(KEY, ENTITY);
    let project = mf::unique_project("multi-watch");
    let root = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&mf::url(), Faults::default(), 9);
    proxy.set_outage(true);
    let to_m = format!("mlflow+{}", proxy.url);
    let to_w = format!("wandb://{ENTITY}/{project}");
    let mut daemon = common::KillOnDrop(
        sync_cmd(
            &emu.url,
            KEY,
            &[
                "watch",
                root.path().to_str().unwrap(),
                "--to",
                &to_m,
                "--to",
                &to_w,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let first = record(root.path(), &project, 2);
    wait_for("W&B to get the run", Duration::from_secs(60), || {
        wandb_complete(&emu, &project, &first)
    });
    // A second run while MLflow is still down: W&B gets it too.
    let second = record(root.path(), &project, 1);
    wait_for("W&B to get the second run", Duration::from_secs(60), || {
        emu.runs(&project).len() == 2
            && emu
                .run(&project, &run_name(&RunDir::open(&second).unwrap().meta.id))
                .is_some_and(|r| r.state == "finished")
    });
    assert!(mf::runs(&project).is_empty(), "MLflow was down");
    assert!(
        proxy
            .counts
            .refused
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    // `status` says which target is unreachable (once its attempt failed:
    // W&B's runs do not wait for MLflow's attempts to end).
    let status = || {
        let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
            .args(["status", root.path().to_str().unwrap()])
            .output()
            .unwrap();
        text(&o)
    };
    let unreachable = format!("target {to_m}: unreachable");
    let t = std::time::Instant::now();
    while !status().contains(&unreachable) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(status().contains(&unreachable), "{}", status());
    // MLflow back: it catches up with both runs.
    proxy.set_outage(false);
    wait_for("MLflow to catch up", Duration::from_secs(60), || {
        let runs = mf::runs(&project);
        runs.len() == 2 && runs.iter().all(|r| r["info"]["status"] == "FINISHED")
    });
    assert_eq!(daemon.try_wait().unwrap(), None, "the daemon stopped");
    assert_eq!(emu.runs(&project).len(), 2);
    let rows = status_rows(root.path());
    assert_eq!(rows.len(), 4, "two runs × two targets: {rows:#?}");
}
