//! Parity with diffusers (issue 33): the same weights, prompts and seeds
//! give the same images in `difflog generate --rng torch-cpu` as in
//! diffusers' own pipelines, loaded with `from_pretrained` from the very
//! folder difflog runs (its tiny models are written in diffusers' layout,
//! configs included). tests/python/parity.py is diffusers' side; each
//! module (text encoder, UNet, VAE) is also compared alone on the same
//! inputs, and every case's schedule, text states and latents after every
//! step (`difflog generate --trace` against diffusers' step callback).
//!
//! Tolerances, float32 on the CPU. Images: difflog's PNG against
//! diffusers' float output × 255: at most 1 level of 255 anywhere (the PNG
//! rounds to the nearest level, up to 0.5; the two computations differ in
//! summation order and kernels, about 1e-5 of the range here, which can
//! tip a rounding), a mean under 0.3 levels and a PSNR of at least 50 dB.
//! Modules: at most 5e-5 absolute difference on outputs of magnitude 1–5
//! (float32 rounding over a few hundred operations is ~1e-6 here; an
//! approximate GELU in place of the exact one already differs by 5e-4,
//! wrong norm groups by 2). Timesteps: 1e-3 (float32 values up to 1000).
//! Latents after each step: 1e-3 of their largest magnitude; measured at
//! most 7e-6 of it, except the SD3 medium-shaped folder, whose random
//! latents grow to 122 and differ by 2.2e-4 of that (float32 through a
//! transformer with no q/k norms); the last block without SD 3.5's q/k
//! norms, or a wrong timestep, differs by a tenth or more.

mod common;

/// Modules and text states: absolute difference (see above).
const MODULES: f32 = 5e-5;
/// Timesteps (up to 1000, float32: a step of 6e-5 there): absolute.
const TIMESTEPS: f32 = 1e-3;
/// Latents after a step: relative to their largest magnitude (at least 1).
const LATENTS: f32 = 1e-3;

use candle_core::{DType, Device, Tensor};
use common::pyenv::py;
use common::test_cache;
use difflog::pipelines::flow::sd3_model::Sd3Config;
use difflog::pipelines::sd::model::{ModelConfig, Modules};
use difflog::pipelines::tiny::{ensure, TinyModel};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which model a case runs.
#[derive(Clone)]
enum Model {
    /// One of difflog's tiny models.
    Tiny(TinyModel),
    /// A folder diffusers saved (made by parity.py).
    Folder(PathBuf),
    /// The trained demo model.
    Shapes,
}

impl Model {
    fn dir(&self) -> PathBuf {
        match self {
            Model::Tiny(t) => ensure(*t).unwrap(),
            Model::Folder(p) => p.clone(),
            Model::Shapes => difflog::pipelines::tiny::shapes::ensure().unwrap(),
        }
    }

    fn arg(&self) -> String {
        match self {
            Model::Tiny(t) => t.id().to_string(),
            Model::Folder(p) => p.display().to_string(),
            Model::Shapes => difflog::pipelines::tiny::shapes::NAME.to_string(),
        }
    }
}

/// One call, as both sides make it.
struct Case {
    name: &'static str,
    model: Model,
    prompts: Vec<&'static str>,
    negative: Option<&'static str>,
    per_prompt: usize,
    scheduler: &'static str,
    seed: u64,
    steps: usize,
    guidance: f64,
    image: Option<PathBuf>,
    mask: Option<PathBuf>,
    strength: Option<f64>,
    /// Refine with this model (`--refiner`).
    refiner: Option<TinyModel>,
    /// The skip-layer guidance difflog applies by the model's default
    /// (SD3.5 medium-shaped models), handed to diffusers, which takes it
    /// per call.
    slg: Option<Value>,
}

impl Case {
    fn to_json(&self) -> Value {
        json!({
            "model": self.model.dir(),
            "prompt": self.prompts,
            "negative_prompt": self.negative,
            "images_per_prompt": self.per_prompt,
            "scheduler": self.scheduler,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": 64,
            "height": 64,
            "image": self.image,
            "mask": self.mask,
            "strength": self.strength,
            "refiner": self.refiner.map(|r| ensure(r).unwrap()),
            "slg": self.slg,
        })
    }

    /// difflog's images for the case, as RGB bytes, and what it traced
    /// (`generate --trace`).
    fn difflog(&self, out: &Path) -> (Vec<Vec<u8>>, HashMap<String, Tensor>) {
        let mut args: Vec<String> = vec!["generate".into(), "--model".into(), self.model.arg()];
        for p in &self.prompts {
            args.extend(["--prompt".into(), p.to_string()]);
        }
        if let Some(n) = self.negative {
            args.extend(["--negative-prompt".into(), n.into()]);
        }
        if !self.scheduler.is_empty() {
            args.extend(["--scheduler".into(), self.scheduler.into()]);
        }
        // No guidance: FLUX.1 schnell, which takes none (diffusers ignores it).
        if self.guidance != 0.0 {
            args.extend(["--guidance-scale".into(), self.guidance.to_string()]);
        }
        for (flag, v) in [
            ("--num-images-per-prompt", self.per_prompt.to_string()),
            ("--seed", self.seed.to_string()),
            ("--steps", self.steps.to_string()),
            ("--width", "64".into()),
            ("--height", "64".into()),
            ("--rng", "torch-cpu".into()),
        ] {
            args.extend([flag.into(), v]);
        }
        if let Some(i) = &self.image {
            args.extend(["--image".into(), i.display().to_string()]);
        }
        if let Some(m) = &self.mask {
            args.extend(["--mask".into(), m.display().to_string()]);
        }
        if let Some(s) = self.strength {
            args.extend(["--strength".into(), s.to_string()]);
        }
        if let Some(r) = self.refiner {
            args.extend(["--refiner".into(), r.id().into()]);
        }
        let trace = out.with_extension("trace.safetensors");
        args.extend(["--out".into(), out.display().to_string()]);
        args.extend(["--trace".into(), trace.display().to_string()]);
        let o = Command::new(common::difflog_bin())
            .args(&args)
            .env("DIFFLOG_CACHE", std::env::var("DIFFLOG_CACHE").unwrap())
            .env("DIFFLOG_MODE", "disabled")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        let n = self.prompts.len() * self.per_prompt;
        let images = (0..n)
            .map(|i| {
                image::open(out.join(format!("image-{i}.png")))
                    .unwrap()
                    .to_rgb8()
                    .into_raw()
            })
            .collect();
        let traced = candle_core::safetensors::load(&trace, &Device::Cpu).unwrap();
        (images, traced)
    }
}

/// What the comparison of two images found, in levels of 255.
struct Diff {
    max: f64,
    mean: f64,
    psnr: f64,
}

fn compare(ours: &[u8], theirs: &[f32]) -> Diff {
    assert_eq!(ours.len(), theirs.len());
    let (mut max, mut sum, mut sq) = (0f64, 0f64, 0f64);
    for (a, b) in ours.iter().zip(theirs) {
        let d = (*a as f64 - *b as f64 * 255.0).abs();
        max = max.max(d);
        sum += d;
        sq += d * d;
    }
    let n = ours.len() as f64;
    let mse = sq / n;
    Diff {
        max,
        mean: sum / n,
        psnr: 10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10(),
    }
}

/// A 64×64 input picture (a gradient with a square) and a mask (white
/// repaints the right half).
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let img = image::RgbImage::from_fn(64, 64, |x, y| {
        let inside = (16..40).contains(&x) && (20..44).contains(&y);
        if inside {
            image::Rgb([220, 40, 40])
        } else {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
        }
    });
    let mask = image::RgbImage::from_fn(64, 64, |x, _| {
        if x >= 32 {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([0, 0, 0])
        }
    });
    let (i, m) = (dir.join("input.png"), dir.join("mask.png"));
    img.save(&i).unwrap();
    mask.save(&m).unwrap();
    (i, m)
}

#[test]
fn the_tiny_pipelines_give_diffusers_images_and_modules_its_outputs() {
    test_cache();
    let tmp = tempfile::tempdir().unwrap();
    let (input, mask) = inputs(tmp.path());
    let foreign = tmp.path().join("saved-by-diffusers");
    let foreign_v = tmp.path().join("saved-by-diffusers-v");
    let base = |name, scheduler, seed, steps| Case {
        name,
        model: Model::Tiny(TinyModel::Sd),
        prompts: vec!["a red circle"],
        negative: None,
        per_prompt: 1,
        scheduler,
        seed,
        steps,
        guidance: 7.5,
        image: None,
        mask: None,
        strength: None,
        refiner: None,
        slg: None,
    };
    let slg = Sd3Config::tiny()
        .skip_layer_guidance
        .map(|g| json!({"layers": g.layers, "scale": g.scale, "start": g.start, "stop": g.stop}));
    let sd3_medium = tmp.path().join("sd3-medium-shaped");
    let sd3_saved = tmp.path().join("sd3-saved-by-diffusers");
    let flux_saved = tmp.path().join("flux-saved-by-diffusers");
    let cases = [
        base("text-to-image, DDIM", "ddim", 3, 4),
        Case {
            prompts: vec!["a red circle", "a blue square on green"],
            negative: Some("blurry"),
            per_prompt: 2,
            ..base(
                "two prompts × 2 images, negative prompt, Euler ancestral",
                "euler-a",
                10,
                3,
            )
        },
        Case {
            image: Some(input.clone()),
            strength: Some(0.6),
            ..base("image-to-image, strength 0.6, DDIM", "ddim", 7, 5)
        },
        base("text-to-image, UniPC", "unipc", 5, 6),
        Case {
            image: Some(input.clone()),
            strength: Some(0.7),
            negative: Some("blurry"),
            ..base("image-to-image, strength 0.7, negative prompt, UniPC", "unipc", 8, 6)
        },
        Case {
            model: Model::Folder(foreign.clone()),
            ..base(
                "a folder diffusers saved (no preset's sizes: built from its configs), DDIM",
                "ddim",
                12,
                4,
            )
        },
        Case {
            model: Model::Folder(foreign_v.clone()),
            ..base(
                "SD 2.x traits (v-prediction, linear projections, per-block heads and depths, trailing, an exact-GELU text encoder), a folder diffusers saved",
                "ddim",
                13,
                3,
            )
        },
        Case {
            model: Model::Tiny(TinyModel::Xl),
            ..base("SDXL base: two encoders, pooled output, size numbers, zero negative", "ddim", 14, 4)
        },
        Case {
            model: Model::Tiny(TinyModel::Xl),
            negative: Some("blurry"),
            ..base("SDXL base with a negative prompt", "euler-a", 15, 3)
        },
        Case {
            model: Model::Tiny(TinyModel::Xl),
            refiner: Some(TinyModel::XlRefiner),
            ..base("SDXL base → refiner (latents handed over, aesthetic score)", "ddim", 16, 4)
        },
        Case {
            model: Model::Shapes,
            prompts: vec!["a red circle on the left, blue background"],
            ..base("the trained demo model (tiny-shapes)", "ddim", 17, 8)
        },
        Case {
            model: Model::Tiny(TinyModel::Inpaint),
            image: Some(input.clone()),
            mask: Some(mask.clone()),
            ..base("inpainting, DDIM", "ddim", 4, 4)
        },
        // FLUX.1 (no --scheduler: its flow-matching Euler sampler, with the
        // shift rule the model's scheduler config names).
        Case {
            model: Model::Tiny(TinyModel::Flux),
            prompts: vec!["a red circle", "a blue square on green"],
            guidance: 0.0,
            ..base(
                "FLUX.1 schnell-shaped: T5 and pooled CLIP, packed latents, 16-channel VAE, fixed shift",
                "",
                21,
                4,
            )
        },
        Case {
            model: Model::Tiny(TinyModel::FluxDev),
            guidance: 3.5,
            ..base(
                "FLUX.1 dev-shaped: guidance input, resolution-dependent shift",
                "",
                22,
                5,
            )
        },
        Case {
            model: Model::Tiny(TinyModel::Flux),
            image: Some(input.clone()),
            strength: Some(0.6),
            guidance: 0.0,
            ..base("FLUX.1 image-to-image, strength 0.6", "", 23, 5)
        },
        Case {
            model: Model::Folder(flux_saved.clone()),
            prompts: vec!["a red circle", "a blue square on green"],
            guidance: 3.5,
            ..base(
                "a FLUX.1 folder diffusers saved (no published sizes: built from its configs; 2 heads of 16, rotary axes 4 + 6 + 6, 4 latent channels, guidance input, its own dynamic shift)",
                "",
                24,
                4,
            )
        },
        // SD3 / 3.5: three text encoders, the MMDiT, flow-matching Euler
        // with shift 3.
        Case {
            model: Model::Tiny(TinyModel::Sd3),
            prompts: vec!["a red circle", "a blue square on green"],
            negative: Some("blurry"),
            guidance: 4.5,
            slg: slg.clone(),
            ..base(
                "SD3.5 medium-shaped (tiny-sd3: dual attention, q/k norms), 2 prompts, negative prompt, skip-layer guidance",
                "",
                31,
                4,
            )
        },
        Case {
            model: Model::Folder(sd3_medium.clone()),
            guidance: 7.0,
            slg: slg.clone(),
            ..base(
                "SD3 medium-shaped (no second attentions, no q/k norms), skip-layer guidance",
                "",
                32,
                4,
            )
        },
        Case {
            model: Model::Tiny(TinyModel::Sd3),
            image: Some(input.clone()),
            strength: Some(0.6),
            guidance: 4.5,
            ..base("SD3.5 image-to-image, strength 0.6", "", 33, 5)
        },
        Case {
            model: Model::Folder(sd3_saved.clone()),
            prompts: vec!["a red circle", "a blue square on green"],
            negative: Some("blurry"),
            guidance: 5.0,
            ..base(
                "an SD3 folder diffusers saved (no published sizes: built from its configs; 4 heads in 2 blocks, patches of 1, 4 latent channels, shift 2)",
                "",
                34,
                4,
            )
        },
    ];
    let model = ensure(TinyModel::Sd).unwrap();
    let spec = json!({
        "folders": [{"kind": "sd", "path": foreign}, {"kind": "sd2", "path": foreign_v},
                    {"kind": "sd3-medium", "path": sd3_medium,
                     "from": ensure(TinyModel::Sd3).unwrap()},
                    {"kind": "sd3-saved", "path": sd3_saved,
                     "from": ensure(TinyModel::Sd3).unwrap()},
                    {"kind": "flux-saved", "path": flux_saved,
                     "from": ensure(TinyModel::Flux).unwrap()}],
        "cases": cases.iter().map(Case::to_json).collect::<Vec<_>>(),
        "components": {"model": model, "seed": 0, "prompt": "a red circle",
                       "latent_size": 8, "timestep": 501},
    });
    let spec_path = tmp.path().join("cases.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let out = tmp.path().join("diffusers.safetensors");
    let o = py(
        &[
            "parity.py",
            spec_path.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();

    let mut failed = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let (ours, traced) = case.difflog(&tmp.path().join(format!("case{k}")));
        failed.extend(steps(case, k, &traced, &theirs));
        let t = &theirs[&format!("case{k}")];
        assert_eq!(t.dim(0).unwrap(), ours.len(), "{}: image count", case.name);
        for (i, img) in ours.iter().enumerate() {
            let want: Vec<f32> = t.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let d = compare(img, &want);
            eprintln!(
                "{} (model {}), image {i}: max {:.3} levels, mean {:.4}, PSNR {:.1} dB",
                case.name,
                case.model.arg(),
                d.max,
                d.mean,
                d.psnr
            );
            if d.max > 1.0 || d.mean > 0.3 || d.psnr < 50.0 {
                failed.push(format!(
                    "{} image {i}: max {:.2}, mean {:.3}, PSNR {:.1}",
                    case.name, d.max, d.mean, d.psnr
                ));
            }
        }
    }
    failed.extend(modules(&theirs, &model));
    assert!(failed.is_empty(), "differs from diffusers: {failed:#?}");
}

/// The schedule, each image's text states and its latents after every
/// step of the case's (first) call, against diffusers' step callback.
fn steps(
    case: &Case,
    k: usize,
    ours: &HashMap<String, Tensor>,
    theirs: &HashMap<String, Tensor>,
) -> Vec<String> {
    let mut failed = Vec::new();
    let name = case.name;
    let ts = (
        &ours["call1.timesteps"],
        &theirs[&format!("case{k}_timesteps")],
    );
    if ts.0.dims() != ts.1.dims() {
        failed.push(format!("{name}: timesteps {:?} against {:?}", ts.0, ts.1));
    } else {
        let d = max_abs(&(ts.0 - ts.1).unwrap());
        if d > TIMESTEPS {
            failed.push(format!("{name}: timesteps differ by {d:.2e}"));
        }
    }
    let n = case.prompts.len() * case.per_prompt;
    let (mut worst_text, mut worst_step) = (0f32, (0f32, 0f32));
    for i in 0..n {
        let pair = |what: &str| {
            let key = format!("image{i}.{what}");
            match (
                ours.get(&format!("call1.{key}")),
                theirs.get(&format!("case{k}.{key}")),
            ) {
                (Some(a), Some(b)) if a.dims() == b.dims() => Ok((a.clone(), b.clone())),
                (a, b) => Err(format!(
                    "{name}: {key}: difflog {:?}, diffusers {:?}",
                    a.map(|t| t.dims().to_vec()),
                    b.map(|t| t.dims().to_vec())
                )),
            }
        };
        match pair("prompt_embeds") {
            Ok((a, b)) => {
                let d = max_abs(&(a - b).unwrap());
                worst_text = worst_text.max(d);
                if d > MODULES {
                    failed.push(format!("{name}: image {i}'s text states differ by {d:.2e}"));
                }
            }
            Err(e) => failed.push(e),
        }
        let steps = ours
            .keys()
            .filter(|key| key.starts_with(&format!("call1.image{i}.step")))
            .count();
        let expected = theirs
            .keys()
            .filter(|key| key.starts_with(&format!("case{k}.image{i}.step")))
            .count();
        if steps != expected || steps == 0 {
            failed.push(format!(
                "{name}: image {i}: {steps} steps traced, diffusers {expected}"
            ));
        }
        for s in 0..steps.min(expected) {
            match pair(&format!("step{s}")) {
                Ok((a, b)) => {
                    let (d, scale) = (max_abs(&(&a - &b).unwrap()), max_abs(&b));
                    if d / scale.max(1.0) > worst_step.0 / worst_step.1.max(1.0) {
                        worst_step = (d, scale);
                    }
                    if d > LATENTS * scale.max(1.0) {
                        failed.push(format!(
                            "{name}: image {i} step {s}: latents differ by {d:.2e} (of {scale:.2})"
                        ));
                    }
                }
                Err(e) => failed.push(e),
            }
        }
    }
    eprintln!(
        "{name}: text states {worst_text:.2e}; latents, worst step {:.2e} (of {:.2})",
        worst_step.0, worst_step.1
    );
    failed
}

/// The largest absolute value of a tensor.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.flatten_all())
        .and_then(|a| a.max(0))
        .and_then(|a| a.to_vec0::<f32>())
        .unwrap()
}

/// Each module on the inputs diffusers' modules were given.
fn modules(theirs: &HashMap<String, Tensor>, model: &Path) -> Vec<String> {
    let get = |k: &str| theirs[&format!("components_{k}")].clone();
    let cfg = ModelConfig::tiny();
    let te = model.join("text_encoder/model.safetensors");
    let m = Modules::load(
        &cfg,
        &[te.as_path()],
        &model.join(ModelConfig::UNET_FILE),
        &model.join(ModelConfig::VAE_FILE),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ids = get("ids").to_dtype(DType::U32).unwrap();
    let t = get("t").to_vec0::<f32>().unwrap() as f64;
    let ours = [
        ("text", m.text[0].encode(&ids).unwrap()),
        (
            "unet",
            m.unet.forward(&get("x"), t, &get("ctx"), None).unwrap(),
        ),
        ("vae", m.vae.decode(&get("z")).unwrap()),
    ];
    let mut failed = Vec::new();
    for (name, ours) in ours {
        let want = get(name);
        let diff = max_abs(&(&ours - &want).unwrap());
        let scale = max_abs(&want);
        eprintln!("module {name}: max abs difference {diff:.2e} (outputs up to {scale:.2})");
        if diff > MODULES {
            failed.push(format!("module {name}: max abs difference {diff:.2e}"));
        }
    }
    failed
}
