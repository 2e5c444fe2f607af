//! Helpers shared by the integration tests: a configurable test pipeline and
//! schema validation of everything a test run wrote.
#![allow(dead_code)]

use difflog::bench::synthetic_image;
use difflog::{CallContext, CallSpec, ImageRow, Pipeline, PipelineError, PipelineInfo};
use image::RgbImage;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A pipeline whose images are deterministic functions of their seed.
pub struct TestPipeline {
    pub class: String,
    pub size: u32,
    pub second_prompts: bool,
    pub input: Option<Arc<RgbImage>>,
    /// An inpainting mask (with `input`): a `Mask-Image` column.
    pub mask: Option<Arc<RgbImage>>,
    pub fail_after: Option<usize>,
    /// Add this much to the red channel of pixel (x, y) of every image.
    pub edit: Option<(u32, u32, u8)>,
    /// A video pipeline: each output is this many frames (the image, then
    /// shifted copies of it) at 8 fps.
    pub frames: Option<u32>,
}

impl TestPipeline {
    pub fn new() -> TestPipeline {
        TestPipeline {
            class: "TestPipeline".into(),
            size: 16,
            second_prompts: false,
            input: None,
            mask: None,
            fail_after: None,
            edit: None,
            frames: None,
        }
    }
}

/// A call: prompts, an optional negative prompt, images per prompt, first seed.
#[derive(Clone)]
pub struct Req {
    pub prompts: Vec<String>,
    pub negative: Option<String>,
    pub per_prompt: usize,
    pub seed: u64,
}

impl Req {
    pub fn new(prompts: &[&str], seed: u64) -> Req {
        Req {
            prompts: prompts.iter().map(|s| s.to_string()).collect(),
            negative: None,
            per_prompt: 1,
            seed,
        }
    }
}

impl Pipeline for TestPipeline {
    type Request = Req;
    type Output = Vec<RgbImage>;

    fn describe(&self) -> PipelineInfo {
        let mut components = Map::new();
        components.insert("unet".into(), json!("UNet2DConditionModel"));
        components.insert("vae".into(), json!("AutoEncoderKL"));
        PipelineInfo {
            class: self.class.clone(),
            model_id: "test/model".into(),
            revision: Some("abc123".into()),
            weights_digest: Some("sha256:00ff".into()),
            dtype: "f32".into(),
            device: "cpu".into(),
            components,
            scheduler: json!({"name": "ddim", "num_train_timesteps": 1000, "beta_start": 0.00085, "eta": 0.0}),
        }
    }

    fn prepare(&self, r: &Req) -> Result<CallSpec, PipelineError> {
        if r.prompts.is_empty() {
            return Err("no prompt given".into());
        }
        let n = r.prompts.len() * r.per_prompt;
        let mut params = Map::new();
        params.insert("prompt".into(), json!(r.prompts));
        params.insert("negative_prompt".into(), json!(r.negative));
        params.insert("num_images_per_prompt".into(), json!(r.per_prompt));
        params.insert("num_inference_steps".into(), json!(10));
        params.insert("seed".into(), json!(r.seed));
        if let Some(f) = self.frames {
            params.insert("num_frames".into(), json!(f));
        }
        Ok(CallSpec {
            params,
            seeds: (0..n as u64).map(|i| r.seed + i).collect(),
            second_prompts: self.second_prompts,
            third_prompts: false,
            input_image: self.input.is_some(),
            mask_image: self.mask.is_some(),
            video: self.frames.is_some(),
        })
    }

    fn run(&mut self, r: &Req, ctx: &mut CallContext<'_>) -> Result<Vec<RgbImage>, PipelineError> {
        ctx.phase("text_encoding");
        ctx.phase("denoising");
        let mut out = Vec::new();
        let mut i = 0u64;
        for p in &r.prompts {
            for _ in 0..r.per_prompt {
                if self.fail_after == Some(out.len()) {
                    return Err(format!("out of memory after {} image(s)", out.len()).into());
                }
                let seed = r.seed + i;
                let mut img = synthetic_image(seed, self.size);
                if let Some((x, y, add)) = self.edit {
                    let px = img.get_pixel_mut(x, y);
                    px[0] = px[0].saturating_add(add);
                }
                if let Some(n) = self.frames {
                    let frames = (0..n)
                        .map(|f| {
                            RgbImage::from_fn(img.width(), img.height(), |x, y| {
                                *img.get_pixel((x + f) % img.width(), y)
                            })
                        })
                        .collect();
                    ctx.video(difflog::VideoRow {
                        frames,
                        fps: 8.0,
                        fps_from: "argument fps".into(),
                        prompt: p.clone(),
                        negative_prompt: r.negative.clone(),
                        seed,
                    });
                    out.push(img);
                    i += 1;
                    continue;
                }
                ctx.image(ImageRow {
                    image: img.clone(),
                    prompt: p.clone(),
                    negative_prompt: r.negative.clone(),
                    prompt_2: self.second_prompts.then(|| format!("{p} (2)")),
                    negative_prompt_2: None,
                    prompt_3: None,
                    negative_prompt_3: None,
                    input_image: self.input.clone(),
                    mask_image: self.mask.clone(),
                    seed,
                });
                out.push(img);
                i += 1;
            }
        }
        ctx.phase("decoding");
        Ok(out)
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

/// Validators for `run.json` and for event records.
pub struct Schemas {
    pub run: jsonschema::Validator,
    pub event: jsonschema::Validator,
}

impl Schemas {
    pub fn load() -> Schemas {
        Schemas {
            run: schema("run.schema.json"),
            event: schema("event.schema.json"),
        }
    }

    pub fn check_run_json(&self, value: &Value) {
        let errors: Vec<String> = self.run.iter_errors(value).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "run.json fails the schema: {errors:?}\n{value}"
        );
    }

    pub fn check_record(&self, value: &Value) {
        let errors: Vec<String> = self
            .event
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "record fails the schema: {errors:?}\n{value}"
        );
    }

    /// Validates run.json and every complete record of a run directory.
    /// Returns the number of records checked.
    pub fn check_dir(&self, dir: &Path) -> usize {
        let meta: Value =
            serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
        self.check_run_json(&meta);
        let log = std::fs::read(dir.join("events.log")).unwrap();
        let mut n = 0;
        for line in log.split(|&b| b == b'\n') {
            if line.len() < 10 {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&line[9..]) else {
                continue; // torn tail: checked by the reader tests
            };
            self.check_record(&v);
            n += 1;
        }
        n
    }
}

/// The `difflog` binary built for the tests.
pub fn difflog_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_difflog"))
}

/// The only run directory under `root`.
pub fn only_run(root: &Path) -> PathBuf {
    let runs = difflog::read::find_runs(root).unwrap();
    assert_eq!(runs.len(), 1, "expected one run under {}", root.display());
    runs[0].clone()
}

/// Rewrites a run's `events.log`, replacing `from` with `to` in every
/// record's JSON and re-computing each line's CRC-32C, as someone editing a
/// run by hand would; panics when no record held `from`.
pub fn edit_log(run: &Path, from: &str, to: &str) {
    let log = run.join("events.log");
    let bytes = std::fs::read(&log).unwrap();
    let mut changed = Vec::new();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let json = String::from_utf8_lossy(&line[9..line.len() - 1]).replace(from, to);
        changed.extend_from_slice(
            format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes())).as_bytes(),
        );
    }
    assert_ne!(changed, bytes, "no record holds {from}");
    std::fs::write(&log, changed).unwrap();
}

/// Polls `f` every 50 ms until it holds, failing the test after `limit`
/// ("timed out waiting for `what`"); how long it took.
pub fn wait_for(
    what: &str,
    limit: std::time::Duration,
    f: &dyn Fn() -> bool,
) -> std::time::Duration {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    t.elapsed()
}

/// Copies a run directory (files only, recursively).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Points the tiny-model cache at the build's scratch folder (once per test binary).
pub fn test_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difflog-cache");
        std::env::set_var("DIFFLOG_CACHE", dir);
    });
}
pub mod browser;
pub mod http;
pub mod mlflow;
pub mod proxy;
pub mod pyenv;
pub mod wandb;

/// A child process killed (SIGKILL) when the test lets go of it, also when
/// the test panics first: a failing test leaves no daemon behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Both fail harmlessly when the test already stopped and reaped it.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The forms a secret can leak in: as typed, base64 of itself, and base64 of
/// the HTTP Basic credentials built from it (`user:secret`, as W&B's
/// `api:KEY` and MLflow's username/password), padded or not.
pub fn leak_forms(user: &str, secret: &str) -> Vec<String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = vec![secret.to_string()];
    for s in [b64(secret), b64(&format!("{user}:{secret}"))] {
        out.push(s.trim_end_matches('=').to_string());
    }
    out
}

/// Panics when any form of `secret` (see `leak_forms`) is in `output` or in
/// the sync state under `root`.
pub fn assert_no_leak(root: &Path, output: &str, user: &str, secret: &str) {
    let mut state = String::new();
    for f in ["state.db", "state.db-wal"] {
        if let Ok(b) = std::fs::read(root.join(".difflog-sync").join(f)) {
            state.push_str(&String::from_utf8_lossy(&b));
        }
    }
    for form in leak_forms(user, secret) {
        assert!(
            !output.contains(&form),
            "the secret leaked into the output as {form:?}: {output}"
        );
        assert!(
            !state.contains(&form),
            "the secret leaked into the sync state as {form:?}"
        );
    }
}

/// A small tmpfs mounted for one test (root only); unmounted on drop.
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Packs the run `dir` into `archive` the way other tools would (`tar |
/// zstd`), without difflog's checks: how a hostile or damaged archive is made.
pub fn tar_zst_by_hand(dir: &Path, archive: &Path) {
    let f = std::fs::File::create(archive).unwrap();
    let enc = zstd::Encoder::new(f, 3).unwrap().auto_finish();
    let mut t = tar::Builder::new(enc);
    t.append_dir_all(dir.file_name().unwrap(), dir).unwrap();
    t.into_inner().unwrap();
}

/// A video pipeline of the test's own: a square crossing the frame, as
/// many frames as asked, at the frame rate the request states.
pub struct ClipPipeline;

pub struct ClipRequest {
    pub frames: u32,
    pub fps: f64,
    /// Width and height of each frame.
    pub size: (u32, u32),
}

/// The clip tests' frame size (even: an MP4 holds it).
pub const CLIP_SIZE: (u32, u32) = (24, 16);

impl difflog::Pipeline for ClipPipeline {
    type Request = ClipRequest;
    type Output = Vec<image::RgbImage>;

    fn describe(&self) -> difflog::PipelineInfo {
        difflog::PipelineInfo {
            class: "ClipPipeline".into(),
            model_id: "test/clip".into(),
            revision: None,
            weights_digest: None,
            dtype: "f32".into(),
            device: "cpu".into(),
            components: Default::default(),
            scheduler: json!({"name": "ddim"}),
        }
    }

    fn prepare(&self, r: &ClipRequest) -> Result<difflog::CallSpec, difflog::PipelineError> {
        let mut params = serde_json::Map::new();
        params.insert("num_frames".into(), json!(r.frames));
        params.insert("fps".into(), json!(r.fps));
        Ok(difflog::CallSpec {
            params,
            seeds: vec![3],
            video: true,
            ..Default::default()
        })
    }

    fn run(
        &mut self,
        r: &ClipRequest,
        ctx: &mut difflog::CallContext<'_>,
    ) -> Result<Vec<image::RgbImage>, difflog::PipelineError> {
        let frames: Vec<image::RgbImage> = (0..r.frames)
            .map(|i| {
                image::RgbImage::from_fn(r.size.0, r.size.1, |x, y| {
                    let inside = x / 4 == i && y < 8;
                    image::Rgb(if inside {
                        [250, 20, 20]
                    } else {
                        [10, 40 + y as u8, 90]
                    })
                })
            })
            .collect();
        ctx.video(difflog::VideoRow {
            frames: frames.clone(),
            fps: r.fps,
            fps_from: "argument fps".into(),
            prompt: "a square crossing".into(),
            negative_prompt: None,
            seed: 3,
        });
        Ok(frames)
    }
}

/// Rewrites the run's log through `edit`, every record re-encoded with a
/// valid checksum: what someone editing a run by hand can always do.
pub fn rewrite_log(dir: &Path, edit: impl Fn(&mut difflog::event::Event)) {
    let run = difflog::read::RunDir::open(dir).unwrap();
    let mut out = Vec::new();
    for r in run.records() {
        let mut e = r.event.clone();
        edit(&mut e);
        out.extend(difflog::event::encode_record(r.seq, &r.ts, &e).unwrap());
    }
    std::fs::write(dir.join("events.log"), out).unwrap();
}
