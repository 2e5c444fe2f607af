//! What the flow-matching pipelines (FLUX.1, SD3 / 3.5) do alike, written
//! once: where they run, the checks every request passes before a call,
//! the params every call records, each image's starting latents (from its
//! seed, or from an input image part-way down the schedule) and decoding.
//! What differs — text encoders, guidance, the transformer's inputs — stays
//! in each family's file.

use crate::pipeline::{CallContext, CallSpec, PipelineError, PipelineInfo};
use crate::pipelines::convert::{self, FlowLimits};
use crate::pipelines::flow::flux_model::FluxConfig;
use crate::pipelines::flow::sd3_model::Sd3Config;
use crate::pipelines::parts::describe::{self, Files, Identity};
use crate::pipelines::parts::flow_match::{self, FlowMatch};
use crate::pipelines::parts::noise::Noise;
use crate::pipelines::parts::placement::Placement;
use crate::pipelines::parts::trace;
use crate::pipelines::request::{InitImage, Request};
use candle_core::{Device, Tensor};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use image::RgbImage;
use serde_json::{json, Map, Value};
use std::path::PathBuf;

pub(crate) use crate::pipelines::request::err;

/// The numbers both families' configs hold under the same names.
pub(crate) struct Common<'a> {
    pub vae: &'a AutoEncoderKLConfig,
    pub vae_scale: f64,
    pub vae_shift: f64,
    pub default_size: usize,
    pub default_steps: usize,
    pub default_strength: f64,
    pub sampler: &'a FlowMatch,
    pub max_sequence_length: usize,
}

macro_rules! common_of {
    ($config:ty) => {
        impl<'a> From<&'a $config> for Common<'a> {
            fn from(c: &'a $config) -> Common<'a> {
                Common {
                    vae: &c.vae,
                    vae_scale: c.vae_scale,
                    vae_shift: c.vae_shift,
                    default_size: c.default_size,
                    default_steps: c.default_steps,
                    default_strength: c.default_strength,
                    sampler: &c.sampler,
                    max_sequence_length: c.max_sequence_length,
                }
            }
        }
    };
}
common_of!(FluxConfig);
common_of!(Sd3Config);

/// A flow pipeline's description: its text encoders (`components`), its
/// transformer (`transformer`: class and config) and VAE added, under the
/// identity `id`.
pub(crate) fn describe(
    mut components: Map<String, Value>,
    files: &Files<'_>,
    transformer: Value,
    c: &Common<'_>,
    id: Identity<'_>,
) -> PipelineInfo {
    components.insert(
        "transformer".into(),
        files.attach(transformer, "transformer", None),
    );
    components.insert("vae".into(), files.vae(c.vae, c.vae_scale, c.vae_shift));
    describe::info(id, components, c.sampler)
}

/// What the checks settled: the size and the steps.
pub(crate) struct Checked {
    pub size: (usize, usize),
    pub steps: usize,
}

/// T5's tokens per prompt in a call: the request's, else the model's.
pub(crate) fn t5_len(c: &Common<'_>, r: &Request) -> usize {
    r.max_sequence_length.unwrap_or(c.max_sequence_length)
}

/// The output size: the asked one, else the input's (a multiple of 16),
/// else the model's default.
pub(crate) fn size(c: &Common<'_>, r: &Request) -> (usize, usize) {
    r.size(c.default_size, 16)
}

/// The checks every flow-matching request passes after the family's own
/// on its prompts: size within `limits`, memory for the call's largest
/// attention (`attention(w, h)` bytes), steps.
pub(crate) fn check(
    c: &Common<'_>,
    r: &Request,
    limits: &FlowLimits<'_>,
    device: &Device,
    attention: impl Fn(usize, usize) -> u128,
) -> Result<Checked, PipelineError> {
    let (w, h) = size(c, r);
    if let Some(n) = r.max_sequence_length {
        if !(1..=512).contains(&n) {
            return Err(err(format!(
                "max_sequence_length = {n}: T5 takes 1 to 512 tokens a prompt"
            )));
        }
    }
    convert::check_flow_request(r, (w, h), limits).map_err(err)?;
    convert::check_memory(device, attention(w, h), w, h).map_err(err)?;
    let steps = r.steps.unwrap_or(c.default_steps);
    convert::check_steps(steps, c.sampler.train_timesteps).map_err(err)?;
    Ok(Checked {
        size: (w, h),
        steps,
    })
}

/// The strength of an image-to-image call, checked against its steps
/// (the model's default strength for text-to-image, unchecked).
pub(crate) fn strength(c: &Common<'_>, r: &Request, steps: usize) -> Result<f64, PipelineError> {
    let strength = r.strength.unwrap_or(c.default_strength);
    if r.init.is_some() {
        flow_match::check_strength(steps, strength).map_err(err)?;
    }
    Ok(strength)
}

/// Records the size, seed, sequence length and sampler of a call.
pub(crate) fn size_params(
    params: &mut Map<String, Value>,
    c: &Common<'_>,
    r: &Request,
    (w, h): (usize, usize),
) {
    params.insert("width".into(), json!(w));
    params.insert("height".into(), json!(h));
    params.insert("seed".into(), json!(r.seed));
    r.rng.record(params);
    params.insert("max_sequence_length".into(), json!(t5_len(c, r)));
    params.insert("scheduler".into(), json!("flow-match-euler"));
}

/// The call's spec: its params closed with the input image and strength
/// (image-to-image) and the output type; one seed per image from the
/// request's.
pub(crate) fn spec(
    mut params: Map<String, Value>,
    r: &Request,
    strength: f64,
    third_prompts: bool,
) -> CallSpec {
    if let Some(InitImage::Image(img)) = &r.init {
        params.insert(
            "image".into(),
            json!({"width": img.width(), "height": img.height()}),
        );
        params.insert("strength".into(), json!(strength));
    }
    params.insert("output_type".into(), Value::from("pil"));
    let n = r.image_count();
    CallSpec {
        params,
        seeds: (0..n as u64).map(|i| r.seed.wrapping_add(i)).collect(),
        second_prompts: true,
        third_prompts,
        input_image: r.init.is_some(),
        mask_image: false,
        video: false,
    }
}

/// Where one image's sampling starts: noise from its seed; with an input
/// image (its tensor in `init`), the image's latents (sampled with the same
/// noise first) noised to the sigma where `strength` starts. Returns the
/// latents and the index of that sigma.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    place: &mut Placement,
    c: &Common<'_>,
    vae_files: &[PathBuf],
    init: Option<&Tensor>,
    noise: &mut Noise,
    sigmas: &[f64],
    (steps, strength): (usize, f64),
    (w, h): (usize, usize),
    ctx: &mut CallContext<'_>,
) -> Result<(Tensor, usize), PipelineError> {
    let mut from = None;
    if let Some(tensor) = init {
        ctx.phase("image_encoding");
        let first = flow_match::start_step(steps, strength);
        let x0 = place
            .latent_encoder(vae_files, c.vae)?
            .sample(tensor, noise)?;
        from = Some((((x0 - c.vae_shift)? * c.vae_scale)?, first));
    }
    let eps = noise
        .normal(&[1, c.vae.latent_channels, h / 8, w / 8], &place.device)?
        .to_dtype(place.dtype)?;
    Ok(match from {
        Some((x0, first)) => (flow_match::noised(&x0, &eps, sigmas[first])?, first),
        None => (eps, 0),
    })
}

/// Shows the schedule as diffusers' `scheduler.timesteps` holds it: σ ×
/// 1000 for every step (the final σ = 0 is no step).
pub(crate) fn trace_timesteps(ctx: &mut CallContext<'_>, sigmas: &[f64]) {
    let steps = &sigmas[..sigmas.len().saturating_sub(1)];
    trace::timesteps(ctx, steps.iter().map(|s| s * 1000.0));
}

/// Final latents (1, C, h/8, w/8) decoded to an image.
pub(crate) fn decode(
    vae: &AutoEncoderKL,
    c: &Common<'_>,
    latents: &Tensor,
) -> Result<RgbImage, PipelineError> {
    let decoded = vae.decode(&((latents / c.vae_scale)? + c.vae_shift)?)?;
    Ok(convert::tensor_image(&decoded)?)
}
