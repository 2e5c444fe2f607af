//! Stable Diffusion 3 and 3.5 architectures (SD3 medium, SD3.5 medium,
//! large, large turbo, and the tiny built-in one) as plain configurations,
//! and the modules built from them: CLIP-L and CLIP-G with their
//! projections, the T5 encoder, the MMDiT ([`super::mmdit`]) and a
//! 16-channel VAE.
//!
//! Weights come from the diffusers folder layout (`text_encoder/`,
//! `text_encoder_2/`, `text_encoder_3/`, `transformer/`, `vae/`); the
//! transformer's tensors are renamed on the fly by
//! [`crate::pipelines::load::remap`]. Every module computes in the
//! device's dtype (float32 on the CPU, as diffusers does there).

use crate::pipelines::flow::mmdit::Mmdit;
use crate::pipelines::load::mapped::{mapped, mapped_vb};
use crate::pipelines::load::remap::{mmdit_rule, Remap};
use crate::pipelines::parts::clip::{Clip, ClipConfig};
use crate::pipelines::parts::flow_match::FlowMatch;
use crate::pipelines::parts::t5::{self, T5Encoder};
use crate::pipelines::parts::vae::vae16;
use candle_core::{DType, Device, Result};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::mmdit::model::Config as MmditConfig;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use serde_json::Value;
use std::path::PathBuf;

pub use crate::pipelines::request::SkipLayerGuidance;

/// An SD3 / SD3.5 model's complete architecture and defaults.
#[derive(Debug, Clone)]
pub struct Sd3Config {
    /// The variant, as `--model` names it (`sd3-medium`, `sd35-large`, …).
    pub variant: &'static str,
    /// CLIP-L (`text_encoder/`, with projection).
    pub clip_l: ClipConfig,
    /// CLIP-G (`text_encoder_2/`, with projection).
    pub clip_g: ClipConfig,
    /// T5 (`text_encoder_3/`).
    pub t5: candle_transformers::models::t5::Config,
    /// T5 tokens per prompt.
    pub max_sequence_length: usize,
    /// The MMDiT, in candle's terms (its width is `head_size × heads`,
    /// not candle's `head_size × depth`).
    pub mmdit: MmditConfig,
    /// Attention heads (as many as blocks in the published models).
    pub heads: usize,
    /// The joint blocks with a second attention (MMDiT-X, SD3.5 medium).
    /// The loader finds these in the checkpoint's tensors; this is what the
    /// model's `transformer/config.json` says.
    pub dual_attention_layers: Vec<usize>,
    /// Whether the attentions norm their queries and keys (RMS; SD3.5), as
    /// the config says (the loader, again, goes by the tensors).
    pub qk_norm: bool,
    /// The VAE.
    pub vae: AutoEncoderKLConfig,
    /// `scaling_factor` of the VAE.
    pub vae_scale: f64,
    /// `shift_factor` of the VAE.
    pub vae_shift: f64,
    /// Default image side in pixels.
    pub default_size: usize,
    /// Default number of steps.
    pub default_steps: usize,
    /// Default classifier-free guidance scale (≤ 1: none).
    pub default_guidance: f64,
    /// Default image-to-image strength.
    pub default_strength: f64,
    /// The sampler.
    pub sampler: FlowMatch,
    /// Skip-layer guidance by default (SD3.5 medium).
    pub skip_layer_guidance: Option<SkipLayerGuidance>,
}

fn small_clip(width: usize, quick_gelu: bool, pad: &str) -> ClipConfig {
    ClipConfig {
        vocab: crate::pipelines::tiny::vocab::VOCAB_SIZE,
        width,
        layers: 2,
        heads: 2,
        intermediate: width * 2,
        positions: 77,
        quick_gelu,
        projection: width,
        projected: true,
        pad: pad.into(),
    }
}

impl Sd3Config {
    /// Stable Diffusion 3 medium (`stabilityai/stable-diffusion-3-medium-diffusers`).
    pub fn sd3_medium() -> Sd3Config {
        Sd3Config {
            variant: "sd3-medium",
            clip_l: ClipConfig::large(),
            clip_g: ClipConfig::big_g(),
            t5: t5::xxl(),
            max_sequence_length: 256,
            mmdit: MmditConfig::sd3_medium(),
            heads: 24,
            dual_attention_layers: vec![],
            qk_norm: false,
            vae: vae16(vec![128, 256, 512, 512], 2, 32),
            vae_scale: 1.5305,
            vae_shift: 0.0609,
            default_size: 1024,
            default_steps: 28,
            default_guidance: 7.0,
            default_strength: 0.6,
            sampler: FlowMatch::sd3(),
            skip_layer_guidance: None,
        }
    }

    /// Stable Diffusion 3.5 medium (MMDiT-X; skip-layer guidance on 7, 8, 9).
    pub fn sd35_medium() -> Sd3Config {
        Sd3Config {
            variant: "sd35-medium",
            mmdit: MmditConfig::sd3_5_medium(),
            dual_attention_layers: (0..=12).collect(),
            qk_norm: true,
            default_steps: 40,
            default_guidance: 4.5,
            skip_layer_guidance: Some(SkipLayerGuidance {
                layers: vec![7, 8, 9],
                scale: 2.8,
                start: 0.01,
                stop: 0.2,
            }),
            ..Sd3Config::sd3_medium()
        }
    }

    /// Stable Diffusion 3.5 large.
    pub fn sd35_large() -> Sd3Config {
        Sd3Config {
            variant: "sd35-large",
            mmdit: MmditConfig::sd3_5_large(),
            heads: 38,
            qk_norm: true,
            default_steps: 28,
            default_guidance: 3.5,
            ..Sd3Config::sd3_medium()
        }
    }

    /// Stable Diffusion 3.5 large turbo: 4 steps, no guidance.
    pub fn sd35_large_turbo() -> Sd3Config {
        Sd3Config {
            variant: "sd35-large-turbo",
            default_steps: 4,
            default_guidance: 0.0,
            ..Sd3Config::sd35_large()
        }
    }

    /// The tiny built-in SD3 (SD3.5 medium-shaped: dual attention, q/k
    /// norms, skip-layer guidance on its first block).
    pub fn tiny() -> Sd3Config {
        Sd3Config {
            variant: "tiny-sd3",
            clip_l: small_clip(16, true, "<|endoftext|>"),
            clip_g: small_clip(24, false, "!"),
            t5: t5::config(
                crate::pipelines::tiny::vocab::T5_VOCAB_SIZE,
                48,
                12,
                96,
                2,
                4,
            ),
            max_sequence_length: 64,
            mmdit: MmditConfig {
                patch_size: 2,
                in_channels: 16,
                out_channels: 16,
                depth: 3,
                head_size: 16,
                adm_in_channels: 40,
                pos_embed_max_size: 16,
                context_embed_size: 48,
                frequency_embedding_size: 256,
            },
            heads: 3,
            // Every block but the last has a second attention: the tiny
            // weights hold every tensor a block may ask for.
            dual_attention_layers: vec![0, 1],
            qk_norm: true,
            vae: vae16(vec![16, 16, 32, 32], 1, 8),
            default_size: 64,
            default_steps: 4,
            default_guidance: 4.5,
            skip_layer_guidance: Some(SkipLayerGuidance {
                layers: vec![0],
                scale: 2.8,
                start: 0.0,
                stop: 0.5,
            }),
            ..Sd3Config::sd3_medium()
        }
    }

    /// A model built from a diffusers folder's own configs — for folders of
    /// no published model's sizes. `get(path)` gives a file of the folder
    /// parsed (`transformer/config.json`, …; `None` when missing). Read:
    /// the transformer, VAE, scheduler, the three text encoders, the CLIP
    /// tokenizers' padding and T5's length (256, diffusers' default, or the
    /// tokenizer's own limit if lower); the rest is diffusers' pipeline
    /// defaults (28 steps, guidance 7, no skip-layer guidance). What
    /// difflog cannot build is an error naming the file and the field
    /// (`get` errs for a file it cannot read or parse).
    pub fn from_configs(
        get: &dyn Fn(&str) -> std::result::Result<Option<Value>, String>,
    ) -> std::result::Result<Sd3Config, (String, String)> {
        use crate::pipelines::sd::diffusers as d;
        use crate::pipelines::sd::model::TextConfig;
        let folder = d::FolderConfigs::new(get);
        let need = |rel: &str| folder.need(rel);
        let rel = "transformer/config.json";
        let t = need(rel)?;
        let bad = |why: String| (rel.to_string(), why);
        let n = |k: &str, default: usize| d::size_of(&t, rel, k, default);
        let (patch, channels) = (n("patch_size", 2)?, n("in_channels", 16)?);
        let (layers, head, heads) = (
            n("num_layers", 18)?,
            n("attention_head_dim", 64)?,
            n("num_attention_heads", 18)?,
        );
        let hidden = head * heads;
        if n("caption_projection_dim", 1152)? != hidden {
            return Err(bad(format!(
                "caption_projection_dim must be num_attention_heads × attention_head_dim = {hidden}"
            )));
        }
        if n("out_channels", channels)? != channels {
            return Err(bad("out_channels must equal in_channels".into()));
        }
        let dual: Vec<usize> = match &t["dual_attention_layers"] {
            Value::Null => vec![],
            v => serde_json::from_value::<Vec<usize>>(v.clone())
                .ok()
                .filter(|d| d.iter().all(|&i| i + 1 < layers))
                .ok_or_else(|| {
                    bad(format!(
                        "dual_attention_layers: not blocks before the last: {v}"
                    ))
                })?,
        };
        let qk_norm = match &t["qk_norm"] {
            Value::Null => false,
            v if v == "rms_norm" => true,
            v => return Err(bad(format!("qk_norm {v}: only \"rms_norm\" is supported"))),
        };
        let mmdit = MmditConfig {
            patch_size: patch,
            in_channels: channels,
            out_channels: channels,
            depth: layers,
            head_size: head,
            adm_in_channels: n("pooled_projection_dim", 2048)?,
            pos_embed_max_size: n("pos_embed_max_size", 96)?,
            context_embed_size: n("joint_attention_dim", 4096)?,
            frequency_embedding_size: 256,
        };
        let default_size = n("sample_size", 128)? * 8;

        let rel = "vae/config.json";
        let (vae, vae_scale, vae_shift) =
            d::flow_vae_from_config(&need(rel)?).map_err(|e| (rel.to_string(), e))?;
        if vae.latent_channels != channels {
            return Err((
                rel.into(),
                format!(
                    "latent_channels = {} but the transformer takes {channels}",
                    vae.latent_channels
                ),
            ));
        }
        let rel = "scheduler/scheduler_config.json";
        let sampler =
            FlowMatch::from_diffusers(&need(rel)?, true).map_err(|e| (rel.to_string(), e))?;
        let clip = |n: &str| -> std::result::Result<ClipConfig, (String, String)> {
            let rel = format!("text_encoder{n}/config.json");
            let mut c = match d::text_from_config(&need(&rel)?, true) {
                Ok(TextConfig::Clip(c)) if c.projected => c,
                Ok(_) => return Err((rel, "a CLIPTextModelWithProjection is needed".into())),
                Err(e) => return Err((rel, e)),
            };
            if let Some(pad) = folder.pad_token(&format!("tokenizer{n}"))? {
                c.pad = pad;
            }
            Ok(c)
        };
        let (clip_l, clip_g) = (clip("")?, clip("_2")?);
        let rel = "text_encoder_3/config.json";
        let t5 = t5::from_transformers_config(need(rel)?).map_err(|e| (rel.to_string(), e))?;
        if t5.d_model != mmdit.context_embed_size || clip_l.width + clip_g.width > t5.d_model {
            return Err((
                rel.into(),
                format!(
                    "d_model = {} must equal the transformer's joint_attention_dim ({}) and hold both CLIPs' states ({} + {})",
                    t5.d_model, mmdit.context_embed_size, clip_l.width, clip_g.width
                ),
            ));
        }
        if clip_l.projection + clip_g.projection != mmdit.adm_in_channels {
            return Err((
                "transformer/config.json".into(),
                format!(
                    "pooled_projection_dim = {} but the CLIPs' projections give {} + {}",
                    mmdit.adm_in_channels, clip_l.projection, clip_g.projection
                ),
            ));
        }
        let max_sequence_length = folder.t5_length("tokenizer_3", 256)?;
        Ok(Sd3Config {
            variant: "sd3",
            clip_l,
            clip_g,
            t5,
            max_sequence_length,
            mmdit,
            heads,
            dual_attention_layers: dual,
            qk_norm,
            vae,
            vae_scale,
            vae_shift,
            default_size,
            default_steps: 28,
            default_guidance: 7.0,
            default_strength: 0.6,
            sampler,
            skip_layer_guidance: None,
        })
    }

    /// The pipeline class diffusers gives these models.
    pub fn class(&self) -> &'static str {
        "StableDiffusion3Pipeline"
    }

    /// Width of the transformer (head size × heads).
    pub fn hidden(&self) -> usize {
        self.mmdit.head_size * self.heads
    }

    /// The configs diffusers and transformers read from a model folder
    /// (path in the folder, content) — for the models difflog writes
    /// itself (the tiny one), so that diffusers'
    /// `StableDiffusion3Pipeline.from_pretrained` loads the very folder
    /// difflog runs (issue 33's parity tests). The text encoders' configs
    /// are written only for the tiny vocabularies.
    pub fn diffusers_configs(&self) -> Vec<(String, serde_json::Value)> {
        use crate::pipelines::sd::diffusers::{self as d, DIFFUSERS_VERSION as V};
        use crate::pipelines::sd::model::TextConfig;
        use serde_json::json;
        let m = &self.mmdit;
        let mut out = vec![
            (
                "model_index.json".to_string(),
                json!({
                    "_class_name": self.class(), "_diffusers_version": V,
                    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
                    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                    "text_encoder_3": ["transformers", "T5EncoderModel"],
                    "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
                    "tokenizer_2": ["transformers", "PreTrainedTokenizerFast"],
                    "tokenizer_3": ["transformers", "PreTrainedTokenizerFast"],
                    "transformer": ["diffusers", "SD3Transformer2DModel"],
                    "vae": ["diffusers", "AutoencoderKL"],
                    "image_encoder": [null, null], "feature_extractor": [null, null],
                }),
            ),
            (
                "transformer/config.json".into(),
                json!({
                    "_class_name": "SD3Transformer2DModel", "_diffusers_version": V,
                    "sample_size": self.default_size / 8, "patch_size": m.patch_size,
                    "in_channels": m.in_channels, "out_channels": m.out_channels,
                    "num_layers": m.depth, "attention_head_dim": m.head_size,
                    "num_attention_heads": self.heads,
                    "joint_attention_dim": m.context_embed_size,
                    "caption_projection_dim": self.hidden(),
                    "pooled_projection_dim": m.adm_in_channels,
                    "pos_embed_max_size": m.pos_embed_max_size,
                    "dual_attention_layers": self.dual_attention_layers,
                    "qk_norm": if self.qk_norm { json!("rms_norm") } else { json!(null) },
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
        for (n, clip) in [("", &self.clip_l), ("_2", &self.clip_g)] {
            out.extend(d::text_configs(&TextConfig::Clip(clip.clone()), true, n));
        }
        out.extend(t5::folder_configs(&self.t5, self.max_sequence_length, "_3"));
        out
    }

    /// The largest image side its position embedding covers.
    pub fn max_side(&self) -> usize {
        self.mmdit.pos_embed_max_size * self.mmdit.patch_size * 8
    }
}

/// Where an SD3 model's files are (weights may be sharded).
#[derive(Debug, Clone, Default)]
pub struct Sd3Files {
    /// CLIP-L, CLIP-G and T5: weights and tokenizer each.
    pub text: Vec<(Vec<PathBuf>, PathBuf)>,
    /// Transformer weights.
    pub transformer: Vec<PathBuf>,
    /// VAE weights.
    pub vae: Vec<PathBuf>,
}

/// The neural parts of an SD3 pipeline.
pub struct Sd3Modules {
    /// CLIP-L and CLIP-G.
    pub clips: [Clip; 2],
    /// T5.
    pub t5: T5Encoder,
    /// The MMDiT.
    pub mmdit: Mmdit,
    /// The VAE.
    pub vae: AutoEncoderKL,
}

/// The transformer's var builder: candle's names served from `files`
/// (diffusers' names) through [`mmdit_rule`], in `dtype`.
pub fn transformer_vb(
    cfg: &Sd3Config,
    files: Box<dyn SimpleBackend>,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let remapped = Remap::new(files, mmdit_rule(cfg.hidden(), cfg.mmdit.depth));
    VarBuilder::from_backend(Box::new(remapped), dtype, device.clone())
}

impl Sd3Modules {
    /// Builds every module; `text` are CLIP-L, CLIP-G and T5's roots,
    /// `transformer` asks in candle's names (see [`transformer_vb`]).
    pub fn build(
        cfg: &Sd3Config,
        text: [VarBuilder; 3],
        transformer: VarBuilder,
        vae: VarBuilder,
    ) -> Result<Sd3Modules> {
        let [l, g, t] = text;
        Ok(Sd3Modules {
            clips: [Clip::new(l, &cfg.clip_l)?, Clip::new(g, &cfg.clip_g)?],
            t5: T5Encoder::new(t, &cfg.t5)?,
            mmdit: Mmdit::new(&cfg.mmdit, cfg.heads, transformer)?,
            vae: AutoEncoderKL::new(vae, 3, 3, cfg.vae.clone())?,
        })
    }

    /// Loads the modules from their files (memory-mapped safetensors).
    pub fn load(
        cfg: &Sd3Config,
        files: &Sd3Files,
        dtype: DType,
        device: &Device,
    ) -> Result<Sd3Modules> {
        let vb = |p: &[PathBuf]| mapped_vb(p, dtype, device);
        if files.text.len() != 3 {
            candle_core::bail!("SD3 needs three text encoders, got {}", files.text.len());
        }
        Sd3Modules::build(
            cfg,
            [
                vb(&files.text[0].0)?,
                vb(&files.text[1].0)?,
                vb(&files.text[2].0)?,
            ],
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
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    /// diffusers' `SD3Transformer2DModel` tensors for a published
    /// `transformer/config.json`, from diffusers' module structure: name → shape.
    fn diffusers_transformer(c: &Value) -> BTreeMap<String, Vec<usize>> {
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let (layers, head) = (n("num_layers"), n("attention_head_dim"));
        let inner = n("num_attention_heads") * head;
        let patch = n("patch_size");
        let qk = c["qk_norm"].as_str() == Some("rms_norm");
        let dual: Vec<usize> = c["dual_attention_layers"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect())
            .unwrap_or_default();
        let mut t = BTreeMap::new();
        let mut put = |name: String, shape: Vec<usize>| {
            t.insert(name, shape);
        };
        let lin = |put: &mut dyn FnMut(String, Vec<usize>), name: &str, i: usize, o: usize| {
            put(format!("{name}.weight"), vec![o, i]);
            put(format!("{name}.bias"), vec![o]);
        };
        lin(
            &mut put,
            "time_text_embed.timestep_embedder.linear_1",
            256,
            inner,
        );
        lin(
            &mut put,
            "time_text_embed.timestep_embedder.linear_2",
            inner,
            inner,
        );
        lin(
            &mut put,
            "time_text_embed.text_embedder.linear_1",
            n("pooled_projection_dim"),
            inner,
        );
        lin(
            &mut put,
            "time_text_embed.text_embedder.linear_2",
            inner,
            inner,
        );
        lin(
            &mut put,
            "context_embedder",
            n("joint_attention_dim"),
            n("caption_projection_dim"),
        );
        put(
            "pos_embed.proj.weight".into(),
            vec![inner, n("in_channels"), patch, patch],
        );
        put("pos_embed.proj.bias".into(), vec![inner]);
        let max = n("pos_embed_max_size");
        put("pos_embed.pos_embed".into(), vec![1, max * max, inner]);
        for i in 0..layers {
            let p = format!("transformer_blocks.{i}");
            let last = i + 1 == layers;
            let mods = if dual.contains(&i) { 9 } else { 6 };
            lin(&mut put, &format!("{p}.norm1.linear"), inner, mods * inner);
            let cmods = if last { 2 } else { 6 };
            lin(
                &mut put,
                &format!("{p}.norm1_context.linear"),
                inner,
                cmods * inner,
            );
            for q in [
                "to_q",
                "to_k",
                "to_v",
                "add_q_proj",
                "add_k_proj",
                "add_v_proj",
                "to_out.0",
            ] {
                lin(&mut put, &format!("{p}.attn.{q}"), inner, inner);
            }
            lin(&mut put, &format!("{p}.ff.net.0.proj"), inner, 4 * inner);
            lin(&mut put, &format!("{p}.ff.net.2"), 4 * inner, inner);
            if !last {
                lin(&mut put, &format!("{p}.attn.to_add_out"), inner, inner);
                lin(
                    &mut put,
                    &format!("{p}.ff_context.net.0.proj"),
                    inner,
                    4 * inner,
                );
                lin(&mut put, &format!("{p}.ff_context.net.2"), 4 * inner, inner);
            }
            if qk {
                for q in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"] {
                    put(format!("{p}.attn.{q}.weight"), vec![head]);
                }
            }
            if dual.contains(&i) {
                for q in ["to_q", "to_k", "to_v", "to_out.0"] {
                    lin(&mut put, &format!("{p}.attn2.{q}"), inner, inner);
                }
                if qk {
                    for q in ["norm_q", "norm_k"] {
                        put(format!("{p}.attn2.{q}.weight"), vec![head]);
                    }
                }
            }
        }
        lin(&mut put, "norm_out.linear", inner, 2 * inner);
        lin(
            &mut put,
            "proj_out",
            inner,
            patch * patch * n("out_channels"),
        );
        t
    }

    fn tensors(
        cfg: &Sd3Config,
        published: &BTreeMap<String, Vec<usize>>,
    ) -> Vec<BTreeMap<String, Vec<usize>>> {
        let lazy: Vec<Lazy> = (0..5).map(|_| Lazy::default()).collect();
        let vb = |l: &Lazy| VarBuilder::from_backend(Box::new(l.clone()), DType::F32, Device::Cpu);
        let planned = Planned {
            rule: mmdit_rule(cfg.hidden(), cfg.mmdit.depth),
            files: lazy[3].clone(),
            published: Some(published.keys().cloned().collect()),
        };
        let tvb = VarBuilder::from_backend(Box::new(planned), DType::F16, Device::Cpu);
        Sd3Modules::build(
            cfg,
            [vb(&lazy[0]), vb(&lazy[1]), vb(&lazy[2])],
            tvb,
            vb(&lazy[4]),
        )
        .unwrap();
        lazy.iter().map(|l| l.0.lock().unwrap().clone()).collect()
    }

    fn count(t: &BTreeMap<String, Vec<usize>>) -> usize {
        t.values().map(|d| d.iter().product::<usize>()).sum()
    }

    #[test]
    fn real_sd3_configs_load_every_published_tensor_with_its_shape() {
        // transformer/config.json of each published model (the fields that
        // decide tensors).
        let medium = json!({"attention_head_dim": 64, "caption_projection_dim": 1536,
            "in_channels": 16, "joint_attention_dim": 4096, "num_attention_heads": 24,
            "num_layers": 24, "out_channels": 16, "patch_size": 2,
            "pooled_projection_dim": 2048, "pos_embed_max_size": 192});
        let mut large = medium.clone();
        for (k, v) in [
            ("num_attention_heads", json!(38)),
            ("num_layers", json!(38)),
            ("caption_projection_dim", json!(2432)),
            ("qk_norm", json!("rms_norm")),
        ] {
            large[k] = v;
        }
        let mut m35 = medium.clone();
        m35["pos_embed_max_size"] = json!(384);
        m35["qk_norm"] = json!("rms_norm");
        m35["dual_attention_layers"] = json!((0..=12).collect::<Vec<usize>>());
        for (cfg, published) in [
            (Sd3Config::sd3_medium(), medium),
            (Sd3Config::sd35_medium(), m35),
            (Sd3Config::sd35_large(), large.clone()),
            (Sd3Config::sd35_large_turbo(), large),
        ] {
            let want = diffusers_transformer(&published);
            let got = tensors(&cfg, &want);
            let name = cfg.variant;
            // Every published tensor is read: the 3.5 checkpoints' q/k
            // norms of the last block's text tokens too (candle's own last
            // block left those two unread).
            let unread: Vec<&String> = want.keys().filter(|k| !got[3].contains_key(*k)).collect();
            assert!(unread.is_empty(), "{name}: {unread:?}");
            let config = &cfg.diffusers_configs()[1].1;
            assert_eq!(config["qk_norm"], published["qk_norm"], "{name}");
            let dual = config["dual_attention_layers"].as_array().unwrap();
            let published_dual = published["dual_attention_layers"].as_array();
            assert_eq!(dual, published_dual.unwrap_or(&vec![]), "{name}");
            for (k, shape) in &got[3] {
                assert_eq!(want.get(k), Some(shape), "{name}: {k}");
            }
            // openai/clip-vit-large-patch14 and laion's CLIP ViT-bigG text
            // models with projection, the T5-XXL encoder, the SD3 VAE.
            assert_eq!(count(&got[0]), 123_650_304, "{name}: CLIP-L");
            assert_eq!(count(&got[1]), 694_659_840, "{name}: CLIP-G");
            assert_eq!(count(&got[2]), 4_762_310_656, "{name}: T5");
            assert_eq!(count(&got[4]), 83_819_683, "{name}: VAE");
        }
    }

    /// The tiny model's configs as a folder's files (path → JSON).
    fn folder_of(cfg: &Sd3Config) -> BTreeMap<String, Value> {
        cfg.diffusers_configs().into_iter().collect()
    }

    fn built(files: &BTreeMap<String, Value>) -> std::result::Result<Sd3Config, (String, String)> {
        Sd3Config::from_configs(&|rel: &str| Ok(files.get(rel).cloned()))
    }

    #[test]
    fn a_folder_is_built_from_its_own_configs() {
        // The configs difflog writes for its tiny model build that model.
        let tiny = Sd3Config::tiny();
        let b = built(&folder_of(&tiny)).unwrap();
        assert_eq!(format!("{:?}", b.mmdit), format!("{:?}", tiny.mmdit));
        assert_eq!(b.heads, tiny.heads);
        assert_eq!(b.dual_attention_layers, tiny.dual_attention_layers);
        assert!(b.qk_norm);
        assert_eq!(
            (b.clip_l.clone(), b.clip_g.clone()),
            (tiny.clip_l.clone(), tiny.clip_g.clone())
        );
        assert_eq!(
            b.clip_g.pad, "!",
            "CLIP-G's padding from its tokenizer config"
        );
        assert_eq!(b.t5, tiny.t5);
        assert_eq!(
            b.max_sequence_length, 64,
            "the tokenizer's limit, under 256"
        );
        assert_eq!(format!("{:?}", b.vae), format!("{:?}", tiny.vae));
        assert_eq!((b.vae_scale, b.vae_shift), (tiny.vae_scale, tiny.vae_shift));
        assert_eq!(b.sampler, tiny.sampler);
        // diffusers' pipeline defaults, not the tiny model's own.
        assert_eq!((b.default_steps, b.default_guidance), (28, 7.0));
        assert!(b.skip_layer_guidance.is_none());
        assert_eq!(b.default_size, 64);
        // What it cannot build is named: file and field.
        let refused = |rel: &str, edit: &dyn Fn(&mut Value)| {
            let mut files = folder_of(&tiny);
            edit(files.get_mut(rel).unwrap());
            let (file, why) = built(&files).unwrap_err();
            assert_eq!(file, rel);
            why
        };
        let why = refused("transformer/config.json", &|v| {
            v["qk_norm"] = json!("layer_norm")
        });
        assert!(why.contains("qk_norm"), "{why}");
        let why = refused("transformer/config.json", &|v| {
            v["num_attention_heads"] = json!(4)
        });
        assert!(why.contains("caption_projection_dim"), "{why}");
        let why = refused("transformer/config.json", &|v| {
            v["dual_attention_layers"] = json!([2])
        });
        assert!(why.contains("dual_attention_layers"), "{why}");
        let why = refused("scheduler/scheduler_config.json", &|v| {
            v["use_karras_sigmas"] = json!(true)
        });
        assert!(why.contains("use_karras_sigmas"), "{why}");
        let why = refused("vae/config.json", &|v| v["latent_channels"] = json!(4));
        assert!(why.contains("latent_channels"), "{why}");
        let why = refused("text_encoder_3/config.json", &|v| v["d_model"] = json!(8));
        assert!(why.contains("d_model"), "{why}");
        let mut files = folder_of(&tiny);
        files.remove("text_encoder_2/config.json");
        assert_eq!(built(&files).unwrap_err().0, "text_encoder_2/config.json");
        let e = Sd3Config::from_configs(&|rel: &str| {
            if rel == "vae/config.json" {
                Err("invalid JSON: EOF".into())
            } else {
                Ok(folder_of(&tiny).get(rel).cloned())
            }
        })
        .unwrap_err();
        assert_eq!(e, ("vae/config.json".into(), "invalid JSON: EOF".into()));
    }

    #[test]
    fn the_tiny_sd3_has_the_real_tensor_names() {
        // The tensors its own transformer/config.json describes are the
        // ones it is made of, no more, no fewer.
        let tiny = Sd3Config::tiny();
        let configs = tiny.diffusers_configs();
        let (path, config) = &configs[1];
        assert_eq!(path, "transformer/config.json");
        let want = diffusers_transformer(config);
        let got = tensors(&tiny, &want);
        for (k, shape) in &got[3] {
            assert_eq!(want.get(k), Some(shape), "{k}");
        }
        assert_eq!(got[3].len(), want.len());
    }
}
