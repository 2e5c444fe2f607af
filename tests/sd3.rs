//! Stable Diffusion 3 / 3.5 on candle with the tiny built-in SD3 (SD3.5
//! medium-shaped: three text encoders, dual-attention blocks, q/k norms,
//! skip-layer guidance; written in the diffusers layout with the real tensor
//! names): pinned bytes, what a call records, reproducibility, that the
//! guidance paths are used, image-to-image, replay, architecture detection
//! of folders, and bad requests refused before a run exists.

mod common;

use common::{difflog_bin, edit_log, only_run, test_cache, Schemas};
use difflog::pipelines::tiny::{write_model, TinyModel};
use difflog::pipelines::{resolve_any, AnyModel, Generator, InitImage, Request, Sd3Pipeline};
use difflog::read::RunDir;
use difflog::recipe::read_text_chunks;
use difflog::verify::verify_run;
use difflog::{Init, Run};
use std::process::Command;
use std::sync::Arc;

fn load() -> Generator {
    test_cache();
    Generator::load("tiny-sd3", "cpu").unwrap()
}

fn request(prompt: &str, seed: u64) -> Request {
    Request {
        prompt: vec![prompt.into()],
        seed,
        ..Request::default()
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(difflog_bin())
        .args(args)
        .env("DIFFLOG_CACHE", std::env::var_os("DIFFLOG_CACHE").unwrap())
        .output()
        .unwrap()
}

#[test]
fn the_tiny_sd3_is_pinned_and_in_the_diffusers_layout() {
    test_cache();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_model(TinyModel::Sd3, a.path()).unwrap();
    write_model(TinyModel::Sd3, b.path()).unwrap();
    for f in [
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
        "text_encoder_3/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer_2/tokenizer.json",
        "tokenizer_3/tokenizer.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
    let AnyModel::Sd3(m) = resolve_any("tiny-sd3").unwrap() else {
        panic!("tiny-sd3 is not an SD3 model");
    };
    assert_eq!(
        m.weights_digest,
        "sha256:af7482cc11fdae6ae07d6765d20fc7d4de9458459fc0eb78eadb9bf36c97a3c5"
    );
    let names = candle_core::safetensors::load(
        a.path()
            .join("transformer/diffusion_pytorch_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for k in [
        "pos_embed.pos_embed",
        "pos_embed.proj.weight",
        "transformer_blocks.0.attn2.to_q.weight",
        "transformer_blocks.1.attn.norm_added_q.weight",
        "transformer_blocks.2.norm1_context.linear.weight",
        // The last block's text q/k norms (SD 3.5), which difflog's MMDiT reads.
        "transformer_blocks.2.attn.norm_added_k.weight",
        "norm_out.linear.weight",
    ] {
        assert!(names.contains_key(k), "{k}");
    }
    assert!(!names
        .keys()
        .any(|k| k.contains("qkv") || k.contains("joint_blocks")));
    let clip_g = candle_core::safetensors::load(
        a.path().join("text_encoder_2/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(clip_g.contains_key("text_projection.weight"));
    let index = std::fs::read_to_string(a.path().join("model_index.json")).unwrap();
    assert!(index.contains("\"StableDiffusion3Pipeline\""), "{index}");

    // A downloaded folder's variant is told by its transformer config.
    std::fs::write(
        a.path().join("model_index.json"),
        r#"{"_class_name": "StableDiffusion3Pipeline"}"#,
    )
    .unwrap();
    for (config, variant) in [
        (r#"{"num_layers": 24}"#, "sd3-medium"),
        (
            r#"{"num_layers": 24, "dual_attention_layers": [0, 1]}"#,
            "sd35-medium",
        ),
        (r#"{"num_layers": 38}"#, "sd35-large"),
    ] {
        std::fs::write(a.path().join("transformer/config.json"), config).unwrap();
        let AnyModel::Sd3(m) = resolve_any(a.path().to_str().unwrap()).unwrap() else {
            panic!("{config}: not detected as SD3");
        };
        assert_eq!(m.config.variant, variant, "{config}");
    }
}

#[test]
fn an_sd3_call_records_its_table_and_is_reproducible() {
    let root = tempfile::tempdir().unwrap();
    let mut p = load();
    let run = Run::create(Init::project("sd3").root(root.path())).unwrap();
    let mut r = request("a red cat", 5);
    r.prompt = vec!["a red cat".into(), "a blue dog".into()];
    r.num_images_per_prompt = Some(2);
    let first = run.record(&mut p, &r).unwrap();
    let again = run.record(&mut p, &r).unwrap();
    assert_eq!(first.images.len(), 4);
    assert_eq!(first.images, again.images, "the same request, other pixels");
    let alone = run.record(&mut p, &request("a blue dog", 8)).unwrap();
    assert_eq!(alone.images[0], first.images[3], "seed 8 alone");
    assert_ne!(first.images[0], first.images[1], "seeds differ");
    assert_ne!(first.images[0], first.images[2], "prompts differ");
    // The negative prompt (classifier-free guidance) and CLIP-G's own prompt are used.
    let mut neg = request("a red cat", 5);
    neg.negative_prompt = Some("blue".into());
    let neg = run.record(&mut p, &neg).unwrap();
    assert_ne!(
        neg.images[0], first.images[0],
        "the negative prompt changed nothing"
    );
    let mut p2 = request("a red cat", 5);
    p2.prompt_2 = Some("a dog".into());
    let p2 = run.record(&mut p, &p2).unwrap();
    assert_ne!(p2.images[0], first.images[0], "prompt_2 changed nothing");
    // No guidance: one prediction per step, no skip-layer guidance recorded.
    let mut plain = request("a red cat", 5);
    plain.guidance_scale = Some(1.0);
    let plain = run.record(&mut p, &plain).unwrap();
    assert_ne!(plain.images[0], first.images[0]);
    // T5's own prompt and negative prompt (diffusers' prompt_3 and
    // negative_prompt_3) are used and recorded.
    let mut p3 = request("a red cat", 5);
    p3.prompt_3 = Some("a dog".into());
    let p3 = run.record(&mut p, &p3).unwrap();
    assert_ne!(p3.images[0], first.images[0], "prompt_3 changed nothing");
    let mut n3 = request("a red cat", 5);
    n3.negative_prompt = Some("blue".into());
    n3.negative_prompt_3 = Some("green".into());
    let n3 = run.record(&mut p, &n3).unwrap();
    assert_ne!(
        n3.images[0], neg.images[0],
        "negative_prompt_3 changed nothing"
    );
    run.finish().unwrap();

    let dir = only_run(root.path());
    Schemas::load().check_dir(&dir);
    assert!(!verify_run(&dir).damaged());
    let v = RunDir::open(&dir).unwrap().view();
    let pipe = &v.pipelines[&1];
    assert_eq!(pipe.class, "StableDiffusion3Pipeline");
    assert_eq!(pipe.scheduler["shift"], 3.0);
    for c in [
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "transformer",
        "vae",
    ] {
        assert!(
            pipe.components[c]["weights"]["sha256"].as_str().is_some(),
            "{c}: {}",
            pipe.components[c]
        );
    }
    assert_eq!(pipe.components["vae"]["scaling_factor"], 1.5305);
    let call = &v.calls[&1];
    assert_eq!(
        call.started.columns,
        [
            "Prompt",
            "Negative-Prompt",
            "Prompt-2",
            "Negative-Prompt-2",
            "Prompt-3",
            "Negative-Prompt-3",
            "Generated-Image",
            "Seed"
        ]
    );
    let params = &call.started.params;
    assert_eq!(params["guidance_scale"], 4.5);
    assert_eq!(params["skip_guidance_layers"], serde_json::json!([0]));
    assert_eq!(params["skip_layer_guidance_scale"], 2.8);
    assert_eq!(params["max_sequence_length"], 64);
    let unguided = &v.calls[&6].started.params;
    assert!(unguided["skip_guidance_layers"].is_null(), "{unguided:?}");
    assert!(params["prompt_3"].is_null() && params["negative_prompt_3"].is_null());
    assert_eq!(v.calls[&7].started.params["prompt_3"], "a dog");
    assert_eq!(v.calls[&8].started.params["negative_prompt_3"], "green");
    // Each row has T5's texts in the columns difflog's Python recorder gives
    // diffusers' SD3 (the prompt and negative prompt when not given), and
    // the PNG's recipe says them.
    let texts = |call: u32, row: usize| -> Vec<Option<String>> {
        let cells = &v.calls[&call].rows[row].cells;
        ["Prompt-3", "Negative-Prompt-3"]
            .iter()
            .map(|col| {
                cells.iter().find_map(|c| match c {
                    difflog::event::Cell::Text { column, value } if column == col => {
                        Some(value.clone())
                    }
                    _ => None,
                })
            })
            .collect()
    };
    assert_eq!(texts(1, 3), [Some("a blue dog".into()), None]);
    assert_eq!(texts(4, 0), [Some("a red cat".into()), Some("blue".into())]);
    assert_eq!(texts(7, 0), [Some("a dog".into()), None]);
    assert_eq!(
        texts(8, 0),
        [Some("a red cat".into()), Some("green".into())]
    );
    let png = v.calls[&8].rows[0]
        .cells
        .iter()
        .find_map(|c| match c {
            difflog::event::Cell::Image { column, path, .. } if column == "Generated-Image" => {
                Some(dir.join(path))
            }
            _ => None,
        })
        .unwrap();
    let chunks = read_text_chunks(&std::fs::read(png).unwrap()).unwrap();
    let parameters = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        parameters.contains("Prompt 3: a red cat, Negative prompt 3: green"),
        "{parameters}"
    );

    for c in 1..=v.calls.len() {
        let o = cli(&[
            "replay",
            dir.to_str().unwrap(),
            "--call",
            &c.to_string(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = out["rows"].as_array().unwrap();
        assert!(
            rows.iter().all(|r| r["identical"] == true),
            "call {c}: {out}"
        );
    }
}

#[test]
fn sd3_image_to_image_records_its_input_and_replays() {
    let root = tempfile::tempdir().unwrap();
    let mut p = load();
    let run = Run::create(Init::project("sd3-i2i").root(root.path())).unwrap();
    let mut r = request("a red door", 2);
    r.init = Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
        3, 72,
    ))));
    r.strength = Some(0.75);
    let out = run.record(&mut p, &r).unwrap();
    // 72 px rounded down to SD3's multiple of 16.
    assert_eq!(out.images[0].dimensions(), (64, 64));
    let again = run.record(&mut p, &r).unwrap();
    assert_eq!(out.images, again.images);
    let plain = run.record(&mut p, &request("a red door", 2)).unwrap();
    assert_ne!(
        out.images[0], plain.images[0],
        "the input image changed nothing"
    );
    let mut other = r.clone();
    other.init = Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
        9, 72,
    ))));
    let other = run.record(&mut p, &other).unwrap();
    assert_ne!(out.images[0], other.images[0], "another input, same pixels");
    run.finish().unwrap();

    let dir = only_run(root.path());
    Schemas::load().check_dir(&dir);
    let v = RunDir::open(&dir).unwrap().view();
    let call = &v.calls[&1];
    assert!(call.started.columns.iter().any(|c| c == "Input-Image"));
    let params = &call.started.params;
    assert_eq!(params["strength"], 0.75);
    assert_eq!(
        params["image"],
        serde_json::json!({"width": 72, "height": 72})
    );
    // diffusers' SD3 image-to-image has no skip-layer guidance.
    assert!(params["skip_guidance_layers"].is_null(), "{params:?}");
    let o = cli(&["replay", dir.to_str().unwrap(), "--call", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["rows"][0]["identical"], true, "{out}");
}

#[test]
fn skip_layer_guidance_is_applied() {
    test_cache();
    let AnyModel::Sd3(with) = resolve_any("tiny-sd3").unwrap() else {
        panic!("not SD3");
    };
    let mut without = (*with).clone();
    without.config.skip_layer_guidance = None;
    let mut ctx = difflog::pipeline::CallContext::detached();
    use difflog::pipeline::Pipeline;
    let r = request("a red cat", 3);
    let a = Sd3Pipeline::load(*with, "cpu")
        .unwrap()
        .run(&r, &mut ctx)
        .unwrap();
    let b = Sd3Pipeline::load(without, "cpu")
        .unwrap()
        .run(&r, &mut ctx)
        .unwrap();
    assert_ne!(a.images, b.images, "skipping layers changed nothing");
}

#[test]
fn bad_sd3_requests_are_refused_before_a_run_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = load();
    let run = Run::create(Init::project("bad").root(tmp.path())).unwrap();
    let fails = |p: &mut Generator, r: &Request, want: &str| {
        let e = run.record(p, r).err().unwrap().to_string();
        assert!(e.contains(want), "{e:?} does not say {want:?}");
    };
    let mut r = request("x", 1);
    r.width = Some(72);
    fails(
        &mut p,
        &r,
        "width 72: tiny-sd3 needs a positive multiple of 16, at most 256",
    );
    let mut r = request("x", 1);
    r.height = Some(512);
    fails(&mut p, &r, "at most 256 (its position embedding's reach)");
    let mut r = request("x", 1);
    r.init = Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
        1, 64,
    ))));
    r.strength = Some(0.1);
    fails(&mut p, &r, "runs no step");
    r.strength = Some(0.5);
    r.mask = Some(Arc::new(difflog::bench::synthetic_image(2, 64)));
    fails(&mut p, &r, "SD3 inpainting is not supported");
    let mut r = request("x", 1);
    r.negative_prompt = Some("a ".repeat(80));
    fails(&mut p, &r, "prompt is too long for T5");
    let mut r = request("x", 1);
    r.prompt_3 = Some("a ".repeat(80));
    fails(&mut p, &r, "prompt is too long for T5");
    let mut r = request("x", 1);
    r.negative_prompt_3 = Some("a ".repeat(80));
    fails(&mut p, &r, "prompt is too long for T5");
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    assert!(RunDir::open(&dir).unwrap().view().calls.is_empty());

    let runs = tmp.path().join("cli-runs");
    let runs_s = runs.to_str().unwrap();
    for (args, want) in [
        (vec!["--model", "sd4"], "sd4: unknown model"),
        (
            vec!["--model", "tiny-sd3", "--scheduler", "unipc"],
            "--scheduler applies to the UNet models",
        ),
        (
            vec!["--model", "tiny-sd3", "--width", "40"],
            "multiple of 16",
        ),
        (
            vec!["--model", "tiny-flux", "--prompt-3", "a dog"],
            "tiny-flux: a third prompt (prompt_3, negative_prompt_3) is for SD3's third text encoder (T5); this model has none",
        ),
        (
            vec!["--model", "tiny", "--prompt-3", "a dog"],
            "is for SD3's third text encoder",
        ),
    ] {
        let mut all = vec!["generate", "--prompt", "x", "--runs", runs_s];
        all.extend(args);
        let o = cli(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{want}: {err}");
        assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
    }
    // --prompt-3 reaches T5 and the record.
    let o = cli(&[
        "generate",
        "--prompt",
        "a red cat",
        "--prompt-3",
        "a dog",
        "--runs",
        runs_s,
        "--model",
        "tiny-sd3",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = RunDir::open(only_run(&runs)).unwrap().view();
    assert_eq!(v.calls[&1].started.params["prompt_3"], "a dog");
    std::fs::remove_dir_all(&runs).unwrap();
    // An SD3.5 preset whose files are not cached lists what to download.
    let o = Command::new(difflog_bin())
        .args([
            "generate",
            "--prompt",
            "x",
            "--runs",
            runs_s,
            "--model",
            "sd35-medium",
        ])
        .env("HF_HOME", tmp.path().join("hub"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for want in [
        "stabilityai/stable-diffusion-3.5-medium",
        "text_encoder_3/model.safetensors (or text_encoder_3/model.safetensors.index.json",
        "tokenizer_3/tokenizer.json",
        "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k: tokenizer.json",
        "openai/clip-vit-base-patch32: tokenizer.json",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn a_malformed_recorded_skip_layer_guidance_is_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let mut p = load();
    let run = Run::create(Init::project("slg").root(root.path())).unwrap();
    let mut r = request("a red cat", 4);
    r.steps = Some(2);
    run.record(&mut p, &r).unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    let replay = || cli(&["replay", dir.to_str().unwrap(), "--call", "1"]);
    assert!(replay().status.success());
    for (from, to, says) in [
        (
            "\"skip_guidance_layers\":[0]",
            "\"skip_guidance_layers\":\"all\"",
            "skip_guidance_layers is \"all\"",
        ),
        (
            "\"skip_guidance_layers\":\"all\"",
            "\"skip_guidance_layers\":[-1]",
            "skip_guidance_layers is [-1]",
        ),
        (
            "\"skip_layer_guidance_scale\":2.8",
            "\"skip_layer_guidance_scale\":\"2.8\"",
            "skip_layer_guidance_scale is \"2.8\", not a number",
        ),
    ] {
        if to.contains("scale") {
            edit_log(
                &dir,
                "\"skip_guidance_layers\":[-1]",
                "\"skip_guidance_layers\":[0]",
            );
        }
        edit_log(&dir, from, to);
        let o = replay();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(says) && err.contains("call 1, row 0 cannot be re-made"),
            "{err}"
        );
    }
}
