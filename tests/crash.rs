//! The crash guarantee with real processes: a child records calls in a loop
//! and is killed with SIGKILL at random instants; every time, the run must
//! open, verify, and hold every finished call complete. Some of the crashed
//! runs are then reopened and appended to.

mod common;

use common::{difflog_bin, Req, Schemas, TestPipeline};
use difflog::read::{find_runs, RunDir, RunState};
use difflog::verify::verify_run;
use difflog::Run;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills per run of the test (`DIFFLOG_CRASH_KILLS` raises it, e.g. for the
/// benchmark harness).
fn kills() -> usize {
    std::env::var("DIFFLOG_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Waits until the child has created its run and recorded something.
fn wait_for_run(root: &Path, child: &mut std::process::Child) -> Option<PathBuf> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("recorder exited early with {status}");
        }
        if let Ok(runs) = find_runs(root) {
            if let Some(r) = runs.first() {
                if std::fs::metadata(r.join("events.log"))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
                {
                    return Some(r.clone());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn sigkill_at_random_instants_leaves_a_consistent_prefix() {
    let schemas = Schemas::load();
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut crashed = 0;
    let mut finished_calls_checked = 0;
    let mut attempt = 0;
    let kills = kills();
    while crashed < kills {
        attempt += 1;
        assert!(
            attempt < kills * 3,
            "too few kills landed mid-run ({crashed} of {attempt})"
        );
        let root = tmp.path().join(format!("root{attempt}"));
        let mut child = Command::new(difflog_bin())
            .args([
                "bench",
                "record",
                "--calls",
                "400",
                "--size",
                "24",
                "--images-per-call",
                "3",
            ])
            .args(["--queue", "8", "--no-baseline", "--root"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dir = wait_for_run(&root, &mut child).expect("the recorder never started its run");
        std::thread::sleep(Duration::from_micros(rng.random_range(0..250_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let run =
            RunDir::open(&dir).unwrap_or_else(|e| panic!("kill {attempt}: run unreadable: {e}"));
        let state = run.state();
        assert!(
            matches!(state, RunState::Crashed | RunState::Finished),
            "{state:?}"
        );
        let report = verify_run(&dir);
        assert!(
            !report.damaged(),
            "kill {attempt}: verify found damage: {:?}",
            report.findings
        );
        schemas.check_dir(&dir);
        let view = run.view();
        for call in view.calls.values().filter(|c| c.ok()) {
            let f = call.finished.as_ref().unwrap();
            assert_eq!(
                call.rows.len() as u32,
                f.images,
                "kill {attempt}: call {} incomplete",
                f.call
            );
            assert_eq!(f.images, 3);
            for row in &call.rows {
                for cell in &row.cells {
                    if let difflog::event::Cell::Image { path, .. } = cell {
                        assert!(dir.join(path).is_file(), "kill {attempt}: {path} missing");
                    }
                }
            }
            finished_calls_checked += 1;
        }
        if state == RunState::Crashed {
            crashed += 1;
            if crashed % 10 == 0 {
                // Pick the crashed run up again: the sequence continues.
                let before = run.records().len();
                let next_call = view.calls.keys().max().map_or(1, |n| n + 1);
                let w = Run::reopen(&dir).unwrap();
                w.record(&mut TestPipeline::new(), &Req::new(&["after the crash"], 1))
                    .unwrap();
                w.finish().unwrap();
                let again = RunDir::open(&dir).unwrap();
                assert!(again.log.problem.is_none());
                assert!(again.records().len() > before);
                assert!(again.view().calls[&next_call].ok());
                assert!(!verify_run(&dir).damaged());
            }
        }
    }
    assert!(
        finished_calls_checked > 0,
        "no kill landed after a finished call"
    );
    // Read by scripts/bench: every kill left a readable, undamaged run and
    // every finished call complete (the assertions above), so 0 and 0.
    eprintln!("{crashed} kills mid-run in {attempt} attempts; {finished_calls_checked} finished calls checked");
    eprintln!("CRASH-FIGURES kills={crashed} unreadable=0 incomplete_calls=0 finished_calls_checked={finished_calls_checked}");
}
