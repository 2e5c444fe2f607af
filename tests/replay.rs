//! `difflog replay`: recorded tiny-model calls regenerate byte-identically;
//! changed weights are refused naming the file; a record that does not match
//! its images is caught.

mod common;

use common::{edit_log, only_run, test_cache};
use difflog::pipeline::{CallContext, CallSpec, Pipeline, PipelineError, PipelineInfo};
use difflog::pipelines::tiny::{write_model, TinyModel};
use difflog::pipelines::{resolve, Output, Request, StableDiffusion};
use difflog::{Init, Run};
use std::path::Path;
use std::process::{Command, Output as ProcOutput};

fn difflog(args: &[&str], root: &Path) -> ProcOutput {
    test_cache();
    Command::new(common::difflog_bin())
        .args(args)
        .env("DIFFLOG_DIR", root)
        .env("DIFFLOG_CACHE", std::env::var("DIFFLOG_CACHE").unwrap())
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap()
}

fn text(o: &ProcOutput) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Replays call 1 of `run`: all `n` images byte-identical.
fn replays_identically(run: &Path, n: usize, root: &Path) {
    let o = difflog(&["replay", run.to_str().unwrap(), "--call", "1"], root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let said = format!("{n}/{n} image(s) byte-identical");
    assert!(text(&o).contains(&said), "{}", text(&o));
}

#[test]
fn recorded_calls_replay_byte_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let o = difflog(
        &[
            "generate",
            "--prompt",
            "a fox",
            "--prompt",
            "a cat",
            "--num-images-per-prompt",
            "2",
            "--steps",
            "3",
            "--scheduler",
            "euler-a",
            "--seed",
            "5",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run(tmp.path());
    let png = dir.join(
        std::fs::read_dir(dir.join("media"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    );
    let png = std::fs::read_dir(png)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let o = difflog(
        &[
            "generate",
            "--prompt",
            "make it blue",
            "--image",
            png.to_str().unwrap(),
            "--strength",
            "0.6",
            "--steps",
            "4",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));

    let runs = difflog::read::find_runs(tmp.path()).unwrap();
    let o = difflog(
        &["replay", runs[0].to_str().unwrap(), "--call", "1"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("4/4 image(s) byte-identical"),
        "{}",
        text(&o)
    );
    let o = difflog(
        &[
            "replay",
            runs[0].to_str().unwrap(),
            "--call",
            "1",
            "--row",
            "2",
            "--json",
        ],
        tmp.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["identical"], true);
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    assert_eq!(v["rows"][0]["seed"], 7);
    // Image-to-image replays from the recorded input image.
    let o = difflog(
        &["replay", runs[1].to_str().unwrap(), "--call", "1"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = difflog(
        &["replay", runs[1].to_str().unwrap(), "--call", "9"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no call 9"), "{}", text(&o));
}

/// Issue 38: the recorder writes the compact encoding by default (and
/// with `DIFFLOG_PNG=compact`), the fast one with `DIFFLOG_PNG=fast`: the
/// same pixels, different bytes; runs of either encoding verify and replay
/// re-makes their bytes exactly; a value it does not know is refused,
/// naming the setting.
#[test]
fn compact_pngs_are_recorded_verified_and_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let generate = |root: &Path, png: Option<&str>| {
        test_cache();
        let mut c = Command::new(common::difflog_bin());
        match png {
            Some(p) => c.env("DIFFLOG_PNG", p),
            None => c.env_remove("DIFFLOG_PNG"),
        };
        c.args([
            "generate",
            "--prompt",
            "a red circle",
            "--steps",
            "3",
            "--seed",
            "4",
        ])
        .args(["--num-images-per-prompt", "2"])
        .env("DIFFLOG_DIR", root)
        .env("DIFFLOG_CACHE", std::env::var("DIFFLOG_CACHE").unwrap())
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap()
    };
    let (a, b, d) = (
        tmp.path().join("compact"),
        tmp.path().join("fast"),
        tmp.path().join("default"),
    );
    for (root, png) in [(&a, Some("compact")), (&b, Some("fast")), (&d, None)] {
        let o = generate(root, png);
        assert!(o.status.success(), "{}", text(&o));
    }
    let (compact, fast, default) = (only_run(&a), only_run(&b), only_run(&d));
    let files = |dir: &Path| {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = walk(&dir.join("media"))
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (
                    image::load_from_memory(&bytes)
                        .unwrap()
                        .to_rgb8()
                        .into_raw(),
                    bytes,
                )
            })
            .collect();
        out.sort();
        out
    };
    let (c, f) = (files(&compact), files(&fast));
    assert_eq!(c.len(), 2);
    for ((cp, cb), (fp, fb)) in c.iter().zip(&f) {
        assert_eq!(cp, fp, "the same pixels");
        assert_ne!(cb, fb, "the compact encoding was not used");
    }
    // The recipe in the text chunks names the run: the image data is what
    // the encoding decides.
    let image_data = |png: &[u8]| {
        let (mut at, mut data) = (8, Vec::new());
        while at + 12 <= png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            if &png[at + 4..at + 8] == b"IDAT" {
                data.extend_from_slice(&png[at + 8..at + 8 + len]);
            }
            at += 12 + len;
        }
        data
    };
    let d = files(&default);
    assert_eq!(d.len(), 2);
    for ((dp, db), (cp, cb)) in d.iter().zip(&c) {
        assert!(dp == cp, "the same pixels");
        assert!(
            image_data(db) == image_data(cb),
            "the default is not the compact encoding"
        );
    }
    for run in [&compact, &fast] {
        let o = difflog(&["verify", run.to_str().unwrap()], tmp.path());
        assert!(o.status.success(), "{}", text(&o));
        replays_identically(run, 2, tmp.path());
    }
    let o = generate(&tmp.path().join("bad"), Some("smallest"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("DIFFLOG_PNG"), "{}", text(&o));
}

/// Issue 33: `--rng torch-cpu` draws the noise from PyTorch's CPU
/// generator (other noise than difflog's own for the same seed), records
/// the generator with the call, and replay draws from it again; an
/// unknown recorded generator is refused, not silently replaced.
#[test]
fn torch_cpu_noise_is_recorded_and_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let generate = |root: &Path, rng: &str| {
        let o = difflog(
            &[
                "generate",
                "--prompt",
                "a fox",
                "--num-images-per-prompt",
                "2",
                "--steps",
                "3",
                "--scheduler",
                "euler-a",
                "--seed",
                "11",
                "--rng",
                rng,
            ],
            root,
        );
        assert!(o.status.success(), "{}", text(&o));
        only_run(root)
    };
    let (a, b) = (tmp.path().join("torch"), tmp.path().join("difflog"));
    let torch = generate(&a, "torch-cpu");
    let own = generate(&b, "difflog");
    let params = |dir: &Path| {
        let o = difflog(&["show", dir.to_str().unwrap(), "--json"], tmp.path());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["calls"][0]["started"]["params"].clone()
    };
    assert_eq!(params(&torch)["rng"], "torch-cpu", "{}", params(&torch));
    assert!(params(&own).get("rng").is_none(), "{}", params(&own));
    let images = |dir: &Path| {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for e in walk(&dir.join("media")) {
            out.push(image::open(e).unwrap().to_rgb8().into_raw());
        }
        out.sort();
        out
    };
    assert_ne!(
        images(&torch),
        images(&own),
        "the generator made no difference"
    );
    replays_identically(&torch, 2, tmp.path());
    // A generator this difflog does not know: refused by name.
    edit_log(&torch, "\"rng\":\"torch-cpu\"", "\"rng\":\"philox\"");
    let o = difflog(
        &["replay", torch.to_str().unwrap(), "--call", "1"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("\"philox\""), "{}", text(&o));
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn changed_weights_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("my-model");
    write_model(TinyModel::Sd, &model).unwrap();
    let runs = tmp.path().join("runs");
    let o = difflog(
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "x",
            "--steps",
            "2",
        ],
        &runs,
    );
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run(&runs);
    let unet = model.join("unet/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&unet).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10; // inside the last tensor's data: still a valid file
    std::fs::write(&unet, bytes).unwrap();
    let o = difflog(&["replay", dir.to_str().unwrap(), "--call", "1"], &runs);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("differ from the recorded ones")
            && t.contains("unet/diffusion_pytorch_model.safetensors"),
        "{t}"
    );
    std::fs::remove_dir_all(&model).unwrap();
    let o = difflog(&["replay", dir.to_str().unwrap(), "--call", "1"], &runs);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("recorded model is not available"),
        "{}",
        text(&o)
    );
}

/// Records one more step than it runs: its images cannot replay.
struct Liar(StableDiffusion);

impl Pipeline for Liar {
    type Request = Request;
    type Output = Output;
    fn describe(&self) -> PipelineInfo {
        self.0.describe()
    }
    fn prepare(&self, r: &Request) -> Result<CallSpec, PipelineError> {
        let mut spec = self.0.prepare(r)?;
        let steps = spec.params["num_inference_steps"].as_u64().unwrap();
        spec.params
            .insert("num_inference_steps".into(), (steps + 1).into());
        Ok(spec)
    }
    fn run(&mut self, r: &Request, ctx: &mut CallContext<'_>) -> Result<Output, PipelineError> {
        self.0.run(r, ctx)
    }
}

#[test]
fn a_record_that_does_not_match_its_images_is_caught() {
    test_cache();
    let tmp = tempfile::tempdir().unwrap();
    let mut liar = Liar(StableDiffusion::load(resolve("tiny").unwrap(), "cpu").unwrap());
    let run = Run::create(Init::project("p").root(tmp.path())).unwrap();
    let req = Request {
        prompt: vec!["x".into()],
        steps: Some(2),
        seed: 3,
        ..Request::default()
    };
    run.record(&mut liar, &req).unwrap();
    run.finish().unwrap();
    let o = difflog(
        &[
            "replay",
            only_run(tmp.path()).to_str().unwrap(),
            "--call",
            "1",
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("DIFFERS") && text(&o).contains("0/1 image(s) byte-identical"),
        "{}",
        text(&o)
    );
}

/// `png` without its XMP chunk (an iTXt `XML:com.adobe.xmp`), as difflog
/// wrote PNGs before 2026-12-06.
fn without_xmp(png: &[u8]) -> Vec<u8> {
    let mut out = png[..8].to_vec();
    let mut at = 8;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let chunk = &png[at..at + 12 + len];
        if !(&chunk[4..8] == b"iTXt" && chunk[8..].starts_with(b"XML:com.adobe.xmp\0")) {
            out.extend_from_slice(chunk);
        }
        at += 12 + len;
    }
    out
}

/// Issue 36, item 2: every generated PNG says in XMP, as IPTC asks, that a
/// trained model made it (exiv2 reads the same: tests/python.rs); and a
/// run recorded before difflog wrote XMP still replays byte for byte.
#[test]
fn generated_pngs_carry_iptcs_source_type_and_older_runs_still_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let o = difflog(
        &[
            "generate",
            "--prompt",
            "a fox",
            "--num-images-per-prompt",
            "2",
            "--steps",
            "2",
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let run = only_run(tmp.path());
    let view = difflog::read::RunDir::open(&run).unwrap().view();
    for m in &view.media {
        let png = std::fs::read(run.join(&m.path)).unwrap();
        let chunks = difflog::recipe::read_text_chunks(&png).unwrap();
        let xmp = difflog::meta::xmp::of_texts(&chunks).unwrap().unwrap();
        assert_eq!(
            xmp.digital_source_type.as_deref(),
            Some(difflog::recipe::TRAINED_ALGORITHMIC_MEDIA)
        );
        assert_eq!(xmp.creator_tool.as_deref(), Some("difflog"));
        // The same image as an older difflog wrote it, and the log saying so.
        let old = without_xmp(&png);
        assert!(old.len() < png.len());
        let digest = difflog::format::sha256_hex(&old);
        let path = difflog::format::media_rel_path(&digest, "png");
        std::fs::create_dir_all(run.join(&path).parent().unwrap()).unwrap();
        std::fs::write(run.join(&path), &old).unwrap();
        std::fs::remove_file(run.join(&m.path)).unwrap();
        edit_log(
            &run,
            &format!("\"bytes\":{},\"format\"", m.bytes),
            &format!("\"bytes\":{},\"format\"", old.len()),
        );
        edit_log(&run, &m.path, &path);
        edit_log(&run, &m.digest, &digest);
    }
    let o = difflog(&["verify", run.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    replays_identically(&run, 2, tmp.path());
}

/// Issue 36, without keys: a run configured (DIFFLOG_PROVENANCE) with a
/// watermark only. A 256×256 image records the watermark's bits, reads
/// back with them (`verify --provenance`) and replays byte-identically, its
/// watermark made again; a 64×64 image records why it has none. A record
/// naming bits the image does not carry is caught; a configuration that is
/// not there is refused by name before anything is recorded.
#[test]
fn watermarks_are_made_again_on_replay_and_small_images_say_why_they_have_none() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("marks.toml");
    std::fs::write(&config, "[watermark]\nbits = \"1011001110\"\n").unwrap();
    let root = tmp.path().join("runs");
    let with_marks = |args: &[&str]| {
        test_cache();
        Command::new(common::difflog_bin())
            .args(args)
            .env("DIFFLOG_DIR", &root)
            .env("DIFFLOG_CACHE", std::env::var("DIFFLOG_CACHE").unwrap())
            .env("DIFFLOG_PROVENANCE", &config)
            .env_remove("DIFFLOG_MODE")
            .output()
            .unwrap()
    };
    let out = tmp.path().join("out");
    let o = with_marks(&[
        "generate",
        "--prompt",
        "a red circle",
        "--width",
        "256",
        "--height",
        "256",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let run = only_run(&root);
    // --out writes the stored file, marks and recipe in it.
    let view = difflog::read::RunDir::open(&run).unwrap().view();
    assert_eq!(
        std::fs::read(out.join("image-0.png")).unwrap(),
        std::fs::read(run.join(&view.media[0].path)).unwrap()
    );
    let o = with_marks(&["generate", "--prompt", "a red circle", "--steps", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let small = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| *p != run)
        .unwrap();
    let marks = |run: &Path| {
        let view = difflog::read::RunDir::open(run).unwrap().view();
        view.media[0].provenance.clone().expect("marks recorded")
    };
    let big = marks(&run);
    assert_eq!(big.watermark.as_ref().unwrap().bits, "1011001110");
    assert_eq!((big.c2pa, big.watermark_skipped), (None, None));
    let tiny = marks(&small);
    assert_eq!(tiny.watermark, None);
    assert!(tiny
        .watermark_skipped
        .unwrap()
        .contains("smaller than the method's 256×256"));

    let o = difflog(&["verify", root.to_str().unwrap(), "--provenance"], &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("0 with a C2PA manifest, 1 with their watermark"));
    assert!(text(&o).contains("no watermark (a 64×64 image is smaller"));
    replays_identically(&run, 1, &root);

    // The record says other bits than the image carries.
    edit_log(&run, "\"bits\":\"1011001110\"", "\"bits\":\"0100110001\"");
    let o = difflog(&["verify", run.to_str().unwrap(), "--provenance"], &root);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("PROBLEM: its watermark does not read back: 10 of 10 bits differ"),
        "{}",
        text(&o)
    );

    // A run that cannot be read among them: said, and the others checked.
    let broken = root.join("20261206T000000.000Z-000000");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("run.json"), "{not json").unwrap();
    let o = difflog(&["verify", root.to_str().unwrap(), "--provenance"], &root);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("provenance: PROBLEM: its images cannot be checked"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("no watermark (a 64×64"), "{}", text(&o));
    std::fs::remove_dir_all(&broken).unwrap();

    let before = std::fs::read_dir(&root).unwrap().count();
    std::fs::remove_file(&config).unwrap();
    let o = with_marks(&["generate", "--prompt", "a red circle", "--steps", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("marks.toml"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), before);
}
