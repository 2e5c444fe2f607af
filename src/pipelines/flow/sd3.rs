//! Stable Diffusion 3 / 3.5 text-to-image on candle, recorded through the
//! [`Pipeline`] trait.
//!
//! Three text encoders condition candle's MMDiT as diffusers'
//! `StableDiffusion3Pipeline` does: the penultimate hidden states of CLIP-L
//! and CLIP-G side by side, padded to T5's width and followed by T5's
//! tokens; the two CLIPs' projected pooled outputs as the vector input.
//! Classifier-free guidance as usual, and SD3.5 medium's skip-layer guidance
//! when the model uses it (recorded). Each image's noise comes from its own
//! seed ([`Noise`]), so a recorded seed reproduces its image alone.

use crate::pipeline::{CallContext, CallSpec, ImageRow, Pipeline, PipelineError, PipelineInfo};
use crate::pipelines::convert::{self, FlowLimits};
use crate::pipelines::flow::sd3_model::{Sd3Config, Sd3Modules, SkipLayerGuidance};
use crate::pipelines::flow::shared::{self, err, Common};
use crate::pipelines::load::weights::ResolvedSd3;
use crate::pipelines::parts::describe::Files;
use crate::pipelines::parts::noise::Noise;
use crate::pipelines::parts::placement::Placement;
use crate::pipelines::parts::prompt::{ClipTokens, T5Tokens};
use crate::pipelines::parts::trace;
use crate::pipelines::request::{Output, Request};
use candle_core::{DType, Tensor, D};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// A loaded SD3 / SD3.5 pipeline.
pub struct Sd3Pipeline {
    model: ResolvedSd3,
    modules: Sd3Modules,
    clip_tokens: [ClipTokens; 2],
    t5_tokens: T5Tokens,
    place: Placement,
}

/// The texts of one side of guidance (the prompt or the negative prompt)
/// for CLIP-L, CLIP-G and T5.
struct Texts<'a>(&'a str, &'a str, &'a str);

impl<'a> Texts<'a> {
    /// Prompt `p`'s texts: `prompt_2` and `prompt_3` default to it.
    fn prompt(r: &'a Request, p: &'a str) -> Texts<'a> {
        Texts(
            p,
            r.prompt_2.as_deref().unwrap_or(p),
            r.prompt_3.as_deref().unwrap_or(p),
        )
    }

    /// The negative texts: the second and third default to the negative
    /// prompt, which defaults to none ("").
    fn negative(r: &'a Request) -> Texts<'a> {
        let n = r.negative_prompt.as_deref().unwrap_or("");
        Texts(
            n,
            r.negative_prompt_2.as_deref().unwrap_or(n),
            r.negative_prompt_3.as_deref().unwrap_or(n),
        )
    }
}

impl Sd3Pipeline {
    /// Loads a resolved SD3 model onto `device` (`cpu`, `cuda:N`).
    pub fn load(model: ResolvedSd3, device_name: &str) -> Result<Sd3Pipeline, PipelineError> {
        // f32 on the CPU (as diffusers there), f16 on GPUs.
        let place = Placement::new(device_name, |device| {
            if device.is_cpu() {
                DType::F32
            } else {
                DType::F16
            }
        })?;
        let cfg = &model.config;
        let modules = Sd3Modules::load(cfg, &model.paths, place.dtype, &place.device)
            .map_err(|e| err(format!("loading model {}: {e}", model.model_id)))?;
        let text = &model.paths.text;
        let clip_tokens = [
            ClipTokens::load(&text[0].1, &cfg.clip_l.pad, cfg.clip_l.positions)?,
            ClipTokens::load(&text[1].1, &cfg.clip_g.pad, cfg.clip_g.positions)?,
        ];
        let t5_tokens = T5Tokens::load(&text[2].1)?;
        Ok(Sd3Pipeline {
            model,
            modules,
            clip_tokens,
            t5_tokens,
            place,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &Sd3Config {
        &self.model.config
    }

    /// The MMDiT's context (1, 77 + L, T5 width) and pooled vector (1, 2048
    /// for the real models) for one side of guidance.
    fn embed(&self, t: &Texts<'_>, len: usize) -> Result<(Tensor, Tensor), PipelineError> {
        let mut hidden = Vec::new();
        let mut pooled = Vec::new();
        for (i, text) in [t.0, t.1].into_iter().enumerate() {
            let (ids, eos) = self.clip_tokens[i].ids(text)?;
            let ids = Tensor::new(ids.as_slice(), &self.place.device)?.unsqueeze(0)?;
            let out = self.modules.clips[i].encode(&ids, eos)?;
            hidden.push(out.penultimate);
            pooled.push(out.pooled);
        }
        let clip = Tensor::cat(&hidden, D::Minus1)?;
        let ids = self.t5_tokens.ids(t.2, len)?;
        let ids = Tensor::new(ids.as_slice(), &self.place.device)?.unsqueeze(0)?;
        let t5 = self.modules.t5.encode(&ids, self.place.dtype)?;
        let (_, n, width) = clip.dims3()?;
        let t5_width = t5.dim(D::Minus1)?;
        if width > t5_width {
            return Err(err(format!(
                "the CLIP states ({width} wide) do not fit T5's width {t5_width}"
            )));
        }
        let pad = Tensor::zeros(
            (1, n, t5_width - width),
            self.place.dtype,
            &self.place.device,
        )?;
        let clip = Tensor::cat(&[clip, pad], D::Minus1)?;
        Ok((
            Tensor::cat(&[clip, t5], 1)?,
            Tensor::cat(&pooled, D::Minus1)?,
        ))
    }

    /// The largest attention of a call (the joint attention over text and
    /// image tokens, guided: two at once; the VAE's), in bytes.
    fn attention_bytes(&self, w: usize, h: usize, len: usize) -> u128 {
        let cfg = &self.model.config;
        let tokens = ((w / 16) * (h / 16) + 77 + len) as u128;
        let joint = 2 * cfg.mmdit.depth as u128 * tokens.pow(2) * 2;
        let vae = ((w / 8) * (h / 8)) as u128;
        2 * joint.max(vae.pow(2) * self.place.dtype.size_in_bytes() as u128)
    }

    /// The skip-layer guidance a request runs with: its own, else the
    /// model's default.
    fn guidance_of<'r>(&'r self, r: &'r Request) -> Option<&'r SkipLayerGuidance> {
        match &r.skip_layer_guidance {
            Some(asked) => asked.as_ref(),
            None => self.model.config.skip_layer_guidance.as_ref(),
        }
    }

    /// The blocks skip-layer guidance `slg` skips at step `i` of `steps`,
    /// if it applies (`active`: a guided text-to-image call; diffusers:
    /// strictly inside the start and stop fractions).
    fn skips_at(
        slg: Option<&SkipLayerGuidance>,
        i: usize,
        steps: usize,
        active: bool,
    ) -> Option<&[usize]> {
        let slg = slg?;
        let (i, n) = (i as f64, steps as f64);
        (active && i > n * slg.start && i < n * slg.stop).then_some(slg.layers.as_slice())
    }

    fn predict(
        &self,
        x: &Tensor,
        sigma: f64,
        pooled: &Tensor,
        context: &Tensor,
        skip: Option<&[usize]>,
    ) -> Result<Tensor, PipelineError> {
        let b = x.dim(0)?;
        // diffusers' timestep: σ × 1000 in float32.
        let t = Tensor::full((sigma * 1000.0) as f32, b, &self.place.device)?;
        Ok(self.modules.mmdit.forward(x, &t, pooled, context, skip)?)
    }
}

impl Pipeline for Sd3Pipeline {
    type Request = Request;
    type Output = Output;

    fn describe(&self) -> PipelineInfo {
        let cfg = &self.model.config;
        let files = Files(&self.model.files);
        let mut components = Map::new();
        for (i, (name, c)) in [
            ("text_encoder", &cfg.clip_l),
            ("text_encoder_2", &cfg.clip_g),
        ]
        .into_iter()
        .enumerate()
        {
            components.insert(
                name.into(),
                files.attach(
                    json!({"class": "CLIPTextModelWithProjection", "config": format!("{c:?}"),
                           "output": "penultimate hidden states, projected pooled"}),
                    &format!("text_encoder_{i}"),
                    Some(&format!("tokenizer_{i}")),
                ),
            );
        }
        components.insert(
            "text_encoder_3".into(),
            files.attach(
                json!({"class": "T5EncoderModel", "max_sequence_length": cfg.max_sequence_length,
                       "config": format!("{:?}", cfg.t5)}),
                "text_encoder_2",
                Some("tokenizer_2"),
            ),
        );
        let transformer =
            json!({"class": "SD3Transformer2DModel", "config": format!("{:?}", cfg.mmdit)});
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
        let limits = FlowLimits {
            family: "SD3",
            model: id,
            max_side: cfg.max_side().min(4096),
            why_max: " (its position embedding's reach)",
        };
        let c = Common::from(cfg);
        let checked = shared::check(&c, r, &limits, &self.place.device, |w, h| {
            self.attention_bytes(w, h, shared::t5_len(&c, r))
        })?;
        let (steps, (w, h)) = (checked.steps, checked.size);
        let guidance = r.guidance_scale.unwrap_or(cfg.default_guidance);
        convert::check_guidance(guidance).map_err(err)?;
        let strength = shared::strength(&c, r, steps)?;
        // Every text that goes through an encoder is checked here, so an
        // over-long one is refused before the call, not failed in it.
        let texts = r.prompt.iter().map(|p| Texts::prompt(r, p));
        for Texts(l, g, t5) in texts.chain([Texts::negative(r)]) {
            self.clip_tokens[0].ids(l)?;
            self.clip_tokens[1].ids(g)?;
            self.t5_tokens.ids(t5, shared::t5_len(&c, r))?;
        }
        let mut params = Map::new();
        params.insert("prompt".into(), json!(r.prompt));
        params.insert("prompt_2".into(), json!(r.prompt_2));
        params.insert("prompt_3".into(), json!(r.prompt_3));
        params.insert("negative_prompt".into(), json!(r.negative_prompt));
        params.insert("negative_prompt_2".into(), json!(r.negative_prompt_2));
        params.insert("negative_prompt_3".into(), json!(r.negative_prompt_3));
        params.insert("num_images_per_prompt".into(), json!(per));
        params.insert("num_inference_steps".into(), json!(steps));
        params.insert("guidance_scale".into(), json!(guidance));
        shared::size_params(&mut params, &c, r, (w, h));
        if let Some(Some(g)) = &r.skip_layer_guidance {
            let blocks = cfg.mmdit.depth.saturating_sub(1);
            if let Some(b) = g.layers.iter().find(|&&b| b >= blocks) {
                return Err(err(format!(
                    "skip-layer guidance skips block {b}: {id} has joint blocks 0 to {}",
                    blocks.saturating_sub(1)
                )));
            }
        }
        match (self.guidance_of(r), guidance > 1.0 && r.init.is_none()) {
            (Some(slg), true) => {
                params.insert("skip_guidance_layers".into(), json!(slg.layers));
                params.insert("skip_layer_guidance_scale".into(), json!(slg.scale));
                params.insert("skip_layer_guidance_start".into(), json!(slg.start));
                params.insert("skip_layer_guidance_stop".into(), json!(slg.stop));
            }
            _ => {
                params.insert("skip_guidance_layers".into(), Value::Null);
            }
        }
        Ok(shared::spec(params, r, strength, true))
    }

    fn run(&mut self, r: &Request, ctx: &mut CallContext<'_>) -> Result<Output, PipelineError> {
        let cfg = self.model.config.clone();
        let c = Common::from(&cfg);
        let (w, h) = shared::size(&c, r);
        let steps = r.steps.unwrap_or(cfg.default_steps);
        let guidance = r.guidance_scale.unwrap_or(cfg.default_guidance);
        let guided = guidance > 1.0;

        ctx.phase("text_encoding");
        let uncond = if guided {
            Some(self.embed(&Texts::negative(r), shared::t5_len(&c, r))?)
        } else {
            None
        };
        let mut conds = Vec::new();
        for p in &r.prompt {
            conds.push(self.embed(&Texts::prompt(r, p), shared::t5_len(&c, r))?);
        }
        let strength = r.strength.unwrap_or(cfg.default_strength);
        let init = convert::input_image(r, w, h, &self.place.device, self.place.dtype)?;
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
            let (mut x, first) = shared::start(
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
            let (ctx_c, pooled_c) = &conds[i / per];
            let both = match &uncond {
                Some((ctx_u, pooled_u)) => Some((
                    Tensor::cat(&[ctx_u, ctx_c], 0)?,
                    Tensor::cat(&[pooled_u, pooled_c], 0)?,
                )),
                None => None,
            };
            trace::prompt_embeds(ctx, i, ctx_c)?;
            for (step, pair) in sigmas.windows(2).enumerate() {
                let (s, next) = (pair[0], pair[1]);
                let v = match &both {
                    Some((c2, p2)) => {
                        let pred = self.predict(&Tensor::cat(&[&x, &x], 0)?, s, p2, c2, None)?;
                        let parts = pred.chunk(2, 0)?;
                        let (u, c) = (&parts[0], &parts[1]);
                        let mut v = (u + ((c - u)? * guidance)?)?;
                        // diffusers' SD3 image-to-image has no skip-layer guidance.
                        let text_only = init.is_none();
                        let slg = self.guidance_of(r);
                        if let Some(layers) = Self::skips_at(slg, step, steps, text_only) {
                            let slg = slg.map_or(0.0, |g| g.scale);
                            let skipped = self.predict(&x, s, pooled_c, ctx_c, Some(layers))?;
                            v = (v + ((c - skipped)? * slg)?)?;
                        }
                        v
                    }
                    None => self.predict(&x, s, pooled_c, ctx_c, None)?,
                };
                x = (x + (v * (next - s))?)?;
                trace::step(ctx, i, step, &x)?;
            }
            ctx.phase("decoding");
            let image = shared::decode(&self.modules.vae, &c, &x)?;
            let p = &r.prompt[i / per];
            let Texts(_, p2, p3) = Texts::prompt(r, p);
            ctx.image(ImageRow {
                image: image.clone(),
                prompt: p.clone(),
                negative_prompt: r.negative_prompt.clone(),
                prompt_2: Some(p2.to_string()),
                negative_prompt_2: r
                    .negative_prompt_2
                    .clone()
                    .or_else(|| r.negative_prompt.clone()),
                prompt_3: Some(p3.to_string()),
                negative_prompt_3: r
                    .negative_prompt_3
                    .clone()
                    .or_else(|| r.negative_prompt.clone()),
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
