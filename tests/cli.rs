//! The `difflog` command as a user runs it: ls, show, verify and bench record,
//! text and JSON, exit codes.

mod common;

use common::{difflog_bin, only_run, Req, TestPipeline};
use difflog::{Init, Run};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn difflog(args: &[&str], root: &Path) -> Output {
    Command::new(difflog_bin())
        .args(args)
        .env("DIFFLOG_DIR", root)
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn recorded(root: &Path) -> std::path::PathBuf {
    let run = Run::create(Init::project("cli-project").name("cli run").root(root)).unwrap();
    let mut p = TestPipeline::new();
    let mut req = Req::new(&["a red <b>fox</b>"], 4);
    req.per_prompt = 2;
    req.negative = Some("blurry".into());
    run.record(&mut p, &req).unwrap();
    p.fail_after = Some(0);
    let _ = run.record(&mut p, &Req::new(&["doomed"], 9));
    run.log_metric("fid", 12.5, Some(2)).unwrap();
    run.finish().unwrap();
    only_run(root)
}

#[test]
fn ls_lists_runs_with_state_calls_images_and_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded(tmp.path());
    let id = dir.file_name().unwrap().to_str().unwrap();
    let o = difflog(&["ls"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("ID") && text.contains("STATE"), "{text}");
    let line = text.lines().find(|l| l.starts_with(id)).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols[1..7],
        ["cli-project", "cli", "run", "finished", "2", "2"]
    );
    let o = difflog(
        &["ls", "--json", tmp.path().to_str().unwrap()],
        Path::new("/nonexistent"),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["id"], id);
    assert_eq!(v[0]["state"], "finished");
    assert_eq!(v[0]["calls"], 2);
    assert_eq!(v[0]["images"], 2);
    assert!(v[0]["bytes"].as_u64().unwrap() > 100);

    let empty = tempfile::tempdir().unwrap();
    let o = difflog(&["ls"], empty.path());
    assert!(o.status.success());
    assert!(stdout(&o).contains("no runs under"));
    let o = difflog(&["ls", "/definitely/not/here"], empty.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/definitely/not/here"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn show_prints_config_workflow_and_one_table_per_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded(tmp.path());
    let id = dir.file_name().unwrap().to_str().unwrap();
    let o = difflog(&["show", id], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "project  cli-project",
        "pipeline 1  TestPipeline",
        "workflow",
        "  Pipeline-Call-1  TestPipeline  params {\"prompt\":[\"a red <b>fox</b>\"],\"negative_prompt\":\"blurry\"",
        "Result-Table/Pipeline-Call-1  (ok, 2 image(s))",
        "# | Prompt | Negative-Prompt | Generated-Image | Seed",
        "0 | a red <b>fox</b> | blurry | media/",
        "Result-Table/Pipeline-Call-2  (FAILED)",
        "error: out of memory after 0 image(s)",
        "fid = 12.5 @ step 2",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let o = difflog(&["show", dir.to_str().unwrap(), "--json"], tmp.path());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["run"]["id"], id);
    assert_eq!(v["workflow"].as_array().unwrap().len(), 2);
    assert_eq!(v["calls"][0]["rows"].as_array().unwrap().len(), 2);
    assert_eq!(v["calls"][1]["finished"]["status"], "error");

    let o = difflog(&["show", tmp.path().to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a difflog run directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verify_exit_codes_say_whether_anything_is_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded(tmp.path());
    let o = difflog(&["verify", tmp.path().to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains(": ok ("));

    let mut log = std::fs::read(dir.join("events.log")).unwrap();
    let n = log.len();
    log[n / 2] ^= 0x04;
    std::fs::write(dir.join("events.log"), log).unwrap();
    let o = difflog(&["verify", dir.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.contains("DAMAGED") && text.contains("damage: events.log: byte"),
        "{text}"
    );
    let o = difflog(&["verify", "--json", dir.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["damaged"], true);
    assert_eq!(v["runs"][0]["findings"][0]["severity"], "damage");

    let o = difflog(&["verify", "/no/such/run"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/no/such/run"));
}

#[test]
fn bench_record_prints_every_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let o = difflog(
        &["bench", "record", "--calls", "6", "--size", "32", "--json"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "images_per_s",
        "ms_per_call",
        "blocked_p50_ms",
        "blocked_p99_ms",
        "disk_over_png",
        "files_per_image",
        "ratio_to_encode_only",
        "run_dir",
    ] {
        assert!(!v[key].is_null(), "{key} missing in {v}");
    }
    assert_eq!(v["files_per_image"], 1.0);
    let run_dir = v["run_dir"].as_str().unwrap();
    assert!(run_dir.starts_with(tmp.path().to_str().unwrap()));
    let o = difflog(&["verify", run_dir], tmp.path());
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = difflog(
        &["bench", "record", "--calls", "2", "--size", "32"],
        tmp.path(),
    );
    assert!(stdout(&o).contains("recording / encode-only"));
}

/// Issue 38: `bench record --compare-png` records the same images with
/// each PNG encoding and reports them side by side: the compact PNGs are
/// smaller than the fast ones on natural-looking images, and the measured
/// runs are removed; `--candidates` adds every other compressor's encode
/// and write figures on the same images.
#[test]
fn bench_record_compares_the_png_encodings() {
    let tmp = tempfile::tempdir().unwrap();
    let o = difflog(
        &[
            "bench",
            "record",
            "--calls",
            "4",
            "--size",
            "96",
            "--images",
            "natural",
            "--compare-png",
            "--candidates",
            "--json",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 33, "3 filter choices × 11 compressors");
    for c in candidates {
        assert!(c["images_per_s"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["bytes"].as_u64().unwrap() > 0, "{c}");
    }
    let runs = v["runs"].as_array().unwrap();
    let png: Vec<&str> = runs.iter().map(|r| r["png"].as_str().unwrap()).collect();
    assert_eq!(png, ["fast", "compact"]);
    let bytes: Vec<u64> = runs
        .iter()
        .map(|r| r["png_bytes"].as_u64().unwrap())
        .collect();
    assert!(bytes[1] < bytes[0], "compact {bytes:?} not smaller");
    assert!(v["compact_throughput_over_fast"].as_f64().unwrap() > 0.0);
    assert!(v["pil_bytes"].is_null());
    for r in runs {
        assert_eq!(r["images"], 4);
        assert!(!Path::new(r["run_dir"].as_str().unwrap()).exists());
    }
    let o = difflog(
        &["bench", "record", "--calls", "2", "--images", "noise"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--images noise"), "{}", stderr(&o));
}

/// Issue 38: `bench record --compare-sync` records the same images with an
/// fsync per file and with group syncs, in turns, and reports each round
/// and the medians; runs recorded either way (`DIFFLOG_SYNC`) verify; a
/// value the setting does not know is refused, naming it.
#[test]
fn bench_record_compares_the_sync_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let o = difflog(
        &[
            "bench",
            "record",
            "--calls",
            "3",
            "--size",
            "48",
            "--compare-sync",
            "--rounds",
            "2",
            "--json",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rounds"], 2);
    let modes = v["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["sync"].as_str().unwrap()).collect();
    assert_eq!(names, ["file", "group"]);
    for m in modes {
        assert_eq!(m["ratios"].as_array().unwrap().len(), 2, "{m}");
        assert!(m["median_ratio"].as_f64().unwrap() > 0.0, "{m}");
        let run = &m["median_run"];
        assert_eq!(run["sync"], m["sync"]);
        assert_eq!(run["images"], 3);
        assert!(!Path::new(run["run_dir"].as_str().unwrap()).exists());
    }
    assert!(v["group_throughput_over_file"].as_f64().unwrap() > 0.0);
    let o = difflog(
        &["bench", "record", "--compare-sync", "--sync", "file"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    for mode in ["file", "group"] {
        let root = tmp.path().join(mode);
        let o = Command::new(difflog_bin())
            .args(["bench", "record", "--calls", "3", "--size", "32", "--json"])
            .args(["--no-baseline"])
            .env("DIFFLOG_DIR", &root)
            .env("DIFFLOG_SYNC", mode)
            .env_remove("DIFFLOG_MODE")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["sync"], mode);
        let run = only_run(&root);
        let o = difflog(&["verify", run.to_str().unwrap()], tmp.path());
        assert!(o.status.success(), "{mode}: {}", stdout(&o));
    }
    let o = Command::new(difflog_bin())
        .args([
            "bench",
            "record",
            "--calls",
            "1",
            "--size",
            "16",
            "--no-baseline",
        ])
        .env("DIFFLOG_DIR", tmp.path().join("bad"))
        .env("DIFFLOG_SYNC", "never")
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("DIFFLOG_SYNC"), "{}", stderr(&o));
}

/// Issue 38: `bench png --candidates` measures every compressor with each
/// way of choosing the rows' filters, and difflog's own compressor with
/// its own filter choice is exactly the compact encoding; `--from` takes
/// the images from PNG files and names a file it cannot read.
#[test]
fn bench_png_measures_the_candidates_and_reads_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let o = difflog(
        &[
            "bench",
            "png",
            "--count",
            "2",
            "--size",
            "48",
            "--candidates",
            "--json",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 33, "3 filter choices × 11 compressors");
    for name in ["fdeflate", "miniz_oxide", "zlib-rs", "libdeflate"] {
        assert!(
            candidates
                .iter()
                .any(|c| c["compressor"].as_str().unwrap().starts_with(name)),
            "{name} missing"
        );
    }
    let own = candidates
        .iter()
        .find(|c| {
            c["filter"] == "least entropy per row"
                && c["compressor"].as_str().unwrap().starts_with("difflog")
        })
        .unwrap();
    let compact = v["encodings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "compact")
        .unwrap();
    assert_eq!(own["bytes"], compact["bytes"]);

    let pngs = tmp.path().join("pngs");
    std::fs::create_dir_all(pngs.join("sub")).unwrap();
    for (i, side) in [16u32, 40].iter().enumerate() {
        let img = difflog::bench::natural_image(i as u64, *side);
        let bytes = difflog::run::media::encode_png(&img).unwrap();
        std::fs::write(pngs.join("sub").join(format!("{i}.png")), bytes).unwrap();
    }
    let from = pngs.to_str().unwrap();
    let o = difflog(&["bench", "png", "--from", from, "--json"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 2);
    std::fs::write(pngs.join("broken.png"), b"not a png").unwrap();
    let o = difflog(&["bench", "png", "--from", from], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("broken.png"), "{}", stderr(&o));
}

#[test]
fn help_explains_the_commands() {
    let o = difflog(&["--help"], Path::new("."));
    let text = stdout(&o);
    for c in ["ls", "show", "verify", "bench", "DIFFLOG_DIR"] {
        assert!(text.contains(c), "{c} missing from --help");
    }
    let o = difflog(&["verify", "--help"], Path::new("."));
    assert!(stdout(&o).contains("Exit code 1"));
}

fn generate(args: &[&str], root: &Path, extra_env: &[(&str, &str)]) -> Output {
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difflog-cache");
    let mut c = Command::new(difflog_bin());
    c.arg("generate")
        .args(args)
        .env("DIFFLOG_DIR", root)
        .env("DIFFLOG_CACHE", cache)
        .env_remove("DIFFLOG_MODE");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn generate_records_a_run_and_says_where_the_images_are() {
    let tmp = tempfile::tempdir().unwrap();
    let o = generate(
        &[
            "--prompt",
            "a red fox",
            "--prompt",
            "a whale",
            "--steps",
            "3",
            "--seed",
            "9",
            "--verbose",
            "--project",
            "demo",
        ],
        tmp.path(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let dir = only_run(tmp.path());
    assert!(text.contains(&dir.display().to_string()), "{text}");
    let pngs: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_end().ends_with(".png"))
        .collect();
    assert_eq!(pngs.len(), 2, "{text}");
    for p in pngs {
        let img = image::open(p.trim()).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    assert!(text.contains("timings: text_encoding"), "{text}");
    let o = difflog(&["show", dir.to_str().unwrap()], tmp.path());
    let shown = stdout(&o);
    assert!(
        shown.contains("Result-Table/Pipeline-Call-1  (ok, 2 image(s))"),
        "{shown}"
    );
    assert!(
        shown.contains("pipeline 1  StableDiffusionPipeline (tiny-shapes, f32, cpu)"),
        "{shown}"
    );

    // --refiner on tiny-xl: two calls of one run.
    let o = generate(
        &[
            "--model",
            "tiny-xl",
            "--refiner",
            "--prompt",
            "a castle",
            "--steps",
            "3",
        ],
        tmp.path(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Pipeline-Call-2 (1 image(s))"),
        "{}",
        stdout(&o)
    );

    // Disabled recording needs --out, and writes the images there.
    let out_dir = tmp.path().join("out");
    let o = generate(
        &["--prompt", "x", "--steps", "2"],
        &tmp.path().join("none"),
        &[("DIFFLOG_MODE", "disabled")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no --out"), "{}", stderr(&o));
    let o = generate(
        &[
            "--prompt",
            "x",
            "--steps",
            "2",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &tmp.path().join("none"),
        &[("DIFFLOG_MODE", "disabled")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out_dir.join("image-0.png").is_file());
    assert!(!tmp.path().join("none").exists());
}

#[test]
fn generate_rejects_bad_arguments_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    let offline = [
        ("HF_HOME", hf.path().to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--prompt", "x", "--scheduler", "dpm"],
            "unknown scheduler \"dpm\"",
        ),
        (
            vec!["--prompt", "x", "--device", "cuda:0"],
            "--features cuda",
        ),
        (
            vec!["--prompt", "x", "--width", "100"],
            "width 100 must be a positive multiple of 8",
        ),
        (vec!["--prompt", "x", "--refiner"], "has no refiner"),
        (
            vec!["--prompt", "x", "--model", "nope"],
            "nope: unknown model",
        ),
        (
            vec!["--prompt", "x", "--image", "/no/such.png"],
            "/no/such.png",
        ),
        // Issue 13 (9): sizes whose attention cannot fit are refused
        // before a run exists, instead of aborting the process mid-call.
        (
            vec!["--prompt", "x", "--width", "4096", "--height", "4096"],
            "needs about",
        ),
        (
            vec!["--prompt", "x", "--width", "2048", "--height", "2048"],
            "needs about",
        ),
        (
            vec!["--prompt", "x", "--model", "sd15"],
            "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5",
        ),
        (
            vec!["--prompt", "x", "--model", "sdxl"],
            "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k: tokenizer.json",
        ),
    ];
    for (args, want) in cases {
        let o = generate(&args, tmp.path(), &offline);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{args:?}: {:?} does not say {want:?}",
            stderr(&o)
        );
    }
    // Issue 13 (17): an input image too small names the input image.
    let tiny_png = tmp.path().join("one-pixel.png");
    image::RgbImage::new(1, 1).save(&tiny_png).unwrap();
    let o = generate(
        &["--prompt", "x", "--image", tiny_png.to_str().unwrap()],
        tmp.path(),
        &offline,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the input image is 1×1 pixels"),
        "{}",
        stderr(&o)
    );
    // Issue 13 (17): --out naming a file fails before a run is recorded.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = generate(
        &["--prompt", "x", "--out", file.to_str().unwrap()],
        tmp.path(),
        &offline,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot use it as the output folder"),
        "{}",
        stderr(&o)
    );
    let o = generate(&["--steps", "2"], tmp.path(), &offline);
    assert!(!o.status.success(), "a prompt is required");
    assert!(
        difflog::read::find_runs(tmp.path())
            .map(|r| r.is_empty())
            .unwrap_or(true),
        "a failed request left a run"
    );
}

/// Issue 20: `--version` of both binaries names the version and the git
/// commit they were built from.
#[test]
fn version_names_the_release_and_the_commit() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for bin in [
        env!("CARGO_BIN_EXE_difflog"),
        env!("CARGO_BIN_EXE_difflog-sync"),
    ] {
        let o = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{text}");
        assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        match &head {
            Some(c) => assert!(text.contains(&format!("(commit {c})")), "{text} vs {c}"),
            None => assert!(text.contains("(commit "), "{text}"),
        }
    }
}

/// Issue 12: a failure under `--json` is JSON on stdout too, with a stable
/// `error_code` naming its kind (not its words), and a row that cannot be
/// read says why the same way.
#[test]
fn json_failures_carry_a_stable_error_code() {
    let root = tempfile::tempdir().unwrap();
    let dir = recorded(root.path());
    // A folder that is no run.
    let empty = root.path().join("not-a-run");
    std::fs::create_dir(&empty).unwrap();
    let o = difflog(&["show", empty.to_str().unwrap(), "--json"], root.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["error_code"], "not_a_run", "{v}");
    assert!(v["error"].as_str().unwrap().contains("not-a-run"), "{v}");
    assert!(stderr(&o).contains("not-a-run"), "{}", stderr(&o));
    // Without --json: the message only, nothing on stdout.
    let o = difflog(&["show", empty.to_str().unwrap()], root.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    // A run whose run.json is damaged, in a listing.
    std::fs::write(dir.join("run.json"), "{not json").unwrap();
    let o = difflog(
        &["ls", root.path().to_str().unwrap(), "--json"],
        root.path(),
    );
    let rows: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let bad: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert_eq!(bad.len(), 1, "{rows}");
    assert_eq!(bad[0]["error_code"], "bad_run_json", "{rows}");
}

/// Issue 31: errors are typed by what they concern, so their codes tell a
/// file given to difflog, a call that cannot be replayed and a bad argument
/// apart (all three were `invalid` before).
#[test]
fn error_codes_name_what_the_error_concerns() {
    let root = tempfile::tempdir().unwrap();
    let dir = recorded(root.path());
    let code = |args: &[&str]| -> (Value, String) {
        let o = difflog(args, root.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        (
            v["error_code"].clone(),
            v["error"].as_str().unwrap_or("").to_string(),
        )
    };
    let not_png = root.path().join("notes.png");
    std::fs::write(&not_png, "plain text").unwrap();
    let (c, e) = code(&["inspect", not_png.to_str().unwrap(), "--json"]);
    assert_eq!(c, "bad_file", "{e}");
    assert!(e.contains("notes.png"), "{e}");
    let (c, e) = code(&["replay", dir.to_str().unwrap(), "--call", "9", "--json"]);
    assert_eq!(c, "replay", "{e}");
    assert!(
        e.contains(dir.to_str().unwrap()) && e.contains("no call 9"),
        "{e}"
    );
}

/// `difflog-sync status --json` run rows of `root`, with the status cache
/// in `cache`.
fn sync_status(root: &Path, cache: &Path, extra: &[&str]) -> Vec<Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args(["status", "--json", root.to_str().unwrap()])
        .args(extra)
        .env("DIFFLOG_CACHE", cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("run_id").is_some())
        .cloned()
        .collect()
}

/// Issue 34 (5): `status` keeps each run's counts in its cache and uses
/// them only while the run's files are the very ones they were read from:
/// counts planted in the cache are shown (so it is read), `--fresh` reads
/// the logs again, and a log damaged in place (same size) or cut short
/// after it was cached is read again, never shown with its old counts.
#[test]
fn status_uses_cached_counts_only_while_a_runs_files_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = (tmp.path().join("runs"), tmp.path().join("cache"));
    let run = Run::create(Init::project("cached").root(&root)).unwrap();
    let mut p = TestPipeline::new();
    for seed in 0..2 {
        run.record(&mut p, &Req::new(&["a fox"], seed)).unwrap();
    }
    run.finish().unwrap();
    let dir = only_run(&root);
    // Files changed within the last two seconds are never cached.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let calls = |rows: &[Value]| (rows[0]["calls_recorded"].clone(), rows[0]["state"].clone());
    assert_eq!(
        calls(&sync_status(&root, &cache, &[])),
        (2.into(), "finished".into())
    );

    let dbs: Vec<_> = std::fs::read_dir(cache.join("status"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dbs.len(), 1, "one cache file per root: {dbs:?}");
    let conn = rusqlite::Connection::open(&dbs[0]).unwrap();
    assert_eq!(conn.execute("UPDATE runs SET calls = 7", []).unwrap(), 1);
    assert_eq!(
        calls(&sync_status(&root, &cache, &[])).0,
        7,
        "cache not read"
    );
    assert_eq!(calls(&sync_status(&root, &cache, &["--fresh"])).0, 2);
    assert_eq!(
        calls(&sync_status(&root, &cache, &[])).0,
        2,
        "--fresh stores"
    );

    // One byte of the first call_finished record changed in place: the
    // log keeps its size, and the calls after the damage no longer count.
    let log = dir.join("events.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = String::from_utf8_lossy(&bytes)
        .find("\"call_finished\"")
        .unwrap();
    bytes[at + 1] = b'C';
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0).unwrap();
    drop(f);
    assert_eq!(
        calls(&sync_status(&root, &cache, &[])),
        (0.into(), "crashed".into())
    );

    // Cut short to its first record: no call, and still crashed.
    let first = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(first as u64)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(
        calls(&sync_status(&root, &cache, &[])),
        (0.into(), "crashed".into())
    );
    assert_eq!(
        calls(&sync_status(&root, &cache, &[])),
        (0.into(), "crashed".into())
    );
}
