//! A Stable Diffusion model's configs as diffusers and transformers write
//! them (`model_index.json`, each component's `config.json`, the
//! tokenizer's and scheduler's), so that a folder difflog writes — the tiny
//! models — loads in diffusers with `from_pretrained` and runs the same
//! computation there (issue 33's parity tests).

use super::model::{ModelConfig, TextConfig};
use candle_transformers::models::clip::text_model::Activation;
use serde_json::{json, Value};

/// The diffusers version whose layout these configs follow (diffusers
/// reads `_diffusers_version` to decide on compatibility warnings).
pub const DIFFUSERS_VERSION: &str = "0.30.0";

/// The transformers config of a text encoder (`text_encoder/config.json`),
/// for the tiny models' small CLIP; `None` for the real presets (their
/// folders carry their own).
pub fn text_encoder_config(c: &TextConfig, with_projection: bool) -> Option<Value> {
    let TextConfig::Small(c) = c else {
        return None;
    };
    let act = match c.activation {
        Activation::QuickGelu => "quick_gelu",
    };
    let class = if with_projection {
        "CLIPTextModelWithProjection"
    } else {
        "CLIPTextModel"
    };
    Some(json!({
        "architectures": [class],
        "model_type": "clip_text_model",
        "vocab_size": c.vocab_size,
        "hidden_size": c.embed_dim,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "max_position_embeddings": c.max_position_embeddings,
        "hidden_act": act,
        "projection_dim": c.projection_dim,
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
    let v = &cfg.vae;
    let n = v.block_out_channels.len();
    json!({
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
        "sample_size": cfg.default_size,
        "scaling_factor": cfg.vae_scale,
        "use_quant_conv": v.use_quant_conv,
        "use_post_quant_conv": v.use_post_quant_conv,
    })
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
        let n = text_suffix(cfg, i);
        let class = if with_projection(cfg, i) {
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
    }
    v
}

/// `""` or `"_2"`: the folder suffix of text encoder `i`.
pub fn text_suffix(cfg: &ModelConfig, i: usize) -> String {
    match if cfg.text_starts_at_2 { i + 2 } else { i + 1 } {
        1 => String::new(),
        n => format!("_{n}"),
    }
}

/// Whether text encoder `i` is SDXL's second (with its projection).
pub fn with_projection(cfg: &ModelConfig, i: usize) -> bool {
    text_suffix(cfg, i) == "_2"
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
        let refiner = model_index(&ModelConfig::tiny_xl_refiner());
        assert!(refiner.get("text_encoder").is_none());
        assert_eq!(vae_config(&cfg)["norm_num_groups"], 8);
    }
}
