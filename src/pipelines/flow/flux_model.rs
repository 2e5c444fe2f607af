//! FLUX.1 architectures (schnell, dev and the tiny built-in ones) as plain
//! configurations, and the modules built from them: CLIP-L (pooled), the T5
//! encoder, candle's FLUX transformer and a 16-channel VAE.
//!
//! Weights are read from the diffusers folder layout people download
//! (`text_encoder/`, `text_encoder_2/`, `transformer/`, `vae/`, sharded or
//! not); the transformer's tensors are renamed on the fly by
//! [`crate::pipelines::load::remap`] because candle's FLUX code uses the original names.

use crate::pipelines::load::mapped::{mapped, mapped_vb};
use crate::pipelines::load::remap::{flux_rule, Remap};
use crate::pipelines::parts::flow_match::FlowMatch;
use crate::pipelines::parts::t5::{self, T5Encoder};
use crate::pipelines::parts::vae::vae16;
use crate::pipelines::sd::model::{ModelConfig, TextConfig, TextEncoder};
use candle_core::{DType, Device, Result};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::flux::model::{Config as FluxTransformerConfig, Flux};
use candle_transformers::models::stable_diffusion::{
    clip::Config as SdClipConfig,
    vae::{AutoEncoderKL, AutoEncoderKLConfig},
};
use serde_json::Value;
use std::path::PathBuf;

/// FLUX.1 schnell (distilled, no guidance input) or dev (guidance-distilled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FluxVariant {
    /// `FLUX.1-schnell`: few steps, no guidance.
    Schnell,
    /// `FLUX.1-dev`: takes a guidance value as an input.
    Dev,
}

/// A FLUX.1 model's complete architecture and defaults.
#[derive(Debug, Clone)]
pub struct FluxConfig {
    /// Schnell or dev.
    pub variant: FluxVariant,
    /// CLIP-L (`text_encoder/`): its pooled output conditions the transformer.
    pub clip: TextConfig,
    /// T5 (`text_encoder_2/`): its hidden states are the text tokens.
    pub t5: candle_transformers::models::t5::Config,
    /// T5 tokens per prompt (`max_sequence_length`: 256 schnell, 512 dev).
    pub max_sequence_length: usize,
    /// The transformer, in candle's (Black Forest Labs') terms.
    pub transformer: FluxTransformerConfig,
    /// The VAE (16 latent channels, no quant convs).
    pub vae: AutoEncoderKLConfig,
    /// `scaling_factor` of the VAE.
    pub vae_scale: f64,
    /// `shift_factor` of the VAE.
    pub vae_shift: f64,
    /// Default image side in pixels.
    pub default_size: usize,
    /// Default number of steps.
    pub default_steps: usize,
    /// Default guidance (dev only).
    pub default_guidance: f64,
    /// Default image-to-image strength.
    pub default_strength: f64,
    /// The sampler.
    pub sampler: FlowMatch,
}

impl FluxConfig {
    /// FLUX.1 schnell (`black-forest-labs/FLUX.1-schnell`).
    pub fn schnell() -> FluxConfig {
        FluxConfig {
            variant: FluxVariant::Schnell,
            clip: TextConfig::Sd(SdClipConfig::v1_5()),
            t5: t5::xxl(),
            max_sequence_length: 256,
            transformer: FluxTransformerConfig::schnell(),
            vae: vae16(vec![128, 256, 512, 512], 2, 32),
            vae_scale: 0.3611,
            vae_shift: 0.1159,
            default_size: 1024,
            default_steps: 4,
            default_guidance: 0.0,
            default_strength: 0.6,
            sampler: FlowMatch::flux_schnell(),
        }
    }

    /// FLUX.1 dev (`black-forest-labs/FLUX.1-dev`).
    pub fn dev() -> FluxConfig {
        FluxConfig {
            variant: FluxVariant::Dev,
            max_sequence_length: 512,
            transformer: FluxTransformerConfig::dev(),
            default_steps: 28,
            default_guidance: 3.5,
            sampler: FlowMatch::flux_dev(),
            ..FluxConfig::schnell()
        }
    }

    /// The tiny built-in FLUX, shaped like schnell.
    pub fn tiny() -> FluxConfig {
        let clip = ModelConfig::tiny().text[0].clone();
        FluxConfig {
            variant: FluxVariant::Schnell,
            clip,
            t5: t5::config(
                crate::pipelines::tiny::vocab::T5_VOCAB_SIZE,
                32,
                8,
                64,
                2,
                4,
            ),
            max_sequence_length: 64,
            transformer: FluxTransformerConfig {
                in_channels: 64,
                vec_in_dim: 32,
                context_in_dim: 32,
                hidden_size: 64,
                mlp_ratio: 4.0,
                num_heads: 2,
                depth: 1,
                depth_single_blocks: 2,
                axes_dim: vec![8, 12, 12],
                theta: 10_000,
                qkv_bias: true,
                guidance_embed: false,
            },
            vae: vae16(vec![16, 16, 32, 32], 1, 8),
            vae_scale: 0.3611,
            vae_shift: 0.1159,
            default_size: 64,
            default_steps: 4,
            default_guidance: 0.0,
            default_strength: 0.6,
            sampler: FlowMatch::flux_schnell(),
        }
    }

    /// The tiny built-in FLUX, shaped like dev (guidance input, dynamic shift).
    pub fn tiny_dev() -> FluxConfig {
        let mut c = FluxConfig::tiny();
        c.variant = FluxVariant::Dev;
        c.transformer.guidance_embed = true;
        c.default_steps = 6;
        c.default_guidance = 3.5;
        c.sampler = FlowMatch::flux_dev();
        c
    }

    /// A model built from a diffusers folder's own configs — for folders of
    /// no published model's sizes. `get(path)` gives a file of the folder
    /// parsed (`None` when missing; an error when it cannot be read).
    /// Read: the transformer, VAE, scheduler, both text encoders, CLIP's
    /// padding and T5's length (512, diffusers' default, or the tokenizer's
    /// own limit if lower); the rest is diffusers' `FluxPipeline` defaults
    /// (1024 px, 28 steps, guidance 3.5 when the model takes guidance).
    /// What difflog cannot build is an error naming the file and field.
    pub fn from_configs(
        get: &dyn Fn(&str) -> std::result::Result<Option<Value>, String>,
    ) -> std::result::Result<FluxConfig, (String, String)> {
        use crate::pipelines::sd::diffusers as d;
        let folder = d::FolderConfigs::new(get);
        let need = |rel: &str| folder.need(rel);
        let rel = "transformer/config.json";
        let t = need(rel)?;
        let bad = |why: String| (rel.to_string(), why);
        let n = |k: &str, default: usize| d::size_of(&t, rel, k, default);
        if n("patch_size", 1)? != 1 {
            return Err(bad(
                "patch_size must be 1 (latents are packed 2 × 2 instead)".into(),
            ));
        }
        let channels = n("in_channels", 64)?;
        if !matches!(&t["out_channels"], Value::Null) && n("out_channels", channels)? != channels {
            return Err(bad("out_channels must equal in_channels".into()));
        }
        let (head, heads) = (n("attention_head_dim", 128)?, n("num_attention_heads", 24)?);
        let axes: Vec<usize> = match &t["axes_dims_rope"] {
            Value::Null => vec![16, 56, 56],
            v => serde_json::from_value(v.clone())
                .map_err(|e| bad(format!("axes_dims_rope: {e}")))?,
        };
        if axes.len() != 3 || axes.iter().sum::<usize>() != head || axes.iter().any(|a| a % 2 != 0)
        {
            return Err(bad(format!(
                "axes_dims_rope {axes:?}: three even sizes adding up to attention_head_dim ({head})"
            )));
        }
        let transformer = FluxTransformerConfig {
            in_channels: channels,
            vec_in_dim: n("pooled_projection_dim", 768)?,
            context_in_dim: n("joint_attention_dim", 4096)?,
            hidden_size: head * heads,
            mlp_ratio: 4.0,
            num_heads: heads,
            depth: n("num_layers", 19)?,
            depth_single_blocks: n("num_single_layers", 38)?,
            axes_dim: axes,
            theta: 10_000,
            qkv_bias: true,
            guidance_embed: t["guidance_embeds"].as_bool().unwrap_or(false),
        };
        let rel = "vae/config.json";
        let (vae, vae_scale, vae_shift) =
            d::flow_vae_from_config(&need(rel)?).map_err(|e| (rel.to_string(), e))?;
        if vae.latent_channels * 4 != channels {
            return Err((
                rel.into(),
                format!(
                    "latent_channels = {}: the transformer takes 2 × 2 patches of {channels} / 4",
                    vae.latent_channels
                ),
            ));
        }
        let rel = "scheduler/scheduler_config.json";
        let sampler =
            FlowMatch::from_diffusers(&need(rel)?, false).map_err(|e| (rel.to_string(), e))?;
        let rel = "text_encoder/config.json";
        let mut clip = d::text_from_config(&need(rel)?, false).map_err(|e| (rel.to_string(), e))?;
        if let (TextConfig::Small(c), Some(pad)) = (&mut clip, folder.pad_token("tokenizer")?) {
            c.pad_with = Some(pad);
        }
        let rel = "text_encoder_2/config.json";
        let t5 = t5::from_transformers_config(need(rel)?).map_err(|e| (rel.to_string(), e))?;
        if t5.d_model != transformer.context_in_dim {
            return Err((
                rel.into(),
                format!(
                    "d_model = {} but the transformer's joint_attention_dim is {}",
                    t5.d_model, transformer.context_in_dim
                ),
            ));
        }
        let pooled = match &clip {
            TextConfig::Small(c) => c.embed_dim,
            _ => 0,
        };
        if pooled != transformer.vec_in_dim {
            return Err((
                "transformer/config.json".into(),
                format!(
                    "pooled_projection_dim = {} but CLIP's pooled output is {pooled} wide",
                    transformer.vec_in_dim
                ),
            ));
        }
        let max_sequence_length = folder.t5_length("tokenizer_2", 512)?;
        let variant = match transformer.guidance_embed {
            true => FluxVariant::Dev,
            false => FluxVariant::Schnell,
        };
        Ok(FluxConfig {
            variant,
            clip,
            t5,
            max_sequence_length,
            transformer,
            vae,
            vae_scale,
            vae_shift,
            default_size: 1024,
            default_steps: 28,
            default_guidance: 3.5,
            default_strength: 0.6,
            sampler,
        })
    }

    /// The pipeline class diffusers gives this model.
    pub fn class(&self) -> &'static str {
        "FluxPipeline"
    }

    /// Whether the model takes a guidance value (dev).
    pub fn takes_guidance(&self) -> bool {
        self.transformer.guidance_embed
    }

    /// The configs diffusers and transformers read from a FLUX folder, as
    /// they write them (path in the folder, contents): `model_index.json`,
    /// the transformer's, the VAE's and the scheduler's, and those of the
    /// text encoders and tokenizers when they are the tiny ones (a real
    /// model's folder carries its own). The tiny models write them so that
    /// diffusers' `FluxPipeline.from_pretrained` loads the very folder
    /// difflog runs (issue 33's parity tests).
    pub fn diffusers_configs(&self) -> Vec<(String, serde_json::Value)> {
        use crate::pipelines::sd::diffusers::{self as d, DIFFUSERS_VERSION as V};
        use serde_json::json;
        let t = &self.transformer;
        let mut out = vec![
            (
                "model_index.json".to_string(),
                json!({
                    "_class_name": self.class(), "_diffusers_version": V,
                    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                    "text_encoder": ["transformers", "CLIPTextModel"],
                    "text_encoder_2": ["transformers", "T5EncoderModel"],
                    "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
                    "tokenizer_2": ["transformers", "PreTrainedTokenizerFast"],
                    "transformer": ["diffusers", "FluxTransformer2DModel"],
                    "vae": ["diffusers", "AutoencoderKL"],
                    "image_encoder": [null, null], "feature_extractor": [null, null],
                }),
            ),
            (
                "transformer/config.json".into(),
                json!({
                    "_class_name": "FluxTransformer2DModel", "_diffusers_version": V,
                    "patch_size": 1, "in_channels": t.in_channels, "out_channels": null,
                    "num_layers": t.depth, "num_single_layers": t.depth_single_blocks,
                    "attention_head_dim": t.hidden_size / t.num_heads,
                    "num_attention_heads": t.num_heads,
                    "joint_attention_dim": t.context_in_dim,
                    "pooled_projection_dim": t.vec_in_dim,
                    "guidance_embeds": t.guidance_embed, "axes_dims_rope": t.axes_dim,
                }),
            ),
            (
                "vae/config.json".into(),
                d::vae_config_of(
                    &self.vae,
                    self.default_size,
                    self.vae_scale,
                    Some(self.vae_shift),
                ),
            ),
            (
                "scheduler/scheduler_config.json".into(),
                self.sampler.to_diffusers(V),
            ),
        ];
        out.extend(d::text_configs(&self.clip, false, ""));
        out.extend(t5::folder_configs(&self.t5, self.max_sequence_length, "_2"));
        out
    }
}

/// Where a FLUX model's files are (weights may be sharded).
#[derive(Debug, Clone, Default)]
pub struct FluxFiles {
    /// CLIP weights and its tokenizer.
    pub clip: (Vec<PathBuf>, PathBuf),
    /// T5 weights and its tokenizer.
    pub t5: (Vec<PathBuf>, PathBuf),
    /// Transformer weights.
    pub transformer: Vec<PathBuf>,
    /// VAE weights.
    pub vae: Vec<PathBuf>,
}

/// The neural parts of a FLUX pipeline.
pub struct FluxModules {
    /// CLIP-L.
    pub clip: TextEncoder,
    /// T5.
    pub t5: T5Encoder,
    /// The transformer.
    pub transformer: Flux,
    /// The VAE.
    pub vae: AutoEncoderKL,
}

/// The transformer's var builder: candle's names served from `files`
/// (diffusers' names) through [`flux_rule`].
pub fn transformer_vb(
    cfg: &FluxConfig,
    files: Box<dyn SimpleBackend>,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let remapped = Remap::new(files, flux_rule(cfg.transformer.hidden_size));
    VarBuilder::from_backend(Box::new(remapped), dtype, device.clone())
}

impl FluxModules {
    /// Builds every module of `cfg`; `transformer` asks in candle's names
    /// (see [`transformer_vb`]).
    pub fn build(
        cfg: &FluxConfig,
        clip: VarBuilder,
        t5: VarBuilder,
        transformer: VarBuilder,
        vae: VarBuilder,
    ) -> Result<FluxModules> {
        Ok(FluxModules {
            clip: TextEncoder::new(clip, &cfg.clip)?,
            t5: T5Encoder::new(t5, &cfg.t5)?,
            transformer: Flux::new(&cfg.transformer, transformer)?,
            vae: AutoEncoderKL::new(vae, 3, 3, cfg.vae.clone())?,
        })
    }

    /// Loads the modules from their files (memory-mapped safetensors).
    pub fn load(
        cfg: &FluxConfig,
        files: &FluxFiles,
        dtype: DType,
        device: &Device,
    ) -> Result<FluxModules> {
        let vb = |p: &[PathBuf]| mapped_vb(p, dtype, device);
        FluxModules::build(
            cfg,
            vb(&files.clip.0)?,
            vb(&files.t5.0)?,
            transformer_vb(cfg, Box::new(mapped(&files.transformer)?), dtype, device),
            vb(&files.vae)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::load::remap::tests::Planned;
    use crate::pipelines::sd::model::tests::Lazy;
    use std::collections::BTreeMap;

    fn built(files: &BTreeMap<String, Value>) -> std::result::Result<FluxConfig, (String, String)> {
        FluxConfig::from_configs(&|rel: &str| Ok(files.get(rel).cloned()))
    }

    #[test]
    fn a_folder_is_built_from_its_own_configs() {
        // The configs difflog writes for its tiny dev-shaped model build it.
        let tiny = FluxConfig::tiny_dev();
        let folder: BTreeMap<String, Value> = tiny.diffusers_configs().into_iter().collect();
        let b = built(&folder).unwrap();
        assert_eq!(
            format!("{:?}", b.transformer),
            format!("{:?}", tiny.transformer)
        );
        assert_eq!(b.variant, FluxVariant::Dev);
        // The same encoder, its padding now read from the tokenizer config.
        let mut clip = tiny.clip.clone();
        if let TextConfig::Small(c) = &mut clip {
            c.pad_with = Some(tiny.clip.pad_token());
        }
        assert_eq!(format!("{:?}", b.clip), format!("{clip:?}"));
        assert_eq!(b.t5, tiny.t5);
        assert_eq!(
            b.max_sequence_length, 64,
            "the tokenizer's limit, under 512"
        );
        assert_eq!(format!("{:?}", b.vae), format!("{:?}", tiny.vae));
        assert_eq!((b.vae_scale, b.vae_shift), (tiny.vae_scale, tiny.vae_shift));
        assert_eq!(b.sampler, tiny.sampler);
        assert_eq!(
            (b.default_size, b.default_steps, b.default_guidance),
            (1024, 28, 3.5)
        );
        // What it cannot build is named: file and field.
        let refused = |rel: &str, edit: &dyn Fn(&mut Value)| {
            let mut files = folder.clone();
            edit(files.get_mut(rel).unwrap());
            let (file, why) = built(&files).unwrap_err();
            assert_eq!(file, rel);
            why
        };
        let why = refused("transformer/config.json", &|v| {
            v["axes_dims_rope"] = serde_json::json!([8, 8, 8])
        });
        assert!(why.contains("axes_dims_rope"), "{why}");
        let why = refused("transformer/config.json", &|v| {
            v["patch_size"] = serde_json::json!(2)
        });
        assert!(why.contains("patch_size"), "{why}");
        let why = refused("vae/config.json", &|v| {
            v["latent_channels"] = serde_json::json!(4)
        });
        assert!(why.contains("latent_channels"), "{why}");
        let why = refused("text_encoder_2/config.json", &|v| {
            v["d_model"] = serde_json::json!(8)
        });
        assert!(why.contains("d_model"), "{why}");
        let why = refused("scheduler/scheduler_config.json", &|v| {
            v["time_shift_type"] = serde_json::json!("linear")
        });
        assert!(why.contains("time_shift_type"), "{why}");
        let mut files = folder.clone();
        files.remove("text_encoder/config.json");
        assert_eq!(built(&files).unwrap_err().0, "text_encoder/config.json");
    }

    /// Every tensor a FLUX config loads, by component, under the names the
    /// files hold (diffusers'), with the shapes asked for.
    fn tensors(cfg: &FluxConfig) -> BTreeMap<String, BTreeMap<String, Vec<usize>>> {
        let parts = ["clip", "t5", "transformer", "vae"];
        let lazy: Vec<Lazy> = parts.iter().map(|_| Lazy::default()).collect();
        let vb = |l: &Lazy| VarBuilder::from_backend(Box::new(l.clone()), DType::F32, Device::Cpu);
        let planned = Planned {
            rule: flux_rule(cfg.transformer.hidden_size),
            files: lazy[2].clone(),
            published: None,
        };
        let tvb = VarBuilder::from_backend(Box::new(planned), DType::F32, Device::Cpu);
        FluxModules::build(cfg, vb(&lazy[0]), vb(&lazy[1]), tvb, vb(&lazy[3])).unwrap();
        parts
            .iter()
            .zip(&lazy)
            .map(|(p, l)| (p.to_string(), l.0.lock().unwrap().clone()))
            .collect()
    }

    fn count(t: &BTreeMap<String, Vec<usize>>) -> usize {
        t.values().map(|d| d.iter().product::<usize>()).sum()
    }

    /// The tensors diffusers' `FluxTransformer2DModel` has for a published
    /// `transformer/config.json`, written from diffusers' module structure
    /// (not from candle's): name → shape.
    fn diffusers_transformer(config: &serde_json::Value) -> BTreeMap<String, Vec<usize>> {
        let n = |k: &str| config[k].as_u64().unwrap() as usize;
        let inner = n("num_attention_heads") * n("attention_head_dim");
        let head = n("attention_head_dim");
        let mlp = inner * 4;
        let mut t = BTreeMap::new();
        let mut lin = |name: &str, i: usize, o: usize| {
            t.insert(format!("{name}.weight"), vec![o, i]);
            t.insert(format!("{name}.bias"), vec![o]);
        };
        lin("x_embedder", n("in_channels"), inner);
        lin("context_embedder", n("joint_attention_dim"), inner);
        lin("time_text_embed.timestep_embedder.linear_1", 256, inner);
        lin("time_text_embed.timestep_embedder.linear_2", inner, inner);
        if config["guidance_embeds"].as_bool().unwrap() {
            lin("time_text_embed.guidance_embedder.linear_1", 256, inner);
            lin("time_text_embed.guidance_embedder.linear_2", inner, inner);
        }
        lin(
            "time_text_embed.text_embedder.linear_1",
            n("pooled_projection_dim"),
            inner,
        );
        lin("time_text_embed.text_embedder.linear_2", inner, inner);
        for i in 0..n("num_layers") {
            let p = format!("transformer_blocks.{i}");
            lin(&format!("{p}.norm1.linear"), inner, 6 * inner);
            lin(&format!("{p}.norm1_context.linear"), inner, 6 * inner);
            for q in [
                "to_q",
                "to_k",
                "to_v",
                "add_q_proj",
                "add_k_proj",
                "add_v_proj",
                "to_out.0",
                "to_add_out",
            ] {
                lin(&format!("{p}.attn.{q}"), inner, inner);
            }
            lin(&format!("{p}.ff.net.0.proj"), inner, mlp);
            lin(&format!("{p}.ff.net.2"), mlp, inner);
            lin(&format!("{p}.ff_context.net.0.proj"), inner, mlp);
            lin(&format!("{p}.ff_context.net.2"), mlp, inner);
        }
        for i in 0..n("num_single_layers") {
            let p = format!("single_transformer_blocks.{i}");
            lin(&format!("{p}.norm.linear"), inner, 3 * inner);
            for q in ["to_q", "to_k", "to_v"] {
                lin(&format!("{p}.attn.{q}"), inner, inner);
            }
            lin(&format!("{p}.proj_mlp"), inner, mlp);
            lin(&format!("{p}.proj_out"), inner + mlp, inner);
        }
        lin("norm_out.linear", inner, 2 * inner);
        lin("proj_out", inner, n("in_channels"));
        for i in 0..n("num_layers") {
            for q in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"] {
                t.insert(
                    format!("transformer_blocks.{i}.attn.{q}.weight"),
                    vec![head],
                );
            }
        }
        for i in 0..n("num_single_layers") {
            for q in ["norm_q", "norm_k"] {
                t.insert(
                    format!("single_transformer_blocks.{i}.attn.{q}.weight"),
                    vec![head],
                );
            }
        }
        t
    }

    /// `transformer/config.json` of black-forest-labs/FLUX.1-dev (schnell:
    /// the same with `guidance_embeds: false`).
    const FLUX_DEV_TRANSFORMER: &str = r#"{
        "_class_name": "FluxTransformer2DModel", "attention_head_dim": 128,
        "axes_dims_rope": [16, 56, 56], "guidance_embeds": true, "in_channels": 64,
        "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 19,
        "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768
    }"#;

    #[test]
    fn real_flux_configs_load_every_published_tensor_with_its_shape() {
        for (name, cfg, guidance) in [
            ("dev", FluxConfig::dev(), true),
            ("schnell", FluxConfig::schnell(), false),
        ] {
            let mut published: serde_json::Value =
                serde_json::from_str(FLUX_DEV_TRANSFORMER).unwrap();
            published["guidance_embeds"] = guidance.into();
            let want = diffusers_transformer(&published);
            let got = tensors(&cfg);
            assert_eq!(got["transformer"], want, "{name}: transformer tensors");
            let axes: Vec<usize> = published["axes_dims_rope"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(cfg.transformer.axes_dim, axes, "{name}");
            if name == "dev" {
                // diffusers' count for FLUX.1-dev's transformer.
                assert_eq!(count(&got["transformer"]), 11_901_408_320);
            }
            // google/t5-v1_1-xxl's encoder; openai/clip-vit-large-patch14's
            // text model; the FLUX VAE (diffusers' counts).
            assert_eq!(count(&got["t5"]), 4_762_310_656, "{name}: T5 encoder");
            assert_eq!(count(&got["clip"]), 123_060_480, "{name}: CLIP-L");
            assert_eq!(count(&got["vae"]), 83_819_683, "{name}: VAE");
            assert!(got["t5"].contains_key("shared.weight"));
            assert!(got["t5"].contains_key(
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ));
            assert_eq!(got["vae"]["decoder.conv_in.weight"], [512, 16, 3, 3]);
        }
    }

    #[test]
    fn the_tiny_fluxes_have_the_real_tensor_names() {
        let real = tensors(&FluxConfig::dev());
        for cfg in [FluxConfig::tiny(), FluxConfig::tiny_dev()] {
            let tiny = tensors(&cfg);
            for part in ["transformer", "vae"] {
                for k in tiny[part].keys() {
                    let k0 = k.replace(
                        "single_transformer_blocks.1.",
                        "single_transformer_blocks.0.",
                    );
                    assert!(
                        real[part].contains_key(&k0),
                        "{part}: {k} is not a real name"
                    );
                }
            }
            assert_eq!(
                tiny["transformer"]
                    .contains_key("time_text_embed.guidance_embedder.linear_1.weight"),
                cfg.takes_guidance()
            );
        }
    }
}
