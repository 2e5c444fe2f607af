//! Where a loaded pipeline runs (device, dtype, the name it was asked
//! for) and the latent encoder every family loads on its first
//! image-to-image call: one struct for the SD, FLUX and SD3 pipelines.

use crate::pipeline::PipelineError;
use crate::pipelines::parts::describe::Identity;
use crate::pipelines::parts::latent_encoder::LatentEncoder;
use crate::pipelines::request::parse_device;
use candle_core::{DType, Device};
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

/// Where a pipeline runs, and its latent encoder, loaded on the first
/// image-to-image call.
pub(crate) struct Placement {
    pub device: Device,
    pub dtype: DType,
    pub device_name: String,
    latent_encoder: Option<LatentEncoder>,
}

impl Placement {
    /// `device_name` parsed; `dtype` chosen for the device.
    pub fn new(
        device_name: &str,
        dtype: impl FnOnce(&Device) -> DType,
    ) -> Result<Placement, PipelineError> {
        let device = parse_device(device_name)?;
        Ok(Placement {
            dtype: dtype(&device),
            device,
            device_name: device_name.to_string(),
            latent_encoder: None,
        })
    }

    /// The identity a pipeline's description starts from.
    pub fn identity<'a>(
        &'a self,
        class: &'static str,
        model_id: &'a str,
        revision: Option<&'a str>,
        weights_digest: &'a str,
    ) -> Identity<'a> {
        Identity {
            class,
            model_id,
            revision,
            weights_digest,
            dtype: self.dtype,
            device: &self.device_name,
        }
    }

    /// The latent encoder of the VAE in `files`, loaded on first use.
    pub fn latent_encoder<P: AsRef<std::path::Path>>(
        &mut self,
        files: &[P],
        cfg: &AutoEncoderKLConfig,
    ) -> Result<&LatentEncoder, PipelineError> {
        Ok(LatentEncoder::cached(
            &mut self.latent_encoder,
            files,
            cfg,
            self.dtype,
            &self.device,
        )?)
    }
}
