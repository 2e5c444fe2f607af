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
use crate::pipelines::load::weights::ResolvedFlux;
use crate::pipelines::parts::describe::{self, Files, Identity};
use crate::pipelines::parts::flow_match;
use crate::pipelines::parts::latent_encoder::LatentEncoder;
use crate::pipelines::parts::noise::Noise;
use crate::pipelines::parts::prompt::{ClipTokens, T5Tokens};
use crate::pipelines::request::{parse_device, InitImage, Output, Request};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::flux::sampling::{unpack, State};
use candle_transformers::models::flux::WithForward;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// A loaded FLUX.1 pipeline.
pub struct FluxPipeline {
    model: ResolvedFlux,
    modules: FluxModules,
    clip_tokens: ClipTokens,
    t5_tokens: T5Tokens,
    latent_encoder: Option<LatentEncoder>,
    device: Device,
    dtype: DType,
    device_name: String,
}

fn err(msg: impl Into<String>) -> PipelineError {
    msg.into().into()
}

impl FluxPipeline {
    /// Loads a resolved FLUX model onto `device` (`cpu`, `cuda:N`).
    pub fn load(model: ResolvedFlux, device_name: &str) -> Result<FluxPipeline, PipelineError> {
        let device = parse_device(device_name)?;
        // FLUX is trained in bf16: GPUs run it so; the CPU (no bf16 matmul
        // in candle) and the tiny models (reproducibility) use f32.
        let dtype = if device.is_cpu() || model.model_id.starts_with("tiny") {
            DType::F32
        } else {
            DType::BF16
        };
        let modules = FluxModules::load(&model.config, &model.paths, dtype, &device)
            .map_err(|e| err(format!("loading model {}: {e}", model.model_id)))?;
        let cfg = &model.config;
        let clip_tokens = ClipTokens::load(
            &model.paths.clip.1,
            &cfg.clip.pad_token(),
            cfg.clip.max_tokens(),
        )?;
        let t5_tokens = T5Tokens::load(&model.paths.t5.1, cfg.max_sequence_length)?;
        Ok(FluxPipeline {
            model,
            modules,
            clip_tokens,
            t5_tokens,
            latent_encoder: None,
            device,
            dtype,
            device_name: device_name.to_string(),
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &FluxConfig {
        &self.model.config
    }

    /// T5 hidden states (1, L, d) of `t5_text` and CLIP's pooled output
    /// (1, d) of `clip_text`.
    fn embed(&self, clip_text: &str, t5_text: &str) -> Result<(Tensor, Tensor), PipelineError> {
        let (ids, eos) = self.clip_tokens.ids(clip_text)?;
        let t = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let hidden = self.modules.clip.encode(&t)?;
        let pooled = hidden.narrow(1, eos, 1)?.squeeze(1)?.to_dtype(self.dtype)?;
        let ids = self.t5_tokens.ids(t5_text)?;
        let t = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let t5 = self.modules.t5.encode(&t, self.dtype)?;
        Ok((t5, pooled))
    }

    fn size(&self, r: &Request) -> (usize, usize) {
        r.size(self.model.config.default_size, 16)
    }

    /// The largest attention matrix of a call (the transformer's joint
    /// attention over text and image tokens, the VAE's at latent
    /// resolution), in bytes, scores and softmax counted.
    fn attention_bytes(&self, w: usize, h: usize) -> u128 {
        let cfg = &self.model.config;
        let elem = self.dtype.size_in_bytes() as u128;
        let tokens = ((w / 16) * (h / 16) + cfg.max_sequence_length) as u128;
        let joint = cfg.transformer.num_heads as u128 * tokens.pow(2) * elem;
        let vae = ((w / 8) * (h / 8)) as u128;
        2 * joint.max(vae.pow(2) * elem)
    }

    fn image_count(&self, r: &Request) -> usize {
        r.prompt.len() * r.num_images_per_prompt.unwrap_or(1)
    }

    fn latent_encoder(&mut self) -> Result<&LatentEncoder, PipelineError> {
        let (files, cfg) = (&self.model.paths.vae, &self.model.config.vae);
        let slot = &mut self.latent_encoder;
        Ok(LatentEncoder::cached(
            slot,
            files,
            cfg,
            self.dtype,
            &self.device,
        )?)
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
        components.insert(
            "transformer".into(),
            files.attach(
                json!({"class": "FluxTransformer2DModel", "config": format!("{:?}", cfg.transformer),
                       "guidance_embeds": cfg.takes_guidance()}),
                "transformer",
                None,
            ),
        );
        components.insert(
            "vae".into(),
            files.vae(&cfg.vae, cfg.vae_scale, cfg.vae_shift),
        );
        let id = Identity {
            class: cfg.class(),
            model_id: &self.model.model_id,
            revision: self.model.revision.as_deref(),
            weights_digest: &self.model.weights_digest,
            dtype: self.dtype,
            device: &self.device_name,
        };
        describe::info(id, components, &cfg.sampler)
    }

    fn prepare(&self, r: &Request) -> Result<CallSpec, PipelineError> {
        let cfg = &self.model.config;
        let id = &self.model.model_id;
        let per = convert::check_counts(r.prompt.len(), r.num_images_per_prompt).map_err(err)?;
        convert::no_third_prompt(r, id).map_err(err)?;
        if r.negative_prompt.is_some() || r.negative_prompt_2.is_some() {
            return Err(err(format!(
                "{id}: FLUX.1 takes no negative prompt (it has no classifier-free guidance)"
            )));
        }
        let (w, h) = self.size(r);
        let limits = FlowLimits {
            family: "FLUX.1",
            model: id,
            max_side: 4096,
            why_max: "",
        };
        convert::check_flow_request(r, (w, h), &limits).map_err(err)?;
        convert::check_memory(&self.device, self.attention_bytes(w, h), w, h).map_err(err)?;
        let steps = r.steps.unwrap_or(cfg.default_steps);
        convert::check_steps(steps, cfg.sampler.train_timesteps).map_err(err)?;
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
        let strength = r.strength.unwrap_or(cfg.default_strength);
        if r.init.is_some() {
            flow_match::check_strength(steps, strength).map_err(err)?;
        }
        for p in &r.prompt {
            self.clip_tokens.ids(p)?;
            self.t5_tokens.ids(r.prompt_2.as_deref().unwrap_or(p))?;
        }
        let mut params = Map::new();
        params.insert("prompt".into(), json!(r.prompt));
        params.insert("prompt_2".into(), json!(r.prompt_2));
        params.insert("num_images_per_prompt".into(), json!(per));
        params.insert("num_inference_steps".into(), json!(steps));
        if let Some(g) = guidance {
            params.insert("guidance_scale".into(), json!(g));
        }
        params.insert("width".into(), json!(w));
        params.insert("height".into(), json!(h));
        params.insert("seed".into(), json!(r.seed));
        params.insert("max_sequence_length".into(), json!(cfg.max_sequence_length));
        params.insert("scheduler".into(), json!("flow-match-euler"));
        let tokens = (w / 16) * (h / 16);
        if let Some(mu) = cfg.sampler.mu(tokens) {
            params.insert("mu".into(), json!(mu));
        }
        if let Some(InitImage::Image(img)) = &r.init {
            params.insert(
                "image".into(),
                json!({"width": img.width(), "height": img.height()}),
            );
            params.insert("strength".into(), json!(strength));
        }
        params.insert("output_type".into(), Value::from("pil"));
        let n = self.image_count(r);
        Ok(CallSpec {
            params,
            seeds: (0..n as u64).map(|i| r.seed.wrapping_add(i)).collect(),
            second_prompts: true,
            third_prompts: false,
            input_image: r.init.is_some(),
            mask_image: false,
        })
    }

    fn run(&mut self, r: &Request, ctx: &mut CallContext<'_>) -> Result<Output, PipelineError> {
        let cfg = self.model.config.clone();
        let (w, h) = self.size(r);
        let steps = r.steps.unwrap_or(cfg.default_steps);
        let guidance = cfg
            .takes_guidance()
            .then(|| r.guidance_scale.unwrap_or(cfg.default_guidance));
        let strength = r.strength.unwrap_or(cfg.default_strength);
        let (lh, lw) = (h / 8, w / 8);

        ctx.phase("text_encoding");
        let mut embeddings = Vec::new();
        for p in &r.prompt {
            embeddings.push(self.embed(p, r.prompt_2.as_deref().unwrap_or(p))?);
        }
        let init = convert::input_image(r, w, h, &self.device, self.dtype)?;
        let all_sigmas = cfg.sampler.sigmas(steps, (w / 16) * (h / 16));
        let n = self.image_count(r);
        let per = r.num_images_per_prompt.unwrap_or(1).max(1);
        let mut out = Output {
            images: Vec::with_capacity(n),
            latents: Vec::new(),
        };
        for i in 0..n {
            let seed = r.seed.wrapping_add(i as u64);
            let mut noise = Noise::new(seed);
            let (mut sigmas, mut latents) = (all_sigmas.as_slice(), None);
            if let Some((_, tensor)) = &init {
                ctx.phase("image_encoding");
                let start = flow_match::start_step(steps, strength);
                let x0 = self.latent_encoder()?.sample(tensor, &mut noise)?;
                let x0 = ((x0 - cfg.vae_shift)? * cfg.vae_scale)?;
                let sigma = all_sigmas[start];
                let eps = noise
                    .normal(&[1, 16, lh, lw], &self.device)?
                    .to_dtype(self.dtype)?;
                latents = Some(flow_match::noised(&x0, &eps, sigma)?);
                sigmas = &all_sigmas[start..];
            }
            let latents = match latents {
                Some(l) => l,
                None => noise
                    .normal(&[1, 16, lh, lw], &self.device)?
                    .to_dtype(self.dtype)?,
            };
            ctx.phase("denoising");
            let (t5, pooled) = &embeddings[i / per];
            let state = State::new(t5, pooled, &latents)?;
            let g = match guidance {
                Some(g) => Some(Tensor::full(g as f32, 1, &self.device)?.to_dtype(self.dtype)?),
                None => None,
            };
            let mut img = state.img.clone();
            for pair in sigmas.windows(2) {
                let (s, next) = (pair[0], pair[1]);
                let t = Tensor::full(s as f32, 1, &self.device)?.to_dtype(self.dtype)?;
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
            }
            ctx.phase("decoding");
            let latents = unpack(&img, h, w)?;
            let decoded = self
                .modules
                .vae
                .decode(&((latents / cfg.vae_scale)? + cfg.vae_shift)?)?;
            let image = convert::tensor_image(&decoded)?;
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
