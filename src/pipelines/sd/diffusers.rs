//! A Stable Diffusion model's configs as diffusers and transformers write
//! them (`model_index.json`, each component's `config.json`, the
//! tokenizer's and scheduler's): written, so that a folder difflog writes —
//! the tiny models — loads in diffusers with `from_pretrained` and runs the
//! same computation there (issue 33's parity tests); and read, so that any
//! diffusers-layout folder of a supported family is built from its own
//! configs, not only the presets.

use super::model::{ModelConfig, TextConfig};
use super::unet::{TextTime, UnetBlock, UnetConfig};
use crate::pipelines::parts::scheduler::{Prediction, SchedulerKind, SchedulerSettings, Spacing};
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde_json::{json, Value};

/// The diffusers version whose layout these configs follow (diffusers
/// reads `_diffusers_version` to decide on compatibility warnings).
pub const DIFFUSERS_VERSION: &str = "0.30.0";

/// The transformers config of a text encoder (`text_encoder/config.json`),
/// for the tiny models' small CLIP; `None` for the real presets (their
/// folders carry their own).
pub fn text_encoder_config(c: &TextConfig, with_projection: bool) -> Option<Value> {
    // (vocab, width, intermediate, layers, heads, positions, act, projection)
    let (vocab, width, inter, layers, heads, positions, act, projection) = match c {
        TextConfig::Small(c) => (
            c.vocab_size,
            c.embed_dim,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.max_position_embeddings,
            match c.activation {
                Activation::QuickGelu => "quick_gelu",
            },
            c.projection_dim,
        ),
        TextConfig::Clip(c) if c.vocab == crate::pipelines::tiny::vocab::VOCAB_SIZE => (
            c.vocab,
            c.width,
            c.intermediate,
            c.layers,
            c.heads,
            c.positions,
            if c.quick_gelu { "quick_gelu" } else { "gelu" },
            c.projection,
        ),
        _ => return None,
    };
    let class = if with_projection {
        "CLIPTextModelWithProjection"
    } else {
        "CLIPTextModel"
    };
    Some(json!({
        "architectures": [class],
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": positions,
        "hidden_act": act,
        "projection_dim": projection,
        "layer_norm_eps": 1e-5,
        "bos_token_id": crate::pipelines::tiny::vocab::VOCAB_SIZE - 2,
        "eos_token_id": crate::pipelines::tiny::vocab::VOCAB_SIZE - 1,
        "pad_token_id": crate::pipelines::tiny::vocab::VOCAB_SIZE - 1,
        "torch_dtype": "float32",
    }))
}

/// The tokenizer's `tokenizer_config.json`: the byte-level tokenizer as a
/// transformers `PreTrainedTokenizerFast`, padded with its end token to the
/// encoder's length, as difflog pads it.
pub fn tokenizer_config(c: &TextConfig) -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": c.max_tokens(),
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": c.pad_token(),
    })
}

/// The VAE's `vae/config.json`.
pub fn vae_config(cfg: &ModelConfig) -> Value {
    vae_config_of(&cfg.vae, cfg.default_size, cfg.vae_scale, None)
}

/// The `vae/config.json` of the VAE `v` for images of `size` pixels a
/// side, with its `scaling_factor` and, for the 16-channel VAEs of FLUX.1
/// and SD3, its `shift_factor`.
pub fn vae_config_of(
    v: &AutoEncoderKLConfig,
    size: usize,
    scale: f64,
    shift: Option<f64>,
) -> Value {
    let n = v.block_out_channels.len();
    let mut c = json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": DIFFUSERS_VERSION,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": vec!["DownEncoderBlock2D"; n],
        "up_block_types": vec!["UpDecoderBlock2D"; n],
        "block_out_channels": v.block_out_channels,
        "layers_per_block": v.layers_per_block,
        "latent_channels": v.latent_channels,
        "norm_num_groups": v.norm_num_groups,
        "act_fn": "silu",
        "sample_size": size,
        "scaling_factor": scale,
        "use_quant_conv": v.use_quant_conv,
        "use_post_quant_conv": v.use_post_quant_conv,
    });
    if let Some(s) = shift {
        c["shift_factor"] = json!(s);
    }
    c
}

/// The UNet's `unet/config.json`.
pub fn unet_config(cfg: &ModelConfig) -> Value {
    let mut v = cfg.unet_config().to_diffusers();
    v["_diffusers_version"] = json!(DIFFUSERS_VERSION);
    v["sample_size"] = json!(cfg.default_size / 8);
    v
}

/// The scheduler's `scheduler/scheduler_config.json`.
pub fn scheduler_config(cfg: &ModelConfig) -> Value {
    let mut v = cfg.scheduler.to_diffusers();
    v["_diffusers_version"] = json!(DIFFUSERS_VERSION);
    v
}

/// `model_index.json`: the pipeline class and where each component lives.
pub fn model_index(cfg: &ModelConfig) -> Value {
    let mut v = json!({
        "_class_name": cfg.class,
        "_diffusers_version": DIFFUSERS_VERSION,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", cfg.scheduler.to_diffusers()["_class_name"]],
    });
    for i in 0..cfg.text.len() {
        let n = cfg.text_suffix(i);
        let class = if cfg.text_projected(i) {
            "CLIPTextModelWithProjection"
        } else {
            "CLIPTextModel"
        };
        v[format!("text_encoder{n}")] = json!(["transformers", class]);
        v[format!("tokenizer{n}")] = json!(["transformers", "PreTrainedTokenizerFast"]);
    }
    if cfg.text.len() == 1 && !cfg.text_starts_at_2 {
        v["safety_checker"] = json!([null, null]);
        v["feature_extractor"] = json!([null, null]);
        v["requires_safety_checker"] = json!(false);
    } else {
        // SDXL: no negative prompt means zero embeddings for the base, the
        // empty text's for the refiner, which also takes an aesthetic score.
        let refiner = cfg.text_starts_at_2;
        v["force_zeros_for_empty_prompt"] = json!(!refiner);
        if refiner {
            v["requires_aesthetics_score"] = json!(true);
            v["text_encoder"] = json!([null, null]);
            v["tokenizer"] = json!([null, null]);
        }
        v["image_encoder"] = json!([null, null]);
        v["feature_extractor"] = json!([null, null]);
    }
    v
}

/// A field of a config, as the given type, or an error naming it.
fn field<T: serde::de::DeserializeOwned>(v: &Value, name: &str) -> Result<T, String> {
    serde_json::from_value(v[name].clone()).map_err(|e| format!("{name}: {e}"))
}

/// A field that may be missing or null (then `default`).
fn field_or<T: serde::de::DeserializeOwned>(
    v: &Value,
    name: &str,
    default: T,
) -> Result<T, String> {
    match &v[name] {
        Value::Null => Ok(default),
        _ => field(v, name),
    }
}

/// One number per block, or one number for all (`attention_head_dim`,
/// `transformer_layers_per_block`).
fn per_block(v: &Value, name: &str, n: usize, default: usize) -> Result<Vec<usize>, String> {
    match &v[name] {
        Value::Null => Ok(vec![default; n]),
        Value::Array(_) => {
            let list: Vec<usize> = field(v, name)?;
            if list.len() != n {
                return Err(format!("{name} has {} entries for {n} blocks", list.len()));
            }
            Ok(list)
        }
        _ => Ok(vec![field(v, name)?; n]),
    }
}

/// A UNet's architecture from its diffusers `config.json`; refuses what
/// difflog's UNet does not compute (naming the field) rather than build
/// something else.
pub fn unet_from_config(v: &Value) -> Result<UnetConfig, String> {
    let channels: Vec<usize> = field(v, "block_out_channels")?;
    let n = channels.len();
    if n == 0 {
        return Err("block_out_channels is empty".into());
    }
    // diffusers' defaults, when a config leaves them out.
    let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cross_down = "CrossAttnDownBlock2D";
    let down: Vec<String> = field_or(
        v,
        "down_block_types",
        strings(&[cross_down, cross_down, cross_down, "DownBlock2D"]),
    )?;
    let cross_up = "CrossAttnUpBlock2D";
    let up: Vec<String> = field_or(
        v,
        "up_block_types",
        strings(&["UpBlock2D", cross_up, cross_up, cross_up]),
    )?;
    if down.len() != n || up.len() != n {
        return Err(format!(
            "{} down and {} up block types for {n} blocks",
            down.len(),
            up.len()
        ));
    }
    let heads = match &v["num_attention_heads"] {
        Value::Null => per_block(v, "attention_head_dim", n, 8)?,
        _ => per_block(v, "num_attention_heads", n, 8)?,
    };
    let layers = per_block(v, "transformer_layers_per_block", n, 1)?;
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let cross = match down[i].as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => return Err(format!("down block type {other:?} is not supported")),
        };
        let mirror = if cross {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        };
        if up[n - 1 - i] != mirror {
            return Err(format!(
                "up block {} is {:?}, not the mirror of down block {i} ({mirror})",
                n - 1 - i,
                up[n - 1 - i]
            ));
        }
        if heads[i] == 0 || !channels[i].is_multiple_of(heads[i]) {
            return Err(format!(
                "block {i}: {} channels do not split into {} attention heads",
                channels[i], heads[i]
            ));
        }
        blocks.push(UnetBlock {
            out_channels: channels[i],
            cross_attention: cross.then_some(layers[i]),
            heads: heads[i],
        });
    }
    let unsupported: [(&str, Value); 11] = [
        ("mid_block_type", json!("UNetMidBlock2DCrossAttn")),
        ("class_embed_type", Value::Null),
        ("encoder_hid_dim", Value::Null),
        ("time_cond_proj_dim", Value::Null),
        ("num_class_embeds", Value::Null),
        ("resnet_time_scale_shift", json!("default")),
        ("act_fn", json!("silu")),
        ("time_embedding_type", json!("positional")),
        ("reverse_transformer_layers_per_block", Value::Null),
        ("conv_in_kernel", json!(3)),
        ("conv_out_kernel", json!(3)),
    ];
    for (name, wanted) in unsupported {
        let got = &v[name];
        if !got.is_null() && *got != wanted {
            return Err(format!(
                "{name} = {got} is not supported (difflog's UNet has {wanted})"
            ));
        }
    }
    for name in ["only_cross_attention", "dual_cross_attention"] {
        if v[name] == json!(true) {
            return Err(format!("{name} = true is not supported"));
        }
    }
    let text_time = match v["addition_embed_type"].as_str() {
        None => None,
        Some("text_time") => Some(TextTime {
            time_embed_dim: field(v, "addition_time_embed_dim")?,
            input_dim: field(v, "projection_class_embeddings_input_dim")?,
        }),
        Some(other) => return Err(format!("addition_embed_type {other:?} is not supported")),
    };
    Ok(UnetConfig {
        in_channels: field_or(v, "in_channels", 4)?,
        out_channels: field_or(v, "out_channels", 4)?,
        blocks,
        layers_per_block: field_or(v, "layers_per_block", 2)?,
        cross_attention_dim: field_or(v, "cross_attention_dim", 1280)?,
        norm_num_groups: field_or(v, "norm_num_groups", 32)?,
        norm_eps: field_or(v, "norm_eps", 1e-5)?,
        use_linear_projection: field_or(v, "use_linear_projection", false)?,
        flip_sin_to_cos: field_or(v, "flip_sin_to_cos", true)?,
        freq_shift: field_or(v, "freq_shift", 0.0)?,
        downsample_padding: field_or(v, "downsample_padding", 1)?,
        mid_block_scale_factor: field_or(v, "mid_block_scale_factor", 1.0)?,
        center_input_sample: field_or(v, "center_input_sample", false)?,
        text_time,
    })
}

/// A VAE's architecture and latent scale from its diffusers `config.json`.
pub fn vae_from_config(v: &Value) -> Result<(AutoEncoderKLConfig, f64), String> {
    if !v["shift_factor"].is_null() {
        return Err("shift_factor: not a Stable Diffusion 1.x/2.x/XL VAE".into());
    }
    vae_arch(v)
}

/// A 16-channel VAE of FLUX.1 or SD3 from its diffusers `config.json`: its
/// architecture, `scaling_factor` and `shift_factor`.
pub fn flow_vae_from_config(v: &Value) -> Result<(AutoEncoderKLConfig, f64, f64), String> {
    let (vae, scale) = vae_arch(v)?;
    Ok((vae, scale, field_or(v, "shift_factor", 0.0)?))
}

/// What both kinds of VAE config say alike: 4 blocks of the plain encoder
/// and decoder blocks, RGB, attention in the middle block.
fn vae_arch(v: &Value) -> Result<(AutoEncoderKLConfig, f64), String> {
    let channels: Vec<usize> = field(v, "block_out_channels")?;
    if channels.len() != 4 {
        return Err(format!(
            "a VAE of {} blocks scales latents by {}: difflog's pipelines take one that scales by 8 (4 blocks)",
            channels.len(),
            1usize << channels.len().saturating_sub(1).min(16)
        ));
    }
    for (name, block) in [
        ("down_block_types", "DownEncoderBlock2D"),
        ("up_block_types", "UpDecoderBlock2D"),
    ] {
        let types: Vec<String> = field_or(v, name, vec![block.to_string(); channels.len()])?;
        if types.len() != channels.len() || types.iter().any(|t| t != block) {
            return Err(format!("{name} must be {} × {block}", channels.len()));
        }
    }
    for (name, wanted) in [("in_channels", 3), ("out_channels", 3)] {
        let got: usize = field_or(v, name, wanted)?;
        if got != wanted {
            return Err(format!("{name} = {got} is not supported (RGB: {wanted})"));
        }
    }
    if v["mid_block_add_attention"] == json!(false) {
        return Err("mid_block_add_attention = false is not supported".into());
    }
    Ok((
        AutoEncoderKLConfig {
            block_out_channels: channels,
            layers_per_block: field_or(v, "layers_per_block", 1)?,
            latent_channels: field_or(v, "latent_channels", 4)?,
            norm_num_groups: field_or(v, "norm_num_groups", 32)?,
            use_quant_conv: field_or(v, "use_quant_conv", true)?,
            use_post_quant_conv: field_or(v, "use_post_quant_conv", true)?,
        },
        field_or(v, "scaling_factor", 0.18215)?,
    ))
}

/// A model folder's config files as a model is built from them: `get`
/// gives one parsed (`None`: there is none; an error: it cannot be read),
/// and every error is (file, what is wrong).
pub struct FolderConfigs<'a> {
    get: &'a dyn Fn(&str) -> Result<Option<Value>, String>,
}

impl<'a> FolderConfigs<'a> {
    /// The folder's configs as `get` reads them.
    pub fn new(get: &'a dyn Fn(&str) -> Result<Option<Value>, String>) -> FolderConfigs<'a> {
        FolderConfigs { get }
    }

    /// The file at `rel`, if the folder has it.
    fn may(&self, rel: &str) -> Result<Option<Value>, (String, String)> {
        (self.get)(rel).map_err(|e| (rel.to_string(), e))
    }

    /// The file at `rel`, which the model is built from.
    pub fn need(&self, rel: &str) -> Result<Value, (String, String)> {
        self.may(rel)?.ok_or_else(|| {
            (
                rel.to_string(),
                "missing: the model is built from it".to_string(),
            )
        })
    }

    /// The padding token the tokenizer in folder `tokenizer` names, if it
    /// has a `tokenizer_config.json` that names one.
    pub fn pad_token(&self, tokenizer: &str) -> Result<Option<String>, (String, String)> {
        let config = self.may(&format!("{tokenizer}/tokenizer_config.json"))?;
        Ok(config.as_ref().and_then(pad_token_of))
    }

    /// T5's tokens per prompt: the pipeline's `default`, or the limit of the
    /// tokenizer in folder `tokenizer` (its `model_max_length`) if lower.
    pub fn t5_length(&self, tokenizer: &str, default: usize) -> Result<usize, (String, String)> {
        let config = self.may(&format!("{tokenizer}/tokenizer_config.json"))?;
        Ok(config
            .and_then(|v| v["model_max_length"].as_u64())
            .map_or(default, |m| (m as usize).clamp(1, default)))
    }
}

/// The transformers configs of a tiny text encoder and its tokenizer, for
/// a folder's `text_encoder{suffix}/` and `tokenizer{suffix}/` (none for a
/// real encoder: its folder carries its own).
pub fn text_configs(
    text: &TextConfig,
    with_projection: bool,
    suffix: &str,
) -> Vec<(String, Value)> {
    match text_encoder_config(text, with_projection) {
        Some(c) => vec![
            (format!("text_encoder{suffix}/config.json"), c),
            (
                format!("tokenizer{suffix}/tokenizer_config.json"),
                tokenizer_config(text),
            ),
        ],
        None => vec![],
    }
}

/// The size `k` of config `v` (the file `rel`): a positive count up to
/// 65,536, `default` when it is missing or null.
pub fn size_of(v: &Value, rel: &str, k: &str, default: usize) -> Result<usize, (String, String)> {
    match &v[k] {
        Value::Null => Ok(default),
        x => x
            .as_u64()
            .filter(|&n| n > 0 && n <= 1 << 16)
            .map(|n| n as usize)
            .ok_or_else(|| (rel.to_string(), format!("{k}: not a size: {x}"))),
    }
}

/// The padding token a tokenizer's `tokenizer_config.json` names (a
/// string, or an added token's `content`), if any.
fn pad_token_of(tokenizer_config: &Value) -> Option<String> {
    let pad = &tokenizer_config["pad_token"];
    pad.as_str()
        .or_else(|| pad["content"].as_str())
        .map(str::to_string)
}

/// A CLIP text encoder from its transformers `config.json`, for sizes no
/// preset has (the presets' own encoders are kept as they are). For SDXL
/// (`xl`) as SDXL reads it (penultimate layer, pooled output; quick or
/// exact GELU); else read at its last layer (quick GELU, or exact GELU as
/// SD 2.x's OpenCLIP encoders).
pub fn text_from_config(v: &Value, xl: bool) -> Result<TextConfig, String> {
    let act: String = field_or(v, "hidden_act", "quick_gelu".to_string())?;
    let hidden: usize = field(v, "hidden_size")?;
    // difflog's own CLIP: SDXL's encoders, and SD 2.x's OpenCLIP kind
    // (exact GELU) read at its last layer.
    if xl || act == "gelu" {
        let clip = crate::pipelines::parts::clip::ClipConfig {
            vocab: field(v, "vocab_size")?,
            width: hidden,
            layers: field(v, "num_hidden_layers")?,
            heads: field(v, "num_attention_heads")?,
            intermediate: field(v, "intermediate_size")?,
            positions: field_or(v, "max_position_embeddings", 77)?,
            quick_gelu: match act.as_str() {
                "quick_gelu" => true,
                "gelu" => false,
                other => return Err(format!("hidden_act {other:?} is not supported")),
            },
            projection: field_or(v, "projection_dim", hidden)?,
            projected: xl
                && v["architectures"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c == "CLIPTextModelWithProjection")),
            pad: "<|endoftext|>".into(),
        };
        return Ok(match xl {
            true => TextConfig::Clip(clip),
            false => TextConfig::ClipLast(clip),
        });
    }
    if act != "quick_gelu" {
        return Err(format!(
            "a text encoder with hidden_act {act:?} is not supported (quick_gelu and gelu are)"
        ));
    }
    Ok(TextConfig::Small(ClipTextConfig {
        vocab_size: field(v, "vocab_size")?,
        embed_dim: hidden,
        activation: Activation::QuickGelu,
        intermediate_size: field(v, "intermediate_size")?,
        max_position_embeddings: field_or(v, "max_position_embeddings", 77)?,
        pad_with: None,
        num_hidden_layers: field(v, "num_hidden_layers")?,
        num_attention_heads: field(v, "num_attention_heads")?,
        projection_dim: field_or(v, "projection_dim", hidden)?,
    }))
}

/// A scheduler's settings from its diffusers `scheduler_config.json`: its
/// betas, spacing, offset and prediction; the kind when difflog has it
/// (DDIM, Euler ancestral, UniPC), else `fallback`'s.
pub fn scheduler_from_config(
    v: &Value,
    fallback: &SchedulerSettings,
) -> Result<SchedulerSettings, String> {
    let schedule: String = field_or(v, "beta_schedule", "scaled_linear".to_string())?;
    if schedule != "scaled_linear" {
        return Err(format!(
            "beta_schedule {schedule:?} is not supported (scaled_linear is)"
        ));
    }
    let kind = match v["_class_name"].as_str() {
        Some("DDIMScheduler") => SchedulerKind::Ddim,
        Some("EulerAncestralDiscreteScheduler") => SchedulerKind::EulerAncestral,
        Some("UniPCMultistepScheduler") => SchedulerKind::UniPc,
        _ => fallback.kind,
    };
    let spacing = match v["timestep_spacing"].as_str() {
        None | Some("leading") => Spacing::Leading,
        Some("trailing") => Spacing::Trailing,
        Some("linspace") => Spacing::Linspace,
        Some(other) => return Err(format!("timestep_spacing {other:?} is not supported")),
    };
    let prediction = match v["prediction_type"].as_str() {
        None | Some("epsilon") => Prediction::Epsilon,
        Some("v_prediction") => Prediction::VPrediction,
        Some(other) => return Err(format!("prediction_type {other:?} is not supported")),
    };
    let mut s = SchedulerSettings::new(kind, prediction, spacing);
    s.train_timesteps = field_or(v, "num_train_timesteps", 1000)?;
    s.beta_start = field_or(v, "beta_start", 0.0001)?;
    s.beta_end = field_or(v, "beta_end", 0.02)?;
    s.steps_offset = field_or(v, "steps_offset", 0)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_models_configs_name_their_parts_as_diffusers_does() {
        let cfg = ModelConfig::tiny();
        let u = unet_config(&cfg);
        assert_eq!(
            u["down_block_types"],
            json!(["CrossAttnDownBlock2D", "DownBlock2D"])
        );
        assert_eq!(
            u["up_block_types"],
            json!(["UpBlock2D", "CrossAttnUpBlock2D"])
        );
        assert_eq!(u["norm_num_groups"], 8);
        assert_eq!(u["sample_size"], 8);
        assert_eq!(unet_config(&ModelConfig::tiny_inpaint())["in_channels"], 9);
        let i = model_index(&cfg);
        assert_eq!(i["scheduler"], json!(["diffusers", "DDIMScheduler"]));
        assert_eq!(i["text_encoder"], json!(["transformers", "CLIPTextModel"]));
        let xl = model_index(&ModelConfig::tiny_xl());
        assert_eq!(
            xl["text_encoder_2"],
            json!(["transformers", "CLIPTextModelWithProjection"])
        );
        assert!(xl.get("safety_checker").is_none());
        assert_eq!(xl["force_zeros_for_empty_prompt"], true);
        let refiner = model_index(&ModelConfig::tiny_xl_refiner());
        // The refiner has no first text encoder (diffusers' null entry).
        assert_eq!(refiner["text_encoder"], json!([null, null]));
        assert_eq!(refiner["requires_aesthetics_score"], true);
        assert_eq!(vae_config(&cfg)["norm_num_groups"], 8);
    }

    #[test]
    fn configs_read_back_what_they_write_and_refuse_what_difflog_cannot_build() {
        for cfg in [
            ModelConfig::tiny(),
            ModelConfig::tiny_inpaint(),
            ModelConfig::sd15(),
            ModelConfig::sd21(),
            ModelConfig::sdxl(),
            ModelConfig::sdxl_refiner(),
        ] {
            assert_eq!(
                unet_from_config(&unet_config(&cfg)).unwrap(),
                cfg.unet_config(),
                "{}",
                cfg.class
            );
            let (vae, scale) = vae_from_config(&vae_config(&cfg)).unwrap();
            assert_eq!(vae.block_out_channels, cfg.vae.block_out_channels);
            assert_eq!(scale, cfg.vae_scale);
            let s = scheduler_from_config(&scheduler_config(&cfg), &cfg.scheduler).unwrap();
            assert_eq!(s, cfg.scheduler, "{}", cfg.class);
        }
        let mut u = unet_config(&ModelConfig::tiny());
        // One number for every block, as SD 1.5's config writes it.
        u["attention_head_dim"] = json!(4);
        u["transformer_layers_per_block"] = json!(1);
        assert_eq!(unet_from_config(&u).unwrap(), ModelConfig::tiny().unet);
        for (field, value, says) in [
            ("class_embed_type", json!("timestep"), "class_embed_type"),
            (
                "resnet_time_scale_shift",
                json!("scale_shift"),
                "resnet_time_scale_shift",
            ),
            (
                "up_block_types",
                json!(["CrossAttnUpBlock2D", "UpBlock2D"]),
                "not the mirror",
            ),
            (
                "down_block_types",
                json!(["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
                "not supported",
            ),
            ("attention_head_dim", json!([3, 4]), "attention heads"),
            ("only_cross_attention", json!(true), "only_cross_attention"),
            ("block_out_channels", json!("wide"), "block_out_channels"),
        ] {
            let mut bad = unet_config(&ModelConfig::tiny());
            bad[field] = value;
            let e = unet_from_config(&bad).unwrap_err();
            assert!(e.contains(says), "{field}: {e}");
        }
        let mut v = vae_config(&ModelConfig::tiny());
        v["block_out_channels"] = json!([32, 64]);
        assert!(vae_from_config(&v).unwrap_err().contains("scales by 8"));
        let t = json!({"hidden_act": "relu", "hidden_size": 32});
        assert!(text_from_config(&t, false).unwrap_err().contains("relu"));
        // Exact GELU (SD 2.x's OpenCLIP kind): difflog's CLIP, last layer.
        let t = json!({"hidden_act": "gelu", "hidden_size": 32, "vocab_size": 100,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37});
        assert!(matches!(
            text_from_config(&t, false).unwrap(),
            TextConfig::ClipLast(c) if !c.quick_gelu && !c.projected && c.width == 32
        ));
        let s = json!({"_class_name": "PNDMScheduler", "beta_schedule": "linear"});
        assert!(scheduler_from_config(&s, &ModelConfig::tiny().scheduler).is_err());
    }
}
