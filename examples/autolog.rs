//! The seed's example, in Rust: two lines turn on recording, then every
//! pipeline call is logged — prompts, negative prompts, images, seeds, the
//! scheduler, timings.
//!
//! `cargo run --release --example autolog` (tiny built-in model, no download;
//! pass a model name such as `sd21` as the first argument to use real weights
//! from the Hugging Face cache).

use difflog::pipelines::{resolve, Request, StableDiffusion};
use difflog::{autolog, AutologCall, Init};

fn main() -> Result<(), difflog::PipelineError> {
    // Call autolog before calling the pipeline.
    let _run = autolog(Init::project("diffusers_logging"))?;

    // Initialize the diffusion pipeline.
    let model = std::env::args().nth(1).unwrap_or_else(|| "tiny".into());
    let mut pipeline = StableDiffusion::load(resolve(&model)?, "cpu")?;

    // Define the prompts, negative prompts and seed.
    let request = Request {
        prompt: vec![
            "a photograph of an astronaut riding a horse".into(),
            "a photograph of a dragon".into(),
        ],
        negative_prompt: Some("ugly, deformed".into()),
        num_images_per_prompt: Some(2),
        seed: 10,
        ..Request::default()
    };

    // Call the pipeline to generate the images: recorded into ./runs/<run-id>/.
    let output = pipeline.call(&request)?;
    println!("generated {} images", output.images.len());
    if let Some(dir) = _run.run().dir() {
        println!("recorded into {} (difflog show {0})", dir.display());
    }
    Ok(())
}
