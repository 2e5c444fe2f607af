//! Stable Diffusion text-to-image, image-to-image and inpainting on candle,
//! recorded through the [`Pipeline`] trait.
//!
//! One pipeline type serves every family (1.5, 2.1, XL, Turbo, the XL
//! refiner, the tiny models): the differences are data in [`ModelConfig`].
//! Each image is generated on its own from its own seed (initial latents,
//! latent sample, scheduler noise), so a recorded seed reproduces exactly
//! that image, whatever else was in the call.

use crate::pipeline::{CallContext, CallSpec, ImageRow, Pipeline, PipelineError, PipelineInfo};
use crate::pipelines::convert::{self, shorten};
use crate::pipelines::load::weights::ResolvedModel;
use crate::pipelines::parts::latent_encoder::LatentEncoder;
use crate::pipelines::parts::noise::Noise;
use crate::pipelines::parts::placement::Placement;
use crate::pipelines::parts::scheduler::SchedulerSettings;
use crate::pipelines::parts::trace;
use crate::pipelines::request::{err, InitImage, Output, Request, StageLatents};
use crate::pipelines::sd::model::{Family, ModelConfig, Modules};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::stable_diffusion::schedulers::Scheduler;
use image::RgbImage;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use tokenizers::Tokenizer;

/// What the UNet is conditioned on for one prompt: the text hidden states
/// (negative first when guided) and SDXL's pooled embedding and size
/// numbers, batched the same way.
struct Cond {
    text: Tensor,
    added: Option<(Tensor, Tensor)>,
}

/// An inpainting call's extra UNet inputs at latent resolution: the mask
/// and the masked image's latents (batch of one).
struct InpaintInputs {
    mask: Tensor,
    masked: Tensor,
}

/// A loaded Stable Diffusion pipeline.
pub struct StableDiffusion {
    model: ResolvedModel,
    modules: Modules,
    tokenizers: Vec<Tokenizer>,
    pad_ids: Vec<u32>,
    scheduler: SchedulerSettings,
    place: Placement,
}

impl StableDiffusion {
    /// Loads a resolved model onto `device` (`cpu`, `cuda:N`).
    pub fn load(model: ResolvedModel, device_name: &str) -> Result<StableDiffusion, PipelineError> {
        // Half precision on GPUs for real models; f32 on the CPU (candle has
        // no bf16 matmul there) and for the tiny models (reproducibility).
        let tiny = model.model_id.starts_with("tiny");
        let place = Placement::new(device_name, |device| {
            if device.is_cpu() || tiny {
                DType::F32
            } else {
                DType::F16
            }
        })?;
        let (device, dtype) = (&place.device, place.dtype);
        let cfg = &model.config;
        let text_files: Vec<&std::path::Path> =
            model.text.iter().map(|(w, _)| w.as_path()).collect();
        let modules = match model.seeded {
            Some(seed) => crate::pipelines::tiny::seeded_modules(cfg, seed, dtype, device),
            None => Modules::load(cfg, &text_files, &model.unet, &model.vae, dtype, device),
        }
        .map_err(|e| err(format!("loading model {}: {e}", model.model_id)))?;
        let mut tokenizers = Vec::new();
        let mut pad_ids = Vec::new();
        for ((_, tok_path), tcfg) in model.text.iter().zip(&cfg.text) {
            let t = Tokenizer::from_file(tok_path).map_err(|e| {
                err(format!(
                    "{}: cannot load tokenizer: {e}",
                    tok_path.display()
                ))
            })?;
            let pad = tcfg.pad_token();
            let id = t
                .token_to_id(&pad)
                .ok_or_else(|| err(format!("{}: no padding token {pad:?}", tok_path.display())))?;
            tokenizers.push(t);
            pad_ids.push(id);
        }
        Ok(StableDiffusion {
            scheduler: cfg.scheduler.clone(),
            model,
            modules,
            tokenizers,
            pad_ids,
            place,
        })
    }

    /// Replaces the scheduler (e.g. `--scheduler unipc`).
    pub fn set_scheduler(&mut self, settings: SchedulerSettings) {
        self.scheduler = settings;
    }

    /// The scheduler in use.
    pub fn scheduler(&self) -> &SchedulerSettings {
        &self.scheduler
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    fn tokens(&self, encoder: usize, text: &str) -> Result<Vec<u32>, PipelineError> {
        self.tokens_and_end(encoder, text).map(|(ids, _)| ids)
    }

    /// The padded token ids and the end token's position.
    fn tokens_and_end(
        &self,
        encoder: usize,
        text: &str,
    ) -> Result<(Vec<u32>, usize), PipelineError> {
        let max = self.model.config.text[encoder].max_tokens();
        let enc = self.tokenizers[encoder]
            .encode(text, true)
            .map_err(|e| err(format!("tokenizing {text:?}: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > max {
            return Err(err(format!(
                "prompt is too long: {} tokens, the text encoder takes at most {max} (start and end tokens included): {:?}",
                ids.len(),
                shorten(text)
            )));
        }
        let end = ids.len().saturating_sub(1);
        ids.resize(max, self.pad_ids[encoder]);
        Ok((ids, end))
    }

    /// Hidden states of all text encoders for one text (XL: concatenated),
    /// and the last encoder's pooled output when it gives one (XL).
    fn embed(&self, first: &str, second: &str) -> Result<(Tensor, Option<Tensor>), PipelineError> {
        let mut parts = Vec::new();
        let mut pooled = None;
        for i in 0..self.modules.text.len() {
            let text = if i == 0 { first } else { second };
            let (ids, end) = self.tokens_and_end(i, text)?;
            let ids = Tensor::new(ids.as_slice(), &self.place.device)?.unsqueeze(0)?;
            let (hidden, pool) = self.modules.text[i].encode_pooled(&ids, end)?;
            parts.push(hidden.to_dtype(self.place.dtype)?);
            pooled = pool.map(|p| p.to_dtype(self.place.dtype)).transpose()?;
        }
        Ok((Tensor::cat(&parts, candle_core::D::Minus1)?, pooled))
    }

    /// SDXL's six size numbers for an image of `w`×`h` (original size, crop
    /// corner, target size: `(h, w, 0, 0, h, w)`), or the refiner's five
    /// (original size, crop corner, aesthetic score 6, or 2.5 for the
    /// negative prompt), as diffusers' pipelines make them by default.
    fn size_numbers(&self, w: usize, h: usize, negative: bool) -> Result<Tensor, PipelineError> {
        let (w, h) = (w as f32, h as f32);
        let v = if self.model.config.family == Family::XlRefiner {
            vec![h, w, 0.0, 0.0, if negative { 2.5 } else { 6.0 }]
        } else {
            vec![h, w, 0.0, 0.0, h, w]
        };
        let n = v.len();
        Ok(Tensor::from_vec(v, (1, n), &self.place.device)?.to_dtype(self.place.dtype)?)
    }

    fn size(&self, r: &Request) -> (usize, usize) {
        r.size(self.model.config.default_size, 8)
    }

    /// The largest attention matrix a call of `w`×`h` materialises (UNet
    /// self-attention at each attention level, and the VAE's single-head
    /// attention at latent resolution), in bytes, counting the scores and
    /// their softmax. Attention grows with the fourth power of the side, so
    /// a size the model can run at 512 px may need terabytes at 4096 px.
    fn attention_bytes(&self, w: usize, h: usize) -> u128 {
        let cfg = &self.model.config;
        let elem = self.place.dtype.size_in_bytes() as u128;
        let tokens = |level: usize| ((w / 8) >> level) as u128 * ((h / 8) >> level) as u128;
        // Classifier-free guidance runs the UNet on two copies.
        let unet = cfg
            .unet
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.cross_attention.is_some())
            .map(|(i, b)| 2 * b.heads as u128 * tokens(i).pow(2) * elem)
            .max()
            .unwrap_or(0);
        let vae = tokens(0).pow(2) * elem;
        2 * unet.max(vae)
    }

    /// Refuses a size whose attention cannot fit in the memory this machine
    /// has free (CPU): the allocator would abort the process mid-call.
    fn check_memory(&self, w: usize, h: usize) -> Result<(), PipelineError> {
        convert::check_memory(&self.place.device, self.attention_bytes(w, h), w, h).map_err(err)
    }

    fn prompt_of(&self, r: &Request, i: usize) -> usize {
        let n = r.image_count().max(1);
        (i * r.prompt.len() / n).min(r.prompt.len().saturating_sub(1))
    }

    /// Initial latents of pure noise from this image's stream, scaled by the
    /// scheduler's initial sigma.
    fn noise_latents(
        &self,
        noise: &Mutex<Noise>,
        sigma: f64,
        w: usize,
        h: usize,
    ) -> candle_core::Result<Tensor> {
        let x = noise
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .normal(&[1, 4, h / 8, w / 8], &self.place.device)?;
        (x * sigma)?.to_dtype(self.place.dtype)
    }

    /// An inpainting model needs an image and a mask of its size; any other
    /// model takes no mask.
    fn check_inpaint(&self, r: &Request) -> Result<(), PipelineError> {
        let cfg = &self.model.config;
        match (&r.init, &r.mask, cfg.inpaint) {
            (Some(InitImage::Image(img)), Some(m), true) => {
                if img.dimensions() != m.dimensions() {
                    return Err(err(format!(
                        "the mask is {}×{} pixels and the image {}×{}: they must be the same size",
                        m.width(),
                        m.height(),
                        img.width(),
                        img.height()
                    )));
                }
                Ok(())
            }
            (_, _, true) => Err(err(format!(
                "{} is an inpainting model: give it an image and a mask (--image IN.png --mask MASK.png; white repaints, black keeps)",
                self.model.model_id
            ))),
            (_, Some(_), false) => Err(err(format!(
                "a mask needs an inpainting model (sd15-inpaint, sd2-inpaint, sdxl-inpaint, tiny-inpaint); {} is not one",
                self.model.model_id
            ))),
            _ => Ok(()),
        }
    }

    /// The mask at latent resolution (1 repaints, 0 keeps: gray values are
    /// rounded at one half, as diffusers does) and the latents of the image
    /// with the repainted part blanked, sampled with this image's noise.
    fn inpaint_inputs(
        &mut self,
        image: &Tensor,
        mask: &RgbImage,
        w: usize,
        h: usize,
        noise: &mut Noise,
    ) -> Result<InpaintInputs, PipelineError> {
        let gray = image::imageops::grayscale(mask);
        let gray = if (gray.width() as usize, gray.height() as usize) == (w, h) {
            gray
        } else {
            image::imageops::resize(
                &gray,
                w as u32,
                h as u32,
                image::imageops::FilterType::Nearest,
            )
        };
        let bits: Vec<f32> = gray
            .into_raw()
            .into_iter()
            .map(|v| if v >= 128 { 1.0 } else { 0.0 })
            .collect();
        let full = Tensor::from_vec(bits, (1, 1, h, w), &Device::Cpu)?
            .to_device(&self.place.device)?
            .to_dtype(self.place.dtype)?;
        let keep = full.affine(-1.0, 1.0)?;
        let masked_image = image.broadcast_mul(&keep)?;
        let scale = self.model.config.vae_scale;
        let masked = {
            let enc = self.latent_encoder()?;
            (enc.sample(&masked_image, noise)? * scale)?
        };
        let mask = full.interpolate2d(h / 8, w / 8)?;
        Ok(InpaintInputs { mask, masked })
    }

    /// Each prompt's text embeddings, preceded by the negative prompt's
    /// when guided (one batch of two, as the UNet takes it).
    fn embed_prompts(
        &self,
        r: &Request,
        guided: bool,
        (w, h): (usize, usize),
    ) -> Result<Vec<Cond>, PipelineError> {
        let neg = r.negative_prompt.clone().unwrap_or_default();
        let neg2 = r.negative_prompt_2.clone().unwrap_or_else(|| neg.clone());
        // SDXL base: no negative prompt means zero embeddings
        // (force_zeros_for_empty_prompt), not the empty text's.
        let zeros = self.model.config.family == Family::Xl
            && r.negative_prompt.is_none()
            && r.negative_prompt_2.is_none();
        let negative = match guided {
            false => None,
            true => {
                let (text, pooled) = self.embed(&neg, &neg2)?;
                Some(match zeros {
                    true => (
                        text.zeros_like()?,
                        pooled.map(|p| p.zeros_like()).transpose()?,
                    ),
                    false => (text, pooled),
                })
            }
        };
        let mut embeddings = Vec::new();
        for p in &r.prompt {
            let (text, pooled) = self.embed(p, r.prompt_2.as_deref().unwrap_or(p))?;
            let added = |pooled: Option<Tensor>,
                         negative: bool|
             -> Result<Option<(Tensor, Tensor)>, PipelineError> {
                Ok(match pooled {
                    Some(p) if self.modules.unet.config().text_time.is_some() => {
                        Some((p, self.size_numbers(w, h, negative)?))
                    }
                    _ => None,
                })
            };
            let cond = match &negative {
                None => Cond {
                    text,
                    added: added(pooled, false)?,
                },
                Some((nt, np)) => {
                    let a = match (added(np.clone(), true)?, added(pooled, false)?) {
                        (Some((p0, s0)), Some((p1, s1))) => {
                            Some((Tensor::cat(&[p0, p1], 0)?, Tensor::cat(&[s0, s1], 0)?))
                        }
                        _ => None,
                    };
                    Cond {
                        text: Tensor::cat(&[nt, &text], 0)?,
                        added: a,
                    }
                }
            };
            embeddings.push(cond);
        }
        Ok(embeddings)
    }

    /// The denoising loop of image `i` over `timesteps` from `latents`:
    /// classifier-free guidance at scale `guidance` when given, the
    /// inpainting model's 9-channel input when `inpaint` is.
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &self,
        scheduler: &mut dyn Scheduler,
        mut latents: Tensor,
        timesteps: &[usize],
        cond: &Cond,
        guidance: Option<f64>,
        inpaint: Option<&InpaintInputs>,
        (ctx, i): (&mut CallContext<'_>, usize),
    ) -> Result<Tensor, PipelineError> {
        let guided = cond.text.dim(0)? - 1;
        trace::prompt_embeds(ctx, i, &cond.text.narrow(0, guided, 1)?)?;
        for (s, &t) in timesteps.iter().enumerate() {
            let x = if guidance.is_some() {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let x = scheduler.scale_model_input(x, t)?;
            let x = match inpaint {
                // The 9-channel input: latents, mask, masked image latents.
                Some(ii) => {
                    let b = x.dims()[0];
                    let mask = ii.mask.repeat((b, 1, 1, 1))?;
                    let masked = ii.masked.repeat((b, 1, 1, 1))?;
                    Tensor::cat(&[&x, &mask, &masked], 1)?
                }
                None => x,
            };
            let added = cond.added.as_ref().map(|(p, s)| (p, s));
            let pred = self.modules.unet.forward(&x, t as f64, &cond.text, added)?;
            let pred = match guidance {
                Some(g) => {
                    let parts = pred.chunk(2, 0)?;
                    (&parts[0] + ((&parts[1] - &parts[0])? * g)?)?
                }
                None => pred,
            };
            latents = scheduler.step(&pred, t, &latents)?;
            trace::step(ctx, i, s, &latents)?;
        }
        Ok(latents)
    }

    /// Row `i` of a call: its image, prompts as the model read them, input
    /// and mask images, seed.
    fn row(
        &self,
        r: &Request,
        i: usize,
        image: RgbImage,
        input: Option<Arc<RgbImage>>,
        seed: u64,
    ) -> ImageRow {
        let cfg = &self.model.config;
        let p = &r.prompt[self.prompt_of(r, i)];
        let two = cfg.text.len() > 1;
        ImageRow {
            image,
            prompt: p.clone(),
            negative_prompt: r.negative_prompt.clone(),
            prompt_2: two.then(|| r.prompt_2.clone().unwrap_or_else(|| p.clone())),
            negative_prompt_2: two
                .then(|| {
                    r.negative_prompt_2
                        .clone()
                        .or_else(|| r.negative_prompt.clone())
                })
                .flatten(),
            prompt_3: None,
            negative_prompt_3: None,
            input_image: input,
            mask_image: r.mask.clone().filter(|_| cfg.inpaint),
            seed,
        }
    }

    fn decode(&self, latents: &Tensor) -> candle_core::Result<RgbImage> {
        let img = self
            .modules
            .vae
            .decode(&(latents / self.model.config.vae_scale)?)?;
        convert::tensor_image(&img)
    }

    fn latent_encoder(&mut self) -> Result<&LatentEncoder, PipelineError> {
        if self.model.seeded.is_some() {
            return Err(err(format!(
                "{}: image-to-image needs the VAE's weights file; the random models have none",
                self.model.model_id
            )));
        }
        let (files, cfg) = ([&self.model.vae], &self.model.config.vae);
        self.place.latent_encoder(&files, cfg)
    }
}

impl Pipeline for StableDiffusion {
    type Request = Request;
    type Output = Output;

    fn describe(&self) -> PipelineInfo {
        let cfg = &self.model.config;
        let mut components = Map::new();
        let text_class = |i: usize| cfg.text[i].class_name();
        for i in 0..cfg.text.len() {
            let suffix = cfg.text_suffix(i);
            let mut c = json!({"class": text_class(i), "max_tokens": cfg.text[i].max_tokens()});
            if let Some(f) = self.model.files.get(&format!("text_encoder_{i}")) {
                c["weights"] = f.clone();
            }
            if let Some(f) = self.model.files.get(&format!("tokenizer_{i}")) {
                c["tokenizer"] = f.clone();
            }
            components.insert(format!("text_encoder{suffix}"), c);
        }
        let mut unet =
            json!({"class": "UNet2DConditionModel", "config": cfg.unet_config().to_diffusers()});
        if let Some(f) = self.model.files.get("unet") {
            unet["weights"] = f.clone();
        }
        components.insert("unet".into(), unet);
        let mut vae = json!({"class": "AutoencoderKL", "config": format!("{:?}", cfg.vae), "scaling_factor": cfg.vae_scale});
        if let Some(f) = self.model.files.get("vae") {
            vae["weights"] = f.clone();
        }
        components.insert("vae".into(), vae);
        components.insert(
            "scheduler".into(),
            json!({"class": self.scheduler.kind.name()}),
        );
        PipelineInfo {
            class: cfg.class.to_string(),
            model_id: self.model.model_id.clone(),
            revision: self.model.revision.clone(),
            weights_digest: Some(self.model.weights_digest.clone()),
            dtype: format!("{:?}", self.place.dtype).to_lowercase(),
            device: self.place.device_name.clone(),
            components,
            scheduler: self.scheduler.to_json(),
        }
    }

    fn prepare(&self, r: &Request) -> Result<CallSpec, PipelineError> {
        let cfg = &self.model.config;
        let per = convert::check_counts(r.prompt.len(), r.num_images_per_prompt).map_err(err)?;
        let id = &self.model.model_id;
        convert::no_third_prompt(r, id).map_err(err)?;
        convert::no_t5(r, id).map_err(err)?;
        convert::no_skip_layer_guidance(r, id).map_err(err)?;
        let (w, h) = self.size(r);
        if let (Some(InitImage::Image(img)), true) = (&r.init, w == 0 || h == 0) {
            return Err(err(format!(
                "the input image is {}×{} pixels: it must be at least 8×8 (its size, rounded down to multiples of 8, is the output size)",
                img.width(),
                img.height()
            )));
        }
        for (name, v) in [("width", w), ("height", h)] {
            if v == 0 || v % 8 != 0 || v > 4096 {
                return Err(err(format!(
                    "{name} {v} must be a positive multiple of 8, at most 4096"
                )));
            }
        }
        self.check_memory(w, h)?;
        let steps = r.steps.unwrap_or(cfg.default_steps);
        convert::check_steps(steps, self.scheduler.train_timesteps).map_err(err)?;
        let guidance = r.guidance_scale.unwrap_or(cfg.default_guidance);
        convert::check_guidance(guidance).map_err(err)?;
        let strength = r.strength.unwrap_or(cfg.default_strength);
        if r.init.is_some() && !(strength > 0.0 && strength <= 1.0) {
            return Err(err(format!("strength {strength} must be in (0, 1]")));
        }
        self.check_inpaint(r)?;
        if cfg.family == Family::XlRefiner && r.init.is_none() {
            return Err(err(
                "the refiner is image-to-image: give it an image or the base model's latents",
            ));
        }
        if let Some(InitImage::Latents(l)) = &r.init {
            if l.is_empty() {
                return Err(err("no latents given to refine"));
            }
        }
        let p2 = r.prompt_2.clone();
        for p in &r.prompt {
            self.tokens(0, p)?;
            if self.tokenizers.len() > 1 {
                self.tokens(1, p2.as_deref().unwrap_or(p))?;
            }
        }
        // Every text that goes through an encoder is checked here, so an
        // over-long one is refused before the call, not failed in it.
        if let Some(n) = &r.negative_prompt {
            self.tokens(0, n)?;
            if self.tokenizers.len() > 1 && r.negative_prompt_2.is_none() {
                self.tokens(1, n)?;
            }
        }
        if let (Some(n2), true) = (&r.negative_prompt_2, self.tokenizers.len() > 1) {
            self.tokens(1, n2)?;
        }
        let n = r.image_count();
        let mut params = Map::new();
        params.insert("prompt".into(), json!(r.prompt));
        params.insert("negative_prompt".into(), json!(r.negative_prompt));
        if cfg.text.len() > 1 || cfg.family == Family::XlRefiner {
            params.insert("prompt_2".into(), json!(r.prompt_2));
            params.insert("negative_prompt_2".into(), json!(r.negative_prompt_2));
        }
        params.insert("num_images_per_prompt".into(), json!(per));
        params.insert("num_inference_steps".into(), json!(steps));
        params.insert("guidance_scale".into(), json!(guidance));
        params.insert("width".into(), json!(w));
        params.insert("height".into(), json!(h));
        params.insert("seed".into(), json!(r.seed));
        r.rng.record(&mut params);
        params.insert("scheduler".into(), json!(self.scheduler.kind.name()));
        match &r.init {
            Some(InitImage::Image(img)) => {
                params.insert(
                    "image".into(),
                    json!({"width": img.width(), "height": img.height()}),
                );
                params.insert("strength".into(), json!(strength));
            }
            Some(InitImage::Latents(l)) => {
                params.insert(
                    "image".into(),
                    json!({"latents": l.len(), "from": "previous stage"}),
                );
                params.insert("strength".into(), json!(strength));
            }
            None => {}
        }
        if let Some(m) = &r.mask {
            params.insert(
                "mask_image".into(),
                json!({"width": m.width(), "height": m.height()}),
            );
        }
        params.insert("output_type".into(), Value::from("pil"));
        Ok(CallSpec {
            params,
            seeds: (0..n as u64).map(|i| r.seed.wrapping_add(i)).collect(),
            second_prompts: cfg.text.len() > 1,
            third_prompts: false,
            input_image: r.init.is_some(),
            mask_image: cfg.inpaint,
            video: false,
        })
    }

    fn run(&mut self, r: &Request, ctx: &mut CallContext<'_>) -> Result<Output, PipelineError> {
        let cfg = self.model.config.clone();
        let (w, h) = self.size(r);
        let steps = r.steps.unwrap_or(cfg.default_steps);
        let guidance = r.guidance_scale.unwrap_or(cfg.default_guidance);
        let strength = r.strength.unwrap_or(cfg.default_strength);
        let cfg_guided = guidance > 1.0;

        ctx.phase("text_encoding");
        let embeddings = self.embed_prompts(r, cfg_guided, (w, h))?;

        let init_image = convert::input_image(r, w, h, &self.place.device, self.place.dtype)?;
        let n = r.image_count();
        let mut out = Output {
            images: Vec::with_capacity(n),
            latents: Vec::with_capacity(n),
        };
        for i in 0..n {
            let seed = r.seed.wrapping_add(i as u64);
            let noise = Arc::new(Mutex::new(Noise::of(&r.rng, seed)?));
            let mut scheduler = self.scheduler.build(steps, Arc::clone(&noise))?;
            let timesteps = scheduler.timesteps().to_vec();
            if i == 0 {
                trace::timesteps(ctx, timesteps.iter().map(|&t| t as f64));
            }
            // Inpainting at full strength starts from pure noise (as
            // diffusers does); the mask and the masked image's latents are
            // made after the start latents, drawing from the stream in
            // diffusers' order (start latents, their noise, then the masked
            // image's latent sample).
            let inpainting = cfg.inpaint && r.mask.is_some() && init_image.is_some();
            let from_noise = inpainting && strength >= 1.0;
            let (mut latents, t_start, input) = match (&r.init, &init_image) {
                (_, Some((img, _))) if from_noise => (
                    self.noise_latents(&noise, scheduler.init_noise_sigma(), w, h)?,
                    0,
                    Some(Arc::clone(img)),
                ),
                (Some(InitImage::Latents(l)), _) => {
                    let t_start = steps - ((steps as f64 * strength) as usize).min(steps);
                    let base = l[i]
                        .latents
                        .to_device(&self.place.device)?
                        .to_dtype(self.place.dtype)?;
                    (base, t_start, Some(Arc::clone(&l[i].preview)))
                }
                (_, Some((img, tensor))) => {
                    ctx.phase("image_encoding");
                    let t_start = steps - ((steps as f64 * strength) as usize).min(steps);
                    let sample = {
                        let mut nz = noise.lock().unwrap_or_else(|p| p.into_inner());
                        let tensor = tensor.clone();
                        let enc = self.latent_encoder()?;
                        enc.sample(&tensor, &mut nz)?
                    };
                    ((sample * cfg.vae_scale)?, t_start, Some(Arc::clone(img)))
                }
                _ => (
                    self.noise_latents(&noise, scheduler.init_noise_sigma(), w, h)?,
                    0,
                    None,
                ),
            };
            if input.is_some() && !from_noise && t_start < timesteps.len() {
                let eps = noise
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .normal(latents.dims(), &self.place.device)?
                    .to_dtype(self.place.dtype)?;
                latents = scheduler.add_noise(&latents, eps, timesteps[t_start])?;
            }
            let inpaint = match (&r.mask, &init_image) {
                (Some(mask), Some((_, tensor))) if inpainting => {
                    ctx.phase("image_encoding");
                    let mut nz = noise.lock().unwrap_or_else(|p| p.into_inner());
                    Some(self.inpaint_inputs(tensor, mask, w, h, &mut nz)?)
                }
                _ => None,
            };
            ctx.phase("denoising");
            let cond = &embeddings[self.prompt_of(r, i)];
            let guide = cfg_guided.then_some(guidance);
            let from = t_start.min(timesteps.len());
            let latents = self.denoise(
                scheduler.as_mut(),
                latents,
                &timesteps[from..],
                cond,
                guide,
                inpaint.as_ref(),
                (ctx, i),
            )?;
            ctx.phase("decoding");
            let image = self.decode(&latents)?;
            ctx.image(self.row(r, i, image.clone(), input, seed));
            out.latents.push(StageLatents {
                latents,
                preview: Arc::new(image.clone()),
            });
            out.images.push(image);
        }
        ctx.end_phase();
        Ok(out)
    }
}
