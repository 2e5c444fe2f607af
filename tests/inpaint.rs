//! Inpainting with the tiny inpainting model (a 9-channel UNet, as the
//! SD 1.5 / 2 / XL inpainting checkpoints): what a call records (the source
//! image and the mask as cells, as autolog's inpainting table names them),
//! reproducibility, that the mask is used, replay, and bad requests refused
//! before a run exists.

mod common;

use common::{difflog_bin, only_run, test_cache, Schemas};
use difflog::event::Cell;
use difflog::pipelines::tiny::{write_model, TinyModel};
use difflog::pipelines::{resolve, InitImage, Request, StableDiffusion};
use difflog::read::RunDir;
use difflog::verify::verify_run;
use difflog::{Init, Run};
use image::{Rgb, RgbImage};
use std::process::Command;
use std::sync::Arc;

fn load() -> StableDiffusion {
    test_cache();
    StableDiffusion::load(resolve("tiny-inpaint").unwrap(), "cpu").unwrap()
}

/// White (repaint) in a square in the middle, black (keep) around it.
fn mask(size: u32, from: u32, to: u32) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_fn(size, size, |x, y| {
        let inside = (from..to).contains(&x) && (from..to).contains(&y);
        Rgb(if inside { [255; 3] } else { [0; 3] })
    }))
}

fn request(seed: u64, m: Arc<RgbImage>) -> Request {
    Request {
        prompt: vec!["a red door".into()],
        steps: Some(3),
        seed,
        init: Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
            7, 64,
        )))),
        mask: Some(m),
        ..Request::default()
    }
}

#[test]
fn the_tiny_inpainting_model_is_an_inpainting_model() {
    // Its bytes are pinned with the other tiny models' in tests/generate.rs.
    test_cache();
    let dir = tempfile::tempdir().unwrap();
    write_model(TinyModel::Inpaint, dir.path()).unwrap();
    assert!(resolve("tiny-inpaint").unwrap().config.inpaint);
    // A folder is recognised as inpainting by its pipeline class.
    let index = std::fs::read_to_string(dir.path().join("model_index.json")).unwrap();
    assert!(index.contains("StableDiffusionInpaintPipeline"), "{index}");
    assert!(
        resolve(dir.path().to_str().unwrap())
            .unwrap()
            .config
            .inpaint
    );
}

#[test]
fn inpainting_records_the_source_and_the_mask_and_is_reproducible() {
    let root = tempfile::tempdir().unwrap();
    let mut p = load();
    let run = Run::create(Init::project("inpaint").root(root.path())).unwrap();
    let m = mask(64, 16, 48);
    let mut r = request(11, Arc::clone(&m));
    r.num_images_per_prompt = Some(2);
    let first = run.record(&mut p, &r).unwrap();
    let again = run.record(&mut p, &r).unwrap();
    assert_eq!(first.images, again.images, "the same request, other pixels");
    // One row alone, from its seed.
    let alone = run.record(&mut p, &request(12, Arc::clone(&m))).unwrap();
    assert_eq!(alone.images[0], first.images[1]);
    // The mask is used: another mask, other pixels.
    let other = run.record(&mut p, &request(11, mask(64, 0, 8))).unwrap();
    assert_ne!(other.images[0], first.images[0], "the mask changed nothing");
    run.finish().unwrap();

    let dir = only_run(root.path());
    Schemas::load().check_dir(&dir);
    assert!(!verify_run(&dir).damaged());
    let v = RunDir::open(&dir).unwrap().view();
    assert_eq!(v.pipelines[&1].class, "StableDiffusionInpaintPipeline");
    let call = &v.calls[&1];
    assert_eq!(
        call.started.columns,
        [
            "Prompt",
            "Negative-Prompt",
            "Input-Image",
            "Mask-Image",
            "Generated-Image",
            "Seed"
        ]
    );
    assert_eq!(call.started.params["strength"], 1.0);
    assert_eq!(
        call.started.params["mask_image"],
        serde_json::json!({"width": 64, "height": 64})
    );
    let stored = |prefix: &str| -> Vec<RgbImage> {
        call.media
            .iter()
            .filter(|x| x.key.starts_with(prefix))
            .map(|x| image::open(dir.join(&x.path)).unwrap().to_rgb8())
            .collect()
    };
    assert_eq!(
        stored("Mask-Image/"),
        vec![(*m).clone()],
        "the mask, stored once"
    );
    assert_eq!(stored("Input-Image/").len(), 1, "the source, stored once");
    for row in &call.rows {
        let cols: Vec<&str> = row
            .cells
            .iter()
            .filter(|c| matches!(c, Cell::Image { .. }))
            .map(|c| c.column())
            .collect();
        assert_eq!(cols, ["Input-Image", "Mask-Image", "Generated-Image"]);
    }

    // Replay regenerates every row from the record alone, byte for byte.
    let o = Command::new(difflog_bin())
        .args(["replay", dir.to_str().unwrap(), "--call", "1", "--json"])
        .env("DIFFLOG_CACHE", std::env::var_os("DIFFLOG_CACHE").unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["identical"] == true), "{out}");
    // IPTC's digital source type (issue 36): a composite, the unmasked
    // part being the input's.
    let generated = call
        .media
        .iter()
        .find(|x| x.key.starts_with("Generated-Image/"))
        .unwrap();
    let png = std::fs::read(dir.join(&generated.path)).unwrap();
    let chunks = difflog::recipe::read_text_chunks(&png).unwrap();
    let xmp = difflog::meta::xmp::of_texts(&chunks).unwrap().unwrap();
    assert_eq!(
        xmp.digital_source_type.as_deref(),
        Some(difflog::recipe::COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA)
    );
}

#[test]
fn bad_inpainting_requests_are_refused_before_a_run_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = load();
    let run = Run::create(Init::project("bad").root(tmp.path())).unwrap();
    let fails = |p: &mut StableDiffusion, r: &Request, want: &str| {
        let e = run.record(p, r).err().unwrap().to_string();
        assert!(e.contains(want), "{e:?} does not say {want:?}");
    };
    fails(
        &mut p,
        &request(1, mask(32, 0, 8)),
        "the mask is 32×32 pixels and the image 64×64",
    );
    let mut no_mask = request(1, mask(64, 0, 8));
    no_mask.mask = None;
    fails(
        &mut p,
        &no_mask,
        "is an inpainting model: give it an image and a mask",
    );
    let mut plain = StableDiffusion::load(resolve("tiny").unwrap(), "cpu").unwrap();
    fails(
        &mut plain,
        &request(1, mask(64, 0, 8)),
        "a mask needs an inpainting model",
    );
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    assert!(RunDir::open(&dir).unwrap().view().calls.is_empty());

    // The command line: --mask without --image, and a mask of another size,
    // fail before any run directory is made.
    let runs = tmp.path().join("cli-runs");
    let img = tmp.path().join("in.png");
    let small = tmp.path().join("mask.png");
    difflog::bench::synthetic_image(1, 64).save(&img).unwrap();
    mask(32, 0, 8).save(&small).unwrap();
    for (args, want) in [
        (
            vec!["--mask", small.to_str().unwrap()],
            "--mask needs --image",
        ),
        (
            vec![
                "--image",
                img.to_str().unwrap(),
                "--mask",
                small.to_str().unwrap(),
            ],
            "must be the same size",
        ),
    ] {
        let o = Command::new(difflog_bin())
            .args([
                "generate",
                "--model",
                "tiny-inpaint",
                "--prompt",
                "x",
                "--runs",
            ])
            .arg(&runs)
            .args(&args)
            .env("DIFFLOG_CACHE", std::env::var_os("DIFFLOG_CACHE").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{err}");
        assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
    }
}
