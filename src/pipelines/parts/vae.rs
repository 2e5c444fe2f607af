//! The one VAE configuration the flow-matching families have in common
//! (written once, not once per family).

use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

/// The VAE FLUX.1 and SD3 / 3.5 share: SD's shape with 16 latent channels
/// and no quantisation convolutions.
pub fn vae16(channels: Vec<usize>, layers: usize, groups: usize) -> AutoEncoderKLConfig {
    AutoEncoderKLConfig {
        block_out_channels: channels,
        layers_per_block: layers,
        latent_channels: 16,
        norm_num_groups: groups,
        use_quant_conv: false,
        use_post_quant_conv: false,
    }
}
