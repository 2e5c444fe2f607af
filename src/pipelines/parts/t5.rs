//! The T5 text encoder of FLUX.1 and Stable Diffusion 3: Google's T5 v1.1
//! XXL encoder as those pipelines ship it (`text_encoder_2/` for FLUX,
//! `text_encoder_3/` for SD3, transformers' `T5EncoderModel` names), and the
//! tiny one the built-in models use, on candle's `models::t5`.
//!
//! Prompts are tokenized to exactly `max_sequence_length` tokens (padded with
//! `<pad>`), as diffusers does; a prompt longer than that is refused rather
//! than cut, so what is recorded is what the model saw.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Activation, VarBuilder};
use candle_transformers::models::t5::{ActivationWithOptionalGating, Config, T5EncoderModel};
use std::sync::Mutex;

/// The T5 v1.1 XXL encoder (`google/t5-v1_1-xxl`'s published configuration).
pub fn xxl() -> Config {
    config(32128, 4096, 64, 10240, 24, 64)
}

/// A T5 encoder of the given size, v1.1-style (gated GELU, untied, 32
/// relative-position buckets up to distance 128).
pub fn config(
    vocab: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    layers: usize,
    heads: usize,
) -> Config {
    Config {
        vocab_size: vocab,
        d_model,
        d_kv,
        d_ff,
        num_layers: layers,
        num_decoder_layers: None,
        num_heads: heads,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        dropout_rate: 0.1,
        layer_norm_epsilon: 1e-6,
        initializer_factor: 1.0,
        feed_forward_proj: ActivationWithOptionalGating {
            gated: true,
            activation: Activation::NewGelu,
        },
        tie_word_embeddings: false,
        is_decoder: false,
        is_encoder_decoder: true,
        use_cache: false,
        pad_token_id: 0,
        eos_token_id: 1,
        decoder_start_token_id: Some(0),
    }
}

/// A T5 encoder from its transformers `config.json` (`T5EncoderModel`).
pub fn from_transformers_config(v: serde_json::Value) -> std::result::Result<Config, String> {
    let mut c: Config = serde_json::from_value(v).map_err(|e| format!("not a T5 config: {e}"))?;
    // An encoder keeps no cache (transformers' configs say true, for the
    // decoder).
    c.use_cache = false;
    Ok(c)
}

/// A loaded T5 encoder (candle's keeps state between calls, hence the lock).
pub struct T5Encoder(Mutex<T5EncoderModel>);

impl T5Encoder {
    /// Builds the encoder; `vb` is the root of its weight files.
    pub fn new(vb: VarBuilder, cfg: &Config) -> Result<T5Encoder> {
        Ok(T5Encoder(Mutex::new(T5EncoderModel::load(vb, cfg)?)))
    }

    /// Hidden states (batch, seq, d_model) for token ids (batch, seq), in `dtype`.
    pub fn encode(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.clear_kv_cache();
        m.forward(ids)?.to_dtype(dtype)
    }
}

/// The transformers `config.json` of a T5 encoder (`T5EncoderModel`), as
/// the tiny models write it so that transformers loads their T5; `None`
/// for a feed-forward transformers has no name for.
pub fn transformers_config(c: &Config) -> Option<serde_json::Value> {
    let proj = match (c.feed_forward_proj.gated, &c.feed_forward_proj.activation) {
        (true, Activation::NewGelu) => "gated-gelu",
        (false, Activation::Relu) => "relu",
        _ => return None,
    };
    Some(serde_json::json!({
        "architectures": ["T5EncoderModel"],
        "model_type": "t5",
        "vocab_size": c.vocab_size,
        "d_model": c.d_model,
        "d_kv": c.d_kv,
        "d_ff": c.d_ff,
        "num_layers": c.num_layers,
        "num_heads": c.num_heads,
        "relative_attention_num_buckets": c.relative_attention_num_buckets,
        "relative_attention_max_distance": c.relative_attention_max_distance,
        "dropout_rate": c.dropout_rate,
        "layer_norm_epsilon": c.layer_norm_epsilon,
        "initializer_factor": c.initializer_factor,
        "feed_forward_proj": proj,
        "tie_word_embeddings": c.tie_word_embeddings,
        "is_encoder_decoder": true,
        "pad_token_id": c.pad_token_id,
        "eos_token_id": c.eos_token_id,
        "decoder_start_token_id": c.pad_token_id,
        "torch_dtype": "float32",
    }))
}

/// The `tokenizer_config.json` of a T5 tokenizer given as a `tokenizer.json`
/// (`<pad>`, `</s>`, `<unk>`), cut and padded to `max` tokens.
pub fn tokenizer_config(max: usize) -> serde_json::Value {
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max,
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
    })
}

/// The transformers configs of the tiny T5 encoder (`c`) and its tokenizer
/// (`max` tokens), for a folder's `text_encoder{suffix}/` and
/// `tokenizer{suffix}/` (none for a real encoder: its folder carries its
/// own).
pub fn folder_configs(c: &Config, max: usize, suffix: &str) -> Vec<(String, serde_json::Value)> {
    let tiny = c.vocab_size == crate::pipelines::tiny::vocab::T5_VOCAB_SIZE;
    match transformers_config(c).filter(|_| tiny) {
        Some(config) => vec![
            (format!("text_encoder{suffix}/config.json"), config),
            (
                format!("tokenizer{suffix}/tokenizer_config.json"),
                tokenizer_config(max),
            ),
        ],
        None => vec![],
    }
}
