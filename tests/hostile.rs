//! The hostile-input suite (issue 13): run directories and archives edited by
//! hand — with valid checksums, so only difflog's own checks stand between
//! them and the file system or the tracker. Each test names the finding it
//! pins. The sync cases talk to the real MLflow server of scripts/test.

mod common;

use common::mlflow as mf;
use common::{difflog_bin, rewrite_log, Req, TestPipeline};
use difflog::event::{encode_record, Cell, Event};
use difflog::read::RunDir;
use difflog::{Init, Run};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn difflog(args: &[&str]) -> Output {
    Command::new(difflog_bin()).args(args).output().unwrap()
}

fn upload(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args(["upload", path.to_str().unwrap(), "--to", &mf::target()])
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .output()
        .unwrap()
}

/// A finished run of `calls` one-image calls.
fn record(root: &Path, project: &str, calls: u64) -> PathBuf {
    let run = Run::create(Init::project(project).root(root)).unwrap();
    let mut p = TestPipeline::new();
    for c in 0..calls {
        run.record(&mut p, &Req::new(&["a prompt"], c)).unwrap();
    }
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    dir
}

fn images_on_server(project: &str) -> Vec<String> {
    mf::runs(project)
        .iter()
        .flat_map(mf::artifacts)
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with("difflog/"))
        .collect()
}

/// Finding 1: A media digest that is a path (`../../OTHER_RUN/artifacts/model/model`,
/// format `pkl`) would make the upload land outside the run's artifact
/// folder: the record is damage where it is read, the run is refused by sync
/// and `verify`, and nothing of it reaches the server.
#[test]
fn a_media_digest_that_is_a_path_is_damage_and_nothing_is_uploaded() {
    let project = mf::unique_project("hostile-digest");
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), &project, 2);
    let evil = "../../../../OTHER_RUN/artifacts/model/model";
    rewrite_log(&dir, |e| match e {
        Event::Media(m) if m.call == Some(2) => {
            m.digest = evil.into();
            m.format = "pkl".into();
            m.path = format!("media/{evil}.pkl");
        }
        Event::Row(r) if r.call == 2 => {
            for c in &mut r.cells {
                if let Cell::Image { digest, path, .. } = c {
                    *digest = evil.into();
                    *path = format!("media/{evil}.pkl");
                }
            }
        }
        _ => {}
    });
    let run = RunDir::open(&dir).unwrap();
    let problem = run.log.problem.expect("the crafted record is damage");
    assert!(
        problem.why.contains("not a lower-case hex SHA-256"),
        "{}",
        problem.why
    );
    assert!(
        !matches!(problem.kind, difflog::read::LogProblemKind::TornTail),
        "a crafted record is not a crash's torn tail"
    );
    let o = difflog(&["verify", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = upload(&dir);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("damaged, not uploaded"), "{}", text(&o));
    assert!(images_on_server(&project).is_empty());
}

/// Finding 2: A run id that is a path (`../../x`, or absolute) would make `report`
/// write outside its folder: `run.json` is refused where it is read, so
/// report, verify, unpack and sync all refuse the run and write nothing.
#[test]
fn a_run_id_that_is_a_path_is_refused_everywhere() {
    for evil in ["../../escaped-report", "/tmp/difflog-hostile-abs"] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/runs");
        let dir = record(&root, "p", 1);
        rewrite_log(&dir, |e| {
            if let Event::RunStarted(s) = e {
                s.run_id = evil.into();
            }
        });
        let json = dir.join("run.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        meta["id"] = evil.into();
        std::fs::write(&json, serde_json::to_vec(&meta).unwrap()).unwrap();
        let e = RunDir::open(&dir).unwrap_err().to_string();
        assert!(e.contains("run.json") && e.contains("not a run id"), "{e}");
        let out = tmp.path().join("a/b/report");
        let o = difflog(&[
            "report",
            root.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        // The root's index lists the run as unreadable, with the reason.
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let index = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(index.contains("not a run id"), "{index}");
        // Issue 12: the error row spans the whole table.
        let columns = index.matches("<th>").count();
        assert!(
            index.contains(&format!("<td colspan=\"{columns}\" class=\"error\">")),
            "{index}"
        );
        let o = difflog(&["report", dir.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_ne!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("not a run id"), "{}", text(&o));
        assert!(!tmp.path().join("a/escaped-report").exists());
        assert!(!Path::new("/tmp/difflog-hostile-abs/index.html").exists());
        let o = difflog(&["verify", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        // Issue 32: compare too: the run is listed as a problem, the others
        // are compared, nothing is written outside the output folder.
        let good = record(&root, "p", 1);
        let cmp = tmp.path().join("a/b/cmp");
        let o = difflog(&[
            "compare",
            root.to_str().unwrap(),
            "-o",
            cmp.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["runs"], 1, "{s}");
        assert!(s["problems"].to_string().contains("not a run id"), "{s}");
        assert!(!tmp.path().join("a/escaped-report").exists());
        let written: Vec<PathBuf> = walk(tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with(&cmp) && !p.starts_with(&root) && !p.starts_with(&out))
            .collect();
        assert!(written.is_empty(), "written outside: {written:?}");
        std::fs::remove_dir_all(&good).unwrap();
        // The same run carried in an archive made by other tools.
        let archive = tmp.path().join("evil.tar.zst");
        common::tar_zst_by_hand(&dir, &archive);
        let dest = tmp.path().join("dest");
        let e = difflog::pack::unpack(&archive, &dest)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a run id"), "{e}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }
}

/// Finding 3: `report --self-contained` copies only `media/xx/<digest>.png` files
/// that are regular files inside the run: a cell path climbing out is damage
/// where it is read (nothing copied), and a shard folder linked to a folder
/// outside the run is refused by name.
#[test]
fn report_self_contained_copies_nothing_from_outside_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let dir = record(&root, "p", 2);
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, b"not for the report").unwrap();
    let climb = "../../secret.txt";
    rewrite_log(&dir, |e| {
        if let Event::Row(r) = e {
            if r.call == 2 {
                for c in &mut r.cells {
                    if let Cell::Image { path, .. } = c {
                        *path = climb.into();
                    }
                }
            }
        }
    });
    let out = tmp.path().join("out/report");
    let o = difflog(&[
        "report",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--self-contained",
    ]);
    let copied: Vec<_> = walk(tmp.path().join("out").as_path())
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap() == b"not for the report")
        .collect();
    assert!(
        copied.is_empty(),
        "copied from outside: {copied:?} ({})",
        text(&o)
    );

    // A shard folder that is a link to a copy of itself outside the run.
    let root2 = tmp.path().join("runs2");
    let dir2 = record(&root2, "p", 1);
    let v = RunDir::open(&dir2).unwrap().view();
    let shard = dir2.join(&v.media[0].path).parent().unwrap().to_path_buf();
    let away = tmp.path().join("away");
    std::fs::rename(&shard, &away).unwrap();
    std::os::unix::fs::symlink(&away, &shard).unwrap();
    let out2 = tmp.path().join("out2");
    let o = difflog(&[
        "report",
        root2.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
        "--self-contained",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("linked folder"), "{}", text(&o));
    assert!(
        walk(&out2)
            .iter()
            .all(|p| p.extension().is_none_or(|e| e != "png")),
        "an image was copied through the link"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Finding 4: A media file whose bytes changed after recording — replaced, or hard
/// linked to a file outside the run — is not uploaded under the recorded
/// digest: size and SHA-256 are checked as the file is read.
#[test]
fn media_whose_bytes_changed_are_not_uploaded_under_the_old_digest() {
    for how in ["replaced", "hard link"] {
        let project = mf::unique_project("hostile-bytes");
        let root = tempfile::tempdir().unwrap();
        let dir = record(root.path(), &project, 1);
        let v = RunDir::open(&dir).unwrap().view();
        let victim = dir.join(&v.media[0].path);
        let n = std::fs::metadata(&victim).unwrap().len() as usize;
        let other = vec![b'x'; n];
        std::fs::remove_file(&victim).unwrap();
        if how == "replaced" {
            std::fs::write(&victim, &other).unwrap();
        } else {
            let outside = root.path().join("outside.bin");
            std::fs::write(&outside, &other).unwrap();
            std::fs::hard_link(&outside, &victim).unwrap();
        }
        let o = upload(&dir);
        assert_eq!(o.status.code(), Some(1), "{how}: {}", text(&o));
        assert!(
            text(&o).contains("is not the recorded"),
            "{how}: {}",
            text(&o)
        );
        for r in mf::runs(&project) {
            for (p, _) in mf::artifacts(&r) {
                assert!(
                    mf::artifact(&r, &p) != other,
                    "{how}: the changed bytes reached the server as {p}"
                );
            }
        }
    }
}

/// Finding 15 (part): Only run-id-shaped top-level folders of an archive are runs:
/// an entry under `.difflog-sync` (where the sync state lives) is refused.
#[test]
fn unpack_refuses_entries_outside_run_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = record(&tmp.path().join("runs"), "p", 1);
    let archive = tmp.path().join("state.tar.zst");
    {
        let f = std::fs::File::create(&archive).unwrap();
        let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
        let mut t = tar::Builder::new(enc);
        t.append_dir_all(dir.file_name().unwrap(), &dir).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, ".difflog-sync/state.db", &b"evil"[..])
            .unwrap();
        t.into_inner().unwrap();
    }
    let dest = tmp.path().join("dest");
    let e = difflog::pack::unpack(&archive, &dest)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not inside a run folder"), "{e}");
    assert!(!dest.join(".difflog-sync").exists());
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
}

/// A fake server on 127.0.0.1 answering every request with `status` and a
/// body made by `body` from the request's head (headers included).
fn fake_server(status: &'static str, body: fn(&str) -> String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; 65536];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let b = body(&head);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                );
            });
        }
    });
    format!("127.0.0.1:{}", addr.port())
}

/// Finding 6: a server whose error body echoes the request's headers puts
/// no credential into the output, the sync state or `status`.
#[test]
fn an_error_body_echoing_the_authorization_header_leaks_nothing() {
    let root = tempfile::tempdir().unwrap();
    record(root.path(), "p", 1);
    let addr = fake_server("400 Bad Request", |head| {
        serde_json::json!({"error_code": "BAD_REQUEST", "message": format!("you sent: {head}")})
            .to_string()
    });
    for (user, secret, vars) in [
        (
            "",
            "echo-sekrit-token",
            vec![("MLFLOW_TRACKING_TOKEN", "echo-sekrit-token")],
        ),
        (
            "carol",
            "echo-sekrit-pw",
            vec![
                ("MLFLOW_TRACKING_USERNAME", "carol"),
                ("MLFLOW_TRACKING_PASSWORD", "echo-sekrit-pw"),
            ],
        ),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
        c.args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+http://{addr}"),
        ])
        .env_remove("MLFLOW_TRACKING_TOKEN");
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_ne!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("400"), "{}", text(&o));
        common::assert_no_leak(root.path(), &text(&o), user, secret);
        let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
            .args(["status", root.path().to_str().unwrap()])
            .output()
            .unwrap();
        common::assert_no_leak(root.path(), &text(&o), user, secret);
    }
}

/// Finding 7: names and prompts holding terminal escape sequences (clear
/// screen, window title) are shown escaped by `ls`, `show` and `verify`;
/// JSON output keeps them exact.
#[test]
fn terminal_escapes_in_a_run_never_reach_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("runs");
    let evil = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m";
    let run = Run::create(Init::project(format!("p{evil}")).name(evil).root(&root)).unwrap();
    run.record(&mut TestPipeline::new(), &Req::new(&[evil], 1))
        .unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    for args in [
        vec!["ls", root.to_str().unwrap()],
        vec!["show", dir.to_str().unwrap()],
        vec!["verify", dir.to_str().unwrap()],
    ] {
        let o = difflog(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        let out = text(&o);
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{args:?}: a control character reached the terminal: {out:?}"
        );
        if args[0] != "verify" {
            assert!(out.contains("\\u{1b}[2J"), "{args:?}: {out}");
        }
    }
    let o = difflog(&["show", dir.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["run"]["name"], evil);
}

/// Issue 32, item 13: raw ESC/BEL bytes and bidirectional controls in a
/// server's error body reach neither `upload`'s output nor, later,
/// `status`'s (the error is stored); a run's parameter names in `compare`'s
/// error are escaped too.
#[test]
fn escapes_from_servers_and_runs_never_reach_the_terminal() {
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path(), "p", 1);
    let addr = fake_server("400 Bad Request", |_| {
        "{\"error_code\": \"BAD\u{1b}[2J\", \"message\": \"no\u{7}\u{1b}]0;owned\u{7} \u{202e}gnp.exe\"}".to_string()
    });
    let sync_bin = env!("CARGO_BIN_EXE_difflog-sync");
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t') || ('\u{202a}'..='\u{202e}').contains(&c)
    };
    let target = format!("mlflow+http://{addr}");
    for args in [
        vec!["upload", root.path().to_str().unwrap(), "--to", &target],
        vec![
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &target,
            "--json",
        ],
        vec!["status", root.path().to_str().unwrap()],
        vec!["status", root.path().to_str().unwrap(), "--json"],
    ] {
        let o = Command::new(sync_bin)
            .args(&args)
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .output()
            .unwrap();
        let out = text(&o);
        assert!(
            out.contains("400") || args[0] == "status",
            "{args:?}: {out}"
        );
        assert!(
            !out.chars().any(unsafe_char),
            "{args:?}: reached the terminal: {out:?}"
        );
        assert!(
            out.contains("202e"),
            "{args:?}: the server's text is not shown at all: {out}"
        );
    }
    // A parameter name from a run, quoted in compare's error.
    rewrite_log(&dir, |e| {
        if let Event::CallStarted(c) = e {
            c.params
                .insert("evil\u{1b}[2J\u{202e}".into(), serde_json::json!(1));
        }
    });
    let out = root.path().join("cmp");
    let o = difflog(&[
        "compare",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--rows",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).chars().any(unsafe_char), "{:?}", text(&o));
}

/// A server that accepts connections and never answers (bounded: it
/// holds them until the test process ends).
fn silent_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten().take(1000) {
            held.push(s);
        }
    });
    format!("127.0.0.1:{}", addr.port())
}

/// Issue 32, items 8 and 9: with a target that accepts and never answers
/// beside one that works, `upload --run-timeout` bounds each target on its
/// own (the working one gets every run and reports them uploaded), and the
/// bound holds for the metadata pass of `--metadata-first` too.
#[test]
fn a_stalled_target_holds_no_other_and_the_timeout_bounds_both_passes() {
    const KEY: &str = "0123456789abcdef-stall-key";
    let emu = common::wandb::Emulator::start(KEY, "team");
    let silent = silent_server();
    for extra in [vec![], vec!["--metadata-first"]] {
        let root = tempfile::tempdir().unwrap();
        for _ in 0..3 {
            record(root.path(), "stall", 1);
        }
        let project = if extra.is_empty() {
            "stall-a"
        } else {
            "stall-b"
        };
        let t = std::time::Instant::now();
        let mut c = Command::new(env!("CARGO_BIN_EXE_difflog-sync"));
        c.args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+http://{silent}"),
            "--to",
            &format!("wandb://team/{project}"),
            "--run-timeout",
            "2",
        ])
        .args(&extra)
        .env("WANDB_BASE_URL", &emu.url)
        .env("WANDB_API_KEY", KEY)
        .env_remove("MLFLOW_TRACKING_TOKEN");
        let o = output_within(c, 120);
        let secs = t.elapsed().as_secs();
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {out}");
        assert!(
            out.contains(&format!("/team/{project}: 3 uploaded, 0 failed")),
            "{extra:?}: the working target was held by the stalled one:\n{out}"
        );
        assert!(
            out.contains("not uploaded within 2 s (--run-timeout)"),
            "{extra:?}: {out}"
        );
        assert_eq!(emu.runs(project).len(), 3, "{extra:?}");
        // Three runs at most 2 s each (plus the second pass's), not minutes.
        assert!(secs < 40, "{extra:?}: {secs} s\n{out}");
    }
}

/// Issue 32, item 9, `watch`'s half: with a target that accepts connections
/// and never answers beside one that works, the daemon's pass feeds the
/// working one every due run at once instead of one run per stalled
/// attempt (before: 1 of 8 runs in 150 s; a stalled attempt is a 60 s read
/// timeout, retried).
#[test]
fn watch_feeds_a_working_target_while_another_stalls() {
    const KEY: &str = "0123456789abcdef-stall-watch";
    let emu = common::wandb::Emulator::start(KEY, "team");
    let silent = silent_server();
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..6).map(|_| record(root.path(), "stall-w", 1)).collect();
    let mut daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
            .args([
                "watch",
                root.path().to_str().unwrap(),
                "--to",
                &format!("mlflow+http://{silent}"),
                "--to",
                "wandb://team/stall-w",
            ])
            .env("WANDB_BASE_URL", &emu.url)
            .env("WANDB_API_KEY", KEY)
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Waits until all of `dirs` are finished at W&B, up to `limit`.
    let all_arrive = |dirs: &[PathBuf], limit: u64, what: &str| {
        let arrived = || {
            dirs.iter()
                .filter(|d| {
                    let id = RunDir::open(d).unwrap().meta.id;
                    emu.run("stall-w", &difflog::sync::targets::wandb::run_name(&id))
                        .is_some_and(|r| r.state == "finished")
                })
                .count()
        };
        let t = std::time::Instant::now();
        while arrived() < dirs.len() && t.elapsed() < std::time::Duration::from_secs(limit) {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let (n, took) = (arrived(), t.elapsed());
        assert_eq!(n, dirs.len(), "{what}: {n} of {} in {took:?}", dirs.len());
    };
    all_arrive(&dirs, 45, "the working target's runs");
    // Runs recorded while the silent target's attempt still hangs (its read
    // timeout is 60 s) reach the working target at once: each target goes
    // on with its own runs, it does not wait for the other's to end.
    let later: Vec<PathBuf> = (0..2).map(|_| record(root.path(), "stall-w", 1)).collect();
    all_arrive(&later, 20, "runs recorded during the other target's stall");
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon stopped");
}

/// Finding 8: a server that answers with a body without end makes the
/// upload fail with a clear error, after reading a bounded amount — never a
/// process that buffers until the allocator aborts.
#[test]
fn an_endless_answer_is_cut_off_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    record(root.path(), "p", 1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = std::sync::Arc::clone(&sent);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let sent = std::sync::Arc::clone(&s2);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 65536];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[",
                );
                let chunk = vec![b' '; 1 << 20];
                // Until the client hangs up (bounded: 4 GB at most).
                for _ in 0..4096 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                    sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let t = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+http://{addr}"),
        ])
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("over 16 MB"), "{}", text(&o));
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    let mb = sent.load(std::sync::atomic::Ordering::SeqCst) >> 20;
    assert!(mb < 512, "the client read {mb} MB of an endless answer");
}

/// Finding 11: a server that accepts connections and never answers holds
/// `upload` of a run only until `--run-timeout`, with a clear error.
#[test]
fn a_silent_server_holds_an_upload_only_until_its_deadline() {
    let root = tempfile::tempdir().unwrap();
    record(root.path(), "p", 1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten().take(64) {
            held.push(s); // accepted, never answered
        }
    });
    let t = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &format!("mlflow+http://{addr}"),
            "--run-timeout",
            "3",
        ])
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .output()
        .unwrap();
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not uploaded within 3 s"), "{}", text(&o));
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
}

/// Runs `cmd`, killing it if it has not finished within `secs`.
fn output_within(mut cmd: Command, secs: u64) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > std::time::Duration::from_secs(secs) {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("{cmd:?} hung for {secs} s: {}", text(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Finding 10: FIFOs where a run's files should be (events.log, a media
/// file) block nothing: every command finishes, names the file, and the good
/// runs beside the bad ones are still listed, verified and uploaded.
#[test]
fn fifos_in_runs_block_nothing_and_stop_no_other_run() {
    let project = mf::unique_project("hostile-fifo");
    let root = tempfile::tempdir().unwrap();
    let good = record(root.path(), &project, 1);
    let bad_log = record(root.path(), &project, 1);
    std::fs::remove_file(bad_log.join("events.log")).unwrap();
    mkfifo(&bad_log.join("events.log"));
    let bad_media = record(root.path(), &project, 1);
    let v = RunDir::open(&bad_media).unwrap().view();
    std::fs::remove_file(bad_media.join(&v.media[0].path)).unwrap();
    mkfifo(&bad_media.join(&v.media[0].path));
    let r = root.path().to_str().unwrap();
    let bin = difflog_bin();
    let sync_bin = env!("CARGO_BIN_EXE_difflog-sync");
    let run = |prog: &str, args: &[&str]| {
        let mut c = Command::new(prog);
        c.args(args).env_remove("MLFLOW_TRACKING_TOKEN");
        output_within(c, 30)
    };
    let b = bin.to_str().unwrap();
    let o = run(b, &["ls", r]);
    assert!(
        text(&o).contains(good.file_name().unwrap().to_str().unwrap()),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("FIFO"), "{}", text(&o));
    let o = run(b, &["show", bad_log.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        text(&o).contains("events.log") && text(&o).contains("FIFO"),
        "{}",
        text(&o)
    );
    let o = run(b, &["verify", r]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FIFO") || text(&o).contains("not a regular file"),
        "{}",
        text(&o)
    );
    let out = root.path().join("report");
    run(
        b,
        &["report", r, "-o", out.to_str().unwrap(), "--self-contained"],
    );
    run(sync_bin, &["status", r]);
    let o = run(sync_bin, &["upload", r, "--to", &mf::target()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The good run arrived whole.
    let id = RunDir::open(&good).unwrap().meta.id;
    let server = mf::run_for(&project, &id);
    assert_eq!(server["info"]["status"], "FINISHED");
    // `watch` over the same root keeps answering signals.
    let mut watch = common::KillOnDrop(
        Command::new(sync_bin)
            .args(["watch", r, "--to", &mf::target()])
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    let t = std::time::Instant::now();
    while watch.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "watch ignored SIGTERM over a root holding FIFOs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Issue 35: a media record that says JPEG (the format an imported file
/// keeps) for a file that is a PNG is damage `verify` names.
#[test]
fn an_image_whose_record_lies_about_its_format_is_damage() {
    let root = tempfile::tempdir().unwrap();
    let liar = record(root.path(), "hostile-format", 1);
    let real = RunDir::open(&liar).unwrap().view().media[0].clone();
    let jpg = real.path.replace(".png", ".jpg");
    std::fs::rename(liar.join(&real.path), liar.join(&jpg)).unwrap();
    rewrite_log(&liar, |e| match e {
        Event::Media(m) => {
            m.format = "jpg".into();
            m.path = jpg.clone();
        }
        Event::Row(r) => {
            for c in &mut r.cells {
                if let Cell::Image { path, .. } = c {
                    *path = jpg.clone();
                }
            }
        }
        _ => {}
    });
    let o = difflog(&["verify", liar.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("its record says JPEG, but the file is not one"),
        "{}",
        text(&o)
    );
}

/// Issue 37: an MP4 whose record lies about its frames or its size, or
/// says nothing of the video it is, is damage `verify` names.
#[test]
fn an_mp4_whose_record_lies_is_damage() {
    let root = tempfile::tempdir().unwrap();
    let clip = |name: &str| {
        let run = Run::create(Init::project("hostile-mp4").name(name).root(root.path())).unwrap();
        let request = common::ClipRequest {
            frames: 6,
            fps: 8.0,
            size: common::CLIP_SIZE,
        };
        run.record(&mut common::ClipPipeline, &request).unwrap();
        let dir = run.dir().unwrap().to_path_buf();
        run.finish().unwrap();
        dir
    };
    type Lie = fn(&mut difflog::event::MediaEvent);
    let lies: [(&str, Lie, &str); 3] = [
        (
            "frames",
            |m| m.video.as_mut().unwrap().frames = 9,
            "its MP4 has 6 frame(s), but its record says 9",
        ),
        (
            "size",
            |m| m.width = 48,
            "its MP4 is 24×16, but its record says 48×16",
        ),
        (
            "still",
            |m| m.video = None,
            "an MP4 media record that says nothing of the video",
        ),
    ];
    for (name, lie, said) in lies {
        let dir = clip(name);
        let o = difflog(&["verify", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        rewrite_log(&dir, |e| {
            if let Event::Media(m) = e {
                assert_eq!(m.format, "mp4");
                lie(m);
            }
        });
        let o = difflog(&["verify", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(text(&o).contains(said), "{name}: {}", text(&o));
    }
}

/// Issue 37: a media record that calls a still PNG a 16-frame video (right
/// digest, so nothing else notices) is damage `verify` names.
#[test]
fn a_still_whose_record_says_it_is_a_video_is_damage() {
    let root = tempfile::tempdir().unwrap();
    let liar = record(root.path(), "hostile-video", 1);
    let video = difflog::event::Video {
        frames: 16,
        fps: 8.0,
        fps_from: None,
        duration_s: 2.0,
    };
    rewrite_log(&liar, |e| {
        if let Event::Media(m) = e {
            m.video = Some(video.clone());
        }
    });
    let o = difflog(&["verify", liar.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("its animated PNG has 1 frame(s), but its record says 16"),
        "{}",
        text(&o)
    );
}

/// Issue 32, item 5: a media record whose size lies about its PNG (right
/// digest, so nothing else notices): `verify` reports it, `compare` refuses
/// that image before allocating for it and compares the others.
#[test]
fn an_image_whose_record_lies_about_its_size_is_refused_before_decoding() {
    let root = tempfile::tempdir().unwrap();
    let honest = record(root.path(), "hostile-size", 1);
    let liar = record(root.path(), "hostile-size", 1);
    let real = RunDir::open(&liar).unwrap().view().media[0].clone();
    // The media record and the row's image cell both say 200×200 (larger
    // than a thumbnail: compare decodes it to make one).
    rewrite_log(&liar, |e| match e {
        Event::Media(m) => {
            m.width = 200;
            m.height = 200;
        }
        Event::Row(r) => {
            for c in &mut r.cells {
                if let Cell::Image { width, height, .. } = c {
                    *width = 200;
                    *height = 200;
                }
            }
        }
        _ => {}
    });
    let o = difflog(&["verify", liar.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let want = format!(
        "its PNG is {}×{}, but its record says 200×200",
        real.width, real.height
    );
    assert!(text(&o).contains(&want), "{}", text(&o));
    let out = root.path().join("cmp");
    let o = difflog(&[
        "compare",
        honest.to_str().unwrap(),
        liar.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "its pixels are {}×{}, not the 200×200 its media record says",
            real.width, real.height
        )),
        "{err}\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["problems"].as_array().unwrap().len(), 1, "{s}");
}

/// Issue 32, smaller findings: `compare -o` inside a run is refused (as
/// `pack -o` is), and a damaged run is compared with a warning, not
/// silently.
#[test]
fn compare_writes_into_no_run_and_says_when_a_run_is_damaged() {
    let root = tempfile::tempdir().unwrap();
    let one = record(root.path(), "hostile-cmp", 1);
    let two = record(root.path(), "hostile-cmp", 1);
    let inside = one.join("media").join("page");
    let o = difflog(&[
        "compare",
        one.to_str().unwrap(),
        two.to_str().unwrap(),
        "-o",
        inside.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("would be written inside run"),
        "{}",
        text(&o)
    );
    assert!(!inside.exists());
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(two.join("events.log"))
        .unwrap()
        .write_all(b"garbage after the end\n")
        .unwrap();
    let out = root.path().join("cmp");
    let o = difflog(&[
        "compare",
        one.to_str().unwrap(),
        two.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = s["problems"].to_string();
    assert!(
        problems.contains("events.log is damaged at byte"),
        "{problems}"
    );
}

/// Issue 32, item 7: a 6 GiB sparse `events.log` (a few KB on disk) is
/// that run's error: `ls`, `show`, `verify` and `difflog-sync status` name
/// it and go on with the other runs, instead of reading it whole and
/// aborting.
#[test]
fn a_huge_sparse_log_is_one_runs_error_not_an_abort() {
    let root = tempfile::tempdir().unwrap();
    let good = record(root.path(), "hostile-sparse", 1);
    let bad = record(root.path(), "hostile-sparse", 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(bad.join("events.log"))
        .unwrap();
    f.set_len(6 << 30).unwrap();
    drop(f);
    let r = root.path().to_str().unwrap();
    let good_id = good.file_name().unwrap().to_str().unwrap();
    let run = |prog: &str, args: &[&str]| {
        let mut c = Command::new(prog);
        c.args(args).env_remove("MLFLOW_TRACKING_TOKEN");
        output_within(c, 60)
    };
    let b = difflog_bin();
    let b = b.to_str().unwrap();
    let sync_bin = env!("CARGO_BIN_EXE_difflog-sync");
    for (prog, args) in [
        (b, vec!["ls", r]),
        (b, vec!["verify", r]),
        (sync_bin, vec!["status", r]),
    ] {
        let o = run(prog, &args);
        let t = text(&o);
        assert!(
            o.status.code().is_some_and(|c| c < 100),
            "{args:?} died: {:?}\n{t}",
            o.status
        );
        assert!(
            t.contains(good_id),
            "{args:?}: the good run is missing\n{t}"
        );
        assert!(
            t.contains("more than the"),
            "{args:?}: the big log is not named\n{t}"
        );
    }
    let o = run(b, &["show", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("events.log"), "{}", text(&o));
    // `status` only reads: a root never synced gets no state folder.
    assert!(!root.path().join(".difflog-sync").exists());
}

/// Finding 13: `verify` calls damage what it used to pass: a flipped bit in
/// the last record of a finished run, garbage after `run_finished` (with or
/// without line ends), a valid record after `run_finished`, an edited
/// `run.json`, and a shard folder linked out of the run (the same answer as
/// pack and sync).
#[test]
fn verify_finds_every_edit_of_a_finished_run() {
    type Edit = fn(&Path);
    let edits: Vec<(&str, Edit)> = vec![
        ("bit flipped in the last record", |d| {
            let p = d.join("events.log");
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len();
            b[n - 10] ^= 0x01;
            std::fs::write(&p, b).unwrap();
        }),
        ("garbage without line ends after run_finished", |d| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(d.join("events.log"))
                .unwrap();
            std::io::Write::write_all(&mut f, &vec![b'x'; 300_000]).unwrap();
        }),
        ("garbage lines after run_finished", |d| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(d.join("events.log"))
                .unwrap();
            std::io::Write::write_all(&mut f, "junk\n".repeat(60_000).as_bytes()).unwrap();
        }),
        ("a valid record after run_finished", |d| {
            let run = RunDir::open(d).unwrap();
            let seq = run.records().len() as u64 + 1;
            let e = Event::Metric(difflog::event::MetricEvent {
                name: "late".into(),
                value: 1.0,
                step: None,
            });
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(d.join("events.log"))
                .unwrap();
            std::io::Write::write_all(
                &mut f,
                &encode_record(seq, "2026-11-29T00:00:00.000000Z", &e).unwrap(),
            )
            .unwrap();
        }),
        ("run.json's project edited", |d| {
            let p = d.join("run.json");
            let t = std::fs::read_to_string(&p)
                .unwrap()
                .replace("\"p\"", "\"q\"");
            std::fs::write(&p, t).unwrap();
        }),
        ("a shard folder linked out of the run", |d| {
            let v = RunDir::open(d).unwrap().view();
            let shard = d.join(&v.media[0].path).parent().unwrap().to_path_buf();
            let away = d.parent().unwrap().join("away-shard");
            std::fs::rename(&shard, &away).unwrap();
            std::os::unix::fs::symlink(&away, &shard).unwrap();
        }),
    ];
    for (what, edit) in edits {
        let tmp = tempfile::tempdir().unwrap();
        let dir = record(&tmp.path().join("runs"), "p", 2);
        let o = difflog(&["verify", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{what}: before: {}", text(&o));
        edit(&dir);
        let o = difflog(&["verify", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
    }
}

/// Finding 18: a run folder whose name is not UTF-8 (which unpack or a copy
/// can produce) is accepted by show, verify and report.
#[test]
fn a_run_folder_with_a_non_utf8_name_can_be_shown_verified_and_reported() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = record(&tmp.path().join("runs"), "p", 1);
    let odd = tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"run-\xff\xfe-copy"));
    std::fs::rename(&dir, &odd).unwrap();
    let out = tmp.path().join("report");
    for args in [
        vec![std::ffi::OsStr::new("show"), odd.as_os_str()],
        vec![std::ffi::OsStr::new("verify"), odd.as_os_str()],
        vec![
            std::ffi::OsStr::new("report"),
            odd.as_os_str(),
            std::ffi::OsStr::new("-o"),
            out.as_os_str(),
        ],
    ] {
        let o = Command::new(difflog_bin()).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    }
    assert!(out.join("index.html").is_file());
}

/// Finding 16: the disk fills up while recording. The run stays readable
/// and undamaged, ends as *failed* (not crashed) naming the error, counts
/// only the images it stored, and a second run on the full disk fails
/// without leaving a folder behind.
#[test]
fn a_full_disk_while_recording_ends_the_run_as_failed_and_leaves_no_debris() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = common::SmallDisk::mount(&tmp.path().join("small"), "2m") else {
        eprintln!("SKIPPED a_full_disk_while_recording_ends_the_run_as_failed_and_leaves_no_debris: cannot mount a tmpfs here (needs root)");
        return;
    };
    let root = disk.0.join("runs");
    let run = Run::create(Init::project("p").root(&root)).unwrap();
    let mut p = TestPipeline::new();
    p.size = 192;
    let mut failed = false;
    for c in 0..200u64 {
        if run.record(&mut p, &Req::new(&["a", "b"], c * 10)).is_err() {
            failed = true;
        }
        if failed && c > 40 {
            break;
        }
    }
    let dir = run.dir().unwrap().to_path_buf();
    let e = run.finish().unwrap_err().to_string();
    assert!(e.contains("No space left") || e.contains("space"), "{e}");
    let r = RunDir::open(&dir).unwrap();
    assert_eq!(
        r.state(),
        difflog::read::RunState::Failed,
        "{:?}",
        r.log.problem
    );
    let rep = difflog::verify::verify_run(&dir);
    assert!(!rep.damaged(), "{:?}", rep.findings);
    let view = r.view();
    let stored = view.media.len();
    assert!(stored > 0 && view.calls.values().any(|c| !c.ok()));
    let o = difflog(&["ls", root.to_str().unwrap(), "--json"]);
    let ls: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ls[0]["images"].as_u64().unwrap() as usize, stored, "{ls}");
    // A second run on the disk, filled to the last byte.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(disk.0.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.write_all(&[0u8]);
    }
    let before: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let e = Run::create(Init::project("p").root(&root))
        .err()
        .expect("a run was created on a full disk");
    assert!(e.to_string().contains("No space left"), "{e}");
    let after: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before, after, "a failed run creation left a folder");
}
