//! What the pipeline record says about a flow-transformer model (FLUX.1,
//! SD3): each component with the digests of its files, the VAE with its
//! scaling and shift, the sampler, and the model's identity — built in one
//! place so both families record the same way.

use crate::pipeline::PipelineInfo;
use crate::pipelines::parts::flow_match::FlowMatch;
use candle_core::DType;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;
use serde_json::{json, Map, Value};

/// The model's files (component key → {file, sha256} or a list of shards).
pub struct Files<'a>(pub &'a Map<String, Value>);

impl Files<'_> {
    /// `v` with `weights` (and `tokenizer`) set from the files of those keys.
    pub fn attach(&self, mut v: Value, weights: &str, tokenizer: Option<&str>) -> Value {
        for (field, key) in [("weights", Some(weights)), ("tokenizer", tokenizer)] {
            if let Some(f) = key.and_then(|k| self.0.get(k)) {
                v[field] = f.clone();
            }
        }
        v
    }

    /// The VAE component (`vae` files).
    pub fn vae(&self, cfg: &AutoEncoderKLConfig, scale: f64, shift: f64) -> Value {
        self.attach(
            json!({"class": "AutoencoderKL", "config": format!("{cfg:?}"),
                   "scaling_factor": scale, "shift_factor": shift}),
            "vae",
            None,
        )
    }
}

/// Who made a call: the model and where it ran.
pub struct Identity<'a> {
    /// Pipeline class.
    pub class: &'a str,
    /// Model id.
    pub model_id: &'a str,
    /// Hub revision.
    pub revision: Option<&'a str>,
    /// Digest over every file.
    pub weights_digest: &'a str,
    /// Compute dtype.
    pub dtype: DType,
    /// Device name.
    pub device: &'a str,
}

/// The pipeline record: `components` plus the sampler, as a scheduler.
pub fn info(
    id: Identity<'_>,
    mut components: Map<String, Value>,
    sampler: &FlowMatch,
) -> PipelineInfo {
    let scheduler = sampler.to_json();
    components.insert(
        "scheduler".into(),
        json!({"class": scheduler["class"].clone()}),
    );
    PipelineInfo {
        class: id.class.to_string(),
        model_id: id.model_id.to_string(),
        revision: id.revision.map(str::to_string),
        weights_digest: Some(id.weights_digest.to_string()),
        dtype: format!("{:?}", id.dtype).to_lowercase(),
        device: id.device.to_string(),
        components,
        scheduler,
    }
}
