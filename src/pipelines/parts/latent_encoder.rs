//! The VAE's encoder with a seeded latent sample, for image-to-image.
//!
//! candle's `AutoEncoderKL::encode` returns a distribution whose `sample()`
//! draws from the unseedable CPU generator and whose mean is private. This
//! module builds the same encoder from candle's public blocks and the same
//! weights (`encoder.*`, `quant_conv.*` of the VAE file) and samples
//! `mean + std · noise` with the image's own [`Noise`].

use crate::pipelines::parts::noise::Noise;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::{
    unet_2d_blocks::{
        DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
    },
    vae::AutoEncoderKLConfig,
};

/// The encoder half of a Stable Diffusion VAE.
pub struct LatentEncoder {
    conv_in: candle_nn::Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: UNetMidBlock2D,
    norm_out: candle_nn::GroupNorm,
    conv_out: candle_nn::Conv2d,
    quant_conv: Option<candle_nn::Conv2d>,
}

impl LatentEncoder {
    /// Builds the encoder from the root of the VAE weight file.
    pub fn new(vb: VarBuilder, cfg: &AutoEncoderKLConfig) -> Result<LatentEncoder> {
        let enc = vb.pp("encoder");
        let pad1 = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let ch = &cfg.block_out_channels;
        let first = *ch
            .first()
            .ok_or_else(|| candle_core::Error::Msg("VAE without blocks".into()))?;
        let last = *ch.last().unwrap_or(&first);
        let conv_in = candle_nn::conv2d(3, first, 3, pad1, enc.pp("conv_in"))?;
        let mut down = Vec::new();
        for (i, &out) in ch.iter().enumerate() {
            let input = if i == 0 { first } else { ch[i - 1] };
            let bcfg = DownEncoderBlock2DConfig {
                num_layers: cfg.layers_per_block,
                resnet_eps: 1e-6,
                resnet_groups: cfg.norm_num_groups,
                add_downsample: i + 1 < ch.len(),
                downsample_padding: 0,
                ..Default::default()
            };
            down.push(DownEncoderBlock2D::new(
                enc.pp("down_blocks").pp(i.to_string()),
                input,
                out,
                bcfg,
            )?);
        }
        let mcfg = UNetMidBlock2DConfig {
            resnet_eps: 1e-6,
            output_scale_factor: 1.,
            attn_num_head_channels: None,
            resnet_groups: Some(cfg.norm_num_groups),
            ..Default::default()
        };
        let mid = UNetMidBlock2D::new(enc.pp("mid_block"), last, None, mcfg)?;
        let norm_out =
            candle_nn::group_norm(cfg.norm_num_groups, last, 1e-6, enc.pp("conv_norm_out"))?;
        let z = 2 * cfg.latent_channels;
        let conv_out = candle_nn::conv2d(last, z, 3, pad1, enc.pp("conv_out"))?;
        let quant_conv = if cfg.use_quant_conv {
            Some(candle_nn::conv2d(
                z,
                z,
                1,
                Default::default(),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        Ok(LatentEncoder {
            conv_in,
            down,
            mid,
            norm_out,
            conv_out,
            quant_conv,
        })
    }

    /// The encoder in `slot`, loaded there from the VAE's weight files
    /// (memory-mapped) on first use: text-to-image calls never load it.
    pub fn cached<'a, P: AsRef<std::path::Path>>(
        slot: &'a mut Option<LatentEncoder>,
        files: &[P],
        cfg: &AutoEncoderKLConfig,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> Result<&'a LatentEncoder> {
        if slot.is_none() {
            let vb = crate::pipelines::load::mapped::mapped_vb(files, dtype, device)?;
            *slot = Some(LatentEncoder::new(vb, cfg)?);
        }
        slot.as_ref()
            .ok_or_else(|| candle_core::Error::Msg("latent encoder missing".into()))
    }

    /// Encodes an image batch in [-1, 1] and samples its latents with `noise`.
    pub fn sample(&self, image: &Tensor, noise: &mut Noise) -> Result<Tensor> {
        let mut xs = image.apply(&self.conv_in)?;
        for block in &self.down {
            xs = block.forward(&xs)?;
        }
        let xs = self.mid.forward(&xs, None)?.apply(&self.norm_out)?;
        let mut xs = candle_nn::ops::silu(&xs)?.apply(&self.conv_out)?;
        if let Some(q) = &self.quant_conv {
            xs = xs.apply(q)?;
        }
        let parts = xs.chunk(2, 1)?;
        let (mean, logvar) = (&parts[0], &parts[1]);
        let std = (logvar * 0.5)?.exp()?;
        let eps = noise
            .normal(mean.dims(), mean.device())?
            .to_dtype(mean.dtype())?;
        mean + (std * eps)?
    }
}
