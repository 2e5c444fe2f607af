//! `difflog-sync watch` while the real MLflow server is stopped for 30 s and
//! started again on the same port and data: everything recorded meanwhile
//! arrives once, without a retry storm. Its own binary, because it runs its
//! own server (the shared one of scripts/test must stay up for the others).

mod common;

use common::mlflow as mf;
use common::{Req, TestPipeline};
use difflog::{Init, Run};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server of this test's own, started by scripts/mlflow-server.
struct OwnServer {
    url: String,
    pgid: i32,
}

impl OwnServer {
    fn start(data: &Path, port: Option<u16>) -> OwnServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mlflow-server");
        let mut cmd = Command::new(script);
        cmd.arg(data);
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let out = cmd.stderr(Stdio::inherit()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "the MLflow server did not start: {text}"
        );
        let mut it = text.split_whitespace();
        let url = it.next().unwrap().to_string();
        let pgid = it.next().unwrap().parse().unwrap();
        OwnServer { url, pgid }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Stops the whole process group and waits until the port refuses.
    fn stop(&mut self) {
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port())).is_ok() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
    }
}

#[test]
fn watch_rides_out_the_real_server_stopped_for_30_seconds_and_started_again() {
    let data = tempfile::tempdir().unwrap();
    let mut server = OwnServer::start(data.path(), None);
    // Only test in this binary: the shared helpers read the URL from here.
    std::env::set_var("DIFFLOG_TEST_MLFLOW_URL", &server.url);
    let project = mf::unique_project("restart");
    let root = tempfile::tempdir().unwrap();
    let daemon = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_difflog-sync")))
        .args([
            "watch",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+{}", server.url),
        ])
        .env("DIFFLOG_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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

    let port = server.port();
    server.stop();
    let stopped = Instant::now();
    for i in 0..3 {
        run.record(&mut p, &Req::new(&["while the server is down"], 10 + i))
            .unwrap();
        run.flush().unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    run.finish().unwrap();
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));
    let down_for = stopped.elapsed();
    let server = OwnServer::start(data.path(), Some(port));
    let up = Instant::now();
    while !(mf::tables(&project, &id) == 4
        && mf::run_for(&project, &id)["info"]["status"] == "FINISHED")
    {
        assert!(
            up.elapsed() < Duration::from_secs(120),
            "the backlog did not arrive after the restart"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let recovered = up.elapsed();
    let run_id = mf::run_for(&project, &id)["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(mf::runs(&project).len(), 1, "a second MLflow run");
    assert_eq!(
        mf::history(&run_id, "timings/total_ms").len(),
        4,
        "a call arrived twice or not at all"
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let retries = log.matches("retrying in").count();
    assert!(
        retries <= 30,
        "{retries} retries while the server was down: a storm\n{log}"
    );
    eprintln!(
        "server down {:.0} s: {retries} retries logged, backlog delivered {:.1} s after it answered again",
        down_for.as_secs_f64(),
        recovered.as_secs_f64()
    );
    drop(server);
}
