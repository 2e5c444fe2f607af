//! The two-line start with a pipeline of your own.
//!
//! Any type that implements `difflog::Pipeline` is recorded: there is no list
//! of supported classes. Run with
//! `cargo run --example custom_pipeline`, then `cargo run --bin difflog -- ls`.

use difflog::{
    AutologCall, CallContext, CallSpec, ImageRow, Pipeline, PipelineError, PipelineInfo,
};
use image::{Rgb, RgbImage};
use serde_json::{json, Map};

/// A toy "pipeline" that paints a gradient whose colour depends on the seed.
struct Gradient;

/// The arguments of one call.
struct Request {
    prompt: Vec<String>,
    negative_prompt: Option<String>,
    seed: u64,
}

impl Pipeline for Gradient {
    type Request = Request;
    type Output = Vec<RgbImage>;

    fn describe(&self) -> PipelineInfo {
        PipelineInfo {
            class: "GradientPipeline".into(),
            model_id: "examples/gradient".into(),
            revision: None,
            weights_digest: None,
            dtype: "u8".into(),
            device: "cpu".into(),
            components: Map::new(),
            scheduler: json!({"name": "none"}),
        }
    }

    fn prepare(&self, r: &Request) -> Result<CallSpec, PipelineError> {
        if r.prompt.is_empty() {
            return Err("give at least one prompt".into());
        }
        let params = json!({
            "prompt": r.prompt,
            "negative_prompt": r.negative_prompt,
            "seed": r.seed,
            "width": 64,
            "height": 64,
        });
        Ok(CallSpec {
            params: params.as_object().cloned().unwrap_or_default(),
            seeds: (0..r.prompt.len() as u64).map(|i| r.seed + i).collect(),
            ..CallSpec::default()
        })
    }

    fn run(
        &mut self,
        r: &Request,
        ctx: &mut CallContext<'_>,
    ) -> Result<Vec<RgbImage>, PipelineError> {
        ctx.phase("denoising");
        let mut out = Vec::new();
        for (i, prompt) in r.prompt.iter().enumerate() {
            let seed = r.seed + i as u64;
            let img = RgbImage::from_fn(64, 64, |x, y| {
                Rgb([(x * 4) as u8, (y * 4) as u8, (seed * 40) as u8])
            });
            ctx.image(ImageRow {
                image: img.clone(),
                prompt: prompt.clone(),
                negative_prompt: r.negative_prompt.clone(),
                prompt_2: None,
                negative_prompt_2: None,
                prompt_3: None,
                negative_prompt_3: None,
                input_image: None,
                mask_image: None,
                seed,
            });
            out.push(img);
        }
        Ok(out)
    }
}

fn main() -> Result<(), PipelineError> {
    // The two lines: start recording; keep the guard alive while you generate.
    let run = difflog::autolog(difflog::Init::project("diffusers_logging"))?;

    let mut pipeline = Gradient;
    let images = pipeline.call(&Request {
        prompt: vec![
            "a photograph of an astronaut riding a horse".into(),
            "a photograph of a dragon".into(),
        ],
        negative_prompt: Some("ugly, deformed".into()),
        seed: 10,
    })?;
    println!("generated {} images", images.len());
    if let Some(dir) = run.run().dir() {
        println!("recorded into {}", dir.display());
    }
    run.finish()?; // optional: dropping the guard finishes the run too
    Ok(())
}
