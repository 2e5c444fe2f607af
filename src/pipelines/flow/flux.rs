//! FLUX.1 text-to-image and image-to-image on candle, recorded through the
//! [`Pipeline`] trait like the Stable Diffusion pipelines.
//!
//! CLIP-L's pooled output and T5's hidden states condition candle's FLUX
//! transformer; the flow-matching sampler runs from noise drawn from each
//! image's own seed ([`Noise`]), so a recorded seed reproduces its image
//! alone. FLUX has no classifier-free guidance: dev takes its guidance
//! value as a model input, schnell takes none (asking for one is refused).

use crate::pipeline::{CallContext, CallSpec, ImageRow, Pipeline, PipelineError, PipelineInfo};
use crate::pipelines::convert::{self, FlowLimits};
use crate::pipelines::flow::flux_model::{FluxConfig, FluxModules};
use crate::pipelines::flow::shared::{self, err, Common};
use crate::pipelines::load::weights::ResolvedFlux;
use crate::pipelines::parts::describe::Files;
use crate::pipelines::parts::noise::Noise;
use crate::pipelines::parts::placement::Placement;
use crate::pipelines::parts::prompt::{ClipTokens, T5Tokens};
use crate::pipelines::parts::trace;
use crate::pipelines::request::{Output, Request};
use candle_core::{DType, Tensor};
use candle_transformers::models::flux::sampling::{unpack, State};
use candle_transformers::models::flux::WithForward;
use serde_json::{json, Map};
use std::sync::Arc;

/// A loaded FLUX.1 pipeline.
pub struct FluxPipeline {
    model: ResolvedFlux,
    modules: FluxModules,
    clip_tokens: ClipTokens,
    t5_tokens: T5Tokens,
    place: Placement,
}

impl FluxPipeline {
    /// Loads a resolved FLUX model onto `device` (`cpu`, `cuda:N`).
    pub fn load(model: ResolvedFlux, device_name: &str) -> Result<FluxPipeline, PipelineError> {
        // FLUX is trained in bf16: GPUs run it so; the CPU (no bf16 matmul
        // in candle) and the tiny models (reproducibility) use f32.
        let tiny = model.model_id.starts_with("tiny");
        let place = Placement::new(device_name, |device| {
            if device.is_cpu() || tiny {
                DType::F32
            } else {
                DType::BF16
            }
        })?;
        let modules = FluxModules::load(&model.config, &model.paths, place.dtype, &place.device)
            .map_err(|e| err(format!("loading model {}: {e}", model.model_id)))?;
        let cfg = &model.config;
        let clip_tokens = ClipTokens::load(
            &model.paths.clip.1,
            &cfg.clip.pad_token(),
            cfg.clip.max_tokens(),
        )?;
        let t5_tokens = T5Tokens::load(&model.paths.t5.1)?;
        Ok(FluxPipeline {
            model,
            modules,
            clip_tokens,
            t5_tokens,
            place,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &FluxConfig {
        &self.model.config
    }

    /// T5 hidden states (1, `len`, d) of `t5_text` and CLIP's pooled
    /// output (1, d) of `clip_text`.
    fn embed(
        &self,
        clip_text: &str,
        (t5_text, len): (&str, usize),
    ) -> Result<(Tensor, Tensor), PipelineError> {
        let (ids, eos) = self.clip_tokens.ids(clip_text)?;
        let (device, dtype) = (&self.place.device, self.place.dtype);
        let t = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?;
        let hidden = self.modules.clip.encode(&t)?;
        let pooled = hidden.narrow(1, eos, 1)?.squeeze(1)?.to_dtype(dtype)?;
        let ids = self.t5_tokens.ids(t5_text, len)?;
        let t = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?;
        let t5 = self.modules.t5.encode(&t, dtype)?;
        Ok((t5, pooled))
    }

    /// The largest attention matrix of a call (the transformer's joint
    /// attention over text and image tokens, the VAE's at latent
    /// resolution), in bytes, scores and softmax counted.
    fn attention_bytes(&self, w: usize, h: usize, len: usize) -> u128 {
        let cfg = &self.model.config;
        let elem = self.place.dtype.size_in_bytes() as u128;
        let tokens = ((w / 16) * (h / 16) + len) as u128;
        let joint = cfg.transformer.num_heads as u128 * tokens.pow(2) * elem;
        let vae = ((w / 8) * (h / 8)) as u128;
        2 * joint.max(vae.pow(2) * elem)
    }
}

impl Pipeline for FluxPipeline {
    type Request = Request;
    type Output = Output;

    fn describe(&self) -> PipelineInfo {
        let cfg = &self.model.config;
        let files = Files(&self.model.files);
        let mut components = Map::new();
        components.insert(
            "text_encoder".into(),
            files.attach(
                json!({"class": cfg.clip.class_name(), "max_tokens": cfg.clip.max_tokens(), "output": "pooled"}),
                "text_encoder_0",
                Some("tokenizer_0"),
            ),
        );
        components.insert(
            "text_encoder_2".into(),
            files.attach(
                json!({"class": "T5EncoderModel", "max_sequence_length": cfg.max_sequence_length,
                       "config": format!("{:?}", cfg.t5)}),
                "text_encoder_1",
                Some("tokenizer_1"),
            ),
        );
        let transformer = json!({"class": "FluxTransformer2DModel", "config": format!("{:?}", cfg.transformer),
                       "guidance_embeds": cfg.takes_guidance()});
        let m = &self.model;
        let id = self.place.identity(
            cfg.class(),
            &m.model_id,
            m.revision.as_deref(),
            &m.weights_digest,
        );
        shared::describe(components, &files, transformer, &Common::from(cfg), id)
    }

    fn prepare(&self, r: &Request) -> Result<CallSpec, PipelineError> {
        let cfg = &self.model.config;
        let id = &self.model.model_id;
        let per = convert::check_counts(r.prompt.len(), r.num_images_per_prompt).map_err(err)?;
        convert::no_third_prompt(r, id).map_err(err)?;
        convert::no_skip_layer_guidance(r, id).map_err(err)?;
        if r.negative_prompt.is_some() || r.negative_prompt_2.is_some() {
            return Err(err(format!(
                "{id}: FLUX.1 takes no negative prompt (it has no classifier-free guidance)"
            )));
        }
        let limits = FlowLimits {
            family: "FLUX.1",
            model: id,
            max_side: 4096,
            why_max: "",
        };
        let c = Common::from(cfg);
        let checked = shared::check(&c, r, &limits, &self.place.device, |w, h| {
            self.attention_bytes(w, h, shared::t5_len(&c, r))
        })?;
        let (steps, (w, h)) = (checked.steps, checked.size);
        let guidance = match (r.guidance_scale, cfg.takes_guidance()) {
            (Some(_), false) => {
                return Err(err(format!(
                    "{id} is FLUX.1 schnell-shaped: it has no guidance input; leave --guidance out (FLUX.1 dev takes one)"
                )))
            }
            (g, true) => {
                let g = g.unwrap_or(cfg.default_guidance);
                convert::check_guidance(g).map_err(err)?;
                Some(g)
            }
            (None, false) => None,
        };
        let strength = shared::strength(&c, r, steps)?;
        for p in &r.prompt {
            self.clip_tokens.ids(p)?;
            self.t5_tokens
                .ids(r.prompt_2.as_deref().unwrap_or(p), shared::t5_len(&c, r))?;
        }
        let mut params = Map::new();
        params.insert("prompt".into(), json!(r.prompt));
        params.insert("prompt_2".into(), json!(r.prompt_2));
        params.insert("num_images_per_prompt".into(), json!(per));
        params.insert("num_inference_steps".into(), json!(steps));
        if let Some(g) = guidance {
            params.insert("guidance_scale".into(), json!(g));
        }
        shared::size_params(&mut params, &c, r, (w, h));
        let tokens = (w / 16) * (h / 16);
        if let Some(mu) = cfg.sampler.mu(tokens) {
            params.insert("mu".into(), json!(mu));
        }
        Ok(shared::spec(params, r, strength, false))
    }

    fn run(&mut self, r: &Request, ctx: &mut CallContext<'_>) -> Result<Output, PipelineError> {
        let cfg = self.model.config.clone();
        let c = Common::from(&cfg);
        let (w, h) = shared::size(&c, r);
        let steps = r.steps.unwrap_or(cfg.default_steps);
        let guidance = cfg
            .takes_guidance()
            .then(|| r.guidance_scale.unwrap_or(cfg.default_guidance));
        let strength = r.strength.unwrap_or(cfg.default_strength);

        ctx.phase("text_encoding");
        let mut embeddings = Vec::new();
        for p in &r.prompt {
            let t5 = (r.prompt_2.as_deref().unwrap_or(p), shared::t5_len(&c, r));
            embeddings.push(self.embed(p, t5)?);
        }
        let (device, dtype) = (self.place.device.clone(), self.place.dtype);
        let init = convert::input_image(r, w, h, &device, dtype)?;
        let all_sigmas = cfg.sampler.sigmas(steps, (w / 16) * (h / 16));
        shared::trace_timesteps(ctx, &all_sigmas);
        let n = r.image_count();
        let per = r.num_images_per_prompt.unwrap_or(1).max(1);
        let mut out = Output {
            images: Vec::with_capacity(n),
            latents: Vec::new(),
        };
        for i in 0..n {
            let seed = r.seed.wrapping_add(i as u64);
            let mut noise = Noise::of(&r.rng, seed)?;
            let (latents, first) = shared::start(
                &mut self.place,
                &c,
                &self.model.paths.vae,
                init.as_ref().map(|(_, t)| t),
                &mut noise,
                &all_sigmas,
                (steps, strength),
                (w, h),
                ctx,
            )?;
            let sigmas = &all_sigmas[first..];
            ctx.phase("denoising");
            let (t5, pooled) = &embeddings[i / per];
            let state = State::new(t5, pooled, &latents)?;
            let g = match guidance {
                Some(g) => Some(Tensor::full(g as f32, 1, &device)?.to_dtype(dtype)?),
                None => None,
            };
            let mut img = state.img.clone();
            trace::prompt_embeds(ctx, i, t5)?;
            for (step, pair) in sigmas.windows(2).enumerate() {
                let (s, next) = (pair[0], pair[1]);
                let t = Tensor::full(s as f32, 1, &device)?.to_dtype(dtype)?;
                let v = self.modules.transformer.forward(
                    &img,
                    &state.img_ids,
                    &state.txt,
                    &state.txt_ids,
                    &t,
                    &state.vec,
                    g.as_ref(),
                )?;
                img = (img + (v * (next - s))?)?;
                trace::step(ctx, i, step, &img)?;
            }
            ctx.phase("decoding");
            let image = shared::decode(&self.modules.vae, &c, &unpack(&img, h, w)?)?;
            let p = &r.prompt[i / per];
            ctx.image(ImageRow {
                image: image.clone(),
                prompt: p.clone(),
                negative_prompt: None,
                prompt_2: Some(r.prompt_2.clone().unwrap_or_else(|| p.clone())),
                negative_prompt_2: None,
                prompt_3: None,
                negative_prompt_3: None,
                input_image: init.as_ref().map(|(img, _)| Arc::clone(img)),
                mask_image: None,
                seed,
            });
            out.images.push(image);
        }
        ctx.end_phase();
        Ok(out)
    }
}
