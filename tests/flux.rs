//! FLUX.1 on candle with the tiny built-in FLUX models (schnell- and
//! dev-shaped, written in the diffusers layout with the real tensor names):
//! the pinned bytes, what a call records, reproducibility (byte-identical
//! reruns; one row alone from its seed), image-to-image inputs as cells,
//! replay, folders and shards, and bad requests refused before a run exists.

mod common;

use common::{difflog_bin, only_run, test_cache, Schemas};
use difflog::event::Cell;
use difflog::pipeline::Pipeline;
use difflog::pipelines::tiny::{write_model, TinyModel};
use difflog::pipelines::{resolve_any, AnyModel, Generator, InitImage, Request};
use difflog::read::RunDir;
use difflog::verify::verify_run;
use difflog::{Init, Run};
use std::process::Command;
use std::sync::Arc;

fn load(model: &str) -> Generator {
    test_cache();
    Generator::load(model, "cpu").unwrap()
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
fn the_tiny_fluxes_are_pinned_and_in_the_diffusers_layout() {
    test_cache();
    for (model, pinned) in [
        (
            TinyModel::Flux,
            "sha256:95a6c9e3c027a811daa38ca4e3727b32cef0497170e6b3e1742cfe71ced0a509",
        ),
        (
            TinyModel::FluxDev,
            "sha256:480a0f8801d7cc6017c5c01090c5039411e7453a9773359eeb223b0875e8a2a8",
        ),
    ] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_model(model, a.path()).unwrap();
        write_model(model, b.path()).unwrap();
        for f in [
            "text_encoder/model.safetensors",
            "tokenizer/tokenizer.json",
            "text_encoder_2/model.safetensors",
            "tokenizer_2/tokenizer.json",
            "transformer/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
        ] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap(),
                "{f}"
            );
        }
        let AnyModel::Flux(m) = resolve_any(model.id()).unwrap() else {
            panic!("{} is not a FLUX model", model.id());
        };
        assert_eq!(m.weights_digest, pinned, "{}", model.id());
        // The transformer file holds diffusers' names (q, k, v apart).
        let names = candle_core::safetensors::load(
            a.path()
                .join("transformer/diffusion_pytorch_model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(names.contains_key("transformer_blocks.0.attn.to_q.weight"));
        assert!(names.contains_key("single_transformer_blocks.1.proj_mlp.weight"));
        assert!(names.contains_key("norm_out.linear.weight"));
        assert!(
            !names.keys().any(|k| k.contains("qkv")),
            "BFL names written"
        );
        assert_eq!(
            names.contains_key("time_text_embed.guidance_embedder.linear_1.weight"),
            model == TinyModel::FluxDev
        );
        // A copy of the folder is recognised by its pipeline class.
        let index = std::fs::read_to_string(a.path().join("model_index.json")).unwrap();
        assert!(index.contains("\"FluxPipeline\""), "{index}");
    }
}

#[test]
fn a_flux_call_records_its_table_and_is_reproducible() {
    let root = tempfile::tempdir().unwrap();
    for model in ["tiny-flux", "tiny-flux-dev"] {
        let mut p = load(model);
        let run = Run::create(Init::project(model).root(root.path().join(model))).unwrap();
        let mut r = request("a red cat", 5);
        r.prompt = vec!["a red cat".into(), "a blue dog".into()];
        r.num_images_per_prompt = Some(2);
        r.prompt_2 = Some("a photo of a cat".into());
        let first = run.record(&mut p, &r).unwrap();
        let again = run.record(&mut p, &r).unwrap();
        assert_eq!(first.images.len(), 4);
        assert_eq!(
            first.images, again.images,
            "{model}: the same request, other pixels"
        );
        // Row 3 (the second prompt's second image, seed 8) alone from its seed.
        let mut alone = request("a blue dog", 8);
        alone.prompt_2 = r.prompt_2.clone();
        let alone = run.record(&mut p, &alone).unwrap();
        assert_eq!(alone.images[0], first.images[3], "{model}: seed 8 alone");
        assert_ne!(first.images[0], first.images[1], "{model}: seeds differ");
        assert_ne!(first.images[0], first.images[2], "{model}: prompts differ");
        // The T5 prompt matters on its own.
        let mut other_t5 = request("a red cat", 5);
        other_t5.prompt_2 = Some("the blue dog".into());
        let o = run.record(&mut p, &other_t5).unwrap();
        let mut same_t5 = request("a red cat", 5);
        same_t5.prompt_2 = r.prompt_2.clone();
        let s = run.record(&mut p, &same_t5).unwrap();
        assert_eq!(s.images[0], first.images[0]);
        assert_ne!(
            o.images[0], s.images[0],
            "{model}: T5's prompt changed nothing"
        );
        if model == "tiny-flux-dev" {
            let mut g = same_t5.clone();
            g.guidance_scale = Some(7.0);
            let g = run.record(&mut p, &g).unwrap();
            assert_ne!(g.images[0], s.images[0], "guidance changed nothing");
        }
        run.finish().unwrap();

        let dir = only_run(&root.path().join(model));
        Schemas::load().check_dir(&dir);
        assert!(!verify_run(&dir).damaged());
        let v = RunDir::open(&dir).unwrap().view();
        let pipe = &v.pipelines[&1];
        assert_eq!(pipe.class, "FluxPipeline");
        assert_eq!(pipe.scheduler["class"], "FlowMatchEulerDiscreteScheduler");
        assert_eq!(
            pipe.scheduler["use_dynamic_shifting"],
            model == "tiny-flux-dev"
        );
        for c in ["text_encoder", "text_encoder_2", "transformer", "vae"] {
            assert!(
                pipe.components[c]["weights"]["sha256"].as_str().is_some(),
                "{c}: {}",
                pipe.components[c]
            );
        }
        assert_eq!(pipe.components["text_encoder_2"]["class"], "T5EncoderModel");
        assert_eq!(pipe.components["vae"]["shift_factor"], 0.1159);
        let call = &v.calls[&1];
        assert_eq!(
            call.started.columns,
            [
                "Prompt",
                "Negative-Prompt",
                "Prompt-2",
                "Negative-Prompt-2",
                "Generated-Image",
                "Seed"
            ]
        );
        let params = &call.started.params;
        assert_eq!(params["max_sequence_length"], 64);
        assert_eq!(params["width"], 64);
        assert_eq!(
            params["num_inference_steps"],
            if model == "tiny-flux" { 4 } else { 6 }
        );
        // Schnell has no guidance input: nothing recorded for it; dev's
        // default and the shift it used at this size are.
        assert_eq!(
            params.get("guidance_scale").is_some(),
            model == "tiny-flux-dev"
        );
        assert_eq!(params.get("mu").is_some(), model == "tiny-flux-dev");
        let seeds: Vec<u64> = call
            .rows
            .iter()
            .map(|r| {
                r.cells
                    .iter()
                    .find_map(|c| match c {
                        Cell::Number { column, value } if column == "Seed" => value.as_u64(),
                        _ => None,
                    })
                    .unwrap()
            })
            .collect();
        assert_eq!(seeds, [5, 6, 7, 8]);

        // Replay regenerates every row of every call from the record, byte for byte.
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
                "{model} call {c}: {out}"
            );
        }
    }
}

#[test]
fn flux_image_to_image_records_its_input_and_replays() {
    let root = tempfile::tempdir().unwrap();
    let mut p = load("tiny-flux");
    let run = Run::create(Init::project("flux-i2i").root(root.path())).unwrap();
    let src = Arc::new(difflog::bench::synthetic_image(3, 72));
    let mut r = request("a red door", 2);
    r.init = Some(InitImage::Image(Arc::clone(&src)));
    r.strength = Some(0.5);
    let out = run.record(&mut p, &r).unwrap();
    // 72 px rounded down to FLUX's multiple of 16.
    assert_eq!(out.images[0].dimensions(), (64, 64));
    let plain = run.record(&mut p, &request("a red door", 2)).unwrap();
    assert_ne!(
        out.images[0], plain.images[0],
        "the input image changed nothing"
    );
    let mut other = r.clone();
    other.init = Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
        9, 80,
    ))));
    let other = run.record(&mut p, &other).unwrap();
    assert_ne!(out.images[0], other.images[0], "another input, same pixels");
    run.finish().unwrap();

    let dir = only_run(root.path());
    let v = RunDir::open(&dir).unwrap().view();
    let call = &v.calls[&1];
    assert!(call.started.columns.iter().any(|c| c == "Input-Image"));
    assert_eq!(call.started.params["strength"], 0.5);
    assert_eq!(
        call.started.params["image"],
        serde_json::json!({"width": 72, "height": 72})
    );
    let o = cli(&["replay", dir.to_str().unwrap(), "--call", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["rows"][0]["identical"], true, "{out}");
}

#[test]
fn a_flux_folder_with_sharded_weights_loads_like_the_single_files() {
    test_cache();
    let dir = tempfile::tempdir().unwrap();
    write_model(TinyModel::Flux, dir.path()).unwrap();
    // Make it look downloaded: no difflog marker, the transformer in two
    // shards with an index, as the real repos ship it.
    let index_path = dir.path().join("model_index.json");
    std::fs::write(&index_path, r#"{"_class_name": "FluxPipeline"}"#).unwrap();
    std::fs::write(
        dir.path().join("transformer/config.json"),
        r#"{"guidance_embeds": false}"#,
    )
    .unwrap();
    let single = dir
        .path()
        .join("transformer/diffusion_pytorch_model.safetensors");
    let all = candle_core::safetensors::load(&single, &candle_core::Device::Cpu).unwrap();
    let (mut a, mut b) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut map = serde_json::Map::new();
    for (i, (k, t)) in all.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "diffusion_pytorch_model-00001-of-00002.safetensors"
        } else {
            "diffusion_pytorch_model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), shard.into());
        if i % 2 == 0 {
            a.insert(k, t)
        } else {
            b.insert(k, t)
        };
    }
    let t = dir.path().join("transformer");
    candle_core::safetensors::save(
        &a,
        t.join("diffusion_pytorch_model-00001-of-00002.safetensors"),
    )
    .unwrap();
    candle_core::safetensors::save(
        &b,
        t.join("diffusion_pytorch_model-00002-of-00002.safetensors"),
    )
    .unwrap();
    std::fs::remove_file(&single).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        t.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    // The real schnell architecture is what a downloaded folder means; the
    // tiny files do not fit it, and the error says which tensor.
    let spec = dir.path().to_str().unwrap();
    let AnyModel::Flux(m) = resolve_any(spec).unwrap() else {
        panic!("not detected as FLUX");
    };
    assert_eq!(m.paths.transformer.len(), 2);
    assert_eq!(m.files["transformer"].as_array().unwrap().len(), 2);
    assert_eq!(m.config.max_sequence_length, 256, "schnell detected");
    match Generator::load(spec, "cpu") {
        Err(e) => assert!(e.to_string().contains("shape mismatch"), "{e}"),
        Ok(_) => panic!("tiny files loaded as the real FLUX.1 schnell"),
    }
    // With the marker back, the same shards load and generate what the
    // single file did.
    std::fs::write(
        &index_path,
        r#"{"_class_name": "FluxPipeline", "_difflog_tiny_model": "tiny-flux"}"#,
    )
    .unwrap();
    let mut sharded = Generator::load(spec, "cpu").unwrap();
    let mut single = load("tiny-flux");
    let mut ctx = difflog::pipeline::CallContext::detached();
    let r = request("a red cat", 1);
    let x = sharded.run(&r, &mut ctx).unwrap();
    let y = single.run(&r, &mut ctx).unwrap();
    assert_eq!(x.images, y.images);

    // A shard the index names that is not there is listed, with its path.
    std::fs::remove_file(t.join("diffusion_pytorch_model-00002-of-00002.safetensors")).unwrap();
    let e = match resolve_any(spec) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a missing shard was not noticed"),
    };
    assert!(
        e.contains("transformer/diffusion_pytorch_model-00002-of-00002.safetensors"),
        "{e}"
    );
    // An index pointing out of its folder is refused.
    let bad = serde_json::json!({"weight_map": {"x": "../../etc/passwd"}});
    std::fs::write(
        t.join("diffusion_pytorch_model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let e = match resolve_any(spec) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an index leaving its folder was accepted"),
    };
    assert!(
        e.contains("not a .safetensors file name in this folder"),
        "{e}"
    );
}

#[test]
fn bad_flux_requests_are_refused_before_a_run_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = load("tiny-flux");
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
        "width 72: tiny-flux needs a positive multiple of 16, at most 4096",
    );
    let mut r = request("x", 1);
    r.guidance_scale = Some(3.5);
    fails(&mut p, &r, "it has no guidance input");
    let mut r = request("x", 1);
    r.negative_prompt = Some("blurry".into());
    fails(&mut p, &r, "takes no negative prompt");
    let mut r = request("x", 1);
    r.prompt_2 = Some("a ".repeat(80));
    fails(&mut p, &r, "prompt is too long for T5");
    let mut r = request("x", 1);
    r.max_sequence_length = Some(513);
    fails(&mut p, &r, "max_sequence_length = 513: T5 takes 1 to 512");
    let mut r = request("x", 1);
    r.max_sequence_length = Some(3);
    r.prompt_2 = Some("a red circle".into());
    fails(&mut p, &r, "at most 3 (max_sequence_length");
    let mut r = request("x", 1);
    r.skip_layer_guidance = Some(Some(difflog::pipelines::SkipLayerGuidance {
        layers: vec![0],
        scale: 2.8,
        start: 0.0,
        stop: 0.5,
    }));
    fails(&mut p, &r, "skip-layer guidance is SD3's");
    let mut sd = load("tiny");
    let mut r = request("x", 1);
    r.max_sequence_length = Some(64);
    fails(&mut sd, &r, "max_sequence_length is T5's");
    let mut r = request("x", 1);
    r.init = Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
        1, 64,
    ))));
    r.strength = Some(0.1);
    fails(&mut p, &r, "runs no step");
    let mut r = request("x", 1);
    r.init = Some(InitImage::Image(Arc::new(difflog::bench::synthetic_image(
        1, 64,
    ))));
    r.mask = Some(Arc::new(difflog::bench::synthetic_image(2, 64)));
    fails(&mut p, &r, "FLUX.1 inpainting is not supported");
    // A prompt too long for CLIP is cut (T5 reads all of it), as diffusers does.
    let long = "a cat ".repeat(30);
    assert!(p.prepare(&request(&long, 1)).is_ok());
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    assert!(RunDir::open(&dir).unwrap().view().calls.is_empty());

    // The command line: an unknown variant, a size, a scheduler, guidance on schnell.
    let runs = tmp.path().join("cli-runs");
    let runs_s = runs.to_str().unwrap();
    for (args, want) in [
        (vec!["--model", "flux-turbo"], "flux-turbo: unknown model"),
        (
            vec!["--model", "tiny-flux", "--width", "40"],
            "multiple of 16",
        ),
        (
            vec!["--model", "tiny-flux", "--scheduler", "ddim"],
            "--scheduler applies to the UNet models",
        ),
        (
            vec!["--model", "tiny-flux", "--guidance-scale", "2"],
            "no guidance input",
        ),
        (vec!["--model", "tiny-flux", "--refiner"], "has no refiner"),
    ] {
        let mut all = vec!["generate", "--prompt", "x", "--runs", runs_s];
        all.extend(args);
        let o = cli(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{want}: {err}");
        assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
    }
    // A FLUX preset whose files are not cached lists what to download.
    let hub = tmp.path().join("hub");
    let o = Command::new(difflog_bin())
        .args([
            "generate",
            "--prompt",
            "x",
            "--runs",
            runs_s,
            "--model",
            "flux-schnell",
        ])
        .env("HF_HOME", &hub)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    for want in [
        "black-forest-labs/FLUX.1-schnell",
        "transformer/diffusion_pytorch_model.safetensors (or transformer/diffusion_pytorch_model.safetensors.index.json and the shards it lists)",
        "--include 'transformer/diffusion_pytorch_model*'",
        "tokenizer_2/tokenizer.json",
        "openai/clip-vit-base-patch32",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// A call's T5 length (`max_sequence_length`) is the one it runs with, is
/// recorded, and replays.
#[test]
fn a_calls_t5_length_is_used_recorded_and_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = load("tiny-flux");
    let run = Run::create(Init::project("t5").root(tmp.path())).unwrap();
    let mut short = request("a red circle", 3);
    short.max_sequence_length = Some(32);
    let a = run.record(&mut p, &short).unwrap();
    let b = run.record(&mut p, &request("a red circle", 3)).unwrap();
    assert_ne!(a.images, b.images, "T5's padding changes the image");
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    let v = RunDir::open(&dir).unwrap().view();
    assert_eq!(v.calls[&1].started.params["max_sequence_length"], 32);
    assert_eq!(v.calls[&2].started.params["max_sequence_length"], 64);
    for call in [1, 2] {
        let rows = difflog::replay::replay(&dir, call, None, "cpu").unwrap();
        assert!(rows.iter().all(|r| r.identical), "call {call}");
    }
}
