//! W&B's own client as the oracle for the W&B target (issue 14).
//!
//! The same pipeline calls are delivered to the W&B emulator twice: once by
//! W&B's client — its real diffusers `autolog` records them offline
//! (tests/wandb_client/autolog_run.py; only `diffusers` is a stand-in) and
//! `wandb sync` uploads the run — and once by `difflog-sync upload` of the
//! difflog run that recorded them. The emulator must accept everything W&B's
//! client sends, and the two deliveries must agree wherever W&B shows them:
//! history keys and steps, image and table values (`artifact_path`
//! included), one committed `run_table` artifact per table with the same
//! entries, the run files, the headers of every upload, and the config's
//! `workflow` keys. What differs on purpose is listed in `DELIBERATE`.
//!
//! W&B's client is installed into `.venv-wandb` on first use
//! (`scripts/wandb-client`); the test fails when it cannot be.

mod common;

use common::wandb::{Emulator, WArtifact, WRun};
use common::{Req, TestPipeline};
use difflog::read::{run_file, RunDir};
use difflog::{Init, Run};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// W&B's client checks a key's form: 40 characters.
const KEY: &str = "0123456789abcdef0123456789abcdef01234567";
const ENTITY: &str = "team";

/// What difflog sends differently on purpose, each with its reason; the
/// comparisons below skip exactly these.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "table column Seed",
        "every image's seed, which reproduces it alone; autolog records none",
    ),
    (
        "history key timings/*_ms",
        "per-phase timings of each call, on its table's line",
    ),
    (
        "image bytes (sha256, size, artifact entry names)",
        "difflog uploads the PNG it recorded (the file whose digest the run keeps); W&B's client \
         re-encodes the image; the pixels are the same",
    ),
    (
        "video bytes, and their rate (media/videos/<sha256 of the recorded MP4>.mp4)",
        "autolog has W&B's client encode an MP4 through MoviePy and ffmpeg (x264), at a fixed \
         4 fps; difflog sends the MP4 it recorded (OpenH264) as it is, playing at the rate the \
         call stated (a video kept as an animated PNG goes as a GIF at that rate)",
    ),
    (
        "run file names media/images/<sha256>.png and Result-Table/…_<sha256[..20]>",
        "content-addressed, so a re-upload or a second box writes the same names",
    ),
    (
        "run-file table cells",
        "the run file holds the full table (image cells, types) so it reads without the artifact; \
         W&B's client writes the string \"Image\" there",
    ),
    (
        "workflow pipeline component entries (unet: [library, class], scheduler: [library, class])",
        "difflog records components as {name: class} and the scheduler's full config",
    ),
    (
        "workflow params.generator.random_state",
        "torch's generator state; candle has none, and the seed reproduces the image",
    ),
    (
        "workflow params: diffusers' defaults of arguments difflog's pipelines do not take",
        "difflog records the arguments its pipeline was called with",
    ),
    (
        "manifest entry fields local_path and skip_cache",
        "paths on the uploading machine, which W&B's client leaks into the manifest",
    ),
    (
        "config _wandb, wandb-metadata.json's Python fields",
        "W&B's client describes its own Python process; difflog the recording program and device",
    ),
];

/// Calls W&B's autolog gets wrong, which difflog records whole; the calls
/// below avoid them so that the comparison is of what autolog does log.
const AUTOLOG_DEFECTS: &[&str] = &[
    "num_images_per_prompt different from the number of prompts: images split into chunks of      len(prompts), so some images and rows are never logged (1 prompt x 2 images logs 1)",
    "a negative prompt that is one string, or none at all, for several prompts: IndexError, the \
     call is not logged at all (so the W&B side is given lists as long as the prompts)",
    "a list of generators: the resolver calls .initial_seed() on the list and logs nothing",
    "a text-to-video call of several prompts: num_frames (one number) is read as one value per \
     prompt, so the second prompt's row raises IndexError and the call is not logged at all",
];

/// The calls both sides record: text-to-image (two prompts, two images
/// each), SDXL (two prompts per image), image-to-image — shaped so that
/// autolog records them whole (see `AUTOLOG_DEFECTS`).
fn record(root: &Path) -> PathBuf {
    let run = Run::create(
        Init::project("local")
            .name("oracle test")
            .config(json!({"seed": 7}))
            .root(root),
    )
    .unwrap();
    let mut sd = TestPipeline::new();
    sd.size = 32;
    sd.class = "StableDiffusionPipeline".into();
    let mut r = Req::new(&["a cat", "a dog"], 100);
    r.per_prompt = 2;
    r.negative = Some("blurry".into());
    run.record(&mut sd, &r).unwrap();
    let mut xl = TestPipeline::new();
    xl.size = 32;
    xl.class = "StableDiffusionXLPipeline".into();
    xl.second_prompts = true;
    // Two prompts, two images each: autolog splits the images into chunks
    // of *as many images as there are prompts*, so with one prompt and two
    // images it logs only the first image (and the first table row); with
    // as many images per prompt as prompts its split is right.
    let mut r = Req::new(&["a castle", "a bridge"], 200);
    r.per_prompt = 2;
    run.record(&mut xl, &r).unwrap();
    let mut i2i = TestPipeline::new();
    i2i.size = 32;
    i2i.class = "StableDiffusionImg2ImgPipeline".into();
    i2i.input = Some(Arc::new(difflog::bench::synthetic_image(5, 32)));
    run.record(&mut i2i, &Req::new(&["edit it"], 300)).unwrap();
    // A text-to-video call (AnimateDiff's table): one prompt, one video —
    // autolog reads `num_frames` as one value per prompt (see
    // AUTOLOG_DEFECTS).
    let mut clip = TestPipeline::new();
    clip.size = 32;
    clip.class = "AnimateDiffPipeline".into();
    clip.frames = Some(4);
    let mut r = Req::new(&["a boat drifting"], 400);
    r.negative = Some("blurry".into());
    run.record(&mut clip, &r).unwrap();
    drop(run);
    common::only_run(root)
}

/// The same calls as autolog sees them: arguments, and the images the
/// stand-in pipeline returns (difflog's, in order).
fn spec(dir: &Path) -> Value {
    let r = RunDir::open(dir).unwrap();
    let view = r.view();
    let mut calls = Vec::new();
    for call in view.calls.values() {
        let class = &view.pipelines[&call.started.pipeline].class;
        let p = &call.started.params;
        let prompts: Vec<String> = serde_json::from_value(p["prompt"].clone()).unwrap();
        let mut kwargs = json!({
            "prompt": prompts,
            "num_images_per_prompt": p["num_images_per_prompt"],
            "num_inference_steps": p["num_inference_steps"],
            "seed": p["seed"],
        });
        // As lists as long as the prompts (see AUTOLOG_DEFECTS).
        kwargs["negative_prompt"] = json!(vec![p["negative_prompt"].clone(); prompts.len()]);
        if call.started.columns.iter().any(|c| c == "Prompt-2") {
            kwargs["prompt_2"] = json!(prompts
                .iter()
                .map(|x| format!("{x} (2)"))
                .collect::<Vec<_>>());
            kwargs["negative_prompt_2"] = json!(vec![Value::Null; prompts.len()]);
        }
        let video = call.started.columns.iter().any(|c| c == "Generated-Video");
        if video {
            kwargs["num_frames"] = p["num_frames"].clone();
        }
        let file = |m: &difflog::event::MediaEvent| run_file(dir, &m.path).unwrap();
        let mut images = Vec::new();
        for m in &call.media {
            if m.key.starts_with("Input-Image/") {
                kwargs["image"] = json!(file(m));
            } else {
                images.push(file(m));
            }
        }
        calls.push(json!({
            "class": class,
            "config": {"_class_name": class, "_diffusers_version": "0.31.0",
                       "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]},
            "kwargs": kwargs,
            "images": images,
            "video": video,
        }));
    }
    json!({"project": "oracle", "config": {"seed": 7}, "calls": calls})
}

/// Output and error of a process, for messages.
fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command of W&B's own client (`python` or `wandb` of its venv), run
/// in `work` (where `wandb sync` leaves its logs), talking to `emu`.
fn wandb_client(emu: &Emulator, work: &Path, program: &str) -> Command {
    let mut c = Command::new(common::wandb::client_bin().join(program));
    c.current_dir(work)
        .env("HOME", work.join("home"))
        .env("WANDB_BASE_URL", &emu.url)
        .env("WANDB_API_KEY", KEY)
        .env("WANDB_DISABLE_GIT", "true")
        .env_remove("WANDB_MODE");
    c
}

/// Runs `tests/wandb_client/SCRIPT` with `args` (it records an offline
/// run and prints its folder last), then `wandb sync`s that run to the
/// emulator's `project`; returns the offline run's folder.
fn offline_then_sync(
    emu: &Emulator,
    work: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
    project: &str,
    check_offline: impl FnOnce(&Path),
) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wandb_client")
        .join(script);
    let o = wandb_client(emu, work, "python")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {}", output_text(&o));
    let offline = PathBuf::from(
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    check_offline(&offline);
    let o = wandb_client(emu, work, "wandb")
        .args(["sync", "--entity", ENTITY, "--project", project])
        .arg(&offline)
        .output()
        .unwrap();
    assert!(
        o.status.success() && output_text(&o).contains("Finished syncing"),
        "wandb sync: {}",
        output_text(&o)
    );
    offline
}

/// Records the calls with W&B's autolog offline and `wandb sync`s them to
/// the emulator's project `oracle`; returns the W&B run.
fn deliver_with_wandb(emu: &Emulator, dir: &Path, work: &Path) -> WRun {
    let spec_path = work.join("spec.json");
    std::fs::write(&spec_path, spec(dir).to_string()).unwrap();
    let out = work.join("out");
    let args = [spec_path.as_os_str(), out.as_os_str()];
    offline_then_sync(emu, work, "autolog_run.py", &args, "oracle", |offline| {
        let log = std::fs::read_to_string(offline.join("logs/debug.log")).unwrap();
        assert!(
            !log.contains("WARNING"),
            "autolog logged a warning (it then logs nothing): {log}"
        );
    });
    let runs = emu.runs("oracle");
    assert_eq!(runs.len(), 1);
    runs.into_iter().next().unwrap()
}

fn deliver_with_difflog(emu: &Emulator, dir: &Path) -> WRun {
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args([
            "upload",
            dir.to_str().unwrap(),
            "--to",
            &format!("wandb://{ENTITY}/difflog"),
        ])
        .env("WANDB_BASE_URL", &emu.url)
        .env("WANDB_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let runs = emu.runs("difflog");
    assert_eq!(runs.len(), 1);
    runs.into_iter().next().unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// A history line's keys without W&B's own (`_step`, …) and difflog's
/// deliberate `timings/*`.
fn shown_keys(line: &Value) -> BTreeSet<String> {
    keys(line)
        .into_iter()
        .filter(|k| !k.starts_with('_') && !k.starts_with("timings/"))
        .collect()
}

/// The run's `run_table` artifact for a table value.
fn artifact_of<'a>(arts: &'a [WArtifact], v: &Value) -> &'a WArtifact {
    let path = v["artifact_path"].as_str().unwrap();
    let id = path
        .strip_prefix("wandb-client-artifact://")
        .and_then(|p| p.split('/').next())
        .unwrap();
    let found: Vec<_> = arts.iter().filter(|a| a.client_id == id).collect();
    assert_eq!(found.len(), 1, "artifacts with client id {id}");
    found[0]
}

#[test]
fn difflog_delivers_what_wandbs_own_client_delivers_for_the_same_calls() {
    // Every deliberate difference has its reason.
    assert!(DELIBERATE
        .iter()
        .all(|(what, why)| !what.is_empty() && !why.is_empty()));
    assert!(!AUTOLOG_DEFECTS.is_empty());
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = record(root.path());
    let emu = Emulator::start(KEY, ENTITY);
    let oracle = deliver_with_wandb(&emu, &dir, work.path());
    assert_eq!(
        emu.violations(),
        Vec::<String>::new(),
        "the emulator refused W&B's own client"
    );
    let ours = deliver_with_difflog(&emu, &dir);
    assert_eq!(
        emu.violations(),
        Vec::<String>::new(),
        "the emulator refused difflog"
    );

    // History: the same keys at the same steps.
    let lines = |r: &WRun| -> Vec<BTreeSet<String>> { r.history.iter().map(shown_keys).collect() };
    assert_eq!(
        ours.history.len(),
        oracle.history.len(),
        "history lines: W&B's client {:?}, difflog {:?}",
        lines(&oracle),
        lines(&ours)
    );
    let (arts_o, arts_d) = (emu.artifacts("oracle"), emu.artifacts("difflog"));
    for (i, (o, d)) in oracle.history.iter().zip(&ours.history).enumerate() {
        assert_eq!(o["_step"], d["_step"], "line {i}");
        for k in ["_runtime", "_timestamp"] {
            assert!(o[k].is_number() && d[k].is_number(), "line {i}: {k}");
        }
        assert_eq!(shown_keys(o), shown_keys(d), "line {i}");
        for k in shown_keys(o) {
            let (vo, vd) = (&o[&k], &d[&k]);
            assert_eq!(vo["_type"], vd["_type"], "line {i} {k}");
            assert_eq!(keys(vo), keys(vd), "line {i} {k}: fields");
            match vo["_type"].as_str() {
                Some("image-file") => {
                    for f in ["format", "width", "height", "caption"] {
                        assert_eq!(vo[f], vd[f], "line {i} {k}: {f}");
                    }
                    // The same image behind both paths.
                    same_image(&oracle.files, vo, &ours.files, vd);
                }
                Some("video-file") => {
                    for f in ["width", "height", "caption"] {
                        assert_eq!(vo[f], vd[f], "line {i} {k}: {f}");
                    }
                    same_video(&oracle.files, vo, &ours.files, vd);
                }
                Some("table-file") => {
                    assert_eq!(vo["nrows"], vd["nrows"], "line {i} {k}");
                    assert_eq!(vo["log_mode"], vd["log_mode"], "line {i} {k}");
                    assert!(ours.files.contains_key(vd["path"].as_str().unwrap()));
                    compare_artifacts(artifact_of(&arts_o, vo), artifact_of(&arts_d, vd), &k);
                }
                _ => panic!("line {i} {k}: unexpected value {vo}"),
            }
        }
    }
    // One committed run_table artifact per table on both sides.
    let tables = oracle
        .history
        .iter()
        .flat_map(keys)
        .filter(|k| k.starts_with("Result-Table/"))
        .count();
    assert_eq!(arts_o.len(), tables);
    assert_eq!(arts_d.len(), tables);

    // The summary: the same keys.
    let summary_keys = |s: &Value| -> BTreeSet<String> {
        keys(s)
            .into_iter()
            .filter(|k| !k.starts_with("timings/"))
            .collect()
    };
    assert_eq!(
        summary_keys(&oracle.summary),
        summary_keys(&ours.summary),
        "summary"
    );

    // Run files: every one W&B's client leaves beside the media.
    let named = |r: &WRun| -> BTreeSet<String> {
        r.files
            .keys()
            .filter(|f| !f.starts_with("media/"))
            .cloned()
            .collect()
    };
    assert_eq!(named(&oracle), named(&ours), "run files");
    assert_eq!(oracle.completes, 1);
    assert_eq!(ours.completes, 1);
    assert_eq!(oracle.exitcode, ours.exitcode);

    // Uploads: the headers uploadHeaders named and transport ones, nothing
    // else (no Content-Type), for W&B's client and for difflog alike.
    let allowed: BTreeSet<&str> = [
        "host",
        "user-agent",
        "content-length",
        "accept-encoding",
        "accept",
        "x-upload-check",
    ]
    .into();
    for project in ["oracle", "difflog"] {
        let puts = emu.put_headers(project);
        assert!(!puts.is_empty());
        for h in puts {
            assert!(
                h.contains(&"x-upload-check".to_string()),
                "{project}: {h:?}"
            );
            assert!(
                h.iter().all(|n| allowed.contains(n.as_str())),
                "{project}: {h:?}"
            );
        }
    }

    // Config: autolog's workflow keys, in its shape, with the same values.
    let wf_o = oracle.config["workflow"]["value"].as_array().unwrap();
    let wf_d = ours.config["workflow"]["value"].as_array().unwrap();
    assert_eq!(wf_o.len(), wf_d.len());
    for (o, d) in wf_o.iter().zip(wf_d) {
        assert_eq!(keys(o), keys(d), "workflow entry keys");
        assert_eq!(o["stage"], d["stage"]);
        for k in ["pipeline-name", "_class_name"] {
            assert_eq!(o["pipeline"][k], d["pipeline"][k], "pipeline.{k}");
        }
        let (po, pd) = (&o["params"], &d["params"]);
        for k in ["prompt", "num_images_per_prompt", "num_inference_steps"] {
            assert_eq!(po[k], pd[k], "params.{k}");
        }
        assert_eq!(po["generator"]["seed"], pd["generator"]["seed"]);
        assert_eq!(po["generator"]["device"], pd["generator"]["device"]);
        // difflog keeps the argument as given (one string, or none).
        assert!(po["negative_prompt"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x == &pd["negative_prompt"]));
    }
    let seed_o = &oracle.config["seed"]["value"];
    assert_eq!(seed_o, &ours.config["seed"]["value"]);
}

/// The file a media value names among `files`, checked against the
/// value's SHA-256 and (where it has one) size.
fn file_of<'a>(files: &'a BTreeMap<String, Vec<u8>>, v: &Value) -> &'a [u8] {
    let bytes = &files[v["path"].as_str().unwrap()];
    assert_eq!(
        difflog::format::sha256_hex(bytes),
        v["sha256"].as_str().unwrap()
    );
    if !v["size"].is_null() {
        assert_eq!(v["size"], bytes.len());
    }
    bytes
}

/// Checks that image values `a` (in files `fa`) and `b` (in `fb`) point at
/// the same pixels, each file matching its value's SHA-256 and size.
fn same_image(
    fa: &BTreeMap<String, Vec<u8>>,
    a: &Value,
    fb: &BTreeMap<String, Vec<u8>>,
    b: &Value,
) {
    let pixels = |files: &BTreeMap<String, Vec<u8>>, v: &Value| {
        image::load_from_memory(file_of(files, v))
            .unwrap()
            .to_rgb8()
    };
    assert!(
        pixels(fa, a) == pixels(fb, b),
        "different images: {a} and {b}"
    );
}

/// Checks that video values `a` (W&B's client's, in files `fa`) and `b`
/// (difflog's, in `fb`) each match their file's SHA-256 and size, and
/// that both are MP4s of one H.264 track of the values' picture size with
/// as many frames.
fn same_video(
    fa: &BTreeMap<String, Vec<u8>>,
    a: &Value,
    fb: &BTreeMap<String, Vec<u8>>,
    b: &Value,
) {
    let size = |v: &Value| (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap());
    assert_eq!(size(a), size(b), "{a} {b}");
    let [theirs, ours] = [file_of(fa, a), file_of(fb, b)].map(|f| {
        let v = difflog::read::mp4_video(f).unwrap();
        (u64::from(v.width), u64::from(v.height), v.frames)
    });
    assert_eq!((ours.0, ours.1), size(b));
    assert_eq!(theirs, ours, "W&B's client's MP4 and difflog's");
}

/// The two `run_table` artifacts of one table: named alike, the same
/// entries, and tables that agree cell by cell on the columns autolog has.
fn compare_artifacts(o: &WArtifact, d: &WArtifact, key: &str) {
    assert_eq!(
        (o.state.as_str(), d.state.as_str()),
        ("COMMITTED", "COMMITTED"),
        "{key}"
    );
    assert_eq!(o.type_name, d.type_name);
    assert_eq!(o.aliases, d.aliases);
    // `run-<run>-<key sanitised>-<crc>`: the same apart from the run id.
    let shape = |a: &WArtifact| {
        let rest = a
            .collection
            .strip_prefix(&format!("run-{}-", a.run))
            .unwrap()
            .to_string();
        // The suffix is `-` and 6 characters of URL-safe base64 (which may
        // hold a `-` itself).
        assert_eq!(rest.as_bytes()[rest.len() - 7], b'-', "{rest}");
        rest[..rest.len() - 7].to_string()
    };
    assert_eq!(shape(o), shape(d), "{key}: artifact names");
    let entries = |a: &WArtifact| -> BTreeMap<String, (Value, Value)> {
        a.manifest.as_ref().unwrap()["contents"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), (v["digest"].clone(), v["size"].clone())))
            .collect()
    };
    let (eo, ed) = (entries(o), entries(d));
    let table = format!("{key}.table.json");
    // The table and its images under `media/images/<md5[..20]>.png`
    // (W&B's client re-encodes images, so the names differ with the bytes).
    let shape_of = |e: &BTreeMap<String, (Value, Value)>| -> Vec<String> {
        e.keys()
            .map(|n| match n.strip_prefix("media/images/") {
                Some(f) if f.len() == 24 && f.ends_with(".png") => "media/images/<md5>.png".into(),
                // W&B's client names a video file after a random id, and
                // it is an MP4 (see DELIBERATE).
                _ if n.starts_with("media/videos/") => "media/videos/<video>".into(),
                _ => n.clone(),
            })
            .collect()
    };
    assert_eq!(shape_of(&eo), shape_of(&ed), "{key}: manifest entries");
    assert!(eo.contains_key(&table) && ed.contains_key(&table));
    for (a, e) in [(o, &eo), (d, &ed)] {
        for (name, (digest, size)) in e {
            let bytes = &a.files[name];
            assert_eq!(size, &json!(bytes.len()), "{key}: {name}");
            use base64::Engine;
            use md5::Digest;
            let b64 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes));
            assert_eq!(digest, &json!(b64), "{key}: {name}");
        }
    }
    let to = |a: &WArtifact| -> Value { serde_json::from_slice(&a.files[&table]).unwrap() };
    let (to, td) = (to(o), to(d));
    let base_keys: BTreeSet<String> = keys(&to);
    assert_eq!(base_keys, keys(&td), "{key}: table fields");
    for f in ["_type", "log_mode", "nrows"] {
        assert_eq!(to[f], td[f], "{key}: {f}");
    }
    let cols_o: Vec<&str> = to["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let cols_d: Vec<&str> = td["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let theirs_only: Vec<_> = cols_o.iter().filter(|c| !cols_d.contains(c)).collect();
    assert!(
        theirs_only.is_empty(),
        "{key}: columns autolog has and difflog lacks: {theirs_only:?}"
    );
    let ours_only: Vec<_> = cols_d.iter().filter(|c| !cols_o.contains(c)).collect();
    assert_eq!(ours_only, vec![&"Seed"], "{key}: columns only difflog has");
    for c in &cols_o {
        let types = |t: &Value| t["column_types"]["params"]["type_map"][*c].clone();
        assert_eq!(types(&to), types(&td), "{key}: type of {c}");
        let at_o = cols_o.iter().position(|x| x == c).unwrap();
        let at_d = cols_d.iter().position(|x| x == c).unwrap();
        let rows_o = to["data"].as_array().unwrap();
        let rows_d = td["data"].as_array().unwrap();
        for (ro, rd) in rows_o.iter().zip(rows_d) {
            let (co, cd) = (&ro[at_o], &rd[at_d]);
            if co["_type"] == "video-file" {
                assert_eq!(keys(co), keys(cd), "{key}: column {c}: cell fields");
                for f in ["_type", "width", "height"] {
                    assert_eq!(co[f], cd[f], "{key}: column {c}: {f}");
                }
                same_video(&o.files, co, &d.files, cd);
            } else if co["_type"] == "image-file" {
                assert_eq!(keys(co), keys(cd), "{key}: column {c}: cell fields");
                for f in ["_type", "format", "width", "height"] {
                    assert_eq!(co[f], cd[f], "{key}: column {c}: {f}");
                }
                same_image(&o.files, co, &d.files, cd);
            } else {
                assert_eq!(co, cd, "{key}: column {c}");
            }
        }
    }
}

/// The read queries `difflog-sync verify` relies on are answered as W&B
/// answers them: W&B's own public API (`wandb.Api()`, through wandb-core)
/// reads a run difflog uploaded back from the emulator — every history
/// row, the run files, and each table through its `run_table` artifact.
#[test]
fn wandbs_own_client_reads_back_the_run_difflog_uploaded() {
    let emu = Emulator::start(KEY, ENTITY);
    let root = tempfile::tempdir().unwrap();
    let dir = record(root.path());
    let uploaded = deliver_with_difflog(&emu, &dir);
    let bin = common::wandb::client_bin();
    let home = root.path().join("home");
    let o = Command::new(bin.join("python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wandb_client/read_back.py"))
        .args([ENTITY, "difflog", &uploaded.name])
        .current_dir(root.path())
        .env("HOME", &home)
        .env("WANDB_BASE_URL", &emu.url)
        .env("WANDB_API_KEY", KEY)
        .env_remove("WANDB_MODE")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "read back: {text}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let back: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(back["history_rows"], uploaded.history.len(), "{back}");
    let files: BTreeSet<String> = back["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files, uploaded.files.keys().cloned().collect(), "{back}");
    let calls = RunDir::open(&dir).unwrap().view().calls.len();
    assert_eq!(back["tables"].as_array().unwrap().len(), calls, "{back}");
    for t in back["tables"].as_array().unwrap() {
        assert!(t["rows"].as_u64().unwrap() > 0, "{t}");
    }
    assert_eq!(emu.violations(), Vec::<String>::new());
}

/// Issue 34 (4): the emulator's multipart protocol is W&B's, checked with
/// W&B's own client: an artifact file of 2 GiB (W&B's threshold; a sparse
/// file of zeros, so no disk is used) logged offline and `wandb sync`ed
/// goes in 100 MiB parts — declared with their MD5s, each PUT with its
/// `Content-MD5`, joined by `CompleteMultipartUploadArtifact` — and the
/// emulator, which refuses any step out of place, commits the version with
/// the file whole. difflog's own multipart upload is tested against the
/// same emulator (tests/sync_wandb.rs).
#[test]
fn wandbs_own_client_uploads_a_2_gib_file_in_parts_the_emulator_accepts() {
    const SIZE: u64 = 2 << 30;
    let emu = Emulator::start(KEY, ENTITY);
    emu.set_store_delay(std::time::Duration::ZERO);
    let work = tempfile::tempdir().unwrap();
    let (size, out) = (SIZE.to_string(), work.path().join("out"));
    let args = [std::ffi::OsStr::new(&size), out.as_os_str()];
    offline_then_sync(
        &emu,
        work.path(),
        "big_artifact.py",
        &args,
        "multipart",
        |_| {},
    );
    assert_eq!(emu.violations(), Vec::<String>::new());
    // 2 GiB in 100 MiB parts: 20 whole ones and the rest.
    assert_eq!(emu.multipart_completed(), vec![("big.bin".to_string(), 21)]);
    let arts = emu.artifact_files("multipart");
    let big: Vec<_> = arts
        .iter()
        .filter(|(_, state, files)| {
            state == "COMMITTED"
                && files
                    .iter()
                    .any(|(n, len)| n == "big.bin" && *len as u64 == SIZE)
        })
        .collect();
    assert_eq!(big.len(), 1, "{arts:?}");
}
